//! One loaded plugin: its compiled component, the live instance and its limits. Faults are
//! classified here and a poisoned instance is dropped; the next call gets a fresh one.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, Trap};

use super::engine::deadline_ticks;
use super::host::{
    BatchInfo, Grants, HostState, Output, PluginError, Verdict, plain, v01, windowed,
};
use super::isolate::Fault;
use super::lower::{self, Lowering, WitEvent};
use super::stats::PluginStats;

/// How one plugin runs.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most bytes of linear memory per instance.
    pub memory: usize,
    /// Longest one `process` or `tick` call may run.
    pub timeout: Duration,
    /// Longest instantiation plus `init` may run.
    pub init_timeout: Duration,
    /// Most bytes of verdicts and outputs one call may return.
    pub max_output: usize,
}

/// Longest an instantiation plus `init` may take at least: interpreters (Python, JS) start
/// slower than one call is allowed to run.
const INIT_TIMEOUT_MIN: Duration = Duration::from_secs(5);

/// The least hostcall fuel (see [`Limits::fuel`]): WASI calls hand the host buffers of a few
/// KiB (a write to stderr takes up to 4 KiB), which must not fail under a small `max_output`.
const FUEL_MIN: usize = 1 << 20;

impl Limits {
    /// Bytes the host may allocate for what it copies out of the plugin's memory at once: the
    /// results of a call of `events` events, or the arguments of one host call the plugin makes.
    ///
    /// `max_output` is checked on the copied results, but the copy itself must be bounded too:
    /// outputs may all point at the same bytes of the plugin's memory, so a plugin could make
    /// the host copy far more than it has memory. wasmtime counts the bytes of lists and strings
    /// it copies, and the records it makes of them, against this "hostcall fuel" (128 MiB by
    /// default) and fails the call when it runs out. It is set to `max_output` for the bytes,
    /// as much again for the records (each output takes about 100 bytes of host memory), and
    /// the one verdict per event every call returns; at least [`FUEL_MIN`].
    pub fn fuel(&self, events: usize) -> usize {
        self.max_output
            .saturating_mul(2)
            .max(FUEL_MIN)
            .saturating_add(events.saturating_mul(size_of::<Verdict>()))
    }

    /// Limits from the config's values; `init` gets at least [`INIT_TIMEOUT_MIN`].
    pub fn new(memory: u64, timeout: Duration, max_output: u64) -> Self {
        Limits {
            memory: usize::try_from(memory).unwrap_or(usize::MAX),
            timeout,
            init_timeout: timeout.max(INIT_TIMEOUT_MIN),
            max_output: usize::try_from(max_output).unwrap_or(usize::MAX),
        }
    }
}

/// Everything about one plugin but its code.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Its limits.
    pub limits: Limits,
    /// What it may use beyond computing.
    pub grants: Grants,
    /// Its `init` settings.
    pub config: Vec<(String, String)>,
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component does not implement the contract.
    #[error(
        "does not implement kedge:transform@0.2.0 or 0.1.0 (world `transform` or `windowed`): {0}; build it against wit/transform.wit"
    )]
    Contract(String),
    /// `tick` is configured but the plugin has no `tick` export.
    #[error(
        "`tick` is set, but the plugin implements the `transform` world, which has no tick; build it for the `windowed` world or remove `tick`"
    )]
    NoTick,
    /// The first instance could not be made or initialised.
    #[error("{0}")]
    Start(Fault),
}

/// The contract a plugin was built against: its world, and whether it is the current version
/// or 0.1.0, whose `batch-info` has no `topic`.
enum Pre {
    Plain(plain::TransformPre<HostState>),
    Windowed(windowed::WindowedPre<HostState>),
    Plain01(v01::plain::TransformPre<HostState>),
    Windowed01(v01::windowed::WindowedPre<HostState>),
}

enum Bindings {
    Plain(plain::Transform),
    Windowed(windowed::Windowed),
    Plain01(v01::plain::Transform),
    Windowed01(v01::windowed::Windowed),
}

