//! Finding e-mail addresses and phone numbers in text, hand-written (no
//! regex: small and fast).
//!
//! The scanner reads text as *units*: a byte, or a `%XX` escape standing for
//! the byte it encodes. So `a%40b.com` (as found in query strings) is an
//! address just like `a@b.com`, and a match covers the raw text it came from.

/// One unit of text: the raw bytes `start..end` stand for `byte`.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    byte: u8,
}

/// What a match is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
}

/// One match: raw bytes `start..end` of the scanned text, and the value it
/// stands for, normalized (addresses decoded and lowercased; phone numbers
/// as `+` and digits) so that one address always hashes the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// What was found.
    pub kind: Kind,
    /// First raw byte.
    pub start: usize,
    /// Past the last raw byte.
    pub end: usize,
    /// The normalized value.
    pub normalized: String,
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn units(text: &str) -> Vec<Unit> {
    let bytes = text.as_bytes();
    let mut units = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2]))
        {
            units.push(Unit {
                start: i,
                end: i + 3,
                byte: high << 4 | low,
            });
            i += 3;
            continue;
        }
        units.push(Unit {
            start: i,
            end: i + 1,
            byte: bytes[i],
        });
        i += 1;
    }
    units
}

/// Whether `text` may hold an address (an `@`, plain or `%40`): the cheap
/// test before any work.
fn may_hold_email(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.contains(&b'@')
        || bytes
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'4' && w[2] == b'0')
}

fn is_local(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-')
}

/// `name.example`: at least two non-empty labels, the last one (the TLD)
/// two letters or more.
fn valid_domain(domain: &[u8]) -> bool {
    let mut labels = domain.split(|&b| b == b'.');
    let Some(tld) = domain.split(|&b| b == b'.').next_back() else {
        return false;
    };
    domain.contains(&b'.')
        && labels.all(|label| !label.is_empty())
        && tld.len() >= 2
        && tld.iter().all(u8::is_ascii_alphabetic)
}

fn decoded(units: &[Unit]) -> Vec<u8> {
    units.iter().map(|unit| unit.byte).collect()
}

fn find_emails(units: &[Unit], matches: &mut Vec<Match>) {
    let mut floor = 0; // units before this belong to an earlier match
    let mut at = 0;
    while at < units.len() {
        if units[at].byte != b'@' {
            at += 1;
            continue;
        }
        let mut start = at;
        while start > floor && is_local(units[start - 1].byte) {
            start -= 1;
        }
        while start < at && units[start].byte == b'.' {
            start += 1;
        }
        let mut end = at + 1;
        while end < units.len() && is_domain(units[end].byte) {
            end += 1;
        }
        while end > at + 1 && matches!(units[end - 1].byte, b'.' | b'-') {
            end -= 1;
        }
        let domain = decoded(&units[at + 1..end]);
        if start == at || !valid_domain(&domain) {
            at += 1;
            continue;
        }
        let normalized = String::from_utf8_lossy(&decoded(&units[start..end])).to_ascii_lowercase();
        matches.push(Match {
            kind: Kind::Email,
            start: units[start].start,
            end: units[end - 1].end,
            normalized,
        });
        floor = end;
        at = end;
    }
}

fn is_phone_separator(byte: u8) -> bool {
    matches!(byte, b' ' | b'-' | b'.' | b'(' | b')' | b'+')
}

fn is_phone_unit(byte: u8) -> bool {
    byte.is_ascii_digit() || is_phone_separator(byte)
}

/// A run of separators that parts two numbers rather than two groups of one
/// number: two spaces or more, or a space next to `-`, `.` or `+`
/// (`06 12 34 56 78 - 06 98 76 54 32`, `... 2024. 06 12 ...`).
fn parts_numbers(separators: &[u8]) -> bool {
    let spaces = separators.iter().filter(|&&b| b == b' ').count();
    spaces >= 2 || (spaces == 1 && separators.iter().any(|&b| matches!(b, b'-' | b'.' | b'+')))
}

