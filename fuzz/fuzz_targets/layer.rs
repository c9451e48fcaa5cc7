//! The whole layer over a `MemoryStore` holding keys of every kind: arbitrary method, path, query and
//! headers. Never a panic; the inner service runs exactly when the reference in
//! `tests/common/reference.rs` says the request carries a valid, enabled key allowed for that method
//! and scope, and then with that key's identity; every other request gets the reference's answer.
//!
//! Input, line by line: the method; the path and query; flags (`ui`, `rest` or `integration` for the
//! scope the route needs, `options` to let read-only keys use OPTIONS, `warm` to preload the index,
//! `small` for a 64-byte header limit); then headers as `name: value`, where `{K0}` to `{K7}` stand
//! for the keys of the store.
#![no_main]

mod support;
#[path = "../../tests/common/reference.rs"]
mod reference;

use std::sync::OnceLock;

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue, Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceBuilder;
use tower_api_key::{
    ApiKeyLayer, KeyRing, MemoryStore, NewKey, Owner, Scope, Scopes, Status,
};

use reference::{KeyFacts, Verdict};
use support::{block_on, send, Probe};

struct Key {
    text: String,
    id: u64,
    facts: KeyFacts,
}

struct Fixture {
    store: MemoryStore,
    keys: Vec<Key>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        use Scope as S;
        let store = MemoryStore::new();
        let ring = KeyRing::new(store.clone());
        // (scopes, read-only, key status, user status, company status)
        let kinds: [(Scopes, bool, Status, Status, Status); 8] = [
            (Scopes::from(S::REST), false, Status::Enabled, Status::Enabled, Status::Enabled),
            (Scopes::from([S::REST, S::UI]), true, Status::Enabled, Status::Enabled, Status::Enabled),
            (Scopes::from([S::REST, S::UI, S::INTEGRATION]), false, Status::Disabled, Status::Enabled, Status::Enabled),
            (Scopes::EMPTY, false, Status::Enabled, Status::Enabled, Status::Enabled),
            (Scopes::from(S::REST), false, Status::Enabled, Status::Disabled, Status::Enabled),
            (Scopes::from(S::REST), false, Status::Enabled, Status::Enabled, Status::DisabledDueToTenant),
            (Scopes::from(S::INTEGRATION), true, Status::Enabled, Status::Enabled, Status::Enabled),
            (Scopes::from(S::REST), false, Status::Unknown, Status::Enabled, Status::Enabled),
        ];
        let keys = kinds
            .iter()
            .enumerate()
            .map(|(i, &(scopes, read_only, status, user, company))| {
                let owner = Owner {
                    user_uid: format!("u{i}"),
                    user_name: format!("user{i}"),
                    company_id: format!("c{i}"),
                    company_name: format!("Company {i}"),
                };
                let new = NewKey::new(owner)
                    .description("fuzz")
                    .scopes(scopes)
                    .read_only(read_only)
                    .status(status);
                let issued = block_on(async {
                    let issued = ring.issue(new).await.expect("issued");
                    ring.set_user_status(&format!("u{i}"), user).await.expect("user");
                    ring.set_company_status(&format!("c{i}"), company).await.expect("company");
                    issued
                });
                let enabled = [status, user, company].iter().all(|s| *s == Status::Enabled);
                Key {
                    text: issued.key().to_owned(),
                    id: issued.id().get(),
                    facts: KeyFacts { scopes, read_only, enabled },
                }
            })
            .collect();
        Fixture { store, keys }
    })
}

/// `value` with each `{Kn}` replaced by the text of key n.
fn substitute(value: &[u8], keys: &[Key]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i..].starts_with(b"{K") && value.len() > i + 3 && value[i + 3] == b'}' {
            if let Some(key) = (value[i + 2] as char).to_digit(10).and_then(|n| keys.get(n as usize)) {
                out.extend_from_slice(key.text.as_bytes());
                i += 4;
                continue;
            }
        }
        out.push(value[i]);
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let mut lines = data.split(|&b| b == b'\n');
    let method = match lines.next().unwrap_or_default() {
        b"" => Method::GET,
        bytes => match Method::from_bytes(bytes) {
            Ok(method) => method,
            Err(_) => return,
        },
    };
    let Ok(uri) = http::Uri::try_from(lines.next().unwrap_or(b"/")) else {
        return;
    };
    let flags = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut required = None;
    for flag in flags.split(' ') {
        match flag {
            "ui" => required = Some(Scope::UI),
            "rest" => required = Some(Scope::REST),
            "integration" => required = Some(Scope::INTEGRATION),
            _ => {}
        }
    }
    let has = |flag: &str| flags.split(' ').any(|f| f == flag);
    let allow_options = has("options");
    let max_len = if has("small") { 64 } else { 4096 };

    let Ok(mut request) = Request::builder().method(method.clone()).uri(uri).body(()) else {
        return;
    };
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let Ok(name) = HeaderName::from_bytes(&line[..colon]) else {
            return;
        };
        let raw = &line[colon + 1..];
        let raw = raw.strip_prefix(b" ").unwrap_or(raw);
        let Ok(value) = HeaderValue::from_bytes(&substitute(raw, &fixture.keys)) else {
            return;
        };
        request.headers_mut().append(name, value);
    }

    let values: Vec<Vec<u8>> = request
        .headers()
        .get_all(AUTHORIZATION)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    let slices: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
    let invalid_token = reference::challenge_of(tower_api_key::RejectionKind::InvalidToken);
    let mut expected_key = None;
    let verdict = match reference::bearer(&slices, request.uri().query(), max_len) {
        Err(kind) => Verdict::Refuse(reference::status_of(kind), reference::challenge_of(kind)),
        Ok(token) => {
            let token = std::str::from_utf8(token).expect("token68 is ASCII");
            let key = reference::parse_key("tak", token).ok().and_then(|(id, secret)| {
                fixture
                    .keys
                    .iter()
                    .find(|k| k.id == id && k.text.as_bytes()[15..58] == *secret)
            });
            match key {
                Some(key) => {
                    expected_key = Some(key.id);
                    reference::decide(key.facts, &method, required, allow_options)
                }
                None => Verdict::Refuse(401, invalid_token),
            }
        }
    };

    let ring = KeyRing::new(fixture.store.clone());
    if has("warm") {
        block_on(ring.preload()).expect("preload");
    }
    let mut layer = ApiKeyLayer::new(ring)
        .allow_options_for_read_only(allow_options)
        .with_max_header_len(max_len);
    if let Some(scope) = required {
        layer = layer.require_scope(scope);
    }
    let probe = Probe::default();
    let service = ServiceBuilder::new().layer(layer).service_fn(probe.handler());
    let response = send(service, request);
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|v| v.to_str().expect("ASCII challenge").to_owned());

    match verdict {
        Verdict::Pass => {
            assert_eq!(response.status(), 200);
            assert_eq!(probe.calls(), 1);
            let identity = probe.identity().expect("identity in extensions");
            assert_eq!(identity.key_id().map(|id| id.get()), expected_key);
        }
        Verdict::Refuse(status, expected) => {
            assert_eq!(probe.calls(), 0, "the inner service ran for a refused request");
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(challenge, expected);
        }
    }
});
