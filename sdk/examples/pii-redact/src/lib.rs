//! Example plugin `pii-redact`: takes e-mail addresses (and, optionally,
//! phone numbers) out of events before they are stored.
//!
//! Looks in every string value of `properties` (at any depth), and in `url`
//! and `referrer` (path, query and fragment, including percent-encoded forms
//! such as `?email=a%40b.com`; the host part is left alone). Each address
//! becomes `[redacted]`, or in `hash` mode the hex SHA-256 of salt + address
//! (addresses lowercased first, so one address always gives one hash and
//! stays countable).
//!
//! Config (every key optional, unknown keys refused):
//!
//! ```json
//! {"mode": "redact", "salt": "...", "fields": ["email", "phone"], "phones": false}
//! ```
//!
//! - `mode`: `"redact"` (default) or `"hash"` (needs a non-empty `salt`).
//! - `salt`: prepended to each value before hashing.
//! - `fields`: property names (any depth, ASCII case-insensitive) whose
//!   values are always replaced whole, whatever they hold (strings and
//!   numbers; `null` and booleans are left); query parameters of `url` and
//!   `referrer` with these names too.
//! - `phones`: also replace phone numbers (see [`scan::phones`] for what
//!   counts as one).

pub mod scan;

use orrery_plugin::{Event, Plugin, Value, Verdict};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What replaces a found value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The text `[redacted]`.
    #[default]
    Redact,
    /// The hex SHA-256 of salt + normalized value.
    Hash,
}

/// The plugin's config, as written in the stage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `redact` or `hash`.
    #[serde(default)]
    pub mode: Mode,
    /// The salt for `hash` mode.
    #[serde(default)]
    pub salt: Option<String>,
    /// Property names always replaced whole.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Whether phone numbers are replaced too.
    #[serde(default)]
    pub phones: bool,
}

/// The text that replaces a value in `redact` mode.
pub const REDACTED: &str = "[redacted]";

/// The plugin.
#[derive(Debug)]
pub struct PiiRedact {
    mode: Mode,
    salt: String,
    fields: Vec<String>,
    phones: bool,
}

impl Plugin for PiiRedact {
    fn configure(config: Value) -> Result<Self, String> {
        let config: Config = orrery_plugin::from_config(config)?;
        let salt = config.salt.unwrap_or_default();
        if config.mode == Mode::Hash && salt.is_empty() {
            return Err("`salt` is required when `mode` is \"hash\" \
                        (an unsalted hash of an e-mail address is easy to reverse)"
                .to_owned());
        }
        if let Some(index) = config.fields.iter().position(|f| f.trim().is_empty()) {
            return Err(format!("`fields[{index}]` is empty"));
        }
        Ok(PiiRedact {
            mode: config.mode,
            salt,
            fields: config.fields,
            phones: config.phones,
        })
    }

    fn process(&self, event: &mut Event) -> Verdict {
        for (key, value) in event.properties.iter_mut() {
            let forced = self.is_field(key);
            self.redact_value(value, forced);
        }
        for url in [&mut event.url, &mut event.referrer].into_iter().flatten() {
            if let Some(redacted) = self.redact_url(url) {
                *url = redacted;
            }
        }
        Verdict::Keep
    }
}

impl PiiRedact {
    fn is_field(&self, key: &str) -> bool {
        self.fields
            .iter()
            .any(|field| field.eq_ignore_ascii_case(key))
    }

    /// What replaces `normalized`.
    fn replacement(&self, normalized: &str) -> String {
        match self.mode {
            Mode::Redact => REDACTED.to_owned(),
            Mode::Hash => {
                let digest = Sha256::new()
                    .chain_update(self.salt.as_bytes())
                    .chain_update(normalized.as_bytes())
                    .finalize();
                digest
                    .iter()
                    .fold(String::with_capacity(64), |mut hex, byte| {
                        const DIGITS: &[u8; 16] = b"0123456789abcdef";
                        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
                        hex.push(char::from(DIGITS[usize::from(byte & 0xf)]));
                        hex
                    })
            }
        }
    }

    /// What replaces a whole value under a `fields` key.
    fn replace_whole(&self, text: &str) -> String {
        let normalized = scan::whole_email(text).unwrap_or_else(|| text.trim().to_owned());
        self.replacement(&normalized)
    }

