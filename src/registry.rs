//! The rules of the admin plane: issue, get, list, revoke, rotate, and the
//! bootstrap of the first admin token.
//!
//! Every mutation runs the same three steps:
//!
//! 1. under `write_lock` (a plain mutex, never held across an `.await`):
//!    read the current state from the index, check the rules, build the new
//!    records, apply them atomically to the store (in memory, not yet
//!    durable) and to the index — so a revocation is visible to Verify from
//!    here on;
//! 2. outside the lock, wait for a shared flush ([`Committer::sync`]);
//! 3. only then answer. An acknowledged change is durable.
//!
//! Serialising step 1 makes quotas exact and each token's history linear;
//! keeping the flush outside it lets concurrent writers share one flush.

use std::{sync::Arc, time::Duration};

use crate::{
    clock::{Clock, Time},
    commit::{Committer, FlushObserver},
    error::Error,
    id::{IdGenerator, TokenId},
    index::{Entry, Index, ListQuery, Page},
    record::{ADMIN_SCOPE, ROTATED_REASON, Status, TokenRecord},
    spec::TokenSpec,
    store::{Change, Store, StoreError},
    token::Secret,
};

/// Settings of the admin rules.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Prefix of newly generated tokens.
    pub token_prefix: String,
    /// Most active tokens one owner may hold; 0 = unlimited.
    pub max_tokens_per_owner: u32,
}

/// A token created by Issue or Rotate: the only time its secret exists.
#[derive(Debug)]
pub struct Created {
    /// The full token, to hand to the caller once.
    pub secret: Secret,
    /// The new token.
    pub token: Arc<Entry>,
}

/// The admin plane's domain logic.
pub struct Registry {
    store: Arc<dyn Store>,
    index: Arc<Index>,
    committer: Committer,
    clock: Clock,
    ids: IdGenerator,
    options: RegistryOptions,
    write_lock: std::sync::Mutex<()>,
}

impl Registry {
    /// A registry over `store`, whose contents `index` was loaded from.
    pub fn new(
        store: Arc<dyn Store>,
        index: Arc<Index>,
        clock: Clock,
        options: RegistryOptions,
        on_flush: FlushObserver,
    ) -> Registry {
        Registry {
            committer: Committer::start(store.clone(), on_flush),
            ids: IdGenerator::starting_after(index.newest_id()),
            store,
            index,
            clock,
            options,
            write_lock: std::sync::Mutex::new(()),
        }
    }

    /// The index this registry writes through.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// The current time by this registry's clock.
    pub fn now(&self) -> Time {
        self.clock.now()
    }

    /// The group committer (for flush statistics).
    pub fn committer(&self) -> &Committer {
        &self.committer
    }

    /// Creates the first admin token unless one was ever created. Uses
    /// `given` if the operator supplied one, else generates one and returns
    /// it so it can be shown once.
    pub async fn bootstrap(&self, already: bool, given: Option<Secret>) -> Result<Option<Created>, Error> {
        if already {
            return Ok(None);
        }
        let spec = TokenSpec {
            name: "bootstrap-admin".into(),
            owner: "tokend".into(),
            scopes: vec![ADMIN_SCOPE.into()],
            labels: Default::default(),
            ttl: None,
        };
        let generated = given.is_none();
        let secret = given.unwrap_or_else(|| Secret::generate(&self.options.token_prefix));
        let token = {
            let _guard = self.lock();
            let record = self.new_record(&secret, spec, self.clock.now(), None);
            self.write_locked(vec![Change::Put(record.clone()), Change::Bootstrapped])?;
            self.entry(record.id)?
        };
        self.committer.sync().await?;
        Ok(generated.then_some(Created { secret, token }))
    }

    /// Issues a new token.
    pub async fn issue(&self, spec: TokenSpec) -> Result<Created, Error> {
        let secret = Secret::generate(&self.options.token_prefix);
        let token = {
            let _guard = self.lock();
            let now = self.clock.now();
            let limit = self.options.max_tokens_per_owner;
            if limit > 0 && self.index.count_active(&spec.owner, now) >= limit as usize {
                return Err(Error::QuotaExceeded { limit });
            }
            let record = self.new_record(&secret, spec, now, None);
            self.write_locked(vec![Change::Put(record.clone())])?;
            self.entry(record.id)?
        };
        self.committer.sync().await?;
        Ok(Created { secret, token })
    }

    /// One token.
    pub fn get(&self, id: TokenId) -> Result<Arc<Entry>, Error> {
        self.entry(id)
    }

