//! `user_agent`: browser, operating system, device type and bot flag.
//!
//! Reads the event's `user_agent` (or else the request's `User-Agent`
//! header) and writes into `enrichment`:
//! - `browser` and `browser_version` (`"Chrome"`, `"120.0"`: major.minor,
//!   or just the major when that is all the user agent says);
//! - `os` and `os_version` (`"Windows"`, `"10"`; `"Mac OS X"`, `"10.15"`);
//! - `device_type`: `desktop`, `mobile`, `tablet` or `bot`;
//! - `device_brand` and `device_model` (`"Apple"`, `"iPhone"`), when known;
//! - `bot`: `true` for crawlers, scripts and headless browsers.
//!
//! Names follow the uap project (`"Other"` when nothing matched), so the
//! figures compare with other tools built on it. An event without a user
//! agent (or a blank one) is kept and gets none of these fields: nothing
//! can be said about it, and a made-up `"Other"` would skew reports.
//!
//! # The regex database
//! Parsing is done by the `ua-parser` crate, the uap project's Rust port,
//! with uap-core's `regexes.yaml`, version [`UAP_CORE_VERSION`]
//! (Apache-2.0), vendored in `plugins/data/` as JSON and embedded in the
//! binary; `plugins/data/update-uap.sh` updates it. Compiling it takes a
//! noticeable time (see [`warm_up`]), so it happens once per process and
//! every instance of the plugin shares it: pipelines are rebuilt per
//! project and on every admin change, and building a plugin stays cheap.
//! Each instance keeps a small cache of parsed user agents, since most
//! traffic repeats a few hundred of them.
//!
//! # Device type
//! In order, the first that applies:
//! 1. `bot`: uap's device or browser family is `Spider`, or the user agent
//!    names a script or headless tool (`curl`, `Wget`, `python-requests`,
//!    `HeadlessChrome`...);
//! 2. `tablet`: an iPad, a Kindle or the Silk browser, uap's generic
//!    tablet, or Android without `Mobile` (Google's rule for tablets);
//! 3. `mobile`: `Mobi` in the user agent (Android phones, iPhone Safari),
//!    an iPhone or iPod, a generic phone, a phone OS (iOS, Windows Phone,
//!    BlackBerry, KaiOS, Symbian, Windows CE, J2ME's `MIDP`...), or a known
//!    device brand on an unknown OS (feature phones), TVs excepted;
//! 4. `desktop` otherwise, unknown user agents included.
//!
//! iPads since iPadOS 13 send a Mac user agent by default and so count as
//! desktop: the user agent alone cannot tell them apart.
//!
//! # Bots
//! `bot` is always written. With `drop_bots`, bot events are dropped
//! (`bot: <browser>`), except those sent with a secret key (a server-side
//! sender), whose HTTP library often looks like a bot (`python-requests`):
//! those are dropped only if `drop_server_side_bots` is set as well.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use orrery_core::event::Envelope;
use orrery_core::plugin::{Plugin, PluginError, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Registered name.
pub const NAME: &str = "user_agent";

/// The uap-core release whose `regexes.yaml` is embedded.
pub const UAP_CORE_VERSION: &str = "0.18.0";

/// Largest accepted `cache_size`.
pub const MAX_CACHE_SIZE: usize = 1 << 20;

/// uap-core's `regexes.yaml` as JSON, made by `plugins/data/update-uap.sh`.
const REGEXES_JSON: &str = include_str!("../data/uap-regexes.json");

/// User agents longer than this are parsed but not cached: real browsers
/// send 100 to 300 bytes, and longer ones rarely repeat, so caching them
/// would only cost memory.
const MAX_CACHED_UA_BYTES: usize = 512;

/// Lower-case markers of bots that uap's `Spider` device family misses:
/// HTTP libraries, command-line tools, headless browsers, and crawlers that
/// say so after the first 100 bytes, which is all uap's catch-all looks at.
/// A bare `bot` is not a marker: it would make a Cubot phone a bot (uap
/// knows better, and is asked first).
const BOT_MARKERS: &[&str] = &[
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "libwww-perl",
    "node-fetch",
    "axios/",
    "guzzlehttp",
    "httpclient",
    "httpie/",
    "go-resty",
    "scrapy",
    "headless",
    "phantomjs",
    "lighthouse",
    "crawler",
    "spider",
    "bot/",
    "bot.html",
    "+http",
];

/// Beginnings of uap OS families that run on phones (tablets are
/// recognised before).
const PHONE_OSES: &[&str] = &[
    "iOS",
    "Android",
    "Windows Phone",
    "BlackBerry",
    "KaiOS",
    "Symbian",
    "Firefox OS",
    "BREW",
    "Brew MP",
    "Nokia Series",
    "MeeGo",
    "Bada",
];

/// Configuration of `user_agent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserAgentConfig {
    /// Drop events whose user agent is a bot (`device_type` = `bot`).
    /// Events sent with a secret key are kept unless
    /// `drop_server_side_bots` is set too.
    pub drop_bots: bool,
    /// With `drop_bots`, also drop bot events sent with a secret (`sk_`)
    /// key. Off by default: server-side senders often use HTTP libraries
    /// whose user agent looks like a bot's (`python-requests/2.31`).
    pub drop_server_side_bots: bool,
    /// How many distinct user agents to keep parsed, per plugin instance
    /// (at most 1,048,576; about 1 KiB each when full). `0` turns the cache
    /// off: every event is parsed (tens of microseconds).
    pub cache_size: usize,
}

