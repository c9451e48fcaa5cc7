//! Hostile input in the `Authorization` header: every bit of a valid key flipped, every byte value,
//! 64 KiB values, non-ASCII and invalid UTF-8, control bytes, a thousand headers, duplicates, and the
//! token sent twice. Each is refused with the answer the crate docs' table gives, never reaches the inner
//! service, and, being refused offline, never reaches the store.

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderValue, Method, Request, Response};
use http_body_util::Full;
use tower::ServiceBuilder;
use tower_api_key::{ApiKeyLayer, IssuedKey, KeyRing, MemoryStore, NewKey};

use common::*;

/// A key in a memory store, and a cold ring on that store whose `get`s are counted: any request that
/// reaches the store shows in `store.gets()`.
async fn cold() -> (FaultStore, KeyRing, IssuedKey) {
    let (store, ring, _, issued) = cold_and_warm().await;
    (store, ring, issued)
}

/// As [`cold`], with the ring that issued the key (which has it in its index).
async fn cold_and_warm() -> (FaultStore, KeyRing, KeyRing, IssuedKey) {
    let memory = MemoryStore::new();
    let warm = KeyRing::new(memory.clone());
    let issued = issue(&warm, NewKey::new(alice()).description("hostile")).await;
    let store = FaultStore::new(memory);
    let ring = KeyRing::new(store.clone());
    (store, ring, warm, issued)
}

/// A request to `/things` with these raw `Authorization` values.
fn with_raw(values: &[&[u8]]) -> Request<Body> {
    let mut request = request(Method::GET, "/things", &[]);
    for value in values {
        let value = HeaderValue::from_bytes(value).expect("a value a header can hold");
        request.headers_mut().append(AUTHORIZATION, value);
    }
    request
}

/// Whether `http` lets a header value hold `byte`: HTAB, space, visible ASCII and obs-text.
fn header_byte(byte: u8) -> bool {
    byte == b'\t' || (byte >= 0x20 && byte != 0x7f)
}

#[tokio::test]
async fn every_single_bit_flip_of_a_valid_key_is_refused() {
    let (store, ring, warm, issued) = cold_and_warm().await;
    let key = issued.key().as_bytes();
    let probe = Probe::new();
    let warm = ServiceBuilder::new()
        .layer(ApiKeyLayer::new(warm))
        .service_fn(probe.handler());
    let cold = ServiceBuilder::new()
        .layer(ApiKeyLayer::new(ring))
        .service_fn(probe.handler());
    send(cold.clone(), get_with_key(issued.key()))
        .await
        .assert_passed();
    assert_eq!(probe.calls(), 1);
    let gets = store.gets();

    let (mut sent, mut unsendable) = (0, 0);
    for i in 0..key.len() {
        for bit in 0..8 {
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(key);
            value[7 + i] ^= 1 << bit;
            if HeaderValue::from_bytes(&value).is_err() {
                // A control byte: no HTTP stack hands such a header to a service.
                assert!(!header_byte(value[7 + i]), "byte {i}, bit {bit}");
                unsendable += 1;
                continue;
            }
            for service in [warm.clone(), cold.clone()] {
                let answer = send(service, with_raw(&[&value])).await;
                match answer.status.as_u16() {
                    400 => answer.assert_refused(400, Some(INVALID_REQUEST)),
                    _ => answer.assert_refused(401, Some(INVALID_TOKEN)),
                }
            }
            sent += 1;
        }
    }
    println!("bit flips: {sent} sent and refused, {unsendable} not representable in a header");
    assert_eq!(sent + unsendable, key.len() * 8);
    assert!(sent > key.len() * 5, "most flips can be sent: {sent}");
    assert_eq!(probe.calls(), 1, "no flipped key reached the inner service");
    // CRC32 catches every single-bit error: not one flipped key was worth a store lookup.
    assert_eq!(store.gets(), gets);
}

#[tokio::test]
async fn every_byte_value_inside_a_key_is_refused_or_cannot_be_sent() {
    let (store, ring, issued) = cold().await;
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    let position = "Bearer tak_".len() + 11 + 20;
    let mut unsendable = Vec::new();
    for byte in 0..=255u8 {
        let mut value = bearer(issued.key()).into_bytes();
        if value[position] == byte {
            continue;
        }
        value[position] = byte;
        let Ok(header) = HeaderValue::from_bytes(&value) else {
            unsendable.push(byte);
            continue;
        };
        let mut changed = request(Method::GET, "/things", &[]);
        changed.headers_mut().insert(AUTHORIZATION, header);
        let answer = send(service.clone(), changed).await;
        if byte.is_ascii_alphanumeric() {
            // Still key-shaped: the checksum refuses it.
            answer.assert_refused(401, Some(INVALID_TOKEN));
        } else {
            // Not token68 (space, punctuation, obs-text): the header is malformed. `-._~+/` are
            // token68 but not base62: a malformed key.
            let expected = if b"-._~+/".contains(&byte) {
                (401, INVALID_TOKEN)
            } else {
                (400, INVALID_REQUEST)
            };
            answer.assert_refused(expected.0, Some(expected.1));
        }
    }
    // `http` refuses to hold NUL, CR, LF and the other controls but HTAB, and DEL.
    let controls: Vec<u8> = (0..=255u8).filter(|&b| !header_byte(b)).collect();
    assert_eq!(unsendable, controls);
    assert_eq!(controls.len(), 32);
    assert_eq!(probe.calls(), 0);
    assert_eq!(store.gets(), 0);
}

