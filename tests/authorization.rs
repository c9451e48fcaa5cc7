//! Through the layer: read-only and methods, scopes, statuses, the miss path,
//! the token fallback, and the identity the inner service sees.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{Method, Request};
use time::OffsetDateTime;
use tower::ServiceBuilder;
use tower_api_key::key::KeyFormat;
use tower_api_key::store::KeyUpdate;
use tower_api_key::token::validator_fn;
use tower_api_key::{
    ApiKeyLayer, Identity, IdentityKind, KeyRing, MemoryStore, NewKey, Scope, Scopes, Status,
    TokenError, UserLogin, API_KEY_PROVIDER,
};

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

fn scope_challenge(scope: &str) -> String {
    format!(r#"Bearer realm="api", error="insufficient_scope", scope="{scope}""#)
}

/// The application scope these tests register at start-up.
fn billing() -> Scope {
    Scope::register("billing.read").expect("valid scope name")
}

// --- Read-only identities and methods -------------------------------------------------------------

/// Method, allowed to read-only keys by default, allowed with `allow_options_for_read_only(true)`.
fn method_matrix() -> Vec<(Method, bool, bool)> {
    vec![
        (Method::GET, true, true),
        (Method::HEAD, true, true),
        (Method::OPTIONS, false, true),
        (Method::POST, false, false),
        (Method::PUT, false, false),
        (Method::PATCH, false, false),
        (Method::DELETE, false, false),
        (Method::TRACE, false, false),
        (Method::CONNECT, false, false),
        (Method::from_bytes(b"PURGE").expect("method"), false, false),
        // Methods are case-sensitive: `get` is not GET.
        (Method::from_bytes(b"get").expect("method"), false, false),
    ]
}

#[tokio::test]
async fn read_only_key_may_only_read_by_method() {
    let ring = memory_ring();
    let reader = issue(
        &ring,
        NewKey::new(alice()).description("reader").read_only(true),
    )
    .await;
    for allow_options in [false, true] {
        let (probe, service) = Probe::behind(
            ApiKeyLayer::new(ring.clone()).allow_options_for_read_only(allow_options),
        );
        let mut passed = 0;
        for (method, plain, with_options) in method_matrix() {
            let allowed = if allow_options { with_options } else { plain };
            let answer = send(
                service.clone(),
                request(method.clone(), "/things", &[&bearer(reader.key())]),
            )
            .await;
            if allowed {
                answer.assert_passed();
                passed += 1;
            } else {
                answer.assert_refused(403, Some(INSUFFICIENT_SCOPE));
            }
            assert_eq!(
                probe.calls(),
                passed,
                "{method}, OPTIONS allowed: {allow_options}"
            );
        }
    }
}

#[tokio::test]
async fn read_write_key_may_use_every_method() {
    let ring = memory_ring();
    let writer = issue(&ring, NewKey::new(alice()).description("writer")).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    let matrix = method_matrix();
    for (method, ..) in &matrix {
        send(
            service.clone(),
            request(method.clone(), "/things", &[&bearer(writer.key())]),
        )
        .await
        .assert_passed();
    }
    assert_eq!(probe.calls(), matrix.len());
}

#[tokio::test]
async fn method_override_does_not_let_a_read_only_key_write() {
    let ring = memory_ring();
    let reader = issue(
        &ring,
        NewKey::new(alice()).description("reader").read_only(true),
    )
    .await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring).allow_options_for_read_only(true));

    let auth = bearer(reader.key());
    let mut requests = Vec::new();
    for header in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ] {
        for value in ["GET", "HEAD", "OPTIONS"] {
            let mut request = request(Method::POST, "/things", &[&auth]);
            request
                .headers_mut()
                .insert(header, value.parse().expect("header value"));
            requests.push(request);
        }
    }
    requests.push(request(Method::POST, "/things?_method=GET", &[&auth]));
    requests.push(request(Method::DELETE, "/things?_method=HEAD", &[&auth]));
    for request in requests {
        send(service.clone(), request)
            .await
            .assert_refused(403, Some(INSUFFICIENT_SCOPE));
    }
    assert_eq!(probe.calls(), 0);
}

// --- Scopes ---------------------------------------------------------------------------------------

