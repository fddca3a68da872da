//! What a plugin instance sees of kedge: the WIT host imports (`log`, `counter-add`), WASI p2
//! with no ambient authority and waits bounded by the call's deadline, and the memory limiter.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, StoreContextMut, Trap};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::io::poll as async_poll;
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::stats::{MAX_PLUGIN_COUNTERS, PluginStats, truncate};

/// Bindings for plugins of the `transform` world.
pub mod plain {
    wasmtime::component::bindgen!({ path: "../../wit", world: "transform" });
}

/// Bindings for plugins of the `windowed` world (`transform` plus `tick`).
pub mod windowed {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "windowed",
        with: {
            "kedge:transform/types": super::plain::kedge::transform::types,
            "kedge:transform/host": super::plain::kedge::transform::host,
        },
    });
}

/// Bindings for plugins built against `kedge:transform@0.1.0` (`wit/v0.1`), which kedge keeps
/// running: their `batch-info` has no `topic`; every other type is the same as in 0.2.0.
pub mod v01 {
    /// The `transform` world of 0.1.0.
    pub mod plain {
        wasmtime::component::bindgen!({ path: "../../wit/v0.1", world: "transform" });
    }

    /// The `windowed` world of 0.1.0.
    pub mod windowed {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.1",
            world: "windowed",
            with: {
                "kedge:transform/types": super::plain::kedge::transform::types,
                "kedge:transform/host": super::plain::kedge::transform::host,
            },
        });
    }

    pub use plain::kedge::transform::types::BatchInfo;

    impl From<&super::BatchInfo> for BatchInfo {
        fn from(info: &super::BatchInfo) -> Self {
            BatchInfo {
                source: info.source.clone(),
                subject: info.subject.clone(),
                default_topic: info.default_topic.clone(),
                now_ms: info.now_ms,
            }
        }
    }
}

pub use plain::kedge::transform::types::{BatchInfo, Event, Header, Output, PluginError, Verdict};
use plain::kedge::transform::{host, types};

/// Longest log line kept from a plugin.
const MAX_LOG_LINE: usize = 1024;
/// Log lines a plugin may write per second, sustained, and in a burst.
const LOG_RATE: f64 = 50.0;
const LOG_BURST: f64 = 100.0;

/// What the config grants a plugin beyond computing.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Environment variables passed through, with their values at start.
    pub env: Vec<(String, String)>,
    /// Host directories the plugin may read (and write, if so marked).
    pub dirs: Vec<DirGrant>,
    /// Whether the plugin may open sockets and resolve names.
    pub network: bool,
    /// Whether the plugin's stderr goes to kedge's stderr (`kedge plugin test`).
    pub stderr: bool,
}

/// One host directory made visible to a plugin.
#[derive(Debug, Clone)]
pub struct DirGrant {
    /// The directory on the device.
    pub host: PathBuf,
    /// Where the plugin sees it.
    pub guest: String,
    /// Whether the plugin may write.
    pub writable: bool,
}

/// The store data of one plugin instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory limit, and whether the plugin ran into it.
    pub limits: MemoryLimit,
    stats: Arc<PluginStats>,
    /// `counter-add`s of the call in progress, added to the stats only if the call succeeds:
    /// a batch re-run in halves after a fault must not count twice.
    pending_counters: Vec<(String, u64)>,
    log_tokens: f64,
    log_refilled: Instant,
    /// When the call in progress must end: epoch interruption stops the plugin's code then, and
    /// the WASI waits below return then.
    deadline: Instant,
}

impl HostState {
    /// Fresh state for a new instance.
    pub fn new(
        grants: &Grants,
        memory: usize,
        stats: Arc<PluginStats>,
    ) -> Result<Self, std::io::Error> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.envs(&grants.env).allow_tcp(false).allow_udp(false);
        if grants.network {
            wasi.inherit_network()
                .allow_tcp(true)
                .allow_udp(true)
                .allow_ip_name_lookup(true);
        }
        if grants.stderr {
            wasi.inherit_stderr();
        }
        for dir in &grants.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| std::io::Error::other(format!("{}: {e:#}", dir.host.display())))?;
        }
        Ok(HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: MemoryLimit::new(memory),
            stats,
            pending_counters: Vec::new(),
            log_tokens: LOG_BURST,
            log_refilled: Instant::now(),
            deadline: Instant::now(),
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, message: String) {
        let now = Instant::now();
        let refill = now.duration_since(self.log_refilled).as_secs_f64() * LOG_RATE;
        self.log_tokens = (self.log_tokens + refill).min(LOG_BURST);
        self.log_refilled = now;
        if self.log_tokens < 1.0 {
            PluginStats::add(&self.stats.logs_suppressed, 1);
            return;
        }
        self.log_tokens -= 1.0;
        let plugin = self.stats.name.as_str();
        let message = truncate(&message, MAX_LOG_LINE);
        match level {
            host::Level::Trace => tracing::trace!(plugin, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, "{message}"),
            host::Level::Info => tracing::info!(plugin, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, "{message}"),
            host::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        let pending = &mut self.pending_counters;
        match pending.iter().position(|(n, _)| *n == name) {
            Some(i) => pending[i].1 = pending[i].1.saturating_add(delta),
            // More names than the stats keep would be dropped there anyway.
            None if pending.len() < MAX_PLUGIN_COUNTERS => pending.push((name, delta)),
            None => {}
        }
    }
}