    /// One page of tokens (see [`Index::list`]).
    pub fn list(&self, owner: Option<&str>, status: Option<Status>, after: Option<TokenId>, limit: usize) -> Page {
        self.index.list(ListQuery { owner, status, after, limit, now: self.clock.now() })
    }

    /// Revokes a token. Idempotent: a revoked token keeps its first revoke
    /// time and reason.
    pub async fn revoke(&self, id: TokenId, reason: String) -> Result<Arc<Entry>, Error> {
        let entry = {
            let _guard = self.lock();
            let current = self.entry(id)?;
            if current.record.revoke_time.is_some() {
                current
            } else {
                let mut record = current.record.clone();
                record.revoke_time = Some(self.clock.now());
                record.revoke_reason = reason.into();
                self.write_locked(vec![Change::Put(record)])?;
                self.entry(id)?
            }
        };
        // Even a repeated revoke waits: the first may not be durable yet, and
        // an OK must never acknowledge a change a crash could undo.
        self.committer.sync().await?;
        Ok(entry)
    }

    /// Replaces a token with a new one (same name, owner, scopes, labels and
    /// TTL length). The old token keeps working for `grace`, or is revoked at
    /// once if `grace` is `None`. Returns the new token and the old one.
    pub async fn rotate(&self, id: TokenId, grace: Option<Duration>) -> Result<(Created, Arc<Entry>), Error> {
        let secret = Secret::generate(&self.options.token_prefix);
        let (token, previous) = {
            let _guard = self.lock();
            let now = self.clock.now();
            let old = self.entry(id)?;
            match old.record.status_at(now) {
                Status::Revoked => return Err(Error::FailedPrecondition { id, why: "is revoked" }),
                Status::Expired => return Err(Error::FailedPrecondition { id, why: "has expired" }),
                Status::Active => {}
            }
            if old.record.rotated_to.is_some() {
                return Err(Error::FailedPrecondition { id, why: "was already rotated; rotate its newest successor" });
            }
            let r = &old.record;
            let spec = TokenSpec {
                name: r.name.to_string(),
                owner: r.owner.to_string(),
                scopes: r.scopes.to_vec(),
                labels: r.labels.clone(),
                ttl: r.ttl,
            };
            let new = self.new_record(&secret, spec, now, Some(id));
            let mut old_record = old.record.clone();
            old_record.rotated_to = Some(new.id);
            match grace {
                None => {
                    old_record.revoke_time = Some(now);
                    old_record.revoke_reason = ROTATED_REASON.into();
                }
                Some(grace) => {
                    let end = now.saturating_add(grace);
                    old_record.expire_time = Some(old_record.expire_time.map_or(end, |t| t.min(end)));
                }
            }
            self.write_locked(vec![Change::Put(new.clone()), Change::Put(old_record)])?;
            (self.entry(new.id)?, self.entry(id)?)
        };
        self.committer.sync().await?;
        Ok((Created { secret, token }, previous))
    }

    /// Persists the last-used times recorded since the previous call and
    /// makes them durable. Returns how many were written.
    pub async fn persist_last_used(&self) -> Result<usize, Error> {
        let times = self.index.take_last_used();
        if times.is_empty() {
            return Ok(0);
        }
        self.store.record_last_used(&times)?;
        self.committer.sync().await?;
        Ok(times.len())
    }

    /// Final flush at shutdown: last-used times, then the store. Blocking.
    pub fn close(&self) -> Result<(), StoreError> {
        let times = self.index.take_last_used();
        let result = self.store.record_last_used(&times);
        self.committer.close();
        result
    }

    fn new_record(&self, secret: &Secret, spec: TokenSpec, now: Time, rotated_from: Option<TokenId>) -> TokenRecord {
        TokenRecord {
            id: self.ids.next(now),
            hash: secret.hash(),
            hint: secret.hint().into(),
            name: spec.name.into(),
            owner: spec.owner.into(),
            scopes: spec.scopes.into_iter().collect(),
            labels: spec.labels,
            create_time: now,
            ttl: spec.ttl,
            expire_time: spec.ttl.map(|ttl| now.saturating_add(ttl)),
            revoke_time: None,
            revoke_reason: "".into(),
            rotated_from,
            rotated_to: None,
        }
    }

    /// Store first, then index: if the store refuses, nothing changed.
    fn write_locked(&self, changes: Vec<Change>) -> Result<(), Error> {
        self.store.apply(&changes)?;
        self.index.apply(&changes);
        Ok(())
    }

    fn entry(&self, id: TokenId) -> Result<Arc<Entry>, Error> {
        self.index.get(id).ok_or(Error::NotFound(id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }
}
