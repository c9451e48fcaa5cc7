//! Who a request acts as: the VSPC `UserLogin` and the handle the layer puts into request extensions.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::index::IndexRef;
use crate::key::KeyId;
use crate::scope::{Scope, Scopes};

/// Status of a key, a user or a company, with VSPC's names. Only [`Status::Enabled`] lets a request through.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum Status {
    /// Active.
    #[serde(rename = "enabled")]
    Enabled,
    /// Disabled by its owner or an administrator.
    #[serde(rename = "disabled")]
    Disabled,
    /// The user that owns the key is disabled.
    #[serde(rename = "disabledDueToUser")]
    DisabledDueToUser,
    /// The company of the user that owns the key is disabled.
    #[serde(rename = "disabledDueToCompany")]
    DisabledDueToCompany,
    /// Disabled by the system.
    #[serde(rename = "disabledDueToSystem")]
    DisabledDueToSystem,
    /// The tenant is disabled.
    #[serde(rename = "disabledDueToTenant")]
    DisabledDueToTenant,
    /// Disabled by restrictions of system components.
    #[serde(rename = "disabledDueSystemComponentsRestrictions")]
    DisabledDueSystemComponentsRestrictions,
    /// A status this version does not know; never passes.
    #[serde(rename = "Unknown", other)]
    Unknown,
}

impl Status {
    const ALL: [Status; 8] = [
        Status::Enabled,
        Status::Disabled,
        Status::DisabledDueToUser,
        Status::DisabledDueToCompany,
        Status::DisabledDueToSystem,
        Status::DisabledDueToTenant,
        Status::DisabledDueSystemComponentsRestrictions,
        Status::Unknown,
    ];

    /// VSPC's name for the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Enabled => "enabled",
            Status::Disabled => "disabled",
            Status::DisabledDueToUser => "disabledDueToUser",
            Status::DisabledDueToCompany => "disabledDueToCompany",
            Status::DisabledDueToSystem => "disabledDueToSystem",
            Status::DisabledDueToTenant => "disabledDueToTenant",
            Status::DisabledDueSystemComponentsRestrictions => {
                "disabledDueSystemComponentsRestrictions"
            }
            Status::Unknown => "Unknown",
        }
    }

    /// Parses VSPC's name (ASCII case-insensitive); anything else is `None`.
    pub fn parse(name: &str) -> Option<Status> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether requests pass.
    #[inline]
    pub fn is_enabled(self) -> bool {
        self == Status::Enabled
    }

    pub(crate) fn to_byte(self) -> u8 {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(7) as u8
    }

    pub(crate) fn from_byte(b: u8) -> Status {
        Self::ALL
            .get(usize::from(b))
            .copied()
            .unwrap_or(Status::Unknown)
    }

    /// What a key reports when its own status, its user's and its company's are combined:
    /// the key's own status first, then the company's, then the user's.
    pub fn effective(key: Status, user: Status, company: Status) -> Status {
        if !key.is_enabled() {
            key
        } else if !company.is_enabled() {
            Status::DisabledDueToCompany
        } else if !user.is_enabled() {
            Status::DisabledDueToUser
        } else {
            Status::Enabled
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user identity as VSPC's REST API writes it (`UserLogin`), field for field in camelCase.
///
/// `parameters` holds the key only in the response that created it and is `""` everywhere else.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserLogin {
    /// Login id; for API keys, the key id.
    pub id: u64,
    /// UID of the user the identity belongs to.
    pub user_uid: String,
    /// Name of that user.
    pub user_name: String,
    /// UID of the user's company.
    pub company_id: String,
    /// Name of the user's company.
    pub company_name: String,
    /// `"AK"` for API keys.
    pub identity_provider_name: String,
    /// What the key was issued for (1 to 128 characters, no `<`, `>`, `=`).
    pub description: String,
    /// Whether the identity may only read (`GET`, `HEAD`).
    pub is_read_access_only: bool,
    /// The kinds of traffic the identity opens.
    pub scopes: Scopes,
    /// Effective status: the key's own, or why its user or company disables it.
    pub status: Status,
    /// The key, in the creation response only.
    pub parameters: String,
    /// The key id in decimal form.
    pub identifier_in_provider: u64,
    /// When the identity was created.
    #[serde(with = "time::serde::rfc3339")]
    pub creation_date: OffsetDateTime,
    /// When the identity stops opening anything; `null` for one that lives until it is disabled or
    /// deleted.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expiration_date: Option<OffsetDateTime>,
    /// When the identity was replaced by a rotation; it lives on until its `expirationDate`.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub deprecation_date: Option<OffsetDateTime>,
    /// When a request last used the identity (written in batches, so up to one interval late);
    /// `null` when never used.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub last_used_date: Option<OffsetDateTime>,
}

/// `identityProviderName` of API-key identities.
pub const API_KEY_PROVIDER: &str = "AK";

impl fmt::Debug for UserLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserLogin")
            .field("id", &self.id)
            .field("user_uid", &self.user_uid)
            .field("user_name", &self.user_name)
            .field("company_id", &self.company_id)
            .field("company_name", &self.company_name)
            .field("identity_provider_name", &self.identity_provider_name)
            .field("description", &self.description)
            .field("is_read_access_only", &self.is_read_access_only)
            .field("scopes", &self.scopes)
            .field("status", &self.status)
            .field(
                "parameters",
                &if self.parameters.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("identifier_in_provider", &self.identifier_in_provider)
            .field("creation_date", &self.creation_date)
            .field("expiration_date", &self.expiration_date)
            .field("deprecation_date", &self.deprecation_date)
            .field("last_used_date", &self.last_used_date)
            .finish()
    }
}

