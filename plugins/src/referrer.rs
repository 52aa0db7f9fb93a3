//! `referrer`: where a visit came from, and which page it was.
//!
//! Reads the event's `url` and `referrer` and writes into `enrichment`:
//! - `referrer_source`: `direct`, `search`, `social`, `email`, `internal`
//!   or `other`;
//! - `referrer_name`: the engine or network (`Google`, `Reddit`...), or the
//!   referring host for `other`;
//! - `referrer_host`: the referring host, when there is a referrer;
//! - `utm_source`, `utm_medium`, `utm_campaign`, `utm_term`, `utm_content`
//!   from the page URL's query string, when present;
//! - `page_host` and `page_path` (the path without query string or
//!   fragment), so pages group however they were linked.
//!
//! A referrer on the page's own host (or one of `internal_hosts`, or a
//! subdomain of either) is `internal`. `utm_medium=email` (or `e-mail`,
//! `newsletter`) marks a visit as `email` even without a referrer, as mail
//! clients usually send none. Unparseable URLs are left alone: the event
//! is kept, without the fields that could not be derived.

use async_trait::async_trait;
use orrery_core::event::Envelope;
use orrery_core::plugin::{Plugin, PluginError, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

/// Registered name.
pub const NAME: &str = "referrer";

/// Configuration of `referrer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReferrerConfig {
    /// Hosts that count as the site itself besides the page's own host,
    /// e.g. `["example.com", "shop.example.com"]` (subdomains included).
    pub internal_hosts: Vec<String>,
}

/// The `referrer` plugin.
#[derive(Debug)]
pub struct Referrer {
    internal: Vec<String>,
}

/// (host suffix, name) of search engines. A suffix matches the host itself
/// or any subdomain; `google.` style prefixes match every country domain.
const SEARCH: &[(&str, &str)] = &[
    ("google.", "Google"),
    ("bing.com", "Bing"),
    ("duckduckgo.com", "DuckDuckGo"),
    ("search.yahoo.com", "Yahoo"),
    ("yahoo.", "Yahoo"),
    ("baidu.com", "Baidu"),
    ("yandex.", "Yandex"),
    ("ecosia.org", "Ecosia"),
    ("search.brave.com", "Brave"),
    ("startpage.com", "Startpage"),
    ("qwant.com", "Qwant"),
    ("naver.com", "Naver"),
    ("seznam.cz", "Seznam"),
    ("kagi.com", "Kagi"),
];

const SOCIAL: &[(&str, &str)] = &[
    ("facebook.com", "Facebook"),
    ("fb.com", "Facebook"),
    ("l.facebook.com", "Facebook"),
    ("instagram.com", "Instagram"),
    ("t.co", "Twitter"),
    ("twitter.com", "Twitter"),
    ("x.com", "Twitter"),
    ("linkedin.com", "LinkedIn"),
    ("lnkd.in", "LinkedIn"),
    ("reddit.com", "Reddit"),
    ("news.ycombinator.com", "Hacker News"),
    ("youtube.com", "YouTube"),
    ("youtu.be", "YouTube"),
    ("pinterest.com", "Pinterest"),
    ("tiktok.com", "TikTok"),
    ("threads.net", "Threads"),
    ("bsky.app", "Bluesky"),
    ("mastodon.social", "Mastodon"),
    ("vk.com", "VK"),
    ("weibo.com", "Weibo"),
];

const EMAIL: &[(&str, &str)] = &[
    ("mail.google.com", "Gmail"),
    ("outlook.live.com", "Outlook"),
    ("outlook.office.com", "Outlook"),
    ("mail.yahoo.com", "Yahoo Mail"),
    ("mail.proton.me", "Proton Mail"),
];

const UTM: [&str; 5] = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
];

/// Whether `host` is `pattern`, a subdomain of it, or (for a pattern
/// ending in `.`) any domain starting with it (`google.` ~ `google.co.uk`).
fn host_matches(host: &str, pattern: &str) -> bool {
    // Allocation-free: this runs for every pattern of the tables below.
    if let Some(prefix) = pattern.strip_suffix('.') {
        // Any label but the last (the TLD): google.com, www.google.co.uk.
        let mut labels = host.split('.');
        labels.next_back();
        return labels.any(|l| l == prefix);
    }
    host == pattern
        || (host.len() > pattern.len()
            && host.ends_with(pattern)
            && host.as_bytes()[host.len() - pattern.len() - 1] == b'.')
}

