//! Between the component exports/imports and the [`Plugin`] API: the
//! plugin's state, the wire conversions, and the host shims (real imports on
//! wasm32, stand-ins natively so `cargo test` works).

use std::any::Any;
use std::cell::RefCell;

use serde_json::{Map, Value};

use crate::__private::bindings::{Event as WireEvent, Verdict as WireVerdict};
#[cfg(target_arch = "wasm32")]
use crate::log::Level;
use crate::{Event, JsonMap, Plugin, Verdict};

thread_local! {
    /// The configured plugin (a component instance is single-threaded, so
    /// this is one slot for the whole instance).
    static STATE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

const NOT_CONFIGURED: &str = "plugin is not configured (`configure` has not succeeded)";

/// The `configure` export: parses the config, builds the plugin, stores it.
/// A failed `configure` leaves the instance unconfigured.
pub fn configure<P: Plugin>(config: String) -> Result<(), String> {
    install_panic_hook();
    STATE.with(|state| state.borrow_mut().take());
    let plugin = configure_text::<P>(&config)?;
    STATE.with(|state| *state.borrow_mut() = Some(Box::new(plugin)));
    Ok(())
}

/// The `process` export: runs the configured plugin over the batch.
pub fn process<P: Plugin>(events: Vec<WireEvent>) -> Vec<WireVerdict> {
    install_panic_hook();
    STATE.with(|state| {
        let state = state.borrow();
        match state.as_ref().and_then(|plugin| plugin.downcast_ref::<P>()) {
            Some(plugin) => process_wire(plugin, events),
            None => events
                .iter()
                .map(|_| WireVerdict::Fail(NOT_CONFIGURED.to_owned()))
                .collect(),
        }
    })
}

/// Parses a config text (empty means `{}`) and calls [`Plugin::configure`].
pub(crate) fn configure_text<P: Plugin>(config: &str) -> Result<P, String> {
    let value = if config.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(config).map_err(|err| format!("config is not valid JSON: {err}"))?
    };
    P::configure(value)
}

/// Runs `plugin` over wire events, all through [`Plugin::process_batch`].
/// An event whose `properties` or `enrichment` the plugin accessed although
/// its text is not a JSON object gets `fail` naming the field, whatever the
/// plugin answered. A plugin answering the wrong number of verdicts yields
/// the wrong number here too, for the host to report.
pub(crate) fn process_wire<P: Plugin>(plugin: &P, wire: Vec<WireEvent>) -> Vec<WireVerdict> {
    let mut events: Vec<Event> = wire.into_iter().map(from_wire).collect();

    let verdicts = plugin.process_batch(&mut events);

    let mut out = Vec::with_capacity(verdicts.len());
    let mut verdicts = verdicts.into_iter();
    for (event, verdict) in events.into_iter().zip(verdicts.by_ref()) {
        out.push(match invalid_map(&event) {
            Some(message) => WireVerdict::Fail(message),
            None => to_wire(verdict, event),
        });
    }
    // More verdicts than events: pass them on so the count is wrong.
    out.extend(verdicts.map(|verdict| match verdict {
        Verdict::Keep => {
            WireVerdict::Fail("`process_batch` answered more verdicts than events".to_owned())
        }
        Verdict::Drop(reason) => WireVerdict::Drop(reason),
        Verdict::Fail(reason) => WireVerdict::Fail(reason),
    }));
    out
}

/// Why the event must fail: a JSON field the plugin accessed is not a JSON
/// object (never parses anything itself).
fn invalid_map(event: &Event) -> Option<String> {
    [
        ("properties", &event.properties),
        ("enrichment", &event.enrichment),
    ]
    .into_iter()
    .find_map(|(field, map)| {
        map.accessed_error()
            .map(|error| format!("event {field} is {error}"))
    })
}

/// A wire event as an [`Event`]; `properties` and `enrichment` are kept as
/// text, parsed on first access.
pub(crate) fn from_wire(event: WireEvent) -> Event {
    Event {
        properties: JsonMap::from_text(event.properties),
        enrichment: JsonMap::from_text(event.enrichment),
        id: event.id,
        name: event.name,
        distinct_id: event.distinct_id,
        session_id: event.session_id,
        timestamp_ms: event.timestamp_ms,
        received_at_ms: event.received_at_ms,
        url: event.url,
        referrer: event.referrer,
        user_agent: event.user_agent,
        visitor_id: event.visitor_id,
    }
}

