//! Property tests: the `Authorization` parser, the key decoder and the authorization decision agree
//! with the plain restatement of the rules in `tests/common/reference.rs`, and never panic.

mod common;

use std::sync::{Arc, Mutex};

use http::header::AUTHORIZATION;
use http::{HeaderValue, Method, Request};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sha2::{Digest, Sha256};
use tower_api_key::key::{KeyError, KeyFormat, SecretDigest};
use tower_api_key::token::validator_fn;
use tower_api_key::{
    ApiKeyLayer, KeyRing, MemoryStore, NewKey, Rejection, RejectionKind, Scope, Scopes, Status,
    TokenError,
};

use common::reference::{self, KeyFacts, Verdict, BASE62};
use common::*;

const STATUSES: [Status; 8] = [
    Status::Enabled,
    Status::Disabled,
    Status::DisabledDueToUser,
    Status::DisabledDueToCompany,
    Status::DisabledDueToSystem,
    Status::DisabledDueToTenant,
    Status::DisabledDueSystemComponentsRestrictions,
    Status::Unknown,
];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

// --- Key decoder ----------------------------------------------------------------------------------

/// Mostly base62, sometimes another ASCII character or one that takes two bytes in UTF-8.
fn key_char() -> impl Strategy<Value = char> {
    prop_oneof![
        20 => select(BASE62.to_vec()).prop_map(char::from),
        1 => select(b"_-.~+/=: ".to_vec()).prop_map(char::from),
        1 => Just('é'),
    ]
}

/// Id texts at and around the edges of the id range.
fn id_text() -> impl Strategy<Value = String> {
    let edge = |v: u64| String::from_utf8(reference::encode_base62(v, 11)).expect("ascii");
    prop_oneof![
        4 => proptest::collection::vec(key_char(), 11).prop_map(|c| c.into_iter().collect()),
        1 => select(vec![
            edge(0),
            edge(1),
            edge((1 << 53) - 1),
            edge(1 << 53),
            edge(u64::MAX),
            "zzzzzzzzzzz".to_owned(),
        ]),
    ]
}

/// Key-shaped values: a prefix, an id, a secret, and a checksum that matches or not, behind zero to
/// two `secret-token:` wrappers.
fn key_like(prefix: String) -> impl Strategy<Value = String> {
    (
        id_text(),
        proptest::collection::vec(key_char(), 43),
        any::<bool>(),
        proptest::collection::vec(key_char(), 6),
        0..3usize,
    )
        .prop_map(move |(id, secret, good_checksum, checksum, wrappers)| {
            let secret: String = secret.into_iter().collect();
            let key = if good_checksum {
                reference::key_text(&prefix, id.as_bytes(), secret.as_bytes())
            } else {
                let checksum: String = checksum.into_iter().collect();
                format!("{prefix}_{id}{secret}{checksum}")
            };
            format!("{}{key}", reference::WRAPPER.repeat(wrappers))
        })
}

fn prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("tak".to_owned()),
        "[a-z0-9]{2,16}",
        Just("0000000000000000".to_owned()),
    ]
}

#[test]
fn key_decoder_agrees_with_the_reference() {
    let strategy = prefix().prop_flat_map(|prefix| {
        let value = prop_oneof![
            3 => key_like(prefix.clone()),
            1 => any::<String>(),
        ];
        (Just(prefix), value)
    });
    runner(4096)
        .run(&strategy, |(prefix, value)| {
            let format = KeyFormat::new(&prefix).expect("valid prefix");
            // The secret is compared through its digest, the only thing the crate lets out of it.
            let got = format
                .parse(&value)
                .map(|key| (key.id().get(), key.digest()));
            let want = reference::parse_key(&prefix, &value)
                .map(|(id, s)| (id, SecretDigest::from_bytes(Sha256::digest(s).into())));
            prop_assert_eq!(got, want, "prefix {:?}, value {:?}", prefix, value);
            Ok(())
        })
        .expect("KeyFormat::parse agrees with the reference");
}

#[test]
fn doubly_wrapped_key_is_not_key_shaped() {
    // One `secret-token:` wrapper is taken off; a second one leaves a value that is not a key.
    for prefix in ["tak", "0000000000000000"] {
        let format = KeyFormat::new(prefix).expect("valid prefix");
        let key = format.generate().expect("rng");
        let twice = format!("secret-token:secret-token:{}", key.expose());
        assert_eq!(format.parse(&twice).unwrap_err(), KeyError::NotKeyShaped);
    }
}

// --- Authorization header -------------------------------------------------------------------------

