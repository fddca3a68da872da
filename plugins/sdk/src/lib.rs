//! Writes kedge transform plugins in Rust.
//!
//! A plugin is a WebAssembly component implementing the `kedge:transform@0.2.0` contract
//! (`wit/transform.wit`). This crate hides the generated bindings: implement [`Plugin`] (and
//! [`Windowed`] for the `windowed` world), then name the type in [`export!`] or
//! [`export_windowed!`]. Build with `cargo build --release --target wasm32-wasip2`.
//!
//! ```
//! use kedge_plugin::{BatchInfo, Config, Error, Event, Plugin, Verdict};
//!
//! struct DropEmpty;
//!
//! impl Plugin for DropEmpty {
//!     fn init(_config: Config) -> Result<Self, Error> {
//!         Ok(DropEmpty)
//!     }
//!
//!     fn process(&mut self, _info: &BatchInfo, events: Vec<Event>) -> Result<Vec<Verdict>, Error> {
//!         Ok(events
//!             .iter()
//!             .map(|e| if e.value.is_empty() { Verdict::Drop } else { Verdict::Keep })
//!             .collect())
//!     }
//! }
//!
//! kedge_plugin::export!(DropEmpty);
//! ```
//!
//! The event, verdict and output types are the generated WIT types themselves, so nothing is
//! converted between the host's representation and the plugin's.

// The allocator's state is unsynchronised, so it is only installed where a component has one
// thread (no `atomics`). Native builds (plugins' unit tests) keep the standard allocator; the
// module is compiled there only for its own tests.
#[cfg(any(
    test,
    all(
        feature = "allocator",
        target_family = "wasm",
        not(target_feature = "atomics")
    )
))]
mod alloc;
mod config;
mod error;
pub mod json;
mod output;

/// Size classes in front of the standard allocator: see the `allocator` feature in the README.
#[cfg(all(
    feature = "allocator",
    target_family = "wasm",
    not(target_feature = "atomics")
))]
#[global_allocator]
static ALLOCATOR: alloc::SizeClasses = alloc::SizeClasses::new();

pub use config::{Config, FromConfig};
pub use error::Error;

/// The generated bindings. Both worlds come from the same WIT package; `windowed` reuses the
/// `types` and `host` bindings of `transform` so that one `Event` or `Verdict` type serves both.
#[doc(hidden)]
pub mod bindings {
    /// The `transform` world: `init` and `process`.
    // The canonical ABI flattens `batch-info` into the generated `process` shim's parameters.
    #[allow(clippy::too_many_arguments)]
    pub mod transform {
        wit_bindgen::generate!({
            world: "transform",
            path: "../../wit",
            // The export macro runs in the plugin's crate: its half of the component-type
            // section (the one listing exports) lands only in the plugin that exports this world.
            pub_export_macro: true,
            // Lets plugins compare verdicts and outputs in their unit tests.
            additional_derives: [PartialEq],
        });
    }

    /// The `windowed` world: `transform` plus `tick`.
    #[allow(clippy::too_many_arguments)]
    pub mod windowed {
        wit_bindgen::generate!({
            world: "windowed",
            path: "../../wit",
            pub_export_macro: true,
            with: {
                "kedge:transform/types@0.2.0": super::transform::kedge::transform::types,
                "kedge:transform/host@0.2.0": super::transform::kedge::transform::host,
            },
        });
    }
}

use bindings::transform::kedge::transform::host;
pub use bindings::transform::kedge::transform::types::{BatchInfo, Event, Header, Output, Verdict};
pub use host::Level;

/// A transform plugin: one value of this type lives in the component instance from `init` on.
///
/// kedge calls [`init`](Plugin::init) once per instance, then [`process`](Plugin::process) for
/// each batch. After a trap the host drops the instance and starts a new one, so state is lost
/// then; nothing in the contract makes it durable.
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from its `config` table in kedge.toml. An error refuses the plugin: kedge
    /// logs the message and does not start the pipeline.
    fn init(config: Config) -> Result<Self, Error>;

    /// Decides the fate of each event of one batch. All events share `info.subject`.
    ///
    /// Must return exactly one verdict per event, in order; the host treats any other count as
    /// an error of the whole batch. An `Err` fails the whole batch; to reject one event, return
    /// [`Verdict::Fail`] for it instead.
    fn process(&mut self, info: &BatchInfo, events: Vec<Event>) -> Result<Vec<Verdict>, Error>;
}

/// A plugin that decides one event at a time: [`event`](EventPlugin::event) returns each
/// event's verdict, and the batch loop and the one-verdict-per-event rule are the SDK's. Every
/// `EventPlugin` is a [`Plugin`]; export it with [`export!`] (or [`export_windowed!`] if it also
/// implements [`Windowed`]).
///
/// ```
/// use kedge_plugin::{BatchInfo, Config, Error, Event, EventPlugin, Output, Verdict};
///
/// struct Tag;
///
/// impl EventPlugin for Tag {
///     fn init(_config: Config) -> Result<Self, Error> {
///         Ok(Tag)
///     }
///
///     fn event(&mut self, _info: &BatchInfo, event: Event) -> Verdict {
///         if event.value.is_empty() {
///             return Verdict::Fail("empty reading".into());
///         }
///         Verdict::Replace(vec![Output::from_event(&event).with_header("tagged", "yes")])
///     }
/// }
///
/// kedge_plugin::export!(Tag);
/// ```
pub trait EventPlugin: Sized + 'static {
    /// As [`Plugin::init`].
    fn init(config: Config) -> Result<Self, Error>;

    /// The verdict on one event of a batch; `info` is the batch's. To fail the whole batch
    /// (every event to the dead-letter topic) implement [`Plugin`] instead.
    fn event(&mut self, info: &BatchInfo, event: Event) -> Verdict;
}

