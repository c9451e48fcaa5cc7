//! The in-process index in front of every store.
//!
//! Everything the accept decision needs (id, digest, scopes, effective status, read-only flag) sits in
//! one 64-byte slot of an open-addressing table with Robin Hood probing. Readers take no lock and
//! allocate nothing: a sequence counter (a seqlock over atomic words) tells them when a writer moved
//! something under them, and they retry. Writers are serialised by a mutex and are rare (management
//! calls, fills after a miss, change notifications).
//!
//! One part per file: `slot` (the cache line and its encoding), `table` (placement and Robin Hood
//! probing), `tables` (the per-thread table cache), `seqlock` (lock-free reads and write sections),
//! `stamp` (change counters for fills), `cold` (the rest of each record), `write` (every change),
//! `registry` (indexes by id, for identities).

mod cold;
mod registry;
mod seqlock;
mod slot;
mod stamp;
mod table;
mod tables;
mod write;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use crate::identity::UserLogin;
use crate::key::KeyId;
use crate::store::KeyRecord;

use cold::{Cold, Writer};
use slot::Slot;
use stamp::GENERATION_BUCKETS;
use table::{Table, MIN_CAPACITY};

pub(crate) use slot::{expiry_date, Entry, DUMMY_DIGEST};
pub(crate) use stamp::Stamp;

/// What the index knows of an id.
pub(crate) enum Probe {
    /// A slot for the id: a key, or a cached "no such key".
    Found(Entry),
    /// Nothing cached: ask the store.
    Miss,
}

/// The index. Shared by a [`KeyRing`](crate::KeyRing) and the identities it hands out.
pub(crate) struct Index {
    seq: AtomicU64,
    // Change counters: `all` moves on every change; `owners` on changes that touch many keys (user,
    // company, resync); `buckets[b]` on changes to keys whose id falls in bucket `b`. A fill is stale
    // only when its own bucket or `owners` moved, so changes to other keys do not make it retry.
    all: AtomicU64,
    owners: AtomicU64,
    buckets: Box<[AtomicU64]>,
    table: ArcSwap<Table>,
    // Moves each time `table` is replaced; see `tables`.
    generation: AtomicU64,
    writer: Mutex<Writer>,
    negative_capacity: usize,
    registry_id: u64,
}

impl Index {
    pub(crate) fn new(negative_capacity: usize) -> Arc<Self> {
        let mut seed = [0u8; 8];
        // A failed RNG only weakens placement against chosen ids; fall back to the address-space layout.
        if getrandom::fill(&mut seed).is_err() {
            seed = (&seed as *const _ as u64).to_le_bytes();
        }
        let index = Arc::new(Self {
            seq: AtomicU64::new(0),
            all: AtomicU64::new(0),
            owners: AtomicU64::new(0),
            buckets: (0..GENERATION_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            table: ArcSwap::from_pointee(Table::new(MIN_CAPACITY, u64::from_le_bytes(seed))),
            generation: AtomicU64::new(0),
            writer: Mutex::new(Writer::new()),
            negative_capacity,
            registry_id: registry::next_id(),
        });
        registry::register(index.registry_id, Arc::downgrade(&index));
        index
    }

    pub(crate) fn handle(&self) -> IndexRef {
        IndexRef(self.registry_id)
    }

    /// `read` of the cached slot and arena entry of `id`.
    fn read_cold<R>(&self, id: KeyId, read: impl FnOnce(&Cold, &Entry) -> R) -> Option<R> {
        let w = self.lock();
        let Probe::Found(entry) = self.probe(id) else {
            return None;
        };
        let cold = w.cold(entry.cold).filter(|c| c.id == id)?;
        Some(read(cold, &entry))
    }

    /// The cached record of `id`, rebuilt from its slot and arena entry.
    pub(crate) fn record(&self, id: KeyId) -> Option<KeyRecord> {
        self.read_cold(id, Cold::record)
    }

    /// When a rotation replaced cached key `id`, without rebuilding its record.
    pub(crate) fn deprecated(&self, id: KeyId) -> Option<OffsetDateTime> {
        self.read_cold(id, |cold, _| cold.deprecated()).flatten()
    }

    pub(crate) fn login(&self, id: KeyId) -> Option<Arc<UserLogin>> {
        self.record(id).map(|r| Arc::new(r.to_login()))
    }

    /// Number of cached positive records.
    pub(crate) fn len(&self) -> usize {
        self.lock().positives
    }

    /// Number of cached "no such key" entries.
    pub(crate) fn negative_len(&self) -> usize {
        self.lock().negatives.len()
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes held by the slot table.
    pub(crate) fn table_bytes(&self) -> usize {
        self.table.load().slots.len() * std::mem::size_of::<Slot>()
    }
}

impl Drop for Index {
    fn drop(&mut self) {
        registry::unregister(self.registry_id);
        tables::RETIRED.fetch_add(1, Ordering::Relaxed);
    }
}

/// A `Copy` reference from an [`Identity`](crate::Identity) back to the index that authorized it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexRef(u64);

impl IndexRef {
    pub(crate) fn login(self, id: KeyId) -> Option<Arc<UserLogin>> {
        registry::get(self.0)?.login(id)
    }

    pub(crate) fn deprecated(self, id: KeyId) -> Option<OffsetDateTime> {
        registry::get(self.0)?.deprecated(id)
    }
}

/// The records and lookups the tests of every part of the index share.
#[cfg(test)]
mod testing {
    use super::*;
    use crate::identity::Status;
    use crate::key::SecretDigest;
    use crate::scope::Scopes;
    use crate::store::Owner;
    use time::OffsetDateTime;

    pub(super) fn record(id: u64) -> KeyRecord {
        KeyRecord {
            id: KeyId::new(id).expect("valid id"),
            digest: SecretDigest::from_bytes([id as u8; 32]),
            owner: Owner {
                user_uid: format!("user-{}", id % 3),
                user_name: "u".into(),
                company_id: format!("company-{}", id % 2),
                company_name: "c".into(),
            },
            description: "d".into(),
            read_only: id.is_multiple_of(2),
            scopes: Scopes::from_bits(id & 7),
            status: Status::Enabled,
            user_status: Status::Enabled,
            company_status: Status::Enabled,
            status_locked: false,
            expires: None,
            deprecated: None,
            last_used: None,
            created: OffsetDateTime::UNIX_EPOCH,
        }
    }

    pub(super) fn found(index: &Index, id: u64) -> Option<Entry> {
        match index.probe(KeyId::new(id).expect("valid")) {
            Probe::Found(e) => Some(e),
            Probe::Miss => None,
        }
    }
}
