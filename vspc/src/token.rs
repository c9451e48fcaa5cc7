//! `POST /token`: OAuth 2 password and refresh-token grants (RFC 6749 §4.3, §6).
//!
//! Access tokens are JWTs that the router's own layer accepts; refresh tokens are 32 random bytes
//! (base64url), stored only as their `SHA-256`, and good for one use: each refresh returns a new one.

use std::collections::HashSet;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use utoipa::ToSchema;

use super::error::{json_response, no_store, OAuthBody, OAuthError};
use super::extract::media_type;
use super::password;
use super::state::{AppState, Shared};
use tower_api_key::key::SecretDigest;
use tower_api_key::store::{Company, RefreshToken, RefreshUse, User};
use tower_api_key::token::JwtClaims;
use tower_api_key::{Scope, Scopes};

/// Largest form body the token endpoint reads.
const MAX_FORM: usize = 16 * 1024;

/// The scopes of every access token: what a VSPC password login grants.
const TOKEN_SCOPES: [Scope; 3] = [Scope::UI, Scope::REST, Scope::INTEGRATION];

/// The form `POST /token` reads: one grant's parameters, each at most once.
#[derive(ToSchema)]
#[schema(as = TokenRequest)]
#[allow(dead_code)] // Documents the form, which `Form` reads pair by pair.
pub(crate) struct TokenForm {
    grant_type: GrantType,
    /// With `grant_type=password`.
    username: Option<String>,
    /// With `grant_type=password`.
    password: Option<String>,
    /// With `grant_type=refresh_token`: the refresh token of the last answer, good once.
    refresh_token: Option<String>,
    /// `true` for a token that may only read; a refresh never lifts it.
    #[schema(rename = "readOnly")]
    read_only: Option<bool>,
}

/// The grants `POST /token` takes.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum GrantType {
    Password,
    RefreshToken,
}

/// `POST /api/v3/token`.
#[utoipa::path(
    post,
    path = "/token",
    tag = "Authentication",
    operation_id = "token",
    summary = "OAuth 2 access and refresh tokens",
    description = "The password grant (RFC 6749 §4.3) or the refresh-token grant (§6). Needs no credential.",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "New tokens; never cached.", body = TokenBody<'static>),
        (status = 400, description = "A missing, repeated or malformed parameter, or wrong credentials.", body = OAuthBody<'static>),
        (status = 429, description = "Too many failed logins for the name or from the client.", body = OAuthBody<'static>,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 503, description = "Too many logins at once, or the store failed.", body = OAuthBody<'static>),
    ),
)]
pub(crate) async fn token(State(state): State<AppState>, request: Request) -> Response {
    match grant(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn grant(state: &Shared, request: Request) -> Result<Response, OAuthError> {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    // RFC 6749 §4.3.2: the parameters come form-encoded in the body; anything else is malformed.
    if media_type(request.headers()).as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "The request body must be application/x-www-form-urlencoded.",
        ));
    }
    let body = axum::body::to_bytes(request.into_body(), MAX_FORM)
        .await
        .map_err(|_| OAuthError::invalid_request("The request body is too large."))?;
    let form = Form::parse(&body)?;
    let read_only = match form.get("readOnly") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(_) => {
            return Err(OAuthError::invalid_request(
                "readOnly must be true or false.",
            ))
        }
    };
    match form.required("grant_type")? {
        "password" => {
            let user_name = form.required("username")?;
            let secret = Zeroizing::new(form.required("password")?.to_owned());
            password_grant(state, user_name, secret, client, read_only).await
        }
        "refresh_token" => {
            let presented = form.required("refresh_token")?;
            let used = || {
                OAuthError::invalid_grant("The refresh token is invalid, expired or already used.")
            };
            // Marking it used is atomic: a refresh token works once, even if what follows fails.
            let stored = match state
                .accounts
                .take_refresh_token(&digest(presented))
                .await?
                .ok_or_else(used)?
            {
                RefreshUse::Fresh(token) => token,
                // RFC 9700 §4.14.2: a used token presented again was stolen from one of its two
                // holders, and nobody can tell which; the whole family ends.
                RefreshUse::Replayed(token) => {
                    state.accounts.revoke_refresh_family(&token.family).await?;
                    tracing::warn!(user_uid = %token.user_uid, "refresh token replayed: family revoked");
                    return Err(used());
                }
            };
            if stored.expires <= OffsetDateTime::now_utc() {
                return Err(used());
            }
            let user = state
                .accounts
                .user(&stored.user_uid)
                .await?
                .ok_or_else(used)?;
            // A refresh never lifts the read-only flag the original grant set.
            let session = Session {
                family: stored.family,
                user_generation: stored.user_generation,
                company_generation: stored.company_generation,
            };
            let company = state.accounts.company(&user.company_id).await?;
            account_enabled(&user, company.as_ref())?;
            issue(
                state,
                &user,
                company,
                stored.read_only || read_only,
                Some(session),
            )
            .await
        }
        _ => Err(OAuthError::unsupported_grant_type()),
    }
}

