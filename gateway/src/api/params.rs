//! What several resources take and give the same way: display names, page
//! sizes, times, named time ranges, and opaque page cursors. Each input
//! type publishes in the OpenAPI schema exactly the rule it enforces, so
//! generated clients and the server agree on what is valid.

use std::borrow::Cow;

use base64::Engine;
use chrono::DateTime;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type,
};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::Value;
use uuid::Uuid;

use orrery_core::event::json_type;

use crate::error::{ApiError, ErrorCode};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: u64 = 50;
/// Largest page.
pub const MAX_LIMIT: u64 = 1000;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// Implements poem-openapi's `Type` for a newtype published with `schema`.
macro_rules! scalar_type {
    ($ty:ty, $raw:ty, $name:literal, $schema:expr) => {
        impl Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = $raw;
            type RawElementValueType = $raw;

            fn name() -> Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> MetaSchemaRef {
                MetaSchemaRef::Inline(Box::new($schema))
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(&self.0)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }
    };
}
pub(crate) use scalar_type;

/// A display name (of a project, a key, a module), always in a field or
/// parameter called `name`, which its errors name: a JSON string (not a
/// number or a boolean) of 1 to 100 characters, with at least one that is
/// not white space and no control characters (NUL, line breaks, ...).
/// Stored without leading and trailing white space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(pub String);

/// The rule of [`Name`] as a regular expression (JSON Schema `pattern`).
const NAME_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$";

scalar_type!(Name, String, "string(name)", {
    let mut s = MetaSchema::new("string");
    s.min_length = Some(1);
    s.max_length = Some(MAX_NAME_CHARS);
    s.pattern = Some(NAME_PATTERN.to_owned());
    s.description = Some(
        "1 to 100 characters, not all white space, no control characters; \
         stored without leading and trailing white space",
    );
    s
});

impl Name {
    /// Checks a name, answering it trimmed.
    ///
    /// # Errors
    /// What is wrong with it, for a message naming the field.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.chars().any(char::is_control) {
            return Err("must not contain control characters (NUL, line breaks, ...)".into());
        }
        let chars = raw.chars().count();
        let trimmed = raw.trim();
        if trimmed.is_empty() || chars > MAX_NAME_CHARS {
            return Err(format!(
                "must be 1 to {MAX_NAME_CHARS} characters, not all white space"
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl ParseFromJSON for Name {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => {
                Self::parse(&s).map_err(|e| ParseError::custom(format!("`name` {e}")))
            }
            Some(Value::Null) | None => Err(ParseError::custom("`name` is required")),
            Some(other) => Err(ParseError::custom(format!(
                "`name` must be a string, not {}",
                json_type(&other)
            ))),
        }
    }
}

impl ParseFromParameter for Name {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Self::parse(value).map_err(ParseError::custom)
    }
}

impl ToJSON for Name {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// A custom plugin's name, as pipelines name it: 1 to 64 of `a-z`, `0-9`,
/// `_` and `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginName(pub String);

scalar_type!(PluginName, String, "string(plugin-name)", {
    let mut s = MetaSchema::new("string");
    s.min_length = Some(1);
    s.max_length = Some(orrery_plugins::custom::catalog::MAX_NAME_CHARS);
    s.pattern = Some(r"^[a-z][a-z0-9_-]*$".to_owned());
    s.description = Some("1 to 64 of a-z, 0-9, `_` and `-`, starting with a letter");
    s
});

impl ParseFromJSON for PluginName {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => orrery_plugins::custom::catalog::check_name(&s)
                .map(|()| Self(s))
                .map_err(|e| ParseError::custom(format!("`name`: {e}"))),
            Some(Value::Null) | None => Err(ParseError::custom("`name` is required")),
            Some(other) => Err(ParseError::custom(format!(
                "`name` must be a string, not {}",
                json_type(&other)
            ))),
        }
    }
}

