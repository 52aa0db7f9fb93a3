//! Orrery's built-in enrichment plugins, one file each.
//!
//! - [`ip_hash`]: mandatory and first; replaces the client IP by a
//!   daily-rotating keyed hash and derives a cookieless visitor id.
//! - [`referrer`]: source classification (direct, search, social, email,
//!   internal, other), UTM parameters, page host and path.
//! - [`geoip`]: country, region, city, coordinates, time zone and AS of the
//!   client IP, from MaxMind-format databases and optionally ipinfo.io.
//! - [`user_agent`]: browser, OS, device type (desktop, mobile, tablet,
//!   bot) and bot flag, with uap-core's regexes; can drop bots.
//!
//! Registration is one explicit line per plugin in [`default_pipeline`].

use std::sync::Arc;
use std::time::Duration;

use orrery_core::pipeline::{Pipeline, Stage};
use orrery_core::plugin::{OnError, PluginError};

pub mod geoip;
pub mod ip_hash;
pub mod referrer;
pub mod user_agent;

/// Time limit of one plugin call on a batch, by default.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_millis(100);

/// The pipeline every project gets: `ip_hash` first, then `referrer`.
///
/// # Errors
/// [`PluginError::Config`] when the IP-hash secret is unusable.
pub fn default_pipeline(ip_hash_secret: &[u8]) -> Result<Pipeline, PluginError> {
    let ip_hash = ip_hash::IpHash::from_config(ip_hash_secret, ip_hash::IpHashConfig::default())?;
    let referrer = referrer::Referrer::from_config(referrer::ReferrerConfig::default())?;
    Ok(Pipeline::new(vec![
        Stage {
            plugin: Arc::new(ip_hash),
            // The IP must never be stored: an event ip_hash cannot process
            // is not kept without its hash.
            on_error: OnError::Drop,
            timeout: DEFAULT_PLUGIN_TIMEOUT,
        },
        Stage {
            plugin: Arc::new(referrer),
            on_error: OnError::Skip,
            timeout: DEFAULT_PLUGIN_TIMEOUT,
        },
    ]))
}
