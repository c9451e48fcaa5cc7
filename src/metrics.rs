//! What the layer tells the outside about the requests it decides: counters and a histogram
//! through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`), and the key id and
//! reason in the current `tracing` span (feature `tracing`). The request path calls the functions
//! here, one line each; without the features they are empty and compile to nothing.
//!
//! # Metrics
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `tower_api_key_requests_accepted_total` | counter | `kind` = `api_key` \| `token` | requests let through to the inner service |
//! | `tower_api_key_requests_refused_total` | counter | `reason` = [`Reason::as_str`] | requests refused, by reason (one series per reason) |
//! | `tower_api_key_store_lookup_seconds` | histogram | `outcome` = `found` \| `absent` \| `error` | the key store read on an index miss (one per id however many requests wait for it) |
//! | `tower_api_key_index_lookups_total` | counter | `result` = `hit` \| `miss` | index lookups of a presented key; hit ratio = hit / (hit + miss) |
//!
//! No label carries a key id, a secret or anything else a client chose: every label set is fixed.
//!
//! The handles are registered once, with the recorder installed at the first request any layer in
//! the process sees, so a request costs an atomic add per metric and no lookup in the recorder.
//! **Install the recorder before the first request**: a layer that ran before it keeps reporting
//! to the no-op recorder. Every series exists (at zero) from that first request on.
//!
//! # Tracing
//!
//! The layer records `key_id` (on acceptance and refusal) and `reason` (on refusal) into the
//! current span when that span declares them, as a request span can:
//!
//! ```text
//! TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
//!     tracing::info_span!("request", path = request.uri().path(),
//!         key_id = tracing::field::Empty, reason = tracing::field::Empty)
//! })
//! ```
//!
//! The store lookup of a key the index does not hold runs in a `key_lookup` span (level `DEBUG`)
//! carrying `key_id`. The secret is never recorded. Without any subscriber set, the accept path
//! pays one atomic load for this.

use std::future::Future;

use crate::identity::Identity;
use crate::key::KeyId;
use crate::rejection::Reason;

/// A request let through with `identity`.
#[inline]
pub(crate) fn accepted(identity: &Identity) {
    #[cfg(feature = "metrics")]
    registered::handles().accepted[registered::kind_slot(identity.kind())].increment(1);
    #[cfg(feature = "tracing")]
    if let Some(id) = identity.key_id() {
        span::record(None, Some(id));
    }
    #[cfg(not(any(feature = "metrics", feature = "tracing")))]
    let _ = identity;
}

/// A request refused for `reason`; `key_id` when the value was a key whose id could be read.
#[inline]
pub(crate) fn refused(reason: Reason, key_id: Option<KeyId>) {
    #[cfg(feature = "metrics")]
    registered::handles().refused[registered::reason_slot(reason)].increment(1);
    #[cfg(feature = "tracing")]
    span::record(Some(reason), key_id);
    #[cfg(not(feature = "tracing"))]
    let _ = key_id;
    #[cfg(not(any(feature = "metrics", feature = "tracing")))]
    let _ = reason;
}

/// The index looked a presented key up: `hit` when it held the id.
#[inline]
pub(crate) fn index_lookup(hit: bool) {
    #[cfg(feature = "metrics")]
    registered::handles().index[usize::from(!hit)].increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = hit;
}

/// `read`, a key store read on an index miss, timed by its outcome.
#[cfg(feature = "metrics")]
pub(crate) async fn store_read<T, E>(
    read: impl Future<Output = Result<Option<T>, E>>,
) -> Result<Option<T>, E> {
    let start = std::time::Instant::now();
    let result = read.await;
    let outcome = match &result {
        Ok(Some(_)) => 0,
        Ok(None) => 1,
        Err(_) => 2,
    };
    registered::handles().store_lookup[outcome].record(start.elapsed());
    result
}

/// `read`, a key store read on an index miss, as it is.
#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn store_read<F: Future>(read: F) -> F {
    read
}

/// `lookup`, the deferred check of key `id`, inside a span that carries the id.
#[inline]
pub(crate) fn in_lookup_span<F: Future>(id: KeyId, lookup: F) -> impl Future<Output = F::Output> {
    #[cfg(feature = "tracing")]
    {
        use tracing::Instrument;
        lookup.instrument(tracing::debug_span!("key_lookup", key_id = id.get()))
    }
    #[cfg(not(feature = "tracing"))]
    {
        let _ = id;
        lookup
    }
}

#[cfg(feature = "tracing")]
mod span {
    use crate::key::KeyId;
    use crate::rejection::Reason;

    /// Records into the current span; fields it does not declare are left out by `tracing`.
    #[inline]
    pub(super) fn record(reason: Option<Reason>, key_id: Option<KeyId>) {
        // One relaxed load while no subscriber was ever set: the accept path's cost without tracing.
        if !tracing::dispatcher::has_been_set() {
            return;
        }
        record_slow(reason, key_id);
    }

    #[cold]
    #[inline(never)]
    fn record_slow(reason: Option<Reason>, key_id: Option<KeyId>) {
        let span = tracing::Span::current();
        if span.is_disabled() {
            return;
        }
        if let Some(id) = key_id {
            span.record("key_id", id.get());
        }
        if let Some(reason) = reason {
            span.record("reason", reason.as_str());
        }
    }
}

