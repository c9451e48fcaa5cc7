//! The built-in JWT validator (and the matching issuer for services that mint their own tokens).

use std::fmt;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{TokenError, TokenValidator};
use crate::identity::{Identity, Status, UserLogin};
use crate::scope::{Scope, Scopes};

/// `identityProviderName` of identities that come from a JWT.
pub const JWT_PROVIDER: &str = "JWT";

/// The claims the validator reads and the issuer writes.
///
/// `sub` is the user UID; `scope` is space-separated (RFC 8693 §4.2); unknown scope names grant
/// nothing. `exp` is required; `nbf`, when present, is enforced.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtClaims {
    /// User UID.
    pub sub: String,
    /// User name.
    #[serde(default)]
    pub name: String,
    /// Company UID.
    #[serde(default)]
    pub company_id: String,
    /// Company name.
    #[serde(default)]
    pub company_name: String,
    /// Space-separated scope names.
    #[serde(default)]
    pub scope: String,
    /// Whether the token may only read.
    #[serde(default)]
    pub read_only: bool,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The user's token generation when the login began (see `User::token_generation` in the
    /// management API); tokens of an older generation are revoked.
    #[serde(default, rename = "gen", skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The company's token generation when the login began.
    #[serde(default, rename = "cgen", skip_serializing_if = "Option::is_none")]
    pub company_generation: Option<u64>,
}

impl JwtClaims {
    /// The scopes named in `scope` that this process knows.
    pub fn scopes(&self) -> Scopes {
        self.scope
            .split_ascii_whitespace()
            .filter_map(Scope::lookup)
            .collect()
    }

    /// The identity these claims describe.
    pub fn to_login(&self) -> UserLogin {
        let created = self
            .iat
            .and_then(|iat| OffsetDateTime::from_unix_timestamp(i64::try_from(iat).ok()?).ok())
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        UserLogin {
            id: 0,
            user_uid: self.sub.clone(),
            user_name: self.name.clone(),
            company_id: self.company_id.clone(),
            company_name: self.company_name.clone(),
            identity_provider_name: JWT_PROVIDER.to_owned(),
            description: String::new(),
            is_read_access_only: self.read_only,
            scopes: self.scopes(),
            status: Status::Enabled,
            parameters: String::new(),
            identifier_in_provider: 0,
            creation_date: created,
            expiration_date: None,
            deprecation_date: None,
            last_used_date: None,
        }
    }
}

impl fmt::Debug for JwtClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtClaims")
            .field("sub", &self.sub)
            .field("name", &self.name)
            .field("company_id", &self.company_id)
            .field("scope", &self.scope)
            .field("read_only", &self.read_only)
            .field("exp", &self.exp)
            .field("nbf", &self.nbf)
            .field("iss", &self.iss)
            .field("aud", &self.aud)
            .finish_non_exhaustive()
    }
}

/// Validates JWT bearer tokens: signature (HS256, RS256, ES256 or EdDSA), `exp`, `nbf`, and issuer and
/// audience when configured. Exactly one algorithm is accepted per validator, so a token cannot pick
/// a weaker one.
#[derive(Clone)]
pub struct JwtValidator {
    key: DecodingKey,
    validation: Validation,
}

impl JwtValidator {
    fn with_key(algorithm: Algorithm, key: DecodingKey) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Checked only when an audience is configured (see `with_audience`).
        validation.validate_aud = false;
        validation.leeway = 30;
        Self { key, validation }
    }

    /// HS256 with a shared secret (at least 32 bytes recommended).
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with_key(Algorithm::HS256, DecodingKey::from_secret(secret))
    }

    /// RS256 with an RSA public key in PEM form.
    pub fn rs256_pem(public_key: &[u8]) -> Result<Self, TokenError> {
        let key = DecodingKey::from_rsa_pem(public_key).map_err(TokenError::invalid)?;
        Ok(Self::with_key(Algorithm::RS256, key))
    }

    /// ES256 with a P-256 public key in PEM form.
    pub fn es256_pem(public_key: &[u8]) -> Result<Self, TokenError> {
        let key = DecodingKey::from_ec_pem(public_key).map_err(TokenError::invalid)?;
        Ok(Self::with_key(Algorithm::ES256, key))
    }

    /// EdDSA with an Ed25519 public key in PEM form.
    pub fn eddsa_pem(public_key: &[u8]) -> Result<Self, TokenError> {
        let key = DecodingKey::from_ed_pem(public_key).map_err(TokenError::invalid)?;
        Ok(Self::with_key(Algorithm::EdDSA, key))
    }

    /// Only tokens whose `iss` is `issuer` pass (and `iss` becomes required).
    #[must_use]
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.validation.set_issuer(&[issuer]);
        self.validation
            .required_spec_claims
            .insert("iss".to_owned());
        self
    }

    /// Only tokens whose `aud` is `audience` pass (and `aud` becomes required).
    #[must_use]
    pub fn with_audience(mut self, audience: &str) -> Self {
        self.validation.set_audience(&[audience]);
        self.validation.validate_aud = true;
        self.validation
            .required_spec_claims
            .insert("aud".to_owned());
        self
    }

    /// Clock skew tolerated on `exp` and `nbf`, in seconds. Default: 30.
    #[must_use]
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.validation.leeway = seconds;
        self
    }

    /// Decodes and checks a token, returning its claims.
    pub fn claims(&self, token: &str) -> Result<JwtClaims, TokenError> {
        jsonwebtoken::decode::<JwtClaims>(token, &self.key, &self.validation)
            .map(|data| data.claims)
            .map_err(TokenError::invalid)
    }
}