impl Pre {
    /// The contract `instance_pre`'s component implements, tried newest first; the error is
    /// the one of the current `transform` world, which is what an author should build against.
    fn new(instance_pre: wasmtime::component::InstancePre<HostState>) -> Result<Pre, String> {
        if let Ok(pre) = windowed::WindowedPre::new(instance_pre.clone()) {
            return Ok(Pre::Windowed(pre));
        }
        let current = match plain::TransformPre::new(instance_pre.clone()) {
            Ok(pre) => return Ok(Pre::Plain(pre)),
            Err(e) => format!("{e:#}"),
        };
        if let Ok(pre) = v01::windowed::WindowedPre::new(instance_pre.clone()) {
            return Ok(Pre::Windowed01(pre));
        }
        v01::plain::TransformPre::new(instance_pre)
            .map(Pre::Plain01)
            .map_err(|_| current)
    }
}

impl Bindings {
    /// The plugin's `process` and whether it takes the 0.1.0 `batch-info`.
    fn process(&self) -> (wasmtime::component::Func, bool) {
        match self {
            Bindings::Plain(b) => (*b.func_process().func(), false),
            Bindings::Windowed(b) => (*b.func_process().func(), false),
            Bindings::Plain01(b) => (*b.func_process().func(), true),
            Bindings::Windowed01(b) => (*b.func_process().func(), true),
        }
    }

    /// The plugin's `tick`, if its world has one.
    fn tick(&self) -> Option<wasmtime::component::Func> {
        match self {
            Bindings::Windowed(b) => Some(*b.func_tick().func()),
            Bindings::Windowed01(b) => Some(*b.func_tick().func()),
            Bindings::Plain(_) | Bindings::Plain01(_) => None,
        }
    }
}

struct Live {
    store: Store<HostState>,
    bindings: Bindings,
}

/// A plugin ready to run, with at most one live instance.
pub struct Plugin {
    engine: Engine,
    pre: Pre,
    limits: Limits,
    grants: Grants,
    config: Vec<(String, String)>,
    live: Option<Live>,
    stats: Arc<PluginStats>,
}

