//! dudect-style constant-time test of the verify path (Reparaz, Balasch and Verbauwhede, "Dude, is my
//! code constant time?", 2017), with `dudect-bencher`'s Welch t-test over cropped distributions.
//!
//! Each class pair sends requests through the layer's `call` on a service polled ready beforehand,
//! the two classes interleaved at random. Inputs of both classes are drawn from pools made before
//! anything is timed, and each block of requests is built before any of them is timed, so making an
//! input of one class cannot leave the machine in another state than making one of the other.
//!
//! - `a_secret_first_vs_last_byte`: one known key; a wrong secret that differs from the real one in
//!   its first character, against one that differs in its last (both with a valid checksum).
//! - `b_unknown_id_vs_wrong_secret`: the same key id and the same wrong secrets, sent to a ring that
//!   has the id in its negative cache and to a ring that holds a key with that id. One id alone in
//!   each index, so both sit in their home slot: the pair measures the decision, not where a hash
//!   table happened to put two different ids (see SECURITY.md for the placement of many ids). The
//!   two rings swap roles at random between blocks of requests.
//! - `c_short_vs_long_bearer`: values that are not keys, of 8 characters against just under the
//!   header limit. Refusal time grows with the length the client sent; this pair reports by how
//!   much and is not held to the threshold.
//!
//! `cargo bench --bench constant_time [filter]`; `CT_SAMPLES` sets the samples per class (default
//! 10^6). `scripts/security-checks` runs it and holds pairs a and b to max |t| < 5.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use dudect_bencher::ctbench::{run_benches_console, BenchMetadata, BenchName, BenchOpts};
use dudect_bencher::rand::RngExt;
use dudect_bencher::{BenchRng, Class, CtRunner};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use sha2::{Digest, Sha256};
use tower::{Layer, Service};
use tower_api_key::key::SecretDigest;
use tower_api_key::store::{ChangeEvent, KeyRecord};
use tower_api_key::{
    ApiKey, ApiKeyLayer, KeyId, KeyRing, KeyStore, MemoryStore, Owner, Scopes, Status,
};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const HEAD: &str = "tak_";
const ID_LEN: usize = 11;
const SECRET_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
const POOL: usize = 10_000;
const BLOCK: usize = 10_000;

type Inner = fn(Request<()>) -> Ready<Result<Response<()>, Infallible>>;
type Svc = ApiKey<tower::util::ServiceFn<Inner>>;

fn inner(_: Request<()>) -> Ready<Result<Response<()>, Infallible>> {
    ready(Ok(Response::new(())))
}

/// The id and secret of the key under test, and two rings, each over a store of its own: one holds
/// the key, the other has its id in the negative cache, and they can swap.
struct Setup {
    id: u64,
    secret: Vec<u8>,
    record: KeyRecord,
    rt: tokio::runtime::Runtime,
    rings: [(MemoryStore, KeyRing, Svc); 2],
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

impl Setup {
    /// Makes ring `known` hold the key and the other one cache its id as unknown; both answered
    /// from their index afterwards.
    fn roles(&self, known: usize) {
        let key = key_text(self.id, &self.secret);
        let id = self.record.id;
        for (i, (store, ring, service)) in self.rings.iter().enumerate() {
            let holds = i == known;
            let status = self.rt.block_on(async {
                if holds {
                    let _ = store.insert(self.record.clone()).await;
                } else {
                    store.delete(id).await.expect("deleted");
                }
                ring.apply(&ChangeEvent::Key(id));
                let mut service = service.clone();
                std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
                service.call(request(&format!("Bearer {key}"))).await
            });
            let status = status.expect("infallible").status();
            assert_eq!(status, if holds { 200 } else { 401 });
            assert_eq!(ring.stats().keys, usize::from(holds));
        }
    }
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let mut rng = <BenchRng as dudect_bencher::rand::SeedableRng>::seed_from_u64(0x5e7);
        let id = rng.random_range(1..1u64 << 53);
        let secret = random_base62(SECRET_LEN, &mut rng);
        let record = KeyRecord {
            id: KeyId::new(id).expect("valid id"),
            digest: SecretDigest::from_bytes(Sha256::digest(&secret).into()),
            owner: Owner {
                user_uid: "u-bench".into(),
                user_name: "bench".into(),
                company_id: "c-bench".into(),
                company_name: "Bench".into(),
            },
            description: "constant time".into(),
            read_only: false,
            scopes: Scopes::EMPTY,
            status: Status::Enabled,
            user_status: Status::Enabled,
            company_status: Status::Enabled,
            created: time::OffsetDateTime::UNIX_EPOCH,
            status_locked: false,
            expires: None,
            deprecated: None,
            last_used: None,
        };
        let ring = || {
            let store = MemoryStore::new();
            let ring = KeyRing::new(store.clone());
            let service = ApiKeyLayer::new(ring.clone()).layer(tower::service_fn(inner as Inner));
            (store, ring, service)
        };
        let setup = Setup {
            id,
            secret,
            record,
            rt: runtime(),
            rings: [ring(), ring()],
        };
        setup.roles(0);
        setup
    })
}