#[async_trait]
impl TokenValidator for JwtValidator {
    async fn validate(&self, token: &str) -> Result<Identity, TokenError> {
        let claims = self.claims(token)?;
        Ok(Identity::from_token(claims.to_login()))
    }
}

impl fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtValidator")
            .field("algorithms", &self.validation.algorithms)
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("leeway", &self.validation.leeway)
            .finish_non_exhaustive()
    }
}

/// Signs JWTs that a [`JwtValidator`] with the same key accepts: for services that run their own
/// token endpoint.
#[derive(Clone)]
pub struct JwtIssuer {
    key: EncodingKey,
    algorithm: Algorithm,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtIssuer {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            key: EncodingKey::from_secret(secret),
            algorithm: Algorithm::HS256,
            issuer: None,
            audience: None,
        }
    }

    /// RS256 with an RSA private key in PEM form.
    pub fn rs256_pem(private_key: &[u8]) -> Result<Self, TokenError> {
        Self::pem(Algorithm::RS256, EncodingKey::from_rsa_pem(private_key))
    }

    /// ES256 with a P-256 private key in PKCS#8 PEM form.
    pub fn es256_pem(private_key: &[u8]) -> Result<Self, TokenError> {
        Self::pem(Algorithm::ES256, EncodingKey::from_ec_pem(private_key))
    }

    /// EdDSA with an Ed25519 private key in PKCS#8 PEM form.
    pub fn eddsa_pem(private_key: &[u8]) -> Result<Self, TokenError> {
        Self::pem(Algorithm::EdDSA, EncodingKey::from_ed_pem(private_key))
    }

    fn pem(
        algorithm: Algorithm,
        key: Result<EncodingKey, jsonwebtoken::errors::Error>,
    ) -> Result<Self, TokenError> {
        Ok(Self {
            key: key.map_err(TokenError::invalid)?,
            algorithm,
            issuer: None,
            audience: None,
        })
    }

    /// Writes `iss` into every token.
    #[must_use]
    pub fn with_issuer(mut self, issuer: &str) -> Self {
        self.issuer = Some(issuer.to_owned());
        self
    }

    /// Writes `aud` into every token.
    #[must_use]
    pub fn with_audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.to_owned());
        self
    }

    /// Signs `claims`, filling `iss` and `aud` where configured and not already set.
    pub fn sign(&self, mut claims: JwtClaims) -> Result<String, TokenError> {
        if claims.iss.is_none() {
            claims.iss.clone_from(&self.issuer);
        }
        if claims.aud.is_none() {
            claims.aud.clone_from(&self.audience);
        }
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.key)
            .map_err(TokenError::unavailable)
    }
}