    fn redact_value(&self, value: &mut Value, forced: bool) {
        match value {
            Value::String(text) if forced => {
                if !text.is_empty() {
                    *text = self.replace_whole(text);
                }
            }
            Value::String(text) => {
                if let Some(redacted) = self.redact_text(text) {
                    *text = redacted;
                }
            }
            Value::Number(number) if forced => {
                *value = Value::String(self.replace_whole(&number.to_string()));
            }
            Value::Array(items) => {
                for item in items {
                    self.redact_value(item, forced);
                }
            }
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    let forced = forced || self.is_field(key);
                    self.redact_value(item, forced);
                }
            }
            Value::Number(_) | Value::Bool(_) | Value::Null => {}
        }
    }

    /// `text` with every address (and phone number) replaced, or `None` if
    /// there was nothing to replace.
    pub fn redact_text(&self, text: &str) -> Option<String> {
        let after_emails = self.replace_matches(text, &scan::emails(text));
        if !self.phones {
            return after_emails;
        }
        let current = after_emails.as_deref().unwrap_or(text);
        self.replace_matches(current, &scan::phones(current))
            .or(after_emails)
    }

    fn replace_matches(&self, text: &str, matches: &[scan::Match]) -> Option<String> {
        if matches.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        for found in matches {
            out.push_str(&text[copied..found.start]);
            out.push_str(&self.replacement(&found.normalized));
            copied = found.end;
        }
        out.push_str(&text[copied..]);
        Some(out)
    }

    /// `url` with the values of `fields` query parameters replaced, then
    /// every address (and phone number) after the host replaced; `None` if
    /// nothing changed.
    pub fn redact_url(&self, url: &str) -> Option<String> {
        let host_end = authority_end(url);
        let (head, rest) = url.split_at(host_end);
        let fields_done = self.redact_field_params(rest);
        let rest_now = fields_done.as_deref().unwrap_or(rest);
        match self.redact_text(rest_now) {
            Some(redacted) => Some(format!("{head}{redacted}")),
            None => fields_done.map(|done| format!("{head}{done}")),
        }
    }

    /// Replaces whole the values of query parameters named in `fields`.
    fn redact_field_params(&self, path_and_more: &str) -> Option<String> {
        if self.fields.is_empty() {
            return None;
        }
        let query_start = path_and_more.find('?')? + 1;
        let query_end = path_and_more[query_start..]
            .find('#')
            .map_or(path_and_more.len(), |i| query_start + i);
        let query = &path_and_more[query_start..query_end];
        let mut changed = false;
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, value))
                    if !value.is_empty() && self.is_field(&scan::decode_query_component(key)) =>
                {
                    changed = true;
                    let value = scan::decode_query_component(value);
                    format!("{key}={}", self.replace_whole(&value))
                }
                _ => pair.to_owned(),
            })
            .collect();
        changed.then(|| {
            format!(
                "{}{}{}",
                &path_and_more[..query_start],
                pairs.join("&"),
                &path_and_more[query_end..]
            )
        })
    }
}

/// Where the `scheme://user@host:port` part of `url` ends (0 when there is
/// none): addresses are not looked for there.
fn authority_end(url: &str) -> usize {
    let after_scheme = match url.find("://") {
        Some(i)
            if i > 0
                && url[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            i + 3
        }
        _ if url.starts_with("//") => 2,
        _ => return 0,
    };
    url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i)
}

orrery_plugin::export!(PiiRedact);

#[cfg(test)]
mod tests {
    use orrery_plugin::serde_json::json;
    use orrery_plugin::testing::{self, Outcome};

    use super::*;

    fn plugin(config: Value) -> PiiRedact {
        testing::configure(config).unwrap()
    }

    fn run(plugin: &PiiRedact, event: Event) -> Event {
        testing::process(plugin, event).unwrap_keep()
    }

    fn sha(salt: &str, value: &str) -> String {
        let hasher = PiiRedact {
            mode: Mode::Hash,
            salt: salt.to_owned(),
            fields: Vec::new(),
            phones: false,
        };
        hasher.replacement(value)
    }

    #[test]
    fn redacts_addresses_in_nested_properties() {
        let p = plugin(json!({}));
        let event = run(
            &p,
            Event::new("signup")
                .with_property("note", "write to Jane.Doe@example.com or bob@x.org.")
                .with_property(
                    "form",
                    json!({"contacts": ["a@b.io", 42, null], "plan": "pro"}),
                )
                .with_property("count", 3),
        );
        assert_eq!(
            event.properties["note"],
            "write to [redacted] or [redacted]."
        );
        assert_eq!(
            event.properties["form"],
            json!({"contacts": ["[redacted]", 42, null], "plan": "pro"})
        );
        assert_eq!(event.properties["count"], 3);
    }

