//! RFC 6902 JSON Patch, as far as the management API needs it: `replace` on a few top-level
//! properties.
//!
//! The whole document is checked before anything is applied, so a patch with one bad operation
//! changes nothing (RFC 6902 §5).

use serde_json::Value;
use utoipa::ToSchema;

use super::error::ApiError;
use tower_api_key::Status;

/// One checked `replace`: which of the allowed properties, and the new value.
#[derive(Debug, PartialEq)]
pub(crate) struct Replace {
    /// The property, spelled as in the `allowed` list.
    pub(crate) property: &'static str,
    /// The new value.
    pub(crate) value: Value,
}

/// Checks a JSON Patch document whose operations may only `replace` one of `allowed` (top-level
/// properties; pointer segments match ASCII case-insensitively). Operations come back in order.
pub(crate) fn parse(document: Value, allowed: &[&'static str]) -> Result<Vec<Replace>, ApiError> {
    let Value::Array(operations) = document else {
        return Err(ApiError::bad_body(
            "The request body must be a JSON Patch document (an array of operations).",
        ));
    };
    operations
        .into_iter()
        .enumerate()
        .map(|(i, operation)| parse_one(i, operation, allowed))
        .collect()
}

fn parse_one(i: usize, operation: Value, allowed: &[&'static str]) -> Result<Replace, ApiError> {
    let Value::Object(mut operation) = operation else {
        return Err(ApiError::bad_body(format!(
            "Operation {i} is not a JSON object."
        )));
    };
    match operation.get("op") {
        Some(Value::String(op)) if op == "replace" => {}
        Some(Value::String(_)) => {
            return Err(ApiError::bad_property(
                "op",
                format!("Operation {i}: only `replace` is supported."),
            ))
        }
        _ => {
            return Err(ApiError::bad_property(
                "op",
                format!("Operation {i} has no `op`."),
            ))
        }
    }
    let Some(Value::String(path)) = operation.get("path") else {
        return Err(ApiError::bad_property(
            "path",
            format!("Operation {i} has no `path`."),
        ));
    };
    let property = pointer_property(path, allowed).ok_or_else(|| {
        ApiError::bad_property(
            "path",
            format!(
                "Operation {i}: `path` must be one of {}.",
                allowed
                    .iter()
                    .map(|p| format!("/{p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    let value = operation
        .remove("value")
        .ok_or_else(|| ApiError::bad_property("value", format!("Operation {i} has no `value`.")))?;
    Ok(Replace { property, value })
}

/// The allowed property a JSON Pointer (RFC 6901) names (`status`, or `profile/firstName` for a
/// nested one): segments `~1`/`~0` unescaped, compared ASCII case-insensitively.
fn pointer_property(pointer: &str, allowed: &[&'static str]) -> Option<&'static str> {
    let rest = pointer.strip_prefix('/')?;
    let segments: Vec<String> = rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    // Segment by segment, so an escaped `/` inside one segment never matches two.
    allowed.iter().copied().find(|p| {
        let mut wanted = p.split('/');
        segments
            .iter()
            .all(|s| wanted.next().is_some_and(|w| w.eq_ignore_ascii_case(s)))
            && wanted.next().is_none()
    })
}

pub(crate) fn status_only(document: Value) -> Result<Option<Status>, ApiError> {
    let mut status = None;
    for op in parse(document, &["status"])? {
        status = Some(settable_status(&op.value)?);
    }
    Ok(status)
}

/// The status a client may set: `enabled` or `disabled` (the `disabledDueTo…` values are derived).
pub(crate) fn settable_status(value: &Value) -> Result<Status, ApiError> {
    // VSPC writes a user's status `Enabled`, a company's `Active`, a key's `enabled`.
    let parsed = value.as_str().and_then(|s| {
        if s.eq_ignore_ascii_case("enabled") || s.eq_ignore_ascii_case("active") {
            Some(Status::Enabled)
        } else if s.eq_ignore_ascii_case("disabled") {
            Some(Status::Disabled)
        } else {
            None
        }
    });
    parsed.ok_or_else(|| ApiError::bad_property("status", "status must be enabled or disabled."))
}

/// One operation of the JSON Patch bodies, as the OpenAPI document describes them (`parse` reads
/// them by hand).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct PatchOperation {
    op: PatchOp,
    /// A JSON Pointer to one of the properties the endpoint lets change, such as `/status`.
    path: String,
    /// The new value.
    value: Value,
}

/// The only JSON Patch operation taken.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum PatchOp {
    Replace,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &[&str] = &["status", "description"];

    #[test]
    fn replace_on_allowed_paths_in_any_case() {
        let ops = parse(
            json!([
                {"op": "replace", "path": "/Status", "value": "disabled"},
                {"op": "replace", "path": "/DESCRIPTION", "value": "ci"}
            ]),
            KEY,
        )
        .expect("valid");
        assert_eq!(ops[0].property, "status");
        assert_eq!(ops[1].property, "description");
        assert_eq!(ops[1].value, json!("ci"));
        assert!(parse(json!([]), KEY).expect("empty").is_empty());
    }

    #[test]
    fn everything_else_is_refused() {
        let bad = [
            json!({"op": "replace", "path": "/status", "value": "x"}),
            json!([{"op": "add", "path": "/status", "value": "x"}]),
            json!([{"op": "remove", "path": "/status"}]),
            json!([{"op": "replace", "path": "/scopes", "value": []}]),
            json!([{"op": "replace", "path": "status", "value": "x"}]),
            json!([{"op": "replace", "path": "/status/x", "value": "x"}]),
            json!([{"op": "replace", "path": "/status"}]),
            json!([{"path": "/status", "value": "x"}]),
            json!(["replace"]),
        ];
        for document in bad {
            let error = parse(document.clone(), KEY).expect_err("refused");
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{document}");
        }
    }

    #[test]
    fn only_enabled_and_disabled_can_be_set() {
        assert_eq!(
            settable_status(&json!("Enabled")).expect("ok"),
            Status::Enabled
        );
        assert_eq!(
            settable_status(&json!("disabled")).expect("ok"),
            Status::Disabled
        );
        assert_eq!(
            settable_status(&json!("Active")).expect("ok"),
            Status::Enabled
        );
        for bad in [json!("disabledDueToUser"), json!(true), json!("nope")] {
            assert!(settable_status(&bad).is_err());
        }
    }

    #[test]
    fn nested_paths_match_segment_by_segment() {
        let allowed = &["status", "profile/firstName"];
        let ops = parse(
            json!([{"op": "replace", "path": "/Profile/FIRSTNAME", "value": "Ann"}]),
            allowed,
        )
        .expect("valid");
        assert_eq!(ops[0].property, "profile/firstName");
        for path in ["/profile~1firstName", "/profile", "/profile/firstName/x"] {
            let document = json!([{"op": "replace", "path": path, "value": "x"}]);
            assert!(parse(document, allowed).is_err(), "{path}");
        }
    }
}
