//! The browser tracker (`sdk/js`), served at `/sdk/tracker.js` and
//! `/tracker.js` from the committed build, so that running Orrery needs no
//! Node. A week of caching, an ETag (a `304` for `If-None-Match`), and any
//! origin may load it (with `integrity` and `crossorigin` too: the SRI
//! hash is `sdk/js/dist/tracker.min.js.sri`, published in the README).

use std::sync::OnceLock;

use poem::http::{StatusCode, header};
use poem::{Endpoint, Request, Response};
use sha2::{Digest, Sha256};

/// The script-tag build (auto-init from `data-*` attributes).
pub const SCRIPT: &[u8] = include_bytes!("../../sdk/js/dist/tracker.min.js");

/// Its Subresource Integrity hash, `sha384-...`, as the build wrote it.
pub fn sri() -> &'static str {
    include_str!("../../sdk/js/dist/tracker.min.js.sri").trim()
}

/// The ETag: a hash of the script.
fn etag() -> &'static str {
    static ETAG: OnceLock<String> = OnceLock::new();
    ETAG.get_or_init(|| format!("\"{}\"", &hex::encode(Sha256::digest(SCRIPT))[..32]))
}

/// The endpoint serving the script.
pub fn endpoint() -> impl Endpoint<Output = Response> {
    poem::get(poem::endpoint::make_sync(|req: Request| {
        let fresh = req
            .header(header::IF_NONE_MATCH)
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag() || t.trim() == "*"));
        let builder = Response::builder()
            .header(header::ETAG, etag())
            .header(header::CACHE_CONTROL, "public, max-age=604800");
        if fresh {
            builder.status(StatusCode::NOT_MODIFIED).finish()
        } else {
            builder
                .content_type("text/javascript; charset=utf-8")
                .body(SCRIPT)
        }
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;

    use base64::Engine;
    use sha2::Sha384;

    use super::*;

    #[test]
    fn the_tracker_stays_under_two_kilobytes_gzipped() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(SCRIPT).unwrap();
        let size = gz.finish().unwrap().len();
        assert!(
            size < 2048,
            "tracker.min.js is {size} bytes gzipped; the budget is 2048"
        );
    }

    #[test]
    fn the_published_sri_hash_is_the_scripts() {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha384::digest(SCRIPT));
        assert_eq!(sri(), format!("sha384-{hash}"));
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(sri()),
            "README.md does not publish the tracker's SRI hash {}",
            sri()
        );
    }
}
