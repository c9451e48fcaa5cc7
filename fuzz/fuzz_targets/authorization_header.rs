//! The `Authorization` parser, driven through the layer: never a panic, and the same reading as the
//! reference in `tests/common/reference.rs` (the refusal kind, and the token that goes on).
//!
//! Input: the first line is the query (empty for none), each further line one `Authorization` value.
#![no_main]

mod support;
#[path = "../../tests/common/reference.rs"]
mod reference;

use std::sync::{Arc, Mutex, OnceLock};

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceBuilder;
use tower_api_key::key::KeyError;
use tower_api_key::token::validator_fn;
use tower_api_key::{ApiKeyLayer, KeyRing, MemoryStore, Rejection, RejectionKind, TokenError};

use support::{send, Probe};

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| KeyRing::new(MemoryStore::new()))
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let Ok(query) = std::str::from_utf8(lines.next().unwrap_or_default()) else {
        return;
    };
    let uri = if query.is_empty() {
        "/things".to_owned()
    } else {
        format!("/things?{query}")
    };
    let Ok(mut request) = Request::builder().uri(uri).body(()) else {
        return;
    };
    for line in lines {
        // Bytes a header value cannot hold (NUL, CR, other controls) never reach a service.
        let Ok(value) = HeaderValue::from_bytes(line) else {
            return;
        };
        request.headers_mut().append(AUTHORIZATION, value);
    }
    let values: Vec<Vec<u8>> = request
        .headers()
        .get_all(AUTHORIZATION)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    let query = request.uri().query().map(str::to_owned);

    let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let kinds: Arc<Mutex<Vec<RejectionKind>>> = Arc::default();
    let validator = {
        let tokens = tokens.clone();
        validator_fn(move |token: &str| {
            tokens.lock().expect("lock").push(token.to_owned());
            Err(TokenError::invalid("fuzz"))
        })
    };
    let hook = {
        let kinds = kinds.clone();
        move |rejection: Rejection| {
            kinds.lock().expect("lock").push(rejection.kind());
            rejection.into_response::<()>()
        }
    };
    let probe = Probe::default();
    let service = ServiceBuilder::new()
        .layer(
            ApiKeyLayer::new(ring().clone())
                .with_token_validator(validator)
                .on_rejection(hook),
        )
        .service_fn(probe.handler());
    let response = send(service, request);

    let kinds = kinds.lock().expect("lock").clone();
    let tokens = tokens.lock().expect("lock").clone();
    assert_eq!(probe.calls(), 0, "no key is valid here");
    assert_eq!(kinds.len(), 1);
    assert_eq!(response.status().as_u16(), reference::status_of(kinds[0]));
    let slices: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    match reference::bearer(&slices, query.as_deref(), 4096) {
        Err(kind) => {
            assert_eq!(kinds[0], kind);
            assert!(tokens.is_empty(), "a refused value reached the validator");
        }
        Ok(token) => {
            let token = std::str::from_utf8(token).expect("token68 is ASCII");
            assert_eq!(kinds[0], RejectionKind::InvalidToken);
            let expected: Vec<String> = match reference::parse_key("tak", token) {
                Err(KeyError::NotKeyShaped) => {
                    vec![token.strip_prefix(reference::WRAPPER).unwrap_or(token).to_owned()]
                }
                _ => Vec::new(),
            };
            assert_eq!(tokens, expected, "the validator sees exactly the non-keys");
        }
    }
});
