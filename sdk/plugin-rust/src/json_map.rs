//! [`JsonMap`]: an event's `properties` or `enrichment`, parsed only when a
//! plugin looks at it.

use std::cell::OnceCell;
use std::fmt;
use std::ops::{Deref, DerefMut};

use serde_json::{Map, Value};

/// A JSON object that the host sent as text, parsed on first access.
///
/// It dereferences to a [`serde_json::Map`], so `map.get("k")`,
/// `map["k"]`, `map.insert(..)`, `map.remove(..)`, `map.iter_mut()` and
/// `for (key, value) in &map` work as on a `Map`:
///
/// - Until the map is accessed, it is only the host's text: a plugin that
///   never looks at `properties` pays nothing for them.
/// - Read-only access ([`Deref`]) parses the text once; the text still goes
///   back to the host as it came, byte for byte.
/// - Mutable access ([`DerefMut`], e.g. `insert`, `iter_mut`, `&mut *map`)
///   parses if needed and marks the map changed, even if nothing is then
///   changed; a changed map is serialized when the event goes back to the
///   host.
///
/// Empty (or all-whitespace) text is the empty object. Text that is not a
/// JSON object (the host never sends that; `testing::process_raw` can)
/// dereferences to an empty map, and [`JsonMap::try_as_map`] says why; if
/// the plugin accessed such a map in any way, the event gets
/// [`Verdict::Fail`](crate::Verdict::Fail) naming the field, whatever the
/// plugin answered. Invalid text the plugin never accessed goes back
/// untouched.
///
/// Equality compares the parsed contents (`{"a":1}` equals `{ "a": 1 }`);
/// `Debug` shows them too. [`JsonMap::default`] is `{}`;
/// `JsonMap::from(map)` wraps an already-built [`Map`] (serialized when sent).
#[derive(Clone)]
pub struct JsonMap {
    /// The host's text; what goes back while the map is not `changed`
    /// (emptied once it is).
    text: String,
    /// The parsed text, once accessed.
    parsed: OnceCell<Parsed>,
    /// Mutably accessed (or built from a `Map`): serialize when sent back.
    changed: bool,
}

#[derive(Clone)]
struct Parsed {
    /// The object, or an empty map if the text is not an object.
    map: Map<String, Value>,
    /// Why the text is not a JSON object.
    error: Option<String>,
}

impl JsonMap {
    /// A map over JSON text, parsed on first access and sent back unchanged
    /// unless mutably accessed.
    pub fn from_text(text: impl Into<String>) -> Self {
        JsonMap {
            text: text.into(),
            parsed: OnceCell::new(),
            changed: false,
        }
    }

    /// The parsed map (parsing now if needed), or why the text is not a
    /// JSON object, e.g. `not valid JSON: EOF while parsing an object at
    /// line 1 column 1` or `not a JSON object (got an array)`.
    pub fn try_as_map(&self) -> Result<&Map<String, Value>, &str> {
        let parsed = self.parsed();
        match &parsed.error {
            None => Ok(&parsed.map),
            Some(error) => Err(error),
        }
    }

    /// The original text, if the map was never mutably accessed (that is
    /// the text sent back to the host); `None` once it was.
    pub fn original_text(&self) -> Option<&str> {
        (!self.changed).then_some(self.text.as_str())
    }

    /// Whether the map was mutably accessed (or built from a [`Map`]), so
    /// that it will be serialized rather than sent back as it came.
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// The map itself (parsing now if needed; empty if the text is not a
    /// JSON object).
    pub fn into_map(mut self) -> Map<String, Value> {
        self.parsed();
        self.parsed
            .take()
            .map(|parsed| parsed.map)
            .unwrap_or_default()
    }

    /// The text to send back: the original if unchanged, else the map
    /// serialized.
    pub(crate) fn into_text(self) -> Result<String, String> {
        if !self.changed {
            return Ok(self.text);
        }
        match self.parsed.get() {
            Some(Parsed {
                error: Some(error), ..
            }) => Err(error.clone()),
            Some(Parsed { map, .. }) => serde_json::to_string(map).map_err(|err| err.to_string()),
            None => Ok(self.text), // unreachable: `changed` implies parsed
        }
    }

    /// Why the text is not a JSON object, if the map was accessed (never
    /// parses).
    pub(crate) fn accessed_error(&self) -> Option<&str> {
        self.parsed.get().and_then(|parsed| parsed.error.as_deref())
    }

    fn parsed(&self) -> &Parsed {
        self.parsed.get_or_init(|| parse(&self.text))
    }
}

fn parse(text: &str) -> Parsed {
    let (map, error) = if text.trim().is_empty() {
        (Map::new(), None)
    } else {
        match serde_json::from_str(text) {
            Ok(Value::Object(map)) => (map, None),
            Ok(other) => (
                Map::new(),
                Some(format!("not a JSON object (got {})", json_kind(&other))),
            ),
            Err(err) => (Map::new(), Some(format!("not valid JSON: {err}"))),
        }
    };
    Parsed { map, error }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Deref for JsonMap {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Self::Target {
        &self.parsed().map
    }
}

impl DerefMut for JsonMap {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.parsed();
        if !self.changed {
            self.changed = true;
            self.text = String::new();
        }
        &mut self.parsed.get_mut().expect("parsed just above").map
    }
}

