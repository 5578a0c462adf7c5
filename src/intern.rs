//! One shared copy of each owner name, scope set, label set and allowlist.
//!
//! Tokens repeat a few of each: a million tokens typically carry a handful
//! of scope sets and label sets and far fewer owners than tokens. Sharing
//! them is much of what keeps ten million tokens within a few GiB. The
//! index interns every record it holds; at start-up the store's decoder
//! interns as it reads (`store::Decoder`) and hands its interner over, so
//! the index and the loaded records share one set of copies.

use std::{collections::HashSet, hash::Hash, sync::Arc};

use crate::{
    cidr::Allowlist,
    record::{Labels, Scopes, TokenRecord},
};

/// The shared copies.
#[derive(Debug, Default)]
pub struct Interner {
    owners: HashSet<Arc<str>>,
    scopes: HashSet<Scopes>,
    labels: HashSet<Labels>,
    allowlists: HashSet<Allowlist>,
}

impl Interner {
    /// The shared copy of `owner`.
    pub fn owner(&mut self, owner: &str) -> Arc<str> {
        if let Some(shared) = self.owners.get(owner) {
            return shared.clone();
        }
        let shared: Arc<str> = owner.into();
        self.owners.insert(shared.clone());
        shared
    }

    /// The shared copy of `scopes`.
    pub fn scopes(&mut self, scopes: Scopes) -> Scopes {
        shared(&mut self.scopes, scopes)
    }

    /// The shared copy of `labels`.
    pub fn labels(&mut self, labels: Labels) -> Labels {
        shared(&mut self.labels, labels)
    }

    /// The shared copy of `allowlist`.
    pub fn allowlist(&mut self, allowlist: Allowlist) -> Allowlist {
        // The empty list holds no allocation to share.
        if allowlist.is_empty() { allowlist } else { shared(&mut self.allowlists, allowlist) }
    }

    /// Replaces the record's owner, scopes, labels and allowlist by shared
    /// copies.
    pub fn record(&mut self, record: &mut TokenRecord) {
        record.owner = shared(&mut self.owners, record.owner.clone());
        record.scopes = self.scopes(std::mem::take(&mut record.scopes));
        record.labels = self.labels(std::mem::take(&mut record.labels));
        record.allowed_cidrs = self.allowlist(std::mem::take(&mut record.allowed_cidrs));
    }
}

fn shared<T: Clone + Eq + Hash>(set: &mut HashSet<T>, value: T) -> T {
    match set.get(&value) {
        Some(shared) => shared.clone(),
        None => {
            set.insert(value.clone());
            value
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_allocation() {
        let mut interner = Interner::default();
        let scopes = || ["a".to_string(), "b".to_string()].into_iter().collect::<Scopes>();
        let labels = || [("k".to_string(), "v".to_string())].into_iter().collect::<Labels>();
        let cidrs = || Allowlist::new(["10.0.0.0/8".parse().unwrap()]);
        let (s1, s2) = (interner.scopes(scopes()), interner.scopes(scopes()));
        assert!(s1.shares_allocation(&s2));
        assert_eq!(s1, scopes());
        let (l1, l2) = (interner.labels(labels()), interner.labels(labels()));
        assert!(l1.shares_allocation(&l2));
        let (c1, c2) = (interner.allowlist(cidrs()), interner.allowlist(cidrs()));
        assert!(c1.shares_allocation(&c2));
        assert!(Arc::ptr_eq(&interner.owner("o"), &interner.owner("o")));
        assert!(!Arc::ptr_eq(&interner.owner("o"), &interner.owner("p")));
        // Different values stay different.
        let other = interner.scopes(["a".to_string()].into_iter().collect());
        assert!(!other.shares_allocation(&s1));
        assert_eq!(other.len(), 1);
    }
}