    #[test]
    fn redacts_plain_and_encoded_addresses_in_url_and_referrer() {
        let p = plugin(json!({}));
        let event = run(
            &p,
            Event::new("pageview")
                .with_url("https://shop.example.com/u/a@b.com/?email=a%40b.com&ref=x#c=d%40e.fr")
                .with_referrer("https://mail.example/?to=John%2BTag%40Example.com&q=hello"),
        );
        assert_eq!(
            event.url.as_deref(),
            Some("https://shop.example.com/u/[redacted]/?email=[redacted]&ref=x#c=[redacted]")
        );
        assert_eq!(
            event.referrer.as_deref(),
            Some("https://mail.example/?to=[redacted]&q=hello")
        );
    }

    #[test]
    fn leaves_the_host_part_alone() {
        let p = plugin(json!({}));
        let url = "https://user@example.com/path";
        assert_eq!(p.redact_url(url), None);
        let event = run(
            &p,
            Event::new("pageview").with_url("https://example.com/?q=x"),
        );
        assert_eq!(event.url.as_deref(), Some("https://example.com/?q=x"));
    }

    #[test]
    fn hash_mode_is_salted_stable_and_case_insensitive() {
        let p = plugin(json!({"mode": "hash", "salt": "pepper"}));
        let event = run(
            &p,
            Event::new("signup")
                .with_property("email", "Jane@Example.com")
                .with_url("https://x.example/?e=jane%40example.com"),
        );
        let expected = sha("pepper", "jane@example.com");
        assert_eq!(expected.len(), 64);
        assert!(expected.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(event.properties["email"], expected.as_str());
        assert_eq!(
            event.url.as_deref(),
            Some(format!("https://x.example/?e={expected}").as_str())
        );
        assert_ne!(sha("other", "jane@example.com"), expected, "salt matters");
        // The standard test vector: SHA-256("abc").
        assert_eq!(
            sha("", "abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn fields_are_replaced_whole_at_any_depth_and_in_queries() {
        let p = plugin(json!({"fields": ["Phone", "user_name"]}));
        let event = run(
            &p,
            Event::new("signup")
                .with_property("phone", 33612345678u64)
                .with_property(
                    "profile",
                    json!({"USER_NAME": "Jane", "age": 30, "phone": null}),
                )
                .with_url("https://x.example/p?user_name=Jane+Doe&page=2"),
        );
        assert_eq!(event.properties["phone"], REDACTED);
        assert_eq!(
            event.properties["profile"],
            json!({"USER_NAME": REDACTED, "age": 30, "phone": null})
        );
        assert_eq!(
            event.url.as_deref(),
            Some("https://x.example/p?user_name=[redacted]&page=2")
        );
    }

    #[test]
    fn phones_only_when_asked() {
        let text = "call +33 6 12 34 56 78 or mail a@b.com";
        let off = plugin(json!({}));
        let on = plugin(json!({"phones": true}));
        assert_eq!(
            off.redact_text(text).as_deref(),
            Some("call +33 6 12 34 56 78 or mail [redacted]")
        );
        assert_eq!(
            on.redact_text(text).as_deref(),
            Some("call [redacted] or mail [redacted]")
        );
        let event = run(
            &on,
            Event::new("x").with_url("https://x.example/?tel=%2B33612345678&t=1699999999999"),
        );
        assert_eq!(
            event.url.as_deref(),
            Some("https://x.example/?tel=[redacted]&t=1699999999999")
        );
    }

    #[test]
    fn events_without_pii_are_unchanged() {
        let p = plugin(json!({"phones": true}));
        let event = Event::new("pageview")
            .with_url("https://example.com/a?b=c")
            .with_property("price", "1 234.50")
            .with_property("when", "2024-01-15 10:30");
        assert_eq!(run(&p, event.clone()), event);
    }

    #[test]
    fn refuses_bad_config() {
        let err =
            testing::configure::<PiiRedact>(json!({"mode": "redact", "sault": "x"})).unwrap_err();
        assert!(err.contains("unknown field `sault`"), "{err}");
        let err = testing::configure::<PiiRedact>(json!({"mode": "scramble"})).unwrap_err();
        assert!(err.contains("unknown variant `scramble`"), "{err}");
        let err = testing::configure::<PiiRedact>(json!({"mode": "hash"})).unwrap_err();
        assert!(err.contains("`salt` is required"), "{err}");
        let err = testing::configure::<PiiRedact>(json!({"fields": [""]})).unwrap_err();
        assert_eq!(err, "`fields[0]` is empty");
    }

    #[test]
    fn invalid_properties_from_the_host_fail() {
        let p = plugin(json!({}));
        let outcome = testing::process_raw(&p, Event::new("x"), "{\"a\":", "{}");
        assert!(matches!(outcome, Outcome::Fail(_)), "{outcome:?}");
    }
}
