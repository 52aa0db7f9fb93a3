//! Key lookups for authentication: a key is found by its SHA-256 hash,
//! with a short-lived cache so ingestion does not pay a database lookup
//! per request. The HTTP side (security schemes, rights) is in `auth`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use orrery_core::event::now_ms;
use orrery_core::store::keys::hash_key;
use orrery_core::store::{ApiKey, Store};

use crate::error::{ApiError, ErrorCode};

/// How long a key lookup is trusted. Revocation through this instance's
/// API takes effect at once (the cache is cleared); through another
/// instance sharing the database, within this time.
const CACHE_TTL: Duration = Duration::from_secs(10);
const CACHE_MAX: usize = 100_000;

/// Cache of key lookups by hash; `None` remembers unknown keys.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (Option<ApiKey>, Instant)>>,
}

impl KeyCache {
    /// Forgets everything; called after any key or project change.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<ApiKey>, Instant)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Authenticates a key.
    ///
    /// # Errors
    /// 401 `invalid_key`, `key_revoked` or `key_expired`.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn authenticate(&self, store: &Store, key: &str) -> Result<ApiKey, ApiError> {
        let key = key.trim();
        if !(key.starts_with("pk_") || key.starts_with("sk_") || key.starts_with("xk_")) {
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidKey,
                "unknown API key: keys start with pk_, sk_ or xk_",
            ));
        }
        let hash = hash_key(key);
        let cached = self
            .lock()
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(k, _)| k.clone());
        let found = match cached {
            Some(found) => found,
            None => {
                let found = store.find_key_by_hash(&hash).await?;
                let mut entries = self.lock();
                if entries.len() >= CACHE_MAX {
                    entries.clear();
                }
                entries.insert(hash, (found.clone(), Instant::now()));
                found
            }
        };
        let Some(found) = found else {
            return Err(ApiError::unauthorized(
                ErrorCode::InvalidKey,
                "unknown API key",
            ));
        };
        if found.revoked_at.is_some() {
            return Err(ApiError::unauthorized(
                ErrorCode::KeyRevoked,
                format!("the key {}... was revoked", found.prefix),
            ));
        }
        if !found.is_active(now_ms()) {
            return Err(ApiError::unauthorized(
                ErrorCode::KeyExpired,
                format!("the key {}... expired after rotation", found.prefix),
            ));
        }
        Ok(found)
    }
}
