//! Verifying a presented key: the decision from the index on a hit, and one store read per id,
//! shared by every request that waits for it, on a miss.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use subtle::Choice;
use tokio::sync::OnceCell;

use super::KeyRing;
use crate::identity::{Identity, Status};
use crate::index::{Entry, Probe, Stamp, DUMMY_DIGEST};
use crate::key::{KeyError, KeyId, ParsedKey, SecretDigest};
use crate::rejection::Reason;
use crate::scope::Scopes;
use crate::store::{StoreError, StoreErrorKind};

#[derive(Clone, Copy)]
pub(super) enum Fill {
    /// What the store said, cached: `None` means no such key. It holds for as long as the change
    /// counters stand where the stamp says; a waiter that takes it later reads the index instead.
    Fresh(Option<Entry>, Stamp),
    /// A change landed while the store was read; read again.
    Stale,
    /// The store failed; everyone who waited for this lookup fails with it rather than asking again.
    Failed(StoreErrorKind),
}

pub(super) type Flights = Mutex<HashMap<KeyId, Arc<OnceCell<Fill>>>>;

/// One request's part in a single-flight lookup. Dropping it takes the lookup out of the map however
/// the request ends: answered, failed, timed out, cancelled by its client, or unwound by a panic.
struct Flight<'a> {
    flights: &'a Flights,
    id: KeyId,
    cell: Arc<OnceCell<Fill>>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        if flights
            .get(&self.id)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
        {
            flights.remove(&self.id);
        }
    }
}

impl KeyRing {
    /// Verifies a presented key end to end (parse, index or store, compare, status), as the layer does.
    /// Scope and method checks are the layer's.
    pub async fn verify(&self, presented: &str) -> Result<Identity, VerifyError> {
        let parsed = self.inner.format.parse(presented).map_err(|e| match e {
            KeyError::NotKeyShaped => VerifyError::NotAKey,
            _ => VerifyError::Invalid,
        })?;
        let digest = parsed.digest();
        let result = match self.check_cached(parsed.id(), &digest) {
            Some(result) => result,
            None => self
                .check_store(parsed.id(), digest)
                .await
                .map_err(|_| VerifyError::Unavailable)?,
        };
        result.map_err(|_| VerifyError::Invalid)
    }