/// Bytes an `http::HeaderValue` can hold: HTAB, visible ASCII, space and obs-text.
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![0x20u8..=0x7e, Just(b'\t'), 0x80u8..=0xff]
}

fn token_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        12 => select(b"ABCxyz0189-._~+/".to_vec()),
        2 => Just(b'='),
        1 => header_byte(),
    ]
}

/// A bearer-shaped value: scheme, separator, wrapper, token (a key, or any token68-ish bytes) and
/// trailing whitespace, each from the cases the parser must tell apart.
fn bearer_like() -> impl Strategy<Value = Vec<u8>> {
    let key = (
        proptest::collection::vec(select(BASE62.to_vec()), 54),
        any::<bool>(),
    )
        .prop_map(|(body, unknown)| {
            if unknown {
                reference::key_text("tak", &body[..11], &body[11..])
            } else {
                format!("tak_{}", String::from_utf8(body).expect("ascii") + "000000")
            }
            .into_bytes()
        });
    (
        select(vec![
            "Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Bearerx", "Token", "",
        ]),
        select(vec!["", " ", "  ", "\t", " \t", "\t "]),
        select(vec![
            "",
            "secret-token:",
            "secret-token:secret-token:",
            "Secret-Token:",
        ]),
        prop_oneof![
            3 => proptest::collection::vec(token_byte(), 0..24),
            1 => key,
        ],
        select(vec!["", " ", "\t", " \t "]),
    )
        .prop_map(|(scheme, separator, wrapper, token, trailing)| {
            let mut value = Vec::new();
            value.extend_from_slice(scheme.as_bytes());
            value.extend_from_slice(separator.as_bytes());
            value.extend_from_slice(wrapper.as_bytes());
            value.extend_from_slice(&token);
            value.extend_from_slice(trailing.as_bytes());
            value
        })
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => bearer_like(),
        1 => proptest::collection::vec(header_byte(), 0..40),
    ]
}

fn query() -> impl Strategy<Value = Option<&'static str>> {
    select(vec![
        None,
        Some("a=1"),
        Some("access_token=x"),
        Some("page=2&access_token"),
        Some("access%5Ftoken=x"),
        Some("%61ccess_token=x"),
        Some("access_token_hint=1"),
        Some("ACCESS_TOKEN=1"),
        Some("x=access_token"),
        Some("&&access_token="),
    ])
}

#[test]
fn authorization_header_agrees_with_the_reference() {
    let rt = runtime();
    let ring = memory_ring();
    let strategy = (
        prop_oneof![
            1 => proptest::collection::vec(header_value(), 0..=0),
            8 => proptest::collection::vec(header_value(), 1..=1),
            1 => proptest::collection::vec(header_value(), 2..=3),
        ],
        query(),
        select(vec![4096usize, 80, 24]),
    );
    runner(4096)
        .run(&strategy, |(values, query, max_len)| {
            let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
            let reasons: Arc<Mutex<Vec<RejectionKind>>> = Arc::default();
            let validator = {
                let tokens = tokens.clone();
                validator_fn(move |token: &str| {
                    tokens.lock().expect("lock").push(token.to_owned());
                    Err(TokenError::invalid("property test"))
                })
            };
            let hook = {
                let reasons = reasons.clone();
                move |rejection: Rejection| {
                    reasons.lock().expect("lock").push(rejection.kind());
                    rejection.into_response::<Body>()
                }
            };
            let (probe, service) = Probe::behind(
                ApiKeyLayer::new(ring.clone())
                    .with_token_validator(validator)
                    .with_max_header_len(max_len)
                    .on_rejection(hook),
            );
            let uri = match query {
                Some(q) => format!("/things?{q}"),
                None => "/things".to_owned(),
            };
            let mut request = Request::builder()
                .uri(uri)
                .body(Body::default())
                .expect("request");
            for value in &values {
                let value = HeaderValue::from_bytes(value).expect("only header bytes");
                request.headers_mut().append(AUTHORIZATION, value);
            }
            let answer = rt.block_on(send(service, request));

            let slices: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let kinds = reasons.lock().expect("lock").clone();
            let tokens = tokens.lock().expect("lock").clone();
            prop_assert_eq!(probe.calls(), 0, "no key is valid here");
            prop_assert_eq!(kinds.len(), 1);
            prop_assert_eq!(answer.status.as_u16(), reference::status_of(kinds[0]));
            match reference::bearer(&slices, query, max_len) {
                Err(kind) => {
                    prop_assert_eq!(kinds[0], kind);
                    prop_assert!(tokens.is_empty(), "refused values reach no validator");
                }
                Ok(token) => {
                    let token = std::str::from_utf8(token).expect("token68 is ASCII");
                    prop_assert_eq!(kinds[0], RejectionKind::InvalidToken);
                    let expected: Vec<String> = match reference::parse_key("tak", token) {
                        Err(KeyError::NotKeyShaped) => {
                            let bare = token.strip_prefix(reference::WRAPPER).unwrap_or(token);
                            vec![bare.to_owned()]
                        }
                        _ => Vec::new(),
                    };
                    prop_assert_eq!(tokens, expected, "the validator sees non-keys only");
                }
            }
            Ok(())
        })
        .expect("the layer reads the Authorization header as the reference does");
}

