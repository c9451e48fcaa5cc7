//! Extractors whose refusals are VSPC errors: axum's own would answer in plain text.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::HeaderMap;
use serde_json::Value;

use super::error::ApiError;

/// Largest JSON body the management API reads.
const MAX_JSON_BODY: usize = 64 * 1024;

/// The path parameters of the matched route, percent-decoded.
#[derive(Debug)]
pub(crate) struct PathParams(Vec<(String, String)>);

impl PathParams {
    /// The value of `name`; a 400 naming it when the route has no such parameter.
    pub(crate) fn get(&self, name: &'static str) -> Result<&str, ApiError> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| ApiError::bad_parameter(name, "The parameter is missing."))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PathParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_body("A path parameter is not valid UTF-8."))?;
        Ok(Self(
            raw.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        ))
    }
}

/// The query string as name/value pairs, in order, repeated names kept.
///
/// Names match ASCII case-insensitively, as VSPC's server does.
#[derive(Debug, Default)]
pub(crate) struct QueryPairs(Vec<(String, String)>);

impl QueryPairs {
    /// Parses a raw query string (`None`: no query).
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        match query {
            None => Ok(Self::default()),
            Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                .map(Self)
                .map_err(|_| ApiError::bad_body("The query string is malformed.")),
        }
    }

    /// Every value of `name`.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of a parameter that may appear once: `Ok(None)` when absent, a 400 naming it
    /// when repeated.
    pub(crate) fn single(&self, name: &'static str) -> Result<Option<&str>, ApiError> {
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::bad_parameter(
                name,
                "The parameter must not be repeated.",
            ));
        }
        Ok(first)
    }

    /// A boolean parameter (`true`/`false`, any case); `default` when absent.
    pub(crate) fn flag(&self, name: &'static str, default: bool) -> Result<bool, ApiError> {
        match self.single(name)? {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(_) => Err(ApiError::bad_parameter(
                name,
                "The parameter must be true or false.",
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::parse(parts.uri.query())
    }
}

/// The media type of a request, lower-cased, without parameters (`; charset=…`).
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim();
    Some(essence.to_ascii_lowercase())
}

/// Reads a body of at most `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large())
}

/// A JSON request body: `application/json` or any `application/*+json` (JSON Patch's
/// `application/json-patch+json` among them); other media types get a 415.
#[derive(Debug)]
pub(crate) struct JsonBody(pub(crate) Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let is_json = media_type(request.headers()).is_some_and(|t| {
            t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
        });
        if !is_json {
            return Err(ApiError::unsupported_media_type("application/json"));
        }
        let bytes = read_body(request.into_body(), MAX_JSON_BODY).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|_| ApiError::bad_body("The request body is not valid JSON."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_case_insensitive_names() {
        let q = QueryPairs::parse(Some("scopes=rest&Scopes=ui&limit=5&LIMIT=6&x=%5B1%5D"))
            .expect("parses");
        assert_eq!(q.all("scopes").collect::<Vec<_>>(), ["rest", "ui"]);
        assert!(q.single("limit").is_err());
        assert_eq!(q.single("x").expect("once"), Some("[1]"));
        assert_eq!(q.single("none").expect("absent"), None);
    }

    #[test]
    fn flags_take_true_or_false_only() {
        let q = QueryPairs::parse(Some("a=TRUE&b=false&c=1")).expect("parses");
        assert!(q.flag("a", false).expect("true"));
        assert!(!q.flag("b", true).expect("false"));
        assert!(q.flag("c", false).is_err());
        assert!(q.flag("d", true).expect("default"));
    }

    #[test]
    fn media_type_ignores_parameters_and_case() {
        let mut headers = HeaderMap::new();
        assert_eq!(media_type(&headers), None);
        headers.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(media_type(&headers).as_deref(), Some("application/json"));
    }
}
