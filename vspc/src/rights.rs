//! Who may act on whom: VSPC's roles as a rank, a reach, and one rule that nobody makes a
//! principal or credential stronger than themselves.
//!
//! | role | reach | manages | reads |
//! |---|---|---|---|
//! | `PortalAdministrator` | every company | everyone, companies | everyone |
//! | `PortalOperator` | every company | users with company roles, companies | everyone |
//! | `PortalReadonlyOperator` | every company | themselves | everyone |
//! | `CompanyOwner` | own company | its users but other owners | its users |
//! | `CompanyAdministrator` | own company | its location administrators and users | its users |
//! | `CompanyLocationAdministrator` | own company | its location users, auditors, subtenants | the same |
//! | `CompanyLocationUser`, `CompanyInvoiceAuditor`, `CompanySubtenant` | own company | themselves | themselves |
//!
//! Everyone manages their own keys and profile. Read-only roles hold read-only credentials only,
//! so whatever they may "manage" they can only read.

use tower_api_key::store::{Role, User};
use tower_api_key::Scopes;

/// What a caller wants to do with a user or company.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// Read it.
    Read,
    /// Change it, or (for a user) create, change or delete their keys.
    Manage,
}

/// Higher ranks may act on lower ones; equal ranks only on themselves (portal administrators
/// excepted).
fn rank(role: Role) -> u8 {
    match role {
        Role::PortalAdministrator => 7,
        Role::PortalOperator => 6,
        Role::PortalReadonlyOperator => 5,
        Role::CompanyOwner => 4,
        Role::CompanyAdministrator => 3,
        Role::CompanyLocationAdministrator => 2,
        Role::CompanyLocationUser | Role::CompanyInvoiceAuditor | Role::CompanySubtenant => 1,
        // A role this server does not know acts on nobody.
        _ => 0,
    }
}

/// Whether `caller` reaches `company_id` at all: portal roles reach every company.
fn reaches(caller: &User, company_id: &str) -> bool {
    caller.role.is_portal() || caller.company_id == company_id
}

/// Whether `caller` may act on the user `target`.
pub(crate) fn on_user(caller: &User, target: &User, act: Act) -> bool {
    if caller.uid == target.uid || caller.role == Role::PortalAdministrator {
        return true;
    }
    if !reaches(caller, &target.company_id) {
        return false;
    }
    let above = rank(caller.role) > rank(target.role);
    match act {
        // A read-only role changes nothing; portal users are managed by portal administrators.
        Act::Manage => above && !caller.role.is_read_only() && !target.role.is_portal(),
        // Portal roles see everyone; company owners and administrators their company's users.
        Act::Read => {
            above
                || caller.role.is_portal()
                || matches!(caller.role, Role::CompanyOwner | Role::CompanyAdministrator)
        }
    }
}

/// Whether `caller` may act on the company `company_id`: managing is for portal administrators
/// and operators, reading for every portal role and the company's own users.
pub(crate) fn on_company(caller: &User, company_id: &str, act: Act) -> bool {
    match act {
        Act::Manage => matches!(
            caller.role,
            Role::PortalAdministrator | Role::PortalOperator
        ),
        Act::Read => reaches(caller, company_id),
    }
}

/// Whether `caller` may create a user with `role` in `company_id`.
pub(crate) fn may_assign(caller: &User, role: Role, company_id: &str) -> bool {
    if caller.role == Role::PortalAdministrator {
        return true;
    }
    !caller.role.is_read_only()
        && !role.is_portal()
        && reaches(caller, company_id)
        && rank(role) < rank(caller.role)
}