#[cfg(feature = "metrics")]
mod registered {
    use std::sync::OnceLock;

    use ::metrics::{Counter, Histogram, Unit};

    use crate::identity::{IdentityKind, Status};
    use crate::rejection::Reason;
    use crate::scope::Scope;

    const ACCEPTED: &str = "tower_api_key_requests_accepted_total";
    const REFUSED: &str = "tower_api_key_requests_refused_total";
    const STORE_LOOKUP: &str = "tower_api_key_store_lookup_seconds";
    const INDEX_LOOKUPS: &str = "tower_api_key_index_lookups_total";

    /// One reason of each kind, in slot order: `reason_slot(REASONS[i]) == i`.
    pub(super) const REASONS: [Reason; 21] = [
        Reason::NoCredentials,
        Reason::OtherScheme,
        Reason::DuplicateHeader,
        Reason::TwoMethods,
        Reason::EmptyValue,
        Reason::MalformedValue,
        Reason::Oversized,
        Reason::MalformedKey,
        Reason::BadChecksum,
        Reason::UnknownKey,
        Reason::WrongSecret,
        Reason::Disabled(Status::Disabled),
        Reason::NoValidator,
        Reason::InvalidToken,
        Reason::MissingScope(Scope::REST),
        Reason::ReadOnly,
        Reason::StoreError,
        Reason::StoreTimeout,
        Reason::ValidatorError,
        Reason::Expired,
        Reason::RateLimited,
    ];

    /// The acceptance counter of `kind`.
    #[inline]
    pub(super) fn kind_slot(kind: IdentityKind) -> usize {
        match kind {
            IdentityKind::ApiKey => 0,
            IdentityKind::Token => 1,
        }
    }

    /// The refusal counter of `reason`. Exhaustive, so a new reason cannot go uncounted.
    #[inline]
    pub(super) fn reason_slot(reason: Reason) -> usize {
        match reason {
            Reason::NoCredentials => 0,
            Reason::OtherScheme => 1,
            Reason::DuplicateHeader => 2,
            Reason::TwoMethods => 3,
            Reason::EmptyValue => 4,
            Reason::MalformedValue => 5,
            Reason::Oversized => 6,
            Reason::MalformedKey => 7,
            Reason::BadChecksum => 8,
            Reason::UnknownKey => 9,
            Reason::WrongSecret => 10,
            Reason::Disabled(_) => 11,
            Reason::NoValidator => 12,
            Reason::InvalidToken => 13,
            Reason::MissingScope(_) => 14,
            Reason::ReadOnly => 15,
            Reason::StoreError => 16,
            Reason::StoreTimeout => 17,
            Reason::ValidatorError => 18,
            Reason::Expired => 19,
            Reason::RateLimited => 20,
        }
    }

    /// Every series the layer reports, registered with the recorder of the first request.
    pub(super) struct Handles {
        /// `api_key`, `token`.
        pub(super) accepted: [Counter; 2],
        /// By [`reason_slot`].
        pub(super) refused: [Counter; REASONS.len()],
        /// `found`, `absent`, `error`.
        pub(super) store_lookup: [Histogram; 3],
        /// `hit`, `miss`.
        pub(super) index: [Counter; 2],
    }

    static HANDLES: OnceLock<Handles> = OnceLock::new();

    #[inline]
    pub(super) fn handles() -> &'static Handles {
        HANDLES.get_or_init(register)
    }

    #[cold]
    fn register() -> Handles {
        ::metrics::describe_counter!(
            ACCEPTED,
            Unit::Count,
            "Requests let through, by identity kind."
        );
        ::metrics::describe_counter!(REFUSED, Unit::Count, "Requests refused, by reason.");
        ::metrics::describe_histogram!(
            STORE_LOOKUP,
            Unit::Seconds,
            "Key store reads on an index miss, by outcome."
        );
        ::metrics::describe_counter!(
            INDEX_LOOKUPS,
            Unit::Count,
            "Index lookups of presented keys, by result."
        );
        Handles {
            accepted: ["api_key", "token"]
                .map(|kind| ::metrics::counter!(ACCEPTED, "kind" => kind)),
            refused: REASONS
                .map(|reason| ::metrics::counter!(REFUSED, "reason" => reason.as_str())),
            store_lookup: ["found", "absent", "error"]
                .map(|outcome| ::metrics::histogram!(STORE_LOOKUP, "outcome" => outcome)),
            index: ["hit", "miss"]
                .map(|result| ::metrics::counter!(INDEX_LOOKUPS, "result" => result)),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_reason_has_its_own_counter() {
            for (slot, reason) in REASONS.into_iter().enumerate() {
                assert_eq!(reason_slot(reason), slot, "{reason}");
            }
            let mut labels: Vec<_> = REASONS.iter().map(|r| r.as_str()).collect();
            labels.sort_unstable();
            labels.dedup();
            assert_eq!(labels.len(), REASONS.len(), "two slots share a label");
        }
    }
}
