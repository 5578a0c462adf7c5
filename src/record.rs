//! A token's metadata as the domain knows it, and the status rules.

use std::{sync::Arc, time::Duration};

use crate::{cidr::Allowlist, clock::Time, id::TokenId, token::TokenHash};

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

impl Status {
    /// The status at `now` of a token revoked or not, expiring at
    /// `expire_time`: revocation wins over expiry.
    #[inline]
    pub fn of(revoked: bool, expire_time: Option<Time>, now: Time) -> Status {
        if revoked {
            Status::Revoked
        } else if expire_time.is_some_and(|t| t <= now) {
            Status::Expired
        } else {
            Status::Active
        }
    }
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
    pub hint: Box<str>,
    /// Human-readable name.
    pub name: Box<str>,
    /// Owner (team, user, service); shared by all of its tokens in the index.
    pub owner: Arc<str>,
    /// Granted scopes, without duplicates, in the order given.
    pub scopes: Scopes,
    /// Free-form labels.
    pub labels: Labels,
    /// When the token was created.
    pub create_time: Time,
    /// The TTL it was issued with; a rotation gives the successor the same.
    pub ttl: Option<Duration>,
    /// When it stops verifying; `None` = never. A rotation with a grace
    /// period brings this forward to the end of the grace.
    pub expire_time: Option<Time>,
    /// Before this it does not verify yet (its status is still active).
    pub not_before: Option<Time>,
    /// The networks it may be presented from; empty = anywhere.
    pub allowed_cidrs: Allowlist,
    /// When it was last changed (revoked, rotated, updated); its create
    /// time until then.
    pub update_time: Time,
    /// When it was revoked, if it was.
    pub revoke_time: Option<Time>,
    /// Why it was revoked ("" if not, or if no reason was given).
    pub revoke_reason: Box<str>,
    /// The token this one replaced by rotation.
    pub rotated_from: Option<TokenId>,
    /// The token that replaced this one by rotation.
    pub rotated_to: Option<TokenId>,
    /// How many times the record was written: 1 when issued, one more with
    /// each change. A shared store writes a change only over the version it
    /// was derived from, and the index keeps the highest version it saw, so
    /// changes can arrive twice or out of order from a change feed.
    pub version: u64,
}

impl TokenRecord {
    /// The status at `now`. Revocation wins over expiry.
    #[inline]
    pub fn status_at(&self, now: Time) -> Status {
        Status::of(self.revoke_time.is_some(), self.expire_time, now)
    }

    /// A copy to change and write back: the same record, one version on.
    pub fn revised(&self) -> TokenRecord {
        TokenRecord { version: self.version + 1, ..self.clone() }
    }

    /// [`TokenRecord::revised`], changed at `now`.
    pub fn revised_at(&self, now: Time) -> TokenRecord {
        TokenRecord { update_time: now, ..self.revised() }
    }

    /// Whether the token has come into force at `now` (its not-before).
    #[inline]
    pub fn has_started(&self, now: Time) -> bool {
        self.not_before.is_none_or(|t| t <= now)
    }

    /// Whether the token grants every scope in `required`.
    #[inline]
    pub fn has_scopes<S: AsRef<str>>(&self, required: &[S]) -> bool {
        self.scopes.contains_all(required)
    }
}

/// A token's scopes, without duplicates, in the order given.
///
/// Shared (`Arc`) so the index can keep one copy of each distinct set: a
/// million tokens typically carry a handful of different scope sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scopes(Arc<[Box<str>]>);

impl Scopes {
    /// The scopes in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(|s| &**s)
    }

    /// Whether `scope` is granted.
    #[inline]
    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| &**s == scope)
    }

    /// Whether every scope in `required` is granted.
    #[inline]
    pub fn contains_all<S: AsRef<str>>(&self, required: &[S]) -> bool {
        required.iter().all(|r| self.contains(r.as_ref()))
    }

    /// Number of scopes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether both share one allocation (the index interns scope sets).
    pub fn shares_allocation(&self, other: &Scopes) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The scopes separated by single spaces (scopes hold no spaces).
    pub fn joined(&self) -> String {
        self.0.join(" ")
    }

    /// Owned copies, for a protobuf message.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

impl FromIterator<String> for Scopes {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Scopes {
        Scopes(iter.into_iter().map(String::into_boxed_str).collect())
    }
}

/// A token's labels, sorted by key with unique keys.
///
/// A shared slice rather than a map: tokens carry few labels, a `BTreeMap`'s
/// first node alone costs about 550 bytes, and the index keeps one copy of
/// each distinct label set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Labels(Arc<[(Box<str>, Box<str>)]>);

impl Labels {
    /// The labels in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &*self.0[i].1)
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether both share one allocation (the index interns label sets).
    pub fn shares_allocation(&self, other: &Labels) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl FromIterator<(String, String)> for Labels {
    /// Sorts by key; of repeated keys the last wins (as in a map).
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Labels {
        let mut v: Vec<(Box<str>, Box<str>)> = iter.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        v.reverse();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|later, earlier| later.0 == earlier.0);
        Labels(v.into())
    }
}

/// A plain active token record for unit tests.
#[cfg(test)]
pub(crate) fn sample(id: TokenId, secret: &crate::token::Secret, owner: &str) -> TokenRecord {
    TokenRecord {
        id,
        hash: secret.hash(),
        hint: secret.hint().into(),
        name: "n".into(),
        owner: owner.into(),
        scopes: Scopes::default(),
        labels: Labels::default(),
        create_time: Time(0),
        ttl: None,
        expire_time: None,
        not_before: None,
        allowed_cidrs: Allowlist::default(),
        update_time: Time(0),
        revoke_time: None,
        revoke_reason: "".into(),
        rotated_from: None,
        rotated_to: None,
        version: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::IdGenerator;

    fn record() -> TokenRecord {
        let mut r = sample(IdGenerator::default().next(Time(0)), &crate::token::Secret::generate("tk"), "o");
        r.scopes = ["a".to_string(), "b".to_string()].into_iter().collect();
        r
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
    fn labels_are_sorted_unique_and_searchable() {
        let l: Labels =
            [("b", "1"), ("a", "2"), ("b", "3")].map(|(k, v)| (k.to_string(), v.to_string())).into_iter().collect();
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![("a", "2"), ("b", "3")]);
        assert_eq!(l.get("b"), Some("3"));
        assert_eq!(l.get("c"), None);
        assert_eq!(l.len(), 2);
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
