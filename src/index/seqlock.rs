//! The seqlock over the slot table: readers that take no lock and retry when a writer moved
//! something under them, and the write sections that tell them so.

use std::cell::RefMut;
use std::hint::spin_loop;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use super::table::Table;
use super::tables::{self, TableRef};
use super::{Index, Probe};
use crate::key::KeyId;

impl Index {
    /// Looks `id` up without locking or allocating.
    #[inline]
    pub(crate) fn probe(&self, id: KeyId) -> Probe {
        self.lookup(id, || ()).0
    }

    /// Looks `id` up, running `during` after the home slot of `id` was touched and before it is
    /// read, so that its cache line is on its way while `during` works (the caller hashes the
    /// secret). `during` runs exactly once.
    #[inline]
    pub(crate) fn lookup<R>(&self, id: KeyId, mut during: impl FnMut() -> R) -> (Probe, R) {
        let cached = tables::CACHE.try_with(|cache| {
            self.read(id, &mut during, || match cache.try_borrow_mut() {
                Ok(cache) => TableRef::Cached(RefMut::map(cache, |c| c.table(self))),
                Err(_) => TableRef::Loaded(self.table.load()),
            })
        });
        match cached {
            Ok(found) => found,
            // This thread is exiting and its cache is gone.
            Err(_) => self.read(id, &mut during, || TableRef::Loaded(self.table.load())),
        }
    }

    #[inline]
    fn read<'t, R>(
        &self,
        id: KeyId,
        during: &mut impl FnMut() -> R,
        mut table: impl FnMut() -> TableRef<'t>,
    ) -> (Probe, R) {
        // The counter is read before the table is: a table swapped in later moves it.
        let seq = self.stable_seq();
        let first = table();
        first.prefetch(id.get());
        let out = during();
        if let Some(found) = self.find(&first, seq, id) {
            return (found, out);
        }
        drop(first);
        loop {
            let seq = self.stable_seq();
            if let Some(found) = self.find(&table(), seq, id) {
                return (found, out);
            }
        }
    }

    /// An even value of the sequence counter: no writer is between its two bumps.
    #[inline]
    fn stable_seq(&self) -> u64 {
        loop {
            let seq = self.seq.load(Ordering::Acquire);
            if seq & 1 == 0 {
                return seq;
            }
            spin_loop();
        }
    }

    /// What `table` holds for `id`, if no writer ran since the counter read `seq`.
    #[inline]
    fn find(&self, table: &Table, seq: u64, id: KeyId) -> Option<Probe> {
        let id = id.get();
        let result = match table.position(id) {
            Some(pos) => Probe::Found(table.slots[pos].read()),
            None => Probe::Miss,
        };
        fence(Ordering::Acquire);
        let consistent = self.seq.load(Ordering::Relaxed) == seq;
        // Never trust a slot whose id does not match, whatever the counter says.
        let matches = match &result {
            Probe::Found(entry) => entry.id == id,
            Probe::Miss => true,
        };
        (consistent && matches).then_some(result)
    }

    /// Runs `f` on the current table inside a seqlock write section. Caller holds the writer mutex.
    pub(super) fn write(&self, f: impl FnOnce(&Table)) {
        let table = self.table.load_full();
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        f(&table);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    pub(super) fn swap_table(&self, table: Table) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.table.store(Arc::new(table));
        self.generation.fetch_add(1, Ordering::Release);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testing::{found, record};

    #[test]
    fn readers_on_other_threads_follow_growth_and_removals() {
        let index = Index::new(16);
        index.upsert(&record(1));
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    // Key 1 is never removed: every read must find it, whatever table is current.
                    assert_eq!(found(&index, 1).map(|e| e.id), Some(1));
                    reads += 1;
                }
                reads
            });
            for id in 2..=5000u64 {
                index.upsert(&record(id));
            }
            for id in 2..=5000u64 {
                index.invalidate(KeyId::new(id).expect("valid"));
            }
            done.store(true, Ordering::Release);
            assert!(reader.join().expect("reader") > 0);
        });
        // The thread that read is gone, and with it its cached table.
        assert!(found(&index, 4999).is_none());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn readers_never_see_a_torn_slot_while_writers_run() {
        let index = Index::new(64);
        for id in 1..=200u64 {
            index.upsert(&record(id));
        }
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                for round in 0..200_000u64 {
                    let id = 1 + round % 200;
                    if let Some(e) = found(&index, id) {
                        assert_eq!(e.id, id);
                        assert_eq!(e.digest, [id as u8; 32]);
                    }
                }
            });
            for round in 0..2_000u64 {
                let id = 1 + round % 200;
                index.invalidate(KeyId::new(id).expect("valid"));
                index.upsert(&record(id));
                index.upsert(&record(1000 + round));
            }
            reader.join().expect("reader ok");
        });
    }
}
