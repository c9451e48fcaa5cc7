//! Paging, filtering and sorting parameters of the listing endpoints.
//!
//! Accepted syntax (VSPC's JSON forms and a short form):
//!
//! - `limit`: 1 to 500, default 100. `offset`: 0 to 2147483647, default 0.
//! - `sort`: one field, ascending unless marked descending. Fields: `id` (also `identifierInProvider`),
//!   `creationDate`, `description`, `userName`, `status`. Any of
//!   `sort=creationDate`, `sort=-creationDate`, `sort=["-creationDate"]`,
//!   `sort=[{"property":"creationDate","direction":"descending"}]`.
//! - `filter`: a JSON array (or a single object) of conditions, all of which must hold:
//!   `{"property":"status","operation":"equals","value":"enabled"}`,
//!   `{"property":"description","operation":"contains","value":"ci"}` (case-insensitive),
//!   `{"property":"userUid","operation":"equals","value":"…"}`.

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::QueryPairs;
use tower_api_key::store::{ListQuery, SortField};
use tower_api_key::Status;

const MAX_LIMIT: u64 = 500;
const DEFAULT_LIMIT: u64 = 100;
const MAX_OFFSET: u64 = i32::MAX as u64;

/// `offset` and `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Paging {
    pub(crate) offset: u64,
    pub(crate) limit: u64,
}

/// `limit` and `offset` as the OpenAPI document describes them.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct PagingParams {
    /// How many items, 1 to 500; 100 when absent.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
    /// How many items to skip, 0 to 2147483647.
    #[param(maximum = 2147483647)]
    offset: Option<u64>,
}

/// The parameters of key listings, as the OpenAPI document describes them.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct KeyListParams {
    /// How many keys, 1 to 500; 100 when absent.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
    /// How many keys to skip, 0 to 2147483647.
    #[param(maximum = 2147483647)]
    offset: Option<u64>,
    /// One of `id`, `creationDate`, `description`, `userName`, `status`, `-` before it for
    /// descending, or VSPC's JSON forms: `["-creationDate"]`,
    /// `[{"property":"creationDate","direction":"descending"}]`.
    sort: Option<String>,
    /// A JSON array of conditions that must all hold:
    /// `{"property":"status","operation":"equals","value":"enabled"}`,
    /// `{"property":"description","operation":"contains","value":"…"}`,
    /// `{"property":"userUid","operation":"equals","value":"…"}`.
    filter: Option<String>,
}

/// Reads `limit` and `offset`.
pub(crate) fn paging(query: &QueryPairs) -> Result<Paging, ApiError> {
    let limit = match query.single("limit")? {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::bad_parameter("limit", "limit must be 1 to 500."))?,
    };
    let offset = match query.single("offset")? {
        None => 0,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= MAX_OFFSET)
            .ok_or_else(|| ApiError::bad_parameter("offset", "offset must be 0 to 2147483647."))?,
    };
    Ok(Paging { offset, limit })
}

/// A key listing query from `limit`, `offset`, `filter` and `sort`; `user_uid` as the filter asked.
pub(crate) fn key_query(query: &QueryPairs) -> Result<ListQuery, ApiError> {
    let Paging { offset, limit } = paging(query)?;
    let mut list = ListQuery::default().with_offset(offset).with_limit(limit);
    if let Some(sort) = query.single("sort")? {
        (list.sort, list.descending) = parse_sort(sort)?;
    }
    if let Some(filter) = query.single("filter")? {
        apply_filter(filter, &mut list)?;
    }
    Ok(list)
}

fn bad_sort() -> ApiError {
    ApiError::bad_parameter(
        "sort",
        "sort must name one of id, creationDate, description, userName, status, \
         optionally prefixed with - for descending.",
    )
}

fn parse_sort(raw: &str) -> Result<(SortField, bool), ApiError> {
    let raw = raw.trim();
    if !raw.starts_with('[') && !raw.starts_with('{') {
        return sort_term(raw);
    }
    let value: Value = serde_json::from_str(raw).map_err(|_| bad_sort())?;
    let terms = match value {
        Value::Array(terms) => terms,
        object @ Value::Object(_) => vec![object],
        _ => return Err(bad_sort()),
    };
    let [term] = <[Value; 1]>::try_from(terms)
        .map_err(|_| ApiError::bad_parameter("sort", "sort takes exactly one field."))?;
    match term {
        Value::String(s) => sort_term(&s),
        Value::Object(o) => {
            let (field, _) = o
                .get("property")
                .and_then(Value::as_str)
                .ok_or_else(bad_sort)
                .and_then(sort_term)?;
            let descending = match o.get("direction").and_then(Value::as_str) {
                None => false,
                Some(d) if d.eq_ignore_ascii_case("ascending") || d.eq_ignore_ascii_case("asc") => {
                    false
                }
                Some(d)
                    if d.eq_ignore_ascii_case("descending") || d.eq_ignore_ascii_case("desc") =>
                {
                    true
                }
                Some(_) => return Err(bad_sort()),
            };
            Ok((field, descending))
        }
        _ => Err(bad_sort()),
    }
}

