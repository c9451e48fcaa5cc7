//! Changes to the index: fills, upserts, invalidations, owner statuses and clears, one at a time
//! under the writer mutex.

use super::cold::{Cold, Writer};
use super::slot::Entry;
use super::table::{Table, MIN_CAPACITY};
use super::{Index, Stamp};
use crate::identity::Status;
use crate::key::KeyId;
use crate::store::KeyRecord;

impl Index {
    /// Caches what the store said of `id`, unless it may have changed since `stamp` was taken.
    /// Returns whether the result was cached.
    pub(crate) fn fill(&self, id: KeyId, record: Option<&KeyRecord>, stamp: Stamp) -> bool {
        let mut w = self.lock();
        if !self.unchanged_since(id, stamp) {
            return false;
        }
        match record {
            Some(record) => self.put(&mut w, record),
            None => self.put_negative(&mut w, id),
        }
        true
    }

    /// Applies a record that a management call on this node just wrote.
    #[cfg(test)]
    pub(crate) fn upsert(&self, record: &KeyRecord) {
        let mut w = self.lock();
        self.key_changed(record.id);
        self.put(&mut w, record);
    }

    /// Applies a record that a management call on this node wrote, read after `stamp` was taken.
    /// When the key or an owner changed since (another write, here or on another node, may have
    /// landed after this one and been applied first), the record may be older than what the index
    /// holds: forget the key instead, so the next request reads the store.
    pub(crate) fn upsert_since(&self, record: &KeyRecord, stamp: Stamp) {
        let mut w = self.lock();
        let unchanged = self.unchanged_since(record.id, stamp);
        self.key_changed(record.id);
        if unchanged {
            self.put(&mut w, record);
        } else {
            self.remove(&mut w, record.id);
        }
    }

    /// Forgets `id` (deleted, or changed elsewhere and to be re-read).
    pub(crate) fn invalidate(&self, id: KeyId) {
        let mut w = self.lock();
        self.key_changed(id);
        self.remove(&mut w, id);
    }

    fn remove(&self, w: &mut Writer, id: KeyId) {
        let table = self.table.load_full();
        if let Some(pos) = table.position(id.get()) {
            let cold = table.slots[pos].read().cold;
            self.write(|table| table.remove_at(pos));
            w.occupied -= 1;
            w.take_cold(cold);
        }
    }

    /// Applies a user's or company's status that a management call on this node wrote after
    /// `stamp` was taken. When another owner change was applied since, it may have been written
    /// after this one: forget the owner's cached keys instead, so they are read again.
    pub(crate) fn set_owner_status_since(
        &self,
        user_uid: Option<&str>,
        company_id: Option<&str>,
        status: Status,
        stamp: Stamp,
    ) {
        let mut w = self.lock();
        if self.unchanged_since_owners(stamp) {
            return self.apply_owner_status(&mut w, user_uid, company_id, status);
        }
        self.forget_owner_locked(&mut w, user_uid, company_id);
    }

    /// Forgets every cached key of a user or company, so they are read again: a status write whose
    /// outcome is unknown (the store failed) must not leave a guess in the index.
    pub(crate) fn forget_owner(&self, user_uid: Option<&str>, company_id: Option<&str>) {
        let mut w = self.lock();
        self.forget_owner_locked(&mut w, user_uid, company_id);
    }

    fn forget_owner_locked(
        &self,
        w: &mut Writer,
        user_uid: Option<&str>,
        company_id: Option<&str>,
    ) {
        self.owners_changed();
        let owned: Vec<KeyId> = w
            .cold
            .iter()
            .flatten()
            .filter(|cold| {
                user_uid.is_some_and(|uid| cold.owner.user_uid == uid)
                    || company_id.is_some_and(|id| cold.owner.company_id == id)
            })
            .map(|cold| cold.id)
            .collect();
        for id in owned {
            self.remove(w, id);
        }
    }

    /// Recomputes every cached key of a user or company after its status changed.
    #[cfg(test)]
    pub(crate) fn set_owner_status(
        &self,
        user_uid: Option<&str>,
        company_id: Option<&str>,
        status: Status,
    ) {
        let mut w = self.lock();
        self.apply_owner_status(&mut w, user_uid, company_id, status);
    }

    fn apply_owner_status(
        &self,
        w: &mut Writer,
        user_uid: Option<&str>,
        company_id: Option<&str>,
        status: Status,
    ) {
        self.owners_changed();
        let mut changed = Vec::new();
        for cold in w.cold.iter_mut().flatten() {
            if user_uid.is_some_and(|uid| cold.owner.user_uid == uid) {
                cold.user_status = status;
            } else if company_id.is_some_and(|id| cold.owner.company_id == id) {
                cold.company_status = status;
            } else {
                continue;
            }
            let effective = Status::effective(cold.status, cold.user_status, cold.company_status);
            changed.push((cold.id, effective));
        }
        self.write(|table| {
            for (id, effective) in &changed {
                if let Some(pos) = table.position(id.get()) {
                    let slot = &table.slots[pos];
                    let mut entry = slot.read();
                    entry.meta = (entry.meta & !0xff) | u64::from(effective.to_byte());
                    slot.write(&entry);
                }
            }
        });
    }

