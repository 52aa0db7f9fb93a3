//! The event a plugin sees, and its verdict on it.

use serde_json::Value;

use crate::JsonMap;

/// One tracking event, as the pipeline holds it.
///
/// `properties` and `enrichment` arrive as JSON text from the host and are
/// [`JsonMap`]s: they dereference to a [`serde_json::Map`], are parsed only
/// when the plugin first looks at them, and go back to the host as the
/// original text unless mutably accessed (so a plugin that ignores them pays
/// nothing for them). Build events for tests with [`Event::new`] and the
/// `with_*` setters. Equality compares the maps' contents, not their text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    /// The event's id (a UUID, as text). Read-only: the gateway keeps its own.
    pub id: String,
    /// The event name, e.g. `pageview`.
    pub name: String,
    /// The user, when known.
    pub distinct_id: Option<String>,
    /// The session, when known.
    pub session_id: Option<String>,
    /// When it happened, milliseconds since the Unix epoch. Read-only.
    pub timestamp_ms: i64,
    /// When the gateway received it, milliseconds since the Unix epoch.
    /// Read-only.
    pub received_at_ms: i64,
    /// The page URL.
    pub url: Option<String>,
    /// The referrer URL.
    pub referrer: Option<String>,
    /// The client's user agent.
    pub user_agent: Option<String>,
    /// The anonymous visitor id (a salted hash; never the raw IP).
    pub visitor_id: Option<String>,
    /// The event's properties, as sent by the client (a lazily parsed
    /// [`JsonMap`]: use it as a `serde_json::Map`).
    pub properties: JsonMap,
    /// What earlier stages added (`country`, `browser`...); plugins add
    /// their own keys here (a lazily parsed [`JsonMap`]).
    pub enrichment: JsonMap,
}

impl Event {
    /// A new event named `name`, with the nil UUID as id, both timestamps at
    /// [`now_ms`](crate::now_ms) and everything else empty.
    pub fn new(name: impl Into<String>) -> Self {
        let now = crate::now_ms();
        Event {
            id: "00000000-0000-0000-0000-000000000000".to_owned(),
            name: name.into(),
            timestamp_ms: now,
            received_at_ms: now,
            ..Event::default()
        }
    }

    /// Sets the id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the distinct id (the user).
    #[must_use]
    pub fn with_distinct_id(mut self, distinct_id: impl Into<String>) -> Self {
        self.distinct_id = Some(distinct_id.into());
        self
    }

    /// Sets the session id.
    #[must_use]
    pub fn with_session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Sets when the event happened (ms since the Unix epoch).
    #[must_use]
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = timestamp_ms;
        self
    }

    /// Sets when the gateway received the event (ms since the Unix epoch).
    #[must_use]
    pub fn with_received_at_ms(mut self, received_at_ms: i64) -> Self {
        self.received_at_ms = received_at_ms;
        self
    }

    /// Sets the page URL.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Sets the referrer URL.
    #[must_use]
    pub fn with_referrer(mut self, referrer: impl Into<String>) -> Self {
        self.referrer = Some(referrer.into());
        self
    }

    /// Sets the user agent.
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Sets the visitor id.
    #[must_use]
    pub fn with_visitor_id(mut self, visitor_id: impl Into<String>) -> Self {
        self.visitor_id = Some(visitor_id.into());
        self
    }

    /// Sets one property (`serde_json::json!` builds nested values).
    #[must_use]
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// Sets one enrichment key.
    #[must_use]
    pub fn with_enrichment(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.enrichment.insert(key.into(), value.into());
        self
    }
}

/// What a plugin decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the event, with the plugin's changes.
    Keep,
    /// Drop the event on purpose (a filter). The gateway counts drops by
    /// reason, so keep reasons few and fixed (name the rule, not the value).
    Drop(String),
    /// The plugin could not process the event; the stage's `on_error`
    /// policy applies.
    Fail(String),
}
