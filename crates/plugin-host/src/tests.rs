//! The sandbox's limits against plugins that attack them, and the events each lowering hands a
//! plugin: the `hostile` test plugin (built by `scripts/build-plugins.sh` into `target/plugins`,
//! or `$KEDGE_PLUGINS_DIR`) and components written here byte by byte for what the Rust SDK
//! cannot express (several memories).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};

use super::chain::{Applied, Chain, Stage};
use super::circuit::Circuit;
use super::engine::{self, Target, Ticker};
use super::host::{self, BatchInfo, Event, Grants, Header, HostState, Verdict};
use super::isolate::Fault;
use super::lower::Lowering;
use super::plugin::{Limits, LoadError, Plugin, Settings};
use super::stats::PluginStats;
use super::{artifact, load};
use crate::config::OnFailure;
use crate::event;
use crate::test_heap::peak_heap;
use kedge_wire::record;

fn plugins_dir() -> PathBuf {
    std::env::var_os("KEDGE_PLUGINS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins"),
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
    hostile_with(config, limits, Grants::default())
}

fn hostile_with(config: &[(&str, &str)], limits: Limits, grants: Grants) -> Loaded {
    example("hostile", config, limits, grants, false)
}

/// The example plugin `name` from the plugins directory, loaded with `config`.
fn example(
    name: &str,
    config: &[(&str, &str)],
    limits: Limits,
    grants: Grants,
    wants_tick: bool,
) -> Loaded {
    let path = plugins_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-plugins.sh",
        path.display()
    );
    let engine = engine::build(&Target::Host).unwrap();
    let fingerprint = engine::fingerprint(&Target::Host).unwrap();
    let component = load::component(&engine, &fingerprint, &path, name, None).unwrap();
    let ticker = Ticker::start(&engine).unwrap();
    let settings = Settings {
        limits,
        grants,
        config: config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let plugin = Plugin::load(
        &engine,
        &host::linker(&engine).unwrap(),
        &component,
        wants_tick,
        settings,
        Arc::new(PluginStats::new(name)),
    )
    .unwrap_or_else(|e| panic!("{name} {config:?}: {e}"));
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
        topic: None,
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

/// The lowerings of `process`'s events this build has (`lower.rs`).
#[cfg(feature = "hand-lowering")]
const LOWERINGS: &[Lowering] = &[Lowering::Derived, Lowering::ByHand];
#[cfg(not(feature = "hand-lowering"))]
const LOWERINGS: &[Lowering] = &[Lowering::Derived];

/// Events with and without keys, empty and large values, header names beyond ASCII.
fn varied_events() -> Vec<Event> {
    let header = |name: &str, value: &[u8]| Header {
        name: name.to_owned(),
        value: value.to_vec(),
    };
    let mut events = events(3);
    events[0].key = Some(b"device-7".to_vec());
    events[0].headers = vec![header("unit", b"C"), header("größe", b"\0\xff")];
    events[1].key = Some(Vec::new());
    events[1].value = Vec::new();
    events[1].headers = vec![header("", b"")];
    events[2].value = vec![0x5a; 100_000];
    events[2].timestamp_ms = i64::MIN;
    events
}

/// An event's key, value and headers (the bindings' types do not implement `PartialEq`).
type Echo = (Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

fn echo_of(key: Option<Vec<u8>>, value: Vec<u8>, headers: Vec<Header>) -> Echo {
    let headers = headers.into_iter().map(|h| (h.name, h.value)).collect();
    (key, value, headers)
}

/// What `hostile`'s `replace` mode returned: per event, one output with its key, value and
/// headers.
fn echoed(verdicts: Vec<Verdict>) -> Vec<Echo> {
    verdicts
        .into_iter()
        .map(|verdict| match verdict {
            Verdict::Replace(mut outputs) if outputs.len() == 1 => {
                let o = outputs.remove(0);
                assert!(o.topic.is_none() && o.timestamp_ms.is_none());
                echo_of(o.key, o.value, o.headers)
            }
            other => panic!("not an echo: {other:?}"),
        })
        .collect()
}

#[test]
fn every_lowering_hands_a_plugin_its_events_unchanged() {
    let mut p = hostile(
        &[("mode", "replace")],
        limits(16 << 20, Duration::from_secs(5), 1 << 20),
    );
    let events = varied_events();
    let want: Vec<Echo> = events
        .iter()
        .map(|e| echo_of(e.key.clone(), e.value.clone(), e.headers.clone()))
        .collect();
    // The pipeline's own events, borrowed as the chain passes them.
    let routed: Vec<event::Event> = events
        .iter()
        .map(|e| event::Event {
            key: e.key.clone().map(Bytes::from),
            ..event::Event::new(
                "s".into(),
                Bytes::from(e.value.clone()),
                e.headers
                    .iter()
                    .map(|h| record::Header {
                        name: h.name.clone(),
                        value: Bytes::from(h.value.clone()),
                    })
                    .collect(),
                e.timestamp_ms,
            )
        })
        .collect();
    let routed: Vec<&event::Event> = routed.iter().collect();
    for &lowering in LOWERINGS {
        let got = p.plugin.process_lowered(&info(), &events, lowering);
        assert!(echoed(got.unwrap()) == want, "{lowering:?}, WIT events");
        let got = p.plugin.process_lowered(&info(), &routed, lowering);
        assert!(
            echoed(got.unwrap()) == want,
            "{lowering:?}, the pipeline's events"
        );
    }
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

#[test]
fn a_plugin_that_waits_on_a_socket_is_stopped_at_its_deadline() {
    // A peer that accepts (the kernel does, into the backlog) and never writes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let timeout = Duration::from_millis(50);
    let mut p = hostile_with(
        &[("mode", "read-socket"), ("addr", &addr)],
        limits(16 << 20, timeout, 1 << 20),
        Grants {
            network: true,
            ..Grants::default()
        },
    );
    let started = Instant::now();
    let result = p.plugin.process(&info(), &events(1));
    let took = started.elapsed();
    assert_eq!(result.err(), Some(Fault::Timeout));
    assert!(
        took < Duration::from_millis(500),
        "a call with a {timeout:?} timeout took {took:?}"
    );
}

#[test]
fn outputs_that_alias_one_buffer_are_refused_before_the_host_copies_them() {
    let max_output = 1 << 20;
    // 64 outputs whose values are one 1 MiB block of the plugin's memory: 64 MiB to copy.
    let mut p = hostile(
        &[
            ("mode", "alias-output"),
            ("copies", "64"),
            ("size", "1048576"),
        ],
        limits(16 << 20, Duration::from_secs(5), max_output),
    );
    let (result, peak) = peak_heap(|| p.plugin.process(&info(), &events(1)));
    assert!(
        matches!(result, Err(Fault::OutputTooLarge { max, .. }) if max == max_output),
        "{:?}",
        result.err()
    );
    assert!(
        peak < 4 * max_output,
        "the host held {peak} bytes at once for a call whose output limit is {max_output}"
    );
}

/// A core module with `memories` memories of 3 MiB and `tables` tables of 60,000 elements.
fn core_module(memories: u8, tables: u8) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    if tables > 0 {
        // Table section: count, then per table `funcref`, limits without maximum, 60,000.
        let table = [0x70, 0x00, 0xe0, 0xd4, 0x03];
        m.extend([0x04, 1 + tables * table.len() as u8, tables]);
        (0..tables).for_each(|_| m.extend(table));
    }
    if memories > 0 {
        // Memory section: count, then per memory limits without maximum, 48 pages.
        m.extend([0x05, 1 + memories * 2, memories]);
        (0..memories).for_each(|_| m.extend([0x00, 0x30]));
    }
    m
}

/// A component that instantiates each of `modules` once and exports nothing.
fn component_of(modules: &[Vec<u8>]) -> Vec<u8> {
    let mut c = b"\0asm\x0d\0\x01\0".to_vec();
    for m in modules {
        c.extend([0x01, u8::try_from(m.len()).unwrap()]);
        c.extend(m);
    }
    // Core instance section: per module, `instantiate` its index with no arguments.
    let n = u8::try_from(modules.len()).unwrap();
    c.extend([0x02, 1 + 3 * n, n]);
    (0..n).for_each(|i| c.extend([0x00, i, 0x00]));
    c
}

/// Instantiates `component` under a `memory` limit; returns whether it was refused and whether
/// the refusal was noted as a memory overrun.
fn instantiate(engine: &Engine, component: &[u8], memory: usize) -> (bool, bool) {
    let component = wasmtime::component::Component::new(engine, component).unwrap();
    let state =
        HostState::new(&Grants::default(), memory, Arc::new(PluginStats::new("t"))).unwrap();
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(u64::MAX);
    let refused = Linker::<HostState>::new(engine)
        .instantiate(&mut store, &component)
        .is_err();
    (refused, store.data().limits.exceeded)
}

#[test]
fn the_memory_limit_covers_all_memories_and_tables_of_an_instance() {
    let engine = engine::build(&Target::Host).unwrap();
    let limit = 4 << 20;
    // One memory of 3 MiB fits in 4 MiB.
    assert_eq!(
        instantiate(&engine, &component_of(&[core_module(1, 0)]), limit),
        (false, false)
    );
    // Two core instances with 3 MiB each, and one core module with two memories of 3 MiB.
    for (what, component) in [
        (
            "two core instances",
            component_of(&[core_module(1, 0), core_module(1, 0)]),
        ),
        ("two memories", component_of(&[core_module(2, 0)])),
    ] {
        assert_eq!(
            instantiate(&engine, &component, limit),
            (true, true),
            "{what}: 6 MiB in all under a limit of 4 MiB"
        );
    }
    // Tables: 60,000 elements fit under the limit of 100,000; twice that does not.
    assert!(!instantiate(&engine, &component_of(&[core_module(0, 1)]), limit).0);
    assert!(
        instantiate(
            &engine,
            &component_of(&[core_module(0, 1), core_module(0, 1)]),
            limit
        )
        .0,
        "two tables of 60,000 elements"
    );
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A plugin file in a temporary directory, its cache directory there, and its code compiled.
struct Cached {
    _tmp: tempfile::TempDir,
    engine: Engine,
    fingerprint: String,
    plugin: PathBuf,
    cache: PathBuf,
    /// Where the plugin's compiled form is cached.
    file: PathBuf,
    /// The plugin's compiled form.
    code: Vec<u8>,
}

impl Cached {
    fn new() -> Self {
        let engine = engine::build(&Target::Host).unwrap();
        let fingerprint = engine::fingerprint(&Target::Host).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let plugin = tmp.path().join("plugin.wasm");
        let component = component_of(&[core_module(1, 0)]);
        std::fs::write(&plugin, &component).unwrap();
        let cache = tmp.path().join("data/plugin-cache");
        let file = artifact::cache_path(&cache, "p", &fingerprint, &component);
        let code = wasmtime::component::Component::new(&engine, &component)
            .unwrap()
            .serialize()
            .unwrap();
        Cached {
            _tmp: tmp,
            engine,
            fingerprint,
            plugin,
            cache,
            file,
            code,
        }
    }

    /// Loads the plugin through the cache; returns the code it runs.
    fn load(&self) -> Vec<u8> {
        load::component(
            &self.engine,
            &self.fingerprint,
            &self.plugin,
            "p",
            Some(&self.cache),
        )
        .unwrap()
        .serialize()
        .unwrap()
    }
}

#[test]
fn the_compile_cache_is_made_for_kedge_s_user_only() {
    let c = Cached::new();
    assert_eq!(c.load(), c.code);
    assert_eq!(mode(&c.cache), 0o700, "cache directory");
    assert_eq!(mode(&c.file), 0o600, "cache file");
    assert_eq!(c.load(), c.code, "the cache is used");
}

#[test]
fn a_new_version_of_a_plugin_replaces_the_old_one_in_the_compile_cache() {
    let c = Cached::new();
    c.load();
    // Another plugin whose name starts the same way keeps its entry.
    let other = c.cache.join("p-x-0123456789abcdef01234567.cwasm");
    std::fs::write(&other, b"another plugin's").unwrap();
    std::fs::write(&c.plugin, component_of(&[core_module(2, 0)])).unwrap();
    c.load();
    let mut entries: Vec<String> = std::fs::read_dir(&c.cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert!(entries.contains(&"p-x-0123456789abcdef01234567.cwasm".to_owned()));
    assert!(!c.file.exists(), "the first version's entry is gone");
}

#[test]
fn code_others_could_have_put_in_the_compile_cache_is_not_loaded() {
    let c = Cached::new();
    // Someone else's code under the plugin's cache name.
    let planted = wasmtime::component::Component::new(
        &c.engine,
        component_of(&[core_module(1, 0), core_module(1, 0)]),
    )
    .unwrap()
    .serialize()
    .unwrap();
    for (what, file_mode, dir_mode) in [
        ("world-writable file", 0o666, 0o700),
        ("group-writable file", 0o620, 0o700),
        ("world-writable directory", 0o600, 0o777),
        ("group-writable directory", 0o600, 0o770),
    ] {
        std::fs::create_dir_all(&c.cache).unwrap();
        std::fs::set_permissions(&c.cache, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(&c.file, artifact::wrap(&c.fingerprint, &planted)).unwrap();
        std::fs::set_permissions(&c.file, std::fs::Permissions::from_mode(file_mode)).unwrap();
        std::fs::set_permissions(&c.cache, std::fs::Permissions::from_mode(dir_mode)).unwrap();
        let loaded = c.load();
        assert!(loaded != planted, "{what}: the planted code was loaded");
        assert!(
            loaded == c.code,
            "{what}: the plugin's own code was not loaded"
        );
    }
}

/// The chain of the issue that asked for `batch-info.topic`: a router, then a windowed plugin
/// whose `tick` emits the averages. The averages must go where the router sent the readings,
/// not to the topic routing picks for their MQTT topic.
#[test]
fn a_window_after_a_router_keeps_the_route() {
    let limits = || limits(16 << 20, Duration::from_secs(5), 1 << 20);
    let router = example(
        "hostile",
        &[("mode", "route"), ("topic", "lab")],
        limits(),
        Grants::default(),
        false,
    );
    let window = example(
        "rust-downsample",
        &[("window_ms", "1000")],
        limits(),
        Grants::default(),
        true,
    );
    let circuit = || {
        Circuit::new(
            10,
            Duration::from_secs(60),
            Duration::from_secs(1),
            Duration::from_secs(60),
        )
    };
    let stages = vec![
        Stage::new(
            router.plugin,
            vec!["sensors/lab-1/#".into()],
            circuit(),
            OnFailure::DeadLetter,
            None,
        ),
        Stage::new(
            window.plugin,
            Vec::new(),
            circuit(),
            OnFailure::DeadLetter,
            Some(Duration::from_millis(1)),
        ),
    ];
    let mut chain = Chain::new(stages, "mqtt".into(), "dead".into());
    let topic_for = |subject: &str| (!subject.is_empty()).then(|| "sensors".to_owned());
    let reading = |subject: &str, c: u32| {
        event::Event::new(
            subject.into(),
            Bytes::from(format!(r#"{{"temp_c":{c}}}"#)),
            Vec::new(),
            1_700_000_000_000,
        )
    };
    let events = [
        reading("sensors/lab-1/temp", 20),
        reading("sensors/hall-1/temp", 30),
        reading("sensors/lab-1/temp", 22),
    ];
    match chain.apply(&events, &topic_for, 1_700_000_000_000) {
        Applied::Events(out) => assert!(out.is_empty(), "the window keeps every reading: {out:?}"),
        Applied::Held { .. } => panic!("held"),
    }
    std::thread::sleep(Duration::from_millis(5));
    let mut averages: Vec<(Option<String>, String)> = chain
        .tick(&topic_for, 1_700_000_002_000)
        .into_iter()
        .map(|e| (e.topic, String::from_utf8_lossy(&e.payload).into_owned()))
        .collect();
    averages.sort();
    assert_eq!(averages.len(), 2, "{averages:?}");
    assert_eq!(averages[0].0.as_deref(), Some("lab"), "{averages:?}");
    assert!(
        averages[0].1.contains(r#""sensor":"sensors/lab-1/temp""#),
        "{averages:?}"
    );
    assert!(averages[0].1.contains(r#""avg":21"#), "{averages:?}");
    assert_eq!(averages[1].0.as_deref(), Some("sensors"), "{averages:?}");
    assert!(
        averages[1].1.contains(r#""sensor":"sensors/hall-1/temp""#),
        "{averages:?}"
    );
}

/// A component built against `kedge:transform@0.1.0` (the C example, built against
/// `wit/v0.1` by `scripts/build-plugins.sh`) loads and decides as its current build does.
#[test]
fn a_plugin_built_against_0_1_runs_as_its_0_2_build_does() {
    let limits = || limits(16 << 20, Duration::from_secs(5), 1 << 20);
    let config = [("max_bytes", "3")];
    let mut old = example("c-filter-v0.1", &config, limits(), Grants::default(), false);
    let mut new = example("c-filter", &config, limits(), Grants::default(), false);
    assert_eq!(
        old.plugin.contract(),
        "kedge:transform@0.1.0 world transform"
    );
    assert_eq!(
        new.plugin.contract(),
        "kedge:transform@0.2.0 world transform"
    );
    let events: Vec<Event> = ["", "ab", "abcd", "abc"]
        .iter()
        .map(|v| Event {
            key: None,
            value: v.as_bytes().to_vec(),
            headers: Vec::new(),
            timestamp_ms: 0,
        })
        .collect();
    let mut info = info();
    info.topic = Some("lab".into());
    let verdicts = format!("{:?}", old.plugin.process(&info, &events).unwrap());
    assert_eq!(
        verdicts,
        format!("{:?}", new.plugin.process(&info, &events).unwrap())
    );
    assert_eq!(
        verdicts,
        "[Verdict::Drop, Verdict::Keep, Verdict::Drop, Verdict::Keep]"
    );
    assert_eq!(
        old.plugin.stats().counters(),
        [("empty".to_owned(), 1), ("too_large".to_owned(), 1)]
    );
    // A 0.1 plugin has no `tick`: asking for one is refused as for a current one.
    let engine = engine::build(&Target::Host).unwrap();
    let fingerprint = engine::fingerprint(&Target::Host).unwrap();
    let path = plugins_dir().join("c-filter-v0.1.wasm");
    let component = load::component(&engine, &fingerprint, &path, "old", None).unwrap();
    let settings = Settings {
        limits: limits(),
        grants: Grants::default(),
        config: Vec::new(),
    };
    let refused = Plugin::load(
        &engine,
        &host::linker(&engine).unwrap(),
        &component,
        true,
        settings,
        Arc::new(PluginStats::new("old")),
    );
    assert!(matches!(refused, Err(LoadError::NoTick)));
}
