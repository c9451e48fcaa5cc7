//! The cold side: the rest of each record, outside the slots, and the writer's bookkeeping.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use time::OffsetDateTime;

use super::slot::{expiry_date, Entry};
use crate::identity::Status;
use crate::key::KeyId;
use crate::scope::Scopes;
use crate::store::{KeyRecord, Owner};

/// What the slot does not hold: enough to rebuild the [`UserLogin`](crate::UserLogin) and to
/// recompute the status when a user or company changes. Owners are shared between their keys.
pub(super) struct Cold {
    pub(super) id: KeyId,
    pub(super) owner: Arc<Owner>,
    description: Box<str>,
    created: OffsetDateTime,
    read_only: bool,
    scopes: Scopes,
    pub(super) status: Status,
    pub(super) user_status: Status,
    pub(super) company_status: Status,
    status_locked: bool,
    // Whole seconds since the Unix epoch, `NO_DATE` for none: a record's dates cost 16 bytes here,
    // not 48. The expiry is the slot's (to the second as well).
    deprecated: i64,
    last_used: i64,
}

const NO_DATE: i64 = i64::MIN;

fn seconds(date: Option<OffsetDateTime>) -> i64 {
    date.map_or(NO_DATE, OffsetDateTime::unix_timestamp)
}

fn date(seconds: i64) -> Option<OffsetDateTime> {
    (seconds != NO_DATE)
        .then(|| OffsetDateTime::from_unix_timestamp(seconds).ok())
        .flatten()
}

impl Cold {
    pub(super) fn of(record: &KeyRecord, owner: Arc<Owner>) -> Self {
        Self {
            id: record.id,
            owner,
            description: record.description.as_str().into(),
            created: record.created,
            read_only: record.read_only,
            scopes: record.scopes,
            status: record.status,
            user_status: record.user_status,
            company_status: record.company_status,
            status_locked: record.status_locked,
            deprecated: seconds(record.deprecated),
            last_used: seconds(record.last_used),
        }
    }

    /// When a rotation replaced the key, to the second.
    pub(super) fn deprecated(&self) -> Option<OffsetDateTime> {
        date(self.deprecated)
    }

    /// The record as the index holds it; dates other than the creation to the second.
    pub(super) fn record(&self, entry: &Entry) -> KeyRecord {
        KeyRecord {
            id: self.id,
            digest: entry.digest(),
            owner: (*self.owner).clone(),
            description: self.description.to_string(),
            read_only: self.read_only,
            scopes: self.scopes,
            status: self.status,
            user_status: self.user_status,
            company_status: self.company_status,
            created: self.created,
            status_locked: self.status_locked,
            expires: expiry_date(entry.expires()),
            deprecated: date(self.deprecated),
            last_used: date(self.last_used),
        }
    }
}

pub(super) struct Writer {
    pub(super) cold: Vec<Option<Cold>>,
    free: Vec<usize>,
    owners: HashSet<Arc<Owner>>,
    pub(super) negatives: VecDeque<KeyId>,
    pub(super) occupied: usize,
    pub(super) positives: usize,
}

impl Writer {
    pub(super) fn new() -> Self {
        Self {
            cold: Vec::new(),
            free: Vec::new(),
            owners: HashSet::new(),
            negatives: VecDeque::new(),
            occupied: 0,
            positives: 0,
        }
    }

    pub(super) fn intern(&mut self, owner: &Owner) -> Arc<Owner> {
        if let Some(shared) = self.owners.get(owner) {
            return shared.clone();
        }
        let shared = Arc::new(owner.clone());
        self.owners.insert(shared.clone());
        shared
    }

    /// Stores `cold` at `at` (an existing position, plus one) or a free one; returns position plus one.
    pub(super) fn put_cold(&mut self, at: u64, cold: Cold) -> u64 {
        if let Some(slot) = usize::try_from(at)
            .ok()
            .and_then(|at| at.checked_sub(1))
            .and_then(|i| self.cold.get_mut(i))
        {
            if let Some(old) = slot.replace(cold) {
                self.release_owner(&old.owner);
            } else {
                self.positives += 1;
            }
            return at;
        }
        self.positives += 1;
        match self.free.pop() {
            Some(i) => {
                self.cold[i] = Some(cold);
                i as u64 + 1
            }
            None => {
                self.cold.push(Some(cold));
                self.cold.len() as u64
            }
        }
    }

    pub(super) fn take_cold(&mut self, at: u64) {
        let Some(i) = usize::try_from(at).ok().and_then(|at| at.checked_sub(1)) else {
            return;
        };
        if let Some(old) = self.cold.get_mut(i).and_then(Option::take) {
            self.free.push(i);
            self.positives -= 1;
            self.release_owner(&old.owner);
        }
    }

    pub(super) fn cold(&self, at: u64) -> Option<&Cold> {
        let i = usize::try_from(at).ok()?.checked_sub(1)?;
        self.cold.get(i)?.as_ref()
    }

    fn release_owner(&mut self, owner: &Arc<Owner>) {
        // The set and the caller's copy: nobody else uses this owner any more.
        if Arc::strong_count(owner) <= 2 {
            self.owners.remove(&**owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cold_record_stays_within_80_bytes() {
        // With the arena's `Option`, the bulk of what a cached key costs beside its slot.
        assert!(std::mem::size_of::<Option<Cold>>() <= 80);
    }

    #[test]
    fn dates_read_back_to_the_second() {
        let at = time::macros::datetime!(2025-03-01 10:00:00.75 UTC);
        assert_eq!(
            date(seconds(Some(at))),
            Some(at.replace_nanosecond(0).expect("valid"))
        );
        assert_eq!(date(seconds(None)), None);
    }
}
