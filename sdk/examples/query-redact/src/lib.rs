//! Example plugin `query-redact`, for the *query* stage: it runs on events
//! as they are read by clients holding read keys, so stored events stay
//! whole and what each reader sees is trimmed.
//!
//! Removes the listed property keys (ASCII case-insensitive, at any depth,
//! inside arrays too) and, when asked, blanks `distinct_id` (sets it to no
//! value). Events are always kept.
//!
//! Config (every key optional, unknown keys refused):
//!
//! ```json
//! {"remove": ["email", "phone"], "hide_distinct_id": true}
//! ```
//!
//! Without `remove`, [`DEFAULT_REMOVE`] is used; `"remove": []` removes
//! nothing.

use orrery_plugin::{Event, Map, Plugin, Value, Verdict};
use serde::Deserialize;

/// The property keys removed when the config has no `remove`: the usual
/// places personal data ends up.
pub const DEFAULT_REMOVE: &[&str] = &[
    "email",
    "$email",
    "e_mail",
    "phone",
    "$phone",
    "phone_number",
    "mobile",
    "$name",
    "first_name",
    "last_name",
    "full_name",
    "address",
    "street",
    "postal_code",
    "zip",
    "ip",
    "$ip",
    "ip_address",
    "birthdate",
    "date_of_birth",
    "ssn",
    "password",
];

/// The plugin's config, as written in the stage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Property keys to remove (default: [`DEFAULT_REMOVE`]).
    #[serde(default)]
    pub remove: Option<Vec<String>>,
    /// Whether to blank `distinct_id`.
    #[serde(default)]
    pub hide_distinct_id: bool,
}

/// The plugin.
#[derive(Debug)]
pub struct QueryRedact {
    remove: Vec<String>,
    hide_distinct_id: bool,
}

impl Plugin for QueryRedact {
    fn configure(config: Value) -> Result<Self, String> {
        let config: Config = orrery_plugin::from_config(config)?;
        let remove = match config.remove {
            Some(keys) => {
                if let Some(index) = keys.iter().position(|k| k.is_empty()) {
                    return Err(format!("`remove[{index}]` is empty"));
                }
                keys
            }
            None => DEFAULT_REMOVE.iter().map(|&k| k.to_owned()).collect(),
        };
        Ok(QueryRedact {
            remove,
            hide_distinct_id: config.hide_distinct_id,
        })
    }

    fn process(&self, event: &mut Event) -> Verdict {
        if !self.remove.is_empty() {
            self.strip(&mut event.properties);
        }
        if self.hide_distinct_id {
            event.distinct_id = None;
        }
        Verdict::Keep
    }
}

impl QueryRedact {
    fn removes(&self, key: &str) -> bool {
        self.remove.iter().any(|k| k.eq_ignore_ascii_case(key))
    }

    fn strip(&self, map: &mut Map<String, Value>) {
        map.retain(|key, _| !self.removes(key));
        for value in map.values_mut() {
            self.strip_value(value);
        }
    }

    fn strip_value(&self, value: &mut Value) {
        match value {
            Value::Object(map) => self.strip(map),
            Value::Array(items) => items.iter_mut().for_each(|item| self.strip_value(item)),
            _ => {}
        }
    }
}

orrery_plugin::export!(QueryRedact);

#[cfg(test)]
mod tests {
    use orrery_plugin::serde_json::json;
    use orrery_plugin::testing;

    use super::*;

    fn run(config: Value, event: Event) -> Event {
        let plugin: QueryRedact = testing::configure(config).unwrap();
        testing::process(&plugin, event).unwrap_keep()
    }

    fn user_event() -> Event {
        Event::new("signup")
            .with_distinct_id("user-7")
            .with_property("Email", "a@b.com")
            .with_property("phone", "+33612345678")
            .with_property("plan", "pro")
            .with_property(
                "billing",
                json!({"ip": "1.2.3.4", "country": "FR", "contacts": [{"email": "c@d.io", "role": "admin"}]}),
            )
    }

    #[test]
    fn removes_configured_keys_at_any_depth_case_insensitively() {
        let event = run(json!({"remove": ["email", "IP"]}), user_event());
        assert_eq!(
            Value::Object(event.properties.into_map()),
            json!({
                "phone": "+33612345678",
                "plan": "pro",
                "billing": {"country": "FR", "contacts": [{"role": "admin"}]}
            })
        );
        assert_eq!(
            event.distinct_id.as_deref(),
            Some("user-7"),
            "not hidden by default"
        );
    }

    #[test]
    fn default_list_removes_common_pii() {
        let event = run(json!({}), user_event());
        assert_eq!(
            Value::Object(event.properties.into_map()),
            json!({"plan": "pro", "billing": {"country": "FR", "contacts": [{"role": "admin"}]}})
        );
    }

    #[test]
    fn empty_list_removes_nothing() {
        let before = user_event();
        assert_eq!(run(json!({"remove": []}), before.clone()), before);
    }

    #[test]
    fn hides_distinct_id_when_asked() {
        let event = run(
            json!({"remove": [], "hide_distinct_id": true}),
            user_event(),
        );
        assert_eq!(event.distinct_id, None);
        assert_eq!(event.properties["plan"], "pro");
        assert_eq!(event.name, "signup");
    }

    #[test]
    fn refuses_bad_config() {
        let refuse = |config: Value| testing::configure::<QueryRedact>(config).unwrap_err();
        assert!(
            refuse(json!({"hide_distinct_ids": true}))
                .contains("unknown field `hide_distinct_ids`")
        );
        assert!(refuse(json!({"remove": "email"})).contains("invalid type"));
        assert!(refuse(json!({"hide_distinct_id": "yes"})).contains("invalid type"));
        assert_eq!(refuse(json!({"remove": ["a", ""]})), "`remove[1]` is empty");
    }
}
