//! Key format: generation, parsing and offline validation.
//!
//! A key reads `<prefix>_<id><secret><checksum>`:
//!
//! | part | content | encoding |
//! |---|---|---|
//! | prefix | 2 to 16 chars `[a-z0-9]`, names the issuer | as is |
//! | id | public key id, random, below 2<sup>53</sup> | base62, 11 chars |
//! | secret | 32 bytes from the OS CSPRNG | base62, 43 chars |
//! | checksum | CRC32 over everything before it | base62, 6 chars |
//!
//! Everything here is offline: a value that is not key-shaped, or whose checksum is wrong, is refused
//! without any store being asked.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "tak";

/// The wrapper of RFC 8959, accepted in front of a key.
pub(crate) const SECRET_TOKEN_SCHEME: &str = "secret-token:";

const ID_LEN: usize = 11;
const SECRET_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
const BODY_LEN: usize = ID_LEN + SECRET_LEN + CHECKSUM_LEN;
const MAX_PREFIX_LEN: usize = 16;

/// Key ids are drawn below 2<sup>53</sup> so they survive a round trip through any JSON number.
pub(crate) const MAX_KEY_ID: u64 = (1 << 53) - 1;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

const INVALID: u8 = 0xff;
static DECODE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 62 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// The public id of a key: the identity's `id` and `identifierInProvider`.
///
/// Ids are not secret; they are the only thing a key is ever looked up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct KeyId(u64);

impl KeyId {
    /// Wraps a raw id; `None` for `0` or ids at or above 2<sup>53</sup>, which no key can carry.
    pub fn new(raw: u64) -> Option<Self> {
        (raw != 0 && raw <= MAX_KEY_ID).then_some(Self(raw))
    }

    /// The raw id.
    pub fn get(self) -> u64 {
        self.0
    }

    fn random() -> Result<Self, KeyError> {
        loop {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).map_err(|_| KeyError::Rng)?;
            if let Some(id) = Self::new(u64::from_le_bytes(bytes) & MAX_KEY_ID) {
                return Ok(id);
            }
        }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// `SHA-256` of a key's secret: what stores keep instead of the key.
#[derive(Clone, Copy)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    /// Wraps digest bytes read back from a store.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest bytes, for writing to a store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time equality.
    #[inline]
    pub fn ct_eq(&self, other: &Self) -> subtle::Choice {
        // XOR-OR over four words has no data-dependent branch; `subtle` turns the result into a
        // `Choice` behind its optimisation barrier. Cheaper than `subtle`'s byte-by-byte slice compare.
        let (a, b) = (&self.0, &other.0);
        let diff = (word(&a[0..8]) ^ word(&b[0..8]))
            | (word(&a[8..16]) ^ word(&b[8..16]))
            | (word(&a[16..24]) ^ word(&b[16..24]))
            | (word(&a[24..32]) ^ word(&b[24..32]));
        diff.ct_eq(&0)
    }

    pub(crate) fn of_secret(secret: &[u8]) -> Self {
        match one_block(secret) {
            Some(digest) => Self(digest),
            None => Self(Sha256::digest(secret).into()),
        }
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(<redacted>)")
    }
}

/// Why a value is not a usable key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The value does not have the shape of a key with this prefix; it may be another kind of token.
    NotKeyShaped,
    /// Key-shaped, but a character is outside base62 or the id does not decode.
    Malformed,
    /// Key-shaped, but the checksum does not match: a typo or a forgery.
    BadChecksum,
    /// The prefix is not 2 to 16 characters of `[a-z0-9]`.
    InvalidPrefix,
    /// The operating system's random number generator failed.
    Rng,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotKeyShaped => "value is not an API key",
            Self::Malformed => "malformed API key",
            Self::BadChecksum => "API key checksum mismatch",
            Self::InvalidPrefix => "key prefix must be 2 to 16 characters of [a-z0-9]",
            Self::Rng => "the OS random number generator failed",
        })
    }
}

impl std::error::Error for KeyError {}

/// The issuer prefix and the rules that go with it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyFormat {
    // `<prefix>_`, so the hot path compares one slice.
    head: Box<str>,
}

