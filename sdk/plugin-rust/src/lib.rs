//! Write [Orrery](https://github.com/orrery-analytics/orrery) enrichment
//! plugins in Rust.
//!
//! A plugin is a WebAssembly component (target `wasm32-wasip2`) that
//! implements the `orrery:plugin` world (`sdk/wit/plugin.wit`). This crate
//! hides the component plumbing: implement [`Plugin`] for a type, call
//! [`export!`] once, and build with
//! `cargo build --release --target wasm32-wasip2`.
//!
//! ```
//! use orrery_plugin::{Event, Plugin, Value, Verdict};
//!
//! /// Drops events named in the config's `names` list.
//! struct DropNames {
//!     names: Vec<String>,
//! }
//!
//! impl Plugin for DropNames {
//!     fn configure(config: Value) -> Result<Self, String> {
//!         let names = config["names"]
//!             .as_array()
//!             .ok_or("`names` must be a list of event names")?
//!             .iter()
//!             .filter_map(|name| name.as_str().map(str::to_owned))
//!             .collect();
//!         Ok(DropNames { names })
//!     }
//!
//!     fn process(&self, event: &mut Event) -> Verdict {
//!         if self.names.contains(&event.name) {
//!             return Verdict::Drop("listed name".into());
//!         }
//!         event.enrichment.insert("checked".into(), true.into());
//!         Verdict::Keep
//!     }
//! }
//!
//! orrery_plugin::export!(DropNames);
//! # fn main() {}
//! ```
//!
//! What the glue guarantees:
//! - `configure` gets the stage's config parsed as JSON (an empty config is
//!   `{}`); invalid JSON refuses the config without calling the plugin.
//! - `process` before a successful `configure` answers [`Verdict::Fail`] for
//!   every event.
//! - `properties` and `enrichment` are [`JsonMap`]s, parsed on first access;
//!   one never mutably accessed goes back to the host as the exact text it
//!   came as (no serialization). If the plugin accessed one whose text is
//!   not a JSON object (the host always sends objects; `testing::process_raw`
//!   need not), the event gets [`Verdict::Fail`] naming the field, whatever
//!   the plugin answered (it saw an empty map); nothing panics.
//! - A panic in plugin code is a trap (the release profile aborts; on wasm an
//!   abort is an `unreachable` instruction): the gateway discards the
//!   instance and applies the stage's `on_error` policy. The panic message is
//!   logged through the host first.
//!
//! `orrery_plugin::testing` (not on wasm32) runs a plugin natively in
//! `cargo test`, through the same glue the component uses.

mod event;
mod glue;
mod json_map;
pub mod log;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use event::{Event, Verdict};
pub use json_map::JsonMap;
pub use serde_json;
pub use serde_json::{Map, Value};

/// An Orrery plugin: built once from its config, then called for every
/// event.
///
/// The value returned by [`Plugin::configure`] lives for the whole life of
/// the component instance (one thread; no `Send`/`Sync` needed, so interior
/// mutability through `Cell`/`RefCell` is fine for counters or caches).
pub trait Plugin: Sized + 'static {
    /// Builds the plugin from the stage's config, a JSON object (`{}` when
    /// the stage has none). An `Err` refuses the config; its message is
    /// shown to whoever configured the stage, so name the offending field.
    /// [`from_config`] turns a `serde` struct into such messages.
    fn configure(config: Value) -> Result<Self, String>;

    /// Decides on one event. [`Verdict::Keep`] keeps the event as this
    /// method left it (change any field but `id`, `timestamp_ms` and
    /// `received_at_ms`, which the gateway keeps as they were).
    fn process(&self, event: &mut Event) -> Verdict;

    /// Decides on a batch: exactly one verdict per event, in order. The
    /// default calls [`Plugin::process`] on each event; override it to share
    /// work across a batch. Answering a different number of verdicts is a
    /// plugin error the gateway reports for the whole batch.
    fn process_batch(&self, events: &mut [Event]) -> Vec<Verdict> {
        events.iter_mut().map(|event| self.process(event)).collect()
    }
}

/// Deserializes a plugin config into `T`, with an error message fit for
/// [`Plugin::configure`] (`invalid config: unknown field `x`, expected ...`).
///
/// Use `#[serde(deny_unknown_fields)]` on `T` to refuse misspelt keys.
pub fn from_config<T: serde::de::DeserializeOwned>(config: Value) -> Result<T, String> {
    serde_json::from_value(config).map_err(|err| format!("invalid config: {err}"))
}

/// The current time, milliseconds since the Unix epoch (the host's clock).
///
/// Natively (in `cargo test`) this is the system clock, or the time set by
/// `testing::set_now_ms`.
pub fn now_ms() -> i64 {
    glue::now_ms()
}

/// Exports a [`Plugin`] type as the component's `configure` and `process`.
///
/// Call it once, at the root of the plugin crate, with the name of the type
/// (an identifier in scope, not a path):
///
/// ```
/// # use orrery_plugin::{Event, Plugin, Value, Verdict};
/// # struct MyPlugin;
/// # impl Plugin for MyPlugin {
/// #     fn configure(_: Value) -> Result<Self, String> { Ok(MyPlugin) }
/// #     fn process(&self, _: &mut Event) -> Verdict { Verdict::Keep }
/// # }
/// orrery_plugin::export!(MyPlugin);
/// # fn main() {}
/// ```
///
/// The exports only exist on `wasm32`; natively the macro still type-checks
/// the plugin, and `testing` drives it.
#[macro_export]
macro_rules! export {
    ($plugin:ident) => {
        impl $crate::__private::bindings::Guest for $plugin {
            fn configure(
                config: ::std::string::String,
            ) -> ::std::result::Result<(), ::std::string::String> {
                $crate::__private::configure::<$plugin>(config)
            }

            fn process(
                events: ::std::vec::Vec<$crate::__private::bindings::Event>,
            ) -> ::std::vec::Vec<$crate::__private::bindings::Verdict> {
                $crate::__private::process::<$plugin>(events)
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::__private::bindings::export!($plugin with_types_in $crate::__private::bindings);
    };
}

/// Implementation details of [`export!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::glue::{configure, process};

    /// The `wit-bindgen` bindings of `sdk/wit` (world `plugin`).
    #[allow(unsafe_code, missing_docs, clippy::all, clippy::pedantic)]
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../wit",
            world: "plugin",
            pub_export_macro: true,
            export_macro_name: "export",
            default_bindings_module: "::orrery_plugin::__private::bindings",
        });
    }
}