/// Where an identity came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityKind {
    /// An API key checked against a key store.
    ApiKey,
    /// A token accepted by a [`TokenValidator`](crate::TokenValidator).
    Token,
}

/// The identity of an authorized request, as the layer inserts it into request extensions.
///
/// For API keys this is a small `Copy`-sized handle: the layer copies it out of the index slot it
/// already read, so the accept path touches no reference count. The full [`UserLogin`] is fetched on
/// demand with [`Identity::login`].
#[derive(Clone)]
pub struct Identity {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Key {
        id: KeyId,
        scopes: Scopes,
        read_only: bool,
        /// Seconds since the Unix epoch; `0`: never.
        expires: u64,
        deprecated: bool,
        index: IndexRef,
    },
    Token(Arc<UserLogin>),
}

impl Identity {
    pub(crate) fn from_key(
        id: KeyId,
        scopes: Scopes,
        read_only: bool,
        (expires, deprecated): (u64, bool),
        index: IndexRef,
    ) -> Self {
        Self {
            repr: Repr::Key {
                id,
                scopes,
                read_only,
                expires,
                deprecated,
                index,
            },
        }
    }

    /// An identity for a request authorized by a token; what a [`TokenValidator`](crate::TokenValidator)
    /// returns.
    pub fn from_token(login: UserLogin) -> Self {
        Self {
            repr: Repr::Token(Arc::new(login)),
        }
    }

    /// Whether the identity came from an API key or a token.
    pub fn kind(&self) -> IdentityKind {
        match self.repr {
            Repr::Key { .. } => IdentityKind::ApiKey,
            Repr::Token(_) => IdentityKind::Token,
        }
    }

    /// The key id, for API-key identities.
    pub fn key_id(&self) -> Option<KeyId> {
        match self.repr {
            Repr::Key { id, .. } => Some(id),
            Repr::Token(_) => None,
        }
    }

    /// The identity's scopes.
    pub fn scopes(&self) -> Scopes {
        match &self.repr {
            Repr::Key { scopes, .. } => *scopes,
            Repr::Token(login) => login.scopes,
        }
    }