impl Default for UserAgentConfig {
    fn default() -> Self {
        Self {
            drop_bots: false,
            drop_server_side_bots: false,
            cache_size: 4096,
        }
    }
}

/// The compiled uap regexes, shared by every instance.
struct Parser {
    extractor: ua_parser::Extractor<'static>,
}

static PARSER: LazyLock<Result<Parser, String>> = LazyLock::new(Parser::build);

/// Compiles the shared parser now rather than when the first `user_agent`
/// plugin is built; later calls return at once. It takes about a third of
/// a second in a release build (`cargo bench -p orrery-plugins --bench
/// user_agent`; a parse then costs about 30 µs, a cache hit about 1 µs),
/// so call it at start-up, off the async runtime's worker threads.
///
/// # Errors
/// [`PluginError::Failed`] if the embedded regex database does not compile,
/// which the tests rule out.
pub fn warm_up() -> Result<(), PluginError> {
    shared_parser().map(|_| ())
}

fn shared_parser() -> Result<&'static Parser, PluginError> {
    PARSER.as_ref().map_err(|reason| PluginError::Failed {
        plugin: NAME.to_owned(),
        reason: reason.clone(),
    })
}

/// What one user agent says, ready to be merged into events.
#[derive(Debug)]
struct Parsed {
    /// The enrichment fields.
    fields: Map<String, Value>,
    /// Whether it is a bot.
    bot: bool,
    /// The browser family, for the drop reason.
    browser: String,
}

/// `major.minor`, or `major` alone, or nothing.
fn version(major: Option<&str>, minor: Option<&str>) -> Option<String> {
    match (major?, minor) {
        (major, Some(minor)) => Some(format!("{major}.{minor}")),
        (major, None) => Some(major.to_owned()),
    }
}

impl Parser {
    fn build() -> Result<Self, String> {
        let regexes: ua_parser::Regexes<'static> = serde_json::from_str(REGEXES_JSON)
            .map_err(|e| format!("embedded uap regexes do not parse: {e}"))?;
        let extractor = ua_parser::Extractor::try_from(regexes)
            .map_err(|e| format!("embedded uap regexes do not compile: {e}"))?;
        Ok(Self { extractor })
    }

