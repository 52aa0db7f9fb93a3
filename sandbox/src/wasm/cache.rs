//! A small least-recently-used map for compiled programs.

use std::collections::HashMap;
use std::sync::Mutex;

pub(crate) struct Lru<V: Clone> {
    capacity: usize,
    state: Mutex<State<V>>,
}

struct State<V> {
    clock: u64,
    entries: HashMap<String, (u64, V)>,
}

impl<V: Clone> Lru<V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::new(State {
                clock: 0,
                entries: HashMap::new(),
            }),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<V> {
        let mut state = self.state.lock().expect("cache lock");
        state.clock += 1;
        let now = state.clock;
        state.entries.get_mut(key).map(|(used, value)| {
            *used = now;
            value.clone()
        })
    }

    pub(crate) fn insert(&self, key: String, value: V) {
        let mut state = self.state.lock().expect("cache lock");
        state.clock += 1;
        let now = state.clock;
        if !state.entries.contains_key(&key) && state.entries.len() >= self.capacity {
            // O(n) eviction is fine for a cache of tens of entries.
            if let Some(oldest) = state
                .entries
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone())
            {
                state.entries.remove(&oldest);
            }
        }
        state.entries.insert(key, (now, value));
    }

    pub(crate) fn remove(&self, key: &str) {
        self.state.lock().expect("cache lock").entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_least_recently_used() {
        let lru = Lru::new(2);
        lru.insert("a".into(), 1);
        lru.insert("b".into(), 2);
        assert_eq!(lru.get("a"), Some(1));
        lru.insert("c".into(), 3);
        assert_eq!(lru.get("b"), None);
        assert_eq!(lru.get("a"), Some(1));
        assert_eq!(lru.get("c"), Some(3));
        lru.remove("a");
        assert_eq!(lru.get("a"), None);
    }
}