#[tokio::test]
async fn non_ascii_and_invalid_utf8_are_refused() {
    let (store, ring, issued) = cold().await;
    let key = issued.key();
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    let in_value: Vec<Vec<u8>> = vec![
        format!("Bearer {key}é").into_bytes(),
        format!("Bearer é{key}").into_bytes(),
        "Bearer 🔑".as_bytes().to_vec(),
        [b"Bearer ".as_slice(), key.as_bytes(), b"\xff\xfe"].concat(),
        [
            b"Bearer ".as_slice(),
            &key.as_bytes()[..30],
            b"\xc3",
            &key.as_bytes()[31..],
        ]
        .concat(),
        b"Bearer \x80\x80\x80".to_vec(),
        b"Bearer secret-token:\xe2\x82".to_vec(),
        [b"Bearer ".as_slice(), key.as_bytes(), b" \xa0"].concat(),
    ];
    for value in &in_value {
        send(service.clone(), with_raw(&[value]))
            .await
            .assert_refused(400, Some(INVALID_REQUEST));
    }
    // In the scheme: not Bearer at all.
    for value in [
        format!("Béarer {key}").into_bytes(),
        [b"\xffBearer ".as_slice(), key.as_bytes()].concat(),
        [b"Bearer\xa0".as_slice(), key.as_bytes()].concat(),
    ] {
        send(service.clone(), with_raw(&[&value]))
            .await
            .assert_refused(401, Some(MISSING));
    }
    assert_eq!(probe.calls(), 0);
    assert_eq!(store.gets(), 0);
}

#[test]
fn nul_cr_lf_cannot_be_put_in_a_header_value() {
    // What cannot be built cannot reach the layer: `http` refuses these at construction, and
    // `from_maybe_shared_unchecked`, which would skip the check, is unsafe.
    for value in [
        &b"Bearer \0"[..],
        b"Bearer abc\0def",
        b"\0Bearer abc",
        b"Bearer abc\r\nX-Injected: 1",
        b"Bearer abc\n",
        b"Bearer \x1b[31m",
        b"Bearer \x7f",
    ] {
        assert!(HeaderValue::from_bytes(value).is_err(), "{value:?}");
        assert!(
            HeaderValue::from_str(&String::from_utf8_lossy(value)).is_err(),
            "{value:?}"
        );
    }
}