impl KeyFormat {
    /// A format with the given prefix (2 to 16 characters of `[a-z0-9]`).
    pub fn new(prefix: &str) -> Result<Self, KeyError> {
        let ok = (2..=MAX_PREFIX_LEN).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Err(KeyError::InvalidPrefix);
        }
        Ok(Self {
            head: format!("{prefix}_").into_boxed_str(),
        })
    }

    /// The prefix, without the separating `_`.
    pub fn prefix(&self) -> &str {
        &self.head[..self.head.len() - 1]
    }

    /// Length in bytes of every key of this format.
    pub fn key_len(&self) -> usize {
        self.head.len() + BODY_LEN
    }

    /// Whether `value` has the shape of a key of this format (prefix and length), with or without
    /// the `secret-token:` wrapper. Says nothing of the checksum.
    pub fn is_key_shaped(&self, value: &str) -> bool {
        self.shaped(value.as_bytes()).is_some()
    }

    /// The key without its `secret-token:` wrapper, if it has the shape of a key of this format.
    #[inline]
    fn shaped<'a>(&self, value: &'a [u8]) -> Option<&'a [u8]> {
        let value = value
            .strip_prefix(SECRET_TOKEN_SCHEME.as_bytes())
            .unwrap_or(value);
        (value.len() == self.key_len() && value.starts_with(self.head.as_bytes())).then_some(value)
    }

    /// Parses and checks a key offline: shape, alphabet, id range and checksum.
    ///
    /// The `secret-token:` wrapper of RFC 8959 is accepted in front of the key.
    pub fn parse<'a>(&self, value: &'a str) -> Result<ParsedKey<'a>, KeyError> {
        self.parse_bytes(value.as_bytes())
    }

    /// [`KeyFormat::parse`] on the raw bytes of a header value.
    #[inline]
    pub(crate) fn parse_bytes<'a>(&self, value: &'a [u8]) -> Result<ParsedKey<'a>, KeyError> {
        let bytes = self.shaped(value).ok_or(KeyError::NotKeyShaped)?;
        let body = &bytes[self.head.len()..];
        let (id_text, rest) = body
            .split_first_chunk::<ID_LEN>()
            .ok_or(KeyError::Malformed)?;
        let (secret, checksum_text) = rest
            .split_last_chunk::<CHECKSUM_LEN>()
            .ok_or(KeyError::Malformed)?;

        let id = decode_id(id_text).ok_or(KeyError::Malformed)?;
        let checksum = decode_checksum(checksum_text).ok_or(KeyError::Malformed)?;
        if !all_base62(secret) {
            return Err(KeyError::Malformed);
        }
        let expected = crc32fast::hash(&bytes[..bytes.len() - CHECKSUM_LEN]);
        if checksum != u64::from(expected) {
            return Err(KeyError::BadChecksum);
        }
        let id = KeyId::new(id).ok_or(KeyError::Malformed)?;
        Ok(ParsedKey { id, secret })
    }

    /// Generates a fresh key from the OS CSPRNG.
    pub fn generate(&self) -> Result<GeneratedKey, KeyError> {
        let id = KeyId::random()?;
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut secret[..]).map_err(|_| KeyError::Rng)?;
        Ok(self.assemble(id, &secret))
    }

    fn assemble(&self, id: KeyId, secret: &[u8; 32]) -> GeneratedKey {
        let mut text = Zeroizing::new(String::with_capacity(self.key_len()));
        text.push_str(&self.head);
        let mut buf = [0u8; SECRET_LEN];
        encode_u64(id.0, &mut buf[..ID_LEN]);
        push_ascii(&mut text, &buf[..ID_LEN]);
        encode_bytes(secret, &mut buf);
        push_ascii(&mut text, &buf);
        let digest = SecretDigest::of_secret(&buf);
        buf.zeroize();
        let crc = crc32fast::hash(text.as_bytes());
        let mut tail = [0u8; CHECKSUM_LEN];
        encode_u64(u64::from(crc), &mut tail);
        push_ascii(&mut text, &tail);
        GeneratedKey { id, digest, text }
    }
}

impl Default for KeyFormat {
    fn default() -> Self {
        Self {
            head: format!("{DEFAULT_PREFIX}_").into_boxed_str(),
        }
    }
}

impl fmt::Debug for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFormat")
            .field("prefix", &self.prefix())
            .finish()
    }
}

/// A key that passed the offline checks. Borrowed from the request; never stored.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    id: KeyId,
    secret: &'a [u8],
}