    fn parse(&self, ua: &str) -> Parsed {
        let (browser, os, device) = self.extractor.extract(ua);
        let lower = ua.to_ascii_lowercase();
        let browser_family = browser.as_ref().map_or("Other", |b| &b.family);
        let os_family = os.as_ref().map_or("Other", |o| &o.os);
        let device_family = device.as_ref().map_or("Other", |d| &d.device);

        // uap's placeholder brands (`Generic_Android`, `Spider`) say
        // nothing about the hardware.
        let real_brand = device
            .as_ref()
            .and_then(|d| d.brand.as_deref())
            .filter(|b| !b.starts_with("Generic") && *b != "Spider");
        let bot = device_family == "Spider"
            || browser_family == "Spider"
            || BOT_MARKERS.iter().any(|m| lower.contains(m));
        let device_type = if bot {
            "bot"
        } else if device_family.starts_with("iPad")
            || device_family.starts_with("Kindle")
            || device_family == "Generic Tablet"
            || lower.contains("kindle")
            || lower.contains("silk/")
            || ((os_family == "Android" || lower.contains("android")) && !ua.contains("Mobile"))
        {
            "tablet"
        } else if ua.contains("Mobi")
            || device_family.starts_with("iPhone")
            || device_family.starts_with("iPod")
            || device_family.starts_with("Generic Smartphone")
            || device_family == "Generic Feature Phone"
            || PHONE_OSES.iter().any(|p| os_family.starts_with(p))
            || lower.contains("windows ce")
            || lower.contains("midp")
            || (os_family == "Other" && real_brand.is_some() && !lower.contains("tv"))
        {
            "mobile"
        } else {
            "desktop"
        };

        let mut fields = Map::new();
        fields.insert("browser".into(), Value::from(browser_family));
        if let Some(v) = browser.as_ref().and_then(|b| version(b.major, b.minor)) {
            fields.insert("browser_version".into(), Value::from(v));
        }
        fields.insert("os".into(), Value::from(os_family));
        if let Some(v) = os
            .as_ref()
            .and_then(|o| version(o.major.as_deref(), o.minor.as_deref()))
        {
            fields.insert("os_version".into(), Value::from(v));
        }
        fields.insert("device_type".into(), Value::from(device_type));
        if let Some(brand) = real_brand {
            fields.insert("device_brand".into(), Value::from(brand));
            if let Some(model) = device.as_ref().and_then(|d| d.model.as_deref()) {
                fields.insert("device_model".into(), Value::from(model));
            }
        }
        fields.insert("bot".into(), Value::from(bot));
        Parsed {
            fields,
            bot,
            browser: browser_family.to_owned(),
        }
    }
}

/// A bounded cache in two generations: lookups try the current map, then
/// the previous one (moving a hit back to the current); when the current
/// is full it becomes the previous and the oldest is forgotten. Frequent
/// user agents so survive a rotation, without the bookkeeping of an LRU.
struct Cache {
    /// Entries per generation.
    generation: usize,
    current: HashMap<Box<str>, Arc<Parsed>>,
    previous: HashMap<Box<str>, Arc<Parsed>>,
}

impl Cache {
    fn new(size: usize) -> Self {
        Self {
            generation: size.div_ceil(2),
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    fn get(&mut self, ua: &str) -> Option<Arc<Parsed>> {
        if let Some(hit) = self.current.get(ua) {
            return Some(Arc::clone(hit));
        }
        let (key, hit) = self.previous.remove_entry(ua)?;
        self.insert(key, Arc::clone(&hit));
        Some(hit)
    }

    fn insert(&mut self, ua: Box<str>, parsed: Arc<Parsed>) {
        if self.current.len() >= self.generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(ua, parsed);
    }
}

/// The `user_agent` plugin.
pub struct UserAgent {
    config: UserAgentConfig,
    parser: &'static Parser,
    cache: Option<Mutex<Cache>>,
}

impl std::fmt::Debug for UserAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserAgent")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl UserAgent {
    /// Builds the plugin. Cheap, except for the first call in a process,
    /// which compiles the shared parser unless [`warm_up`] did.
    ///
    /// # Errors
    /// [`PluginError::Config`] when `cache_size` is above
    /// [`MAX_CACHE_SIZE`]; [`PluginError::Failed`] as for [`warm_up`].
    pub fn from_config(config: UserAgentConfig) -> Result<Self, PluginError> {
        if config.cache_size > MAX_CACHE_SIZE {
            return Err(PluginError::Config {
                plugin: NAME.to_owned(),
                field: "cache_size".to_owned(),
                reason: format!(
                    "{} is above the limit of {MAX_CACHE_SIZE}",
                    config.cache_size
                ),
            });
        }
        let cache = (config.cache_size > 0).then(|| Mutex::new(Cache::new(config.cache_size)));
        Ok(Self {
            parser: shared_parser()?,
            cache,
            config,
        })
    }

    fn parse(&self, ua: &str) -> Arc<Parsed> {
        let Some(cache) = &self.cache else {
            return Arc::new(self.parser.parse(ua));
        };
        // The lock is not held while parsing, so a miss never stalls
        // another batch; two misses on one user agent both parse it.
        if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(ua) {
            return hit;
        }
        let parsed = Arc::new(self.parser.parse(ua));
        if ua.len() <= MAX_CACHED_UA_BYTES {
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ua.into(), Arc::clone(&parsed));
        }
        parsed
    }
}

