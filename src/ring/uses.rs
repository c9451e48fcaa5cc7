//! Last use: which keys requests used, noted in memory on the request path and written to the
//! store in one batch per interval, off it. A key is written at most once per interval however
//! often it is used, and the store is never written by a request.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use time::OffsetDateTime;

use super::{Inner, KeyRing};
use crate::key::KeyId;
use crate::store::StoreError;

const SHARDS: usize = 16;

/// Key ids are random and only ids whose secret was verified are noted, so they are their own
/// hash: nobody can aim ids at one bucket without holding the keys.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type IdSet = HashSet<KeyId, BuildHasherDefault<IdHasher>>;

/// The keys used since the last write, in shards so requests on many threads seldom meet.
pub(super) struct Uses {
    pub(super) interval: Duration,
    shards: Box<[Mutex<IdSet>]>,
    spawned: AtomicBool,
}

impl Uses {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval: interval.max(Duration::from_millis(1)),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            spawned: AtomicBool::new(false),
        }
    }

    /// Notes that a request used `id`.
    #[inline]
    pub(super) fn note(&self, id: KeyId) {
        let shard = &self.shards[(id.get() % SHARDS as u64) as usize];
        shard.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
    }

    /// The keys used since the last call, forgotten here.
    fn take(&self) -> Vec<KeyId> {
        let mut taken = Vec::new();
        for shard in self.shards.iter() {
            let set = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
            taken.extend(set);
        }
        taken
    }

    /// Starts the task that writes the uses every interval, once, when a runtime is at hand.
    pub(super) fn ensure_writing(&self, ring: &Arc<Inner>) {
        if self.spawned.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            if !self.spawned.swap(true, Ordering::AcqRel) {
                runtime.spawn(write_every_interval(Arc::downgrade(ring), self.interval));
            }
        }
    }
}

/// Writes the uses once per interval for as long as the ring exists.
async fn write_every_interval(ring: Weak<Inner>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: nothing has been used yet.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let Some(inner) = ring.upgrade() else { return };
        let ring = KeyRing { inner };
        if let Err(_e) = ring.write_uses().await {
            #[cfg(feature = "tracing")]
            tracing::warn!(error = %_e, "could not record when keys were last used; retrying next interval");
        }
    }
}

impl KeyRing {
    /// Writes when keys were last used to the store now, rather than at the end of the interval,
    /// and returns how many keys were written: for a graceful shutdown, or a test. On a store
    /// error the uses are kept for the next write. `Ok(0)` when the ring does not track use
    /// ([`KeyRingBuilder::track_last_used`](crate::KeyRingBuilder::track_last_used)).
    pub async fn write_uses(&self) -> Result<usize, StoreError> {
        let Some(uses) = &self.inner.uses else {
            return Ok(0);
        };
        let ids = uses.take();
        if ids.is_empty() {
            return Ok(0);
        }
        // One time for the batch: when it was taken, at most one interval after each use.
        let at = OffsetDateTime::now_utc();
        let batch: Vec<(KeyId, OffsetDateTime)> = ids.iter().map(|&id| (id, at)).collect();
        match self.inner.store.record_use(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                for id in ids {
                    uses.note(id);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::testing::issue_one;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn each_key_is_written_once_per_batch_however_often_it_is_used() {
        let store = MemoryStore::new();
        let ring = KeyRing::builder(store.clone())
            .track_last_used(Duration::from_secs(3600))
            .build();
        let a = issue_one(&ring).await;
        let b = issue_one(&ring).await;
        for _ in 0..100 {
            assert!(ring.verify(a.key()).await.is_ok());
        }
        assert!(ring.verify(b.key()).await.is_ok());
        assert_eq!(ring.write_uses().await.expect("writes"), 2);
        assert_eq!(ring.write_uses().await.expect("writes"), 0);
        let used = ring.get(a.id()).await.expect("reads").expect("exists");
        assert!(used.last_used.is_some());
    }

    #[tokio::test]
    async fn a_refused_key_is_not_a_use() {
        let ring = KeyRing::builder(MemoryStore::new())
            .track_last_used(Duration::from_secs(3600))
            .build();
        let a = issue_one(&ring).await;
        // The key's id with another secret: decided by the index, refused.
        let wrong = crate::key::SecretDigest::from_bytes([1; 32]);
        assert!(matches!(ring.check_cached(a.id(), &wrong), Some(Err(_))));
        assert_eq!(ring.write_uses().await.expect("writes"), 0);
    }
}
