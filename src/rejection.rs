//! Refusals: RFC 6750 answers with VSPC's error body, and the hook that may replace them.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::identity::Status;
use crate::rate::Standing;
use crate::scope::Scope;

/// The class of a refusal; it fixes the status code and the `WWW-Authenticate` challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No credentials, or another scheme than Bearer: 401, challenge without `error`.
    MissingCredentials,
    /// Malformed request (duplicate header, empty or non-token68 value, oversized): 400 `invalid_request`.
    InvalidRequest,
    /// Bad, unknown, disabled or expired credentials: 401 `invalid_token`.
    InvalidToken,
    /// The identity lacks the scope the route needs, or is read-only and the method writes: 403
    /// `insufficient_scope`.
    InsufficientScope,
    /// The key store or token validator failed or timed out: 503, no challenge.
    Unavailable,
    /// The identity spent its [`RateLimit`](crate::RateLimit) quota: 429 with `Retry-After` and
    /// the `RateLimit` fields, no challenge.
    RateLimited,
}

/// Why a request was refused, for tracing and metrics. Never sent to the client: the response tells
/// only the [`RejectionKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// No `Authorization` header.
    NoCredentials,
    /// A scheme other than Bearer.
    OtherScheme,
    /// Two or more `Authorization` headers.
    DuplicateHeader,
    /// Credentials both in the header and in an `access_token` query parameter.
    TwoMethods,
    /// Bearer with an empty value.
    EmptyValue,
    /// Bearer with a value that is not token68 (or not visible ASCII).
    MalformedValue,
    /// The header is longer than the configured limit.
    Oversized,
    /// Key-shaped, but a character or the id is invalid.
    MalformedKey,
    /// Key-shaped with a wrong checksum.
    BadChecksum,
    /// No key with that id.
    UnknownKey,
    /// The secret does not match.
    WrongSecret,
    /// The key, its user or its company is not enabled.
    Disabled(Status),
    /// The key's expiry has passed (its grace period after a rotation included).
    Expired,
    /// Not key-shaped and no token validator is configured.
    NoValidator,
    /// The token validator refused the token.
    InvalidToken,
    /// The identity lacks the required scope.
    MissingScope(Scope),
    /// A read-only identity used a method that is not allowed to read-only identities.
    ReadOnly,
    /// The key store failed.
    StoreError,
    /// The key store did not answer in time.
    StoreTimeout,
    /// The token validator failed.
    ValidatorError,
    /// The identity is over its rate limit.
    RateLimited,
}

impl Reason {
    /// The class of refusal this reason gets.
    pub fn kind(self) -> RejectionKind {
        match self {
            Reason::NoCredentials | Reason::OtherScheme => RejectionKind::MissingCredentials,
            Reason::DuplicateHeader
            | Reason::TwoMethods
            | Reason::EmptyValue
            | Reason::MalformedValue
            | Reason::Oversized => RejectionKind::InvalidRequest,
            Reason::MalformedKey
            | Reason::BadChecksum
            | Reason::UnknownKey
            | Reason::WrongSecret
            | Reason::Disabled(_)
            | Reason::Expired
            | Reason::NoValidator
            | Reason::InvalidToken => RejectionKind::InvalidToken,
            Reason::MissingScope(_) | Reason::ReadOnly => RejectionKind::InsufficientScope,
            Reason::StoreError | Reason::StoreTimeout | Reason::ValidatorError => {
                RejectionKind::Unavailable
            }
            Reason::RateLimited => RejectionKind::RateLimited,
        }
    }

