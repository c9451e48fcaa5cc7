//! Scopes: the kinds of traffic a key opens.
//!
//! VSPC's `ui`, `rest` and `integration` exist from the start; applications register their own names
//! (up to 64 in all). A set of scopes is a 64-bit mask, so checking one on the hot path is a single `and`.

use std::fmt;
use std::sync::RwLock;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MAX_SCOPES: usize = 64;
const MAX_NAME_LEN: usize = 64;

static NAMES: RwLock<Vec<&'static str>> = RwLock::new(Vec::new());
const BUILT_IN: [&str; 3] = ["ui", "rest", "integration"];

/// One scope: VSPC's `ui`, `rest`, `integration`, or a name the application registered.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(u8);

impl Scope {
    /// VSPC `ui`: requests of the web UI.
    pub const UI: Scope = Scope(0);
    /// VSPC `rest`: REST API requests.
    pub const REST: Scope = Scope(1);
    /// VSPC `integration`: configuring integrations.
    pub const INTEGRATION: Scope = Scope(2);

    /// Registers an application-defined scope name, or returns the existing scope of that name
    /// (names compare ASCII case-insensitively).
    ///
    /// Names are 1 to 64 characters of `[A-Za-z0-9_.:-]`; at most 64 scopes exist in one process.
    /// Register names at start-up, never from request data.
    pub fn register(name: &str) -> Result<Scope, ScopeError> {
        let valid = (1..=MAX_NAME_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        if !valid {
            return Err(ScopeError::InvalidName);
        }
        if let Some(scope) = Self::lookup(name) {
            return Ok(scope);
        }
        let mut names = NAMES.write().unwrap_or_else(|e| e.into_inner());
        ensure_built_in(&mut names);
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(name)) {
            return Ok(Scope(i as u8));
        }
        if names.len() >= MAX_SCOPES {
            return Err(ScopeError::TooMany);
        }
        names.push(Box::leak(name.to_owned().into_boxed_str()));
        Ok(Scope((names.len() - 1) as u8))
    }

    /// The scope of that name if it is built in or registered (ASCII case-insensitive).
    pub fn lookup(name: &str) -> Option<Scope> {
        if let Some(i) = BUILT_IN.iter().position(|n| n.eq_ignore_ascii_case(name)) {
            return Some(Scope(i as u8));
        }
        let names = NAMES.read().unwrap_or_else(|e| e.into_inner());
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .map(|i| Scope(i as u8))
    }

    /// The scope's name.
    pub fn name(self) -> &'static str {
        if let Some(name) = BUILT_IN.get(usize::from(self.0)) {
            return name;
        }
        let names = NAMES.read().unwrap_or_else(|e| e.into_inner());
        names.get(usize::from(self.0)).copied().unwrap_or("unknown")
    }

    /// Position of the scope in a [`Scopes`] mask (0 to 63).
    pub(crate) fn index(self) -> u8 {
        self.0
    }

    fn bit(self) -> u64 {
        1u64 << self.0
    }
}

fn ensure_built_in(names: &mut Vec<&'static str>) {
    if names.is_empty() {
        names.extend_from_slice(&BUILT_IN);
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({})", self.name())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::lookup(s).ok_or(ScopeError::Unknown)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Scope::lookup(&name)
            .ok_or_else(|| de::Error::custom(format_args!("unknown scope `{name}`")))
    }
}

/// Why a scope name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScopeError {
    /// The name is empty, too long or has characters outside `[A-Za-z0-9_.:-]`.
    InvalidName,
    /// 64 scopes are already registered.
    TooMany,
    /// No scope of that name is built in or registered.
    Unknown,
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidName => "scope names are 1 to 64 characters of [A-Za-z0-9_.:-]",
            Self::TooMany => "no more than 64 scopes can be registered",
            Self::Unknown => "unknown scope",
        })
    }
}

impl std::error::Error for ScopeError {}

/// A set of scopes. `Copy`, 8 bytes; membership is one `and`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u64);

impl Scopes {
    /// No scopes.
    pub const EMPTY: Scopes = Scopes(0);

