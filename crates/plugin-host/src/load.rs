//! Loading plugins from the config: components are compiled once and cached, artifacts from
//! `kedge plugin compile` are checked against this engine's settings, and each plugin is
//! started once so that a broken one stops kedge at start rather than in the field.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::artifact;
use super::chain::{Chain, Stage};
use super::circuit::Circuit;
use super::engine::{self, EngineError, Target, Ticker};
use super::host::{self, DirGrant, Grants};
use super::plugin::{LoadError, Plugin};
use super::stats::PluginStats;
use crate::config::PluginConfig;

/// Why the plugins could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// The engine could not be built.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// One plugin could not be loaded; `plugin[i]` names it in the config.
    #[error("plugin[{index}] ({name}): {path}: {why}")]
    Plugin {
        /// Position in the config.
        index: usize,
        /// The plugin's name.
        name: String,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The epoch ticker thread could not be started.
    #[error("cannot start the plugin deadline ticker: {0}")]
    Ticker(std::io::Error),
}

/// The plugins of a config, ready to run, and the ticker that enforces their deadlines.
pub struct Loaded {
    /// The chain.
    pub chain: Chain,
    /// Enforces call deadlines while it lives: keep it as long as the chain.
    pub ticker: Option<Ticker>,
}

/// What a file holds.
enum Kind {
    Component,
    CoreModule,
    Artifact,
    Other,
}

fn kind(bytes: &[u8]) -> Kind {
    // The binary format's layer field: 1 for components, 0 for core modules.
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Kind::Component,
        Some([0, b'a', b's', b'm', _, _, 0, 0]) => Kind::CoreModule,
        _ if artifact::is_artifact(bytes) => Kind::Artifact,
        _ => Kind::Other,
    }
}

/// Checks, without compiling, that every configured plugin file is a component or an artifact
/// this kedge can load: what `kedge check --no-plugins` tells without the expensive part.
pub fn probe(plugins: &[PluginConfig]) -> Result<(), TransformError> {
    let fingerprint = engine::fingerprint(&Target::Host)?;
    for (index, p) in plugins.iter().enumerate() {
        let why = match std::fs::read(&p.path) {
            Err(e) => Some(format!("cannot read: {e}")),
            Ok(bytes) => match kind(&bytes) {
                Kind::Component if cfg!(feature = "compiler") => None,
                Kind::Component => Some(NO_COMPILER.to_owned()),
                Kind::Artifact => artifact::unwrap(&fingerprint, &bytes)
                    .err()
                    .map(|e| e.to_string()),
                Kind::CoreModule => Some(CORE_MODULE.to_owned()),
                Kind::Other => Some(NOT_A_PLUGIN.to_owned()),
            },
        };
        if let Some(why) = why {
            return Err(TransformError::Plugin {
                index,
                name: p.name.clone(),
                path: p.path.clone(),
                why,
            });
        }
    }
    Ok(())
}

const CORE_MODULE: &str = "is a core WebAssembly module, not a component: wrap it with `wasm-tools component new` (see plugins/README.md)";
const NO_COMPILER: &str = "this kedge was built without the plugin compiler: compile the plugin elsewhere with `kedge plugin compile --target <this device's triple>` and configure the .cwasm";
const NOT_A_PLUGIN: &str =
    "is neither a WebAssembly component nor an artifact from `kedge plugin compile`";

/// Reads the plugin at `path` into a component for `engine`. Components are compiled, through
/// `cache` when given; artifacts must carry `fingerprint`.
pub fn component(
    engine: &Engine,
    fingerprint: &str,
    path: &Path,
    name: &str,
    cache: Option<&Path>,
) -> Result<Component, String> {
    read_component(engine, fingerprint, path, name, cache).map(|(component, _)| component)
}

/// As [`component`], and whether the file was an artifact (loaded, not compiled).
fn read_component(
    engine: &Engine,
    fingerprint: &str,
    path: &Path,
    name: &str,
    cache: Option<&Path>,
) -> Result<(Component, bool), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    match kind(&bytes) {
        Kind::Artifact => {
            let code = artifact::unwrap(fingerprint, &bytes).map_err(|e| e.to_string())?;
            Ok((deserialize(engine, code)?, true))
        }
        Kind::Component => {
            compile_cached(engine, fingerprint, &bytes, name, cache).map(|c| (c, false))
        }
        Kind::CoreModule => Err(CORE_MODULE.to_owned()),
        Kind::Other => Err(NOT_A_PLUGIN.to_owned()),
    }
}

fn deserialize(engine: &Engine, code: &[u8]) -> Result<Component, String> {
    // SAFETY: the bytes come from a file that carries kedge's header for exactly this engine's
    // settings, which only `kedge plugin compile` or kedge's own cache write; wasmtime checks
    // its version and settings again, but not the code, which runs as it is. So the file must
    // be one only kedge's user can have written: a configured artifact is as trusted as the
    // config that names it (whoever can write either can run code as kedge, as with the binary
    // itself), and a cached one is read only from a private cache (`read_private`).
    unsafe { Component::deserialize(engine, code) }
        .map_err(|e| format!("cannot load the compiled plugin: {e:#}"))
}

