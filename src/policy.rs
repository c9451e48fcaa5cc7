//! What an authenticated identity may do: scopes and read-only against the request.

use std::fmt;
use std::sync::Arc;

use http::request::Parts;
use http::Method;

use crate::rejection::Reason;
use crate::scope::{Scope, Scopes};

/// Computes the scope a request needs from its parts.
pub(crate) type ScopeFn = Arc<dyn Fn(&Parts) -> Option<Scope> + Send + Sync>;

/// Where the scope a request needs comes from.
#[derive(Clone, Default)]
pub(crate) enum ScopeRule {
    /// Any authenticated identity passes.
    #[default]
    None,
    /// One scope for every request through the layer.
    Fixed(Scope),
    /// Computed from the request (method, matched route, extensions).
    FromParts(ScopeFn),
}

impl ScopeRule {
    /// The scope every request needs, or the function that reads it from a request's parts.
    #[inline]
    pub(crate) fn fixed(&self) -> Result<Option<Scope>, &ScopeFn> {
        match self {
            Self::None => Ok(None),
            Self::Fixed(scope) => Ok(Some(*scope)),
            Self::FromParts(f) => Err(f),
        }
    }
}

impl fmt::Debug for ScopeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Fixed(scope) => write!(f, "Fixed({scope})"),
            Self::FromParts(_) => f.write_str("FromParts(..)"),
        }
    }
}

/// The authorization decision for an authenticated identity.
///
/// Scope first (403 with the missing scope named), then read-only: a read-only identity may use
/// `GET` and `HEAD`, and `OPTIONS` only when `allow_options` is set. Methods are compared exactly;
/// override headers and parameters are not consulted.
#[inline]
pub(crate) fn authorize(
    scopes: Scopes,
    read_only: bool,
    method: &Method,
    required: Option<Scope>,
    allow_options: bool,
) -> Result<(), Reason> {
    if let Some(scope) = required {
        if !scopes.contains(scope) {
            return Err(Reason::MissingScope(scope));
        }
    }
    if read_only && !read_allowed(method, allow_options) {
        return Err(Reason::ReadOnly);
    }
    Ok(())
}

#[inline]
fn read_allowed(method: &Method, allow_options: bool) -> bool {
    *method == Method::GET
        || *method == Method::HEAD
        || (allow_options && *method == Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_method_matrix() {
        let custom = Method::from_bytes(b"PURGE").expect("valid");
        let lower_get = Method::from_bytes(b"get").expect("valid");
        let cases = [
            (Method::GET, true, true),
            (Method::HEAD, true, true),
            (Method::OPTIONS, false, true),
            (Method::POST, false, false),
            (Method::PUT, false, false),
            (Method::PATCH, false, false),
            (Method::DELETE, false, false),
            (Method::TRACE, false, false),
            (Method::CONNECT, false, false),
            (custom, false, false),
            // Methods are case-sensitive (RFC 9110 §9.1): `get` is not GET.
            (lower_get, false, false),
        ];
        for (method, plain, with_options) in cases {
            assert_eq!(
                authorize(Scopes::EMPTY, true, &method, None, false).is_ok(),
                plain,
                "{method}"
            );
            assert_eq!(
                authorize(Scopes::EMPTY, true, &method, None, true).is_ok(),
                with_options,
                "{method} with OPTIONS allowed"
            );
            assert!(authorize(Scopes::EMPTY, false, &method, None, false).is_ok());
        }
    }

    #[test]
    fn missing_scope_is_named_and_checked_before_read_only() {
        let rest = Scopes::from(Scope::REST);
        assert_eq!(
            authorize(rest, false, &Method::POST, Some(Scope::REST), false),
            Ok(())
        );
        assert_eq!(
            authorize(rest, true, &Method::POST, Some(Scope::UI), false),
            Err(Reason::MissingScope(Scope::UI))
        );
        assert_eq!(
            authorize(rest, true, &Method::POST, Some(Scope::REST), false),
            Err(Reason::ReadOnly)
        );
        assert_eq!(
            authorize(Scopes::EMPTY, false, &Method::GET, Some(Scope::REST), false),
            Err(Reason::MissingScope(Scope::REST))
        );
    }
}
