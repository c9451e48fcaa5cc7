//! The accept and reject paths of the layer, beside a bare service and tower-http's bearer check
//! measured in the same run, plus the primitives that bound them.
//!
//! Every id builds its request outside the timed section (`iter_batched`) and times one `call` plus
//! one poll of the returned future, which is ready at once on every path measured here.
//!
//! `cargo bench --bench accept`; `scripts/bench-report` turns the results into the ratios of
//! BENCHMARKS.md. Set `ACCEPT_BENCH_MAX_KEYS=1000000` to skip the 10M-key case on small machines.

// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use http::{header::AUTHORIZATION, HeaderValue, Request, Response};
use sha2::{Digest, Sha256};
use tower::{Layer, Service, ServiceExt};
use tower_api_key::store::{KeyRecord, KeyStore, KeyUpdate, ListQuery, Page, StoreError};
use tower_api_key::token::{JwtClaims, JwtIssuer, JwtValidator};
use tower_api_key::{
    ApiKeyLayer, Identity, KeyFormat, KeyId, KeyRing, Owner, Scope, Scopes, Status,
};

mod support;
use support::call_ready;

/// Requests are built in batches of 16 just before they are timed, so a request is in cache when the
/// service sees it, as it is in a server that has just parsed it. With criterion's large batches the
/// header bytes of a request built a thousand requests earlier were out of cache, a cost that only
/// the paths which read the header paid, and that a server never pays.
const BATCH: BatchSize = BatchSize::NumIterations(16);

const JWT_SECRET: &[u8] = b"a benchmark secret of 32 bytes or more";

/// A store that holds only ids and digests, so ten million keys fit; records are built on demand.
struct SyntheticStore {
    keys: Vec<(KeyId, [u8; 32], Status)>,
    owner: Owner,
}

impl SyntheticStore {
    fn record(&self, (id, digest, status): &(KeyId, [u8; 32], Status)) -> KeyRecord {
        KeyRecord {
            id: *id,
            digest: tower_api_key::key::SecretDigest::from_bytes(*digest),
            owner: self.owner.clone(),
            description: "bench".into(),
            read_only: false,
            scopes: Scopes::from([Scope::REST]),
            status: *status,
            user_status: Status::Enabled,
            company_status: Status::Enabled,
            created: time::OffsetDateTime::UNIX_EPOCH,
            status_locked: false,
            expires: None,
            deprecated: None,
            last_used: None,
        }
    }
}

