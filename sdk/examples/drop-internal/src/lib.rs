//! Example plugin `drop-internal`: drops your own traffic.
//!
//! An event is dropped when, checked in this order:
//! 1. its `url` host is one of `hosts` or a subdomain of one
//!    (`example.com` matches `example.com` and `app.example.com`, not
//!    `notexample.com`); reason `hosts: <the matching entry>`;
//! 2. its `distinct_id` is one of `user_ids`; reason `user_ids`;
//! 3. its property `$internal` is `true`; reason `$internal`.
//!
//! Config (both keys optional, unknown keys refused):
//!
//! ```json
//! {"hosts": ["localhost", "staging.example.com"], "user_ids": ["alice"]}
//! ```

use std::collections::BTreeSet;

use orrery_plugin::{Event, Plugin, Value, Verdict};
use serde::Deserialize;

/// The plugin's config, as written in the stage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Host names whose traffic (subdomains included) is internal.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Distinct ids of internal users.
    #[serde(default)]
    pub user_ids: Vec<String>,
}

/// The plugin.
#[derive(Debug)]
pub struct DropInternal {
    /// Lowercased, without a trailing dot.
    hosts: Vec<String>,
    user_ids: BTreeSet<String>,
}

/// The drop reason for an internal user.
pub const REASON_USER: &str = "user_ids";
/// The drop reason for `$internal: true`.
pub const REASON_PROPERTY: &str = "$internal";

impl Plugin for DropInternal {
    fn configure(config: Value) -> Result<Self, String> {
        let config: Config = orrery_plugin::from_config(config)?;
        let hosts = config
            .hosts
            .iter()
            .enumerate()
            .map(|(index, host)| {
                normalize_host(host).map_err(|err| format!("`hosts[{index}]`: {err}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(index) = config.user_ids.iter().position(String::is_empty) {
            return Err(format!("`user_ids[{index}]` is empty"));
        }
        Ok(DropInternal {
            hosts,
            user_ids: config.user_ids.into_iter().collect(),
        })
    }

    fn process(&self, event: &mut Event) -> Verdict {
        if let Some(host) = event.url.as_deref().and_then(url_host)
            && let Some(rule) = self.hosts.iter().find(|rule| host_matches(&host, rule))
        {
            return Verdict::Drop(format!("hosts: {rule}"));
        }
        if let Some(user) = &event.distinct_id
            && self.user_ids.contains(user)
        {
            return Verdict::Drop(REASON_USER.to_owned());
        }
        if event.properties.get("$internal") == Some(&Value::Bool(true)) {
            return Verdict::Drop(REASON_PROPERTY.to_owned());
        }
        Verdict::Keep
    }
}

/// A `hosts` entry as compared: lowercased, no trailing dot; URLs, ports and
/// wildcards refused with a hint.
fn normalize_host(host: &str) -> Result<String, String> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return Err("empty host".to_owned());
    }
    if host.contains("://") || host.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "`{host}` is a URL; write the host name alone, like `example.com`"
        ));
    }
    if host.contains('*') {
        return Err(format!(
            "`{host}`: no wildcards; a host matches its subdomains already"
        ));
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!("`{host}`: no port; write the host name alone"));
    }
    if host.contains(char::is_whitespace) {
        return Err(format!("`{host}` contains whitespace"));
    }
    Ok(host)
}

/// Whether `host` is `rule` or a subdomain of it.
pub fn host_matches(host: &str, rule: &str) -> bool {
    host == rule
        || (host.len() > rule.len()
            && host.ends_with(rule)
            && host.as_bytes()[host.len() - rule.len() - 1] == b'.')
}

