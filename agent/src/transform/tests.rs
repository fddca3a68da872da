//! The sandbox's limits against plugins that attack them: the `hostile` test plugin (built by
//! `scripts/build-plugins.sh` into `target/plugins`, or `$KEDGE_PLUGINS_DIR`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::engine::{self, Target, Ticker};
use super::host::{self, BatchInfo, Event, Grants};
use super::isolate::Fault;
use super::load;
use super::plugin::{Limits, Plugin, Settings};
use super::stats::PluginStats;

fn plugins_dir() -> PathBuf {
    std::env::var_os("KEDGE_PLUGINS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"),
        PathBuf::from,
    )
}

/// A loaded plugin and the ticker that enforces its deadlines.
struct Loaded {
    plugin: Plugin,
    _ticker: Ticker,
}

fn limits(memory: usize, timeout: Duration, max_output: usize) -> Limits {
    Limits::new(memory as u64, timeout, max_output as u64)
}

fn hostile(config: &[(&str, &str)], limits: Limits) -> Loaded {
    let path = plugins_dir().join("hostile.wasm");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh",
        path.display()
    );
    let engine = engine::build(&Target::Host).unwrap();
    let fingerprint = engine::fingerprint(&Target::Host).unwrap();
    let component = load::component(&engine, &fingerprint, &path, "hostile", None).unwrap();
    let ticker = Ticker::start(&engine).unwrap();
    let settings = Settings {
        limits,
        grants: Grants::default(),
        config: config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let plugin = Plugin::load(
        &engine,
        &host::linker(&engine).unwrap(),
        &component,
        false,
        settings,
        Arc::new(PluginStats::new("hostile")),
    )
    .unwrap_or_else(|e| panic!("hostile {config:?}: {e}"));
    Loaded {
        plugin,
        _ticker: ticker,
    }
}

fn info() -> BatchInfo {
    BatchInfo {
        source: "mqtt".into(),
        subject: "s".into(),
        default_topic: None,
        now_ms: 0,
    }
}

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            key: None,
            value: format!("event {i}").into_bytes(),
            headers: Vec::new(),
            timestamp_ms: 0,
        })
        .collect()
}

#[test]
fn a_plugin_that_sleeps_in_a_wasi_call_is_stopped_at_its_deadline() {
    let timeout = Duration::from_millis(50);
    let mut p = hostile(
        &[("mode", "sleep"), ("ms", "3000")],
        limits(16 << 20, timeout, 1 << 20),
    );
    let started = Instant::now();
    let result = p.plugin.process(&info(), &events(2));
    let took = started.elapsed();
    assert_eq!(result.err(), Some(Fault::Timeout));
    assert!(
        took < Duration::from_millis(500),
        "a call with a {timeout:?} timeout took {took:?}"
    );
    // The instance was recycled; a fresh one sleeps and is stopped again.
    let started = Instant::now();
    assert_eq!(
        p.plugin.process(&info(), &events(1)).err(),
        Some(Fault::Timeout)
    );
    assert!(started.elapsed() < Duration::from_millis(500));
}