#[tokio::test]
async fn required_scope_is_checked_against_the_key_scopes() {
    let ring = memory_ring();
    let cases: Vec<(Scopes, Scope, bool)> = vec![
        (Scopes::EMPTY, Scope::REST, false),
        (Scopes::from(Scope::REST), Scope::REST, true),
        (
            Scopes::from([Scope::UI, Scope::INTEGRATION]),
            Scope::REST,
            false,
        ),
        (
            Scopes::from([Scope::UI, Scope::REST, Scope::INTEGRATION]),
            Scope::INTEGRATION,
            true,
        ),
        (Scopes::from(Scope::REST), Scope::UI, false),
        (Scopes::from(billing()), billing(), true),
        (Scopes::from(Scope::REST), billing(), false),
        (Scopes::from([Scope::REST, billing()]), Scope::REST, true),
    ];
    for (i, (scopes, required, allowed)) in cases.into_iter().enumerate() {
        let key = issue(
            &ring,
            NewKey::new(alice()).description("scoped").scopes(scopes),
        )
        .await;
        let (probe, service) =
            Probe::behind(ApiKeyLayer::new(ring.clone()).require_scope(required));
        let answer = send(service, get_with_key(key.key())).await;
        if allowed {
            answer.assert_passed();
        } else {
            answer.assert_refused(403, Some(&scope_challenge(required.name())));
        }
        assert_eq!(probe.calls(), usize::from(allowed), "case {i}");
    }
}

#[tokio::test]
async fn without_a_scope_rule_any_valid_key_passes() {
    let ring = memory_ring();
    let no_scopes = issue(&ring, NewKey::new(alice()).description("bare")).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    send(service, get_with_key(no_scopes.key()))
        .await
        .assert_passed();
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn scope_is_checked_before_read_only() {
    let ring = memory_ring();
    let reader = issue(
        &ring,
        NewKey::new(alice())
            .description("reader")
            .scope(Scope::UI)
            .read_only(true),
    )
    .await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring).require_scope(Scope::REST));

    let post = request(Method::POST, "/things", &[&bearer(reader.key())]);
    send(service, post)
        .await
        .assert_refused(403, Some(&scope_challenge("rest")));
    assert_eq!(probe.calls(), 0);
}

/// What a router would put into the extensions: the route it matched.
#[derive(Clone, Copy)]
struct MatchedRoute(&'static str);

fn routed(route: &'static str, method: Method, key: &str) -> Request<Body> {
    let mut request = request(method, route, &[&bearer(key)]);
    request.extensions_mut().insert(MatchedRoute(route));
    request
}

#[tokio::test]
async fn scope_from_request_parts_decides_per_request() {
    let ring = memory_ring();
    let rest = issue(
        &ring,
        NewKey::new(alice()).description("rest").scope(Scope::REST),
    )
    .await;
    let integration = issue(
        &ring,
        NewKey::new(alice())
            .description("integration")
            .scope(Scope::INTEGRATION),
    )
    .await;
    let billing_key = issue(
        &ring,
        NewKey::new(alice()).description("billing").scope(billing()),
    )
    .await;
    let probe = Probe::new();
    let layer = ApiKeyLayer::new(ring).scope_from(|parts: &Parts| {
        match parts.extensions.get::<MatchedRoute>().map(|r| r.0) {
            Some("/api/v3/things") => Some(Scope::REST),
            Some("/api/v3/integrations") if parts.method != Method::GET => Some(Scope::INTEGRATION),
            Some("/api/v3/integrations") => Some(Scope::REST),
            Some("/api/v3/invoices") => Some(billing()),
            _ => None,
        }
    });
    let service = ServiceBuilder::new()
        .layer(layer)
        .service_fn(probe.handler());

    let cases = [
        ("/api/v3/things", Method::GET, rest.key(), None),
        (
            "/api/v3/things",
            Method::GET,
            integration.key(),
            Some("rest"),
        ),
        ("/api/v3/integrations", Method::GET, rest.key(), None),
        (
            "/api/v3/integrations",
            Method::POST,
            rest.key(),
            Some("integration"),
        ),
        (
            "/api/v3/integrations",
            Method::POST,
            integration.key(),
            None,
        ),
        ("/api/v3/invoices", Method::GET, billing_key.key(), None),
        (
            "/api/v3/invoices",
            Method::GET,
            rest.key(),
            Some("billing.read"),
        ),
        // No scope needed: any valid key.
        ("/health", Method::GET, billing_key.key(), None),
    ];
    let mut passed = 0;
    for (route, method, key, missing) in cases {
        let answer = send(service.clone(), routed(route, method.clone(), key)).await;
        match missing {
            None => {
                answer.assert_passed();
                passed += 1;
            }
            Some(scope) => answer.assert_refused(403, Some(&scope_challenge(scope))),
        }
        assert_eq!(probe.calls(), passed, "{method} {route}");
    }
}

#[tokio::test]
async fn application_scope_registered_at_startup_is_enforced() {
    let scope = billing();
    assert_eq!(
        Scope::register("BILLING.READ"),
        Ok(scope),
        "names are case-insensitive"
    );
    assert_eq!(Scope::lookup("billing.read"), Some(scope));
    let ring = memory_ring();
    let with = issue(
        &ring,
        NewKey::new(alice())
            .description("billing")
            .scopes([scope, Scope::REST]),
    )
    .await;
    let without = issue(
        &ring,
        NewKey::new(alice()).description("rest").scopes([
            Scope::REST,
            Scope::UI,
            Scope::INTEGRATION,
        ]),
    )
    .await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring).require_scope(scope));

    send(service.clone(), get_with_key(with.key()))
        .await
        .assert_passed();
    send(service, get_with_key(without.key()))
        .await
        .assert_refused(403, Some(&scope_challenge("billing.read")));
    assert_eq!(probe.calls(), 1);
    assert!(probe.identity().expect("identity").has_scope(scope));
}

