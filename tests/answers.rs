//! The answer table of the crate docs: what a client gets for each kind of request, and what it never gets (reasons, secrets).

mod common;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_api_key::store::KeyUpdate;
use tower_api_key::{
    ApiKeyLayer, KeyRing, MemoryStore, NewKey, Reason, Rejection, RejectionKind, Scope, Status,
};

use common::*;

/// A key ring over `memory` whose `get` can be made to fail, and a key issued through another ring
/// on the same memory store, so the first request through the faulty ring goes to the store.
async fn faulty(timeout: Duration) -> (FaultStore, KeyRing, String) {
    let memory = MemoryStore::new();
    let issued = issue(
        &KeyRing::new(memory.clone()),
        NewKey::new(alice())
            .description("fault injection")
            .scope(Scope::REST),
    )
    .await;
    let store = FaultStore::new(memory);
    let ring = KeyRing::builder(store.clone())
        .with_lookup_timeout(timeout)
        .build();
    (store, ring, issued.key().to_owned())
}

#[tokio::test]
async fn valid_key_reaches_the_inner_service_unchanged() {
    let ring = memory_ring();
    let issued = issue(&ring, NewKey::new(alice()).description("valid")).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    send(service, get_with_key(issued.key()))
        .await
        .assert_passed();
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn no_header_gets_401_without_error() {
    let (probe, service) = Probe::behind(ApiKeyLayer::new(memory_ring()));

    let answer = send(service, request(Method::GET, "/things", &[])).await;
    answer.assert_refused(401, Some(MISSING));
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn refusal_without_credentials_is_ready_on_first_poll() {
    // A refusal is ready on the first poll: no store or validator is asked for a missing header.
    let (_probe, service) = Probe::behind(ApiKeyLayer::new(memory_ring()));
    let mut future = Box::pin(send(service, request(Method::GET, "/", &[])));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match std::future::Future::poll(future.as_mut(), &mut cx) {
        std::task::Poll::Ready(answer) => answer.assert_refused(401, Some(MISSING)),
        std::task::Poll::Pending => panic!("a refusal without credentials waits for nothing"),
    }
}

#[tokio::test]
async fn other_scheme_gets_401_without_error() {
    let ring = memory_ring();
    let issued = issue(&ring, NewKey::new(alice()).description("valid")).await;
    let key = issued.key();
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    // A valid key behind another scheme, or with no scheme at all, is not a bearer credential.
    for value in [
        "Basic dXNlcjpwYXNz".to_owned(),
        "Digest username=\"alice\"".to_owned(),
        format!("Token {key}"),
        format!("ApiKey {key}"),
        format!("Bearer_{key}"),
        key.to_owned(),
    ] {
        let answer = send(
            service.clone(),
            request(Method::GET, "/things", &[value.as_str()]),
        )
        .await;
        answer.assert_refused(401, Some(MISSING));
    }
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn two_authorization_headers_get_400() {
    let ring = memory_ring();
    let issued = issue(&ring, NewKey::new(alice()).description("valid")).await;
    let valid = bearer(issued.key());
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    let cases: [[&str; 2]; 6] = [
        [&valid, &valid],
        [&valid, "Bearer not a token"],
        ["Bearer not a token", &valid],
        [&valid, "Basic dXNlcjpwYXNz"],
        ["Basic dXNlcjpwYXNz", &valid],
        [&valid, "Bearer"],
    ];
    for (i, headers) in cases.iter().enumerate() {
        let answer = send(service.clone(), request(Method::GET, "/things", headers)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "case {i}");
        answer.assert_refused(400, Some(INVALID_REQUEST));
    }
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn empty_bearer_gets_400() {
    let (probe, service) = Probe::behind(ApiKeyLayer::new(memory_ring()));

    for value in ["Bearer", "Bearer ", "Bearer    ", "Bearer \t", "bearer  "] {
        let answer = send(service.clone(), request(Method::GET, "/things", &[value])).await;
        answer.assert_refused(400, Some(INVALID_REQUEST));
    }
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn non_token68_gets_400() {
    let ring = memory_ring();
    let issued = issue(&ring, NewKey::new(alice()).description("valid")).await;
    let key = issued.key();
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    let mut values: Vec<Vec<u8>> = [
        "Bearer a b".to_owned(),
        "Bearer a,b".to_owned(),
        "Bearer \"abc\"".to_owned(),
        "Bearer =abc".to_owned(),
        "Bearer a=b".to_owned(),
        "Bearer secret-token:".to_owned(),
        format!("Bearer  {key}"),
        format!("Bearer \t{key}"),
        format!("Bearer {key} extra"),
        format!("Bearer {key};"),
        format!("Bearer {key}, Basic dXNlcjpwYXNz"),
        format!("Bearer \"{key}\""),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    values.push(b"Bearer caf\xc3\xa9".to_vec());
    for value in values {
        let mut request = request(Method::GET, "/things", &[]);
        request.headers_mut().insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(&value).expect("header value"),
        );
        let answer = send(service.clone(), request).await;
        answer.assert_refused(400, Some(INVALID_REQUEST));
    }
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn oversized_header_gets_400() {
    let ring = memory_ring();
    let issued = issue(&ring, NewKey::new(alice()).description("valid")).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    // Default limit: 4096 bytes. At the limit the value is read (and refused as a bad token); one
    // byte more and it is not read at all.
    let at_limit = format!("Bearer {}", "a".repeat(4096 - "Bearer ".len()));
    let over_limit = format!("{at_limit}a");
    send(
        service.clone(),
        request(Method::GET, "/things", &[&at_limit]),
    )
    .await
    .assert_refused(401, Some(INVALID_TOKEN));
    send(service, request(Method::GET, "/things", &[&over_limit]))
        .await
        .assert_refused(400, Some(INVALID_REQUEST));

    // A configured limit applies to valid keys too.
    let header = bearer(issued.key());
    let exact = ServiceBuilder::new()
        .layer(ApiKeyLayer::new(ring.clone()).with_max_header_len(header.len()))
        .service_fn(probe.handler());
    send(exact, get_with_key(issued.key()))
        .await
        .assert_passed();
    let short = ServiceBuilder::new()
        .layer(ApiKeyLayer::new(ring).with_max_header_len(header.len() - 1))
        .service_fn(probe.handler());
    send(short, get_with_key(issued.key()))
        .await
        .assert_refused(400, Some(INVALID_REQUEST));
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn header_and_access_token_query_get_400() {
    let ring = memory_ring();
    let issued = issue(&ring, NewKey::new(alice()).description("valid")).await;
    let key = issued.key();
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    for uri in [
        format!("/things?access_token={key}"),
        "/things?page=2&access_token=other".to_owned(),
        "/things?access_token".to_owned(),
    ] {
        let answer = send(service.clone(), request(Method::GET, &uri, &[&bearer(key)])).await;
        answer.assert_refused(400, Some(INVALID_REQUEST));
    }
    assert_eq!(probe.calls(), 0);

    // Only the parameter of that exact name counts.
    send(
        service,
        request(Method::GET, "/things?access_token_hint=1", &[&bearer(key)]),
    )
    .await
    .assert_passed();
}

#[tokio::test]
async fn access_token_query_alone_gets_401_without_error() {
    let ring = memory_ring();
    let issued = issue(&ring, NewKey::new(alice()).description("valid")).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    let uri = format!("/things?access_token={}", issued.key());
    let answer = send(service, request(Method::GET, &uri, &[])).await;
    answer.assert_refused(401, Some(MISSING));
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn scheme_name_is_case_insensitive() {
    let ring = memory_ring();
    let issued = issue(&ring, NewKey::new(alice()).description("valid")).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} {}", issued.key());
        send(service.clone(), request(Method::GET, "/things", &[&value]))
            .await
            .assert_passed();
    }
    assert_eq!(probe.calls(), 4);
}

#[tokio::test]
async fn trailing_whitespace_is_tolerated() {
    let ring = memory_ring();
    let issued = issue(&ring, NewKey::new(alice()).description("valid")).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    for tail in [" ", "\t", "  ", " \t "] {
        let value = format!("Bearer {}{tail}", issued.key());
        send(service.clone(), request(Method::GET, "/things", &[&value]))
            .await
            .assert_passed();
    }
    assert_eq!(probe.calls(), 4);
}

#[tokio::test]
async fn secret_token_wrapper_is_accepted() {
    let ring = memory_ring();
    let issued = issue(&ring, NewKey::new(alice()).description("valid")).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    let wrapped = format!("secret-token:{}", issued.key());
    send(service.clone(), get_with_key(&wrapped))
        .await
        .assert_passed();
    assert_eq!(probe.identity().and_then(|i| i.key_id()), Some(issued.id()));

    // The wrapper does not make a bad key good.
    let forged = format!("secret-token:{}", with_other_secret(issued.key()));
    send(service, get_with_key(&forged))
        .await
        .assert_refused(401, Some(INVALID_TOKEN));
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn bad_checksum_gets_401_invalid_token_without_store_call() {
    let memory = MemoryStore::new();
    let issued = issue(
        &KeyRing::new(memory.clone()),
        NewKey::new(alice()).description("valid"),
    )
    .await;
    let store = FaultStore::new(memory);
    let (probe, service) = Probe::behind(ApiKeyLayer::new(KeyRing::new(store.clone())));

    for value in [
        with_bad_checksum(issued.key()),
        with_bad_checksum(&unknown_key()),
        with_non_base62_char(issued.key()),
    ] {
        send(service.clone(), get_with_key(&value))
            .await
            .assert_refused(401, Some(INVALID_TOKEN));
    }
    assert_eq!(store.gets(), 0, "offline checks never reach the store");
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn unknown_id_wrong_secret_disabled_get_identical_answers() {
    let memory = MemoryStore::new();
    let ring = KeyRing::new(memory.clone());
    let good = issue(&ring, NewKey::new(alice()).description("good")).await;
    let disabled = issue(
        &ring,
        NewKey::new(alice())
            .description("disabled")
            .status(Status::Disabled),
    )
    .await;
    let revoked = issue(&ring, NewKey::new(alice()).description("revoked")).await;
    ring.update(revoked.id(), KeyUpdate::status(Status::Disabled))
        .await
        .expect("updated");
    let user_disabled = issue(&ring, NewKey::new(bob()).description("bob")).await;
    ring.set_user_status(&bob().user_uid, Status::Disabled)
        .await
        .expect("user disabled");
    let company_disabled = issue(&ring, NewKey::new(carol()).description("carol")).await;
    ring.set_company_status(&carol().company_id, Status::Disabled)
        .await
        .expect("company disabled");

    let presented = [
        ("unknown id", unknown_key()),
        ("wrong secret", with_other_secret(good.key())),
        ("key disabled at issue", disabled.key().to_owned()),
        ("key disabled later", revoked.key().to_owned()),
        ("user disabled", user_disabled.key().to_owned()),
        ("company disabled", company_disabled.key().to_owned()),
        ("bad checksum", with_bad_checksum(good.key())),
        ("malformed key", with_non_base62_char(good.key())),
        (
            "not a key, no validator",
            "eyJhbGciOiJIUzI1NiJ9.e30.c2ln".to_owned(),
        ),
    ];

    // Through the ring that issued the keys (index hits) and through a cold ring (store reads), twice.
    for (path, ring) in [
        ("warm", ring.clone()),
        ("cold", KeyRing::new(memory.clone())),
    ] {
        let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));
        let first = send(service.clone(), get_with_key(good.key())).await;
        first.assert_passed();
        let reference = send(service.clone(), get_with_key(&unknown_key())).await;
        reference.assert_refused(401, Some(INVALID_TOKEN));
        for round in 0..2 {
            for (case, key) in &presented {
                let answer = send(service.clone(), get_with_key(key)).await;
                assert_eq!(answer, reference, "{path} ring, round {round}: {case}");
            }
        }
        assert_eq!(probe.calls(), 1, "{path}");
    }
}

#[tokio::test]
async fn missing_scope_gets_403_naming_scope() {
    let ring = memory_ring();
    let ui_only = issue(
        &ring,
        NewKey::new(alice()).description("ui").scope(Scope::UI),
    )
    .await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring).require_scope(Scope::REST));

    let answer = send(service, get_with_key(ui_only.key())).await;
    answer.assert_refused(
        403,
        Some(r#"Bearer realm="api", error="insufficient_scope", scope="rest""#),
    );
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn read_only_write_gets_403() {
    let ring = memory_ring();
    let read_only = issue(
        &ring,
        NewKey::new(alice()).description("reader").read_only(true),
    )
    .await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    let post = request(Method::POST, "/things", &[&bearer(read_only.key())]);
    send(service, post)
        .await
        .assert_refused(403, Some(INSUFFICIENT_SCOPE));
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn store_error_gets_503_and_inner_not_called() {
    let (store, ring, key) = faulty(Duration::from_secs(5)).await;
    store.set(Fault::Error);
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    let answer = send(service, get_with_key(&key)).await;
    answer.assert_refused(503, None);
    assert_eq!(store.gets(), 1);
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn store_error_is_not_remembered() {
    let (store, ring, key) = faulty(Duration::from_secs(5)).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    store.set(Fault::Error);
    send(service.clone(), get_with_key(&key))
        .await
        .assert_refused(503, None);
    store.set(Fault::PassThrough);
    send(service, get_with_key(&key)).await.assert_passed();
    assert_eq!(store.gets(), 2);
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn store_timeout_gets_503() {
    let (store, ring, key) = faulty(Duration::from_millis(50)).await;
    store.set(Fault::Sleep(Duration::from_secs(3600)));
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    send(service.clone(), get_with_key(&key))
        .await
        .assert_refused(503, None);
    assert_eq!(probe.calls(), 0);

    // The abandoned lookup holds nothing up: the next request asks the store again.
    store.set(Fault::PassThrough);
    send(service, get_with_key(&key)).await.assert_passed();
    assert_eq!(store.gets(), 2);
}

#[tokio::test]
async fn store_answering_with_another_keys_record_gets_503() {
    let (store, ring, key) = faulty(Duration::from_secs(5)).await;
    store.set(Fault::WrongRecord);
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    send(service, get_with_key(&key))
        .await
        .assert_refused(503, None);
    assert_eq!(store.gets(), 1);
    assert_eq!(probe.calls(), 0);
}

/// A store that panics takes the request's task down with it (tower services do not catch panics;
/// hyper drops the connection). The inner service is never called, and nothing is left stuck.
#[tokio::test]
async fn store_panic_propagates_without_calling_inner() {
    let (store, ring, key) = faulty(Duration::from_secs(5)).await;
    store.set(Fault::Panic);
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    let outcome = tokio::spawn(send(service.clone(), get_with_key(&key))).await;
    let error = outcome.expect_err("the store's panic reaches the request's task");
    assert!(error.is_panic());
    assert_eq!(probe.calls(), 0);
    assert_eq!(
        cached(&ring),
        (0, 0),
        "nothing cached from a panicked lookup"
    );

    store.set(Fault::PassThrough);
    send(service, get_with_key(&key)).await.assert_passed();
    assert_eq!(store.gets(), 2);
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn realm_is_configurable() {
    let (_probe, service) = Probe::behind(ApiKeyLayer::new(memory_ring()).with_realm("tenant a"));

    let answer = send(service.clone(), request(Method::GET, "/", &[])).await;
    answer.assert_refused(401, Some(r#"Bearer realm="tenant a""#));
    let answer = send(service, get_with_key(&unknown_key())).await;
    answer.assert_refused(
        401,
        Some(r#"Bearer realm="tenant a", error="invalid_token""#),
    );
}

#[tokio::test]
async fn body_type_without_bytes_gets_an_empty_refusal() {
    let ring = memory_ring();
    let issued = issue(&ring, NewKey::new(alice()).description("valid")).await;
    let service = ServiceBuilder::new()
        .layer(ApiKeyLayer::new(ring))
        .service_fn(|_: Request<Body>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
        });

    let response = service
        .clone()
        .oneshot(request(Method::GET, "/", &[]))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], MISSING);
    assert!(response.headers().get(CONTENT_TYPE).is_none());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("empty")
        .to_bytes();
    assert!(body.is_empty());

    let response = service
        .oneshot(get_with_key(issued.key()))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn on_rejection_hook_replaces_the_answer_and_sees_the_reason() {
    let ring = memory_ring();
    let good = issue(
        &ring,
        NewKey::new(alice()).description("good").scope(Scope::REST),
    )
    .await;
    let reader = issue(
        &ring,
        NewKey::new(alice())
            .description("reader")
            .scope(Scope::REST)
            .read_only(true),
    )
    .await;
    let ui_only = issue(
        &ring,
        NewKey::new(alice()).description("ui").scope(Scope::UI),
    )
    .await;
    let seen: Arc<Mutex<Vec<(Reason, RejectionKind, StatusCode)>>> = Arc::default();
    let hook = {
        let seen = seen.clone();
        move |rejection: Rejection| {
            seen.lock().expect("lock").push((
                rejection.reason(),
                rejection.kind(),
                rejection.status(),
            ));
            Response::builder()
                .status(StatusCode::IM_A_TEAPOT)
                .header("x-refusal", rejection.reason().as_str())
                .body(Body::from("custom"))
                .expect("response")
        }
    };
    let (probe, service) = Probe::behind(
        ApiKeyLayer::new(ring)
            .require_scope(Scope::REST)
            .on_rejection(hook),
    );

    let cases = [
        (request(Method::GET, "/", &[]), Reason::NoCredentials),
        (get_with_key(&unknown_key()), Reason::UnknownKey),
        (
            get_with_key(&with_other_secret(good.key())),
            Reason::WrongSecret,
        ),
        (
            get_with_key(&with_bad_checksum(good.key())),
            Reason::BadChecksum,
        ),
        (
            request(Method::POST, "/", &[&bearer(reader.key())]),
            Reason::ReadOnly,
        ),
        (
            get_with_key(ui_only.key()),
            Reason::MissingScope(Scope::REST),
        ),
    ];
    let expected: Vec<Reason> = cases.iter().map(|(_, reason)| *reason).collect();
    for (request, reason) in cases {
        let answer = send(service.clone(), request).await;
        assert_eq!(answer.status, StatusCode::IM_A_TEAPOT);
        assert_eq!(answer.headers["x-refusal"], reason.as_str());
        assert_eq!(answer.text(), "custom");
        assert!(answer.challenge().is_none());
    }
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen.iter().map(|(reason, ..)| *reason).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        seen[1],
        (
            Reason::UnknownKey,
            RejectionKind::InvalidToken,
            StatusCode::UNAUTHORIZED
        )
    );
    assert_eq!(probe.calls(), 0);

    // Admitted requests never reach the hook.
    send(service, get_with_key(good.key()))
        .await
        .assert_passed();
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn on_rejection_hook_sees_store_failures() {
    let (store, ring, key) = faulty(Duration::from_secs(5)).await;
    store.set(Fault::Error);
    let seen: Arc<Mutex<Vec<Reason>>> = Arc::default();
    let hook = {
        let seen = seen.clone();
        move |rejection: Rejection| {
            seen.lock().expect("lock").push(rejection.reason());
            rejection.into_response::<Body>()
        }
    };
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring).on_rejection(hook));

    send(service, get_with_key(&key))
        .await
        .assert_refused(503, None);
    assert_eq!(*seen.lock().expect("lock"), [Reason::StoreError]);
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn default_answer_never_contains_the_reason() {
    let memory = MemoryStore::new();
    let ring = KeyRing::new(memory.clone());
    let good = issue(
        &ring,
        NewKey::new(alice()).description("good").scope(Scope::REST),
    )
    .await;
    let disabled = issue(
        &ring,
        NewKey::new(alice())
            .description("disabled")
            .scope(Scope::REST)
            .status(Status::Disabled),
    )
    .await;
    let reader = issue(
        &ring,
        NewKey::new(alice())
            .description("reader")
            .scope(Scope::REST)
            .read_only(true),
    )
    .await;
    let ui_only = issue(
        &ring,
        NewKey::new(alice()).description("ui").scope(Scope::UI),
    )
    .await;
    let store = FaultStore::new(memory);
    let failing_ring = KeyRing::builder(store.clone())
        .with_lookup_timeout(Duration::from_millis(50))
        .build();

    // The same layer twice: the standard answers, and a hook that tells the reason.
    let reasons: Arc<Mutex<Vec<Reason>>> = Arc::default();
    let build = |ring: KeyRing| {
        let layer = ApiKeyLayer::new(ring).require_scope(Scope::REST);
        let reasons = reasons.clone();
        let telling = ServiceBuilder::new()
            .layer(layer.clone().on_rejection(move |rejection: Rejection| {
                reasons.lock().expect("lock").push(rejection.reason());
                rejection.into_response::<Body>()
            }))
            .service_fn(Probe::new().handler());
        let standard = ServiceBuilder::new()
            .layer(layer)
            .service_fn(Probe::new().handler());
        (standard, telling)
    };

    let mut cases = vec![
        (ring.clone(), get_with_key(&unknown_key())),
        (ring.clone(), get_with_key(&with_other_secret(good.key()))),
        (ring.clone(), get_with_key(disabled.key())),
        (ring.clone(), get_with_key(&with_bad_checksum(good.key()))),
        (
            ring.clone(),
            get_with_key(&with_non_base62_char(good.key())),
        ),
        (ring.clone(), get_with_key("eyJhbGciOiJIUzI1NiJ9.e30.c2ln")),
        (
            ring.clone(),
            request(Method::DELETE, "/", &[&bearer(reader.key())]),
        ),
        (ring.clone(), get_with_key(ui_only.key())),
        (
            ring.clone(),
            request(Method::GET, "/", &["Bearer a", "Bearer b"]),
        ),
        (
            ring.clone(),
            request(Method::GET, "/?access_token=a", &["Bearer a"]),
        ),
        (ring.clone(), request(Method::GET, "/", &["Basic abc"])),
    ];
    for (ring, request) in cases.drain(..) {
        let (standard, telling) = build(ring);
        let (parts, body) = request.into_parts();
        let copy = Request::from_parts(parts.clone(), body.clone());
        let told = send(telling, copy).await;
        let answer = send(standard, Request::from_parts(parts, body)).await;
        assert_eq!(told, answer, "the hook above only listens");
        let reason = *reasons.lock().expect("lock").last().expect("a refusal");
        assert_no_reason(&answer, reason);
    }

    for fault in [Fault::Error, Fault::Sleep(Duration::from_secs(3600))] {
        store.set(fault);
        let (standard, telling) = build(failing_ring.clone());
        let told = send(telling, get_with_key(good.key())).await;
        let answer = send(standard, get_with_key(good.key())).await;
        assert_eq!(told, answer);
        let reason = *reasons.lock().expect("lock").last().expect("a refusal");
        assert!(matches!(reason, Reason::StoreError | Reason::StoreTimeout));
        assert_no_reason(&answer, reason);
    }
    assert_eq!(reasons.lock().expect("lock").len(), 13);
}

fn assert_no_reason(answer: &Answer, reason: Reason) {
    let mut text = String::from_utf8_lossy(&answer.body).into_owned();
    for (name, value) in &answer.headers {
        text.push_str(&format!("\n{name}: {}", value.to_str().expect("ascii")));
    }
    let text = text.to_ascii_lowercase();
    let debug = format!("{reason:?}");
    let debug_name = debug.split('(').next().expect("name");
    for needle in [reason.as_str(), debug_name] {
        assert!(
            !text.contains(&needle.to_ascii_lowercase()),
            "{needle} in {text}"
        );
    }
}

fn assert_no_secret(text: &str, key: &str, what: &str) {
    Canary::new(key).assert_absent(text, what);
}

#[tokio::test]
async fn debug_output_never_shows_a_key_or_its_secret() {
    let ring = memory_ring();
    let issued = issue(
        &ring,
        NewKey::new(alice())
            .description("debug")
            .scopes([Scope::REST, Scope::INTEGRATION]),
    )
    .await;
    let key = issued.key().to_owned();
    let rejections: Arc<Mutex<Vec<Rejection>>> = Arc::default();
    let layer = ApiKeyLayer::new(ring.clone()).require_scope(Scope::REST);
    let hooked = {
        let rejections = rejections.clone();
        layer.clone().on_rejection(move |rejection: Rejection| {
            rejections.lock().expect("lock").push(rejection.clone());
            rejection.into_response::<Body>()
        })
    };
    let (probe, mut service) = Probe::behind(hooked.clone());

    send(service.clone(), get_with_key(&key))
        .await
        .assert_passed();
    send(service.clone(), get_with_key(&with_other_secret(&key)))
        .await
        .assert_refused(401, Some(INVALID_TOKEN));
    let identity = probe.identity().expect("identity");
    let login = identity.login().expect("login");
    let (login_with_key, shown) = issued.login_with_key();
    assert_eq!(
        login_with_key.parameters, key,
        "the creation response holds the key"
    );
    assert_eq!(shown.as_str(), key);
    let rejection = rejections.lock().expect("lock")[0].clone();
    let future = service.call(get_with_key(&key));

    let texts = [
        ("KeyRing", format!("{ring:?}"), format!("{ring:#?}")),
        ("IssuedKey", format!("{issued:?}"), format!("{issued:#?}")),
        (
            "Identity",
            format!("{identity:?}"),
            format!("{identity:#?}"),
        ),
        ("UserLogin", format!("{login:?}"), format!("{login:#?}")),
        (
            "UserLogin with key",
            format!("{login_with_key:?}"),
            format!("{login_with_key:#?}"),
        ),
        ("ApiKeyLayer", format!("{layer:?}"), format!("{layer:#?}")),
        (
            "hooked ApiKeyLayer",
            format!("{hooked:?}"),
            format!("{hooked:#?}"),
        ),
        ("ApiKey", format!("{service:?}"), format!("{service:#?}")),
        (
            "Rejection",
            format!("{rejection:?}"),
            format!("{rejection:#?}"),
        ),
        (
            "ResponseFuture",
            format!("{future:?}"),
            format!("{future:#?}"),
        ),
    ];
    for (what, plain, pretty) in &texts {
        assert!(plain.len() > what.len(), "{what}: {plain}");
        assert_no_secret(plain, &key, what);
        assert_no_secret(pretty, &key, what);
    }
    // The Debug output is not empty talk: it names what it can.
    assert!(texts[2].1.contains(&issued.id().to_string()));
    assert!(texts[3].1.contains("alice"));
    drop(future);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn log_lines_never_show_a_key_or_its_secret() {
    use tracing_subscriber::util::SubscriberInitExt;

    let capture = Capture::default();
    let writer = capture.clone();
    let _guard = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish()
        .set_default();

    let (store, ring, key) = faulty(Duration::from_millis(50)).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring).require_scope(Scope::UI));
    store.set(Fault::Error);
    send(service.clone(), get_with_key(&key)).await;
    store.set(Fault::PassThrough);
    for value in [
        key.clone(),
        with_other_secret(&key),
        with_bad_checksum(&key),
        format!("secret-token:{key}"),
    ] {
        send(service.clone(), get_with_key(&value)).await;
    }
    let no_scope = ServiceBuilder::new()
        .layer(ApiKeyLayer::new(KeyRing::new(store.clone())))
        .service_fn(probe.handler());
    send(no_scope, get_with_key(&key)).await.assert_passed();

    let logs = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf-8");
    // The capture works: the refusals and their reasons are there.
    for expected in [
        "request refused",
        "store_error",
        "wrong_secret",
        "bad_checksum",
        "missing_scope",
    ] {
        assert!(
            logs.contains(expected),
            "{expected} missing from logs:\n{logs}"
        );
    }
    assert_no_secret(&logs, &key, "logs");
}

#[tokio::test]
async fn a_refusal_carries_none_of_the_request_headers() {
    let memory = MemoryStore::new();
    let ring = KeyRing::new(memory.clone());
    let disabled = issue(
        &ring,
        NewKey::new(alice())
            .description("disabled")
            .status(Status::Disabled),
    )
    .await;
    let key = disabled.key();
    let cold = || KeyRing::new(memory.clone());
    // Refused at once (no header, malformed, bad checksum, two headers, a disabled key in the
    // index) and after a store read (an unknown id, a disabled key through a cold ring).
    let cases = [
        ("no header", vec![], ring.clone(), 401),
        (
            "malformed",
            vec![bearer(&with_non_base62_char(key))],
            ring.clone(),
            401,
        ),
        (
            "bad checksum",
            vec![bearer(&with_bad_checksum(key))],
            ring.clone(),
            401,
        ),
        (
            "two headers",
            vec![bearer(key), bearer(key)],
            ring.clone(),
            400,
        ),
        ("disabled, warm", vec![bearer(key)], ring.clone(), 401),
        ("unknown, cold", vec![bearer(&unknown_key())], cold(), 401),
        ("disabled, cold", vec![bearer(key)], cold(), 401),
    ];
    for (case, authorization, ring, status) in cases {
        let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));
        let mut request = Request::get("/api/v3/things")
            .header("cookie", "session=s3cr3t-cookie")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-for", "10.0.0.2")
            .header("content-type", "text/plain")
            .body(Body::default())
            .expect("request");
        for value in authorization {
            request
                .headers_mut()
                .append(AUTHORIZATION, HeaderValue::try_from(value).expect("value"));
        }
        let answer = send(service, request).await;
        assert_eq!(answer.status.as_u16(), status, "{case}");
        let names: Vec<_> = answer.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["www-authenticate", "content-type"], "{case}");
        assert_eq!(answer.headers.len(), 2, "{case}: one value each");
        assert_eq!(answer.headers[CONTENT_TYPE], "application/json", "{case}");
        assert_eq!(probe.calls(), 0, "{case}");
    }
}