impl ParsedKey<'_> {
    /// The key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// `SHA-256` of the secret: the one hash on the accept path.
    pub fn digest(&self) -> SecretDigest {
        SecretDigest::of_secret(self.secret)
    }
}

impl fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A freshly generated key: the text to hand out once, and the digest to store.
///
/// The text is zeroized when this value is dropped.
pub struct GeneratedKey {
    id: KeyId,
    digest: SecretDigest,
    text: Zeroizing<String>,
}

impl GeneratedKey {
    /// The key id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The digest to store.
    pub fn digest(&self) -> SecretDigest {
        self.digest
    }

    /// The full key, to show once to its owner.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// SHA-256 of a message that fits one block (at most 55 bytes, as every secret does), padded here
/// and run through the compression function alone: the same digest as `Sha256::digest`, without the
/// streaming buffer that a message of unknown length needs.
#[inline]
fn one_block(message: &[u8]) -> Option<[u8; 32]> {
    const H0: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];
    if message.len() > 55 {
        return None;
    }
    let mut block = [0u8; 64];
    block[..message.len()].copy_from_slice(message);
    block[message.len()] = 0x80;
    block[56..].copy_from_slice(&((message.len() as u64) * 8).to_be_bytes());
    let mut state = H0;
    sha2::compress256(&mut state, &[block.into()]);
    block.zeroize();
    let mut digest = [0u8; 32];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    Some(digest)
}

/// Whether every byte of the secret is base62: three 16-byte windows (the last overlapping the
/// second) of range compares, with no early exit, so the check is three vector steps and no byte
/// is left to a scalar tail.
#[inline]
fn all_base62(secret: &[u8]) -> bool {
    let window = |start: usize| {
        secret
            .get(start..start + 16)
            .and_then(|w| <&[u8; 16]>::try_from(w).ok())
            .is_some_and(|w| w.iter().fold(true, |ok, &b| ok & is_base62(b)))
    };
    secret.len() == SECRET_LEN && window(0) & window(16) & window(SECRET_LEN - 16)
}

#[inline]
fn is_base62(b: u8) -> bool {
    (b.wrapping_sub(b'0') < 10) | (b.wrapping_sub(b'A') < 26) | (b.wrapping_sub(b'a') < 26)
}

#[inline]
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

fn push_ascii(text: &mut String, ascii: &[u8]) {
    text.extend(ascii.iter().map(|&b| char::from(b)));
}

/// The 11 base62 digits of a key id, or `None` if one is not base62 or the value is above
/// `u64::MAX`.
///
/// Digits are joined as a balanced tree (pairs, then fours, then the rest) rather than one digit
/// after the other, so the multiplies of each level are independent and the chain is four deep
/// instead of eleven.
#[inline]
fn decode_id(text: &[u8; ID_LEN]) -> Option<u64> {
    let mut seen = 0u8;
    let mut two = |i: usize| pair(text, i, &mut seen);
    let (p0, p1, p2, p3, p4) = (two(0), two(2), two(4), two(6), two(8));
    let last = digit(text[10], &mut seen);
    // Below 62^8 < 2^48: no overflow before the last step, which is taken in 128 bits.
    let high = (p0 * 3844 + p1) * 3844u64.pow(2) + (p2 * 3844 + p3);
    let low = p4 * 62 + last;
    if seen & 0x80 != 0 {
        return None;
    }
    u64::try_from(u128::from(high) * 62u128.pow(3) + u128::from(low)).ok()
}

/// The 6 base62 digits of a checksum (below 62^6 < 2^36), or `None` if one is not base62.
#[inline]
fn decode_checksum(text: &[u8; CHECKSUM_LEN]) -> Option<u64> {
    let mut seen = 0u8;
    let mut two = |i: usize| pair(text, i, &mut seen);
    let (p0, p1, p2) = (two(0), two(2), two(4));
    let value = (p0 * 3844 + p1) * 3844 + p2;
    (seen & 0x80 == 0).then_some(value)
}

/// Digits `i` and `i + 1` as one base-3844 digit.
#[inline]
fn pair(text: &[u8], i: usize, seen: &mut u8) -> u64 {
    digit(text[i], seen) * 62 + digit(text[i + 1], seen)
}

