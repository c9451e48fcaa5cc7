//! Reading the bearer credential out of a request (RFC 9110 §11.6.2, RFC 6750 §2.1).

use http::header::AUTHORIZATION;
use http::{HeaderMap, Uri};

use crate::key::SECRET_TOKEN_SCHEME;
use crate::rejection::Reason;

/// Default limit on the `Authorization` header's length in bytes.
pub(crate) const DEFAULT_MAX_HEADER_LEN: usize = 4096;

/// The bearer value of the one `Authorization` header, or why there is none usable.
///
/// The scheme is case-insensitive; exactly one space separates it from the value; trailing spaces and
/// tabs are tolerated. The value's characters are not checked here: a key's parser checks them
/// anyway, and [`token68`] does it for everything else.
#[inline]
pub(crate) fn bearer<'a>(
    headers: &'a HeaderMap,
    uri: &Uri,
    max_len: usize,
) -> Result<&'a [u8], Reason> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Err(Reason::NoCredentials);
    };
    if all.next().is_some() {
        return Err(Reason::DuplicateHeader);
    }
    let bytes = value.as_bytes();
    if bytes.len() > max_len {
        return Err(Reason::Oversized);
    }
    let (scheme, rest) = match bytes.iter().position(|&b| b == b' ') {
        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
        None => (bytes, None),
    };
    if !is_bearer(scheme) {
        // `Bearer<TAB>value`: the right scheme, wrongly separated (RFC 9110 allows only spaces).
        if scheme.len() > 6 && scheme[..6].eq_ignore_ascii_case(b"bearer") && scheme[6] == b'\t' {
            return Err(Reason::MalformedValue);
        }
        return Err(Reason::OtherScheme);
    }
    let rest = rest.unwrap_or_default();
    let end = rest
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(0, |i| i + 1);
    let token = &rest[..end];
    if token.is_empty() {
        return Err(Reason::EmptyValue);
    }
    if query_has_access_token(uri) {
        return Err(Reason::TwoMethods);
    }
    Ok(token)
}

/// `scheme` is `Bearer` in any case. Setting bit 5 of each byte folds an ASCII letter to lower case
/// and maps no other byte to a lower-case letter, so one compare of the folded word does it.
#[inline]
fn is_bearer(scheme: &[u8]) -> bool {
    let Ok(scheme) = <[u8; 6]>::try_from(scheme) else {
        return false;
    };
    let word = |b: [u8; 6]| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], 0, 0]);
    word(scheme) | 0x2020_2020_2020 == word(*b"bearer")
}

/// The value as text if it is token68, optionally behind RFC 8959's `secret-token:`.
pub(crate) fn token68(token: &[u8]) -> Result<&str, Reason> {
    if !is_token68_value(token) {
        return Err(Reason::MalformedValue);
    }
    // token68 is ASCII, so this cannot fail; refuse rather than panic if it ever did.
    std::str::from_utf8(token).map_err(|_| Reason::MalformedValue)
}

/// Whether the value is token68, optionally behind RFC 8959's `secret-token:`.
#[inline]
pub(crate) fn is_token68_value(token: &[u8]) -> bool {
    let body = token
        .strip_prefix(SECRET_TOKEN_SCHEME.as_bytes())
        .unwrap_or(token);
    is_token68(body)
}

/// Bytes allowed in the body of a token68 value (before its `=` padding).
static TOKEN68: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

/// `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
#[inline]
fn is_token68(value: &[u8]) -> bool {
    let body_end = value.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    // No early exit: one pass without branches per byte is faster on key-length values.
    body_end > 0
        && value[..body_end]
            .iter()
            .fold(true, |ok, &b| ok & TOKEN68[usize::from(b)])
}

/// RFC 6750 §2: clients must not use more than one method to transmit the token.
fn query_has_access_token(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| is_access_token(pair.split('=').next().unwrap_or_default()))
    })
}