/// The host of an absolute (or scheme-relative) URL: lowercased, without
/// user info, port or trailing dot (IPv6 hosts keep their brackets).
pub fn url_host(url: &str) -> Option<String> {
    let rest = match url.find("://") {
        Some(i)
            if i > 0
                && url[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            &url[i + 3..]
        }
        _ => url.strip_prefix("//")?,
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if host_port.starts_with('[') {
        &host_port[..=host_port.find(']')?]
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

orrery_plugin::export!(DropInternal);

#[cfg(test)]
mod tests {
    use orrery_plugin::serde_json::json;
    use orrery_plugin::testing;

    use super::*;

    fn plugin() -> DropInternal {
        testing::configure(json!({
            "hosts": ["Example.com.", "localhost", "[::1]"],
            "user_ids": ["alice", "42"]
        }))
        .unwrap()
    }

    fn reason(plugin: &DropInternal, event: Event) -> Option<String> {
        testing::process(plugin, event)
            .drop_reason()
            .map(str::to_owned)
    }

    fn at(url: &str) -> Event {
        Event::new("pageview").with_url(url)
    }

    #[test]
    fn drops_listed_hosts_and_their_subdomains() {
        let p = plugin();
        assert_eq!(
            reason(&p, at("https://example.com/")).as_deref(),
            Some("hosts: example.com")
        );
        assert_eq!(
            reason(&p, at("https://App.Staging.EXAMPLE.com:8443/x?y#z")).as_deref(),
            Some("hosts: example.com")
        );
        assert_eq!(
            reason(&p, at("http://user:pw@example.com./")).as_deref(),
            Some("hosts: example.com")
        );
        assert_eq!(
            reason(&p, at("http://localhost:3000/dev")).as_deref(),
            Some("hosts: localhost")
        );
        assert_eq!(
            reason(&p, at("http://[::1]:8080/")).as_deref(),
            Some("hosts: [::1]")
        );
        assert_eq!(
            reason(&p, at("//example.com/cdn")).as_deref(),
            Some("hosts: example.com")
        );
    }

    #[test]
    fn keeps_look_alike_hosts() {
        let p = plugin();
        for url in [
            "https://notexample.com/",
            "https://example.com.evil.io/",
            "https://evil.io/?next=https://example.com/",
            "https://evil.io/example.com",
            "/relative/path",
            "not a url",
        ] {
            let outcome = testing::process(&p, at(url));
            assert!(outcome.kept().is_some(), "{url}: {outcome:?}");
        }
        assert!(testing::process(&p, Event::new("no url")).kept().is_some());
    }

    #[test]
    fn drops_internal_users_by_exact_id() {
        let p = plugin();
        let user = |id: &str| Event::new("click").with_distinct_id(id);
        assert_eq!(reason(&p, user("alice")).as_deref(), Some(REASON_USER));
        assert_eq!(reason(&p, user("42")).as_deref(), Some(REASON_USER));
        assert_eq!(reason(&p, user("Alice")), None, "ids are exact");
        assert_eq!(reason(&p, user("alice2")), None);
    }

    #[test]
    fn drops_on_internal_property_only_when_true() {
        let p = plugin();
        let with = |v: Value| Event::new("click").with_property("$internal", v);
        assert_eq!(
            reason(&p, with(json!(true))).as_deref(),
            Some(REASON_PROPERTY)
        );
        assert_eq!(reason(&p, with(json!(false))), None);
        assert_eq!(reason(&p, with(json!("yes"))), None);
    }

    #[test]
    fn the_first_matching_rule_names_the_reason() {
        let p = plugin();
        let event = at("https://www.example.com/")
            .with_distinct_id("alice")
            .with_property("$internal", true);
        assert_eq!(reason(&p, event).as_deref(), Some("hosts: example.com"));
        let event = at("https://public.io/")
            .with_distinct_id("alice")
            .with_property("$internal", true);
        assert_eq!(reason(&p, event).as_deref(), Some(REASON_USER));
    }

    #[test]
    fn kept_events_are_unchanged() {
        let p = plugin();
        let event = at("https://public.io/a")
            .with_distinct_id("bob")
            .with_property("k", 1);
        assert_eq!(testing::process(&p, event.clone()).unwrap_keep(), event);
    }

    #[test]
    fn refuses_bad_config() {
        let refuse = |config: Value| testing::configure::<DropInternal>(config).unwrap_err();
        assert!(refuse(json!({"host": ["x.com"]})).contains("unknown field `host`"));
        assert!(refuse(json!({"hosts": "x.com"})).contains("invalid type"));
        assert!(
            refuse(json!({"hosts": ["https://x.com/"]}))
                .contains("`hosts[0]`: `https://x.com/` is a URL")
        );
        assert!(refuse(json!({"hosts": ["ok.com", "*.x.com"]})).starts_with("`hosts[1]`"));
        assert!(refuse(json!({"hosts": ["x.com:80"]})).contains("no port"));
        assert!(refuse(json!({"user_ids": [""]})).contains("`user_ids[0]` is empty"));
        assert!(testing::configure::<DropInternal>(json!({})).is_ok());
    }

    #[test]
    fn extracts_hosts() {
        assert_eq!(url_host("HTTPS://A.B.com:1/x").as_deref(), Some("a.b.com"));
        assert_eq!(url_host("https://u@h.io?x").as_deref(), Some("h.io"));
        assert_eq!(url_host("mailto:a@b.com"), None);
        assert_eq!(url_host("https:///path"), None);
    }
}