/// An [`Event`] as a wire event: each JSON field as its original text if
/// never mutably accessed, else serialized.
pub(crate) fn to_wire_event(event: Event) -> Result<WireEvent, String> {
    let json = |field: &str, map: JsonMap| {
        map.into_text()
            .map_err(|err| format!("cannot serialize event {field}: {err}"))
    };
    Ok(WireEvent {
        properties: json("properties", event.properties)?,
        enrichment: json("enrichment", event.enrichment)?,
        id: event.id,
        name: event.name,
        distinct_id: event.distinct_id,
        session_id: event.session_id,
        timestamp_ms: event.timestamp_ms,
        received_at_ms: event.received_at_ms,
        url: event.url,
        referrer: event.referrer,
        user_agent: event.user_agent,
        visitor_id: event.visitor_id,
    })
}

fn to_wire(verdict: Verdict, event: Event) -> WireVerdict {
    match verdict {
        Verdict::Keep => match to_wire_event(event) {
            Ok(event) => WireVerdict::Keep(event),
            Err(message) => WireVerdict::Fail(message),
        },
        Verdict::Drop(reason) => WireVerdict::Drop(reason),
        Verdict::Fail(reason) => WireVerdict::Fail(reason),
    }
}

// --- host shims -------------------------------------------------------------

#[cfg(target_arch = "wasm32")]
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            log(Level::Error, &format!("plugin {info}"));
        }));
    });
}

#[cfg(not(target_arch = "wasm32"))]
fn install_panic_hook() {}

