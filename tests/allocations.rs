//! What the layer allocates, counted by a global allocator: the accept path allocates only what
//! inserting the identity into `http::Extensions` costs, the reject paths only the response, and a
//! cached key costs a bounded number of bytes.
//!
//! Counts are per thread (`allocation-counter`), so tests running beside each other do not mix.

use std::convert::Infallible;

use async_trait::async_trait;
use http::{header::AUTHORIZATION, HeaderValue, Request, Response};
use tower::{Layer, ServiceExt};
use tower_api_key::key::SecretDigest;
use tower_api_key::store::{KeyRecord, KeyStore, KeyUpdate, ListQuery, Page, StoreError};
use tower_api_key::{
    ApiKeyLayer, Identity, KeyId, KeyRing, MemoryStore, NewKey, Owner, Scope, Scopes, Status,
};

#[path = "../benches/support/mod.rs"]
mod support;
use support::call_ready;

/// Allocations made by `f` on this thread, and its result.
fn allocations_of<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let mut out = None;
    let info = allocation_counter::measure(|| out = Some(f()));
    (info.count_total, out.expect("ran"))
}

fn request(authorization: Option<&str>) -> Request<()> {
    let mut request = Request::get("/api/v3/things").body(()).expect("valid");
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert(AUTHORIZATION, HeaderValue::from_str(value).expect("valid"));
    }
    request
}

fn owner() -> Owner {
    Owner {
        user_uid: "u1".into(),
        user_name: "alice".into(),
        company_id: "c1".into(),
        company_name: "Alpha".into(),
    }
}

#[test]
fn accept_path_allocates_only_the_extension_insert_and_reject_paths_only_the_response() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _context = rt.enter();
    let ring = KeyRing::new(MemoryStore::new());
    let key = rt
        .block_on(ring.issue(NewKey::new(owner()).description("k").scope(Scope::REST)))
        .expect("issued");
    let disabled = rt
        .block_on(
            ring.issue(
                NewKey::new(owner())
                    .description("d")
                    .scope(Scope::REST)
                    .status(Status::Disabled),
            ),
        )
        .expect("issued");
    let identity: Identity = rt.block_on(ring.verify(key.key())).expect("valid");

    let inner = tower::service_fn(|request: Request<()>| async move {
        drop(request);
        Ok::<_, Infallible>(Response::new(()))
    });
    let mut bare = rt.block_on(inner.ready_oneshot()).expect("ready");
    let mut service = rt
        .block_on(
            ApiKeyLayer::new(ring.clone())
                .require_scope(Scope::REST)
                .layer(inner)
                .ready_oneshot(),
        )
        .expect("ready");

    // Warm both paths once: first calls may fill lazily built state (challenge values, TLS).
    let bearer = format!("Bearer {}", key.key());
    call_ready(&mut service, request(Some(&bearer)));
    call_ready(&mut service, request(None));

    let (bare_allocs, _) = allocations_of(|| call_ready(&mut bare, request(Some(&bearer))));
    let (request_allocs, r) = allocations_of(|| request(Some(&bearer)));
    drop(r);
    let (accept_allocs, response) =
        allocations_of(|| call_ready(&mut service, request(Some(&bearer))));
    assert_eq!(response.status(), 200);
    let (insert_allocs, _) = allocations_of(|| {
        let mut extensions = http::Extensions::new();
        extensions.insert(identity.clone());
        extensions
    });
    assert_eq!(
        accept_allocs - request_allocs,
        (bare_allocs - request_allocs) + insert_allocs,
        "accept path: {accept_allocs} allocations, request {request_allocs}, bare service {bare_allocs}, \
         extensions insert {insert_allocs}"
    );

    // The standard 401 with its challenge: what any refusal must build.
    let (response_allocs, _) = allocations_of(|| {
        let challenge = HeaderValue::from_static(r#"Bearer realm="api""#);
        let mut response = Response::new(());
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, challenge);
        response
    });
    let refusals = [
        None,
        Some("Basic dXNlcjpwYXNz".to_owned()),
        Some(format!("Bearer {}", &key.key()[..20])),
        Some(format!("Bearer {}0", &key.key()[..key.key().len() - 1])),
        Some(format!("Bearer {}", disabled.key())),
    ];
    for value in refusals {
        let (request_allocs, r) = allocations_of(|| request(value.as_deref()));
        drop(r);
        let (total, response) =
            allocations_of(|| call_ready(&mut service, request(value.as_deref())));
        assert!(response.status().is_client_error());
        assert!(
            total - request_allocs <= response_allocs,
            "refusing {value:?} made {} allocations beyond the request; a response costs {response_allocs}",
            total - request_allocs
        );
    }
}

/// A store with only ids and digests, so a million keys cost the test little besides the index.
struct Synthetic {
    keys: Vec<(KeyId, [u8; 32])>,
}

#[async_trait]
impl KeyStore for Synthetic {
    async fn get(&self, _: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Ok(None)
    }
    async fn insert(&self, _: KeyRecord) -> Result<(), StoreError> {
        Err(StoreError::backend("read only"))
    }
    async fn update(&self, _: KeyId, _: KeyUpdate) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::backend("read only"))
    }
    async fn delete(&self, _: KeyId) -> Result<bool, StoreError> {
        Err(StoreError::backend("read only"))
    }
    async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
        let items = self
            .keys
            .iter()
            .skip(query.offset as usize)
            .take(query.limit as usize)
            .map(|(id, digest)| KeyRecord {
                id: *id,
                digest: SecretDigest::from_bytes(*digest),
                owner: owner(),
                description: "integration key".into(),
                read_only: false,
                scopes: Scopes::from([Scope::REST]),
                status: Status::Enabled,
                user_status: Status::Enabled,
                company_status: Status::Enabled,
                created: time::OffsetDateTime::UNIX_EPOCH,
                status_locked: false,
                expires: None,
                deprecated: None,
                last_used: None,
            })
            .collect();
        Ok(Page {
            items,
            total: self.keys.len() as u64,
        })
    }
    async fn set_user_status(&self, _: &str, _: Status) -> Result<(), StoreError> {
        Ok(())
    }
    async fn set_company_status(&self, _: &str, _: Status) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Bytes per cached key at one million keys, every heap byte the index holds counted.
#[test]
fn a_cached_key_costs_at_most_256_bytes_at_a_million_keys() {
    const N: usize = 1_000_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut keys: Vec<(KeyId, [u8; 32])> = (1..=N as u64)
        .map(|i| {
            // Distinct ids spread like random ones; digests need not match any secret here.
            let id = KeyId::new(i.wrapping_mul(0x9E37_79B9) % ((1 << 53) - 1) + 1).expect("valid");
            (id, [i as u8; 32])
        })
        .collect();
    keys.sort_unstable_by_key(|k| k.0);
    keys.dedup_by_key(|k| k.0);
    let n = keys.len();
    let store = Synthetic { keys };

    let mut ring = None;
    let info = allocation_counter::measure(|| {
        let r = KeyRing::new(store);
        let cached = rt.block_on(r.preload()).expect("preload");
        assert_eq!(cached, n);
        ring = Some(r);
    });
    let ring = ring.expect("built");
    // Bytes still held when preloading is done: the index and nothing transient.
    let held = info.bytes_current;
    let per_key = held as f64 / n as f64;
    println!(
        "index: {n} keys, {held} bytes on the heap, {per_key:.1} bytes a key (slot table {} bytes)",
        ring.stats().table_bytes
    );
    assert!(per_key <= 256.0, "{per_key:.1} bytes a key");
}
