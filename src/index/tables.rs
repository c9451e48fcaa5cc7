//! The per-thread cache of slot tables, and the table a reader looks in.
//!
//! Each thread keeps the current slot table of the last few indexes it read, so a lookup reads an
//! atomic counter instead of taking and releasing a reference with two atomic read-modify-writes.
//!
//! A cached table is used only while the index's table generation is the one it was cached at; a
//! table that grew is replaced on the thread's next lookup in that index. When any index is dropped,
//! every thread empties its cache on its next lookup, so a dropped index's table outlives it only on
//! threads that never look anything up again (until they exit).

use std::cell::{RefCell, RefMut};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::table::Table;
use super::Index;

/// The slot table a reader looks in: this thread's cached reference, or one loaded from the index.
pub(super) enum TableRef<'a> {
    Cached(RefMut<'a, Arc<Table>>),
    Loaded(arc_swap::Guard<Arc<Table>>),
}

impl Deref for TableRef<'_> {
    type Target = Table;

    #[inline]
    fn deref(&self) -> &Table {
        match self {
            Self::Cached(table) => table,
            Self::Loaded(table) => table,
        }
    }
}

const ENTRIES: usize = 4;

/// Bumped each time an index is dropped.
pub(super) static RETIRED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    pub(super) static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache { entries: [const { None }; ENTRIES], next: 0, retired: 0 })
    };
}

struct Cached {
    index: u64,
    generation: u64,
    table: Arc<Table>,
}

pub(super) struct Cache {
    entries: [Option<Cached>; ENTRIES],
    next: usize,
    retired: u64,
}

impl Cache {
    /// The current table of `index`, as of its generation now.
    #[inline]
    pub(super) fn table(&mut self, index: &Index) -> &mut Arc<Table> {
        let retired = RETIRED.load(Ordering::Relaxed);
        if retired != self.retired {
            self.entries = [const { None }; ENTRIES];
            self.retired = retired;
        }
        // Read before the table is loaded: a table cached under a generation is at least as
        // new as that generation.
        let generation = index.generation.load(Ordering::Acquire);
        // Every entry is looked at, whichever holds the index: a lookup costs the same in each
        // of the indexes a thread serves.
        let held = self.entries.iter().enumerate().fold(None, |found, (i, e)| {
            if e.as_ref().is_some_and(|e| e.index == index.registry_id) {
                Some(i)
            } else {
                found
            }
        });
        let pos = match held {
            Some(pos) => pos,
            None => match self.entries.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    let pos = self.next;
                    self.next = (pos + 1) % ENTRIES;
                    pos
                }
            },
        };
        let entry = &mut self.entries[pos];
        if !entry
            .as_ref()
            .is_some_and(|e| e.index == index.registry_id && e.generation == generation)
        {
            *entry = None;
        }
        &mut entry
            .get_or_insert_with(|| Cached {
                index: index.registry_id,
                generation,
                table: index.table.load_full(),
            })
            .table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testing::{found, record};

    #[test]
    fn a_thread_that_cached_a_table_sees_the_grown_one() {
        let index = Index::new(16);
        index.upsert(&record(1));
        // This thread now holds the first table; each growth must replace it before the next read.
        assert!(found(&index, 1).is_some());
        let first = Arc::downgrade(&index.table.load_full());
        for id in 2..=1000u64 {
            index.upsert(&record(id));
            assert_eq!(found(&index, id).map(|e| e.id), Some(id), "id {id}");
        }
        assert!(
            index.generation.load(Ordering::Relaxed) > 0,
            "the table grew"
        );
        // The reader moved on, so the first table is gone.
        assert!(first.upgrade().is_none());
    }

    #[test]
    fn more_indexes_than_cache_entries_read_in_turn_each_answer_for_themselves() {
        let indexes: Vec<_> = (0..7u64)
            .map(|i| {
                let index = Index::new(16);
                index.upsert(&record(100 + i));
                index
            })
            .collect();
        for round in 0..3 {
            for (i, index) in indexes.iter().enumerate() {
                for (j, _) in indexes.iter().enumerate() {
                    let id = 100 + j as u64;
                    assert_eq!(found(index, id).is_some(), i == j, "round {round}: {i} {j}");
                }
                // Growth of one index while the others hold cache entries.
                if round == 1 {
                    for id in 1000..1100 {
                        index.upsert(&record(id + 1000 * i as u64));
                    }
                }
            }
        }
        for (i, index) in indexes.iter().enumerate() {
            assert!(found(index, 1050 + 1000 * i as u64).is_some(), "{i}");
        }
    }

    #[test]
    fn a_dropped_index_leaves_no_table_behind_in_the_thread_that_read_it() {
        let index = Index::new(16);
        index.upsert(&record(1));
        assert!(found(&index, 1).is_some());
        let table = Arc::downgrade(&index.table.load_full());
        drop(index);
        assert!(table.upgrade().is_some(), "still cached by this thread");
        // The next lookup in any index empties the cache of dropped ones.
        let other = Index::new(16);
        assert!(found(&other, 1).is_none());
        assert!(table.upgrade().is_none());
    }
}
