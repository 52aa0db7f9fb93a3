//! What queries break down and filter on: the rolled-up dimensions and
//! JSON property paths, and how each is read from an event.
//!
//! Dimension values come from the enrichment the built-in plugins write
//! (`referrer`: `page_path`, `referrer_source`, `referrer_host`, `utm_*`;
//! `geoip`: `country`, `region`, `city`; `user_agent`: `browser`, `os`,
//! `device_type`). The page of an event is its `page_path`, or else its
//! URL, as for sessions. A missing or empty value is "none".

use serde_json::{Map, Value};

/// A dimension kept in the hourly rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// The page (`page_path`, else the URL).
    Page,
    /// The page a session started on (session metrics).
    EntryPage,
    /// The page a session ended on (session metrics).
    ExitPage,
    /// `direct`, `search`, `social`, `email`, `internal` or `other`.
    ReferrerSource,
    /// The referrer's host name.
    ReferrerHost,
    /// `utm_source` of the page URL.
    UtmSource,
    /// `utm_medium`.
    UtmMedium,
    /// `utm_campaign`.
    UtmCampaign,
    /// ISO country code.
    Country,
    /// Region (subdivision) name.
    Region,
    /// City name.
    City,
    /// Browser family.
    Browser,
    /// Operating system family.
    Os,
    /// `desktop`, `mobile`, `tablet`, `bot`...
    Device,
    /// The event's name.
    Event,
}

impl Dim {
    /// Every rolled-up dimension.
    pub const ALL: [Dim; 15] = [
        Dim::Page,
        Dim::EntryPage,
        Dim::ExitPage,
        Dim::ReferrerSource,
        Dim::ReferrerHost,
        Dim::UtmSource,
        Dim::UtmMedium,
        Dim::UtmCampaign,
        Dim::Country,
        Dim::Region,
        Dim::City,
        Dim::Browser,
        Dim::Os,
        Dim::Device,
        Dim::Event,
    ];

    /// The name used in the API.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Dim::Page => "page",
            Dim::EntryPage => "entry_page",
            Dim::ExitPage => "exit_page",
            Dim::ReferrerSource => "referrer_source",
            Dim::ReferrerHost => "referrer_host",
            Dim::UtmSource => "utm_source",
            Dim::UtmMedium => "utm_medium",
            Dim::UtmCampaign => "utm_campaign",
            Dim::Country => "country",
            Dim::Region => "region",
            Dim::City => "city",
            Dim::Browser => "browser",
            Dim::Os => "os",
            Dim::Device => "device",
            Dim::Event => "event",
        }
    }

    /// The number stored in `rollups.dim` (0 is the totals row).
    #[must_use]
    pub fn code(self) -> i16 {
        // Stable: 1 + the position in ALL, which only ever grows at the end.
        Dim::ALL
            .iter()
            .position(|d| *d == self)
            .map_or(0, |i| i16::try_from(i + 1).unwrap_or(0))
    }

    /// Whether the dimension belongs to sessions rather than events: its
    /// numbers are those of the sessions, attributed to their start.
    #[must_use]
    pub fn per_session(self) -> bool {
        matches!(self, Dim::EntryPage | Dim::ExitPage)
    }

    /// The enrichment key the dimension reads, for event dimensions read
    /// from enrichment.
    pub(crate) fn enrichment_key(self) -> Option<&'static str> {
        Some(match self {
            Dim::ReferrerSource => "referrer_source",
            Dim::ReferrerHost => "referrer_host",
            Dim::UtmSource => "utm_source",
            Dim::UtmMedium => "utm_medium",
            Dim::UtmCampaign => "utm_campaign",
            Dim::Country => "country",
            Dim::Region => "region",
            Dim::City => "city",
            Dim::Browser => "browser",
            Dim::Os => "os",
            Dim::Device => "device_type",
            Dim::Page | Dim::EntryPage | Dim::ExitPage | Dim::Event => return None,
        })
    }
}

/// What a query breaks down or filters on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// A rolled-up dimension.
    Rolled(Dim),
    /// A JSON path into the event's properties, e.g. `properties.model`
    /// is `["model"]` (read from raw events).
    Property(Vec<String>),
}

/// Longest property path, in segments.
const MAX_PATH: usize = 8;

impl Dimension {
    /// Parses `page`, `country`... or `properties.a.b`.
    ///
    /// # Errors
    /// A message naming what is accepted.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(d) = Dim::ALL.iter().find(|d| d.name() == s) {
            return Ok(Dimension::Rolled(*d));
        }
        if let Some(path) = s.strip_prefix("properties.") {
            let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
            if segments.len() <= MAX_PATH
                && segments.iter().all(|s| {
                    (1..=200).contains(&s.chars().count())
                        && !s.chars().any(|c| c == ':' || c.is_control())
                })
            {
                return Ok(Dimension::Property(segments));
            }
            return Err(format!(
                "`{s}` is not a property path: write properties.NAME[.NAME...], at most \
                 {MAX_PATH} names of 1 to 200 characters without `:` or control characters"
            ));
        }
        Err(format!(
            "unknown dimension `{s}`: one of {}, or properties.NAME",
            Dim::ALL.map(Dim::name).join(", ")
        ))
    }

    /// The API name.
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Dimension::Rolled(d) => d.name().to_owned(),
            Dimension::Property(p) => format!("properties.{}", p.join(".")),
        }
    }

    /// The rolled-up dimension, if it is one.
    #[must_use]
    pub fn rolled(&self) -> Option<Dim> {
        match self {
            Dimension::Rolled(d) => Some(*d),
            Dimension::Property(_) => None,
        }
    }

    /// Whether its numbers are those of sessions (entry and exit page).
    #[must_use]
    pub fn per_session(&self) -> bool {
        self.rolled().is_some_and(Dim::per_session)
    }
}