#[async_trait]
impl Plugin for UserAgent {
    fn name(&self) -> &str {
        NAME
    }

    async fn process(&self, batch: &mut [Envelope]) -> Result<Vec<Verdict>, PluginError> {
        let mut verdicts = Vec::with_capacity(batch.len());
        for env in batch.iter_mut() {
            let ua = env
                .event
                .user_agent
                .as_deref()
                .or(env.context.user_agent.as_deref())
                .filter(|ua| !ua.trim().is_empty());
            let Some(ua) = ua else {
                verdicts.push(Verdict::Keep);
                continue;
            };
            let parsed = self.parse(ua);
            for (key, value) in &parsed.fields {
                env.event.enrichment.insert(key.clone(), value.clone());
            }
            let drop = parsed.bot
                && self.config.drop_bots
                && (!env.context.server_side || self.config.drop_server_side_bots);
            verdicts.push(if drop {
                Verdict::Drop(format!("bot: {}", parsed.browser))
            } else {
                Verdict::Keep
            });
        }
        Ok(verdicts)
    }
}

#[cfg(test)]
mod tests {
    use orrery_core::event::EventBuilder;
    use serde_json::json;

    use super::*;

    const CHROME_WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    fn envelope(event_ua: Option<&str>, header_ua: Option<&str>, server_side: bool) -> Envelope {
        let mut event = EventBuilder::new("pageview").received_at(1_795_430_000_000);
        if let Some(ua) = event_ua {
            event = event.field("user_agent", ua);
        }
        if let Some(ua) = header_ua {
            event = event.header_user_agent(ua);
        }
        if server_side {
            event = event.server_side();
        }
        event.envelope()
    }

    fn plugin(config: Value) -> UserAgent {
        UserAgent::from_config(serde_json::from_value(config).unwrap()).unwrap()
    }

    /// The enrichment of one user agent, through the whole plugin.
    async fn enrich(ua: &str) -> Map<String, Value> {
        let mut batch = vec![envelope(Some(ua), None, false)];
        let verdicts = plugin(json!({})).process(&mut batch).await.unwrap();
        assert_eq!(verdicts, vec![Verdict::Keep]);
        batch.remove(0).event.enrichment
    }

    #[test]
    fn config_parses_and_rejects_unknown_fields_and_bad_values() {
        let c: UserAgentConfig = serde_json::from_value(json!({})).unwrap();
        assert_eq!(c, UserAgentConfig::default());
        assert_eq!(c.cache_size, 4096);
        assert!(!c.drop_bots && !c.drop_server_side_bots);
        let c: UserAgentConfig = serde_json::from_value(
            json!({"drop_bots": true, "drop_server_side_bots": true, "cache_size": 0}),
        )
        .unwrap();
        assert!(c.drop_bots && c.drop_server_side_bots);
        assert_eq!(c.cache_size, 0);
        UserAgent::from_config(c).unwrap();

        let err = serde_json::from_value::<UserAgentConfig>(json!({"drop_bot": true})).unwrap_err();
        assert!(err.to_string().contains("drop_bot"), "{err}");
        // serde_json names the expected type, not the field, in a type
        // error: the registry that reads configs adds the path.
        assert!(serde_json::from_value::<UserAgentConfig>(json!({"cache_size": -1})).is_err());
        assert!(serde_json::from_value::<UserAgentConfig>(json!({"drop_bots": "yes"})).is_err());

        let err = UserAgent::from_config(UserAgentConfig {
            cache_size: MAX_CACHE_SIZE + 1,
            ..UserAgentConfig::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, PluginError::Config { field, .. } if field == "cache_size"),
            "{err}"
        );
    }

