//! The OpenAPI 3.1 document of the management API, made from the handlers' `#[utoipa::path]`
//! annotations and the types they answer with; served at `GET /api/v3/openapi.json`.

use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use http::StatusCode;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

use super::error::{json_response, Errors};
use super::state::AppState;

/// The name of the security scheme the protected operations require.
pub(crate) const BEARER: &str = "bearer";

/// What every document starts from: the title, the shared schemas, the tags.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "tower-api-key-vspc",
        description = "A Veeam Service Provider Console v3-compatible management API: users, companies, OAuth 2 tokens and API keys.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    components(schemas(Errors<'static>)),
    tags(
        (name = "Authentication", description = "OAuth 2 tokens; no credential needed."),
        (name = "Users", description = "VSPC users and their tokens."),
        (name = "API keys", description = "API keys, as VSPC's user identities (`UserLogin`)."),
        (name = "Companies", description = "VSPC companies, each with its owner."),
        (name = "Service", description = "Liveness and this document; no credential needed."),
    ),
)]
pub(crate) struct ApiDoc;

/// Adds what the layer in front of every protected operation answers, and the bearer scheme.
pub(crate) fn finish(mut doc: OpenApi) -> OpenApi {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API key (`tak_…`) or an access token from `POST /api/v3/token`.",
                ))
                .build(),
        ),
    );
    for item in doc.paths.paths.values_mut() {
        for operation in operations(item) {
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add_layer_answers(operation);
            }
        }
    }
    doc
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The layer's refusals (`tower_api_key::Rejection`) and the store failures every handler may
/// meet, beside what the operation declares itself.
fn add_layer_answers(operation: &mut Operation) {
    const ANSWERS: [(&str, &str); 4] = [
        (
            "400",
            "Invalid input: the parameter or property named in the error; or a malformed `Authorization` header.",
        ),
        (
            "401",
            "No credential, or an invalid, expired or disabled one (`WWW-Authenticate: Bearer`).",
        ),
        (
            "403",
            "The credential lacks the `rest` scope, is read-only and the method writes, or the caller may not act on this.",
        ),
        ("503", "The store failed or timed out."),
    ];
    for (status, description) in ANSWERS {
        let responses = &mut operation.responses.responses;
        if responses.contains_key(status) {
            continue;
        }
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Errors")))
                    .build(),
            )
            .build();
        responses.insert(status.to_owned(), response.into());
    }
}

/// The document, serialized once when the router is built.
#[derive(Debug, Default)]
pub(crate) struct Document(std::sync::OnceLock<serde_json::Value>);

impl Document {
    pub(crate) fn set(&self, doc: &OpenApi) {
        if let Ok(value) = serde_json::to_value(doc) {
            let _ = self.0.set(value);
        }
    }
}

/// `GET /api/v3/openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "Service",
    operation_id = "openApi",
    summary = "This OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.", body = serde_json::Value)),
)]
pub(crate) async fn document(State(state): State<AppState>) -> Response {
    match state.openapi.0.get() {
        Some(doc) => json_response(StatusCode::OK, doc),
        None => super::error::ApiError::unavailable().into_response(),
    }
}
