//! One slot: the 64-byte cache line that holds what the accept decision needs, and the plain copy
//! of it ([`Entry`]) a reader takes.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::identity::Status;
use crate::key::{KeyId, SecretDigest};
use crate::scope::Scopes;
use crate::store::KeyRecord;

const WORDS: usize = 8;
const META_READ_ONLY: u64 = 1 << 8;
const META_NEGATIVE: u64 = 1 << 9;
const META_DEPRECATED: u64 = 1 << 10;
/// The expiry, in whole seconds since the Unix epoch (`0`: none), sits in the top 40 bits of `meta`.
const EXPIRES_SHIFT: u32 = 24;
const EXPIRES_MAX: u64 = (1 << (64 - EXPIRES_SHIFT)) - 1;

/// One cache line: `[id, digest×4, scopes, meta, cold]`, where `meta` is status (bits 0–7), flags
/// (8–23) and expiry (24–63). `id == 0` marks an empty slot; `cold` is the
/// arena position of the rest of the record, plus one (`0` for "no such key" entries).
#[repr(align(64))]
pub(super) struct Slot([AtomicU64; WORDS]);

impl Slot {
    pub(super) fn empty() -> Self {
        Self(Default::default())
    }

    #[inline]
    pub(super) fn id(&self) -> u64 {
        self.0[0].load(Ordering::Relaxed)
    }

    #[inline]
    pub(super) fn read(&self) -> Entry {
        let w = |i: usize| self.0[i].load(Ordering::Relaxed);
        let mut digest = [0u8; 32];
        for (i, chunk) in digest.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&w(1 + i).to_le_bytes());
        }
        Entry {
            id: w(0),
            digest,
            scopes: w(5),
            meta: w(6),
            cold: w(7),
        }
    }

    pub(super) fn write(&self, e: &Entry) {
        let s = |i: usize, v: u64| self.0[i].store(v, Ordering::Relaxed);
        s(0, e.id);
        for (i, chunk) in e.digest.chunks_exact(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            s(1 + i, u64::from_le_bytes(word));
        }
        s(5, e.scopes);
        s(6, e.meta);
        s(7, e.cold);
    }

    pub(super) fn clear(&self) {
        self.write(&Entry::EMPTY);
    }
}

/// A plain copy of a slot.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub(super) id: u64,
    pub(super) digest: [u8; 32],
    pub(super) scopes: u64,
    pub(super) meta: u64,
    pub(super) cold: u64,
}

impl Entry {
    pub(super) const EMPTY: Entry = Entry {
        id: 0,
        digest: [0; 32],
        scopes: 0,
        meta: 0,
        cold: 0,
    };

    pub(crate) fn positive_of(record: &KeyRecord) -> Self {
        let mut meta = u64::from(record.effective_status().to_byte());
        if record.read_only {
            meta |= META_READ_ONLY;
        }
        if record.deprecated.is_some() {
            meta |= META_DEPRECATED;
        }
        meta |= expiry_secs(record.expires) << EXPIRES_SHIFT;
        Entry {
            id: record.id.get(),
            digest: *record.digest.as_bytes(),
            scopes: record.scopes.bits(),
            meta,
            cold: 0,
        }
    }

    pub(super) fn negative(id: KeyId) -> Self {
        Entry {
            id: id.get(),
            // Never equal to the digest of any secret a request can present.
            digest: DUMMY_DIGEST,
            scopes: 0,
            meta: META_NEGATIVE | u64::from(Status::Unknown.to_byte()),
            cold: 0,
        }
    }

    pub(crate) fn digest(&self) -> SecretDigest {
        SecretDigest::from_bytes(self.digest)
    }

    pub(crate) fn is_negative(&self) -> bool {
        self.meta & META_NEGATIVE != 0
    }

    pub(crate) fn status(&self) -> Status {
        Status::from_byte((self.meta & 0xff) as u8)
    }

    pub(crate) fn read_only(&self) -> bool {
        self.meta & META_READ_ONLY != 0
    }

    pub(crate) fn scopes(&self) -> Scopes {
        Scopes::from_bits(self.scopes)
    }

    /// When the key expires, in seconds since the Unix epoch; `0` when it does not.
    #[inline]
    pub(crate) fn expires(&self) -> u64 {
        self.meta >> EXPIRES_SHIFT
    }

    /// Whether a rotation replaced the key.
    #[inline]
    pub(crate) fn deprecated(&self) -> bool {
        self.meta & META_DEPRECATED != 0
    }
}

/// The date of an expiry as the slot holds it (see [`expiry_secs`]); `None` for `0`, no expiry.
pub(crate) fn expiry_date(secs: u64) -> Option<time::OffsetDateTime> {
    if secs == 0 {
        return None;
    }
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
}

/// An expiry as the slot holds it: whole seconds, rounded down (a key is refused from the start of
/// the second it expires in), `0` for none; dates before 1970 become 1 (long expired).
fn expiry_secs(expires: Option<time::OffsetDateTime>) -> u64 {
    match expires {
        None => 0,
        Some(at) => u64::try_from(at.unix_timestamp()).map_or(1, |s| s.clamp(1, EXPIRES_MAX)),
    }
}

/// Asks for `slot`'s cache line without waiting for it.
#[inline(always)]
pub(super) fn touch(slot: &Slot) {
    // A prefetch instruction retires at once; a plain load that misses holds up the retirement of
    // everything behind it, hashing included, until memory answers.
    #[cfg(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "sse"
    ))]
    safe_arch::prefetch_t0(slot);
    #[cfg(not(all(
        any(target_arch = "x86", target_arch = "x86_64"),
        target_feature = "sse"
    )))]
    std::hint::black_box(slot.id());
}

/// The digest compared against when an id is unknown, so unknown and known ids take the same path.
pub(crate) const DUMMY_DIGEST: [u8; 32] = [0x5a; 32];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_flags_share_meta_without_touching_status() {
        use time::macros::datetime;
        for (expires, secs) in [
            (None, 0),
            (Some(datetime!(1960-01-01 0:00 UTC)), 1),
            (Some(datetime!(1970-01-01 0:00 UTC)), 1),
            (Some(datetime!(2030-05-06 7:08:09.9 UTC)), 1_904_281_689),
            (Some(datetime!(9999-12-31 23:59:59 UTC)), 253_402_300_799),
        ] {
            assert_eq!(expiry_secs(expires), secs);
            let mut meta = u64::from(Status::DisabledDueToCompany.to_byte()) | META_DEPRECATED;
            meta |= secs << EXPIRES_SHIFT;
            let e = Entry {
                meta,
                ..Entry::EMPTY
            };
            assert_eq!(e.expires(), secs);
            assert_eq!(e.status(), Status::DisabledDueToCompany);
            assert!(e.deprecated() && !e.read_only() && !e.is_negative());
        }
    }

    #[test]
    fn slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }
}