    #[test]
    fn the_embedded_database_is_the_documented_version() {
        let v: Value = serde_json::from_str(REGEXES_JSON).unwrap();
        assert_eq!(v["uap_core_version"], UAP_CORE_VERSION);
        warm_up().unwrap();
    }

    #[tokio::test]
    async fn real_user_agents() {
        // (user agent, browser, browser version, os, os version, device type)
        let cases = [
            (
                CHROME_WINDOWS,
                "Chrome",
                "120.0",
                "Windows",
                "10",
                "desktop",
            ),
            (
                "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
                "Firefox",
                "121.0",
                "Ubuntu",
                "",
                "desktop",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
                "Safari",
                "17.1",
                "Mac OS X",
                "10.15",
                "desktop",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1",
                "Mobile Safari",
                "17.1",
                "iOS",
                "17.1",
                "mobile",
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                "Mobile Safari",
                "17.1",
                "iOS",
                "17.1",
                "tablet",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
                "Chrome Mobile",
                "120.0",
                "Android",
                "14",
                "mobile",
            ),
            (
                // Chrome's reduced user agent: the model is always `K`.
                "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
                "Chrome Mobile",
                "120.0",
                "Android",
                "10",
                "mobile",
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                "Chrome",
                "120.0",
                "Android",
                "13",
                "tablet",
            ),
            (
                // uap's catch-all for crawlers says `silk`: a Fire tablet
                // must be recognised before it.
                "Mozilla/5.0 (Linux; Android 9; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/120.4.1 like Chrome/120.0.6099.230 Safari/537.36",
                "Amazon Silk",
                "120.4",
                "Android",
                "9",
                "tablet",
            ),
            (GOOGLEBOT, "Googlebot", "2.1", "Other", "", "bot"),
            (
                "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.216 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                "Googlebot",
                "2.1",
                "Android",
                "6.0",
                "bot",
            ),
            ("curl/8.4.0", "curl", "8.4", "Other", "", "bot"),
            (
                "python-requests/2.31.0",
                "Python Requests",
                "2.31",
                "Other",
                "",
                "bot",
            ),
        ];
        for (ua, browser, browser_version, os, os_version, device_type) in cases {
            let e = enrich(ua).await;
            let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
            assert_eq!(field("browser"), browser, "{ua}: {e:?}");
            assert_eq!(field("browser_version"), browser_version, "{ua}");
            assert_eq!(field("os"), os, "{ua}");
            assert_eq!(field("os_version"), os_version, "{ua}");
            assert_eq!(field("device_type"), device_type, "{ua}");
            assert_eq!(e["bot"], device_type == "bot", "{ua}");
        }

        let iphone = enrich("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1.2 Mobile/15E148 Safari/604.1").await;
        assert_eq!(iphone.get("device_brand"), Some(&json!("Apple")));
        assert_eq!(iphone.get("device_model"), Some(&json!("iPhone")));
        let tablet = enrich("Mozilla/5.0 (Linux; Android 13; SM-X700 Build/TP1A.220624.014) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36").await;
        assert_eq!(
            tablet.get("device_brand"),
            Some(&json!("Samsung")),
            "{tablet:?}"
        );
        assert_eq!(tablet.get("device_model"), Some(&json!("SM-X700")));
        let pixel = enrich("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36").await;
        assert_eq!(pixel.get("device_brand"), Some(&json!("Google")));
        assert_eq!(pixel.get("device_model"), Some(&json!("Pixel 8")));
        // Placeholders are not brands: Chrome's reduced `K`, crawlers, PCs.
        let reduced = enrich("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36").await;
        assert!(!reduced.contains_key("device_brand"), "{reduced:?}");
        assert!(!reduced.contains_key("device_model"));
        assert!(!enrich(GOOGLEBOT).await.contains_key("device_brand"));
        assert!(!enrich(CHROME_WINDOWS).await.contains_key("device_brand"));
    }

