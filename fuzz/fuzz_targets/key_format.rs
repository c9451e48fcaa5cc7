//! `KeyFormat::parse`: never a panic, and the same answer as the reference in
//! `tests/common/reference.rs` (the id and secret, or why not).
//!
//! Input: the first line is the prefix (a default one when it is not a valid prefix), the rest the
//! value to parse.
#![no_main]

#[path = "../../tests/common/reference.rs"]
mod reference;

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use tower_api_key::key::{KeyFormat, SecretDigest};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (prefix, value) = text.split_once('\n').unwrap_or(("tak", text));
    let (prefix, format) = match KeyFormat::new(prefix) {
        Ok(format) => (prefix, format),
        Err(_) => ("tak", KeyFormat::default()),
    };
    // The secret is compared through its digest, the only thing the crate lets out of it.
    let got = format.parse(value).map(|key| (key.id().get(), key.digest()));
    let want = reference::parse_key(prefix, value)
        .map(|(id, secret)| (id, SecretDigest::from_bytes(Sha256::digest(secret).into())));
    assert_eq!(got, want, "prefix {prefix:?}, value {value:?}");
    assert_eq!(
        format.is_key_shaped(value),
        !matches!(
            reference::parse_key(prefix, value),
            Err(tower_api_key::key::KeyError::NotKeyShaped)
        ),
        "is_key_shaped and parse disagree on {value:?}"
    );
    if let (Ok(key), Ok((_, secret))) = (format.parse(value), reference::parse_key(prefix, value)) {
        // Whatever parses redacts its secret.
        let debug = format!("{key:?}");
        assert!(!debug.contains(std::str::from_utf8(secret).expect("ascii")));
    }
});
