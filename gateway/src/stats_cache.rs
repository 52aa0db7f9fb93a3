//! The statistics answer cache: the same query within
//! `analytics.cache_ttl_secs` is answered from memory, unless events were
//! stored for its project since (this instance's ingestion clears them;
//! events ingested by another instance sharing PostgreSQL show after at
//! most the time to live). Bounded to `analytics.cache_entries` answers:
//! when full, expired answers go first, then the oldest.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

struct Entry {
    at: Instant,
    generation: u64,
    answer: Arc<dyn Any + Send + Sync>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<(Uuid, String), Entry>,
    generations: HashMap<Uuid, u64>,
}

/// Answers by project and query text.
pub struct StatsCache {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for StatsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl StatsCache {
    /// A cache keeping `capacity` answers for `ttl`; off when either is 0.
    #[must_use]
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn off(&self) -> bool {
        self.ttl.is_zero() || self.capacity == 0
    }

    /// The project's current generation (before computing an answer).
    #[must_use]
    pub fn generation(&self, project: Uuid) -> u64 {
        self.lock().generations.get(&project).copied().unwrap_or(0)
    }

    /// The answer to `query` on `project`, if cached, fresh, and no
    /// events were stored for the project since.
    #[must_use]
    pub fn get<T: Clone + Send + Sync + 'static>(&self, project: Uuid, query: &str) -> Option<T> {
        if self.off() {
            return None;
        }
        let inner = self.lock();
        let generation = inner.generations.get(&project).copied().unwrap_or(0);
        let e = inner.entries.get(&(project, query.to_owned()))?;
        if e.generation != generation || e.at.elapsed() > self.ttl {
            return None;
        }
        e.answer.downcast_ref::<T>().cloned()
    }

    /// Keeps `answer`, computed at project generation `generation`.
    pub fn put<T: Send + Sync + 'static>(
        &self,
        project: Uuid,
        query: String,
        generation: u64,
        answer: T,
    ) {
        if self.off() {
            return;
        }
        let mut inner = self.lock();
        if inner.entries.len() >= self.capacity {
            let ttl = self.ttl;
            inner.entries.retain(|_, e| e.at.elapsed() <= ttl);
            if inner.entries.len() >= self.capacity
                && let Some(oldest) = inner
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.at)
                    .map(|(k, _)| k.clone())
            {
                inner.entries.remove(&oldest);
            }
        }
        inner.entries.insert(
            (project, query),
            Entry {
                at: Instant::now(),
                generation,
                answer: Arc::new(answer),
            },
        );
    }

    /// Events were stored for `project`: its answers are stale.
    pub fn invalidate(&self, project: Uuid) {
        if self.off() {
            return;
        }
        let mut inner = self.lock();
        *inner.generations.entry(project).or_insert(0) += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_until_new_events_or_expiry() {
        let cache = StatsCache::new(Duration::from_millis(200), 2);
        let p = Uuid::now_v7();
        let g = cache.generation(p);
        cache.put(p, "q".into(), g, 7u64);
        assert_eq!(cache.get::<u64>(p, "q"), Some(7));
        assert_eq!(cache.get::<u64>(p, "other"), None);
        assert_eq!(cache.get::<u64>(Uuid::now_v7(), "q"), None);
        // An answer computed before new events is not kept as fresh.
        cache.invalidate(p);
        assert_eq!(cache.get::<u64>(p, "q"), None);
        cache.put(p, "q".into(), g, 8u64);
        assert_eq!(cache.get::<u64>(p, "q"), None);
        let g = cache.generation(p);
        cache.put(p, "q".into(), g, 9u64);
        assert_eq!(cache.get::<u64>(p, "q"), Some(9));
        // Bounded: a third answer pushes out the oldest.
        cache.put(p, "a".into(), g, 1u64);
        cache.put(p, "b".into(), g, 2u64);
        assert_eq!(cache.get::<u64>(p, "q"), None);
        assert_eq!(cache.get::<u64>(p, "b"), Some(2));
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(cache.get::<u64>(p, "b"), None);
    }

    #[test]
    fn a_zero_ttl_is_off() {
        let cache = StatsCache::new(Duration::ZERO, 10);
        let p = Uuid::now_v7();
        cache.put(p, "q".into(), 0, 1u64);
        assert_eq!(cache.get::<u64>(p, "q"), None);
    }
}
