//! Instruction counts of the accept and reject paths, for callgrind (stable where wall time is not):
//!
//! ```sh
//! cargo bench --bench instructions --no-run
//! valgrind --tool=callgrind --toggle-collect='instructions::measured*' \
//!     target/release/deps/instructions-<hash> accept
//! callgrind_annotate callgrind.out.<pid>
//! ```
//!
//! Modes: `accept`, `bare` (the inner service alone), `no_header`, `bad_checksum`, and the accept
//! path with a lifecycle feature on: `expiring` (the key expires in 3 days: a clock read and a
//! `Sunset` header), `expires_later` (in a year: a clock read only), `rate_limited` (a quota no
//! request reaches), `last_used` (the ring tracks use).
//!
//! Each mode runs its path `ROUNDS` times inside a `measured_*` function, so the count divided by
//! `ROUNDS` is the cost of one request. Without valgrind it just runs and prints the count of calls.

// criterion is not used here; the binary is driven by valgrind.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;

use http::{header::AUTHORIZATION, HeaderValue, Request, Response};
use tower::{Layer, Service, ServiceExt};
use tower_api_key::{ApiKeyLayer, KeyRing, MemoryStore, NewKey, Owner, RateLimit, Scope};

mod support;
use support::call_ready;

const ROUNDS: usize = 10_000;

fn requests(value: &HeaderValue) -> Vec<Request<()>> {
    (0..ROUNDS)
        .map(|_| {
            let mut request = Request::get("/api/v3/things").body(()).expect("valid");
            request.headers_mut().insert(AUTHORIZATION, value.clone());
            request
        })
        .collect()
}

#[inline(never)]
fn measured_bare<S>(service: &mut S, requests: Vec<Request<()>>) -> Vec<Response<()>>
where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
{
    requests
        .into_iter()
        .map(|r| call_ready(service, r))
        .collect()
}

#[inline(never)]
fn measured_layer<S>(service: &mut S, requests: Vec<Request<()>>) -> Vec<Response<()>>
where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
{
    requests
        .into_iter()
        .map(|r| call_ready(service, r))
        .collect()
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "accept".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _context = rt.enter();
    let ring = if mode == "last_used" {
        KeyRing::builder(MemoryStore::new())
            .track_last_used(std::time::Duration::from_secs(3600))
            .build()
    } else {
        KeyRing::new(MemoryStore::new())
    };
    let expires = match mode.as_str() {
        "expiring" => Some(time::OffsetDateTime::now_utc() + time::Duration::days(3)),
        "expires_later" => Some(time::OffsetDateTime::now_utc() + time::Duration::days(365)),
        _ => None,
    };
    let owner = Owner {
        user_uid: "u".into(),
        user_name: "bench".into(),
        company_id: "c".into(),
        company_name: "Bench".into(),
    };
    let mut last = None;
    for _ in 0..1000 {
        let mut new = NewKey::new(owner.clone())
            .description("k")
            .scope(Scope::REST);
        if let Some(at) = expires {
            new = new.expires(at);
        }
        last = Some(rt.block_on(ring.issue(new)).expect("issued"));
    }
    let key = last.expect("issued");
    let value = match mode.as_str() {
        "accept" | "bare" | "expiring" | "expires_later" | "rate_limited" | "last_used" => {
            format!("Bearer {}", key.key())
        }
        "no_header" => String::new(),
        "bad_checksum" => {
            let mut k = key.key().to_owned();
            let last = if k.ends_with('0') { "1" } else { "0" };
            k.replace_range(k.len() - 1.., last);
            format!("Bearer {k}")
        }
        other => panic!(
            "unknown mode {other}: accept, bare, no_header, bad_checksum, expiring, \
             expires_later, rate_limited, last_used"
        ),
    };
    let inner = tower::service_fn(|request: Request<()>| async move {
        black_box(&request);
        Ok::<_, Infallible>(Response::new(()))
    });
    let mut reqs = requests(&HeaderValue::try_from(value.as_str()).expect("valid"));
    if mode == "no_header" {
        for r in &mut reqs {
            r.headers_mut().remove(AUTHORIZATION);
        }
    }
    let responses = if mode == "bare" {
        let mut service = rt.block_on(inner.ready_oneshot()).expect("ready");
        measured_bare(&mut service, reqs)
    } else {
        let mut layer = ApiKeyLayer::new(ring).require_scope(Scope::REST);
        if mode == "rate_limited" {
            layer = layer.rate_limit(RateLimit::new(u32::MAX, std::time::Duration::from_secs(1)));
        }
        let mut service = rt
            .block_on(layer.layer(inner).ready_oneshot())
            .expect("ready");
        measured_layer(&mut service, reqs)
    };
    let status = responses[0].status();
    println!("{mode}: {} calls, status {status}", responses.len());
}
