//! Offline source: MaxMind-format (`.mmdb`) databases, opened once per
//! process and shared.
//!
//! A database is read whole into memory (not memory-mapped: a file replaced
//! in place under a mapping would crash the process, and the crate's `mmap`
//! feature needs `unsafe`). Readers are kept in a process-wide registry of
//! weak references keyed by canonical path, size and modification time, so
//! rebuilding a pipeline while the old one is alive reuses the reader, and
//! an updated file (new size or mtime) is loaded on the next rebuild. The
//! memory is freed when the last plugin using it is dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::SystemTime;

use maxminddb::Reader;
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use super::NAME;

/// One open database.
pub(super) struct Db {
    path: PathBuf,
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("database_type", &self.reader.metadata().database_type)
            .finish_non_exhaustive()
    }
}

/// Identifies one version of a file on disk.
#[derive(Clone, PartialEq, Eq, Hash)]
struct FileId {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

static OPEN: LazyLock<Mutex<HashMap<FileId, Weak<Db>>>> = LazyLock::new(Mutex::default);

/// The shared reader for `path`, opening it when no live plugin has it.
///
/// `None`, after a warning naming the path and the config `field`, when
/// the file is missing, unreadable or not a MaxMind database.
pub(super) fn open_shared(path: &Path, field: &str) -> Option<Arc<Db>> {
    let id = match file_id(path) {
        Ok(id) => id,
        Err(error) => {
            warn!(plugin = NAME, field, path = %path.display(), %error,
                "GeoIP database cannot be read; geoip goes on without it");
            return None;
        }
    };
    // Held while reading so that pipelines built at the same time wait for
    // one load instead of each reading the file.
    let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
    open.retain(|_, db| db.strong_count() > 0);
    if let Some(db) = open.get(&id).and_then(Weak::upgrade) {
        return Some(db);
    }
    match Reader::open_readfile(&id.path) {
        Ok(reader) => {
            info!(plugin = NAME, field, path = %id.path.display(),
                database_type = %reader.metadata().database_type,
                build_epoch = reader.metadata().build_epoch, "GeoIP database loaded");
            let db = Arc::new(Db {
                path: id.path.clone(),
                reader,
            });
            open.insert(id, Arc::downgrade(&db));
            Some(db)
        }
        Err(error) => {
            warn!(plugin = NAME, field, path = %path.display(), %error,
                "not a readable MaxMind database; geoip goes on without it");
            None
        }
    }
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let path = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&path)?;
    Ok(FileId {
        path,
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

impl Db {
    /// The enrichment fields this database knows for `ip`: empty when it
    /// has no record, or the record has none of the fields used.
    pub(super) fn lookup(&self, ip: IpAddr) -> Map<String, Value> {
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return Map::new();
        }
        let record = self
            .reader
            .lookup(ip)
            .and_then(|found| found.decode::<Record<'_>>());
        match record {
            Ok(Some(record)) => record.fields(),
            Ok(None) => Map::new(),
            Err(error) => {
                debug!(plugin = NAME, path = %self.path.display(), %error, "GeoIP record unreadable");
                Map::new()
            }
        }
    }
}

/// The parts of a GeoIP2/GeoLite2 City, Country, Enterprise or ASN record
/// that the plugin uses; every part is optional, so any of these layouts
/// decodes.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Record<'a> {
    #[serde(borrow)]
    country: Place<'a>,
    #[serde(borrow)]
    subdivisions: Vec<Place<'a>>,
    #[serde(borrow)]
    city: Place<'a>,
    #[serde(borrow)]
    location: Location<'a>,
    /// Enterprise databases put the AS here.
    #[serde(borrow)]
    traits: AutonomousSystem<'a>,
    /// ASN databases put it at the top.
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Place<'a> {
    iso_code: Option<&'a str>,
    #[serde(borrow)]
    names: Names<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Names<'a> {
    en: Option<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Location<'a> {
    latitude: Option<f64>,
    longitude: Option<f64>,
    time_zone: Option<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AutonomousSystem<'a> {
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<&'a str>,
}

impl Record<'_> {
    fn fields(&self) -> Map<String, Value> {
        let mut out = Map::new();
        let mut text = |key: &str, value: Option<&str>| {
            if let Some(v) = value.filter(|v| !v.is_empty()) {
                out.insert(key.to_owned(), Value::from(v));
            }
        };
        text("country", self.country.iso_code);
        text("country_name", self.country.names.en);
        if let Some(region) = self.subdivisions.first() {
            text("region", region.names.en);
            text("region_code", region.iso_code);
        }
        text("city", self.city.names.en);
        text("timezone", self.location.time_zone);
        let (number, org) = if self.autonomous_system_number.is_some() {
            (
                self.autonomous_system_number,
                self.autonomous_system_organization,
            )
        } else {
            (
                self.traits.autonomous_system_number,
                self.traits.autonomous_system_organization,
            )
        };
        text("as_org", org);
        if let Some(number) = number {
            out.insert("asn".to_owned(), Value::from(number));
        }
        if let (Some(lat), Some(lon)) = (self.location.latitude, self.location.longitude)
            && (-90.0..=90.0).contains(&lat)
            && (-180.0..=180.0).contains(&lon)
        {
            out.insert("latitude".to_owned(), Value::from(lat));
            out.insert("longitude".to_owned(), Value::from(lon));
        }
        out
    }
}