    /// Whether the identity holds `scope`.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes().contains(scope)
    }

    /// Whether the identity may only read.
    pub fn is_read_only(&self) -> bool {
        match &self.repr {
            Repr::Key { read_only, .. } => *read_only,
            Repr::Token(login) => login.is_read_access_only,
        }
    }

    /// When the key expires, to the second; `None` for keys that do not, and for tokens.
    pub fn expires(&self) -> Option<OffsetDateTime> {
        match self.repr {
            Repr::Key { expires, .. } => crate::index::expiry_date(expires),
            Repr::Token(_) => None,
        }
    }

    /// Whether a rotation replaced the key: it works until [`Identity::expires`], its grace period.
    pub fn is_deprecated(&self) -> bool {
        matches!(
            self.repr,
            Repr::Key {
                deprecated: true,
                ..
            }
        )
    }

    /// When a rotation replaced the key, read from the index; `None` for keys it did not replace,
    /// keys the index no longer holds, and tokens.
    pub(crate) fn deprecated_since(&self) -> Option<OffsetDateTime> {
        match &self.repr {
            Repr::Key {
                id,
                deprecated: true,
                index,
                ..
            } => index.deprecated(*id),
            _ => None,
        }
    }

    /// The expiry in seconds and the deprecation flag, as the slot held them.
    pub(crate) fn lifecycle(&self) -> (u64, bool) {
        match self.repr {
            Repr::Key {
                expires,
                deprecated,
                ..
            } => (expires, deprecated),
            Repr::Token(_) => (0, false),
        }
    }

    /// The status a token identity was issued with; `None` for keys, whose status the index checks.
    pub(crate) fn token_status(&self) -> Option<Status> {
        match &self.repr {
            Repr::Key { .. } => None,
            Repr::Token(login) => Some(login.status),
        }
    }

    /// The full identity. For an API key this reads the in-process index; `None` when the key was
    /// deleted after the request was authorized, or the [`KeyRing`](crate::KeyRing) is gone.
    pub fn login(&self) -> Option<Arc<UserLogin>> {
        match &self.repr {
            Repr::Key { id, index, .. } => index.login(*id),
            Repr::Token(login) => Some(login.clone()),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Identity");
        d.field("kind", &self.kind());
        if let Some(id) = self.key_id() {
            d.field("key_id", &id);
        }
        if let Repr::Token(login) = &self.repr {
            d.field("user_uid", &login.user_uid);
        }
        d.field("scopes", &self.scopes())
            .field("read_only", &self.is_read_only())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip_through_json() {
        for status in Status::ALL {
            let json = serde_json::to_string(&status).expect("serializes");
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            let back: Status = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, status);
            assert_eq!(Status::from_byte(status.to_byte()), status);
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        let odd: Status = serde_json::from_str("\"somethingNew\"").expect("parses");
        assert_eq!(odd, Status::Unknown);
        assert!(!odd.is_enabled());
    }

    #[test]
    fn effective_status_names_the_cause() {
        use Status::*;
        assert_eq!(Status::effective(Enabled, Enabled, Enabled), Enabled);
        assert_eq!(Status::effective(Disabled, Enabled, Enabled), Disabled);
        assert_eq!(
            Status::effective(Enabled, Disabled, Enabled),
            DisabledDueToUser
        );
        assert_eq!(
            Status::effective(Enabled, Enabled, Disabled),
            DisabledDueToCompany
        );
        assert_eq!(
            Status::effective(Enabled, Disabled, Disabled),
            DisabledDueToCompany
        );
    }

    #[test]
    fn user_login_json_is_vspc_camel_case() {
        let login = UserLogin {
            id: 12,
            user_uid: "955b0b80-03b2-49fd-bf38-14785ecff0a8".into(),
            user_name: "alpha_admin".into(),
            company_id: "3b139961-6b11-4fd8-9e87-c2be1b0e9ca8".into(),
            company_name: "Alpha".into(),
            identity_provider_name: API_KEY_PROVIDER.into(),
            description: "Portal Operator API Key".into(),
            is_read_access_only: true,
            scopes: Scopes::from([Scope::INTEGRATION, Scope::REST]),
            status: Status::Enabled,
            parameters: String::new(),
            identifier_in_provider: 12,
            creation_date: time::macros::datetime!(2020-08-18 16:02:26.0136931 UTC),
            expiration_date: None,
            deprecation_date: None,
            last_used_date: None,
        };
        let value = serde_json::to_value(&login).expect("serializes");
        let keys: Vec<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        for field in [
            "id",
            "userUid",
            "userName",
            "companyId",
            "companyName",
            "identityProviderName",
            "description",
            "isReadAccessOnly",
            "scopes",
            "status",
            "parameters",
            "identifierInProvider",
            "creationDate",
            "expirationDate",
            "deprecationDate",
            "lastUsedDate",
        ] {
            assert!(keys.contains(&field), "missing {field}");
        }
        assert_eq!(keys.len(), 16);
        // Never-set dates are written as null, not left out.
        assert_eq!(value["expirationDate"], serde_json::Value::Null);
        assert_eq!(value["lastUsedDate"], serde_json::Value::Null);
        assert_eq!(value["creationDate"], "2020-08-18T16:02:26.0136931Z");
        assert_eq!(value["scopes"], serde_json::json!(["rest", "integration"]));
        let back: UserLogin = serde_json::from_value(value).expect("parses");
        assert_eq!(back, login);
    }

    #[test]
    fn debug_redacts_parameters() {
        let mut login = UserLogin {
            id: 1,
            user_uid: "u".into(),
            user_name: "n".into(),
            company_id: "c".into(),
            company_name: "cn".into(),
            identity_provider_name: API_KEY_PROVIDER.into(),
            description: "d".into(),
            is_read_access_only: false,
            scopes: Scopes::EMPTY,
            status: Status::Enabled,
            parameters: "tak_SECRETSECRET".into(),
            identifier_in_provider: 1,
            creation_date: OffsetDateTime::UNIX_EPOCH,
            expiration_date: None,
            deprecation_date: None,
            last_used_date: None,
        };
        assert!(!format!("{login:?}").contains("SECRETSECRET"));
        login.parameters.clear();
        assert!(format!("{login:?}").contains("parameters: \"\""));
    }
}