fn lookup<'a>(host: &str, table: &'a [(&str, &str)]) -> Option<&'a str> {
    table
        .iter()
        .find(|(pattern, _)| host_matches(host, pattern))
        .map(|(_, name)| *name)
}

fn bare(host: &str) -> &str {
    host.strip_prefix("www.").unwrap_or(host)
}

impl Referrer {
    /// Builds the plugin.
    ///
    /// # Errors
    /// [`PluginError::Config`] when an internal host is empty or has a
    /// scheme or path.
    pub fn from_config(config: ReferrerConfig) -> Result<Self, PluginError> {
        let mut internal = Vec::new();
        for h in config.internal_hosts {
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() || h.contains('/') || h.contains(':') {
                return Err(PluginError::Config {
                    plugin: NAME.to_owned(),
                    field: "internal_hosts".to_owned(),
                    reason: format!("`{h}` is not a host name (write example.com)"),
                });
            }
            internal.push(h);
        }
        Ok(Self { internal })
    }

    /// The fields this plugin derives from a page URL and a referrer.
    pub fn classify(&self, url: Option<&str>, referrer: Option<&str>) -> Map<String, Value> {
        let mut out = Map::new();
        let page = url.and_then(|u| Url::parse(u).ok());
        let mut medium = None;
        if let Some(page) = &page {
            if let Some(host) = page.host_str() {
                out.insert("page_host".into(), Value::from(host.to_ascii_lowercase()));
            }
            out.insert("page_path".into(), Value::from(page.path()));
            for (k, v) in page.query_pairs() {
                if UTM.contains(&k.as_ref()) && !v.is_empty() && !out.contains_key(k.as_ref()) {
                    if k == "utm_medium" {
                        medium = Some(v.to_ascii_lowercase());
                    }
                    out.insert(k.into_owned(), Value::from(v.into_owned()));
                }
            }
        }
        let page_host = page
            .as_ref()
            .and_then(|p| p.host_str())
            .map(|h| bare(&h.to_ascii_lowercase()).to_owned());
        let ref_host = referrer
            .and_then(|r| Url::parse(r).ok())
            .and_then(|r| r.host_str().map(str::to_ascii_lowercase));
        let email_campaign = medium
            .as_deref()
            .is_some_and(|m| matches!(m, "email" | "e-mail" | "newsletter"));
        let (source, name) = match &ref_host {
            None if email_campaign => ("email", None),
            None => ("direct", None),
            Some(host) => {
                let h = bare(host);
                let internal = page_host
                    .iter()
                    .chain(self.internal.iter())
                    .any(|own| host_matches(h, bare(own)));
                if internal {
                    ("internal", None)
                } else if let Some(n) = lookup(h, EMAIL) {
                    ("email", Some(n.to_owned()))
                } else if let Some(n) = lookup(h, SEARCH) {
                    ("search", Some(n.to_owned()))
                } else if let Some(n) = lookup(h, SOCIAL) {
                    ("social", Some(n.to_owned()))
                } else if email_campaign {
                    ("email", Some(h.to_owned()))
                } else {
                    ("other", Some(h.to_owned()))
                }
            }
        };
        out.insert("referrer_source".into(), Value::from(source));
        if let Some(n) = name {
            out.insert("referrer_name".into(), Value::from(n));
        }
        if let Some(h) = ref_host {
            out.insert("referrer_host".into(), Value::from(h));
        }
        out
    }
}

#[async_trait]
impl Plugin for Referrer {
    fn name(&self) -> &str {
        NAME
    }