impl ParseFromParameter for PluginName {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        orrery_plugins::custom::catalog::check_name(value)
            .map(|()| Self(value.to_owned()))
            .map_err(ParseError::custom)
    }
}

impl ToJSON for PluginName {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// Bytes as base64 text (standard alphabet, padded): a JSON string of at
/// least one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base64(pub Vec<u8>);

scalar_type!(Base64, Vec<u8>, "string(base64)", {
    let mut s = MetaSchema::new("string");
    s.min_length = Some(4);
    s.pattern = Some(
        r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$"
            .to_owned(),
    );
    s.description = Some("bytes, base64 (standard alphabet, padded)");
    s
});

impl ParseFromJSON for Base64 {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        use base64::Engine;
        match value {
            Some(Value::String(s)) => base64::engine::general_purpose::STANDARD
                .decode(s.trim())
                .map_err(|e| ParseError::custom(format!("not base64: {e}")))
                .and_then(|bytes| {
                    if bytes.is_empty() {
                        Err(ParseError::custom("must not be empty"))
                    } else {
                        Ok(Self(bytes))
                    }
                }),
            Some(Value::Null) | None => Err(ParseError::custom("is required")),
            Some(other) => Err(ParseError::custom(format!(
                "must be a base64 string, not {}",
                json_type(&other)
            ))),
        }
    }
}

impl ToJSON for Base64 {
    fn to_json(&self) -> Option<Value> {
        use base64::Engine;
        Some(Value::String(
            base64::engine::general_purpose::STANDARD.encode(&self.0),
        ))
    }
}

/// A JSON string, and only a string: poem-openapi's `String` would take
/// `5` or `true` as `"5"` and `"true"`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Text(pub String);

scalar_type!(Text, String, "string(text)", MetaSchema::new("string"));

impl ParseFromJSON for Text {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(Self(s)),
            Some(Value::Null) | None => Err(ParseError::custom("is required")),
            Some(other) => Err(ParseError::custom(format!(
                "must be a string, not {}",
                json_type(&other)
            ))),
        }
    }
}

impl ToJSON for Text {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// An identifier a client sends (a distinct id, a session id): a string
/// of at most 200 characters, or an integer of at most 64 bits, kept as
/// its decimal text. Describes ingestion's schema; ingestion itself parses
/// events in `orrery_core::event`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident(pub String);

scalar_type!(Ident, String, "ident", {
    let mut text = MetaSchema::new("string");
    text.max_length = Some(200);
    let mut s = MetaSchema::ANY;
    s.any_of = vec![
        MetaSchemaRef::Inline(Box::new(text)),
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("integer", "int64"))),
    ];
    s
});

impl ParseFromJSON for Ident {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Ok(Self(s)),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Self(n.to_string())),
            _ => Err(ParseError::custom("must be a string or a 64-bit integer")),
        }
    }
}

impl ToJSON for Ident {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// When an event happened, as a client sends it: RFC 3339, or integer
/// milliseconds since the Unix epoch, from 2000-01-01 to 24 hours after
/// its arrival. Describes ingestion's schema, like [`Ident`].
#[derive(Debug, Clone, PartialEq)]
pub struct Timestamp(pub Value);

scalar_type!(Timestamp, Value, "timestamp", {
    let date_time = MetaSchema::new_with_format("string", "date-time");
    let mut ms = MetaSchema::new_with_format("integer", "int64");
    ms.minimum = Some(946_684_800_000.0);
    let mut s = MetaSchema::ANY;
    s.any_of = vec![
        MetaSchemaRef::Inline(Box::new(date_time)),
        MetaSchemaRef::Inline(Box::new(ms)),
    ];
    s.description = Some(
        "When it happened: RFC 3339, or integer milliseconds since the Unix epoch; \
         from 2000-01-01 to 24 hours after arrival; the time of arrival when absent",
    );
    s
});

impl ParseFromJSON for Timestamp {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(v @ (Value::String(_) | Value::Number(_))) => Ok(Self(v)),
            _ => Err(ParseError::custom("must be RFC 3339 or milliseconds")),
        }
    }
}

