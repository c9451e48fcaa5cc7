//! Refusals of the management API: VSPC's error envelope, and OAuth 2's error form for `/token`.

use std::borrow::Cow;

use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use tower_api_key::store::StoreError;
use tower_api_key::{Reason, Rejection};

/// Where the offending value sat: a query or path parameter, or a field of the JSON body.
#[derive(Debug)]
enum Field {
    Parameter(Cow<'static, str>),
    Property(Cow<'static, str>),
}

/// One VSPC error: `{"errors":[{"message","type","code","parameterName"|"propertyName"}]}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: Cow<'static, str>,
    field: Option<Field>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            field: None,
        }
    }

    fn parameter(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.field = Some(Field::Parameter(name.into()));
        self
    }

    fn property(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.field = Some(Field::Property(name.into()));
        self
    }

    /// 400: a query or path parameter is missing or invalid.
    pub(crate) fn bad_parameter(
        name: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation", message).parameter(name)
    }

    /// 400: a field of the JSON body is missing or invalid.
    pub(crate) fn bad_property(
        name: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation", message).property(name)
    }

    /// 400: the body as a whole is unusable.
    pub(crate) fn bad_body(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation", message)
    }

    /// 404: the resource named by a path parameter does not exist.
    pub(crate) fn not_found(
        parameter: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(StatusCode::NOT_FOUND, "notFound", message).parameter(parameter)
    }

    /// 404 for a path no route matches.
    pub(crate) fn no_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "notFound",
            "The requested resource does not exist.",
        )
    }

    /// 405 for a route that exists with other methods.
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "validation",
            "The method is not allowed on this resource.",
        )
    }

    /// 403: authenticated, but not allowed to do this.
    pub(crate) fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "security", message)
    }

    /// 403 tied to a parameter (for example scopes the caller does not hold).
    pub(crate) fn forbidden_parameter(
        name: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::forbidden(message).parameter(name)
    }

    /// 403 naming the body property whose value the caller may not set.
    pub(crate) fn forbidden_property(
        name: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::forbidden(message).property(name)
    }

    /// 409: a unique property is already taken.
    pub(crate) fn conflict(name: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message).property(name)
    }

    /// 413: the body is larger than the endpoint accepts.
    pub(crate) fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "validation",
            "The request body is too large.",
        )
    }

    /// 415: the body is not of the media type the endpoint reads.
    pub(crate) fn unsupported_media_type(expected: &'static str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "validation",
            format!("The request body must be sent as {expected}."),
        )
    }

    /// 503: the store failed; the reason goes to tracing, never to the client.
    pub(crate) fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "transport",
            "The service is temporarily unavailable.",
        )
    }

    /// The status code this error answers with.
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::warn!(%error, "management API store call failed");
        ApiError::unavailable()
    }
}

/// `{"errors":[…]}`: VSPC's answer to a refused request, the layer's refusals included.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Errors<'a> {
    errors: [ErrorItem<'a>; 1],
}

/// One error of VSPC's envelope.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Error)]
#[serde(deny_unknown_fields)]
struct ErrorItem<'a> {
    message: &'a str,
    /// `validation`, `security`, `notFound`, `conflict` or `transport`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The HTTP status.
    code: u16,
    /// The query or path parameter at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter_name: Option<&'a str>,
    /// The body property at fault (`credentials.password` for a nested one).
    #[serde(skip_serializing_if = "Option::is_none")]
    property_name: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (parameter_name, property_name) = match &self.field {
            Some(Field::Parameter(name)) => (Some(name.as_ref()), None),
            Some(Field::Property(name)) => (None, Some(name.as_ref())),
            None => (None, None),
        };
        let body = Errors {
            errors: [ErrorItem {
                message: &self.message,
                kind: self.kind,
                code: self.status.as_u16(),
                parameter_name,
                property_name,
            }],
        };
        json_response(self.status, &body)
    }
}

/// 401 with the layer's own answer (challenge and body), for identities that passed the layer but
/// whose user or company is no longer enabled: a client cannot tell the two apart.
pub(crate) fn invalid_identity(reason: Reason) -> Response {
    Rejection::new(reason).into_response()
}

