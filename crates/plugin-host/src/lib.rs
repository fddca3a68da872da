//! The plugin host: runs the chain of WebAssembly transform plugins (the WIT contract in `wit/`)
//! under wasmtime with per-call deadlines, memory limits, recycling on faults and a circuit
//! breaker (ARCHITECTURE.md §5). It knows records and events, not queues, Kafka or MQTT sessions.

mod artifact;
pub mod chain;
mod circuit;
pub mod config;
pub mod engine;
pub mod event;
pub mod host;
mod isolate;
pub mod load;
mod lower;
pub mod plugin;
pub mod stats;
pub mod tester;
#[cfg(test)]
mod tests;
// One counting allocator for the tests of every crate that needs it, kept in one file.
#[cfg(test)]
#[path = "../../base/test_heap.rs"]
mod test_heap;

use std::path::Path;
use std::sync::Arc;

use engine::{EngineError, Target};
/// A compiled plugin, as [`load::component`] returns it.
pub use wasmtime::component::Component;

/// Why `kedge plugin compile` or `kedge plugin test` failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The engine could not be built.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The plugin file is unusable.
    #[error("{path}: {why}")]
    Plugin {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
}

fn plugin_error(path: &Path, why: impl std::fmt::Display) -> ToolError {
    ToolError::Plugin {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Compiles the component at `input` for `target`: a kedge artifact, ready to write.
#[cfg(feature = "compiler")]
pub fn compile(input: &Path, target: &Target) -> Result<Vec<u8>, ToolError> {
    let bytes =
        std::fs::read(input).map_err(|e| plugin_error(input, format!("cannot read: {e}")))?;
    if !bytes.starts_with(b"\0asm") || bytes.get(6..8) != Some(&[1, 0]) {
        return Err(plugin_error(
            input,
            "is not a WebAssembly component (core modules must be wrapped with `wasm-tools component new`)",
        ));
    }
    let engine = engine::build(target)?;
    let code = engine
        .precompile_component(&bytes)
        .map_err(|e| plugin_error(input, format!("cannot compile: {e:#}")))?;
    Ok(artifact::wrap(&engine::fingerprint(target)?, &code))
}

/// Without the compiler, `kedge plugin compile` can only say where to find one.
#[cfg(not(feature = "compiler"))]
pub fn compile(input: &Path, _: &Target) -> Result<Vec<u8>, ToolError> {
    Err(plugin_error(
        input,
        "this kedge was built without the plugin compiler (cargo feature `compiler`): compile on a machine whose kedge has it",
    ))
}

/// Loads one plugin for `kedge plugin test`, with its stderr shown; compiled code is kept in
/// `cache` (as the agent keeps it in its data directory) when given.
pub fn open_for_test(
    path: &Path,
    config: Vec<(String, String)>,
    limits: plugin::Limits,
    wants_tick: bool,
    cache: Option<&Path>,
) -> Result<plugin::Plugin, ToolError> {
    let engine = engine::build(&Target::Host)?;
    let linker = host::linker(&engine).map_err(|e| EngineError::Config(format!("{e:#}")))?;
    let fingerprint = engine::fingerprint(&Target::Host)?;
    // Cached under the file's name: an earlier build of the same plugin gives way to it.
    let name = path
        .file_stem()
        .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
    let component = load::component(&engine, &fingerprint, path, &name, cache)
        .map_err(|why| plugin_error(path, why))?;
    let ticker = engine::Ticker::start(&engine).map_err(|e| plugin_error(path, e))?;
    // The process ends when the test does: the ticker may live as long.
    std::mem::forget(ticker);
    let settings = plugin::Settings {
        limits,
        grants: host::Grants {
            stderr: true,
            ..Default::default()
        },
        config,
    };
    plugin::Plugin::load(
        &engine,
        &linker,
        &component,
        wants_tick,
        settings,
        Arc::new(stats::PluginStats::new(&name)),
    )
    .map_err(|e| plugin_error(path, e))
}