/// Whether a credential holding `scopes` (read-only or not) may create a principal whose own
/// credentials will hold `granted` and be read-only or not: never one that opens more.
pub(crate) fn credential_covers(
    scopes: Scopes,
    read_only: bool,
    granted: Scopes,
    granted_read_only: bool,
) -> bool {
    scopes.contains_all(granted) && (granted_read_only || !read_only)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_api_key::store::UserProfile;
    use tower_api_key::Scope;
    use tower_api_key::Status;

    fn user(uid: &str, role: Role, company: &str) -> User {
        User {
            uid: uid.into(),
            user_name: uid.into(),
            password_hash: String::new(),
            role,
            company_id: company.into(),
            status: Status::Enabled,
            created: time::OffsetDateTime::UNIX_EPOCH,
            profile: UserProfile::default(),
            token_generation: 0,
        }
    }

    #[test]
    fn each_role_manages_only_what_it_outranks_in_its_reach() {
        use Role::*;
        let portal = "p";
        let acme = "acme";
        let beta = "beta";
        // (caller role, caller company, target role, target company, manage, read)
        let table = [
            (
                PortalAdministrator,
                portal,
                PortalAdministrator,
                portal,
                true,
                true,
            ),
            (
                PortalOperator,
                portal,
                PortalAdministrator,
                portal,
                false,
                true,
            ),
            (PortalOperator, portal, PortalOperator, portal, false, true),
            (PortalOperator, portal, CompanyOwner, acme, true, true),
            (
                PortalOperator,
                portal,
                PortalReadonlyOperator,
                portal,
                false,
                true,
            ),
            (
                PortalReadonlyOperator,
                portal,
                CompanyLocationUser,
                acme,
                false,
                true,
            ),
            (
                PortalReadonlyOperator,
                portal,
                PortalOperator,
                portal,
                false,
                true,
            ),
            (CompanyOwner, acme, CompanyAdministrator, acme, true, true),
            (CompanyOwner, acme, CompanyOwner, acme, false, true),
            (CompanyOwner, acme, CompanyLocationUser, beta, false, false),
            (CompanyOwner, acme, PortalOperator, portal, false, false),
            (
                CompanyAdministrator,
                acme,
                CompanyLocationUser,
                acme,
                true,
                true,
            ),
            (
                CompanyAdministrator,
                acme,
                CompanyAdministrator,
                acme,
                false,
                true,
            ),
            (CompanyAdministrator, acme, CompanyOwner, acme, false, true),
            (
                CompanyLocationAdministrator,
                acme,
                CompanyLocationUser,
                acme,
                true,
                true,
            ),
            (
                CompanyLocationAdministrator,
                acme,
                CompanyAdministrator,
                acme,
                false,
                false,
            ),
            (
                CompanyInvoiceAuditor,
                acme,
                CompanyLocationUser,
                acme,
                false,
                false,
            ),
            (
                CompanyLocationUser,
                acme,
                CompanyLocationUser,
                acme,
                false,
                false,
            ),
            (
                CompanySubtenant,
                acme,
                CompanyLocationUser,
                acme,
                false,
                false,
            ),
        ];
        for (caller_role, caller_company, target_role, target_company, manage, read) in table {
            let caller = user("caller", caller_role, caller_company);
            let target = user("target", target_role, target_company);
            let case =
                format!("{caller_role:?}@{caller_company} on {target_role:?}@{target_company}");
            assert_eq!(
                on_user(&caller, &target, Act::Manage),
                manage,
                "manage: {case}"
            );
            assert_eq!(on_user(&caller, &target, Act::Read), read, "read: {case}");
        }
        for role in Role::ALL {
            let me = user("me", role, acme);
            assert!(
                on_user(&me, &me, Act::Manage),
                "{role:?} manages themselves"
            );
        }
    }

    #[test]
    fn nobody_creates_a_role_at_or_above_their_own_except_portal_administrators() {
        use Role::*;
        let owner = user("o", CompanyOwner, "acme");
        assert!(may_assign(&owner, CompanyAdministrator, "acme"));
        assert!(!may_assign(&owner, CompanyOwner, "acme"));
        assert!(!may_assign(&owner, CompanyLocationUser, "beta"));
        assert!(!may_assign(&owner, PortalReadonlyOperator, "acme"));
        let admin = user("a", CompanyAdministrator, "acme");
        assert!(may_assign(&admin, CompanyLocationUser, "acme"));
        assert!(!may_assign(&admin, CompanyAdministrator, "acme"));
        let operator = user("op", PortalOperator, "p");
        assert!(may_assign(&operator, CompanyOwner, "acme"));
        assert!(!may_assign(&operator, PortalOperator, "p"));
        assert!(!may_assign(&operator, PortalReadonlyOperator, "p"));
        let reader = user("r", PortalReadonlyOperator, "p");
        assert!(!may_assign(&reader, CompanyLocationUser, "acme"));
        let root = user("root", PortalAdministrator, "p");
        assert!(may_assign(&root, PortalAdministrator, "p"));
        for role in Role::ALL {
            let me = user("me", role, "acme");
            if role != PortalAdministrator {
                assert!(!may_assign(&me, role, "acme"), "{role:?} creates its peer");
            }
        }
    }

    #[test]
    fn companies_are_managed_by_portal_administrators_and_operators_only() {
        for role in Role::ALL {
            let caller = user("c", role, "acme");
            let manage = matches!(role, Role::PortalAdministrator | Role::PortalOperator);
            assert_eq!(on_company(&caller, "beta", Act::Manage), manage, "{role:?}");
            assert!(
                on_company(&caller, "acme", Act::Read),
                "{role:?} reads its own"
            );
            assert_eq!(on_company(&caller, "beta", Act::Read), role.is_portal());
        }
    }

    #[test]
    fn a_credential_never_creates_one_that_opens_more() {
        let rest = Scopes::from([Scope::REST]);
        let all = Scopes::from([Scope::UI, Scope::REST, Scope::INTEGRATION]);
        assert!(credential_covers(all, false, all, false));
        assert!(credential_covers(all, false, rest, true));
        assert!(!credential_covers(rest, false, all, false));
        assert!(!credential_covers(all, true, all, false));
        assert!(credential_covers(all, true, all, true));
    }
}