/// A JSON response with `status`.
pub(crate) fn json_response<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let (status, text) = match serde_json::to_string(body) {
        Ok(text) => (status, text),
        // Our own types always serialize; should one not, say so in the envelope's words.
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"errors":[{"message":"The response could not be written.","type":"transport","code":500}]}"#
                .to_owned(),
        ),
    };
    let mut response = (status, text).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Marks a response that carries a secret (a new key, a token) as never to be stored by caches
/// (RFC 6749 §5.1).
pub(crate) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// An OAuth 2 error of the token endpoint (RFC 6749 §5.2).
#[derive(Debug)]
pub(crate) struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: Cow<'static, str>,
    /// Seconds for `Retry-After`.
    retry_after: Option<u64>,
}

impl OAuthError {
    /// 400 `invalid_request`: a parameter is missing, repeated or malformed.
    pub(crate) fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            description: description.into(),
            retry_after: None,
        }
    }

    /// 400 `invalid_grant`: wrong credentials, an unknown, used or expired refresh token, or a
    /// disabled user.
    pub(crate) fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_grant",
            description: description.into(),
            retry_after: None,
        }
    }

    /// 400 `unsupported_grant_type`.
    pub(crate) fn unsupported_grant_type() -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "unsupported_grant_type",
            description: "grant_type must be password or refresh_token.".into(),
            retry_after: None,
        }
    }

    /// 503 `temporarily_unavailable`: the store or the signer failed.
    pub(crate) fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "temporarily_unavailable",
            description: "The service is temporarily unavailable.".into(),
            retry_after: None,
        }
    }

    /// 503 `temporarily_unavailable` with `Retry-After: 1`: every password check is taken.
    pub(crate) fn busy() -> Self {
        Self {
            retry_after: Some(1),
            description: "Too many logins at once; try again shortly.".into(),
            ..Self::unavailable()
        }
    }

    /// 429 `invalid_request` with `Retry-After`: too many failed logins for this user name or
    /// from this client. RFC 6749 has no code of its own for it; the status and header say it.
    pub(crate) fn throttled(seconds: u64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            error: "invalid_request",
            description: "Too many failed logins; try again later.".into(),
            retry_after: Some(seconds.max(1)),
        }
    }
}

/// RFC 6749 §5.2's error body.
#[derive(Serialize, ToSchema)]
#[schema(as = OAuthError)]
#[serde(deny_unknown_fields)]
pub(crate) struct OAuthBody<'a> {
    /// `invalid_request`, `invalid_grant`, `unsupported_grant_type` or `temporarily_unavailable`.
    error: &'static str,
    error_description: &'a str,
}

impl From<StoreError> for OAuthError {
    fn from(error: StoreError) -> Self {
        tracing::warn!(%error, "token endpoint store call failed");
        OAuthError::unavailable()
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthBody {
            error: self.error,
            error_description: &self.description,
        };
        let mut response = no_store(json_response(self.status, &body));
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use serde_json::Value;

    async fn body(response: Response) -> Value {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn envelope_names_parameters_and_properties() {
        let e = ApiError::bad_parameter("limit", "limit must be 1 to 500.");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let response = e.into_response();
        // Only the layer's 401s carry a challenge.
        assert!(!response
            .headers()
            .contains_key(http::header::WWW_AUTHENTICATE));
        let v = body(response).await;
        assert_eq!(v["errors"][0]["parameterName"], "limit");
        assert_eq!(v["errors"][0]["type"], "validation");
        assert_eq!(v["errors"][0]["code"], 400);
        assert!(v["errors"][0].get("propertyName").is_none());

        let v = body(ApiError::bad_property("status", "bad").into_response()).await;
        assert_eq!(v["errors"][0]["propertyName"], "status");
        assert!(v["errors"][0].get("parameterName").is_none());
    }

    #[tokio::test]
    async fn oauth_errors_are_not_cached() {
        let response = OAuthError::invalid_grant("nope").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        let v = body(response).await;
        assert_eq!(v["error"], "invalid_grant");
        assert_eq!(v["error_description"], "nope");
    }
}
