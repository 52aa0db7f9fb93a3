//! Example plugin `url-category`: files each event under a category by the
//! path of its `url`.
//!
//! Rules are tried in order; the first whose `prefix` starts the path wins
//! (a plain string prefix: `/shop` also matches `/shopping`, `/shop/`
//! does not match `/shop`). The plugin sets `enrichment.category` and
//! `enrichment.category_rule` (the matching prefix, or `"default"`). With
//! no match it uses `default`; without a `default` the event is left as it
//! is. Events are always kept.
//!
//! Config (unknown keys refused):
//!
//! ```json
//! {"rules": [{"prefix": "/shop/", "category": "shop"},
//!            {"prefix": "/blog", "category": "content"}],
//!  "default": "other"}
//! ```

use orrery_plugin::{Event, Plugin, Value, Verdict};
use serde::Deserialize;

/// One rule: a path prefix and its category.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Starts with `/`.
    pub prefix: String,
    /// Not empty.
    pub category: String,
}

/// The plugin's config, as written in the stage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Tried in order.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The category when no rule matches.
    #[serde(default)]
    pub default: Option<String>,
}

/// The `category_rule` value when the default applied.
pub const DEFAULT_RULE: &str = "default";

/// The plugin.
#[derive(Debug)]
pub struct UrlCategory {
    rules: Vec<Rule>,
    default: Option<String>,
}

impl Plugin for UrlCategory {
    fn configure(config: Value) -> Result<Self, String> {
        let config: Config = orrery_plugin::from_config(config)?;
        for (index, rule) in config.rules.iter().enumerate() {
            if !rule.prefix.starts_with('/') {
                return Err(format!(
                    "`rules[{index}].prefix` must start with `/` (a URL path), got `{}`",
                    rule.prefix
                ));
            }
            if rule.category.trim().is_empty() {
                return Err(format!("`rules[{index}].category` is empty"));
            }
        }
        if config
            .default
            .as_deref()
            .is_some_and(|d| d.trim().is_empty())
        {
            return Err("`default` is empty (leave it out to set no category)".to_owned());
        }
        if config.rules.is_empty() && config.default.is_none() {
            return Err("no `rules` and no `default`: nothing to do".to_owned());
        }
        Ok(UrlCategory {
            rules: config.rules,
            default: config.default,
        })
    }

    fn process(&self, event: &mut Event) -> Verdict {
        let path = event.url.as_deref().map(url_path);
        let rule = path.and_then(|path| {
            self.rules
                .iter()
                .find(|rule| path.starts_with(&rule.prefix))
        });
        let (category, rule) = match (rule, &self.default) {
            (Some(rule), _) => (rule.category.as_str(), rule.prefix.as_str()),
            (None, Some(default)) => (default.as_str(), DEFAULT_RULE),
            (None, None) => return Verdict::Keep,
        };
        event
            .enrichment
            .insert("category".to_owned(), category.into());
        event
            .enrichment
            .insert("category_rule".to_owned(), rule.into());
        Verdict::Keep
    }
}

/// The path of a URL (absolute, scheme-relative or just a path), without
/// query or fragment; `/` when empty.
pub fn url_path(url: &str) -> &str {
    let after_authority = match url.find("://") {
        Some(i)
            if i > 0
                && url[..i]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) =>
        {
            let rest = &url[i + 3..];
            &rest[rest.find(['/', '?', '#']).unwrap_or(rest.len())..]
        }
        _ => match url.strip_prefix("//") {
            Some(rest) => &rest[rest.find(['/', '?', '#']).unwrap_or(rest.len())..],
            None => url,
        },
    };
    let path = &after_authority[..after_authority
        .find(['?', '#'])
        .unwrap_or(after_authority.len())];
    if path.is_empty() { "/" } else { path }
}

orrery_plugin::export!(UrlCategory);

#[cfg(test)]
mod tests {
    use orrery_plugin::serde_json::json;
    use orrery_plugin::testing;

    use super::*;

    fn plugin() -> UrlCategory {
        testing::configure(json!({
            "rules": [
                {"prefix": "/shop/checkout", "category": "checkout"},
                {"prefix": "/shop/", "category": "shop"},
                {"prefix": "/blog", "category": "content"},
                {"prefix": "/", "category": "home-or-other"}
            ],
            "default": "other"
        }))
        .unwrap()
    }