fn sort_term(term: &str) -> Result<(SortField, bool), ApiError> {
    let (name, descending) = match term.trim() {
        t if t.starts_with('-') => (&t[1..], true),
        t if t.starts_with('+') => (&t[1..], false),
        t => (t, false),
    };
    let field = [
        ("id", SortField::Id),
        ("identifierInProvider", SortField::Id),
        ("creationDate", SortField::CreationDate),
        ("description", SortField::Description),
        ("userName", SortField::UserName),
        ("status", SortField::Status),
    ]
    .into_iter()
    .find(|(n, _)| n.eq_ignore_ascii_case(name))
    .map(|(_, f)| f)
    .ok_or_else(bad_sort)?;
    Ok((field, descending))
}

fn bad_filter(message: &'static str) -> ApiError {
    ApiError::bad_parameter("filter", message)
}

fn apply_filter(raw: &str, list: &mut ListQuery) -> Result<(), ApiError> {
    let value: Value = serde_json::from_str(raw.trim()).map_err(|_| {
        bad_filter("filter must be a JSON array of {property, operation, value} objects.")
    })?;
    let conditions = match value {
        Value::Array(c) => c,
        object @ Value::Object(_) => vec![object],
        _ => {
            return Err(bad_filter(
                "filter must be a JSON array of {property, operation, value} objects.",
            ))
        }
    };
    for condition in conditions {
        let property = condition.get("property").and_then(Value::as_str);
        let operation = condition.get("operation").and_then(Value::as_str);
        let value = condition.get("value").and_then(Value::as_str);
        let (Some(property), Some(operation), Some(value)) = (property, operation, value) else {
            return Err(bad_filter(
                "Each filter condition needs string property, operation and value.",
            ));
        };
        let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        if is(property, "status") && is(operation, "equals") {
            let status = Status::parse(value)
                .ok_or_else(|| bad_filter("The status in the filter is not a known status."))?;
            // Two different statuses can never both hold.
            if list.status.is_some_and(|s| s != status) {
                return Err(bad_filter("The filter asks for two different statuses."));
            }
            list.status = Some(status);
        } else if is(property, "description") && is(operation, "contains") {
            if list.description_contains.is_some() {
                return Err(bad_filter(
                    "Only one description condition is supported in a filter.",
                ));
            }
            list.description_contains = Some(value.to_owned());
        } else if is(property, "userUid") && is(operation, "equals") {
            if list.user_uid.as_deref().is_some_and(|u| u != value) {
                return Err(bad_filter("The filter asks for two different users."));
            }
            list.user_uid = Some(value.to_owned());
        } else if is(property, "lastUsedDate") && is(operation, "lessThan") {
            // Keys never used count as used before any date: this finds keys nobody uses.
            let since = OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
                bad_filter("The lastUsedDate in the filter must be an RFC 3339 date and time.")
            })?;
            list.unused_since = Some(list.unused_since.map_or(since, |s| s.min(since)));
        } else {
            return Err(bad_filter(
                "Supported filters: status equals, description contains, userUid equals, \
                 lastUsedDate lessThan.",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> QueryPairs {
        QueryPairs::parse(Some(s)).expect("parses")
    }

    #[test]
    fn limit_and_offset_bounds() {
        assert_eq!(
            paging(&q("")).expect("defaults"),
            Paging {
                offset: 0,
                limit: 100
            }
        );
        assert_eq!(paging(&q("limit=500&offset=7")).expect("ok").limit, 500);
        for bad in [
            "limit=0",
            "limit=501",
            "limit=-1",
            "limit=x",
            "offset=-1",
            "offset=2147483648",
        ] {
            assert!(paging(&q(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn sort_forms() {
        let cases = [
            ("sort=creationDate", SortField::CreationDate, false),
            ("sort=-creationDate", SortField::CreationDate, true),
            ("sort=%2Bdescription", SortField::Description, false),
            (
                "sort=%5B%22-creationDate%22%5D",
                SortField::CreationDate,
                true,
            ),
            (
                "sort=[{\"property\":\"userName\",\"direction\":\"descending\"}]",
                SortField::UserName,
                true,
            ),
            ("sort=STATUS", SortField::Status, false),
        ];
        for (query, field, descending) in cases {
            let list = key_query(&q(query)).expect(query);
            assert_eq!((list.sort, list.descending), (field, descending), "{query}");
        }
        for bad in [
            "sort=nope",
            "sort=[\"id\",\"status\"]",
            "sort=[1]",
            "sort=[",
        ] {
            assert!(key_query(&q(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn filter_forms() {
        let list = key_query(&q(
            "filter=[{\"property\":\"status\",\"operation\":\"equals\",\"value\":\"disabled\"},\
             {\"property\":\"description\",\"operation\":\"contains\",\"value\":\"CI\"}]",
        ))
        .expect("valid");
        assert_eq!(list.status, Some(Status::Disabled));
        assert_eq!(list.description_contains.as_deref(), Some("CI"));
        for bad in [
            "filter=status",
            "filter=[{\"property\":\"scopes\",\"operation\":\"equals\",\"value\":\"x\"}]",
            "filter=[{\"property\":\"status\",\"operation\":\"equals\",\"value\":\"weird\"}]",
            "filter=[{\"property\":\"status\",\"operation\":\"equals\"}]",
        ] {
            assert!(key_query(&q(bad)).is_err(), "{bad}");
        }
    }
}
