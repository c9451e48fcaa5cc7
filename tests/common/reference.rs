//! The key format, the read-only and scope rules and the answers restated as plainly as possible, for the property tests (`tests/properties.rs`) and the
//! fuzz targets (`fuzz/`, which include this file by path) to hold the crate to.
//!
//! Written for clarity, not speed, and without looking at how `src/` does it: each function follows
//! the text of the design and the RFCs it cites, step by step.

// Each user of this file needs its own part of it.
#![allow(dead_code)]

use http::Method;
use tower_api_key::key::KeyError;
use tower_api_key::{RejectionKind, Scope, Scopes};

/// The base62 digits, in value order.
pub(crate) const BASE62: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Characters of the id, the secret and the checksum of a key.
pub(crate) const ID_CHARS: usize = 11;
pub(crate) const SECRET_CHARS: usize = 43;
pub(crate) const CHECKSUM_CHARS: usize = 6;
/// RFC 8959's wrapper.
pub(crate) const WRAPPER: &str = "secret-token:";

fn digit(c: u8) -> Option<u128> {
    BASE62.iter().position(|&d| d == c).map(|v| v as u128)
}

/// Big-endian base62 of `text`, or `None` if a character is not a digit.
fn base62(text: &[u8]) -> Option<u128> {
    text.iter()
        .try_fold(0u128, |acc, &c| Some(acc * 62 + digit(c)?))
}

/// Fixed-width base62 of `value` (most significant digit first).
pub(crate) fn encode_base62(mut value: u64, width: usize) -> Vec<u8> {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// `<prefix>_<id><secret><checksum>` with the checksum that matches.
pub(crate) fn key_text(prefix: &str, id: &[u8], secret: &[u8]) -> String {
    let mut body = format!("{prefix}_").into_bytes();
    body.extend_from_slice(id);
    body.extend_from_slice(secret);
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&encode_base62(u64::from(crc), CHECKSUM_CHARS));
    String::from_utf8(body).expect("key text is ASCII")
}

/// The key format: what `KeyFormat::parse` must make of `value` for keys with `prefix`: the id and the
/// secret's characters, or why not.
pub(crate) fn parse_key<'a>(prefix: &str, value: &'a str) -> Result<(u64, &'a [u8]), KeyError> {
    // One wrapper may stand in front; what follows it must be the key itself.
    let key = value.strip_prefix(WRAPPER).unwrap_or(value).as_bytes();
    let head = format!("{prefix}_");
    let length = head.len() + ID_CHARS + SECRET_CHARS + CHECKSUM_CHARS;
    if key.len() != length || !key.starts_with(head.as_bytes()) {
        return Err(KeyError::NotKeyShaped);
    }
    let id_text = &key[head.len()..head.len() + ID_CHARS];
    let secret = &key[head.len() + ID_CHARS..length - CHECKSUM_CHARS];
    let checksum_text = &key[length - CHECKSUM_CHARS..];
    if !key[head.len()..].iter().all(|c| BASE62.contains(c)) {
        return Err(KeyError::Malformed);
    }
    let id = base62(id_text).ok_or(KeyError::Malformed)?;
    let id = u64::try_from(id).map_err(|_| KeyError::Malformed)?;
    let checksum = base62(checksum_text).ok_or(KeyError::Malformed)?;
    if checksum != u128::from(crc32fast::hash(&key[..length - CHECKSUM_CHARS])) {
        return Err(KeyError::BadChecksum);
    }
    // Ids are 1 to 2^53 - 1.
    if id == 0 || id >= 1 << 53 {
        return Err(KeyError::Malformed);
    }
    Ok((id, secret))
}

/// RFC 7235 token68: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68(value: &[u8]) -> bool {
    let body_len = value.len() - value.iter().rev().take_while(|&&c| c == b'=').count();
    body_len > 0
        && value[..body_len]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-._~+/".contains(&c))
}

fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Whether the query names an `access_token` parameter (RFC 6750 §2.3), as an application decoding
/// it would read it: `+` is a space and `%XX` escapes are decoded.
pub(crate) fn query_has_access_token(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .map(|pair| pair.split('=').next().unwrap_or(""))
            .any(|name| url_decode(name.as_bytes()) == b"access_token")
    })
}

