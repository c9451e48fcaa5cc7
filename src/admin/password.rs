//! Passwords: Argon2id hashes in PHC string form, checked off the async runtime.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use zeroize::Zeroizing;

/// Shortest password accepted.
pub(crate) const MIN_LEN: usize = 8;
/// Longest password accepted, in bytes (hashing cost does not depend on it, but bodies should stay small).
pub(crate) const MAX_LEN: usize = 1024;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a password could not be hashed.
#[derive(Debug)]
pub(crate) enum HashError {
    /// Too short or too long.
    Policy,
    /// The random number generator or the hasher failed.
    Internal,
}

/// Checks the length rules.
pub(crate) fn check_policy(password: &str) -> Result<(), HashError> {
    if password.chars().count() < MIN_LEN || password.len() > MAX_LEN {
        return Err(HashError::Policy);
    }
    Ok(())
}

/// Hashes `password` with Argon2id and a fresh 16-byte salt.
pub(crate) async fn hash(password: Zeroizing<String>) -> Result<String, HashError> {
    check_policy(&password)?;
    // Argon2 takes tens of milliseconds of CPU on purpose: keep it off the async workers.
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|_| HashError::Internal)?
}

fn hash_blocking(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| HashError::Internal)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| HashError::Internal)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| HashError::Internal)
}

/// Whether `password` matches `stored` (a PHC string). With no stored hash (unknown user) a
/// dummy hash is checked instead, so unknown user and wrong password take the same time.
pub(crate) async fn verify(password: Zeroizing<String>, stored: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let dummy;
        let (phc, known) = match &stored {
            Some(s) => (s.as_str(), true),
            None => {
                dummy = dummy_hash();
                (dummy, false)
            }
        };
        let Ok(parsed) = PasswordHash::new(phc) else {
            #[cfg(feature = "tracing")]
            tracing::warn!("stored password hash is not a PHC string");
            return false;
        };
        // The comparison of the derived hash is constant-time inside the argon2 crate.
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        matches && known
    })
    .await
    .unwrap_or(false)
}

/// A hash of a random password made with the same parameters as real ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = generate().unwrap_or_else(|_| Zeroizing::new("unusable-dummy".to_owned()));
        // If hashing failed, the empty string does not parse and every unknown user fails fast;
        // a failing hasher fails real users too, so nothing is learned from the timing.
        hash_blocking(&random).unwrap_or_default()
    })
}

/// A random password of 24 characters of `[0-9A-Za-z]` (about 143 bits).
pub(crate) fn generate() -> Result<Zeroizing<String>, HashError> {
    let mut out = Zeroizing::new(String::with_capacity(24));
    let mut buf = Zeroizing::new([0u8; 64]);
    while out.len() < 24 {
        getrandom::fill(buf.as_mut()).map_err(|_| HashError::Internal)?;
        // 248 = 4 × 62: rejecting the top bytes keeps every character equally likely.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == 24 {
                break;
            }
            out.push(char::from(BASE62[usize::from(b % 62)]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_verifies_and_wrong_password_does_not() {
        let phc = hash(Zeroizing::new("correct horse".into()))
            .await
            .expect("hashed");
        assert!(phc.starts_with("$argon2id$"));
        assert!(verify(Zeroizing::new("correct horse".into()), Some(phc.clone())).await);
        assert!(!verify(Zeroizing::new("correct horsE".into()), Some(phc)).await);
        assert!(!verify(Zeroizing::new("correct horse".into()), None).await);
        assert!(!verify(Zeroizing::new("x".into()), Some("garbage".into())).await);
    }

    #[tokio::test]
    async fn short_passwords_are_refused() {
        assert!(matches!(
            hash(Zeroizing::new("short".into())).await,
            Err(HashError::Policy)
        ));
    }

    #[test]
    fn generated_passwords_are_alphanumeric_and_differ() {
        let a = generate().expect("rng");
        let b = generate().expect("rng");
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(*a, *b);
    }
}
