//! Following the store's change stream: each change reaches the index, and a stream that ends
//! means forget everything and subscribe again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Inner, KeyRing};
use crate::store::ChangeEvent;

pub(super) type PendingFollow = (crate::store::ChangeStream, oneshot::Receiver<()>);

impl KeyRing {
    /// Starts the task that follows the store's changes, if it is not running yet and a tokio runtime
    /// is at hand. Called by every async entry point before it can fill the index.
    pub(super) fn ensure_following(&self) {
        if let Some(uses) = &self.inner.uses {
            uses.ensure_writing(&self.inner);
        }
        let mut pending = self
            .inner
            .pending_follow
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if pending.is_none() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            if let Some((changes, stop)) = pending.take() {
                runtime.spawn(follow(Arc::downgrade(&self.inner), changes, stop));
            }
        }
    }

    /// Applies a change heard from the store (made by another node, or by this one).
    ///
    /// The index forgets what the change touched, and the next request reads it from the store.
    /// The status a user or company event carries is not copied into the index: events arrive
    /// after the calls that caused them return, so an event can be older than a change this node
    /// has applied since, and copying it would bring back a status already overwritten (an
    /// enabled user after a disable that returned).
    pub fn apply(&self, event: &ChangeEvent) {
        let index = &self.inner.index;
        match event {
            ChangeEvent::Key(id) | ChangeEvent::KeyDeleted(id) => index.invalidate(*id),
            ChangeEvent::User { user_uid, .. } => index.forget_owner(Some(user_uid), None),
            ChangeEvent::Company { company_id, .. } => index.forget_owner(None, Some(company_id)),
            ChangeEvent::Resync => index.clear(),
        }
    }
}

/// How long the ring waits before subscribing again to a store whose change stream ended.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(100);

