//! The one wasmtime engine configuration kedge runs plugins with, and the fingerprint that ties
//! precompiled artifacts to it (ARCHITECTURE.md §5).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine};

/// Address space reserved up front for each linear memory. wasmtime's 64-bit default is 4 GiB
/// per instance, which exhausts a 32-bit board's address space and overcommits small ones;
/// memories larger than this are moved when they grow past it.
const MEMORY_RESERVATION: u64 = 16 << 20;
/// Guard pages after each memory: small, so bounds are checked in code rather than by faults.
const MEMORY_GUARD: u64 = 64 << 10;
/// Extra room reserved when a memory moves, so that growth by small steps does not copy each time.
const MEMORY_GROWTH_RESERVATION: u64 = 1 << 20;
/// How often the ticker advances the engine's epoch: the resolution of plugin call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The wasmtime version kedge links; artifacts from another version are refused.
const WASMTIME_VERSION: &str = "48.0.8";

/// Where compiled plugin code will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The machine kedge runs on.
    Host,
    /// Another machine, by Rust target triple (e.g. `aarch64-unknown-linux-musl`).
    Triple(String),
}

impl Target {
    /// The code wasmtime emits for this target: a native architecture, or Pulley bytecode
    /// where Cranelift has no backend (32-bit ARM).
    pub fn code(&self) -> Result<&'static str, EngineError> {
        let arch = match self {
            Target::Host => std::env::consts::ARCH,
            Target::Triple(t) => t.split('-').next().unwrap_or(""),
        };
        match arch {
            "x86_64" => Ok("x86_64"),
            "aarch64" => Ok("aarch64"),
            a if a.starts_with("arm") || a.starts_with("thumb") => Ok("pulley32"),
            "pulley32" => Ok("pulley32"),
            "pulley64" => Ok("pulley64"),
            _ => Err(EngineError::Target(match self {
                Target::Host => format!("this machine ({arch})"),
                Target::Triple(t) => format!("{t:?}"),
            })),
        }
    }

    /// The triple given to Cranelift, if not the host's own.
    fn triple(&self) -> Result<Option<String>, EngineError> {
        match self {
            Target::Host => Ok(None),
            Target::Triple(t) => {
                let code = self.code()?;
                Ok(Some(if code.starts_with("pulley") {
                    code.to_owned()
                } else {
                    t.clone()
                }))
            }
        }
    }
}

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// kedge cannot produce code for this target.
    #[error(
        "unsupported plugin target {0}: kedge compiles plugins for x86_64, aarch64 and 32-bit ARM (Pulley)"
    )]
    Target(String),
    /// wasmtime rejected the configuration.
    #[error("cannot configure the WebAssembly engine: {0}")]
    Config(String),
}

/// The settings every engine, and therefore every artifact, is built with, as one line. Two
/// engines with equal fingerprints accept each other's artifacts.
pub fn fingerprint(target: &Target) -> Result<String, EngineError> {
    Ok(format!(
        "kedge-plugin/1 wasmtime/{WASMTIME_VERSION} code={} reservation={MEMORY_RESERVATION} guard={MEMORY_GUARD} growth={MEMORY_GROWTH_RESERVATION} epoch=1 concurrency=0",
        target.code()?
    ))
}

/// Builds the engine for `target`.
pub fn build(target: &Target) -> Result<Engine, EngineError> {
    let mut config = Config::new();
    config
        .concurrency_support(false)
        .epoch_interruption(true)
        .memory_reservation(MEMORY_RESERVATION)
        .memory_guard_size(MEMORY_GUARD)
        .memory_reservation_for_growth(MEMORY_GROWTH_RESERVATION);
    if let Some(triple) = target.triple()? {
        config
            .target(&triple)
            .map_err(|e| EngineError::Config(format!("{e:#}")))?;
    }
    Engine::new(&config).map_err(|e| EngineError::Config(format!("{e:#}")))
}

/// Advances `engine`'s epoch every [`EPOCH_TICK`] until dropped, so that plugin calls with a
/// deadline are interrupted.
pub struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    /// Starts the ticker thread.
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("kedge-plugin-epoch".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Ticker { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Epoch ticks to allow a call that may run for `timeout`: one more than the timeout covers,
/// since the first tick may come at once.
pub fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (timeout.as_nanos().div_ceil(tick) as u64).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_map_to_the_code_wasmtime_emits() {
        let t = |s: &str| Target::Triple(s.to_owned()).code().unwrap();
        assert_eq!(t("aarch64-unknown-linux-musl"), "aarch64");
        assert_eq!(t("x86_64-unknown-linux-gnu"), "x86_64");
        assert_eq!(t("armv7-unknown-linux-musleabihf"), "pulley32");
        assert_eq!(t("arm-unknown-linux-gnueabihf"), "pulley32");
        assert!(
            Target::Triple("mips-unknown-linux-gnu".into())
                .code()
                .is_err()
        );
        assert!(Target::Host.code().is_ok());
    }

    #[test]
    fn fingerprints_differ_by_code_and_not_by_libc() {
        let f = |s: &str| fingerprint(&Target::Triple(s.to_owned())).unwrap();
        assert_eq!(
            f("aarch64-unknown-linux-musl"),
            f("aarch64-unknown-linux-gnu")
        );
        assert_ne!(
            f("aarch64-unknown-linux-musl"),
            f("x86_64-unknown-linux-musl")
        );
    }

    #[test]
    fn deadlines_round_up_and_allow_one_early_tick() {
        assert_eq!(deadline_ticks(Duration::from_millis(5)), 2);
        assert_eq!(deadline_ticks(Duration::from_millis(6)), 3);
        assert_eq!(deadline_ticks(Duration::from_millis(100)), 21);
    }
}
