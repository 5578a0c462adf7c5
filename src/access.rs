//! What an admin-plane caller may do, read from its token's reserved scopes.
//!
//! | scope                  | calls                               | tokens           |
//! |------------------------|-------------------------------------|------------------|
//! | `tokend.admin`         | every TokenService call             | all              |
//! | `tokend.admin:<owner>` | every TokenService call             | that owner's     |
//! | `tokend.read`          | Get, List, ListAuditEvents          | all              |
//! | `tokend.read:<owner>`  | Get, List, ListAuditEvents          | that owner's     |
//!
//! A token may carry several; each adds to the others (`tokend.admin:a`
//! with `tokend.read` writes a's tokens and reads everyone's). Writing
//! implies reading. A caller limited to some owners sees another owner's
//! token as not found — it does not learn that the id exists — and may not
//! hand out admin power: a token it issues, rotates or updates may carry no
//! `tokend.*` scope.

use std::{net::IpAddr, sync::Arc};

use crate::id::TokenId;

/// The reserved scope that grants the whole admin plane.
pub const ADMIN_SCOPE: &str = "tokend.admin";
/// The reserved scope that grants reading the admin plane.
pub const READ_SCOPE: &str = "tokend.read";
/// Every reserved scope starts with this.
pub const RESERVED_PREFIX: &str = "tokend.";

/// Which tokens a grant covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Reach {
    /// None.
    #[default]
    Nothing,
    /// Tokens of these owners.
    Owners(Vec<Arc<str>>),
    /// Every token.
    All,
}

impl Reach {
    /// Whether a token of `owner` is covered.
    pub fn covers(&self, owner: &str) -> bool {
        match self {
            Reach::Nothing => false,
            Reach::Owners(owners) => owners.iter().any(|o| **o == *owner),
            Reach::All => true,
        }
    }

    /// Whether nothing is covered.
    pub fn is_nothing(&self) -> bool {
        *self == Reach::Nothing
    }

    /// The owners covered, unless every owner is.
    pub fn owners(&self) -> Option<&[Arc<str>]> {
        match self {
            Reach::Nothing => Some(&[]),
            Reach::Owners(owners) => Some(owners),
            Reach::All => None,
        }
    }

    /// Adds `owner`'s tokens (`None`: every token).
    fn widen(&mut self, owner: Option<&str>) {
        match (&mut *self, owner) {
            (Reach::All, _) => {}
            (_, None) => *self = Reach::All,
            (Reach::Nothing, Some(owner)) => *self = Reach::Owners(vec![owner.into()]),
            (Reach::Owners(owners), Some(owner)) => {
                if !owners.iter().any(|o| **o == *owner) {
                    owners.push(owner.into());
                }
            }
        }
    }
}

/// What a token's scopes allow on the admin plane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Tokens it may change (Issue, Revoke, Rotate, Update).
    pub write: Reach,
    /// Tokens it may see (Get, List, ListAuditEvents); includes `write`.
    pub read: Reach,
}

impl Access {
    /// The access `scopes` grant. Unreserved scopes grant nothing, and so do
    /// malformed reserved ones (`tokend.admin:` with no owner).
    pub fn of_scopes<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Access {
        let mut access = Access::default();
        for scope in scopes {
            let (kind, owner) = match scope.split_once(':') {
                Some((kind, owner)) if !owner.is_empty() => (kind, Some(owner)),
                Some(_) => continue,
                None => (scope, None),
            };
            match kind {
                ADMIN_SCOPE => {
                    access.write.widen(owner);
                    access.read.widen(owner);
                }
                READ_SCOPE => access.read.widen(owner),
                _ => {}
            }
        }
        access
    }

    /// Whether the token has any admin-plane access at all.
    pub fn is_none(&self) -> bool {
        self.read.is_nothing()
    }

    /// Whether this is the unrestricted admin (`tokend.admin`), the only
    /// kind that may hand out `tokend.*` scopes.
    pub fn is_full_admin(&self) -> bool {
        self.write == Reach::All
    }
}

/// Whether `scope` is one of tokend's own (`tokend.…`).
pub fn is_reserved(scope: &str) -> bool {
    scope.starts_with(RESERVED_PREFIX)
}

/// Who makes an admin call: what the access checks decide on and what the
/// audit trail records.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Id of the token presented.
    pub token_id: TokenId,
    /// What its scopes allow.
    pub access: Access,
    /// The caller's address, as the connection saw it.
    pub peer: Option<IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(names: &[&str]) -> Reach {
        Reach::Owners(names.iter().map(|n| Arc::from(*n)).collect())
    }

    #[test]
    fn scopes_grant_what_the_table_says() {
        let full = Access::of_scopes(["tokend.admin"]);
        assert_eq!(full, Access { write: Reach::All, read: Reach::All });
        assert!(full.is_full_admin());

        let team = Access::of_scopes(["deploy", "tokend.admin:team-a", "tokend.admin:team-a"]);
        assert_eq!(team, Access { write: owners(&["team-a"]), read: owners(&["team-a"]) });
        assert!(!team.is_full_admin());
        assert!(team.write.covers("team-a") && !team.write.covers("team-b") && !team.write.covers("team"));

        let reader = Access::of_scopes(["tokend.read"]);
        assert_eq!(reader, Access { write: Reach::Nothing, read: Reach::All });
        assert!(!reader.is_none());

        let mixed = Access::of_scopes(["tokend.read:b", "tokend.admin:a", "tokend.read"]);
        assert_eq!(mixed, Access { write: owners(&["a"]), read: Reach::All });
        let two = Access::of_scopes(["tokend.read:b", "tokend.admin:a"]);
        assert_eq!(two.read, owners(&["b", "a"]));
        assert_eq!(Access::of_scopes(["tokend.admin:a", "tokend.admin"]).write, Reach::All);
    }

    #[test]
    fn other_scopes_grant_nothing() {
        for scopes in [&[][..], &["read", "tokend.admins", "tokend.admin:", "tokend.read:", "tokend.other"]] {
            let access = Access::of_scopes(scopes.iter().copied());
            assert!(access.is_none(), "{scopes:?}");
            assert!(access.write.is_nothing());
        }
        assert!(is_reserved("tokend.anything") && !is_reserved("tokendx") && !is_reserved("x.tokend.admin"));
    }
}
