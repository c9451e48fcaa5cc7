//! [`KeyRing`]: a store with the in-process index in front of it, shared by the layer and by whoever
//! manages keys.
//!
//! One part per file: `builder` (settings), `verify` (the decision on a hit and the single-flight
//! store read on a miss), `follow` (the store's change stream), `issue` (issuing and managing
//! keys).

mod builder;
mod follow;
mod issue;
#[cfg(test)]
mod testing;
mod uses;
mod verify;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};

use crate::index::Index;
use crate::key::KeyFormat;
use crate::store::{KeyStore, ListQuery, StoreError};

use follow::PendingFollow;
use verify::Flights;

pub use builder::KeyRingBuilder;
pub use issue::{validate_description, IssueError, IssuedKey, NewKey};
pub(crate) use verify::unix_now;
pub use verify::VerifyError;

/// A [`KeyStore`] with an in-process index in front of it.
///
/// Hits are answered from the index without `.await`, lock or allocation; the store is asked only on a
/// miss, once per key however many requests wait for it. Every change made through a `KeyRing` reaches
/// its index before the call returns; changes made elsewhere arrive through
/// [`KeyStore::subscribe`]. Cloning is cheap and shares everything.
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

/// The fields a request reads come first, in the first cache line (as in `Config`, `layer.rs`).
#[repr(C, align(64))]
struct Inner {
    index: Arc<Index>,
    format: KeyFormat,
    /// Keys used since the last batch, when the ring tracks use.
    uses: Option<Box<uses::Uses>>,
    store: Arc<dyn KeyStore>,
    lookup_timeout: Duration,
    inflight: Semaphore,
    flights: Flights,
    /// Dropped with the ring, which ends the task that follows the store's changes (and with it the
    /// store's listening connection).
    _unfollow: Option<oneshot::Sender<()>>,
    /// The store's changes, when the ring was built outside a tokio runtime: following starts at the
    /// first async call, which comes before anything can be cached (only async calls fill the index).
    pending_follow: Mutex<Option<PendingFollow>>,
}

impl KeyRing {
    /// A key ring over `store` with default settings.
    pub fn new<S: KeyStore>(store: S) -> Self {
        Self::builder(store).build()
    }

    /// The key format (prefix) this ring issues and accepts.
    pub fn format(&self) -> &KeyFormat {
        &self.inner.format
    }

    /// The store behind the index.
    pub fn store(&self) -> &Arc<dyn KeyStore> {
        &self.inner.store
    }

    /// Reads every key from the store into the index, a page at a time, so the first request for each
    /// is a hit. Records that change while this runs are left to be read on demand. Returns the number
    /// of keys cached.
    pub async fn preload(&self) -> Result<usize, StoreError> {
        self.ensure_following();
        const PAGE: u64 = 1000;
        let mut query = ListQuery {
            limit: PAGE,
            ..ListQuery::default()
        };
        let mut cached = 0;
        loop {
            let stamp = self.inner.index.stamp(None);
            let page = self.inner.store.list(&query).await?;
            let count = page.items.len() as u64;
            for record in &page.items {
                if self.inner.index.fill(record.id, Some(record), stamp) {
                    cached += 1;
                }
            }
            if count < PAGE {
                return Ok(cached);
            }
            query.offset += count;
        }
    }

    /// What the index holds: keys, "no such key" entries and the size of its slot table.
    pub fn stats(&self) -> RingStats {
        let index = &self.inner.index;
        RingStats {
            keys: index.len(),
            unknown_ids: index.negative_len(),
            table_bytes: index.table_bytes(),
        }
    }

    /// A counter that moves whenever a user's or company's state may have changed, here or on
    /// another node (a status written through this ring, an owner event heard from another node, a
    /// resync): what an application cached about an account before it moved may be stale.
    pub fn owners_epoch(&self) -> u64 {
        // Whoever relies on this counter relies on hearing other nodes' changes.
        self.ensure_following();
        self.inner.index.owners_epoch()
    }

    /// How long a store lookup (or a token validation) may take.
    pub(crate) fn lookup_timeout(&self) -> Duration {
        self.inner.lookup_timeout
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stats = self.stats();
        f.debug_struct("KeyRing")
            .field("format", &self.inner.format)
            .field("lookup_timeout", &self.inner.lookup_timeout)
            .field("cached_keys", &stats.keys)
            .field("cached_negatives", &stats.unknown_ids)
            .finish()
    }
}

/// What a [`KeyRing`]'s index holds, from [`KeyRing::stats`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RingStats {
    /// Keys held, each with its record.
    pub keys: usize,
    /// Ids held as "no such key", counted in the queue that forgets the oldest first: an id since
    /// invalidated or issued as a key is counted until it leaves the queue.
    pub unknown_ids: usize,
    /// Bytes of the slot table: one 64-byte slot per id held, the table at most 7/8 full.
    pub table_bytes: usize,
}

impl<S: KeyStore> From<S> for KeyRing {
    fn from(store: S) -> Self {
        KeyRing::new(store)
    }
}