    /// A short, stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoCredentials => "no_credentials",
            Reason::OtherScheme => "other_scheme",
            Reason::DuplicateHeader => "duplicate_header",
            Reason::TwoMethods => "two_methods",
            Reason::EmptyValue => "empty_value",
            Reason::MalformedValue => "malformed_value",
            Reason::Oversized => "oversized",
            Reason::MalformedKey => "malformed_key",
            Reason::BadChecksum => "bad_checksum",
            Reason::UnknownKey => "unknown_key",
            Reason::WrongSecret => "wrong_secret",
            Reason::Disabled(_) => "disabled",
            Reason::Expired => "expired",
            Reason::NoValidator => "no_validator",
            Reason::InvalidToken => "invalid_token",
            Reason::MissingScope(_) => "missing_scope",
            Reason::ReadOnly => "read_only",
            Reason::StoreError => "store_error",
            Reason::StoreTimeout => "store_timeout",
            Reason::ValidatorError => "validator_error",
            Reason::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `WWW-Authenticate` values of one realm, built once so a refusal allocates nothing for them.
pub(crate) struct Challenges {
    realm: Box<str>,
    missing: HeaderValue,
    invalid_request: HeaderValue,
    invalid_token: HeaderValue,
    insufficient_scope: HeaderValue,
    // One per scope, built the first time a route refuses for lack of it.
    scoped: Box<[OnceLock<HeaderValue>]>,
}

impl Challenges {
    pub(crate) fn new(realm: &str) -> Self {
        let value = |error: &str| shared(format!("Bearer realm=\"{realm}\"{error}"));
        Self {
            realm: realm.into(),
            missing: value(""),
            invalid_request: value(", error=\"invalid_request\""),
            invalid_token: value(", error=\"invalid_token\""),
            insufficient_scope: value(", error=\"insufficient_scope\""),
            scoped: (0..64).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The challenges of the default realm, `api` (for answers built outside a layer).
    pub(crate) fn default_realm() -> &'static Challenges {
        static DEFAULT: OnceLock<Challenges> = OnceLock::new();
        DEFAULT.get_or_init(|| Challenges::new("api"))
    }

    pub(crate) fn get(&self, reason: Reason) -> Option<HeaderValue> {
        Some(match (reason.kind(), reason) {
            (RejectionKind::MissingCredentials, _) => self.missing.clone(),
            (RejectionKind::InvalidRequest, _) => self.invalid_request.clone(),
            (RejectionKind::InvalidToken, _) => self.invalid_token.clone(),
            (RejectionKind::InsufficientScope, Reason::MissingScope(scope)) => self.scoped
                [usize::from(scope.index())]
            .get_or_init(|| {
                shared(format!(
                    "Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{}\"",
                    self.realm,
                    scope.name()
                ))
            })
            .clone(),
            (RejectionKind::InsufficientScope, _) => self.insufficient_scope.clone(),
            (RejectionKind::Unavailable | RejectionKind::RateLimited, _) => return None,
        })
    }
}

impl fmt::Debug for Challenges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Challenges")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

/// A header value whose clones copy two words: its text is kept once per process, for the life of
/// the process, so a refusal touches no reference count.
///
/// What is kept is bounded by the distinct texts: four per realm, plus one per scope a route refuses
/// for, whatever the number of layers built.
fn shared(text: String) -> HeaderValue {
    static TEXTS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut texts = TEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let text: &'static str = match texts.get(text.as_str()) {
        Some(kept) => kept,
        None => {
            let kept: &'static str = Box::leak(text.into_boxed_str());
            texts.insert(kept);
            kept
        }
    };
    HeaderValue::from_maybe_shared(Bytes::from_static(text.as_bytes()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// A refused request: what the [`OnRejection`] hook receives.
#[derive(Clone, Debug)]
pub struct Rejection {
    reason: Reason,
    challenge: Option<HeaderValue>,
    rate: Option<Standing>,
}

impl Rejection {
    /// The refusal of `reason` as a layer of the default realm (`api`) answers it, for answers built
    /// outside a layer: an application that refuses an identity the layer let through answers as
    /// the layer would, so a client cannot tell the two apart.
    pub fn new(reason: Reason) -> Self {
        Self::in_realm(reason, Challenges::default_realm())
    }

    pub(crate) fn in_realm(reason: Reason, challenges: &Challenges) -> Self {
        Self {
            reason,
            challenge: challenges.get(reason),
            rate: None,
        }
    }

    /// The refusal with where the identity stands against its rate limit, for its answer's fields.
    pub(crate) fn with_rate(mut self, standing: Standing) -> Self {
        self.rate = Some(standing);
        self
    }

    /// How long to wait before a request of this identity can pass, for a refusal over a rate
    /// limit; the standard answer sends it as `Retry-After`.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.rate
            .and_then(|r| r.retry_after())
            .map(std::time::Duration::from_secs)
    }

    /// The class of refusal.
    pub fn kind(&self) -> RejectionKind {
        self.reason.kind()
    }

    /// The internal reason. Keep it out of responses: it would tell a client which keys exist.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The status code of the standard answer.
    pub fn status(&self) -> StatusCode {
        match self.kind() {
            RejectionKind::MissingCredentials | RejectionKind::InvalidToken => {
                StatusCode::UNAUTHORIZED
            }
            RejectionKind::InvalidRequest => StatusCode::BAD_REQUEST,
            RejectionKind::InsufficientScope => StatusCode::FORBIDDEN,
            RejectionKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            RejectionKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The `WWW-Authenticate` challenge of the standard answer (RFC 6750 §3); `None` for 503.
    pub fn challenge(&self) -> Option<HeaderValue> {
        self.challenge.clone()
    }

    /// VSPC's error envelope for this refusal. Says the class, never the reason.
    pub fn body(&self) -> &'static str {
        match self.kind() {
            RejectionKind::MissingCredentials => {
                r#"{"errors":[{"message":"Authentication is required.","type":"security","code":401}]}"#
            }
            RejectionKind::InvalidRequest => {
                r#"{"errors":[{"message":"The Authorization header is malformed.","type":"security","code":400}]}"#
            }
            RejectionKind::InvalidToken => {
                r#"{"errors":[{"message":"The access token or API key is invalid.","type":"security","code":401}]}"#
            }
            RejectionKind::InsufficientScope => {
                r#"{"errors":[{"message":"The identity is not allowed to perform this request.","type":"security","code":403}]}"#
            }
            RejectionKind::Unavailable => {
                r#"{"errors":[{"message":"Authorization is temporarily unavailable.","type":"security","code":503}]}"#
            }
            RejectionKind::RateLimited => {
                r#"{"errors":[{"message":"Too many requests: the identity's rate limit is spent.","type":"security","code":429}]}"#
            }
        }
    }

    /// The standard answer with a body of type `B`.
    pub fn into_response<B: ErrorBody>(self) -> Response<B> {
        let json = Bytes::from_static(self.body().as_bytes());
        let carries = B::CARRIES_JSON;
        let mut response = Response::new(B::from_json(json));
        *response.status_mut() = self.status();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        if let Some(rate) = self.rate {
            rate.write(response.headers_mut());
        }
        if carries {
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        response
    }
}

/// Response bodies the layer can build its answers with.
///
/// Implemented for the common body types; a body type that cannot carry bytes answers with an empty
/// body. For any other type, give the layer an [`OnRejection`] hook.
pub trait ErrorBody: Sized {
    /// Whether the body carries the JSON (sets `Content-Type: application/json`).
    const CARRIES_JSON: bool;
    /// The body for this JSON text (or an empty body when it cannot carry it).
    fn from_json(json: Bytes) -> Self;
}

impl ErrorBody for http_body_util::Full<Bytes> {
    const CARRIES_JSON: bool = true;
    fn from_json(json: Bytes) -> Self {
        http_body_util::Full::new(json)
    }
}

impl ErrorBody for http_body_util::Empty<Bytes> {
    const CARRIES_JSON: bool = false;
    fn from_json(_: Bytes) -> Self {
        http_body_util::Empty::new()
    }
}

impl ErrorBody for String {
    const CARRIES_JSON: bool = true;
    fn from_json(json: Bytes) -> Self {
        String::from_utf8_lossy(&json).into_owned()
    }
}

impl ErrorBody for Bytes {
    const CARRIES_JSON: bool = true;
    fn from_json(json: Bytes) -> Self {
        json
    }
}

impl ErrorBody for () {
    const CARRIES_JSON: bool = false;
    fn from_json(_: Bytes) -> Self {}
}

impl<E> ErrorBody for http_body_util::combinators::UnsyncBoxBody<Bytes, E>
where
    E: 'static,
{
    const CARRIES_JSON: bool = true;
    fn from_json(json: Bytes) -> Self {
        use http_body_util::BodyExt;
        http_body_util::Full::new(json)
            .map_err(|never| match never {})
            .boxed_unsync()
    }
}

impl<E> ErrorBody for http_body_util::combinators::BoxBody<Bytes, E>
where
    E: 'static,
{
    const CARRIES_JSON: bool = true;
    fn from_json(json: Bytes) -> Self {
        use http_body_util::BodyExt;
        http_body_util::Full::new(json)
            .map_err(|never| match never {})
            .boxed()
    }
}

#[cfg(feature = "axum")]
impl ErrorBody for axum::body::Body {
    const CARRIES_JSON: bool = true;
    fn from_json(json: Bytes) -> Self {
        axum::body::Body::from(json)
    }
}

/// Turns a [`Rejection`] into the response the client gets.
///
/// Implemented for [`DefaultRejection`] (the standard answers) and for closures
/// `Fn(Rejection) -> Response<B>`.
pub trait OnRejection<B> {
    /// The response for `rejection`.
    fn on_rejection(&self, rejection: Rejection) -> Response<B>;
}

/// The standard answers: status, `WWW-Authenticate`, and VSPC's JSON body where the body type allows.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultRejection;

impl<B: ErrorBody> OnRejection<B> for DefaultRejection {
    fn on_rejection(&self, rejection: Rejection) -> Response<B> {
        rejection.into_response()
    }
}

impl<B, F> OnRejection<B> for F
where
    F: Fn(Rejection) -> Response<B>,
{
    fn on_rejection(&self, rejection: Rejection) -> Response<B> {
        self(rejection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn realm() -> &'static Challenges {
        Challenges::default_realm()
    }

    #[test]
    fn each_kind_has_its_status_and_challenge() {
        let cases = [
            (Reason::NoCredentials, 401, Some("Bearer realm=\"api\"")),
            (
                Reason::DuplicateHeader,
                400,
                Some("Bearer realm=\"api\", error=\"invalid_request\""),
            ),
            (
                Reason::WrongSecret,
                401,
                Some("Bearer realm=\"api\", error=\"invalid_token\""),
            ),
            (
                Reason::MissingScope(Scope::REST),
                403,
                Some("Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"rest\""),
            ),
            (
                Reason::ReadOnly,
                403,
                Some("Bearer realm=\"api\", error=\"insufficient_scope\""),
            ),
            (Reason::StoreTimeout, 503, None),
        ];
        for (reason, status, challenge) in cases {
            let r = Rejection::in_realm(reason, realm());
            assert_eq!(r.status().as_u16(), status, "{reason}");
            assert_eq!(
                r.challenge().as_ref().map(|v| v.to_str().expect("ascii")),
                challenge,
                "{reason}"
            );
            let body: serde_json::Value = serde_json::from_str(r.body()).expect("json");
            assert_eq!(body["errors"][0]["code"], status);
            assert_eq!(body["errors"][0]["type"], "security");
        }
    }

    #[test]
    fn unknown_wrong_and_disabled_share_one_answer() {
        let answers: Vec<_> = [
            Reason::UnknownKey,
            Reason::WrongSecret,
            Reason::Disabled(Status::Disabled),
            Reason::BadChecksum,
            Reason::InvalidToken,
        ]
        .into_iter()
        .map(|reason| {
            let r = Rejection::in_realm(reason, realm());
            (r.status(), r.challenge(), r.body())
        })
        .collect();
        assert!(answers.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn empty_bodies_get_no_content_type() {
        let r: Response<()> = Rejection::in_realm(Reason::NoCredentials, realm()).into_response();
        assert!(r.headers().get(CONTENT_TYPE).is_none());
        let r: Response<String> =
            Rejection::in_realm(Reason::NoCredentials, realm()).into_response();
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert!(r.body().contains("\"code\":401"));
    }
}