fn random_base62(len: usize, rng: &mut BenchRng) -> Vec<u8> {
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..62)])
        .collect()
}

/// `tak_<id><secret><checksum>` with the checksum that matches.
fn key_text(id: u64, secret: &[u8]) -> String {
    let mut body = HEAD.as_bytes().to_vec();
    let mut digits = [0u8; ID_LEN];
    let mut rest = id;
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(rest % 62) as usize];
        rest /= 62;
    }
    body.extend_from_slice(&digits);
    body.extend_from_slice(secret);
    let mut crc = u64::from(crc32fast::hash(&body));
    let mut tail = [0u8; CHECKSUM_LEN];
    for slot in tail.iter_mut().rev() {
        *slot = ALPHABET[(crc % 62) as usize];
        crc /= 62;
    }
    body.extend_from_slice(&tail);
    String::from_utf8(body).expect("ascii")
}

/// The key under test with the secret character at `at` (0 to 42) replaced: passes every offline
/// check, fails the digest compare.
fn wrong_secret(at: usize, rng: &mut BenchRng) -> String {
    let setup = setup();
    let mut secret = setup.secret.clone();
    while secret[at] == setup.secret[at] {
        secret[at] = ALPHABET[rng.random_range(0..62)];
    }
    key_text(setup.id, &secret)
}

fn request(authorization: &str) -> Request<()> {
    let mut request = Request::get("/api/v3/things").body(()).expect("request");
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_str(authorization).expect("header value"),
    );
    request
}