// --- Status of key, user and company --------------------------------------------------------------

#[tokio::test]
async fn only_enabled_keys_pass() {
    let memory = MemoryStore::new();
    let ring = KeyRing::new(memory.clone());
    let mut issued = Vec::new();
    for status in STATUSES {
        let key = issue(
            &ring,
            NewKey::new(alice()).description("status").status(status),
        )
        .await;
        assert_eq!(key.login().status, status);
        issued.push((status, key));
    }
    // From the index of the issuing ring, and from the store through a cold one.
    for ring in [ring, KeyRing::new(memory)] {
        let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));
        for (status, key) in &issued {
            let answer = send(service.clone(), get_with_key(key.key())).await;
            if *status == Status::Enabled {
                answer.assert_passed();
            } else {
                answer.assert_refused(401, Some(INVALID_TOKEN));
            }
        }
        assert_eq!(probe.calls(), 1);
    }
}

#[tokio::test]
async fn changing_a_key_status_takes_effect_on_the_next_request() {
    let ring = memory_ring();
    let key = issue(&ring, NewKey::new(alice()).description("toggled")).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    send(service.clone(), get_with_key(key.key()))
        .await
        .assert_passed();
    for status in &STATUSES[1..] {
        ring.update(key.id(), KeyUpdate::status(*status))
            .await
            .expect("updated")
            .expect("exists");
        send(service.clone(), get_with_key(key.key()))
            .await
            .assert_refused(401, Some(INVALID_TOKEN));
        ring.update(key.id(), KeyUpdate::status(Status::Enabled))
            .await
            .expect("updated")
            .expect("exists");
        send(service.clone(), get_with_key(key.key()))
            .await
            .assert_passed();
    }
    assert_eq!(probe.calls(), STATUSES.len());

    assert!(ring.delete(key.id()).await.expect("deleted"));
    send(service, get_with_key(key.key()))
        .await
        .assert_refused(401, Some(INVALID_TOKEN));
}

