//! A token's metadata as the domain knows it, and the status rules.

use std::{collections::BTreeMap, time::Duration};

use crate::{clock::Time, id::TokenId, token::TokenHash};

/// The reserved scope that grants the admin plane (TokenService).
pub const ADMIN_SCOPE: &str = "tokend.admin";

/// Revoke reason recorded when a rotation with no grace period revokes the
/// previous token.
pub const ROTATED_REASON: &str = "rotated";

/// Where a token is in its life, at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Verifies (subject to scopes).
    Active,
    /// Past its expiry time.
    Expired,
    /// Revoked.
    Revoked,
}

/// Everything tokend keeps about one token, except its last-used time (which
/// changes on every use and so lives beside it, see `index::Entry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Time-ordered id.
    pub id: TokenId,
    /// blake3 of the token: the only trace of the secret.
    pub hash: TokenHash,
    /// Masked hint shown in lists.
    pub hint: String,
    /// Human-readable name.
    pub name: String,
    /// Owner (team, user, service).
    pub owner: String,
    /// Granted scopes, without duplicates, in the order given.
    pub scopes: Vec<String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// When the token was created.
    pub create_time: Time,
    /// The TTL it was issued with; a rotation gives the successor the same.
    pub ttl: Option<Duration>,
    /// When it stops verifying; `None` = never. A rotation with a grace
    /// period brings this forward to the end of the grace.
    pub expire_time: Option<Time>,
    /// When it was revoked, if it was.
    pub revoke_time: Option<Time>,
    /// Why it was revoked ("" if not, or if no reason was given).
    pub revoke_reason: String,
    /// The token this one replaced by rotation.
    pub rotated_from: Option<TokenId>,
    /// The token that replaced this one by rotation.
    pub rotated_to: Option<TokenId>,
}

impl TokenRecord {
    /// The status at `now`. Revocation wins over expiry.
    #[inline]
    pub fn status_at(&self, now: Time) -> Status {
        if self.revoke_time.is_some() {
            Status::Revoked
        } else if self.expire_time.is_some_and(|t| t <= now) {
            Status::Expired
        } else {
            Status::Active
        }
    }

    /// Whether the token grants every scope in `required`.
    #[inline]
    pub fn has_scopes<S: AsRef<str>>(&self, required: &[S]) -> bool {
        required.iter().all(|r| self.scopes.iter().any(|s| s == r.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::IdGenerator;

    fn record() -> TokenRecord {
        TokenRecord {
            id: IdGenerator::default().next(Time(0)),
            hash: TokenHash([0; 32]),
            hint: String::new(),
            name: "n".into(),
            owner: "o".into(),
            scopes: vec!["a".into(), "b".into()],
            labels: BTreeMap::new(),
            create_time: Time(0),
            ttl: None,
            expire_time: None,
            revoke_time: None,
            revoke_reason: String::new(),
            rotated_from: None,
            rotated_to: None,
        }
    }

    #[test]
    fn status_rules() {
        let mut r = record();
        assert_eq!(r.status_at(Time(i64::MAX)), Status::Active);
        r.expire_time = Some(Time(10));
        assert_eq!(r.status_at(Time(9)), Status::Active);
        assert_eq!(r.status_at(Time(10)), Status::Expired);
        r.revoke_time = Some(Time(5));
        assert_eq!(r.status_at(Time(0)), Status::Revoked);
        assert_eq!(r.status_at(Time(11)), Status::Revoked);
    }

    #[test]
    fn scope_rules() {
        let r = record();
        assert!(r.has_scopes::<&str>(&[]));
        assert!(r.has_scopes(&["a"]));
        assert!(r.has_scopes(&["b", "a"]));
        assert!(!r.has_scopes(&["a", "c"]));
    }
}
