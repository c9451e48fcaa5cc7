//! First start: the default company and the `admin` user.

use std::fmt;

use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::password::{self, HashError};
use tower_api_key::store::{
    AccountStore, Company, CompanyProfile, Role, StoreError, User, UserProfile,
};
use tower_api_key::Status;

/// Login name of the administrator [`bootstrap_admin`] creates.
pub const ADMIN_USER_NAME: &str = "admin";

/// Name of the company [`bootstrap_admin`] puts the administrator in.
pub const DEFAULT_COMPANY_NAME: &str = "Default";

/// What [`bootstrap_admin`] found or did.
pub struct Bootstrap {
    user_uid: String,
    company_id: String,
    created: bool,
    generated_password: Option<Zeroizing<String>>,
}

impl Bootstrap {
    /// UID of the `admin` user.
    pub fn user_uid(&self) -> &str {
        &self.user_uid
    }

    /// UID of the `admin` user's company.
    pub fn company_id(&self) -> &str {
        &self.company_id
    }

    /// Whether the user was created by this call (`false`: it existed and was left as it was).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The password generated for a newly created `admin`, when none was given. Nothing keeps it:
    /// show it once, then drop this value (its memory is wiped).
    pub fn generated_password(&self) -> Option<&str> {
        self.generated_password.as_deref().map(String::as_str)
    }
}

impl fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bootstrap")
            .field("user_uid", &self.user_uid)
            .field("company_id", &self.company_id)
            .field("created", &self.created)
            .field(
                "generated_password",
                &self.generated_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why [`bootstrap_admin`] failed.
#[derive(Debug)]
pub struct BootstrapError {
    kind: BootstrapErrorKind,
}

#[derive(Debug)]
enum BootstrapErrorKind {
    WeakPassword,
    Hash,
    Store(StoreError),
}

impl BootstrapError {
    /// Whether the given password breaks the rules (8 to 1024 characters).
    pub fn is_weak_password(&self) -> bool {
        matches!(self.kind, BootstrapErrorKind::WeakPassword)
    }
}

impl fmt::Display for BootstrapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BootstrapErrorKind::WeakPassword => {
                f.write_str("the administrator password must be 8 to 1024 characters")
            }
            BootstrapErrorKind::Hash => f.write_str("hashing the administrator password failed"),
            BootstrapErrorKind::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BootstrapError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            BootstrapErrorKind::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StoreError> for BootstrapError {
    fn from(e: StoreError) -> Self {
        Self {
            kind: BootstrapErrorKind::Store(e),
        }
    }
}

impl From<HashError> for BootstrapError {
    fn from(e: HashError) -> Self {
        Self {
            kind: match e {
                HashError::Policy => BootstrapErrorKind::WeakPassword,
                HashError::Busy | HashError::Internal => BootstrapErrorKind::Hash,
            },
        }
    }
}

/// Makes sure the administrator exists: the company [`DEFAULT_COMPANY_NAME`] and the user
/// [`ADMIN_USER_NAME`] with [`Role::PortalAdministrator`].
///
/// When `admin` exists, nothing is changed (not even its password). Otherwise it is created with
/// `password`, or with a generated one that [`Bootstrap::generated_password`] returns once.
pub async fn bootstrap_admin(
    accounts: &dyn AccountStore,
    password: Option<&str>,
) -> Result<Bootstrap, BootstrapError> {
    if let Some(user) = accounts.user_by_name(ADMIN_USER_NAME).await? {
        return Ok(existing(user));
    }
    let (secret, generated) = match password {
        Some(p) => {
            password::check_policy(p)?;
            (Zeroizing::new(p.to_owned()), false)
        }
        None => (password::generate()?, true),
    };
    let company_id = default_company(accounts).await?;
    let shown = generated.then(|| secret.clone());
    let user = User {
        uid: uuid::Uuid::new_v4().to_string(),
        user_name: ADMIN_USER_NAME.to_owned(),
        password_hash: password::hash(secret).await?,
        role: Role::PortalAdministrator,
        company_id: company_id.clone(),
        status: Status::Enabled,
        created: OffsetDateTime::now_utc(),
        profile: UserProfile::default(),
        token_generation: 0,
    };
    match accounts.create_user(user.clone()).await {
        Ok(()) => Ok(Bootstrap {
            user_uid: user.uid,
            company_id,
            created: true,
            generated_password: shown,
        }),
        // Another process bootstrapped at the same moment: theirs stands.
        Err(e) if e.is_conflict() => match accounts.user_by_name(ADMIN_USER_NAME).await? {
            Some(user) => Ok(existing(user)),
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

fn existing(user: User) -> Bootstrap {
    Bootstrap {
        user_uid: user.uid,
        company_id: user.company_id,
        created: false,
        generated_password: None,
    }
}

/// The UID of the default company, created when missing.
async fn default_company(accounts: &dyn AccountStore) -> Result<String, StoreError> {
    if let Some(uid) = find_company(accounts, DEFAULT_COMPANY_NAME).await? {
        return Ok(uid);
    }
    let company = Company {
        uid: uuid::Uuid::new_v4().to_string(),
        name: DEFAULT_COMPANY_NAME.to_owned(),
        status: Status::Enabled,
        profile: CompanyProfile::default(),
        token_generation: 0,
    };
    match accounts.create_company(company.clone()).await {
        Ok(()) => Ok(company.uid),
        Err(e) if e.is_conflict() => find_company(accounts, DEFAULT_COMPANY_NAME).await?.ok_or(e),
        Err(e) => Err(e),
    }
}

async fn find_company(
    accounts: &dyn AccountStore,
    name: &str,
) -> Result<Option<String>, StoreError> {
    const PAGE: u64 = 500;
    let mut offset = 0;
    loop {
        let page = accounts.list_companies(offset, PAGE).await?;
        if let Some(c) = page.items.iter().find(|c| c.name == name) {
            return Ok(Some(c.uid.clone()));
        }
        offset += page.items.len() as u64;
        if page.items.is_empty() || offset >= page.total {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_api_key::store::MemoryStore;

    #[tokio::test]
    async fn creates_once_and_keeps_the_existing_admin() {
        let store = MemoryStore::new();
        let first = bootstrap_admin(&store, None).await.expect("created");
        assert!(first.created());
        let password = first.generated_password().expect("generated").to_owned();
        assert!(!format!("{first:?}").contains(&password));
        let user = store
            .user_by_name(ADMIN_USER_NAME)
            .await
            .expect("store")
            .expect("exists");
        assert_eq!(user.role, Role::PortalAdministrator);
        assert_eq!(user.uid, first.user_uid());

        let second = bootstrap_admin(&store, Some("another password"))
            .await
            .expect("kept");
        assert!(!second.created());
        assert_eq!(second.generated_password(), None);
        assert_eq!(second.user_uid(), first.user_uid());
        let page = store.list_companies(0, 10).await.expect("store");
        assert_eq!(page.total, 1);
    }

    #[tokio::test]
    async fn a_given_password_must_follow_the_rules() {
        let store = MemoryStore::new();
        let error = bootstrap_admin(&store, Some("short"))
            .await
            .expect_err("weak");
        assert!(error.is_weak_password());
        assert!(store
            .user_by_name(ADMIN_USER_NAME)
            .await
            .expect("store")
            .is_none());
    }
}
