//! Hash maps keyed by identifiers this engine hands out itself (`LegId`, `AttemptId`,
//! `ProbeId`, `RegId`: counters). std's default SipHash is keyed against hash flooding by
//! whoever chooses the keys; nobody outside chooses these (they are inserted only with our
//! own counter values), so they are hashed with one multiply instead. Keys that come from
//! the network (branches, Call-IDs) stay in std's keyed `HashMap`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` for our own counters.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<CounterHasher>>;

/// Multiplies each word by an odd constant (Fibonacci hashing): consecutive counters land
/// in different buckets and differ in the top bits hashbrown keeps as tags.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CounterHasher(u64);

const SPREAD: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for CounterHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(SPREAD);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn hash(n: u64) -> u64 {
        BuildHasherDefault::<CounterHasher>::default().hash_one(n)
    }

    #[test]
    fn consecutive_counters_spread_over_buckets_and_tags() {
        // 4,096 consecutive ids: the low 12 bits (a 4,096-bucket table's index) are all
        // different, and the top 7 bits (hashbrown's tag) take many values.
        let low: std::collections::HashSet<u64> = (1..=4096).map(|n| hash(n) & 0xfff).collect();
        assert_eq!(low.len(), 4096);
        let tags: std::collections::HashSet<u64> = (1..=4096).map(|n| hash(n) >> 57).collect();
        assert!(tags.len() > 100, "{} tags", tags.len());
        let mut m: IdMap<u64, u64> = IdMap::default();
        for n in 0..10_000 {
            m.insert(n, n * 2);
        }
        assert!((0..10_000).all(|n| m.get(&n) == Some(&(n * 2))));
    }
}