impl ToJSON for Timestamp {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.clone())
    }
}

/// A page size: 1 to 1000, 50 when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub u64);

scalar_type!(Limit, u64, "integer(limit)", {
    let mut s = MetaSchema::new_with_format("integer", "int64");
    s.minimum = Some(1.0);
    s.maximum = Some(MAX_LIMIT as f64);
    s.default = Some(Value::from(DEFAULT_LIMIT));
    s
});

impl Limit {
    fn check(n: u64) -> ParseResult<Self> {
        if (1..=MAX_LIMIT).contains(&n) {
            Ok(Self(n))
        } else {
            Err(ParseError::custom(format!(
                "must be between 1 and {MAX_LIMIT}"
            )))
        }
    }
}

impl ParseFromParameter for Limit {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        let n = value
            .parse::<u64>()
            .map_err(|_| ParseError::custom(format!("must be an integer from 1 to {MAX_LIMIT}")))?;
        Self::check(n)
    }
}

impl ParseFromJSON for Limit {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.as_ref().and_then(Value::as_u64) {
            Some(n) => Self::check(n),
            None => Err(ParseError::custom(format!(
                "must be an integer from 1 to {MAX_LIMIT}"
            ))),
        }
    }
}

impl ToJSON for Limit {
    fn to_json(&self) -> Option<Value> {
        Some(Value::from(self.0))
    }
}

/// The page size asked for, or the default.
pub fn page_limit(limit: Option<Limit>) -> u64 {
    limit.map_or(DEFAULT_LIMIT, |l| l.0)
}

/// Cuts `rows` (fetched with `limit + 1`) to `limit` and answers the
/// position of the next page, made from the last row kept, when there is
/// one.
pub fn next_page<T, P>(rows: &mut Vec<T>, limit: u64, position: impl Fn(&T) -> P) -> Option<P> {
    if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(position)
    } else {
        None
    }
}

/// A point in time given as RFC 3339 (`2026-11-23T16:30:00Z`) or as
/// milliseconds since the Unix epoch; milliseconds inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub i64);

scalar_type!(Time, i64, "string(time)", {
    let date_time = MetaSchema::new_with_format("string", "date-time");
    let mut ms = MetaSchema::new("string");
    ms.pattern = Some("^-?[0-9]{1,15}$".to_owned());
    let mut s = MetaSchema::ANY;
    s.any_of = vec![
        MetaSchemaRef::Inline(Box::new(date_time)),
        MetaSchemaRef::Inline(Box::new(ms)),
    ];
    s.description = Some("RFC 3339 (2026-11-23T16:30:00Z) or milliseconds since the Unix epoch");
    s
});

impl Time {
    /// Parses RFC 3339 or milliseconds.
    ///
    /// # Errors
    /// What is wrong, for a message naming the field.
    pub fn parse(v: &str) -> Result<Self, &'static str> {
        const WRONG: &str = "must be RFC 3339 (2026-11-23T16:30:00Z) or milliseconds";
        let digits = v.strip_prefix('-').unwrap_or(v);
        if !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit()) {
            return v.parse::<i64>().map(Self).map_err(|_| WRONG);
        }
        if !rfc3339_shaped(v.as_bytes()) {
            return Err(WRONG);
        }
        DateTime::parse_from_rfc3339(v)
            .map(|t| Self(t.timestamp_millis()))
            .map_err(|_| WRONG)
    }
}

/// Whether `b` has the shape of an RFC 3339 date-time (chrono then checks
/// the values): chrono alone would also take a space for the `T`.
fn rfc3339_shaped(b: &[u8]) -> bool {
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let date_time = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !date_time {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

impl ParseFromParameter for Time {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Self::parse(value).map_err(ParseError::custom)
    }
}

/// Milliseconds since the epoch as RFC 3339 with milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The list a cursor belongs to: a cursor of one list is refused by the
/// others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CursorKind {
    /// Events.
    Events = 1,
    /// Sessions.
    Sessions = 2,
    /// Dead letters.
    DeadLetters = 3,
}