impl Plugin {
    /// Links `component` against kedge's host and starts a first instance, so that a plugin
    /// that cannot start is reported before anything runs through it.
    pub fn load(
        engine: &Engine,
        linker: &Linker<HostState>,
        component: &Component,
        wants_tick: bool,
        settings: Settings,
        stats: Arc<PluginStats>,
    ) -> Result<Self, LoadError> {
        let Settings {
            limits,
            grants,
            config,
        } = settings;
        let instance_pre = linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::Contract(format!("{e:#}")))?;
        let pre = Pre::new(instance_pre).map_err(LoadError::Contract)?;
        if wants_tick && matches!(pre, Pre::Plain(_) | Pre::Plain01(_)) {
            return Err(LoadError::NoTick);
        }
        if matches!(pre, Pre::Plain01(_) | Pre::Windowed01(_)) {
            tracing::info!(
                plugin = %stats.name,
                "plugin built against kedge:transform@0.1.0: it runs, without `batch-info.topic`; wit/README.md says how to move to 0.2.0"
            );
        }
        let mut plugin = Plugin {
            engine: engine.clone(),
            pre,
            limits,
            grants,
            config,
            live: None,
            stats,
        };
        plugin.live().map_err(LoadError::Start)?;
        Ok(plugin)
    }

    /// Whether the plugin implements `tick`.
    pub fn has_tick(&self) -> bool {
        matches!(self.pre, Pre::Windowed(_) | Pre::Windowed01(_))
    }

    /// The contract the plugin implements, as `kedge:transform@<version>` and its world.
    pub fn contract(&self) -> &'static str {
        match self.pre {
            Pre::Plain(_) => "kedge:transform@0.2.0 world transform",
            Pre::Windowed(_) => "kedge:transform@0.2.0 world windowed",
            Pre::Plain01(_) => "kedge:transform@0.1.0 world transform",
            Pre::Windowed01(_) => "kedge:transform@0.1.0 world windowed",
        }
    }

    /// The plugin's counters.
    pub fn stats(&self) -> &Arc<PluginStats> {
        &self.stats
    }

    /// The live instance, made and initialised if there is none.
    fn live(&mut self) -> Result<&mut Live, Fault> {
        if self.live.is_none() {
            self.live = Some(self.start()?);
        }
        Ok(self.live.as_mut().expect("just made"))
    }

    fn start(&self) -> Result<Live, Fault> {
        let state = HostState::new(&self.grants, self.limits.memory, self.stats.clone())
            .map_err(|e| Fault::Init(e.to_string()))?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        arm(&mut store, self.limits.init_timeout, self.limits.fuel(0));
        let bindings = match &self.pre {
            Pre::Plain(pre) => pre.instantiate(&mut store).map(Bindings::Plain),
            Pre::Windowed(pre) => pre.instantiate(&mut store).map(Bindings::Windowed),
            Pre::Plain01(pre) => pre.instantiate(&mut store).map(Bindings::Plain01),
            Pre::Windowed01(pre) => pre.instantiate(&mut store).map(Bindings::Windowed01),
        }
        .map_err(|e| Fault::Init(classify(&e, &store, self.limits.max_output).to_string()))?;
        let init = match &bindings {
            Bindings::Plain(b) => b
                .call_init(&mut store, &self.config)
                .map(|r| r.map_err(|e| e.message)),
            Bindings::Windowed(b) => b
                .call_init(&mut store, &self.config)
                .map(|r| r.map_err(|e| e.message)),
            Bindings::Plain01(b) => b
                .call_init(&mut store, &self.config)
                .map(|r| r.map_err(|e| e.message)),
            Bindings::Windowed01(b) => b
                .call_init(&mut store, &self.config)
                .map(|r| r.map_err(|e| e.message)),
        };
        match init {
            Ok(Ok(())) => {
                store.data_mut().settle_counters(true);
                Ok(Live { store, bindings })
            }
            Ok(Err(message)) => Err(Fault::Init(message)),
            Err(e) => Err(Fault::Init(
                classify(&e, &store, self.limits.max_output).to_string(),
            )),
        }
    }

    /// Runs `process` on `events`. After a fault that poisons the instance, the instance is
    /// dropped (and counted), so the next call starts a fresh one.
    pub fn process<E: WitEvent>(
        &mut self,
        info: &BatchInfo,
        events: &[E],
    ) -> Result<Vec<Verdict>, Fault> {
        self.process_lowered(info, events, Lowering::HOT)
    }

    /// [`Plugin::process`], with the events lowered the `lowering` way (the tests run each).
    pub(super) fn process_lowered<E: WitEvent>(
        &mut self,
        info: &BatchInfo,
        events: &[E],
        lowering: Lowering,
    ) -> Result<Vec<Verdict>, Fault> {
        PluginStats::add(&self.stats.calls, 1);
        let (timeout, fuel) = (self.limits.timeout, self.limits.fuel(events.len()));
        let live = self.live()?;
        arm(&mut live.store, timeout, fuel);
        let started = std::time::Instant::now();
        let (func, legacy) = live.bindings.process();
        // 0.1.0 shares every type with 0.2.0 but `batch-info`: the verdicts lift into the
        // current types, whose shape wasmtime checks against the function's.
        let result: wasmtime::Result<(Result<Vec<Verdict>, PluginError>,)> = if legacy {
            let info = v01::BatchInfo::from(info);
            lower::call(func, &mut live.store, &info, events, lowering)
        } else {
            lower::call(func, &mut live.store, info, events, lowering)
        };
        let result = result.map(|(verdicts,)| verdicts);
        if result.is_ok() {
            self.stats.call_time.observe(started.elapsed());
        }
        let outcome = match result {
            Ok(Ok(v)) => self.check_verdicts(v, events.len()),
            Ok(Err(e)) => Err(Fault::Plugin(e.message)),
            Err(e) => return Err(self.poisoned(&e)),
        };
        self.settle_counters(outcome.is_ok());
        outcome
    }

    /// Ends a call on the live instance: its counters count only if it `succeeded`.
    fn settle_counters(&mut self, succeeded: bool) {
        if let Some(live) = &mut self.live {
            live.store.data_mut().settle_counters(succeeded);
        }
    }

    fn check_verdicts(&self, verdicts: Vec<Verdict>, want: usize) -> Result<Vec<Verdict>, Fault> {
        if verdicts.len() != want {
            return Err(Fault::WrongCount {
                got: verdicts.len(),
                want,
            });
        }
        let bytes = verdicts.iter().map(verdict_bytes).sum();
        if bytes > self.limits.max_output {
            return Err(Fault::OutputTooLarge {
                bytes: Some(bytes),
                max: self.limits.max_output,
            });
        }
        Ok(verdicts)
    }

    /// Runs `tick` (the plugin must implement it).
    pub fn tick(&mut self, now_ms: i64) -> Result<Vec<Output>, Fault> {
        let (timeout, fuel) = (self.limits.timeout, self.limits.fuel(0));
        let live = self.live()?;
        arm(&mut live.store, timeout, fuel);
        let Some(func) = live.bindings.tick() else {
            return Ok(Vec::new());
        };
        let result = func
            .typed::<(i64,), (Result<Vec<Output>, PluginError>,)>(&live.store)
            .and_then(|f| f.call(&mut live.store, (now_ms,)))
            .map(|(outputs,)| outputs);
        let outcome = match result {
            Ok(Ok(o)) => {
                let bytes = o.iter().map(output_bytes).sum();
                if bytes > self.limits.max_output {
                    Err(Fault::OutputTooLarge {
                        bytes: Some(bytes),
                        max: self.limits.max_output,
                    })
                } else {
                    Ok(o)
                }
            }
            Ok(Err(e)) => Err(Fault::Plugin(e.message)),
            Err(e) => return Err(self.poisoned(&e)),
        };
        self.settle_counters(outcome.is_ok());
        outcome
    }

    /// Drops the instance a trap poisoned and says why it trapped.
    fn poisoned(&mut self, e: &wasmtime::Error) -> Fault {
        let fault = match &self.live {
            Some(live) => classify(e, &live.store, self.limits.max_output),
            None => Fault::Trap(e.to_string()),
        };
        self.live = None;
        PluginStats::add(&self.stats.recycles, 1);
        tracing::warn!(plugin = %self.stats.name, fault = %fault, "plugin instance recycled");
        fault
    }
}