    /// Whether `scope` is in the set.
    #[inline]
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether every scope of `other` is in the set.
    #[inline]
    pub fn contains_all(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    /// The set with `scope` added.
    #[must_use]
    pub fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }

    /// Adds `scope`.
    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    /// Number of scopes in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in registration order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        (0..64u8).map(Scope).filter(move |s| self.contains(*s))
    }

    /// The raw mask, for stores that persist it.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// Rebuilds a set from [`Scopes::bits`].
    pub fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// Parses scope names; `Err` names the first unknown one.
    pub fn parse<'a, I>(names: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = &'a str>,
    {
        names.into_iter().try_fold(Scopes::EMPTY, |set, name| {
            Scope::lookup(name.trim())
                .map(|s| set.with(s))
                .ok_or_else(|| name.to_owned())
        })
    }
}

impl From<Scope> for Scopes {
    fn from(scope: Scope) -> Self {
        Self(scope.bit())
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::EMPTY, Scopes::with)
    }
}

impl<const N: usize> From<[Scope; N]> for Scopes {
    fn from(scopes: [Scope; N]) -> Self {
        scopes.into_iter().collect()
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Scope::name)).finish()
    }
}

impl fmt::Display for Scopes {
    /// Space-separated, as in RFC 6749 `scope` values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope.name())?;
        }
        Ok(())
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for scope in self.iter() {
            seq.serialize_element(scope.name())?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScopesVisitor;
        impl<'de> Visitor<'de> for ScopesVisitor {
            type Value = Scopes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of scope names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scopes, A::Error> {
                let mut set = Scopes::EMPTY;
                while let Some(scope) = seq.next_element::<Scope>()? {
                    set.insert(scope);
                }
                Ok(set)
            }
        }
        deserializer.deserialize_seq(ScopesVisitor)
    }
}

/// An array of scope names, as [`Scopes`] serializes; names are open, applications register their own.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Scopes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
        ArrayBuilder::new()
            .items(ObjectBuilder::new().schema_type(Type::String))
            .unique_items(true)
            .description(Some(
                "Scope names: ui, rest, integration, or one an application registered.",
            ))
            .build()
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Scopes {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_scopes_have_vspc_names() {
        assert_eq!(Scope::UI.name(), "ui");
        assert_eq!(Scope::REST.name(), "rest");
        assert_eq!(Scope::INTEGRATION.name(), "integration");
        assert_eq!(Scope::lookup("REST"), Some(Scope::REST));
    }

    #[test]
    fn registered_scope_is_found_and_idempotent() {
        let a = Scope::register("billing.read").expect("valid");
        assert_eq!(Scope::register("Billing.Read").expect("valid"), a);
        assert_eq!(Scope::lookup("billing.read"), Some(a));
        assert_eq!(a.name(), "billing.read");
        assert_eq!(Scope::register("rest").expect("valid"), Scope::REST);
    }

    #[test]
    fn invalid_names_are_refused() {
        for bad in ["", "has space", "quote\"", &"x".repeat(65)] {
            assert_eq!(Scope::register(bad).unwrap_err(), ScopeError::InvalidName);
        }
        assert_eq!(Scope::lookup("never-registered-scope"), None);
    }

    #[test]
    fn sets_check_membership() {
        let set = Scopes::from([Scope::REST, Scope::INTEGRATION]);
        assert!(set.contains(Scope::REST));
        assert!(!set.contains(Scope::UI));
        assert!(set.contains_all(Scope::REST.into()));
        assert_eq!(set.len(), 2);
        assert_eq!(set.to_string(), "rest integration");
    }

    #[test]
    fn serde_uses_names() {
        let set = Scopes::from([Scope::INTEGRATION, Scope::REST]);
        let json = serde_json::to_string(&set).expect("serializes");
        assert_eq!(json, r#"["rest","integration"]"#);
        let back: Scopes = serde_json::from_str(r#"["integration","rest"]"#).expect("parses");
        assert_eq!(back, set);
        assert!(serde_json::from_str::<Scopes>(r#"["nope"]"#).is_err());
    }
}