#[cfg(feature = "compiler")]
fn compile_cached(
    engine: &Engine,
    fingerprint: &str,
    component: &[u8],
    name: &str,
    cache: Option<&Path>,
) -> Result<Component, String> {
    let Some(dir) = cache else {
        return Component::new(engine, component).map_err(|e| format!("cannot compile: {e:#}"));
    };
    let cached = artifact::cache_path(dir, name, fingerprint, component);
    // A cache directory others can write is not used at all: what kedge wrote there could
    // have been replaced by the time it is read back.
    let private = match private_dir(dir) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(cache = %dir.display(), %why, "plugin cache not used: others could plant code in it; the plugin is compiled at every start");
            false
        }
    };
    let cached_code = if private {
        read_private(&cached)
    } else {
        Ok(None)
    };
    match cached_code {
        Ok(None) => {}
        Ok(Some(bytes)) => match artifact::unwrap(fingerprint, &bytes)
            .map_err(|e| e.to_string())
            .and_then(|code| deserialize(engine, code))
        {
            Ok(c) => return Ok(c),
            Err(why) => {
                tracing::warn!(cache = %cached.display(), %why, "cached plugin unusable; compiling again")
            }
        },
        Err(why) => {
            tracing::warn!(cache = %cached.display(), %why, "cached plugin not trusted; compiling again")
        }
    }
    let started = std::time::Instant::now();
    let compiled =
        Component::new(engine, component).map_err(|e| format!("cannot compile: {e:#}"))?;
    tracing::info!(plugin = name, took = ?started.elapsed(), "plugin compiled");
    if !private {
        return Ok(compiled);
    }
    match compiled.serialize() {
        Ok(code) => match write_via_temp(&cached, &artifact::wrap(fingerprint, &code), 0o600) {
            Ok(()) => remove_older_entries(dir, name, &cached),
            Err(e) => {
                tracing::warn!(cache = %cached.display(), error = %e, "cannot cache the compiled plugin; it will be compiled at every start")
            }
        },
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot serialize the compiled plugin"),
    }
    Ok(compiled)
}

/// Compiles every component among `plugins` into `cache`, unless it is there already, without
/// starting any: `kedge run` has a child process do this before it loads the plugins, so that
/// the compiler's heap and code pages (about 15 MiB of resident memory that compiling in the
/// daemon leaves behind) never enter the daemon, which then only loads the cached code.
/// Artifacts and files that are no component are skipped: loading reports them. A warm entry
/// is loaded here once more than needed (`fill-cache` with a warm 409 KB entry of rust-units
/// took 0.00 s by `/usr/bin/time`): that load is the check that it works, so that an unusable
/// entry is compiled again here, not in the daemon.
#[cfg(feature = "compiler")]
pub fn fill_cache(plugins: &[(String, std::path::PathBuf)], cache: &Path) -> Result<(), String> {
    let engine = engine::build(&Target::Host).map_err(|e| e.to_string())?;
    let fingerprint = engine::fingerprint(&Target::Host).map_err(|e| e.to_string())?;
    for (name, path) in plugins {
        let bytes =
            std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        if let Kind::Component = kind(&bytes) {
            compile_cached(&engine, &fingerprint, &bytes, name, Some(cache))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// Removes the plugin's other cache entries (earlier versions of it, or of kedge): a device
/// that upgrades its plugins for years must not keep every compiled version.
#[cfg(feature = "compiler")]
fn remove_older_entries(dir: &Path, name: &str, current: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|f| artifact::is_cache_entry_of(f, name));
        if ours && path != current {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!(cache = %path.display(), "older compiled plugin removed"),
                Err(e) => {
                    tracing::warn!(cache = %path.display(), error = %e, "cannot remove an older compiled plugin")
                }
            }
        }
    }
}

#[cfg(not(feature = "compiler"))]
fn compile_cached(
    _: &Engine,
    _: &str,
    _: &[u8],
    _: &str,
    _: Option<&Path>,
) -> Result<Component, String> {
    Err(NO_COMPILER.to_owned())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so that a crash never
/// leaves a half-written file under the final name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_via_temp(path, bytes, 0o666)
}

/// As [`write_atomically`] into an existing directory, with a new file of `mode` (less the
/// umask): a leftover temporary file is removed rather than reused with its own mode.
fn write_via_temp(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Makes the cache directory `dir` if it is missing, for kedge's user only, and checks that
/// nobody else can write it.
#[cfg(feature = "compiler")]
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create: {e}"))?;
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    only_ours(&meta)
}

/// The cached file at `path`, if there is one and only kedge's user can have written it.
#[cfg(feature = "compiler")]
fn read_private(path: &Path) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    // The open file's metadata, not the path's: the file checked is the file read.
    only_ours(&file.metadata().map_err(|e| e.to_string())?)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok(Some(bytes))
}