/// The `cursor` parameter of every list: opaque text this API handed out
/// as `next_cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor(pub String);

const CURSOR_CHARS: (usize, usize) = (48, 2048);

scalar_type!(Cursor, String, "string(cursor)", {
    let mut s = MetaSchema::new("string");
    s.min_length = Some(CURSOR_CHARS.0);
    s.max_length = Some(CURSOR_CHARS.1);
    s.pattern = Some("^[A-Za-z0-9_-]+$".to_owned());
    s.description = Some("the `next_cursor` of the previous page, as it was");
    s
});

impl ParseFromParameter for Cursor {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        let n = value.len();
        if (CURSOR_CHARS.0..=CURSOR_CHARS.1).contains(&n)
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Ok(Self(value.to_owned()))
        } else {
            Err(ParseError::custom("is not a cursor this API returned"))
        }
    }
}

/// The answer to a `cursor` this API did not hand out.
pub fn invalid_cursor() -> ApiError {
    ApiError::bad_request(
        ErrorCode::InvalidCursor,
        "cursor is not one this API returned",
    )
}

/// Seals and opens page cursors, so that they reveal nothing (a cursor of
/// the events list holds the instance-wide arrival sequence, which would
/// tell how many events every tenant sent) and cannot be forged or moved
/// to another project or list. ChaCha20-Poly1305 with a random nonce, under
/// a key derived from the instance secret (`secrets.ip_hash_key`, which
/// instances sharing a database share): a cursor stays valid across
/// restarts and instances.
pub struct Cursors {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Cursors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cursors")
    }
}

const CURSOR_VERSION: u8 = 1;

impl Cursors {
    /// Cursors sealed under a key derived from `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let derived = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
            b"orrery page cursor key v1",
        );
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, derived.as_ref())
            .expect("a 32-byte key is a ChaCha20-Poly1305 key");
        Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    fn aad(kind: CursorKind, project: Uuid) -> [u8; 18] {
        let mut aad = [0u8; 18];
        aad[0] = CURSOR_VERSION;
        aad[1] = kind as u8;
        aad[2..].copy_from_slice(project.as_bytes());
        aad
    }

    /// The cursor for `position` in `kind` of `project`.
    pub fn seal(&self, kind: CursorKind, project: Uuid, position: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system random generator works");
        let mut data = position.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(kind, project)),
                &mut data,
            )
            .expect("a cursor is far below ChaCha20-Poly1305's limit");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// The position sealed in `cursor`.
    ///
    /// # Errors
    /// 400 `invalid_cursor` for anything this instance did not seal for
    /// this list of this project.
    pub fn open(
        &self,
        kind: CursorKind,
        project: Uuid,
        cursor: &Cursor,
    ) -> Result<Vec<u8>, ApiError> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&cursor.0)
            .map_err(|_| invalid_cursor())?;
        if raw.len() < NONCE_LEN {
            return Err(invalid_cursor());
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| invalid_cursor())?;
        let mut data = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(Self::aad(kind, project)), &mut data)
            .map_err(|_| invalid_cursor())?;
        Ok(plain.to_vec())
    }

    /// A cursor holding one sequence number.
    pub fn seal_seq(&self, kind: CursorKind, project: Uuid, seq: i64) -> String {
        self.seal(kind, project, &seq.to_be_bytes())
    }

    /// The sequence number in a cursor made by [`Cursors::seal_seq`].
    ///
    /// # Errors
    /// 400 `invalid_cursor`.
    pub fn open_seq(
        &self,
        kind: CursorKind,
        project: Uuid,
        cursor: &Cursor,
    ) -> Result<i64, ApiError> {
        let bytes = self.open(kind, project, cursor)?;
        let arr: [u8; 8] = bytes.try_into().map_err(|_| invalid_cursor())?;
        Ok(i64::from_be_bytes(arr))
    }
}

