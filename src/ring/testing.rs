//! The owner, keys and stores the tests of every part of the ring share.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use super::{IssuedKey, KeyRing, NewKey};
use crate::identity::Status;
use crate::key::KeyId;
use crate::store::{
    KeyRecord, KeyStore, KeyUpdate, ListQuery, MemoryStore, Owner, Page, StoreError,
};

pub(super) fn owner() -> Owner {
    Owner {
        user_uid: "u1".into(),
        user_name: "alice".into(),
        company_id: "c1".into(),
        company_name: "Alpha".into(),
    }
}

/// The keys and "no such key" entries `ring`'s index holds, as one pair to compare.
pub(super) fn cached(ring: &KeyRing) -> (usize, usize) {
    let stats = ring.stats();
    (stats.keys, stats.unknown_ids)
}

/// A key for `owner()` through `ring`.
pub(super) async fn issue_one(ring: &KeyRing) -> IssuedKey {
    ring.issue(NewKey::new(owner()).description("x"))
        .await
        .expect("issued")
}

/// A memory store that counts `get`s, fails owner-status writes on demand, and holds the next
/// write after it reached the store, before it returns. It sends no changes, so what a ring's
/// index holds comes from that ring's own calls alone.
#[derive(Clone, Default)]
pub(super) struct Held {
    pub(super) inner: MemoryStore,
    pub(super) state: Arc<HeldState>,
}

#[derive(Default)]
pub(super) struct HeldState {
    hold_next: std::sync::atomic::AtomicBool,
    pub(super) fail_owner_writes: std::sync::atomic::AtomicBool,
    pub(super) written: tokio::sync::Notify,
    pub(super) release: tokio::sync::Notify,
    pub(super) gets: std::sync::atomic::AtomicUsize,
}

impl Held {
    pub(super) fn hold_next_write(&self) {
        self.state.hold_next.store(true, SeqCst);
    }

    async fn pause(&self) {
        if self.state.hold_next.swap(false, SeqCst) {
            self.state.written.notify_one();
            self.state.release.notified().await;
        }
    }
}

#[async_trait::async_trait]
impl KeyStore for Held {
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.state.gets.fetch_add(1, SeqCst);
        self.inner.get(id).await
    }
    async fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
        self.inner.insert(record).await
    }
    async fn update(&self, id: KeyId, update: KeyUpdate) -> Result<Option<KeyRecord>, StoreError> {
        let result = self.inner.update(id, update).await;
        self.pause().await;
        result
    }
    async fn delete(&self, id: KeyId) -> Result<bool, StoreError> {
        self.inner.delete(id).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
        self.inner.list(query).await
    }
    async fn set_user_status(&self, uid: &str, status: Status) -> Result<(), StoreError> {
        if self.state.fail_owner_writes.load(SeqCst) {
            return Err(StoreError::backend(
                "connection lost after the write was sent",
            ));
        }
        let result = self.inner.set_user_status(uid, status).await;
        self.pause().await;
        result
    }
    async fn set_company_status(&self, id: &str, status: Status) -> Result<(), StoreError> {
        self.inner.set_company_status(id, status).await
    }
}
