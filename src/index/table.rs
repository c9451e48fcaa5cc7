//! The open-addressing table of slots: keyed placement, Robin Hood insertion, lookup and removal.

use super::slot::{touch, Entry, Slot};

pub(super) const MIN_CAPACITY: usize = 64;

pub(super) struct Table {
    pub(super) slots: Box<[Slot]>,
    mask: usize,
    pub(super) seed: u64,
}

impl Table {
    pub(super) fn new(capacity: usize, seed: u64) -> Self {
        let capacity = capacity.max(MIN_CAPACITY).next_power_of_two();
        Self {
            slots: (0..capacity).map(|_| Slot::empty()).collect(),
            mask: capacity - 1,
            seed,
        }
    }

    #[inline]
    fn home(&self, id: u64) -> usize {
        // Keyed folded multiply: clients choose the ids of unknown keys, so placement must not be
        // predictable from the id alone.
        let m = u128::from(id ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        ((m as u64) ^ ((m >> 64) as u64)) as usize & self.mask
    }

    #[inline]
    fn distance(&self, id: u64, pos: usize) -> usize {
        pos.wrapping_sub(self.home(id)) & self.mask
    }

    /// Position of `id`, if present. Bounded even when read under a concurrent writer.
    #[inline]
    pub(super) fn position(&self, id: u64) -> Option<usize> {
        let mut pos = self.home(id);
        for dist in 0..=self.mask {
            let found = self.slots[pos].id();
            if found == id {
                return Some(pos);
            }
            if found == 0 || self.distance(found, pos) < dist {
                return None;
            }
            pos = (pos + 1) & self.mask;
        }
        None
    }

    /// Starts the fetch of the cache lines a lookup of `id` is likely to read: its home slot and
    /// the next one, where Robin Hood probing leaves an entry often enough (a quarter of keys at
    /// half load) that fetching that line only after reading the first would cost a second memory
    /// latency. The caller hashes the secret while both are on their way.
    #[inline]
    pub(super) fn prefetch(&self, id: u64) {
        let home = self.home(id);
        touch(&self.slots[home]);
        touch(&self.slots[(home + 1) & self.mask]);
    }

    pub(super) fn insert_new(&self, entry: Entry) {
        let mut cur = entry;
        let mut pos = self.home(cur.id);
        let mut dist = 0;
        loop {
            let slot = &self.slots[pos];
            let found = slot.id();
            if found == 0 {
                slot.write(&cur);
                return;
            }
            let found_dist = self.distance(found, pos);
            // Equal distances are ordered by id, so where an entry sits depends on the ids held, not
            // on the order they came in: otherwise keys cached first sit nearer home than the
            // unknown ids cached after them, and the time to look an id up tells which it is.
            if found_dist < dist || (found_dist == dist && found > cur.id) {
                let evicted = slot.read();
                slot.write(&cur);
                cur = evicted;
                dist = found_dist;
            }
            pos = (pos + 1) & self.mask;
            dist += 1;
        }
    }

    pub(super) fn remove_at(&self, mut pos: usize) {
        loop {
            let next = (pos + 1) & self.mask;
            let n = self.slots[next].id();
            if n == 0 || self.distance(n, next) == 0 {
                self.slots[pos].clear();
                return;
            }
            self.slots[pos].write(&self.slots[next].read());
            pos = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testing::record;
    use crate::index::Index;
    use crate::key::KeyId;

    #[test]
    fn slot_positions_depend_on_the_ids_held_not_the_order_they_came_in() {
        // Whether an id was cached first (a key) or later (an unknown id during a flood) must not
        // change how far from home it sits, or the cache lines a lookup touches tell them apart.
        let ids: Vec<u64> = (1..=3000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) | 1)
            .collect();
        let entry = |id: u64| Entry { id, ..Entry::EMPTY };
        let layout = |order: &[u64], extra: &[u64]| {
            let table = Table::new(4096, 0x5eed);
            for &id in extra.iter().chain(order) {
                table.insert_new(entry(id));
            }
            for &id in extra {
                let pos = table.position(id).expect("present");
                table.remove_at(pos);
            }
            table.slots.iter().map(Slot::id).collect::<Vec<_>>()
        };
        let forward = layout(&ids, &[]);
        let mut reversed = ids.clone();
        reversed.reverse();
        let mut interleaved: Vec<u64> = ids.iter().copied().step_by(2).collect();
        interleaved.extend(ids.iter().copied().skip(1).step_by(2));
        let removed: Vec<u64> = (1..=300u64).map(|i| i << 40).collect();
        assert_eq!(layout(&reversed, &[]), forward);
        assert_eq!(layout(&interleaved, &[]), forward);
        assert_eq!(layout(&ids, &removed), forward);
    }

    #[test]
    fn a_key_and_a_cached_unknown_id_sit_in_the_same_slot() {
        // The same ids held, one of them a key in one index and a cached "no such key" in the other:
        // every id sits in the same slot in both, so a lookup of any id walks the same slots, reads
        // the same cache lines, and runs the same compare whichever it is.
        let ids: Vec<u64> = (1..=2000u64).map(|i| i * 7919).collect();
        // One index, emptied between layouts: `clear` keeps the placement seed.
        let index = Index::new(4096);
        let layout = |negatives: &[u64]| {
            index.clear();
            // Keys first, unknown ids after (as a flood caches them once the keys are loaded).
            for &id in ids.iter().filter(|id| !negatives.contains(id)) {
                index.upsert(&record(id));
            }
            for &id in negatives {
                let key = KeyId::new(id).expect("valid");
                assert!(index.fill(key, None, index.stamp(Some(key))));
            }
            let table = index.table.load_full();
            table.slots.iter().map(Slot::id).collect::<Vec<_>>()
        };
        let all_keys = layout(&[]);
        for negatives in [&ids[..1], &ids[1000..1001], &ids[..1000], &ids[..]] {
            assert_eq!(layout(negatives), all_keys);
        }
    }
}
