//! A bounded insertion-ordered map: remembers the last `capacity` keys, forgets the oldest.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

#[derive(Debug, Clone)]
pub(crate) struct Recent<K, V> {
    capacity: usize,
    order: VecDeque<K>,
    map: HashMap<K, V>,
}

impl<K: Eq + Hash + Clone, V: Copy> Recent<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            map: HashMap::new(),
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.get(key).copied()
    }

    /// Remembers `key`; an existing key keeps its place but takes the new value.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        if let Some(slot) = self.map.get_mut(&key) {
            *slot = value;
            return;
        }
        self.order.push_back(key.clone());
        self.map.insert(key, value);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// Oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, V)> {
        self.order
            .iter()
            .filter_map(|k| self.map.get(k).map(|v| (k, *v)))
    }
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn forgets_oldest_beyond_capacity() {
        let mut r = Recent::new(2);
        r.insert("a", 1);
        r.insert("b", 2);
        r.insert("a", 3);
        r.insert("c", 4);
        assert_eq!(r.get("a"), None);
        assert_eq!(r.get("b"), Some(2));
        assert_eq!(r.get("c"), Some(4));
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(&"b", 2), (&"c", 4)]);
    }
}