impl Default for JsonMap {
    /// The empty object, `{}`.
    fn default() -> Self {
        JsonMap {
            text: "{}".to_owned(),
            parsed: OnceCell::from(Parsed {
                map: Map::new(),
                error: None,
            }),
            changed: false,
        }
    }
}

impl From<Map<String, Value>> for JsonMap {
    /// Wraps a built map (marked changed: serialized when sent).
    fn from(map: Map<String, Value>) -> Self {
        JsonMap {
            text: String::new(),
            parsed: OnceCell::from(Parsed { map, error: None }),
            changed: true,
        }
    }
}

impl From<JsonMap> for Map<String, Value> {
    fn from(map: JsonMap) -> Self {
        map.into_map()
    }
}

impl From<JsonMap> for Value {
    fn from(map: JsonMap) -> Self {
        Value::Object(map.into_map())
    }
}

impl FromIterator<(String, Value)> for JsonMap {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        JsonMap::from(Map::from_iter(iter))
    }
}

impl PartialEq for JsonMap {
    fn eq(&self, other: &Self) -> bool {
        match (self.try_as_map(), other.try_as_map()) {
            (Ok(a), Ok(b)) => a == b,
            // Not objects: equal only as the same text.
            (Err(_), Err(_)) => self.text == other.text,
            _ => false,
        }
    }
}

impl PartialEq<Map<String, Value>> for JsonMap {
    fn eq(&self, other: &Map<String, Value>) -> bool {
        self.try_as_map() == Ok(other)
    }
}

impl fmt::Debug for JsonMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.try_as_map() {
            Ok(map) => fmt::Debug::fmt(map, f),
            Err(error) => f
                .debug_struct("JsonMap")
                .field("text", &self.text)
                .field("error", &error)
                .finish(),
        }
    }
}

impl<'a> IntoIterator for &'a JsonMap {
    type Item = (&'a String, &'a Value);
    type IntoIter = serde_json::map::Iter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut JsonMap {
    type Item = (&'a String, &'a mut Value);
    type IntoIter = serde_json::map::IterMut<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl IntoIterator for JsonMap {
    type Item = (String, Value);
    type IntoIter = serde_json::map::IntoIter;

    fn into_iter(self) -> Self::IntoIter {
        self.into_map().into_iter()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ODD: &str = "{ \"z\" :1,\n\t\"a\": [ 1.50, \"\\u00e9\" ] }";

    #[test]
    fn untouched_map_is_sent_back_byte_for_byte() {
        let map = JsonMap::from_text(ODD);
        assert_eq!(map.original_text(), Some(ODD));
        assert_eq!(map.into_text().unwrap(), ODD);
    }

    #[test]
    fn read_access_parses_but_keeps_the_text() {
        let map = JsonMap::from_text(ODD);
        assert_eq!(map["z"], 1);
        assert_eq!(map.get("a"), Some(&json!([1.5, "é"])));
        assert_eq!(map.iter().count(), 2);
        assert_eq!((&map).into_iter().count(), 2);
        assert!(!map.is_changed());
        assert_eq!(map.into_text().unwrap(), ODD);
    }

    #[test]
    fn mutable_access_reserializes() {
        let mut map = JsonMap::from_text(ODD);
        map.insert("b".into(), true.into());
        assert!(map.is_changed());
        assert_eq!(map.original_text(), None);
        let text = map.into_text().unwrap();
        assert_ne!(text, ODD);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, json!({"z": 1, "a": [1.5, "é"], "b": true}));

        // Even a mutable access that changes nothing re-serializes.
        let mut map = JsonMap::from_text(ODD);
        for (_, _) in &mut map {}
        let text = map.into_text().unwrap();
        assert_ne!(text, ODD);
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"z": 1, "a": [1.5, "é"]})
        );
    }

    #[test]
    fn equality_and_debug_are_by_content() {
        let a = JsonMap::from_text(r#"{"a":1,"b":2}"#);
        let b = JsonMap::from_text(" { \"b\" : 2, \"a\" : 1 } ");
        assert_eq!(a, b);
        assert_eq!(
            a,
            JsonMap::from(json!({"a": 1, "b": 2}).as_object().unwrap().clone())
        );
        assert_ne!(a, JsonMap::default());
        assert_eq!(JsonMap::from_text(""), JsonMap::default());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(Value::from(b), json!({"a": 1, "b": 2}));
    }

    #[test]
    fn text_that_is_not_an_object_is_an_error_once_accessed() {
        let map = JsonMap::from_text("[1]");
        assert_eq!(map.accessed_error(), None, "not parsed yet");
        assert!(map.is_empty());
        assert_eq!(
            map.accessed_error(),
            Some("not a JSON object (got an array)")
        );
        assert!(map.try_as_map().is_err());

        let mut map = JsonMap::from_text("{\"a\":");
        assert!(map.try_as_map().unwrap_err().starts_with("not valid JSON"));
        map.insert("a".into(), 1.into());
        assert!(map.into_text().unwrap_err().starts_with("not valid JSON"));

        assert_eq!(JsonMap::from_text("nope").into_text().unwrap(), "nope");
    }
}