#[async_trait]
impl KeyStore for SyntheticStore {
    async fn get(&self, id: KeyId) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self
            .keys
            .binary_search_by_key(&id, |k| k.0)
            .ok()
            .map(|i| self.record(&self.keys[i])))
    }
    async fn insert(&self, _: KeyRecord) -> Result<(), StoreError> {
        Err(StoreError::backend("read-only benchmark store"))
    }
    async fn update(&self, _: KeyId, _: KeyUpdate) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::backend("read-only benchmark store"))
    }
    async fn delete(&self, _: KeyId) -> Result<bool, StoreError> {
        Err(StoreError::backend("read-only benchmark store"))
    }
    async fn list(&self, query: &ListQuery) -> Result<Page<KeyRecord>, StoreError> {
        let start = usize::try_from(query.offset).unwrap_or(usize::MAX);
        let items = self
            .keys
            .iter()
            .skip(start)
            .take(usize::try_from(query.limit).unwrap_or(usize::MAX))
            .map(|k| self.record(k))
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

/// A deterministic xorshift generator: the benchmark needs reproducible choices, not secrecy.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// N keys in a ring's index, and the texts of up to `pool` of them (shuffled) to present.
struct Keys {
    ring: KeyRing,
    pool: Vec<HeaderValue>,
}

fn owner() -> Owner {
    Owner {
        user_uid: "955b0b80-03b2-49fd-bf38-14785ecff0a8".into(),
        user_name: "bench".into(),
        company_id: "3b139961-6b11-4fd8-9e87-c2be1b0e9ca8".into(),
        company_name: "Bench".into(),
    }
}

fn bearer(key: &str) -> HeaderValue {
    HeaderValue::try_from(format!("Bearer {key}")).expect("valid header")
}

fn keys(rt: &tokio::runtime::Runtime, n: usize, pool: usize, disabled: usize) -> Keys {
    let format = KeyFormat::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
    let mut entries = Vec::with_capacity(n + disabled);
    let mut texts = Vec::with_capacity(pool.min(n));
    for i in 0..n + disabled {
        let key = format.generate().expect("rng");
        let status = if i < n {
            Status::Enabled
        } else {
            Status::Disabled
        };
        entries.push((key.id(), *key.digest().as_bytes(), status));
        // Keep a uniform sample of texts: reservoir sampling over the enabled keys.
        if i < n {
            if texts.len() < pool {
                texts.push(bearer(key.expose()));
            } else {
                let j = rng.below(i + 1);
                if j < pool {
                    texts[j] = bearer(key.expose());
                }
            }
        } else {
            texts.push(bearer(key.expose()));
        }
    }
    entries.sort_unstable_by_key(|e| e.0);
    let store = SyntheticStore {
        keys: entries,
        owner: owner(),
    };
    let ring = KeyRing::builder(store)
        .with_negative_capacity(1 << 16)
        .build();
    let cached = rt.block_on(ring.preload()).expect("preload");
    assert_eq!(cached, n + disabled);
    let mut pool = texts;
    let enabled = pool.len() - disabled;
    rng.shuffle(&mut pool[..enabled]);
    // Copied in their new order, so each value's bytes sit after the previous one's and drawing the
    // pool in order reads memory in order: the setup between timed calls then neither misses the
    // cache at random nor evicts the page-table entries of the index the timed calls read.
    let pool = pool
        .iter()
        .map(|v| HeaderValue::from_bytes(v.as_bytes()).expect("valid header"))
        .collect();
    Keys { ring, pool }
}

/// A request as a server hands it over: its header bytes freshly written (so in cache), not shared
/// with the pool they were drawn from.
fn request(header: Option<&HeaderValue>) -> Request<()> {
    let mut request = Request::get("/api/v3/things").body(()).expect("valid");
    if let Some(value) = header {
        let fresh = HeaderValue::from_bytes(value.as_bytes()).expect("valid header");
        request.headers_mut().insert(AUTHORIZATION, fresh);
    }
    request
}

fn inner(
) -> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone {
    tower::service_fn(|request: Request<()>| async move {
        black_box(&request);
        Ok::<_, Infallible>(Response::new(()))
    })
}

fn ready<S: Service<Request<()>, Error = Infallible>>(rt: &tokio::runtime::Runtime, s: S) -> S {
    rt.block_on(async move {
        let mut s = s;
        s.ready().await.expect("ready");
        s
    })
}

/// Presents the pool's keys in order (the pool was shuffled before timing).
fn bench_pool<S>(
    c: &mut Criterion,
    group: &str,
    id: &str,
    service: &mut S,
    pool: &[HeaderValue],
    expect: u16,
) where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
{
    // The timed closure only debug-asserts; check the path's answer once here for real.
    let first = call_ready(service, request(Some(&pool[0])));
    assert_eq!(first.status().as_u16(), expect, "{group}/{id}");
    let mut g = c.benchmark_group(group);
    let mut next = 0usize;
    // `name/param` ids become nested directories (target/criterion/<group>/<name>/<param>/new/).
    let id = match id.split_once('/') {
        Some((name, param)) => BenchmarkId::new(name, param),
        None => BenchmarkId::from_parameter(id),
    };
    g.bench_function(id, |b| {
        b.iter_batched(
            || {
                let value = &pool[next % pool.len()];
                next = next.wrapping_add(1);
                request(Some(value))
            },
            |request| {
                let response = call_ready(service, request);
                debug_assert_eq!(response.status().as_u16(), expect);
                response
            },
            BATCH,
        )
    });
    g.finish();
}

fn max_keys() -> usize {
    std::env::var("ACCEPT_BENCH_MAX_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

fn accept(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Paths that may wait (store lookups, token validation) arm tokio timers; the ones measured here
    // complete on their first poll, but need the runtime's context to do so.
    let _context = rt.enter();

    let mut bare = ready(&rt, inner());
    let token = "a-fixed-bearer-token-of-the-same-length-as-a-key-0123456789abcdef";
    // tower-http marks its bearer check deprecated as too basic for real use; it is the baseline here
    // precisely because it does the least work a bearer check can do.
    #[allow(deprecated)]
    let mut tower_http = ready(
        &rt,
        tower_http::validate_request::ValidateRequestHeaderLayer::bearer(token).layer(inner()),
    );
    let small = keys(&rt, 1000, 1000, 0);

    let mut g = c.benchmark_group("accept");
    g.bench_function("bare", |b| {
        let value = small.pool[0].clone();
        b.iter_batched(
            || request(Some(&value)),
            |request| call_ready(&mut bare, request),
            BATCH,
        )
    });
    g.bench_function("tower_http_bearer", |b| {
        let value = bearer(token);
        b.iter_batched(
            || request(Some(&value)),
            |request| {
                let response = call_ready(&mut tower_http, request);
                debug_assert_eq!(response.status(), 200);
                response
            },
            BATCH,
        )
    });
    g.finish();

    let layer = |ring: &KeyRing| {
        ApiKeyLayer::new(ring.clone())
            .require_scope(Scope::REST)
            .with_token_validator(JwtValidator::hs256(JWT_SECRET))
    };

    let mut service = ready(&rt, layer(&small.ring).layer(inner()));
    bench_pool(c, "accept", "api_key/1000", &mut service, &small.pool, 200);

    let jwt = JwtIssuer::hs256(JWT_SECRET)
        .sign(JwtClaims {
            sub: owner().user_uid,
            name: "bench".into(),
            company_id: owner().company_id,
            company_name: "Bench".into(),
            scope: "rest".into(),
            read_only: false,
            exp: jsonwebtoken_exp(),
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
            jti: None,
            generation: None,
            company_generation: None,
        })
        .expect("signed");
    bench_pool(
        c,
        "accept",
        "jwt_fallback",
        &mut service,
        &[bearer(&jwt)],
        200,
    );

    // Reject paths at 1M keys, where the index no longer fits in cache.
    let million = keys(&rt, 1_000_000.min(max_keys()), 1_000_000, 1000);
    let mut service = ready(&rt, layer(&million.ring).layer(inner()));
    let enabled = &million.pool[..million.pool.len() - 1000];
    let disabled = &million.pool[million.pool.len() - 1000..];
    bench_pool(c, "accept", "api_key/1000000", &mut service, enabled, 200);

    reject(c, &rt, &mut service, &million.ring, enabled, disabled);
    drop(service);
    drop(million);

    if max_keys() >= 10_000_000 {
        let ten = keys(&rt, 10_000_000, 1_000_000, 0);
        let mut service = ready(&rt, layer(&ten.ring).layer(inner()));
        bench_pool(
            c,
            "accept",
            "api_key/10000000",
            &mut service,
            &ten.pool,
            200,
        );
    }

    primitives(c, &small);
}

fn jsonwebtoken_exp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 86_400
}

/// A key-shaped value with the given id and secret text and a correct checksum.
fn forge(prefix: &str, id_text: &str, secret_text: &str) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body = format!("{prefix}_{id_text}{secret_text}");
    let mut crc = u64::from(crc32fast::hash(body.as_bytes()));
    let mut tail = [0u8; 6];
    for slot in tail.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    format!("{body}{}", std::str::from_utf8(&tail).expect("ascii"))
}

fn key_text(value: &HeaderValue) -> &str {
    &value.to_str().expect("ascii")["Bearer ".len()..]
}

fn reject<S>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    service: &mut S,
    ring: &KeyRing,
    enabled: &[HeaderValue],
    disabled: &[HeaderValue],
) where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
{
    const SAMPLES: usize = 4096;
    let head = "tak_".len();
    let sample = |f: &dyn Fn(&str) -> String| -> Vec<HeaderValue> {
        enabled[..SAMPLES.min(enabled.len())]
            .iter()
            .map(|v| bearer(&f(key_text(v))))
            .collect()
    };
    let malformed = sample(&|k| {
        let mut k = k.to_owned().into_bytes();
        k[head + 20] = b'-';
        String::from_utf8(k).expect("ascii")
    });
    let bad_checksum = sample(&|k| {
        let mut k = k.to_owned().into_bytes();
        let last = k.len() - 1;
        k[last] = if k[last] == b'0' { b'1' } else { b'0' };
        String::from_utf8(k).expect("ascii")
    });
    let wrong_secret = sample(&|k| {
        let id = &k[head..head + 11];
        let mut secret = k[head + 11..head + 54].to_owned().into_bytes();
        secret[42] = if secret[42] == b'A' { b'B' } else { b'A' };
        forge("tak", id, std::str::from_utf8(&secret).expect("ascii"))
    });
    // Unknown ids with valid checksums, answered once by the store and then from the negative cache.
    let mut rng = Rng(7);
    let unknown: Vec<HeaderValue> = (0..SAMPLES)
        .map(|_| {
            let key = KeyFormat::default().generate().expect("rng");
            let mut id_text = [0u8; 11];
            let mut id = rng.next() % (1u64 << 53);
            for slot in id_text.iter_mut().rev() {
                *slot = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                    [(id % 62) as usize];
                id /= 62;
            }
            let text = key.expose();
            bearer(&forge(
                "tak",
                std::str::from_utf8(&id_text).expect("ascii"),
                &text[head + 11..head + 54],
            ))
        })
        .collect();
    rt.block_on(async {
        for value in &unknown {
            assert!(ring.verify(key_text(value)).await.is_err());
        }
    });
    assert!(ring.stats().unknown_ids >= SAMPLES);

    let mut g = c.benchmark_group("reject");
    g.bench_function("no_header", |b| {
        b.iter_batched(
            || request(None),
            |request| call_ready(service, request),
            BATCH,
        )
    });
    g.finish();
    bench_pool(c, "reject", "malformed", service, &malformed, 401);
    bench_pool(c, "reject", "bad_checksum", service, &bad_checksum, 401);
    bench_pool(c, "reject", "unknown_id", service, &unknown, 401);
    bench_pool(c, "reject", "wrong_secret", service, &wrong_secret, 401);
    bench_pool(c, "reject", "disabled", service, disabled, 401);
}