    async fn process(&self, batch: &mut [Envelope]) -> Result<Vec<Verdict>, PluginError> {
        for env in batch.iter_mut() {
            let fields = self.classify(env.event.url.as_deref(), env.event.referrer.as_deref());
            env.event.enrichment.extend(fields);
        }
        Ok(vec![Verdict::Keep; batch.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plugin() -> Referrer {
        Referrer::from_config(ReferrerConfig {
            internal_hosts: vec!["example.com".into()],
        })
        .unwrap()
    }

    #[test]
    fn config_parses_and_rejects_unknown_fields() {
        let c: ReferrerConfig =
            serde_json::from_value(json!({"internal_hosts": ["a.test"]})).unwrap();
        assert_eq!(c.internal_hosts, ["a.test"]);
        let err = serde_json::from_value::<ReferrerConfig>(json!({"hosts": []})).unwrap_err();
        assert!(err.to_string().contains("hosts"));
        let err = Referrer::from_config(ReferrerConfig {
            internal_hosts: vec!["https://a.test/".into()],
        })
        .unwrap_err();
        assert!(err.to_string().contains("internal_hosts"));
    }

    #[test]
    fn sources_are_classified() {
        let p = plugin();
        let page = Some("https://shop.test/pricing?plan=pro#top");
        let cases = [
            (None, "direct", None),
            (
                Some("https://www.google.co.uk/search?q=x"),
                "search",
                Some("Google"),
            ),
            (Some("https://google.com/"), "search", Some("Google")),
            (
                Some("https://duckduckgo.com/"),
                "search",
                Some("DuckDuckGo"),
            ),
            (Some("https://t.co/abc"), "social", Some("Twitter")),
            (
                Some("https://old.reddit.com/r/rust"),
                "social",
                Some("Reddit"),
            ),
            (
                Some("https://mail.google.com/mail/u/0"),
                "email",
                Some("Gmail"),
            ),
            (Some("https://shop.test/cart"), "internal", None),
            (Some("https://www.shop.test/"), "internal", None),
            (Some("https://blog.example.com/post"), "internal", None),
            (
                Some("https://news.site.test/a"),
                "other",
                Some("news.site.test"),
            ),
            (
                Some("https://notgoogle.test/"),
                "other",
                Some("notgoogle.test"),
            ),
            (Some("not a url"), "direct", None),
        ];
        for (referrer, source, name) in cases {
            let out = p.classify(page, referrer);
            assert_eq!(out["referrer_source"], source, "{referrer:?}: {out:?}");
            assert_eq!(
                out.get("referrer_name").and_then(Value::as_str),
                name,
                "{referrer:?}"
            );
            assert_eq!(out["page_path"], "/pricing");
            assert_eq!(out["page_host"], "shop.test");
        }
    }

    #[test]
    fn utm_parameters_and_email_campaigns() {
        let p = plugin();
        let out = p.classify(
            Some("https://shop.test/?utm_source=newsletter&utm_medium=email&utm_campaign=nov&x=1"),
            None,
        );
        assert_eq!(out["utm_source"], "newsletter");
        assert_eq!(out["utm_medium"], "email");
        assert_eq!(out["utm_campaign"], "nov");
        assert!(!out.contains_key("x"));
        assert_eq!(out["referrer_source"], "email");
        let out = p.classify(Some("https://shop.test/?utm_term="), None);
        assert!(!out.contains_key("utm_term"), "empty values are skipped");
    }

    #[test]
    fn unparseable_urls_are_left_alone() {
        let out = plugin().classify(Some("::::"), Some("also bad"));
        assert_eq!(out["referrer_source"], "direct");
        assert!(!out.contains_key("page_path"));
    }

    #[tokio::test]
    async fn the_plugin_enriches_and_keeps_every_event() {
        use orrery_core::event::{EventLimits, RequestContext, parse_event};
        let event = parse_event(
            &json!({"event": "pageview", "url": "https://shop.test/a?utm_source=x",
                    "referrer": "https://www.bing.com/"}),
            uuid::Uuid::nil(),
            1_795_430_000_000,
            EventLimits {
                max_event_bytes: 4096,
            },
        )
        .unwrap();
        let mut batch = vec![Envelope {
            event,
            context: std::sync::Arc::new(RequestContext::default()),
        }];
        let verdicts = plugin().process(&mut batch).await.unwrap();
        assert_eq!(verdicts, vec![Verdict::Keep]);
        let e = &batch[0].event.enrichment;
        assert_eq!(e["referrer_source"], "search");
        assert_eq!(e["referrer_name"], "Bing");
        assert_eq!(e["utm_source"], "x");
    }
}