    #[inline]
    pub(crate) fn parse<'a>(&self, value: &'a [u8]) -> Result<ParsedKey<'a>, KeyError> {
        self.inner.format.parse_bytes(value)
    }

    /// Hashes the secret and decides from the index alone: `None` on a miss.
    #[inline]
    pub(crate) fn check_cached(
        &self,
        id: KeyId,
        digest: &SecretDigest,
    ) -> Option<Result<Identity, Reason>> {
        match self.inner.index.probe(id) {
            Probe::Found(entry) => Some(self.decide(id, Some(&entry), digest)),
            Probe::Miss => None,
        }
    }

    /// The hit path: starts the index lookup, hashes the secret while the slot's cache line is
    /// fetched, then decides. `None` on a miss, with the digest for [`KeyRing::check_store`].
    #[inline]
    pub(crate) fn check_key(
        &self,
        key: &ParsedKey<'_>,
    ) -> (Option<Result<Identity, Reason>>, SecretDigest) {
        let id = key.id();
        let (probe, digest) = self.inner.index.lookup(id, || key.digest());
        crate::metrics::index_lookup(matches!(probe, Probe::Found(_)));
        let outcome = match probe {
            Probe::Found(entry) => Some(self.decide(id, Some(&entry), &digest)),
            Probe::Miss => None,
        };
        (outcome, digest)
    }

    /// The miss path: one store read per id however many requests wait, bounded in time and number.
    pub(crate) async fn check_store(
        &self,
        id: KeyId,
        digest: SecretDigest,
    ) -> Result<Result<Identity, Reason>, StoreError> {
        self.ensure_following();
        let inner = &self.inner;
        let work = async {
            loop {
                let flight = {
                    let mut flights = inner.flights.lock().unwrap_or_else(|e| e.into_inner());
                    Flight {
                        flights: &inner.flights,
                        id,
                        cell: flights.entry(id).or_default().clone(),
                    }
                };
                // The waiter that runs the lookup keeps the store's error with its cause.
                let mut cause = None;
                let fill = *flight
                    .cell
                    .get_or_init(|| async {
                        // This request missed the index just before another's fill landed and
                        // left the single-flight map: that fill is the answer.
                        let stamp = inner.index.stamp(Some(id));
                        if let Probe::Found(entry) = inner.index.probe(id) {
                            return Fill::Fresh(Some(entry), stamp);
                        }
                        match self.read_store(id).await {
                            Ok(fill) => fill,
                            Err(e) => {
                                let kind = e.kind();
                                cause = Some(e);
                                Fill::Failed(kind)
                            }
                        }
                    })
                    .await;
                drop(flight);
                match fill {
                    // A change since the lookup (a revocation that returned before this request
                    // joined it) makes its answer stale for this request.
                    Fill::Fresh(entry, stamp) if inner.index.unchanged_since(id, stamp) => {
                        return Ok(self.decide(id, entry.as_ref(), &digest))
                    }
                    Fill::Failed(kind) => {
                        return Err(cause.unwrap_or_else(|| StoreError::of_kind(kind)))
                    }
                    Fill::Fresh(..) | Fill::Stale => {
                        if let Some(result) = self.check_cached(id, &digest) {
                            return Ok(result);
                        }
                    }
                }
            }
        };
        tokio::time::timeout(inner.lookup_timeout, work)
            .await
            .unwrap_or_else(|_| Err(StoreError::timeout()))
    }

    /// One store read for a miss, cached unless a change landed meanwhile.
    async fn read_store(&self, id: KeyId) -> Result<Fill, StoreError> {
        let inner = &self.inner;
        let _permit = inner
            .inflight
            .acquire()
            .await
            .map_err(|_| StoreError::overloaded())?;
        let stamp = inner.index.stamp(Some(id));
        let record = crate::metrics::store_read(inner.store.get(id)).await?;
        if record.as_ref().is_some_and(|r| r.id != id) {
            return Err(StoreError::corrupt("store returned another key's record"));
        }
        Ok(if inner.index.fill(id, record.as_ref(), stamp) {
            Fill::Fresh(record.as_ref().map(Entry::positive_of), stamp)
        } else {
            Fill::Stale
        })
    }

    /// The constant-time decision. Unknown ids are compared against a dummy digest, so unknown id,
    /// wrong secret and disabled key run the same code up to the final branch.
    #[inline]
    fn decide(
        &self,
        id: KeyId,
        entry: Option<&Entry>,
        digest: &SecretDigest,
    ) -> Result<Identity, Reason> {
        let (stored, known, status, scopes, read_only) = match entry {
            Some(e) => (
                e.digest(),
                !e.is_negative(),
                e.status(),
                e.scopes(),
                e.read_only(),
            ),
            None => (
                SecretDigest::from_bytes(DUMMY_DIGEST),
                false,
                Status::Unknown,
                Scopes::EMPTY,
                false,
            ),
        };
        let matches = stored.ct_eq(digest);
        let ok = matches & Choice::from(u8::from(known & status.is_enabled()));
        if bool::from(ok) {
            // Read only for the holder of the secret, so neither the expiry nor the clock read
            // tells anybody else anything.
            let lifecycle = entry.map_or((0, false), |e| (e.expires(), e.deprecated()));
            let (expires, _) = lifecycle;
            if expires != 0 && unix_now() >= expires {
                return Err(Reason::Expired);
            }
            if let Some(uses) = &self.inner.uses {
                uses.note(id);
            }
            Ok(Identity::from_key(
                id,
                scopes,
                read_only,
                lifecycle,
                self.inner.index.handle(),
            ))
        } else {
            // One table read for every refusal, without a branch on what the id was: unknown id
            // and wrong secret run the same instructions to the end.
            let known = usize::from(known);
            let which = known + (known & usize::from(bool::from(matches)));
            Err([
                Reason::UnknownKey,
                Reason::WrongSecret,
                Reason::Disabled(status),
            ][which])
        }
    }
}

/// Whole seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why [`KeyRing::verify`] refused a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not key-shaped: another kind of credential.
    NotAKey,
    /// Bad checksum, unknown id, wrong secret or not enabled: one answer for all.
    Invalid,
    /// The store failed or timed out.
    Unavailable,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAKey => "not an API key",
            Self::Invalid => "invalid API key",
            Self::Unavailable => "key store unavailable",
        })
    }
}