#[tokio::test]
async fn control_bytes_sent_on_the_wire_never_reach_the_layer() {
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (store, ring, issued) = cold().await;
    let probe = Probe::new();
    let handler = probe.handler();
    let service = ServiceBuilder::new()
        .layer(ApiKeyLayer::new(ring))
        .service_fn(move |request: Request<hyper::body::Incoming>| {
            let inner = handler.clone();
            async move {
                inner(Request::new(Body::default())).await?;
                let _ = request;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let key = issued.key();
    let raw = |value: &[u8]| {
        [
            b"GET /things HTTP/1.1\r\nHost: localhost\r\nAuthorization: ".as_slice(),
            value,
            b"\r\nConnection: close\r\n\r\n",
        ]
        .concat()
    };
    let mut answers = Vec::new();
    for value in [
        format!("Bearer {key}\0").into_bytes(),
        format!("Bearer \0{key}").into_bytes(),
        format!("Bearer {key}\x01").into_bytes(),
        format!("Bearer {key}\x7f").into_bytes(),
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(&raw(&value)).await.expect("write");
        let mut answer = Vec::new();
        // The server answers or closes; either way the read ends.
        let _ = stream.read_to_end(&mut answer).await;
        answers.push(String::from_utf8_lossy(&answer).into_owned());
    }
    for answer in &answers {
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }
    // The same request with the key intact passes: the server and layer work.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&raw(format!("Bearer {key}").as_bytes()))
        .await
        .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert_eq!(probe.calls(), 1);
    assert_eq!(store.gets(), 1);
}

#[tokio::test]
async fn authorization_of_64_kib_is_refused_without_store_call() {
    let (store, ring, issued) = cold().await;
    let key = issued.key();
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring.clone()));

    let big = 64 * 1024;
    let cases = [
        format!("Bearer {}", "a".repeat(big)),
        format!("Bearer {key}{}", " ".repeat(big)),
        format!("Bearer {}{key}", "A".repeat(big)),
        format!("Basic {}", "A".repeat(big)),
        "B".repeat(big),
    ];
    for value in &cases {
        send(service.clone(), with_raw(&[value.as_bytes()]))
            .await
            .assert_refused(400, Some(INVALID_REQUEST));
    }

    // With the limit raised above 64 KiB the value is read, and refused or passed on its merits.
    let generous = ServiceBuilder::new()
        .layer(ApiKeyLayer::new(ring).with_max_header_len(128 * 1024))
        .service_fn(probe.handler());
    send(generous.clone(), with_raw(&[cases[0].as_bytes()]))
        .await
        .assert_refused(401, Some(INVALID_TOKEN));
    send(generous.clone(), with_raw(&[cases[2].as_bytes()]))
        .await
        .assert_refused(401, Some(INVALID_TOKEN));
    send(generous.clone(), with_raw(&[cases[3].as_bytes()]))
        .await
        .assert_refused(401, Some(MISSING));
    assert_eq!(store.gets(), 0, "nothing so far was worth a lookup");
    send(generous, with_raw(&[cases[1].as_bytes()]))
        .await
        .assert_passed();
    assert_eq!(store.gets(), 1);
    assert_eq!(probe.calls(), 1);
}

#[tokio::test]
async fn a_thousand_headers() {
    let (store, ring, issued) = cold().await;
    let auth = bearer(issued.key());
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));
    let others = |request: &mut Request<Body>| {
        for i in 0..1000 {
            let name = HeaderName::try_from(format!("x-noise-{i}")).expect("name");
            request
                .headers_mut()
                .insert(name, HeaderValue::from_static("Bearer tak_0"));
        }
    };

    // A thousand other headers around one Authorization: the key is found and checked.
    let mut crowded = request(Method::GET, "/things", &[]);
    others(&mut crowded);
    crowded
        .headers_mut()
        .insert(AUTHORIZATION, HeaderValue::from_str(&auth).expect("value"));
    send(service.clone(), crowded).await.assert_passed();
    assert_eq!(store.gets(), 1);

    // A thousand Authorization headers, valid keys all: two are already too many.
    let many: Vec<&str> = vec![auth.as_str(); 1000];
    send(service.clone(), request_with(&many))
        .await
        .assert_refused(400, Some(INVALID_REQUEST));
    // A thousand others and no Authorization.
    let mut bare = request(Method::GET, "/things", &[]);
    others(&mut bare);
    send(service, bare).await.assert_refused(401, Some(MISSING));
    assert_eq!(store.gets(), 1);
    assert_eq!(probe.calls(), 1);
}

fn request_with(authorization: &[&str]) -> Request<Body> {
    request(Method::GET, "/things", authorization)
}

#[tokio::test]
async fn duplicate_authorization_in_either_order_is_refused_without_store_call() {
    let (store, ring, issued) = cold().await;
    let valid = bearer(issued.key());
    let lower = format!("bearer {}", issued.key());
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    let invalid = [
        "Bearer not-a-key".to_owned(),
        bearer(&with_bad_checksum(issued.key())),
        bearer(&with_other_secret(issued.key())),
        "Basic dXNlcjpwYXNz".to_owned(),
        "Bearer".to_owned(),
    ];
    for other in &invalid {
        for pair in [[valid.as_str(), other], [other, valid.as_str()]] {
            send(service.clone(), request_with(&pair))
                .await
                .assert_refused(400, Some(INVALID_REQUEST));
        }
    }
    for pair in [[&valid, &valid], [&valid, &lower]] {
        send(service.clone(), request_with(&[pair[0], pair[1]]))
            .await
            .assert_refused(400, Some(INVALID_REQUEST));
    }
    assert_eq!(probe.calls(), 0);
    assert_eq!(store.gets(), 0, "no header was trusted enough to look up");
}

#[tokio::test]
async fn header_and_access_token_parameter_get_400_without_store_call() {
    let (store, ring, issued) = cold().await;
    let key = issued.key();
    let (probe, service) = Probe::behind(ApiKeyLayer::new(ring));

    for query in [
        format!("access_token={key}"),
        "access_token=".to_owned(),
        "access_token".to_owned(),
        "a=1&access_token=x&b=2".to_owned(),
        format!("access%5Ftoken={key}"),
        "%61ccess_token=x".to_owned(),
        "access_token=x&access_token=y".to_owned(),
    ] {
        let uri = format!("/things?{query}");
        send(service.clone(), request(Method::GET, &uri, &[&bearer(key)]))
            .await
            .assert_refused(400, Some(INVALID_REQUEST));
    }
    assert_eq!(probe.calls(), 0);
    assert_eq!(store.gets(), 0);

    // Names that only resemble it are other parameters.
    for query in ["access_token_hint=1", "ACCESS_TOKEN=1", "x=access_token"] {
        let uri = format!("/things?{query}");
        send(service.clone(), request(Method::GET, &uri, &[&bearer(key)]))
            .await
            .assert_passed();
    }
    assert_eq!(store.gets(), 1);
}
