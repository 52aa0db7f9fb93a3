//! Orrery's built-in enrichment plugins, one file each.
//!
//! - [`ip_hash`]: mandatory and first; replaces the client IP by a
//!   daily-rotating keyed hash and derives a cookieless visitor id.
//! - [`geoip`]: country, region, city, coordinates, time zone and AS of the
//!   client IP, from MaxMind-format databases and optionally ipinfo.io.
//! - [`user_agent`]: browser, OS, device type (desktop, mobile, tablet,
//!   bot) and bot flag, with uap-core's regexes; can drop bots.
//! - [`referrer`]: source classification (direct, search, social, email,
//!   internal, other), UTM parameters, page host and path.
//! - [`session`]: session ids from the visitor and an inactivity window.
//!
//! [`custom`] hosts users' own plugins (WebAssembly components) next to
//! these.
//!
//! [`Registry`] builds a project's [`orrery_core::pipeline::Pipeline`]
//! from its stage list; registration is one explicit line per plugin there.

pub mod custom;
pub mod geoip;
pub mod ip_hash;
pub mod referrer;
pub mod registry;
pub mod session;
pub mod user_agent;

pub use registry::{Registry, RegistryConfig, SpecError};