impl std::error::Error for VerifyError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::Duration;

    use crate::ring::testing::{cached, issue_one, Held};
    use crate::store::{KeyUpdate, MemoryStore};

    #[tokio::test]
    async fn each_refusal_names_its_cause() {
        let ring = KeyRing::new(MemoryStore::new());
        let k = issue_one(&ring).await;
        let right = ring.parse(k.key().as_bytes()).expect("parses").digest();
        let wrong = SecretDigest::from_bytes([1; 32]);
        let unknown = KeyId::new(k.id().get() ^ 1).expect("valid id");
        let reason = |id, digest: &SecretDigest| match ring.decide(id, None, digest) {
            Err(reason) => reason,
            Ok(_) => panic!("accepted"),
        };
        // Nothing in the index: an unknown id, whatever the digest.
        assert_eq!(reason(unknown, &right), Reason::UnknownKey);
        let check = |digest: &SecretDigest| ring.check_cached(k.id(), digest).expect("cached");
        assert!(check(&right).is_ok());
        assert_eq!(check(&wrong).err(), Some(Reason::WrongSecret));
        ring.update(k.id(), KeyUpdate::status(Status::Disabled))
            .await
            .expect("updated");
        // Only the holder of the secret learns that the key is disabled.
        assert_eq!(
            check(&right).err(),
            Some(Reason::Disabled(Status::Disabled))
        );
        assert_eq!(check(&wrong).err(), Some(Reason::WrongSecret));
    }

    #[tokio::test]
    async fn a_second_ring_on_the_same_store_fills_from_the_store() {
        let store = MemoryStore::new();
        let a = KeyRing::new(store.clone());
        let b = KeyRing::new(store);
        let issued = issue_one(&a).await;
        assert_eq!(cached(&b), (0, 0));
        assert!(b.verify(issued.key()).await.is_ok());
        assert_eq!(cached(&b), (1, 0));
    }

    #[tokio::test]
    async fn abandoned_lookups_leave_no_flight_behind() {
        let ring = KeyRing::builder(MemoryStore::new())
            .with_lookup_timeout(Duration::from_millis(5))
            .with_max_inflight_lookups(1)
            .build();
        let digest = SecretDigest::from_bytes([0; 32]);
        // With the only lookup permit taken, every lookup waits: until its timeout, or until its
        // client goes away.
        let busy = ring.inner.inflight.acquire().await.expect("permit");
        for raw in 1..=10 {
            let id = KeyId::new(raw).expect("valid id");
            let result = ring.check_store(id, digest).await;
            assert!(result.is_err_and(|e| e.is_timeout()));
        }
        for raw in 11..=20 {
            let id = KeyId::new(raw).expect("valid id");
            let mut lookup = Box::pin(ring.check_store(id, digest));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(std::future::Future::poll(lookup.as_mut(), &mut cx).is_pending());
            drop(lookup);
        }
        drop(busy);
        let flights = ring.inner.flights.lock().expect("lock").len();
        assert_eq!(
            flights, 0,
            "abandoned lookups must leave the single-flight map"
        );
    }

    #[tokio::test]
    async fn a_miss_that_lost_the_race_to_a_fill_reads_the_index_not_the_store() {
        let store = Held::default();
        let other = KeyRing::new(store.inner.clone());
        let k = issue_one(&other).await;
        let ring = KeyRing::new(store.clone());
        let digest = ring.parse(k.key().as_bytes()).expect("parses").digest();
        assert!(ring
            .check_store(k.id(), digest)
            .await
            .expect("read")
            .is_ok());
        // A request that missed the index before that fill landed comes in now.
        assert!(ring
            .check_store(k.id(), digest)
            .await
            .expect("read")
            .is_ok());
        assert_eq!(store.state.gets.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn a_lookup_answered_before_a_revocation_is_not_handed_to_later_requests() {
        let store = Held::default();
        let ring = KeyRing::new(store.clone());
        let k = issue_one(&ring).await;
        let digest = ring.parse(k.key().as_bytes()).expect("parses").digest();
        let enabled = ring.get(k.id()).await.expect("read").expect("exists");
        // A lookup of the key finished, and its answer still sits in the single-flight map...
        let answer = Fill::Fresh(
            Some(Entry::positive_of(&enabled)),
            ring.inner.index.stamp(Some(k.id())),
        );
        ring.inner
            .flights
            .lock()
            .expect("lock")
            .insert(k.id(), Arc::new(OnceCell::new_with(Some(answer))));
        // ...when a revocation lands and returns; the key then falls out of the index.
        ring.update(k.id(), KeyUpdate::status(Status::Disabled))
            .await
            .expect("updated");
        ring.inner.index.invalidate(k.id());
        let result = ring.check_store(k.id(), digest).await.expect("read");
        assert!(
            result.is_err(),
            "a request after the revocation took the old answer"
        );
    }
}
