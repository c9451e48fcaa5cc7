//! Change counters: where a fill or a write started, and whether what it depends on moved since.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Index;
use crate::key::KeyId;

pub(super) const GENERATION_BUCKETS: usize = 256;

/// Where the change counters stood when a fill or a write started; see [`Index::stamp`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stamp {
    /// A fill of one key.
    Key { owners: u64, bucket: u64 },
    /// A fill of many keys (preload).
    All(u64),
    /// A change of a user's or company's status.
    Owners(u64),
}

impl Index {
    /// Where the counters stand before a fill of `id` reads the store (`None`: before a read of many
    /// keys). A fill that read the store before a change must not cache what it read.
    pub(crate) fn stamp(&self, id: Option<KeyId>) -> Stamp {
        match id {
            Some(id) => Stamp::Key {
                owners: self.owners.load(Ordering::Acquire),
                bucket: self.bucket(id).load(Ordering::Acquire),
            },
            None => Stamp::All(self.all.load(Ordering::Acquire)),
        }
    }

    /// Whether nothing that could change `id`'s record happened since `stamp` was taken.
    pub(crate) fn unchanged_since(&self, id: KeyId, stamp: Stamp) -> bool {
        match stamp {
            Stamp::Key { owners, bucket } => {
                self.owners.load(Ordering::Acquire) == owners
                    && self.bucket(id).load(Ordering::Acquire) == bucket
            }
            Stamp::All(all) => self.all.load(Ordering::Acquire) == all,
            Stamp::Owners(owners) => self.owners.load(Ordering::Acquire) == owners,
        }
    }

    /// The owner counter: it moves whenever a user's or company's state may have changed (a status
    /// written here, an owner event heard from another node, a resync).
    pub(crate) fn owners_epoch(&self) -> u64 {
        self.owners.load(Ordering::Acquire)
    }

    /// Where the owner counter stands before a user's or company's status is written to the store.
    pub(crate) fn owners_stamp(&self) -> Stamp {
        Stamp::Owners(self.owners.load(Ordering::Acquire))
    }

    pub(super) fn bucket(&self, id: KeyId) -> &AtomicU64 {
        let b = (id.get().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize;
        &self.buckets[b % self.buckets.len()]
    }

    pub(super) fn key_changed(&self, id: KeyId) {
        self.all.fetch_add(1, Ordering::AcqRel);
        self.bucket(id).fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn owners_changed(&self) {
        self.all.fetch_add(1, Ordering::AcqRel);
        self.owners.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn unchanged_since_owners(&self, stamp: Stamp) -> bool {
        match stamp {
            Stamp::Owners(owners) => self.owners.load(Ordering::Acquire) == owners,
            Stamp::Key { .. } | Stamp::All(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Status;
    use crate::index::testing::{found, record};

    #[test]
    fn a_fill_that_started_before_a_change_is_not_cached() {
        let index = Index::new(4);
        let id = KeyId::new(42).expect("valid");
        let stamp = index.stamp(Some(id));
        let all = index.stamp(None);
        // A change to another key does not make this fill stale; one to this key does.
        let other = (1..)
            .map(|i| KeyId::new(i).expect("valid"))
            .find(|k| !std::ptr::eq(index.bucket(*k), index.bucket(id)));
        index.invalidate(other.expect("some id in another bucket"));
        assert!(!index.fill(id, Some(&record(42)), all));
        index.invalidate(id);
        assert!(!index.fill(id, Some(&record(42)), stamp));
        assert!(found(&index, 42).is_none());
        let stamp = index.stamp(Some(id));
        index.invalidate(other.expect("some id in another bucket"));
        assert!(index.fill(id, Some(&record(42)), stamp));
        let stamp = index.stamp(Some(id));
        index.set_owner_status(Some("nobody"), None, Status::Disabled);
        assert!(!index.fill(id, None, stamp));
    }
}
