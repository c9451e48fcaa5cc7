//! Access tokens checked against the account they were issued to: a signature and an expiry say
//! who the holder was, only the account says whether they still are.
//!
//! A token passes when its user exists, the user's and the company's token generations are the
//! ones it was issued under (a revocation moves them on), and its identity reports the user's and
//! company's current status (the layer refuses anything but `enabled`). What each account looks like
//! is cached and forgotten whenever the key ring's owner counter moves: a status change or a
//! revocation made here, an owner event heard from another node, or a resync. So a disabled user's
//! token is refused on every node as soon as their keys are.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use tower_api_key::store::{AccountStore, Role};
use tower_api_key::token::{JwtClaims, JwtValidator, TokenError, TokenValidator};
use tower_api_key::KeyRing;
use tower_api_key::{Identity, Status};

/// Accounts remembered at most; the cache starts over when full.
const CAPACITY: usize = 10_000;

/// What a token's validity depends on, read from the account store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Standing {
    user_status: Status,
    company_status: Status,
    user_generation: u64,
    company_generation: u64,
    role: Role,
}

struct Cache {
    /// The ring's owner counter when these entries were read.
    epoch: u64,
    /// By user UID; `None` for a user that does not exist.
    entries: HashMap<String, Option<Standing>>,
}

/// The management API's token validator: a [`JwtValidator`], then the account.
pub(crate) struct AccountTokens {
    jwt: JwtValidator,
    accounts: Arc<dyn AccountStore>,
    ring: KeyRing,
    cache: Mutex<Cache>,
}

impl AccountTokens {
    pub(crate) fn new(jwt: JwtValidator, accounts: Arc<dyn AccountStore>, ring: KeyRing) -> Self {
        Self {
            jwt,
            accounts,
            ring,
            cache: Mutex::new(Cache {
                epoch: 0,
                entries: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        // The cache holds no invariant a panic could break halfway.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached standing of `user_uid`, if it was read since the owner counter last moved.
    fn cached(&self, user_uid: &str, epoch: u64) -> Option<Option<Standing>> {
        let mut cache = self.lock();
        if cache.epoch != epoch {
            cache.epoch = epoch;
            cache.entries.clear();
            return None;
        }
        cache.entries.get(user_uid).copied()
    }

    /// Reads `user_uid`'s standing from the store and caches it, unless an owner change happened
    /// while it was read (the answer may predate it: it is used once, not kept).
    async fn read(&self, user_uid: &str, epoch: u64) -> Result<Option<Standing>, TokenError> {
        let Some(user) = self
            .accounts
            .user(user_uid)
            .await
            .map_err(TokenError::unavailable)?
        else {
            return Ok(self.keep(user_uid, epoch, None));
        };
        let company = self
            .accounts
            .company(&user.company_id)
            .await
            .map_err(TokenError::unavailable)?;
        let standing = Standing {
            user_status: user.status,
            company_status: company.as_ref().map_or(Status::Enabled, |c| c.status),
            user_generation: user.token_generation,
            company_generation: company.as_ref().map_or(0, |c| c.token_generation),
            role: user.role,
        };
        Ok(self.keep(user_uid, epoch, Some(standing)))
    }

    fn keep(&self, user_uid: &str, epoch: u64, standing: Option<Standing>) -> Option<Standing> {
        if self.ring.owners_epoch() == epoch {
            let mut cache = self.lock();
            if cache.epoch == epoch {
                if cache.entries.len() >= CAPACITY {
                    cache.entries.clear();
                }
                cache.entries.insert(user_uid.to_owned(), standing);
            }
        }
        standing
    }

    async fn standing(&self, user_uid: &str) -> Result<Option<Standing>, TokenError> {
        let epoch = self.ring.owners_epoch();
        match self.cached(user_uid, epoch) {
            Some(standing) => Ok(standing),
            None => self.read(user_uid, epoch).await,
        }
    }
}

/// Why a token that verified is refused.
#[derive(Debug)]
struct Revoked;

impl fmt::Display for Revoked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the token's user is gone or its tokens were revoked")
    }
}

impl std::error::Error for Revoked {}

/// The identity of `claims` given the account's `standing`, or why it is refused.
fn judge(claims: &JwtClaims, standing: Option<Standing>) -> Result<Identity, TokenError> {
    let standing = standing.ok_or_else(|| TokenError::invalid(Revoked))?;
    let current = claims.generation.unwrap_or(0) == standing.user_generation
        && claims.company_generation.unwrap_or(0) == standing.company_generation;
    if !current {
        return Err(TokenError::invalid(Revoked));
    }
    let mut login = claims.to_login();
    login.status = Status::effective(
        Status::Enabled,
        standing.user_status,
        standing.company_status,
    );
    // A role that became read-only after the token was issued reads only from now on.
    login.is_read_access_only |= standing.role.is_read_only();
    Ok(Identity::from_token(login))
}

#[async_trait]
impl TokenValidator for AccountTokens {
    async fn validate(&self, token: &str) -> Result<Identity, TokenError> {
        let claims = self.jwt.claims(token)?;
        let standing = self.standing(&claims.sub).await?;
        judge(&claims, standing)
    }
}

impl fmt::Debug for AccountTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountTokens")
            .field("jwt", &self.jwt)
            .field("cached", &self.lock().entries.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(generation: Option<u64>, company_generation: Option<u64>) -> JwtClaims {
        JwtClaims {
            sub: "u".into(),
            name: "n".into(),
            company_id: "c".into(),
            company_name: "C".into(),
            scope: "rest".into(),
            read_only: false,
            exp: u64::MAX,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
            jti: None,
            generation,
            company_generation,
        }
    }

    fn standing(user_generation: u64, company_generation: u64) -> Standing {
        Standing {
            user_status: Status::Enabled,
            company_status: Status::Enabled,
            user_generation,
            company_generation,
            role: Role::CompanyLocationUser,
        }
    }

    #[test]
    fn a_token_of_an_older_generation_is_refused() {
        assert!(judge(&claims(Some(1), Some(0)), Some(standing(1, 0))).is_ok());
        assert!(judge(&claims(None, None), Some(standing(0, 0))).is_ok());
        assert!(judge(&claims(Some(1), Some(0)), Some(standing(2, 0))).is_err());
        assert!(judge(&claims(Some(1), Some(0)), Some(standing(1, 1))).is_err());
        assert!(judge(&claims(None, None), Some(standing(1, 0))).is_err());
        assert!(judge(&claims(Some(0), Some(0)), None).is_err());
    }

    #[test]
    fn the_identity_reports_the_accounts_status_and_role() {
        let mut s = standing(0, 0);
        s.company_status = Status::Disabled;
        let identity = judge(&claims(None, None), Some(s)).expect("current");
        assert_eq!(
            identity.login().map(|login| login.status),
            Some(Status::DisabledDueToCompany)
        );
        let mut s = standing(0, 0);
        s.user_status = Status::Disabled;
        let identity = judge(&claims(None, None), Some(s)).expect("current");
        assert_eq!(
            identity.login().map(|login| login.status),
            Some(Status::DisabledDueToUser)
        );
        let mut s = standing(0, 0);
        s.role = Role::PortalReadonlyOperator;
        let identity = judge(&claims(None, None), Some(s)).expect("current");
        assert!(identity.is_read_only());
    }
}