impl fmt::Debug for JwtIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtIssuer")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKind;

    const SECRET: &[u8] = b"an HS256 secret of at least 32 bytes!";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims(exp: u64) -> JwtClaims {
        JwtClaims {
            sub: "955b0b80-03b2-49fd-bf38-14785ecff0a8".into(),
            name: "alpha_admin".into(),
            company_id: "c1".into(),
            company_name: "Alpha".into(),
            scope: "rest integration nonsense".into(),
            read_only: true,
            exp,
            nbf: None,
            iat: Some(now()),
            iss: None,
            aud: None,
            jti: None,
            generation: None,
            company_generation: None,
        }
    }

    #[tokio::test]
    async fn hs256_token_becomes_a_token_identity() {
        let token = JwtIssuer::hs256(SECRET)
            .sign(claims(now() + 600))
            .expect("signed");
        let identity = JwtValidator::hs256(SECRET)
            .validate(&token)
            .await
            .expect("valid");
        assert_eq!(identity.kind(), IdentityKind::Token);
        assert!(identity.is_read_only());
        assert_eq!(
            identity.scopes(),
            Scopes::from([Scope::REST, Scope::INTEGRATION])
        );
        let login = identity
            .login()
            .expect("token identities carry their login");
        assert_eq!(login.user_name, "alpha_admin");
        assert_eq!(login.identity_provider_name, JWT_PROVIDER);
    }

    #[tokio::test]
    async fn expired_not_yet_valid_and_wrongly_signed_tokens_are_invalid() {
        let v = JwtValidator::hs256(SECRET).with_leeway(0);
        let expired = JwtIssuer::hs256(SECRET)
            .sign(claims(now() - 10))
            .expect("signed");
        let mut early = claims(now() + 600);
        early.nbf = Some(now() + 300);
        let early = JwtIssuer::hs256(SECRET).sign(early).expect("signed");
        let forged = JwtIssuer::hs256(b"another secret of at least 32 bytes..")
            .sign(claims(now() + 600))
            .expect("signed");
        for token in [expired, early, forged, "not.a.jwt".to_owned()] {
            let err = v.validate(&token).await.expect_err("refused");
            assert!(!err.is_unavailable());
        }
    }

    #[tokio::test]
    async fn issuer_and_audience_are_enforced_when_configured() {
        let v = JwtValidator::hs256(SECRET)
            .with_issuer("vspc")
            .with_audience("api");
        let good = JwtIssuer::hs256(SECRET)
            .with_issuer("vspc")
            .with_audience("api")
            .sign(claims(now() + 600))
            .expect("signed");
        assert!(v.validate(&good).await.is_ok());
        let wrong_iss = JwtIssuer::hs256(SECRET)
            .with_issuer("other")
            .with_audience("api")
            .sign(claims(now() + 600))
            .expect("signed");
        let no_aud = JwtIssuer::hs256(SECRET)
            .with_issuer("vspc")
            .sign(claims(now() + 600))
            .expect("signed");
        assert!(v.validate(&wrong_iss).await.is_err());
        assert!(v.validate(&no_aud).await.is_err());
    }

    #[tokio::test]
    async fn algorithm_confusion_is_refused() {
        // A token signed with HS256 must not pass a validator that expects another algorithm.
        let token = JwtIssuer::hs256(SECRET)
            .sign(claims(now() + 600))
            .expect("signed");
        let ed = JwtValidator::eddsa_pem(ED25519_PUBLIC).expect("valid key");
        assert!(ed.validate(&token).await.is_err());
    }

    #[tokio::test]
    async fn asymmetric_algorithms_round_trip() {
        let pairs: [(JwtIssuer, JwtValidator); 3] = [
            (
                JwtIssuer::eddsa_pem(ED25519_PRIVATE).expect("key"),
                JwtValidator::eddsa_pem(ED25519_PUBLIC).expect("key"),
            ),
            (
                JwtIssuer::es256_pem(P256_PRIVATE).expect("key"),
                JwtValidator::es256_pem(P256_PUBLIC).expect("key"),
            ),
            (
                JwtIssuer::rs256_pem(RSA_PRIVATE).expect("key"),
                JwtValidator::rs256_pem(RSA_PUBLIC).expect("key"),
            ),
        ];
        for (issuer, validator) in pairs {
            let token = issuer.sign(claims(now() + 600)).expect("signed");
            assert!(validator.validate(&token).await.is_ok(), "{validator:?}");
        }
    }

    const ED25519_PRIVATE: &[u8] = include_bytes!("../../tests/keys/ed25519_private.pem");
    const ED25519_PUBLIC: &[u8] = include_bytes!("../../tests/keys/ed25519_public.pem");
    const P256_PRIVATE: &[u8] = include_bytes!("../../tests/keys/p256_private.pem");
    const P256_PUBLIC: &[u8] = include_bytes!("../../tests/keys/p256_public.pem");
    const RSA_PRIVATE: &[u8] = include_bytes!("../../tests/keys/rsa_private.pem");
    const RSA_PUBLIC: &[u8] = include_bytes!("../../tests/keys/rsa_public.pem");
}