#[tokio::test]
async fn disabling_a_user_refuses_all_their_keys_and_reenabling_restores_them() {
    let memory = MemoryStore::new();
    let ring = KeyRing::new(memory.clone());
    let alice_1 = issue(&ring, NewKey::new(alice()).description("one")).await;
    let alice_2 = issue(
        &ring,
        NewKey::new(alice()).description("two").read_only(true),
    )
    .await;
    let bob_key = issue(&ring, NewKey::new(bob()).description("bob")).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    ring.set_user_status(&alice().user_uid, Status::Disabled)
        .await
        .expect("disabled");
    for key in [&alice_1, &alice_2] {
        send(service.clone(), get_with_key(key.key()))
            .await
            .assert_refused(401, Some(INVALID_TOKEN));
    }
    send(service.clone(), get_with_key(bob_key.key()))
        .await
        .assert_passed();
    // A ring that reads the store after the change agrees, and a key issued now starts disabled.
    let cold = ServiceBuilder::new()
        .layer(ApiKeyLayer::new(KeyRing::new(memory.clone())))
        .service_fn(probe.handler());
    send(cold.clone(), get_with_key(alice_1.key()))
        .await
        .assert_refused(401, Some(INVALID_TOKEN));
    let late = issue(&ring, NewKey::new(alice()).description("late")).await;
    assert_eq!(late.login().status, Status::DisabledDueToUser);
    send(service.clone(), get_with_key(late.key()))
        .await
        .assert_refused(401, Some(INVALID_TOKEN));

    ring.set_user_status(&alice().user_uid, Status::Enabled)
        .await
        .expect("enabled");
    for key in [&alice_1, &alice_2, &late] {
        send(service.clone(), get_with_key(key.key()))
            .await
            .assert_passed();
        assert_eq!(probe.login().map(|l| l.status), Some(Status::Enabled));
    }
    assert_eq!(probe.calls(), 4);
}

#[tokio::test]
async fn disabling_a_company_refuses_all_its_keys_and_reenabling_restores_them() {
    let ring = memory_ring();
    let alice_key = issue(&ring, NewKey::new(alice()).description("alice")).await;
    let bob_key = issue(&ring, NewKey::new(bob()).description("bob")).await;
    let carol_key = issue(&ring, NewKey::new(carol()).description("carol")).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    ring.set_company_status(&alice().company_id, Status::Disabled)
        .await
        .expect("disabled");
    for key in [&alice_key, &bob_key] {
        send(service.clone(), get_with_key(key.key()))
            .await
            .assert_refused(401, Some(INVALID_TOKEN));
    }
    send(service.clone(), get_with_key(carol_key.key()))
        .await
        .assert_passed();

    // Re-enabling the user does not override the company.
    ring.set_user_status(&alice().user_uid, Status::Disabled)
        .await
        .expect("disabled");
    ring.set_user_status(&alice().user_uid, Status::Enabled)
        .await
        .expect("enabled");
    send(service.clone(), get_with_key(alice_key.key()))
        .await
        .assert_refused(401, Some(INVALID_TOKEN));

    ring.set_company_status(&alice().company_id, Status::Enabled)
        .await
        .expect("enabled");
    for key in [&alice_key, &bob_key] {
        send(service.clone(), get_with_key(key.key()))
            .await
            .assert_passed();
    }
    assert_eq!(probe.calls(), 3);
}

// --- The miss path --------------------------------------------------------------------------------

#[tokio::test]
async fn key_issued_through_another_ring_is_filled_from_the_store() {
    let memory = MemoryStore::new();
    let ring_a = KeyRing::new(memory.clone());
    let issued = issue(
        &ring_a,
        NewKey::new(alice())
            .description("from a")
            .scope(Scope::REST),
    )
    .await;
    let store = FaultStore::new(memory);
    let ring_b = KeyRing::new(store.clone());
    assert_eq!(cached(&ring_b), (0, 0));
    let (probe, service) =
        Probe::behind(ApiKeyLayer::new(ring_b.clone()).require_scope(Scope::REST));

    for _ in 0..3 {
        send(service.clone(), get_with_key(issued.key()))
            .await
            .assert_passed();
    }
    assert_eq!(store.gets(), 1, "later requests are index hits");
    assert_eq!(cached(&ring_b), (1, 0));
    let identity = probe.identity().expect("identity");
    assert_eq!(identity.key_id(), Some(issued.id()));
    assert_eq!(
        identity.login().as_deref(),
        Some(issued.login()),
        "ring B knows the full identity"
    );
}