/// RFC 6749 §4.3: a user name and password. Refused before the store is asked and before any
/// hashing while the name or the client is over its failure limit (429) or the hashing queue is
/// full (503). A wrong password, an unknown user and a disabled user or company all cost the same
/// work (one hash and, for a known user, one company lookup), get the same answer and count as
/// failures.
async fn password_grant(
    state: &Shared,
    user_name: &str,
    secret: Zeroizing<String>,
    client: Option<SocketAddr>,
    read_only: bool,
) -> Result<Response, OAuthError> {
    let attempt = match state.throttle.attempt(user_name, client.map(|c| c.ip())) {
        Ok(attempt) => attempt,
        Err(wait) => {
            refused(user_name, client, "throttled");
            // Whole seconds, rounded up to the next one a client waiting that long finds open.
            let seconds = wait.as_millis().div_ceil(1000);
            return Err(OAuthError::throttled(
                u64::try_from(seconds).unwrap_or(u64::MAX),
            ));
        }
    };
    let Ok(admission) = state.throttle.admit() else {
        refused(user_name, client, "busy");
        return Err(OAuthError::busy());
    };
    let user = state.accounts.user_by_name(user_name).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let Ok(matches) = password::verify(secret, stored, admission).await else {
        refused(user_name, client, "busy");
        return Err(OAuthError::busy());
    };
    // Asked whatever the password, so that the right one for a disabled account costs the same.
    let (company, enabled) = match &user {
        Some(user) => {
            let company = state.accounts.company(&user.company_id).await?;
            let enabled = account_enabled(user, company.as_ref()).is_ok();
            (company, enabled)
        }
        None => (None, false),
    };
    let Some(user) = user.filter(|_| matches && enabled) else {
        attempt.failed();
        refused(user_name, client, "wrong_credentials");
        return Err(OAuthError::invalid_grant(
            "The user name or password is incorrect.",
        ));
    };
    attempt.succeeded();
    issue(state, &user, company, read_only, None).await
}

/// Logs a refused password grant: the name as sent (escaped, and cut to 64 characters, so that it
/// can neither forge log lines nor fill them), the client address, and why; never the password.
fn refused(user_name: &str, client: Option<SocketAddr>, reason: &'static str) {
    {
        let shown: String = user_name.chars().take(64).collect();
        let client = client.map_or_else(|| "unknown".to_owned(), |c| c.to_string());
        tracing::warn!(user_name = ?shown, client, reason, "login refused");
    }
}

/// The login a refresh continues: its family and the generations it began under.
struct Session {
    family: String,
    user_generation: u64,
    company_generation: u64,
}

/// `Ok` when `user` and their `company` are enabled; the refresh grant's refusal otherwise.
fn account_enabled(user: &User, company: Option<&Company>) -> Result<(), OAuthError> {
    if !user.status.is_enabled() {
        return Err(OAuthError::invalid_grant("The user is disabled."));
    }
    if company.is_some_and(|c| !c.status.is_enabled()) {
        return Err(OAuthError::invalid_grant("The user's company is disabled."));
    }
    Ok(())
}