/// An event as the aggregation reads it.
#[derive(Debug, Clone, Default)]
pub struct EventFacts {
    /// Insertion order (ties of `timestamp`).
    pub seq: i64,
    /// Event name.
    pub name: String,
    /// Client time, ms.
    pub timestamp: i64,
    /// Hash of the visitor (distinct id, else visitor id, else IP hash).
    pub visitor: Option<u64>,
    /// Session id.
    pub session_id: Option<String>,
    /// Page URL.
    pub url: Option<String>,
    /// Enrichment fields.
    pub enrichment: Map<String, Value>,
    /// Properties, when the query needs them.
    pub properties: Option<Map<String, Value>>,
}

impl EventFacts {
    /// The page: `page_path`, else the URL.
    #[must_use]
    pub fn page(&self) -> Option<&str> {
        self.enrichment
            .get("page_path")
            .and_then(Value::as_str)
            .or(self.url.as_deref())
            .filter(|p| !p.is_empty())
    }

    /// Whether this is a page view.
    #[must_use]
    pub fn is_pageview(&self) -> bool {
        crate::store::sessions::PAGEVIEW_NAMES.contains(&self.name.as_str())
    }

    /// The event's value of an event dimension (`None` for entry and exit
    /// page, which belong to sessions).
    #[must_use]
    pub fn value(&self, dim: &Dimension) -> Option<String> {
        match dim {
            Dimension::Rolled(d) => self.rolled(*d).map(std::borrow::Cow::into_owned),
            Dimension::Property(path) => {
                let mut v = self.properties.as_ref()?.get(&path[0])?;
                for seg in &path[1..] {
                    v = v.as_object()?.get(seg)?;
                }
                text(v).map(std::borrow::Cow::into_owned)
            }
        }
    }

    /// The value of a rolled-up event dimension, borrowed where it can be
    /// (what [`EventFacts::value`] gives; none for session dimensions).
    #[must_use]
    pub fn rolled(&self, dim: Dim) -> Option<std::borrow::Cow<'_, str>> {
        match dim {
            Dim::Page => self.page().map(std::borrow::Cow::Borrowed),
            Dim::Event => Some(std::borrow::Cow::Borrowed(self.name.as_str())),
            d => d
                .enrichment_key()
                .and_then(|k| self.enrichment.get(k))
                .and_then(text),
        }
    }
}

/// A JSON value as a dimension value: strings as they are, numbers and
/// booleans as JSON text, objects and arrays as compact JSON; null and
/// empty strings are none.
fn text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        other => Some(std::borrow::Cow::Owned(other.to_string())),
    }
}

/// A session as the aggregation reads it (a row of `sessions`).
#[derive(Debug, Clone, Default)]
pub struct SessionFacts {
    /// The session id.
    pub session_id: String,
    /// Earliest event time, ms.
    pub started_at: i64,
    /// Duration, ms.
    pub duration_ms: i64,
    /// Events in it.
    pub events: i64,
    /// Page views in it.
    pub pageviews: i64,
    /// At most one page view.
    pub bounce: bool,
    /// Entry page.
    pub entry_page: Option<String>,
    /// Exit page.
    pub exit_page: Option<String>,
}

impl SessionFacts {
    /// The session's value of a session dimension.
    #[must_use]
    pub fn value(&self, dim: Dim) -> Option<String> {
        match dim {
            Dim::EntryPage => self.entry_page.clone(),
            Dim::ExitPage => self.exit_page.clone(),
            _ => None,
        }
        .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dimensions_parse_and_codes_are_stable() {
        assert_eq!(
            Dimension::parse("country"),
            Ok(Dimension::Rolled(Dim::Country))
        );
        assert_eq!(
            Dimension::parse("properties.a.b"),
            Ok(Dimension::Property(vec!["a".into(), "b".into()]))
        );
        let err = Dimension::parse("colour").unwrap_err();
        assert!(err.contains("unknown dimension `colour`") && err.contains("entry_page"));
        assert!(Dimension::parse("properties.").is_err());
        assert!(Dimension::parse("properties.a..b").is_err());
        // Stored codes: never renumbered.
        assert_eq!(Dim::Page.code(), 1);
        assert_eq!(Dim::Event.code(), 15);
    }

    #[test]
    fn values_come_from_enrichment_url_and_properties() {
        let e = EventFacts {
            name: "$pageview".into(),
            url: Some("https://x.test/a?b=1".into()),
            enrichment: json!({"country": "DE", "device_type": "mobile", "bot": false})
                .as_object()
                .cloned()
                .unwrap(),
            properties: json!({"model": "m1", "n": 3, "o": {"k": "v"}, "e": ""})
                .as_object()
                .cloned(),
            ..EventFacts::default()
        };
        let v = |s: &str| e.value(&Dimension::parse(s).unwrap());
        assert_eq!(v("page").as_deref(), Some("https://x.test/a?b=1"));
        assert_eq!(v("country").as_deref(), Some("DE"));
        assert_eq!(v("device").as_deref(), Some("mobile"));
        assert_eq!(v("event").as_deref(), Some("$pageview"));
        assert_eq!(v("city"), None);
        assert_eq!(v("properties.model").as_deref(), Some("m1"));
        assert_eq!(v("properties.n").as_deref(), Some("3"));
        assert_eq!(v("properties.o.k").as_deref(), Some("v"));
        assert_eq!(v("properties.e"), None);
        assert_eq!(v("properties.missing.deep"), None);
        assert!(e.is_pageview());
    }
}