fn primitives(c: &mut Criterion, small: &Keys) {
    let format = KeyFormat::default();
    let text = key_text(&small.pool[0]).to_owned();
    let parsed = format.parse(&text).expect("valid key");
    // The secret: the 43 characters before the 6 of the checksum.
    let secret = text.as_bytes()[text.len() - 6 - 43..text.len() - 6].to_vec();
    assert_eq!(
        parsed.digest(),
        tower_api_key::key::SecretDigest::from_bytes(Sha256::digest(&secret).into())
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let identity: Identity = rt.block_on(small.ring.verify(&text)).expect("valid");

    let mut g = c.benchmark_group("primitives");
    g.bench_function("sha256_secret", |b| {
        b.iter(|| Sha256::digest(black_box(&secret[..])))
    });
    // What the layer runs for that hash: the secret padded into one block and compressed, without
    // the streaming buffer. Reported beside `sha256_secret`, which the targets are stated against.
    g.bench_function("sha256_block", |b| {
        b.iter(|| {
            let secret = black_box(&secret[..]);
            let mut block = [0u8; 64];
            block[..secret.len()].copy_from_slice(secret);
            block[secret.len()] = 0x80;
            block[56..].copy_from_slice(&((secret.len() as u64) * 8).to_be_bytes());
            let mut state: [u32; 8] = [
                0x6a09_e667,
                0xbb67_ae85,
                0x3c6e_f372,
                0xa54f_f53a,
                0x510e_527f,
                0x9b05_688c,
                0x1f83_d9ab,
                0x5be0_cd19,
            ];
            sha2::compress256(&mut state, &[block.into()]);
            state
        })
    });
    g.bench_function("parse_key", |b| {
        b.iter(|| format.parse(black_box(&text)).map(|k| k.id()))
    });
    g.bench_function("extensions_insert", |b| {
        b.iter_batched(
            http::Extensions::new,
            |mut extensions| {
                extensions.insert(identity.clone());
                extensions
            },
            BATCH,
        )
    });
    for n in [1_000_000usize, 10_000_000] {
        if n > max_keys() {
            continue;
        }
        random_read(&mut g, n);
    }
    g.finish();
}

/// One dependent read of a random 64-byte entry among `n`: a pointer chase through a shuffled cycle.
fn random_read(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, n: usize) {
    #[repr(align(64))]
    #[derive(Clone, Copy)]
    struct Line {
        next: usize,
        _pad: [u64; 7],
    }
    let mut order: Vec<usize> = (0..n).collect();
    Rng(0x1234_5678 ^ n as u64).shuffle(&mut order);
    let mut lines = vec![
        Line {
            next: 0,
            _pad: [0; 7]
        };
        n
    ];
    for w in 0..n {
        lines[order[w]].next = order[(w + 1) % n];
    }
    let mut at = order[0];
    g.bench_function(BenchmarkId::new("random_read", n), |b| {
        b.iter(|| {
            at = lines[at].next;
            at
        })
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(60)
}

criterion_group! {
    name = benches;
    config = config();
    targets = accept
}
criterion_main!(benches);