/// Mints an access token and a refresh token for `user` of `company` (both already checked to be
/// enabled), if, for a refresh, neither revoked its tokens since the login began.
async fn issue(
    state: &Shared,
    user: &User,
    company: Option<Company>,
    read_only: bool,
    session: Option<Session>,
) -> Result<Response, OAuthError> {
    let company_generation = company.as_ref().map_or(0, |c| c.token_generation);
    let session = match session {
        None => Session {
            family: uuid::Uuid::new_v4().to_string(),
            user_generation: user.token_generation,
            company_generation,
        },
        Some(s)
            if s.user_generation == user.token_generation
                && s.company_generation == company_generation =>
        {
            s
        }
        Some(_) => {
            return Err(OAuthError::invalid_grant(
                "The refresh token is invalid, expired or already used.",
            ))
        }
    };
    // Read-only roles never get a token that writes.
    let read_only = read_only || user.role.is_read_only();
    let now = OffsetDateTime::now_utc();
    let now_secs = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let ttl = state.access_ttl.as_secs();
    let claims = JwtClaims {
        sub: user.uid.clone(),
        name: user.user_name.clone(),
        company_id: user.company_id.clone(),
        company_name: company.map(|c| c.name).unwrap_or_default(),
        scope: Scopes::from(TOKEN_SCOPES).to_string(),
        read_only,
        exp: now_secs.saturating_add(ttl),
        nbf: None,
        iat: Some(now_secs),
        iss: None,
        aud: None,
        jti: Some(uuid::Uuid::new_v4().to_string()),
        generation: Some(session.user_generation),
        company_generation: Some(session.company_generation),
    };
    let access = Zeroizing::new(
        state
            .issuer
            .sign(claims)
            .map_err(|_| OAuthError::unavailable())?,
    );
    let refresh = new_refresh_token()?;
    state
        .accounts
        .put_refresh_token(RefreshToken {
            digest: digest(&refresh),
            user_uid: user.uid.clone(),
            read_only,
            expires: now + state.refresh_ttl,
            family: session.family,
            user_generation: session.user_generation,
            company_generation: session.company_generation,
        })
        .await?;
    tracing::info!(user_uid = %user.uid, read_only, "tokens issued");
    let body = TokenBody {
        access_token: &access,
        token_type: "bearer",
        refresh_token: &refresh,
        expires_in: ttl,
    };
    Ok(no_store(json_response(http::StatusCode::OK, &body)))
}

/// RFC 6749 §5.1's successful answer.
#[derive(Serialize, ToSchema)]
#[schema(as = Token)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody<'a> {
    /// A JWT to send as `Authorization: Bearer …`.
    access_token: &'a str,
    /// Always `bearer`.
    token_type: &'static str,
    refresh_token: &'a str,
    /// Seconds the access token lives.
    expires_in: u64,
}

fn new_refresh_token() -> Result<Zeroizing<String>, OAuthError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(bytes.as_mut()).map_err(|_| OAuthError::unavailable())?;
    Ok(Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref())))
}

/// What the store keeps of a refresh token.
fn digest(token: &str) -> SecretDigest {
    SecretDigest::from_bytes(Sha256::digest(token.as_bytes()).into())
}

/// A parsed form body whose values are wiped when dropped.
struct Form(Vec<(String, Zeroizing<String>)>);

impl Form {
    fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| OAuthError::invalid_request("The form body is malformed."))?;
        let pairs: Vec<(String, Zeroizing<String>)> = pairs
            .into_iter()
            .map(|(k, v)| (k, Zeroizing::new(v)))
            .collect();
        // RFC 6749 §3.2: parameters must not be included more than once.
        let mut seen = HashSet::new();
        if let Some((name, _)) = pairs.iter().find(|(k, _)| !seen.insert(k.as_str())) {
            let name = name.chars().take(64).collect::<String>();
            return Err(OAuthError::invalid_request(format!(
                "The parameter {name} is repeated."
            )));
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &'static str) -> Result<&str, OAuthError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| OAuthError::invalid_request(format!("The parameter {name} is missing.")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_refuse_repeated_parameters() {
        assert!(Form::parse(b"grant_type=password&grant_type=password").is_err());
        let form = Form::parse(b"grant_type=password&username=a%20b").expect("valid");
        assert_eq!(form.get("username"), Some("a b"));
        assert!(form.required("password").is_err());
    }

    #[test]
    fn refresh_tokens_are_random_base64url() {
        let a = new_refresh_token().expect("rng");
        let b = new_refresh_token().expect("rng");
        assert_eq!(a.len(), 43);
        assert_ne!(*a, *b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