fn find_phones(units: &[Unit], matches: &mut Vec<Match>) {
    let mut at = 0;
    while at < units.len() {
        if !is_phone_unit(units[at].byte) {
            at += 1;
            continue;
        }
        let mut end = at;
        while end < units.len() && is_phone_unit(units[end].byte) {
            end += 1;
        }
        // Split the region where a run of separators between two digits
        // parts two numbers.
        let mut piece_start = at;
        let mut seen_digit = false;
        let mut i = at;
        while i < end {
            if units[i].byte.is_ascii_digit() {
                seen_digit = true;
                i += 1;
                continue;
            }
            let run_start = i;
            while i < end && !units[i].byte.is_ascii_digit() {
                i += 1;
            }
            if seen_digit && i < end && parts_numbers(&decoded(&units[run_start..i])) {
                check_phone(units, piece_start, run_start, matches);
                piece_start = i;
                seen_digit = false;
            }
        }
        check_phone(units, piece_start, end, matches);
        at = end;
    }
}

/// Whether `units[from..to]` (digits and separators) is a phone number;
/// pushes the match if so.
fn check_phone(units: &[Unit], from: usize, to: usize, matches: &mut Vec<Match>) {
    let Some(first_digit) = (from..to).find(|&i| units[i].byte.is_ascii_digit()) else {
        return;
    };
    let Some(last_digit) = (from..to).rev().find(|&i| units[i].byte.is_ascii_digit()) else {
        return;
    };
    let plus = (from..first_digit).rev().find(|&i| units[i].byte == b'+');
    let mut start = plus.unwrap_or(first_digit);
    if plus.is_none() && first_digit > from && units[first_digit - 1].byte == b'(' {
        start = first_digit - 1;
    }
    let end = last_digit + 1;

    // Glued to a word (`id1234567890`, `12345678901@example.com`,
    // `2024-01-15 10:30`): not a phone number.
    let glued_before = start > 0 && {
        let byte = units[start - 1].byte;
        byte.is_ascii_alphanumeric() || byte == b'_'
    };
    let glued_after = end < units.len() && {
        let byte = units[end].byte;
        byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'@' | b':' | b'%')
    };
    if glued_before || glued_after {
        return;
    }

    let body = decoded(&units[first_digit..end]);
    let digits: String = body
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|&b| char::from(b))
        .collect();
    let separators = body.len() - digits.len();
    let plausible = if plus.is_some() {
        (8..=15).contains(&digits.len())
    } else {
        (10..=15).contains(&digits.len()) && separators > 0
    };
    // Dotted quads are IP addresses, not phone numbers.
    let groups: Vec<&[u8]> = body
        .split(|b| !b.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let dotted_quad = groups.len() == 4
        && groups.iter().all(|g| g.len() <= 3)
        && body.iter().all(|&b| b.is_ascii_digit() || b == b'.');
    if !plausible || dotted_quad {
        return;
    }
    let normalized = if plus.is_some() {
        format!("+{digits}")
    } else {
        digits
    };
    matches.push(Match {
        kind: Kind::Phone,
        start: units[start].start,
        end: units[end - 1].end,
        normalized,
    });
}

/// The e-mail addresses in `text`, in order.
pub fn emails(text: &str) -> Vec<Match> {
    let mut matches = Vec::new();
    if may_hold_email(text) {
        find_emails(&units(text), &mut matches);
    }
    matches
}

/// The phone numbers in `text`, in order: a leading `+` and 8 to 15 digits,
/// or 10 to 15 digits with separators (space, `-`, `.`, parentheses), not
/// glued to letters. Bare digit runs (ids, timestamps) are not matched.
pub fn phones(text: &str) -> Vec<Match> {
    let mut matches = Vec::new();
    if text.bytes().any(|b| b.is_ascii_digit()) {
        find_phones(&units(text), &mut matches);
    }
    matches
}