#[cfg(target_arch = "wasm32")]
pub(crate) fn log(level: Level, message: &str) {
    use crate::__private::bindings::orrery::plugin::host;
    let level = match level {
        Level::Trace => host::Level::Trace,
        Level::Debug => host::Level::Debug,
        Level::Info => host::Level::Info,
        Level::Warn => host::Level::Warn,
        Level::Error => host::Level::Error,
    };
    host::log(level, message);
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn now_ms() -> i64 {
    crate::__private::bindings::orrery::plugin::host::now_ms()
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::{log, now_ms};

/// Natively: logs go to stderr and to a per-thread buffer
/// ([`crate::testing::take_logs`]); the clock is the system's unless a test
/// set one ([`crate::testing::set_now_ms`]).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native {
    use std::cell::{Cell, RefCell};

    use crate::log::Level;

    /// At most this many lines are kept per thread (a flood is cut).
    pub(crate) const MAX_CAPTURED_LOGS: usize = 10_000;

    thread_local! {
        pub(crate) static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
        pub(crate) static NOW_MS: Cell<Option<i64>> = const { Cell::new(None) };
    }

    pub(crate) fn log(level: Level, message: &str) {
        eprintln!("[plugin {level}] {message}");
        LOGS.with(|logs| {
            let mut logs = logs.borrow_mut();
            if logs.len() < MAX_CAPTURED_LOGS {
                logs.push((level, message.to_owned()));
            }
        });
    }

    pub(crate) fn now_ms() -> i64 {
        NOW_MS.with(Cell::get).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Upper;

    impl Plugin for Upper {
        fn configure(config: Value) -> Result<Self, String> {
            match config.get("fail") {
                Some(_) => Err("refused".into()),
                None => Ok(Upper),
            }
        }

        fn process(&self, event: &mut Event) -> Verdict {
            match event.name.as_str() {
                "drop" => Verdict::Drop("dropped".into()),
                "fail" => Verdict::Fail("failed".into()),
                _ => {
                    event.name = event.name.to_uppercase();
                    event.properties.insert("seen".into(), true.into());
                    Verdict::Keep
                }
            }
        }
    }

    struct Short;

    impl Plugin for Short {
        fn configure(_: Value) -> Result<Self, String> {
            Ok(Short)
        }

        fn process(&self, _: &mut Event) -> Verdict {
            Verdict::Keep
        }

        fn process_batch(&self, events: &mut [Event]) -> Vec<Verdict> {
            let mut verdicts: Vec<Verdict> = events.iter_mut().map(|e| self.process(e)).collect();
            verdicts.pop();
            verdicts
        }
    }

    fn wire(name: &str, properties: &str) -> WireEvent {
        let mut event = to_wire_event(Event::new(name)).unwrap();
        event.properties = properties.to_owned();
        event
    }

    #[test]
    fn process_before_configure_fails_every_event() {
        STATE.with(|state| state.borrow_mut().take());
        let verdicts = process::<Upper>(vec![wire("a", "{}"), wire("b", "{}")]);
        assert_eq!(verdicts.len(), 2);
        for verdict in verdicts {
            assert!(matches!(verdict, WireVerdict::Fail(ref m) if m.contains("not configured")));
        }
    }

    #[test]
    fn failed_configure_unconfigures() {
        configure::<Upper>("{}".into()).unwrap();
        assert!(matches!(
            process::<Upper>(vec![wire("a", "{}")])[0],
            WireVerdict::Keep(_)
        ));
        assert_eq!(
            configure::<Upper>(r#"{"fail": 1}"#.into()),
            Err("refused".into())
        );
        assert!(matches!(
            process::<Upper>(vec![wire("a", "{}")])[0],
            WireVerdict::Fail(_)
        ));
    }

    #[test]
    fn invalid_config_json_is_refused_before_the_plugin() {
        let err = configure::<Upper>("{not json".into()).unwrap_err();
        assert!(err.starts_with("config is not valid JSON"), "{err}");
        assert!(
            configure::<Upper>("   ".into()).is_ok(),
            "empty config is {{}}"
        );
    }

    #[test]
    fn verdicts_keep_order_and_invalid_json_fails_only_that_event() {
        configure::<Upper>("{}".into()).unwrap();
        let verdicts = process::<Upper>(vec![
            wire("a", r#"{"x": 1}"#),
            wire("bad", "{"),
            wire("drop", "{}"),
            wire("arr", "[1]"),
            wire("fail", "{}"),
            wire("z", ""),
        ]);
        assert_eq!(verdicts.len(), 6);
        match &verdicts[0] {
            WireVerdict::Keep(event) => {
                assert_eq!(event.name, "A");
                let props: Value = serde_json::from_str(&event.properties).unwrap();
                assert_eq!(props, serde_json::json!({"x": 1, "seen": true}));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&verdicts[1], WireVerdict::Fail(m) if m.contains("not valid JSON")));
        assert!(matches!(&verdicts[2], WireVerdict::Drop(m) if m == "dropped"));
        assert!(matches!(&verdicts[3], WireVerdict::Fail(m) if m.contains("an array")));
        assert!(matches!(&verdicts[4], WireVerdict::Fail(m) if m == "failed"));
        assert!(matches!(&verdicts[5], WireVerdict::Keep(e) if e.name == "Z"));
    }

    /// Reads `properties.x` (events named `read`), drops when it is `"drop"`.
    struct Reader;

    impl Plugin for Reader {
        fn configure(_: Value) -> Result<Self, String> {
            Ok(Reader)
        }

        fn process(&self, event: &mut Event) -> Verdict {
            if event.name == "read" && event.properties.get("x") == Some(&"drop".into()) {
                return Verdict::Drop("x".into());
            }
            Verdict::Keep
        }
    }

    fn kept(verdict: &WireVerdict) -> &WireEvent {
        match verdict {
            WireVerdict::Keep(event) => event,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn maps_not_mutated_go_back_as_the_exact_text() {
        let odd = "{ \"x\" :\"y\",\n \"a\": 1.50,\"x2\":[ ] }";
        let mut untouched = wire("skip", odd);
        untouched.enrichment = " {\"z\":1 , \"b\":{}}".to_owned();
        let verdicts = process_wire(&Reader, vec![untouched.clone(), wire("read", odd)]);
        assert_eq!(kept(&verdicts[0]).properties, odd, "never accessed");
        assert_eq!(kept(&verdicts[0]).enrichment, untouched.enrichment);
        assert_eq!(
            kept(&verdicts[1]).properties,
            odd,
            "read, not re-serialized"
        );
        assert_eq!(kept(&verdicts[1]).enrichment, "{}");

        // Mutated: re-serialized.
        let verdicts = process_wire(&Upper, vec![wire("up", odd)]);
        let props = &kept(&verdicts[0]).properties;
        assert_eq!(props, r#"{"a":1.5,"seen":true,"x":"y","x2":[]}"#);
    }

    #[test]
    fn invalid_text_fails_only_if_accessed_whatever_the_verdict() {
        let verdicts = process_wire(&Reader, vec![wire("skip", "{"), wire("read", "[\"drop\"]")]);
        assert_eq!(
            kept(&verdicts[0]).properties,
            "{",
            "never accessed: as it came"
        );
        assert!(
            matches!(&verdicts[1], WireVerdict::Fail(m) if m == "event properties is not a JSON object (got an array)"),
            "{:?}",
            verdicts[1]
        );
    }

    #[test]
    fn a_short_batch_stays_short() {
        let plugin = Short;
        let verdicts = process_wire(&plugin, vec![wire("a", "{}"), wire("b", "{}")]);
        assert_eq!(verdicts.len(), 1);
    }

    #[test]
    fn wire_round_trip_keeps_every_field() {
        let event = Event::new("pageview")
            .with_id("id-1")
            .with_distinct_id("u")
            .with_session_id("s")
            .with_timestamp_ms(1)
            .with_received_at_ms(2)
            .with_url("https://x/")
            .with_referrer("https://r/")
            .with_user_agent("ua")
            .with_visitor_id("v")
            .with_property("p", serde_json::json!({"nested": [1, "two"]}))
            .with_enrichment("country", "FR");
        let back = from_wire(to_wire_event(event.clone()).unwrap());
        assert_eq!(back, event);
    }
}