/// Whether a file or directory belongs to kedge's user and nobody else may write it.
#[cfg(feature = "compiler")]
fn only_ours(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return Err(format!(
            "owned by uid {}, not kedge's uid {uid}",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "writable by its group or others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// One plugin of the config, started (its `init` ran), and what that took.
pub struct Opened {
    /// The plugin, with its first instance live.
    pub plugin: Plugin,
    /// Whether the file was an artifact from `kedge plugin compile`, loaded rather than compiled.
    pub artifact: bool,
    /// How long compiling the component (or loading the artifact, or the cached code) took.
    pub compiled_in: Duration,
    /// How long instantiating it and running `init` took.
    pub started_in: Duration,
}

/// Loads plugins one at a time with the engine and host kedge runs them with: [`load`] for the
/// pipeline, and `kedge check`, which reports on each plugin rather than stopping at the first.
pub struct Loader {
    engine: Engine,
    fingerprint: String,
    linker: Linker<host::HostState>,
    // `init` runs under a deadline, which only a ticking epoch enforces.
    ticker: Ticker,
}

impl Loader {
    /// Builds the engine and starts its deadline ticker.
    pub fn new() -> Result<Self, TransformError> {
        let engine = engine::build(&Target::Host)?;
        let fingerprint = engine::fingerprint(&Target::Host)?;
        let linker = host::linker(&engine).map_err(|e| EngineError::Config(format!("{e:#}")))?;
        let ticker = Ticker::start(&engine).map_err(TransformError::Ticker)?;
        Ok(Loader {
            engine,
            fingerprint,
            linker,
            ticker,
        })
    }

    /// Reads plugin `p`, the `index`th of the config, compiles it (through `cache` when given)
    /// or loads its artifact, and starts it: its world is checked against `tick` and `init`
    /// runs with its config. `stderr` lets the plugin write to kedge's stderr.
    pub fn open(
        &self,
        index: usize,
        p: &PluginConfig,
        cache: Option<&Path>,
        stderr: bool,
    ) -> Result<Opened, TransformError> {
        let fail = |why: String| TransformError::Plugin {
            index,
            name: p.name.clone(),
            path: p.path.clone(),
            why,
        };
        let started = Instant::now();
        let (component, artifact) =
            read_component(&self.engine, &self.fingerprint, &p.path, &p.name, cache)
                .map_err(fail)?;
        let compiled_in = started.elapsed();
        let started = Instant::now();
        let plugin = Plugin::load(
            &self.engine,
            &self.linker,
            &component,
            p.tick.is_some(),
            settings(p, stderr),
            std::sync::Arc::new(PluginStats::new(&p.name)),
        )
        .map_err(|e: LoadError| fail(e.to_string()))?;
        Ok(Opened {
            plugin,
            artifact,
            compiled_in,
            started_in: started.elapsed(),
        })
    }
}

/// The warning for a plugin of the `windowed` world configured without `tick`.
pub const TICK_NEVER_CALLED: &str =
    "the plugin implements tick, but no `tick` interval is configured: it will never be called";

/// Loads every configured plugin, in order. `cache` is where compiled components are kept.
pub fn load(
    plugins: &[PluginConfig],
    cache: Option<&Path>,
    source: &str,
    dead_letter_topic: &str,
    stderr: bool,
) -> Result<Loaded, TransformError> {
    if plugins.is_empty() {
        return Ok(Loaded {
            chain: Chain::new(Vec::new(), source.to_owned(), dead_letter_topic.to_owned()),
            ticker: None,
        });
    }
    let loader = Loader::new()?;
    let mut stages = Vec::with_capacity(plugins.len());
    for (index, p) in plugins.iter().enumerate() {
        let plugin = loader.open(index, p, cache, stderr)?.plugin;
        if p.tick.is_none() && plugin.has_tick() {
            tracing::warn!(plugin = %p.name, "{TICK_NEVER_CALLED}");
        }
        stages.push(Stage::new(
            plugin,
            p.subjects.clone(),
            Circuit::new(
                p.max_failures,
                p.failure_window,
                p.circuit_backoff.initial,
                p.circuit_backoff.max,
            ),
            p.on_failure,
            p.tick,
        ));
        tracing::info!(plugin = %p.name, path = %p.path.display(), "plugin loaded");
    }
    Ok(Loaded {
        chain: Chain::new(stages, source.to_owned(), dead_letter_topic.to_owned()),
        ticker: Some(loader.ticker),
    })
}

/// The limits, grants and `init` settings of plugin `p`.
pub fn settings(p: &PluginConfig, stderr: bool) -> super::plugin::Settings {
    super::plugin::Settings {
        limits: super::plugin::Limits::new(p.memory.bytes(), p.timeout, p.max_output.bytes()),
        grants: Grants {
            env: p
                .env
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
                .collect(),
            dirs: p
                .dirs
                .iter()
                .map(|d| DirGrant {
                    host: d.host.clone(),
                    guest: d.guest.clone(),
                    writable: d.writable,
                })
                .collect(),
            network: p.network,
            stderr,
        },
        config: p.config.clone(),
    }
}