/// Whether a query parameter name reads `access_token` once form-decoded, as the application behind
/// the layer would read it: `access%5Ftoken` is the same parameter.
fn is_access_token(name: &str) -> bool {
    let name = name.as_bytes();
    let mut expected = b"access_token".iter();
    let mut i = 0;
    while i < name.len() {
        let (byte, len) = match name[i] {
            b'%' => match name.get(i + 1..i + 3).and_then(hex_byte) {
                Some(byte) => (byte, 3),
                None => (b'%', 1),
            },
            b'+' => (b' ', 1),
            byte => (byte, 1),
        };
        if expected.next() != Some(&byte) {
            return false;
        }
        i += len;
    }
    expected.next().is_none()
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| char::from(c).to_digit(16);
    Some((digit(pair[0])? << 4 | digit(pair[1])?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn scheme_folding_matches_ascii_case_insensitivity() {
        // Every byte in every position, against the standard library's definition.
        for pos in 0..6 {
            for b in 0..=255u8 {
                let mut scheme = *b"bearer";
                scheme[pos] = b;
                assert_eq!(
                    is_bearer(&scheme),
                    scheme.eq_ignore_ascii_case(b"bearer"),
                    "{scheme:?}"
                );
            }
        }
        for scheme in [
            &b"bearer"[..],
            b"BEARER",
            b"BeArEr",
            b"bearers",
            b"beare",
            b"",
        ] {
            assert_eq!(is_bearer(scheme), scheme.eq_ignore_ascii_case(b"bearer"));
        }
    }

    fn parse(values: &[&[u8]], uri: &str) -> Result<String, Reason> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                AUTHORIZATION,
                HeaderValue::from_bytes(v).expect("valid header"),
            );
        }
        let uri: Uri = uri.parse().expect("uri");
        bearer(&headers, &uri, DEFAULT_MAX_HEADER_LEN)
            .and_then(token68)
            .map(str::to_owned)
    }

    #[test]
    fn only_a_second_authorization_value_is_a_duplicate() {
        let uri: Uri = "/".parse().expect("uri");
        let value = |v: &'static str| HeaderValue::from_static(v);
        // Other headers repeated, before and after: still one credential.
        let mut headers = HeaderMap::new();
        headers.append("accept", value("text/plain"));
        headers.append("accept", value("application/json"));
        headers.append(AUTHORIZATION, value("Bearer abc"));
        headers.append("x-trace", value("1"));
        headers.append("x-trace", value("2"));
        assert_eq!(
            bearer(&headers, &uri, DEFAULT_MAX_HEADER_LEN),
            Ok(&b"abc"[..])
        );
        // A second Authorization value, with or without other repeats.
        headers.append(AUTHORIZATION, value("Bearer abc"));
        assert_eq!(
            bearer(&headers, &uri, DEFAULT_MAX_HEADER_LEN),
            Err(Reason::DuplicateHeader)
        );
        let mut headers = HeaderMap::new();
        headers.append(AUTHORIZATION, value("Bearer abc"));
        headers.append(AUTHORIZATION, value("Bearer def"));
        assert_eq!(
            bearer(&headers, &uri, DEFAULT_MAX_HEADER_LEN),
            Err(Reason::DuplicateHeader)
        );
    }

    #[test]
    fn scheme_is_case_insensitive_and_trailing_whitespace_tolerated() {
        for header in [
            &b"Bearer abc"[..],
            b"bearer abc",
            b"BEARER abc",
            b"bEaReR abc",
            b"Bearer abc ",
            b"Bearer abc\t",
            b"Bearer abc \t ",
        ] {
            assert_eq!(parse(&[header], "/").as_deref(), Ok("abc"), "{header:?}");
        }
    }

    #[test]
    fn malformed_values_are_invalid_requests() {
        let cases: &[(&[u8], Reason)] = &[
            (b"Bearer", Reason::EmptyValue),
            (b"Bearer ", Reason::EmptyValue),
            (b"Bearer    ", Reason::EmptyValue),
            (b"Bearer  abc", Reason::MalformedValue),
            (b"Bearer a b", Reason::MalformedValue),
            (b"Bearer a,b", Reason::MalformedValue),
            (b"Bearer =abc", Reason::MalformedValue),
            (b"Bearer a=b", Reason::MalformedValue),
            (b"Bearer \"abc\"", Reason::MalformedValue),
            (b"Bearer caf\xc3\xa9", Reason::MalformedValue),
            (b"Bearer \tabc", Reason::MalformedValue),
            (b"Bearer\tabc", Reason::MalformedValue),
        ];
        for (header, reason) in cases {
            assert_eq!(parse(&[header], "/"), Err(*reason), "{header:?}");
        }
    }

    #[test]
    fn token68_padding_and_secret_token_are_accepted() {
        assert_eq!(parse(&[b"Bearer ab+/c=="], "/").as_deref(), Ok("ab+/c=="));
        assert_eq!(
            parse(&[b"Bearer secret-token:abc"], "/").as_deref(),
            Ok("secret-token:abc")
        );
        assert_eq!(
            parse(&[b"Bearer secret-token:"], "/"),
            Err(Reason::MalformedValue)
        );
    }

    #[test]
    fn other_schemes_and_missing_headers_are_missing_credentials() {
        assert_eq!(parse(&[], "/"), Err(Reason::NoCredentials));
        assert_eq!(
            parse(&[b"Basic dXNlcjpwYXNz"], "/"),
            Err(Reason::OtherScheme)
        );
        assert_eq!(parse(&[b"Bearerabc"], "/"), Err(Reason::OtherScheme));
        assert_eq!(parse(&[b"Token abc"], "/"), Err(Reason::OtherScheme));
    }

    #[test]
    fn duplicates_oversize_and_two_methods_are_refused() {
        assert_eq!(
            parse(&[b"Bearer abc", b"Bearer abc"], "/"),
            Err(Reason::DuplicateHeader)
        );
        assert_eq!(
            parse(&[b"Bearer abc", b"Basic x"], "/"),
            Err(Reason::DuplicateHeader)
        );
        let long = format!("Bearer {}", "a".repeat(DEFAULT_MAX_HEADER_LEN));
        assert_eq!(parse(&[long.as_bytes()], "/"), Err(Reason::Oversized));
        assert_eq!(
            parse(&[b"Bearer abc"], "/x?a=1&access_token=abc"),
            Err(Reason::TwoMethods)
        );
        assert_eq!(parse(&[b"Bearer abc"], "/x?token=1").as_deref(), Ok("abc"));
    }

    #[test]
    fn access_token_is_recognised_however_its_name_is_encoded() {
        for query in [
            "access_token=x",
            "access%5Ftoken=x",
            "access%5ftoken",
            "%61%63%63%65%73%73%5F%74%6F%6B%65%6E=x",
            "a=1&acce%73s_token=",
        ] {
            let uri = format!("/x?{query}");
            assert_eq!(
                parse(&[b"Bearer abc"], &uri),
                Err(Reason::TwoMethods),
                "{query}"
            );
        }
        for query in [
            "access_token_hint=1",
            "ACCESS_TOKEN=1",
            "access%5Xtoken=1",
            "access%5",
            "%",
            "access+token=1",
            "x=access_token",
        ] {
            let uri = format!("/x?{query}");
            assert_eq!(
                parse(&[b"Bearer abc"], &uri).as_deref(),
                Ok("abc"),
                "{query}"
            );
        }
    }
}