/// One base62 digit; an invalid one sets the top bit of `seen`.
#[inline]
fn digit(b: u8, seen: &mut u8) -> u64 {
    let digit = DECODE[usize::from(b)];
    *seen |= digit;
    u64::from(digit)
}

fn encode_u64(mut value: u64, out: &mut [u8]) {
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
}

/// Big-endian base62 of 32 bytes into exactly 43 characters (62<sup>43</sup> > 2<sup>256</sup>).
fn encode_bytes(bytes: &[u8; 32], out: &mut [u8; SECRET_LEN]) {
    let mut n = *bytes;
    for slot in out.iter_mut().rev() {
        let mut rem: u32 = 0;
        for byte in n.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            rem = acc % 62;
        }
        *slot = ALPHABET[rem as usize];
    }
    n.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format() -> KeyFormat {
        KeyFormat::new("tak").expect("valid prefix")
    }

    #[test]
    fn generated_key_parses_back_to_its_id_and_digest() {
        let f = format();
        for _ in 0..200 {
            let key = f.generate().expect("rng");
            assert_eq!(key.expose().len(), f.key_len());
            assert!(key.expose().starts_with("tak_"));
            let parsed = f.parse(key.expose()).expect("parses");
            assert_eq!(parsed.id(), key.id());
            assert!(bool::from(parsed.digest().ct_eq(&key.digest())));
        }
    }

    #[test]
    fn keys_use_only_token_safe_characters() {
        let key = format().generate().expect("rng");
        assert!(key
            .expose()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }

    #[test]
    fn secret_token_wrapper_is_accepted() {
        let f = format();
        let key = f.generate().expect("rng");
        let wrapped = format!("secret-token:{}", key.expose());
        assert!(f.is_key_shaped(&wrapped));
        assert_eq!(f.parse(&wrapped).expect("parses").id(), key.id());
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let f = format();
        let key = f.generate().expect("rng");
        let original = key.expose().to_owned();
        for i in f.prefix().len() + 1..original.len() {
            for &c in ALPHABET {
                if original.as_bytes()[i] == c {
                    continue;
                }
                let mut changed = original.clone().into_bytes();
                changed[i] = c;
                let changed = String::from_utf8(changed).expect("ascii");
                let parsed = f.parse(&changed);
                // A changed secret could only pass if the CRC collides, which a single substitution cannot do.
                assert!(parsed.is_err(), "position {i} char {c} accepted");
            }
        }
    }

    #[test]
    fn a_second_wrapper_is_not_taken_off() {
        // With a long numeric prefix the bytes after one wrapper decode as an id; they must not be
        // read as a key at all.
        for prefix in ["tak", "0000000000000000"] {
            let f = KeyFormat::new(prefix).expect("valid prefix");
            let key = f.generate().expect("rng");
            let twice = format!("{SECRET_TOKEN_SCHEME}{SECRET_TOKEN_SCHEME}{}", key.expose());
            assert_eq!(f.parse(&twice).unwrap_err(), KeyError::NotKeyShaped);
        }
    }

    #[test]
    fn other_prefix_or_length_is_not_key_shaped() {
        let f = format();
        let key = f.generate().expect("rng");
        let other = KeyFormat::new("xyz")
            .expect("valid")
            .generate()
            .expect("rng");
        assert_eq!(f.parse(other.expose()).unwrap_err(), KeyError::NotKeyShaped);
        assert_eq!(
            f.parse(&key.expose()[1..]).unwrap_err(),
            KeyError::NotKeyShaped
        );
        assert_eq!(
            f.parse(&format!("{}A", key.expose())).unwrap_err(),
            KeyError::NotKeyShaped
        );
        assert_eq!(
            f.parse("eyJhbGciOiJIUzI1NiJ9.e30.sig").unwrap_err(),
            KeyError::NotKeyShaped
        );
    }

    #[test]
    fn non_base62_inside_a_key_shaped_value_is_malformed() {
        let f = format();
        let key = f.generate().expect("rng");
        let mut bytes = key.expose().as_bytes().to_vec();
        bytes[20] = b'-';
        let text = String::from_utf8(bytes).expect("ascii");
        assert_eq!(f.parse(&text).unwrap_err(), KeyError::Malformed);
    }

    #[test]
    fn id_overflow_is_malformed_not_a_panic() {
        let f = format();
        let mut text = String::from("tak_");
        text.push_str(&"z".repeat(ID_LEN));
        text.push_str(&"0".repeat(SECRET_LEN + CHECKSUM_LEN));
        assert_eq!(f.parse(&text).unwrap_err(), KeyError::Malformed);
    }

    #[test]
    fn prefix_rules() {
        assert!(KeyFormat::new("ab").is_ok());
        assert!(KeyFormat::new("abcdefghij012345").is_ok());
        for bad in ["a", "", "Ab", "a_b", "abcdefghij0123456", "ab-"] {
            assert_eq!(
                KeyFormat::new(bad).unwrap_err(),
                KeyError::InvalidPrefix,
                "{bad}"
            );
        }
    }

    #[test]
    fn one_block_sha256_matches_the_streaming_one() {
        let mut message = Vec::new();
        for len in 0..=70u8 {
            let expected: [u8; 32] = Sha256::digest(&message).into();
            assert_eq!(
                SecretDigest::of_secret(&message).0,
                expected,
                "length {len}"
            );
            assert_eq!(one_block(&message).is_some(), message.len() <= 55);
            message.push(len.wrapping_mul(37));
        }
    }

    #[test]
    fn every_secret_position_is_checked() {
        let valid = [b'a'; SECRET_LEN];
        assert!(all_base62(&valid));
        for pos in 0..SECRET_LEN {
            for bad in [b'-', b'_', b'/', b'+', b'=', 0, 0x80, 0xff] {
                let mut secret = valid;
                secret[pos] = bad;
                assert!(!all_base62(&secret), "position {pos}, byte {bad}");
            }
        }
        assert!(!all_base62(&valid[1..]));
    }

    #[test]
    fn base62_class_matches_the_alphabet() {
        for b in 0..=255u8 {
            assert_eq!(is_base62(b), ALPHABET.contains(&b), "{b}");
        }
    }

    #[test]
    fn base62_round_trips() {
        for v in [0u64, 1, 61, 62, 3844, MAX_KEY_ID, u64::MAX] {
            let mut buf = [0u8; ID_LEN];
            encode_u64(v, &mut buf);
            assert_eq!(decode_id(&buf), Some(v));
        }
        for v in [0u64, 1, 61, 62, 3844, u64::from(u32::MAX), 62u64.pow(6) - 1] {
            let mut buf = [0u8; CHECKSUM_LEN];
            encode_u64(v, &mut buf);
            assert_eq!(decode_checksum(&buf), Some(v));
        }
    }

    /// Digit by digit, in 128 bits: what the tree-shaped decoders must agree with.
    fn decode_slowly(text: &[u8]) -> Option<u64> {
        let mut value = 0u128;
        for &b in text {
            let digit = ALPHABET.iter().position(|&a| a == b)?;
            value = value * 62 + digit as u128;
        }
        u64::try_from(value).ok()
    }

    proptest::proptest! {
        #[test]
        fn tree_decoding_matches_digit_by_digit(
            id in proptest::collection::vec(proptest::prop_oneof![
                8 => proptest::sample::select(ALPHABET.to_vec()),
                1 => proptest::prelude::any::<u8>(),
            ], ID_LEN),
            top in 0usize..62,
        ) {
            let mut id: [u8; ID_LEN] = id.try_into().expect("length");
            // Values near and above u64::MAX (62^11 > 2^64) come from a high first digit.
            if top > 40 {
                id[0] = ALPHABET[top];
            }
            proptest::prop_assert_eq!(decode_id(&id), decode_slowly(&id));
            let checksum: [u8; CHECKSUM_LEN] = id[..CHECKSUM_LEN].try_into().expect("length");
            proptest::prop_assert_eq!(decode_checksum(&checksum), decode_slowly(&checksum));
        }
    }

    #[test]
    fn debug_output_redacts_the_secret() {
        let f = format();
        let key = f.generate().expect("rng");
        let secret_part = &key.expose()[4 + ID_LEN..4 + ID_LEN + SECRET_LEN];
        let parsed = f.parse(key.expose()).expect("parses");
        for text in [
            format!("{key:?}"),
            format!("{parsed:?}"),
            format!("{:?}", key.digest()),
        ] {
            assert!(!text.contains(secret_part), "{text}");
            assert!(!text.contains(key.expose()), "{text}");
        }
    }
}