/// Applies a store's changes to the ring's index for as long as the ring exists (`stop` resolves
/// when it is dropped, without waiting for another event). A stream that ends is a channel lost:
/// forget everything, and subscribe again rather than go deaf.
async fn follow(
    ring: std::sync::Weak<Inner>,
    mut changes: crate::store::ChangeStream,
    mut stop: oneshot::Receiver<()>,
) {
    use futures_core::Stream;
    use std::future::{poll_fn, Future};
    use std::pin::Pin;
    use std::task::Poll;
    loop {
        loop {
            let next = poll_fn(|cx| {
                if Pin::new(&mut stop).poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Pin::new(&mut changes).poll_next(cx).map(Some)
            })
            .await;
            match next {
                None => return,
                Some(Some(event)) => {
                    let Some(inner) = ring.upgrade() else { return };
                    KeyRing { inner }.apply(&event);
                }
                Some(None) => break,
            }
        }
        let Some(inner) = ring.upgrade() else { return };
        KeyRing {
            inner: inner.clone(),
        }
        .apply(&ChangeEvent::Resync);
        let resubscribed = inner.store.subscribe();
        drop(inner);
        match resubscribed {
            Some(stream) => changes = stream,
            None => return,
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use crate::identity::Status;
    use crate::key::KeyId;
    use crate::ring::testing::{cached, issue_one};
    use crate::ring::VerifyError;
    use crate::store::{KeyRecord, KeyStore, KeyUpdate, ListQuery, MemoryStore, Page, StoreError};

    /// A store whose change streams the test ends at will.
    #[derive(Clone, Default)]
    struct Streams {
        inner: MemoryStore,
        senders: Arc<Mutex<Vec<crate::store::notify::ChangeSender>>>,
    }

    #[async_trait::async_trait]
    impl KeyStore for Streams {
        async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
            self.inner.get(id).await
        }
        async fn insert(&self, record: KeyRecord) -> Result<(), StoreError> {
            self.inner.insert(record).await
        }
        async fn update(
            &self,
            id: KeyId,
            update: KeyUpdate,
        ) -> Result<Option<KeyRecord>, StoreError> {
            self.inner.update(id, update).await
        }
        async fn delete(&self, id: KeyId) -> Result<bool, StoreError> {
            self.inner.delete(id).await
        }
        async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
            self.inner.list(query).await
        }
        async fn set_user_status(&self, uid: &str, status: Status) -> Result<(), StoreError> {
            self.inner.set_user_status(uid, status).await
        }
        async fn set_company_status(&self, id: &str, status: Status) -> Result<(), StoreError> {
            self.inner.set_company_status(id, status).await
        }
        fn subscribe(&self) -> Option<crate::store::ChangeStream> {
            let (sender, stream) = crate::store::notify::change_channel();
            self.senders.lock().expect("lock").push(sender);
            Some(stream)
        }
    }

    #[tokio::test]
    async fn rings_over_one_memory_store_hear_each_others_revocations() {
        let store = MemoryStore::new();
        let a = KeyRing::new(store.clone());
        let b = KeyRing::new(store);
        let issued = issue_one(&a).await;
        assert!(b.verify(issued.key()).await.is_ok());
        a.update(issued.id(), KeyUpdate::status(Status::Disabled))
            .await
            .expect("updated");
        // B applies the change when its task runs, which is at B's next yield.
        for _ in 0..100 {
            if b.verify(issued.key()).await.is_err() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("ring B still accepts a key disabled through ring A");
    }

    #[tokio::test]
    async fn a_change_stream_that_ends_means_resync_and_a_new_subscription() {
        let store = Streams::default();
        let ring = KeyRing::new(store.clone());
        let k = issue_one(&ring).await;
        assert!(ring.verify(k.key()).await.is_ok());
        assert_eq!(cached(&ring), (1, 0));

        store.senders.lock().expect("lock").clear();
        for _ in 0..1000 {
            if store.senders.lock().expect("lock").len() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            store.senders.lock().expect("lock").len(),
            1,
            "subscribed again"
        );
        assert_eq!(
            cached(&ring),
            (0, 0),
            "forgot what it could no longer follow"
        );
    }

    #[tokio::test]
    async fn an_owner_event_older_than_a_local_change_does_not_undo_it() {
        let store = Streams::default();
        let ring = KeyRing::new(store.clone());
        let k = issue_one(&ring).await;
        ring.set_user_status("u1", Status::Enabled)
            .await
            .expect("set");
        ring.set_user_status("u1", Status::Disabled)
            .await
            .expect("set");
        assert!(ring.verify(k.key()).await.is_err());
        // The event of the enable arrives only now, after the disable returned.
        let stale = ChangeEvent::User {
            user_uid: "u1".into(),
            status: Status::Enabled,
        };
        assert!(store.senders.lock().expect("lock")[0].send(stale));
        for _ in 0..1000 {
            if ring.stats().keys == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(cached(&ring), (0, 0), "the event was applied");
        assert_eq!(
            ring.verify(k.key()).await.unwrap_err(),
            VerifyError::Invalid,
            "a stale enable brought a disabled user's key back"
        );
    }

    #[tokio::test]
    async fn a_dropped_ring_stops_following_its_store() {
        let store = Streams::default();
        let ring = KeyRing::new(store.clone());
        drop(ring);
        // No event arrives to wake the task: it must notice the ring is gone by itself.
        for _ in 0..1000 {
            if store.senders.lock().expect("lock")[0].is_closed() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the task following the store outlived its ring");
    }

    #[test]
    fn a_ring_built_outside_a_runtime_follows_changes_from_its_first_async_call() {
        let store = MemoryStore::new();
        // No runtime here: building must not panic.
        let a = KeyRing::new(store.clone());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let b = KeyRing::new(store.clone());
            let k = issue_one(&b).await;
            assert!(a.verify(k.key()).await.is_ok(), "a fills from the store");
            b.update(k.id(), KeyUpdate::status(Status::Disabled))
                .await
                .expect("updated");
            for _ in 0..200 {
                if a.verify(k.key()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("a never heard of the revocation made through b");
        });
    }
}