    #[tokio::test]
    async fn bots_are_dropped_only_when_asked_and_server_side_only_when_asked_twice() {
        // (drop_bots, drop_server_side_bots, server_side, dropped)
        let cases = [
            (false, false, false, false),
            (true, false, false, true),
            (true, false, true, false),
            (true, true, true, true),
            (false, true, false, false),
        ];
        for (drop_bots, drop_server_side_bots, server_side, dropped) in cases {
            let p = plugin(json!({
                "drop_bots": drop_bots, "drop_server_side_bots": drop_server_side_bots
            }));
            let mut batch = vec![
                envelope(Some(GOOGLEBOT), None, server_side),
                envelope(Some(CHROME_WINDOWS), None, server_side),
            ];
            let verdicts = p.process(&mut batch).await.unwrap();
            let expected = if dropped {
                Verdict::Drop("bot: Googlebot".into())
            } else {
                Verdict::Keep
            };
            assert_eq!(
                verdicts,
                vec![expected, Verdict::Keep],
                "drop_bots={drop_bots} drop_server_side_bots={drop_server_side_bots} server_side={server_side}"
            );
            assert_eq!(batch[0].event.enrichment["bot"], true);
        }
    }

    #[tokio::test]
    async fn missing_or_blank_user_agents_are_kept_without_fields() {
        let p = plugin(json!({"drop_bots": true}));
        let mut batch = vec![
            envelope(None, None, false),
            envelope(None, Some(""), false),
            envelope(None, Some("   "), false),
        ];
        let verdicts = p.process(&mut batch).await.unwrap();
        assert_eq!(verdicts, vec![Verdict::Keep; 3]);
        assert!(batch.iter().all(|e| e.event.enrichment.is_empty()));
    }

    #[tokio::test]
    async fn the_event_user_agent_wins_over_the_header() {
        let p = plugin(json!({}));
        let mut batch = vec![
            envelope(None, Some(CHROME_WINDOWS), false),
            envelope(Some(CHROME_WINDOWS), Some("curl/8.4.0"), false),
        ];
        p.process(&mut batch).await.unwrap();
        for env in &batch {
            assert_eq!(env.event.enrichment["browser"], "Chrome");
        }
    }

    #[tokio::test]
    async fn garbage_is_kept_as_an_unknown_desktop() {
        // 1 KiB (the event limit) of deterministic noise, non-ASCII included.
        let mut state = 0x2545_f491_u32;
        let mut ua = String::new();
        while ua.len() < orrery_core::event::MAX_USER_AGENT_BYTES - 4 {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let c = char::from_u32(0x20 + (state >> 8) % 0x2f0).unwrap_or('?');
            ua.push(c);
        }
        let e = enrich(&ua).await;
        assert_eq!(e["device_type"], "desktop", "{e:?}");
        assert_eq!(e["browser"], "Other");
        assert_eq!(e["os"], "Other");
        assert_eq!(e["bot"], false);
    }

    #[test]
    fn the_parser_is_built_once_and_shared() {
        let first = UserAgent::from_config(UserAgentConfig::default()).unwrap();
        for _ in 0..100 {
            let other = UserAgent::from_config(UserAgentConfig::default()).unwrap();
            assert!(std::ptr::eq(first.parser, other.parser));
        }
        assert!(std::ptr::eq(first.parser, shared_parser().unwrap()));
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_what_is_used() {
        let parser = shared_parser().unwrap();
        let mut cache = Cache::new(4);
        let hot = "hot/1.0";
        cache.insert(hot.into(), Arc::new(parser.parse(hot)));
        for i in 0..20 {
            let ua = format!("cold/{i}");
            cache.insert(ua.as_str().into(), Arc::new(parser.parse(&ua)));
            assert!(cache.current.len() + cache.previous.len() <= 4);
            assert!(cache.get(hot).is_some(), "a used entry survives rotations");
        }
        assert!(cache.get("cold/0").is_none());

        let cached = plugin(json!({}));
        let uncached = plugin(json!({"cache_size": 0}));
        for ua in [CHROME_WINDOWS, CHROME_WINDOWS, GOOGLEBOT] {
            assert_eq!(cached.parse(ua).fields, uncached.parse(ua).fields);
        }
        let long = format!("{CHROME_WINDOWS} {}", "x".repeat(MAX_CACHED_UA_BYTES));
        cached.parse(&long);
        let cache = cached.cache.as_ref().unwrap().lock().unwrap();
        assert_eq!(cache.current.len(), 2, "long user agents are not cached");
    }
}