    fn categorize(plugin: &UrlCategory, url: Option<&str>) -> (Value, Value) {
        let mut event = Event::new("pageview");
        event.url = url.map(str::to_owned);
        let event = testing::process(plugin, event).unwrap_keep();
        (
            event
                .enrichment
                .get("category")
                .cloned()
                .unwrap_or(Value::Null),
            event
                .enrichment
                .get("category_rule")
                .cloned()
                .unwrap_or(Value::Null),
        )
    }

    #[test]
    fn first_matching_rule_wins_in_order() {
        let p = plugin();
        assert_eq!(
            categorize(&p, Some("https://x.io/shop/checkout/pay?step=2")),
            (json!("checkout"), json!("/shop/checkout"))
        );
        assert_eq!(
            categorize(&p, Some("https://x.io/shop/item/42#reviews")),
            (json!("shop"), json!("/shop/"))
        );
        assert_eq!(
            categorize(&p, Some("https://x.io/blogging")).0,
            json!("content")
        );
        assert_eq!(
            categorize(&p, Some("https://x.io/shop")).0,
            json!("home-or-other")
        );
        assert_eq!(
            categorize(&p, Some("https://x.io")).0,
            json!("home-or-other")
        );
    }

    #[test]
    fn order_matters() {
        let reversed: UrlCategory = testing::configure(json!({
            "rules": [
                {"prefix": "/shop/", "category": "shop"},
                {"prefix": "/shop/checkout", "category": "checkout"}
            ]
        }))
        .unwrap();
        assert_eq!(
            categorize(&reversed, Some("https://x.io/shop/checkout")).0,
            json!("shop")
        );
    }

    #[test]
    fn query_and_fragment_are_not_the_path() {
        let p: UrlCategory = testing::configure(json!({
            "rules": [{"prefix": "/shop/", "category": "shop"}],
            "default": "other"
        }))
        .unwrap();
        assert_eq!(
            categorize(&p, Some("https://x.io/?next=/shop/a")),
            (json!("other"), json!(DEFAULT_RULE))
        );
        assert_eq!(
            categorize(&p, Some("https://x.io/#/shop/a")).0,
            json!("other")
        );
        assert_eq!(categorize(&p, Some("/shop/relative")).0, json!("shop"));
        assert_eq!(categorize(&p, None), (json!("other"), json!(DEFAULT_RULE)));
    }

    #[test]
    fn without_default_unmatched_events_are_untouched() {
        let p: UrlCategory =
            testing::configure(json!({"rules": [{"prefix": "/a", "category": "a"}]})).unwrap();
        let event = Event::new("pageview")
            .with_url("https://x.io/b")
            .with_enrichment("country", "FR");
        assert_eq!(testing::process(&p, event.clone()).unwrap_keep(), event);
    }

    #[test]
    fn overwrites_an_earlier_category_and_keeps_other_enrichment() {
        let p = plugin();
        let event = Event::new("pageview")
            .with_url("https://x.io/blog/post")
            .with_enrichment("category", "stale")
            .with_enrichment("browser", "Firefox");
        let event = testing::process(&p, event).unwrap_keep();
        assert_eq!(event.enrichment["category"], "content");
        assert_eq!(event.enrichment["browser"], "Firefox");
    }

    #[test]
    fn refuses_bad_config() {
        let refuse = |config: Value| testing::configure::<UrlCategory>(config).unwrap_err();
        assert!(refuse(json!({})).contains("nothing to do"));
        assert!(
            refuse(json!({"rules": [{"prefix": "shop", "category": "s"}]}))
                .contains("`rules[0].prefix` must start with `/`")
        );
        assert!(
            refuse(json!({"rules": [{"prefix": "/s", "category": " "}]}))
                .contains("`rules[0].category` is empty")
        );
        assert!(
            refuse(json!({"rules": [{"prefix": "/s", "category": "s", "exact": true}]}))
                .contains("unknown field `exact`")
        );
        assert!(
            refuse(json!({"default": "x", "fallback": "y"})).contains("unknown field `fallback`")
        );
        assert!(refuse(json!({"rules": {"/s": "s"}})).contains("invalid type"));
    }

    #[test]
    fn extracts_paths() {
        assert_eq!(url_path("https://x.io"), "/");
        assert_eq!(url_path("https://x.io?a"), "/");
        assert_eq!(url_path("https://u@x.io:80/a/b?c#d"), "/a/b");
        assert_eq!(url_path("//cdn.x.io/lib.js"), "/lib.js");
        assert_eq!(url_path("/p?q"), "/p");
    }
}