impl v01::plain::kedge::transform::types::Host for HostState {}

/// The 0.1.0 host interface is the 0.2.0 one.
impl v01::plain::kedge::transform::host::Host for HostState {
    fn log(&mut self, level: v01::plain::kedge::transform::host::Level, message: String) {
        use v01::plain::kedge::transform::host::Level as Old;
        let level = match level {
            Old::Trace => host::Level::Trace,
            Old::Debug => host::Level::Debug,
            Old::Info => host::Level::Info,
            Old::Warn => host::Level::Warn,
            Old::Error => host::Level::Error,
        };
        host::Host::log(self, level, message);
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        host::Host::counter_add(self, name, delta);
    }
}

impl HostState {
    /// Starts a call that may run for `timeout`: WASI waits end when it is over.
    pub fn start_call(&mut self, timeout: Duration) {
        self.deadline = Instant::now() + timeout;
    }

    /// Ends a call: its counter additions go to the stats if it `succeeded`, else nowhere.
    pub fn settle_counters(&mut self, succeeded: bool) {
        for (name, delta) in self.pending_counters.drain(..) {
            if succeeded {
                self.stats.counter_add(&name, delta);
            }
        }
    }
}

/// Caps the linear memories and tables of one instance, all of them together: a component can
/// hold several core instances, and a core module several memories, and wasmtime asks the
/// limiter about each one alone. Notes when the plugin hit the cap, so that the trap that
/// usually follows is reported as a memory overrun.
#[derive(Debug)]
pub struct MemoryLimit {
    max: usize,
    /// Bytes of all the instance's memories.
    memory: usize,
    /// Elements of all the instance's tables.
    elements: usize,
    /// Whether a growth was refused since the instance started.
    pub exceeded: bool,
}

impl MemoryLimit {
    fn new(max: usize) -> Self {
        MemoryLimit {
            max,
            memory: 0,
            elements: 0,
            exceeded: false,
        }
    }
}

/// Most table elements an instance may have, over all its tables (function references; a
/// plugin needs few).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Whether growing one of several things from `current` to `desired` keeps their `total` within
/// `max`; if so, counts the growth. A growth that then fails stays counted (wasmtime does not
/// say which one failed), which errs on the side of the limit; memories and tables never shrink.
fn grow(total: &mut usize, current: usize, desired: usize, max: usize) -> bool {
    match (*total - current.min(*total)).checked_add(desired) {
        Some(after) if after <= max => {
            *total = after;
            true
        }
        _ => false,
    }
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = grow(&mut self.memory, current, desired, self.max);
        self.exceeded |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(grow(
            &mut self.elements,
            current,
            desired,
            MAX_TABLE_ELEMENTS,
        ))
    }
}

/// The `wasi:io/poll` version wasmtime-wasi links; components importing older 0.2 versions
/// are linked to it.
const WASI_POLL: &str = "wasi:io/poll@0.2.12";

/// A linker with WASI p2 and kedge's host interface, in both contract versions.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // Epoch interruption stops only the plugin's own code: a wait inside a host call (a sleep
    // is a clock pollable and `poll` or `block`) would hold the pipeline for as long as the
    // plugin asks. The waits a plugin asks for go through these two functions, so they are
    // replaced by ones that give up at the call's deadline. The `blocking-*` stream functions
    // wait inside the host as well, but only on sockets (with `network` granted) can that wait
    // be long: stdio and files are always ready.
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_POLL)?;
    poll.func_wrap(
        "poll",
        |mut store: StoreContextMut<'_, HostState>, (pollables,): (Vec<Resource<DynPollable>>,)| {
            let state = store.data_mut();
            let wait = async_poll::Host::poll(&mut state.table, pollables);
            until(state.deadline, wait).map(|ready| (ready,))
        },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |mut store: StoreContextMut<'_, HostState>, (pollable,): (Resource<DynPollable>,)| {
            let state = store.data_mut();
            until(
                state.deadline,
                async_poll::HostPollable::block(&mut state.table, pollable),
            )
        },
    )?;
    linker.allow_shadowing(false);
    plain::Transform::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    v01::plain::Transform::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Runs a WASI wait until `deadline`, and then fails it with the trap epoch interruption
/// raises, so that the call is reported as a timeout.
fn until<R>(
    deadline: Instant,
    wait: impl Future<Output = wasmtime::Result<R>>,
) -> wasmtime::Result<R> {
    let deadline = tokio::time::Instant::from_std(deadline);
    // The timer is made inside `in_tokio`, which provides the runtime it needs when kedge calls
    // the plugin outside one (`kedge plugin test`).
    match in_tokio(async { tokio::time::timeout_at(deadline, wait).await }) {
        Ok(result) => result,
        Err(_) => Err(Trap::Interrupt.into()),
    }
}