impl<P: EventPlugin> Plugin for P {
    fn init(config: Config) -> Result<Self, Error> {
        <P as EventPlugin>::init(config)
    }

    fn process(&mut self, info: &BatchInfo, events: Vec<Event>) -> Result<Vec<Verdict>, Error> {
        Ok(events.into_iter().map(|e| self.event(info, e)).collect())
    }
}

/// A plugin of the `windowed` world: kedge also calls [`tick`](Windowed::tick) on a timer.
pub trait Windowed: Plugin {
    /// Emits the records that are due at `now_ms` (the host's clock, milliseconds since the Unix
    /// epoch), e.g. the aggregates of the windows that closed. An output without a topic is
    /// routed as an event with an empty MQTT subject would be (a matching rule, else
    /// `routing.default_topic`, else the dead-letter topic): usually, set the `info.topic` the
    /// events had in `process`, which keeps an earlier plugin's route.
    fn tick(&mut self, now_ms: i64) -> Result<Vec<Output>, Error>;
}

/// Writes one line to kedge's log, tagged with the plugin's name. The host rate-limits it.
///
/// Does nothing outside WebAssembly, so that plugin code can be unit-tested on the build machine.
pub fn log(level: Level, message: &str) {
    #[cfg(target_family = "wasm")]
    host::log(level, message);
    #[cfg(not(target_family = "wasm"))]
    let _ = (level, message);
}

/// Adds `delta` to the plugin's counter `name`, which kedge exports as
/// `kedge_plugin_counter_total{plugin="…",name="…"}`.
///
/// Does nothing outside WebAssembly, so that plugin code can be unit-tested on the build machine.
pub fn counter_add(name: &str, delta: u64) {
    #[cfg(target_family = "wasm")]
    host::counter_add(name, delta);
    #[cfg(not(target_family = "wasm"))]
    let _ = (name, delta);
}

/// Exports a [`Plugin`] as a component of the `transform` world.
///
/// Use it once, at the top level of the plugin's `cdylib` crate: `kedge_plugin::export!(MyPlugin);`.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        $crate::__export!($plugin, transform, {});
    };
}

/// Exports a [`Windowed`] plugin as a component of the `windowed` world.
///
/// Use it once, at the top level of the plugin's `cdylib` crate:
/// `kedge_plugin::export_windowed!(MyPlugin);`.
#[macro_export]
macro_rules! export_windowed {
    ($plugin:ty) => {
        $crate::__export!($plugin, windowed, {
            fn tick(
                now_ms: i64,
            ) -> ::core::result::Result<::std::vec::Vec<$crate::Output>, $crate::Error> {
                INSTANCE.with(|instance| instance.tick(now_ms))
            }
        });
    };
}

/// What [`export!`] and [`export_windowed!`] share: the instance, `init` and `process` for
/// `$world`, and the world's extra exports in `$extra`.
#[doc(hidden)]
#[macro_export]
macro_rules! __export {
    ($plugin:ty, $world:ident, { $($extra:tt)* }) => {
        const _: () = {
            ::std::thread_local! {
                static INSTANCE: $crate::__private::Instance<$plugin> = const { $crate::__private::Instance::new() };
            }

            struct Exports;

            impl $crate::bindings::$world::Guest for Exports {
                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), $crate::Error> {
                    INSTANCE.with(|instance| instance.init(config))
                }

                fn process(
                    info: $crate::BatchInfo,
                    batch: ::std::vec::Vec<$crate::Event>,
                ) -> ::core::result::Result<::std::vec::Vec<$crate::Verdict>, $crate::Error> {
                    INSTANCE.with(|instance| instance.process(&info, batch))
                }

                $($extra)*
            }

            $crate::bindings::$world::export!(Exports with_types_in $crate::bindings::$world);
        };
    };
}

/// What the export macros expand to; not a stable interface.
#[doc(hidden)]
pub mod __private {
    use crate::{BatchInfo, Config, Error, Event, Output, Plugin, Verdict, Windowed};
    use std::cell::RefCell;

    /// The plugin value of one component instance, absent until `init` succeeds.
    pub struct Instance<P>(RefCell<Option<P>>);

    impl<P: Plugin> Instance<P> {
        #[allow(clippy::new_without_default)] // const, for `thread_local!`
        pub const fn new() -> Self {
            Instance(RefCell::new(None))
        }

        pub fn init(&self, config: Vec<(String, String)>) -> Result<(), Error> {
            let plugin = P::init(Config::new(config))?;
            *self.0.borrow_mut() = Some(plugin);
            Ok(())
        }

        pub fn process(&self, info: &BatchInfo, batch: Vec<Event>) -> Result<Vec<Verdict>, Error> {
            self.with_plugin(|plugin| plugin.process(info, batch))
        }

        fn with_plugin<T>(&self, f: impl FnOnce(&mut P) -> Result<T, Error>) -> Result<T, Error> {
            match self.0.borrow_mut().as_mut() {
                Some(plugin) => f(plugin),
                None => Err(Error::new("called before a successful init")),
            }
        }
    }

    impl<P: Windowed> Instance<P> {
        pub fn tick(&self, now_ms: i64) -> Result<Vec<Output>, Error> {
            self.with_plugin(|plugin| plugin.tick(now_ms))
        }
    }
}