/// Sets the deadline of a call that may run for `timeout`, for the plugin's code and for its
/// WASI waits, and how many bytes the host may copy out of the plugin's memory at once.
fn arm(store: &mut Store<HostState>, timeout: Duration, fuel: usize) {
    store.set_epoch_deadline(deadline_ticks(timeout));
    store.data_mut().start_call(timeout);
    store.set_hostcall_fuel(fuel);
}

/// How wasmtime says a copy out of the plugin's memory ran out of hostcall fuel (its error type
/// is private). wasmtime is pinned to one version (agent/Cargo.toml), and the tests of
/// `kedge_plugin_host` tests would see the message change.
const FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// What a wasmtime error from a call means.
fn classify(e: &wasmtime::Error, store: &Store<HostState>, max_output: usize) -> Fault {
    if store.data().limits.exceeded {
        return Fault::Memory;
    }
    if e.chain()
        .any(|cause| cause.to_string().contains(FUEL_EXHAUSTED))
    {
        return Fault::OutputTooLarge {
            bytes: None,
            max: max_output,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Fault::Timeout,
        Some(trap) => Fault::Trap(trap.to_string()),
        None => Fault::Trap(e.to_string()),
    }
}

fn output_bytes(o: &Output) -> usize {
    o.value.len()
        + o.key.as_ref().map_or(0, Vec::len)
        + o.topic.as_ref().map_or(0, String::len)
        + o.headers
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>()
}

fn verdict_bytes(v: &Verdict) -> usize {
    match v {
        Verdict::Keep | Verdict::Drop => 0,
        Verdict::Route(t) | Verdict::Fail(t) => t.len(),
        Verdict::Replace(outputs) => outputs.iter().map(output_bytes).sum(),
    }
}