/// A query parameter read from text by a parse function, published with a
/// schema that states exactly what the parse function takes.
macro_rules! text_param {
    ($(#[$doc:meta])* $ty:ident($inner:ty), $name:literal, $schema:expr, $parse:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $ty(pub $inner);

        scalar_type!($ty, $inner, $name, $schema);

        impl ParseFromParameter for $ty {
            fn parse_from_parameter(value: &str) -> ParseResult<Self> {
                let parse: fn(&str) -> Result<$inner, String> = $parse;
                parse(value).map(Self).map_err(ParseError::custom)
            }
        }
    };
}
pub(crate) use text_param;

/// A string schema allowing exactly `values`.
pub fn enum_schema(values: impl IntoIterator<Item = &'static str>) -> MetaSchema {
    let mut s = MetaSchema::new("string");
    s.enum_items = values.into_iter().map(Value::from).collect();
    s
}

text_param!(
    /// A named range ending now: `24h`, `7d`, `30d`, `90d`, `12mo` or `all`.
    RangeParam(String),
    "string(range)",
    enum_schema(["24h", "7d", "30d", "90d", "12mo", "all"]),
    |v| orrery_core::analytics::query::named_range(v, 0, None).map(|_| v.to_owned())
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_strings_of_one_to_a_hundred_printable_characters() {
        assert_eq!(Name::parse("  shop  ").unwrap().0, "shop");
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse("").is_err());
        assert!(Name::parse("a\0b").is_err());
        assert!(Name::parse("a\nb").is_err());
        assert!(Name::parse(&"x".repeat(100)).is_ok());
        assert!(Name::parse(&"é".repeat(101)).is_err());
        assert!(Name::parse_from_json(Some(Value::Bool(false))).is_err());
        assert!(Name::parse_from_json(Some(Value::from(5))).is_err());
        assert!(Text::parse_from_json(Some(Value::from(5))).is_err());
    }

    #[test]
    fn times_are_rfc3339_or_milliseconds() {
        assert_eq!(Time::parse("1795000010000").unwrap().0, 1_795_000_010_000);
        assert_eq!(Time::parse("1970-01-01T00:00:01Z").unwrap().0, 1000);
        assert_eq!(Time::parse("1970-01-01T01:00:01+01:00").unwrap().0, 1000);
        for bad in [
            "yesterday",
            "",
            "+5",
            "1e3",
            "2026-13-01T00:00:00Z",
            "2026-01-01",
        ] {
            assert!(Time::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursors_are_opaque_and_bound_to_their_list_and_project() {
        let c = Cursors::new(b"secret");
        let p = Uuid::new_v4();
        // A position long enough that its digits cannot turn up in the
        // cursor's random-looking text by chance (a short one like 42 did,
        // about once in a hundred runs).
        let seq = 9_876_543_210_123;
        let sealed = c.seal_seq(CursorKind::Events, p, seq);
        let cursor = Cursor::parse_from_parameter(&sealed).unwrap();
        assert_eq!(c.open_seq(CursorKind::Events, p, &cursor).unwrap(), seq);
        assert!(!sealed.contains(&seq.to_string()));
        // Two cursors of one position differ (random nonce).
        assert_ne!(sealed, c.seal_seq(CursorKind::Events, p, seq));
        assert!(c.open_seq(CursorKind::Sessions, p, &cursor).is_err());
        assert!(
            c.open_seq(CursorKind::Events, Uuid::new_v4(), &cursor)
                .is_err()
        );
        assert!(
            Cursors::new(b"other")
                .open_seq(CursorKind::Events, p, &cursor)
                .is_err()
        );
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&sealed)
            .unwrap();
        bytes[20] ^= 1;
        let forged = Cursor(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        assert!(c.open_seq(CursorKind::Events, p, &forged).is_err());
    }
}