#[tokio::test]
async fn layer_over_a_bare_store_reads_keys_from_it() {
    let memory = MemoryStore::new();
    let issued = issue(
        &KeyRing::new(memory.clone()),
        NewKey::new(alice()).description("elsewhere"),
    )
    .await;
    let store = FaultStore::new(memory);
    let layer = ApiKeyLayer::new(store.clone());
    assert_eq!(cached(layer.key_ring()), (0, 0));
    let (_probe, service) = Probe::behind(layer.clone());

    send(service.clone(), get_with_key(issued.key()))
        .await
        .assert_passed();
    send(service, get_with_key(&with_other_secret(issued.key())))
        .await
        .assert_refused(401, Some(INVALID_TOKEN));
    assert_eq!(store.gets(), 1);
    assert_eq!(cached(layer.key_ring()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_a_cold_key_cause_one_store_get() {
    const REQUESTS: usize = 1000;
    let memory = MemoryStore::new();
    let issued = issue(
        &KeyRing::new(memory.clone()),
        NewKey::new(alice()).description("cold"),
    )
    .await;
    let store = FaultStore::new(memory);
    // Generous: the test holds the store until every request waits, which must not time out.
    let ring_b = KeyRing::builder(store.clone())
        .with_lookup_timeout(Duration::from_secs(600))
        .build();
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring_b.clone()));

    // Hold the store so that every request is waiting before the first lookup finishes.
    store.close();
    let polled = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let mut answer = Box::pin(send(service.clone(), get_with_key(issued.key())));
        let polled = polled.clone();
        let mut first = true;
        tasks.push(tokio::spawn(std::future::poll_fn(move |cx| {
            let poll = answer.as_mut().poll(cx);
            if std::mem::take(&mut first) {
                polled.fetch_add(1, Ordering::SeqCst);
            }
            poll
        })));
    }
    while polled.load(Ordering::SeqCst) < REQUESTS {
        tokio::task::yield_now().await;
    }
    assert_eq!(store.gets(), 1, "one lookup while {REQUESTS} requests wait");
    assert_eq!(probe.calls(), 0);
    store.open();
    for task in tasks {
        task.await.expect("request task").assert_passed();
    }
    assert_eq!(store.gets(), 1);
    assert_eq!(probe.calls(), REQUESTS);
    assert_eq!(cached(&ring_b), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_on_a_failed_lookup_share_its_failure() {
    const REQUESTS: usize = 200;
    let memory = MemoryStore::new();
    let issued = issue(
        &KeyRing::new(memory.clone()),
        NewKey::new(alice()).description("cold"),
    )
    .await;
    let store = FaultStore::new(memory);
    let ring = KeyRing::builder(store.clone())
        .with_lookup_timeout(Duration::from_secs(600))
        .build();
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    store.close();
    let polled = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let mut answer = Box::pin(send(service.clone(), get_with_key(issued.key())));
        let polled = polled.clone();
        let mut first = true;
        tasks.push(tokio::spawn(std::future::poll_fn(move |cx| {
            let poll = answer.as_mut().poll(cx);
            if std::mem::take(&mut first) {
                polled.fetch_add(1, Ordering::SeqCst);
            }
            poll
        })));
    }
    while polled.load(Ordering::SeqCst) < REQUESTS {
        tokio::task::yield_now().await;
    }
    store.set(Fault::Error);
    store.open();
    for task in tasks {
        task.await.expect("request task").assert_refused(503, None);
    }
    assert_eq!(
        store.gets(),
        1,
        "a failing store is asked once, not once per waiter"
    );
    assert_eq!(probe.calls(), 0);

    // The failure is not remembered: the next request asks again.
    store.set(Fault::PassThrough);
    send(service, get_with_key(issued.key()))
        .await
        .assert_passed();
    assert_eq!(store.gets(), 2);
}

#[tokio::test]
async fn unknown_id_is_remembered_without_a_second_store_get() {
    let store = FaultStore::new(MemoryStore::new());
    let ring = KeyRing::new(store.clone());
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    let unknown = unknown_key();
    for key in [
        unknown.clone(),
        unknown.clone(),
        with_other_secret(&unknown),
    ] {
        send(service.clone(), get_with_key(&key))
            .await
            .assert_refused(401, Some(INVALID_TOKEN));
    }
    assert_eq!(store.gets(), 1);
    assert_eq!(cached(&ring), (0, 1));
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn wrong_secret_on_a_cold_key_fills_the_index_for_the_right_one() {
    let memory = MemoryStore::new();
    let issued = issue(
        &KeyRing::new(memory.clone()),
        NewKey::new(alice()).description("cold"),
    )
    .await;
    let store = FaultStore::new(memory);
    let (probe, service) = Probe::behind(ApiKeyLayer::new(KeyRing::new(store.clone())));

    send(
        service.clone(),
        get_with_key(&with_other_secret(issued.key())),
    )
    .await
    .assert_refused(401, Some(INVALID_TOKEN));
    send(service, get_with_key(issued.key()))
        .await
        .assert_passed();
    assert_eq!(store.gets(), 1);
    assert_eq!(probe.calls(), 1);
}

// --- Token fallback -------------------------------------------------------------------------------

const GOOD_TOKEN: &str = "good-token";
const DOWN_TOKEN: &str = "idp-down";
const TOKEN_USER_UID: &str = "u-token";

fn token_login(scopes: Scopes, read_only: bool) -> UserLogin {
    UserLogin {
        id: 7,
        user_uid: TOKEN_USER_UID.into(),
        user_name: "dave".into(),
        company_id: "c-alpha".into(),
        company_name: "Alpha".into(),
        identity_provider_name: "jwt".into(),
        description: "access token".into(),
        is_read_access_only: read_only,
        scopes,
        status: Status::Enabled,
        parameters: String::new(),
        identifier_in_provider: 7,
        creation_date: OffsetDateTime::UNIX_EPOCH,
        expiration_date: None,
        deprecation_date: None,
        last_used_date: None,
    }
}

/// A layer whose validator accepts [`GOOD_TOKEN`] as `login`, is down for [`DOWN_TOKEN`] and refuses
/// everything else; the counter says how often it was asked.
fn with_validator(ring: KeyRing, login: UserLogin) -> (ApiKeyLayer, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let validator = validator_fn(move |token: &str| {
        counter.fetch_add(1, Ordering::SeqCst);
        match token {
            GOOD_TOKEN => Ok(Identity::from_token(login.clone())),
            DOWN_TOKEN => Err(TokenError::unavailable("identity provider unreachable")),
            _ => Err(TokenError::invalid("signature mismatch")),
        }
    });
    (
        ApiKeyLayer::new(ring).with_token_validator(validator),
        calls,
    )
}

#[tokio::test]
async fn non_key_bearer_reaches_the_validator() {
    let store = FaultStore::new(MemoryStore::new());
    let (layer, calls) = with_validator(
        KeyRing::new(store.clone()),
        token_login(Scopes::from(Scope::REST), false),
    );
    let (probe, service) = Probe::behind(layer);

    send(service.clone(), get_with_key(GOOD_TOKEN))
        .await
        .assert_passed();
    let identity = probe.identity().expect("identity");
    assert_eq!(identity.kind(), IdentityKind::Token);
    assert_eq!(identity.key_id(), None);
    assert_eq!(
        identity.login().map(|l| l.user_uid.clone()).as_deref(),
        Some(TOKEN_USER_UID)
    );

    // Values that only look like keys of another issuer, or JWTs, are tokens too.
    let foreign = KeyFormat::new("xyz")
        .expect("prefix")
        .generate()
        .expect("rng");
    for value in [
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
        foreign.expose(),
        &format!("secret-token:{GOOD_TOKEN}x"),
    ] {
        send(service.clone(), get_with_key(value))
            .await
            .assert_refused(401, Some(INVALID_TOKEN));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(store.gets(), 0, "tokens never reach the key store");
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn key_shaped_values_never_reach_the_validator() {
    let memory = MemoryStore::new();
    let ring = KeyRing::new(memory.clone());
    let issued = issue(&ring, NewKey::new(alice()).description("key")).await;
    let disabled = issue(
        &ring,
        NewKey::new(alice())
            .description("off")
            .status(Status::Disabled),
    )
    .await;
    let (layer, calls) = with_validator(KeyRing::new(memory), token_login(Scopes::EMPTY, false));
    let (probe, service) = Probe::behind(layer);

    send(service.clone(), get_with_key(issued.key()))
        .await
        .assert_passed();
    send(
        service.clone(),
        get_with_key(&format!("secret-token:{}", issued.key())),
    )
    .await
    .assert_passed();
    for value in [
        with_bad_checksum(issued.key()),
        with_non_base62_char(issued.key()),
        with_other_secret(issued.key()),
        unknown_key(),
        disabled.key().to_owned(),
        format!("secret-token:{}", with_bad_checksum(issued.key())),
    ] {
        send(service.clone(), get_with_key(&value))
            .await
            .assert_refused(401, Some(INVALID_TOKEN));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(probe.calls(), 2);
}

#[tokio::test]
async fn validator_unavailable_gets_503() {
    let (layer, calls) = with_validator(memory_ring(), token_login(Scopes::EMPTY, false));
    let (probe, service) = Probe::behind(layer);

    send(service, get_with_key(DOWN_TOKEN))
        .await
        .assert_refused(503, None);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn validator_invalid_gets_401_invalid_token() {
    let (layer, calls) = with_validator(memory_ring(), token_login(Scopes::EMPTY, false));
    let (probe, service) = Probe::behind(layer);

    let refused = send(service.clone(), get_with_key("expired-token")).await;
    refused.assert_refused(401, Some(INVALID_TOKEN));
    let unknown = send(service, get_with_key(&unknown_key())).await;
    assert_eq!(refused, unknown, "one answer for bad tokens and bad keys");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn no_validator_gets_401_invalid_token() {
    let (probe, service) = Probe::behind(ApiKeyLayer::new(memory_ring()));

    for value in [GOOD_TOKEN, "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"] {
        send(service.clone(), get_with_key(value))
            .await
            .assert_refused(401, Some(INVALID_TOKEN));
    }
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn token_identity_scopes_are_enforced() {
    for (scopes, allowed) in [
        (Scopes::from(Scope::UI), false),
        (Scopes::EMPTY, false),
        (Scopes::from([Scope::UI, Scope::REST]), true),
    ] {
        let (layer, _) = with_validator(memory_ring(), token_login(scopes, false));
        let (probe, service) = Probe::behind(layer.require_scope(Scope::REST));
        let answer = send(service, get_with_key(GOOD_TOKEN)).await;
        if allowed {
            answer.assert_passed();
        } else {
            answer.assert_refused(403, Some(&scope_challenge("rest")));
        }
        assert_eq!(probe.calls(), usize::from(allowed));
    }
}

#[tokio::test]
async fn token_identity_read_only_is_enforced() {
    for allow_options in [false, true] {
        let (layer, _) = with_validator(memory_ring(), token_login(Scopes::EMPTY, true));
        let (probe, service) = Probe::behind(layer.allow_options_for_read_only(allow_options));
        let mut passed = 0;
        for (method, plain, with_options) in method_matrix() {
            let answer = send(
                service.clone(),
                request(method.clone(), "/things", &[&bearer(GOOD_TOKEN)]),
            )
            .await;
            if (allow_options && with_options) || (!allow_options && plain) {
                answer.assert_passed();
                passed += 1;
            } else {
                answer.assert_refused(403, Some(INSUFFICIENT_SCOPE));
            }
        }
        assert_eq!(probe.calls(), passed);
        assert!(probe.identity().expect("identity").is_read_only());
    }
}

// --- The identity the inner service sees ----------------------------------------------------------

#[tokio::test]
async fn inner_service_sees_the_key_identity() {
    let memory = MemoryStore::new();
    let ring = KeyRing::new(memory.clone());
    let issued = issue(
        &ring,
        NewKey::new(alice())
            .description("CI pipeline")
            .scopes([Scope::REST, Scope::INTEGRATION])
            .read_only(true),
    )
    .await;

    // The identity comes from the index of the issuing ring, and from a cold ring's store read.
    for ring in [ring, KeyRing::new(memory.clone())] {
        let (probe, service) = Probe::behind(ApiKeyLayer::new(ring).require_scope(Scope::REST));
        send(service, get_with_key(issued.key()))
            .await
            .assert_passed();

        let identity = probe.identity().expect("identity in extensions");
        assert_eq!(identity.kind(), IdentityKind::ApiKey);
        assert_eq!(identity.key_id(), Some(issued.id()));
        assert_eq!(
            identity.scopes(),
            Scopes::from([Scope::REST, Scope::INTEGRATION])
        );
        assert!(identity.has_scope(Scope::INTEGRATION));
        assert!(!identity.has_scope(Scope::UI));
        assert!(identity.is_read_only());

        let login = probe
            .login()
            .expect("full identity while the inner service ran");
        let id = issued.id().get();
        assert_eq!(login.id, id);
        assert_eq!(login.identifier_in_provider, id);
        assert_eq!(login.user_uid, "u-alice");
        assert_eq!(login.user_name, "alice");
        assert_eq!(login.company_id, "c-alpha");
        assert_eq!(login.company_name, "Alpha");
        assert_eq!(login.identity_provider_name, API_KEY_PROVIDER);
        assert_eq!(login.identity_provider_name, "AK");
        assert_eq!(login.description, "CI pipeline");
        assert!(login.is_read_access_only);
        assert_eq!(
            login.scopes,
            Scopes::from([Scope::REST, Scope::INTEGRATION])
        );
        assert_eq!(login.status, Status::Enabled);
        assert_eq!(login.parameters, "");
        assert_eq!(login.creation_date, issued.login().creation_date);
        assert_eq!(*login, *issued.login());

        let json = serde_json::to_value(&*login).expect("serializes");
        assert_eq!(json["userName"], "alice");
        assert_eq!(json["parameters"], "");
        assert_eq!(json["status"], "enabled");
    }
}

#[tokio::test]
async fn inner_service_sees_the_token_identity() {
    let login = token_login(Scopes::from(Scope::REST), false);
    let (layer, _) = with_validator(memory_ring(), login.clone());
    let (probe, service) = Probe::behind(layer.require_scope(Scope::REST));

    send(service, get_with_key(GOOD_TOKEN))
        .await
        .assert_passed();
    let identity = probe.identity().expect("identity in extensions");
    assert_eq!(identity.kind(), IdentityKind::Token);
    assert_eq!(identity.key_id(), None);
    assert_eq!(identity.scopes(), Scopes::from(Scope::REST));
    assert!(!identity.is_read_only());
    assert_eq!(identity.login().as_deref(), Some(&login));
    assert_eq!(probe.login().as_deref(), Some(&login));
}

#[tokio::test]
async fn key_identity_login_is_none_once_the_ring_is_gone() {
    let ring = memory_ring();
    let issued = issue(&ring, NewKey::new(alice()).description("short-lived")).await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));
    send(service, get_with_key(issued.key()))
        .await
        .assert_passed();
    let identity = probe.identity().expect("identity");
    assert_eq!(identity.login().as_deref(), Some(issued.login()));

    // The handle reads the ring's index; it keeps nothing alive by itself (documented on `login`).
    drop(ring);
    assert!(identity.login().is_none());
    assert_eq!(identity.key_id(), Some(issued.id()));
    assert!(!identity.is_read_only());
}

#[tokio::test]
async fn token_identity_that_is_not_enabled_gets_401() {
    for status in [Status::Disabled, Status::DisabledDueToUser, Status::Unknown] {
        let mut login = token_login(Scopes::from(Scope::REST), false);
        login.status = status;
        let (layer, calls) = with_validator(memory_ring(), login);
        let (probe, service) = Probe::behind(layer);

        send(service, get_with_key(GOOD_TOKEN))
            .await
            .assert_refused(401, Some(INVALID_TOKEN));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "{status}");
        assert_eq!(probe.calls(), 0, "{status}");
    }
}

/// A validator that never answers.
struct Hanging;

#[async_trait::async_trait]
impl tower_api_key::TokenValidator for Hanging {
    async fn validate(&self, _token: &str) -> Result<Identity, TokenError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn hanging_validator_is_cut_by_the_lookup_timeout_with_503() {
    let ring = KeyRing::builder(MemoryStore::new())
        .with_lookup_timeout(std::time::Duration::from_millis(50))
        .build();
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring).with_token_validator(Hanging));

    send(service, get_with_key(GOOD_TOKEN))
        .await
        .assert_refused(503, None);
    assert_eq!(probe.calls(), 0);
}

#[tokio::test]
async fn secret_token_wrapper_is_removed_before_the_validator_sees_the_token() {
    let (layer, calls) = with_validator(memory_ring(), token_login(Scopes::EMPTY, false));
    let (probe, service) = Probe::behind(layer);

    let wrapped = format!("secret-token:{GOOD_TOKEN}");
    let answer = send(service, get_with_key(&wrapped)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(probe.calls(), 1);
}