    /// Forgets everything: notifications may have been lost.
    pub(crate) fn clear(&self) {
        let mut w = self.lock();
        self.owners_changed();
        *w = Writer::new();
        let seed = self.table.load().seed;
        self.write(|_| {});
        self.swap_table(Table::new(MIN_CAPACITY, seed));
    }

    fn put(&self, w: &mut Writer, record: &KeyRecord) {
        let mut entry = Entry::positive_of(record);
        let owner = w.intern(&record.owner);
        let existing = {
            let table = self.table.load();
            table
                .position(record.id.get())
                .map_or(0, |pos| table.slots[pos].read().cold)
        };
        entry.cold = w.put_cold(existing, Cold::of(record, owner));
        self.store_entry(w, entry);
    }

    fn put_negative(&self, w: &mut Writer, id: KeyId) {
        if self.negative_capacity == 0 {
            return;
        }
        while w.negatives.len() >= self.negative_capacity {
            let Some(old) = w.negatives.pop_front() else {
                break;
            };
            self.write(|table| {
                if let Some(pos) = table.position(old.get()) {
                    if table.slots[pos].read().is_negative() {
                        table.remove_at(pos);
                        w.occupied -= 1;
                    }
                }
            });
        }
        w.negatives.push_back(id);
        self.store_entry(w, Entry::negative(id));
    }

    fn store_entry(&self, w: &mut Writer, entry: Entry) {
        let table = self.table.load_full();
        if let Some(pos) = table.position(entry.id) {
            self.write(|t| t.slots[pos].write(&entry));
            return;
        }
        if (w.occupied + 1) * 8 > table.slots.len() * 7 {
            let bigger = Table::new(table.slots.len() * 2, table.seed);
            for slot in table.slots.iter() {
                if slot.id() != 0 {
                    bigger.insert_new(slot.read());
                }
            }
            bigger.insert_new(entry);
            w.occupied += 1;
            self.write(|_| {});
            self.swap_table(bigger);
            return;
        }
        w.occupied += 1;
        self.write(|t| t.insert_new(entry));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::testing::{found, record};

    #[test]
    fn inserts_grow_and_stay_findable_then_removals_leave_the_rest() {
        let index = Index::new(16);
        let ids: Vec<u64> = (1..=5000u64).map(|i| i * 7919).collect();
        for &id in &ids {
            index.upsert(&record(id));
        }
        for &id in &ids {
            let e = found(&index, id).expect("present");
            assert_eq!(e.id, id);
            assert_eq!(e.digest, [id as u8; 32]);
            assert_eq!(e.read_only(), id % 2 == 0);
        }
        for &id in ids.iter().step_by(2) {
            index.invalidate(KeyId::new(id).expect("valid"));
        }
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(found(&index, id).is_some(), i % 2 == 1, "id {id}");
        }
        assert!(found(&index, 3).is_none());
        assert_eq!(index.len(), 2500);
    }

    #[test]
    fn negative_cache_is_bounded_and_a_real_key_replaces_its_entry() {
        let index = Index::new(4);
        for id in 1..=10u64 {
            let key = KeyId::new(id).expect("valid");
            assert!(index.fill(key, None, index.stamp(Some(key))));
        }
        assert_eq!(index.negative_len(), 4);
        let negatives = (1..=10u64)
            .filter(|&id| found(&index, id).is_some())
            .count();
        assert_eq!(negatives, 4);
        assert!(found(&index, 10).expect("cached").is_negative());
        index.upsert(&record(10));
        let e = found(&index, 10).expect("present");
        assert!(!e.is_negative());
        assert_eq!(e.status(), Status::Enabled);
    }

    #[test]
    fn owner_status_changes_reach_every_cached_key() {
        let index = Index::new(4);
        for id in 1..=30u64 {
            index.upsert(&record(id));
        }
        index.set_owner_status(Some("user-1"), None, Status::Disabled);
        for id in 1..=30u64 {
            let e = found(&index, id).expect("present");
            let expected = if id % 3 == 1 {
                Status::DisabledDueToUser
            } else {
                Status::Enabled
            };
            assert_eq!(e.status(), expected, "id {id}");
        }
        index.set_owner_status(None, Some("company-0"), Status::Disabled);
        assert_eq!(
            found(&index, 2).expect("present").status(),
            Status::DisabledDueToCompany
        );
        index.set_owner_status(Some("user-1"), None, Status::Enabled);
        assert_eq!(found(&index, 1).expect("present").status(), Status::Enabled);
        let login = index.login(KeyId::new(4).expect("valid")).expect("cached");
        assert_eq!(login.status, Status::DisabledDueToCompany);
    }
}