// --- Authorization decision -----------------------------------------------------------------------

fn billing() -> Scope {
    Scope::register("billing.write").expect("valid scope name")
}

fn all_scopes() -> Vec<Scope> {
    vec![Scope::UI, Scope::REST, Scope::INTEGRATION, billing()]
}

fn methods() -> Vec<Method> {
    vec![
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::TRACE,
        Method::CONNECT,
        Method::from_bytes(b"PURGE").expect("method"),
        Method::from_bytes(b"get").expect("method"),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    scopes: Vec<Scope>,
    read_only: bool,
    statuses: (Status, Status, Status),
    method: Method,
    required: Option<Scope>,
    allow_options: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::subsequence(all_scopes(), 0..=4),
        any::<bool>(),
        (
            select(STATUSES.to_vec()),
            select(STATUSES.to_vec()),
            select(STATUSES.to_vec()),
        ),
        select(methods()),
        proptest::option::of(select(all_scopes())),
        any::<bool>(),
    )
        .prop_map(
            |(scopes, read_only, statuses, method, required, allow_options)| Case {
                scopes,
                read_only,
                statuses,
                method,
                required,
                allow_options,
            },
        )
}

#[test]
fn authorization_decision_matches_the_table() {
    let rt = runtime();
    let memory = MemoryStore::new();
    let ring = KeyRing::new(memory.clone());
    let cases = std::sync::atomic::AtomicU32::new(0);
    runner(512)
        .run(&case(), |case| {
            // Each case has its own user and company, so their statuses do not carry over.
            let n = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let user = format!("u-{n}");
            let company = format!("c-{n}");
            let owner = owner(&user, "user", &company, "Company");
            let scopes: Scopes = case.scopes.iter().copied().collect();
            let (status, user_status, company_status) = case.statuses;
            let verdict = reference::decide(
                KeyFacts {
                    scopes,
                    read_only: case.read_only,
                    enabled: [status, user_status, company_status]
                        .iter()
                        .all(|s| *s == Status::Enabled),
                },
                &case.method,
                case.required,
                case.allow_options,
            );
            rt.block_on(async {
                let key = issue(
                    &ring,
                    NewKey::new(owner)
                        .description("property")
                        .scopes(scopes)
                        .read_only(case.read_only)
                        .status(status),
                )
                .await;
                ring.set_user_status(&user, user_status)
                    .await
                    .expect("user status");
                ring.set_company_status(&company, company_status)
                    .await
                    .expect("company status");
                // The index of the ring that made the changes, and a cold ring reading the store.
                for (path, ring) in [
                    ("warm", ring.clone()),
                    ("cold", KeyRing::new(memory.clone())),
                ] {
                    let mut layer =
                        ApiKeyLayer::new(ring).allow_options_for_read_only(case.allow_options);
                    if let Some(scope) = case.required {
                        layer = layer.require_scope(scope);
                    }
                    let (probe, service) = Probe::behind(layer);
                    let request = request(case.method.clone(), "/things", &[&bearer(key.key())]);
                    let answer = send(service, request).await;
                    match &verdict {
                        Verdict::Pass => {
                            prop_assert_eq!(answer.status.as_u16(), 200, "{} {:?}", path, case);
                            prop_assert_eq!(probe.calls(), 1);
                            let identity = probe.identity().expect("identity");
                            prop_assert_eq!(identity.key_id(), Some(key.id()));
                        }
                        Verdict::Refuse(status, challenge) => {
                            prop_assert_eq!(answer.status.as_u16(), *status, "{} {:?}", path, case);
                            prop_assert_eq!(answer.challenge(), challenge.as_deref());
                            prop_assert_eq!(probe.calls(), 0);
                        }
                    }
                }
                Ok::<_, TestCaseError>(())
            })
        })
        .expect("the layer decides as the table says");
}