fn url_decode(text: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'%' if i + 2 < text.len() => match (hex(text[i + 1]), hex(text[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// The answer table and RFC 6750 §2.1: the bearer token of a request with these `Authorization` values and
/// query, or the kind of refusal. The token keeps any `secret-token:` wrapper.
pub(crate) fn bearer<'a>(
    values: &[&'a [u8]],
    query: Option<&str>,
    max_len: usize,
) -> Result<&'a [u8], RejectionKind> {
    let value = match values {
        [] => return Err(RejectionKind::MissingCredentials),
        [one] => *one,
        _ => return Err(RejectionKind::InvalidRequest),
    };
    if value.len() > max_len {
        return Err(RejectionKind::InvalidRequest);
    }
    let rest = if starts_with_ignore_case(value, b"bearer ") {
        &value[7..]
    } else if value.eq_ignore_ascii_case(b"bearer") {
        &value[6..]
    } else if starts_with_ignore_case(value, b"bearer\t") {
        // The right scheme, but RFC 9110 separates it from the value with a space only.
        return Err(RejectionKind::InvalidRequest);
    } else {
        return Err(RejectionKind::MissingCredentials);
    };
    let trailing = rest
        .iter()
        .rev()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    let token = &rest[..rest.len() - trailing];
    if token.is_empty() {
        return Err(RejectionKind::InvalidRequest);
    }
    let unwrapped = token.strip_prefix(WRAPPER.as_bytes()).unwrap_or(token);
    if !is_token68(unwrapped) {
        return Err(RejectionKind::InvalidRequest);
    }
    if query_has_access_token(query) {
        return Err(RejectionKind::InvalidRequest);
    }
    Ok(token)
}

/// Whether a read-only identity may use `method` (the read-only rule).
pub(crate) fn reads(method: &Method, allow_options: bool) -> bool {
    method == Method::GET || method == Method::HEAD || (allow_options && method == Method::OPTIONS)
}

/// What an authenticated key holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyFacts {
    pub(crate) scopes: Scopes,
    pub(crate) read_only: bool,
    /// The key, its user and its company are all `enabled`.
    pub(crate) enabled: bool,
}

/// The answer the layer must give a request that presents a well-formed, correct key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The inner service runs.
    Pass,
    /// Refused with this status and this `WWW-Authenticate` challenge (default realm).
    Refuse(u16, Option<String>),
}

/// The decision as a table: status first, then scope, then read-only.
pub(crate) fn decide(
    facts: KeyFacts,
    method: &Method,
    required: Option<Scope>,
    allow_options: bool,
) -> Verdict {
    let has_scope = required.is_none_or(|scope| facts.scopes.contains(scope));
    let may_use_method = !facts.read_only || reads(method, allow_options);
    match (facts.enabled, has_scope, may_use_method) {
        (false, _, _) => Verdict::Refuse(
            401,
            Some(r#"Bearer realm="api", error="invalid_token""#.into()),
        ),
        (true, false, _) => Verdict::Refuse(
            403,
            Some(format!(
                r#"Bearer realm="api", error="insufficient_scope", scope="{}""#,
                required.expect("a scope is required").name()
            )),
        ),
        (true, true, false) => Verdict::Refuse(
            403,
            Some(r#"Bearer realm="api", error="insufficient_scope""#.into()),
        ),
        (true, true, true) => Verdict::Pass,
    }
}

/// The status of each kind of refusal.
pub(crate) fn status_of(kind: RejectionKind) -> u16 {
    match kind {
        RejectionKind::MissingCredentials | RejectionKind::InvalidToken => 401,
        RejectionKind::InvalidRequest => 400,
        RejectionKind::InsufficientScope => 403,
        RejectionKind::Unavailable => 503,
        _ => unreachable!("a kind this reference does not know"),
    }
}

/// The `WWW-Authenticate` challenge of each kind of refusal (default realm); `insufficient_scope`
/// may also name a scope, which [`decide`] gives.
pub(crate) fn challenge_of(kind: RejectionKind) -> Option<String> {
    match kind {
        RejectionKind::MissingCredentials => Some(r#"Bearer realm="api""#.into()),
        RejectionKind::InvalidRequest => {
            Some(r#"Bearer realm="api", error="invalid_request""#.into())
        }
        RejectionKind::InvalidToken => Some(r#"Bearer realm="api", error="invalid_token""#.into()),
        RejectionKind::InsufficientScope => {
            Some(r#"Bearer realm="api", error="insufficient_scope""#.into())
        }
        _ => None,
    }
}