/// If the whole of `text` (trimmed) is one e-mail address, its normalized
/// form.
pub fn whole_email(text: &str) -> Option<String> {
    let trimmed = text.trim();
    match emails(trimmed).as_slice() {
        [only] if only.start == 0 && only.end == trimmed.len() => Some(only.normalized.clone()),
        _ => None,
    }
}

/// Percent-decodes `text` (and `+` as a space, as in query strings).
pub fn decode_query_component(text: &str) -> String {
    let bytes: Vec<u8> = units(text)
        .iter()
        .map(|unit| {
            if unit.byte == b'+' && unit.end - unit.start == 1 {
                b' '
            } else {
                unit.byte
            }
        })
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<String> {
        emails(text).into_iter().map(|m| m.normalized).collect()
    }

    fn phone_spans(text: &str) -> Vec<&str> {
        phones(text).iter().map(|m| &text[m.start..m.end]).collect()
    }

    #[test]
    fn finds_plain_addresses() {
        assert_eq!(
            found("mail Jane.Doe+tag@Example.CO.uk now"),
            ["jane.doe+tag@example.co.uk"]
        );
        assert_eq!(found("a@b.com,c@d.org."), ["a@b.com", "c@d.org"]);
        assert_eq!(found("<x_y-z@sub.domain.io>"), ["x_y-z@sub.domain.io"]);
    }

    #[test]
    fn finds_encoded_addresses_with_raw_spans() {
        let text = "?email=john%2Bspam%40example.com&x=1";
        let m = emails(text);
        assert_eq!(m.len(), 1);
        assert_eq!(&text[m[0].start..m[0].end], "john%2Bspam%40example.com");
        assert_eq!(m[0].normalized, "john+spam@example.com");
        assert_eq!(found("u=a%40B%2Ecom"), ["a@b.com"]);
    }

    #[test]
    fn ignores_non_addresses() {
        assert!(found("user@localhost").is_empty());
        assert!(found("@handle and a@ and @b.com").is_empty());
        assert!(found("x@y.c0m").is_empty());
        assert!(found("100% sure, 40 items").is_empty());
        assert!(found("price %40 off").is_empty());
    }

    #[test]
    fn finds_phone_numbers() {
        assert_eq!(
            phone_spans("call +33 6 12 34 56 78 now"),
            ["+33 6 12 34 56 78"]
        );
        assert_eq!(phone_spans("(555) 123-4567"), ["(555) 123-4567"]);
        assert_eq!(phone_spans("+14155552671"), ["+14155552671"]);
        assert_eq!(phone_spans("?tel=%2B33612345678&a=1"), ["%2B33612345678"]);
        assert_eq!(
            phone_spans("06 12 34 56 78 - 06 98 76 54 32"),
            ["06 12 34 56 78", "06 98 76 54 32"]
        );
        assert_eq!(phones("+1 (555) 123-4567")[0].normalized, "+15551234567");
    }

    #[test]
    fn leaves_numbers_that_are_not_phones() {
        assert!(phone_spans("ts 1699999999999").is_empty(), "bare digits");
        assert!(phone_spans("2024-01-15 10:30").is_empty(), "date and time");
        assert!(phone_spans("2024-01-15").is_empty(), "date");
        assert!(phone_spans("from 192.168.100.200").is_empty(), "IPv4");
        assert!(
            phone_spans("order id1234-567-8901").is_empty(),
            "glued to a word"
        );
        assert!(phone_spans("1 234 567.89 EUR").is_empty(), "amount");
        assert!(
            phone_spans("ab12345678901234cd").is_empty(),
            "inside a hash"
        );
    }

    #[test]
    fn whole_email_only_for_a_lone_address() {
        assert_eq!(whole_email(" A@B.com "), Some("a@b.com".into()));
        assert_eq!(whole_email("to a@b.com"), None);
    }

    #[test]
    fn decodes_query_components() {
        assert_eq!(decode_query_component("a%40b.com+x"), "a@b.com x");
        assert_eq!(decode_query_component("100%"), "100%");
    }
}