fn samples_per_class() -> usize {
    std::env::var("CT_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// `POOL` bearer values made by `f` before anything is timed.
fn pool(rng: &mut BenchRng, mut f: impl FnMut(&mut BenchRng) -> String) -> Vec<String> {
    (0..POOL).map(|_| format!("Bearer {}", f(rng))).collect()
}

/// Times `samples_per_class()` requests of each class, in random order: a block of requests is built,
/// then each is passed to `call` on a service that was polled ready, and `call` alone is timed (it
/// decides every request here without waiting: the id is in the index).
///
/// Before each block, `services` says which service each class (left, right) goes to.
fn measure(
    runner: &mut CtRunner,
    rng: &mut BenchRng,
    name: &str,
    [left, right]: [&[String]; 2],
    mut services: impl FnMut(&mut BenchRng) -> [Svc; 2],
) {
    let per_class = samples_per_class();
    let mut cx = Context::from_waker(Waker::noop());
    // Class, and the request (taken by the one call that is timed).
    type Slot = (Class, Cell<Option<Request<()>>>);
    let mut block: Vec<Slot> = Vec::with_capacity(BLOCK);
    let mut done = 0;
    while done < per_class {
        let n = (per_class - done).min(BLOCK / 2);
        let [l, r] = services(rng);
        let (l, r) = (RefCell::new(l), RefCell::new(r));
        let mut classes: Vec<Class> = (0..n).flat_map(|_| [Class::Left, Class::Right]).collect();
        for i in (1..classes.len()).rev() {
            classes.swap(i, rng.random_range(0..=i));
        }
        block.clear();
        for class in classes {
            let values = match class {
                Class::Left => left,
                Class::Right => right,
            };
            let value = &values[rng.random_range(0..values.len())];
            block.push((class, Cell::new(Some(request(value)))));
        }
        for (class, slot) in &block {
            let service = match class {
                Class::Left => &l,
                Class::Right => &r,
            };
            let ready = service.borrow_mut().poll_ready(&mut cx);
            assert!(matches!(ready, Poll::Ready(Ok(()))));
            runner.run_one(*class, || {
                let request = slot.take().expect("one call per request");
                service.borrow_mut().call(request)
            });
        }
        done += n;
    }
    println!("ct {name}: {per_class} samples per class");
}

/// The service of the ring that holds the key, for both classes.
fn known(_: &mut BenchRng) -> [Svc; 2] {
    let setup = setup();
    setup.roles(0);
    [setup.rings[0].2.clone(), setup.rings[0].2.clone()]
}

fn a_secret_first_vs_last_byte(runner: &mut CtRunner, rng: &mut BenchRng) {
    let first = pool(rng, |rng| wrong_secret(0, rng));
    let last = pool(rng, |rng| wrong_secret(SECRET_LEN - 1, rng));
    let name = "a_secret_first_vs_last_byte";
    measure(runner, rng, name, [&first, &last], known);
}

fn b_unknown_id_vs_wrong_secret(runner: &mut CtRunner, rng: &mut BenchRng) {
    let setup = setup();
    let wrong = pool(rng, |rng| {
        let at = rng.random_range(0..SECRET_LEN);
        wrong_secret(at, rng)
    });
    // Each block draws which ring holds the key, so where each ring's memory happens to lie
    // weighs on both classes alike.
    let swap = |rng: &mut BenchRng| {
        let holds = rng.random_range(0..2);
        setup.roles(holds);
        let service = |i: usize| setup.rings[i].2.clone();
        [service(1 - holds), service(holds)]
    };
    measure(
        runner,
        rng,
        "b_unknown_id_vs_wrong_secret",
        [&wrong, &wrong],
        swap,
    );
}

fn c_short_vs_long_bearer(runner: &mut CtRunner, rng: &mut BenchRng) {
    // The default limit is 4096 bytes for the whole header.
    let to_string = |v: Vec<u8>| String::from_utf8(v).expect("ascii");
    let short = pool(rng, |rng| to_string(random_base62(8, rng)));
    let long = pool(rng, |rng| {
        to_string(random_base62(4096 - "Bearer ".len(), rng))
    });
    measure(
        runner,
        rng,
        "c_short_vs_long_bearer",
        [&short, &long],
        known,
    );
}

fn main() {
    // Arguments as cargo passes them to a bench (`--bench`, a filter) are not options here: the first
    // one that is not a flag filters the pairs by name.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let bench =
        |name: &'static str, benchfn: fn(&mut CtRunner, &mut BenchRng), seed: u64| BenchMetadata {
            name: BenchName(name),
            seed: Some(seed),
            benchfn,
        };
    let benches = vec![
        bench(
            "a_secret_first_vs_last_byte",
            a_secret_first_vs_last_byte,
            0xa11ce,
        ),
        bench(
            "b_unknown_id_vs_wrong_secret",
            b_unknown_id_vs_wrong_secret,
            0xb0b,
        ),
        bench("c_short_vs_long_bearer", c_short_vs_long_bearer, 0xca401),
    ];
    let opts = BenchOpts {
        filter,
        ..BenchOpts::default()
    };
    run_benches_console(opts, benches).expect("console output");
}
