//! The rules of the admin plane: issue, get, list, revoke, rotate, update,
//! the bootstrap of the first admin token, who may do which (`access`), and
//! the audit trail (`audit`).
//!
//! Every change carries its audit event into the same store batch, so an
//! acknowledged change always has its event; refusals are appended alone.
//!
//! Every mutation runs the same three steps:
//!
//! 1. on the blocking pool, under `write_lock` (a plain mutex): read the
//!    current state from the index, check the rules, build the new records,
//!    apply them atomically to the store (in memory, not yet durable) and to
//!    the index — so a revocation is visible to Verify from here on;
//! 2. outside the lock, wait for a shared flush ([`Committer::sync`]);
//! 3. only then answer. An acknowledged change is durable.
//!
//! Serialising step 1 makes quotas exact and each token's history linear;
//! keeping the flush outside it lets concurrent writers share one flush.
//! A shared store (PostgreSQL) decides those rules in its own transactions
//! (`Store::decides_rules`), so there step 1 runs without the mutex and
//! concurrent writers overlap their commits.
//! Step 1 runs on the blocking pool because it may wait: for the mutex
//! behind other writers, and for sled to page a tree node in from disk. An
//! async worker waiting there would stall every Verify queued behind it.
//!
//! The same goes for work proportional to the token set: a filtered List
//! may scan the whole index, and last-used persistence writes every token
//! used since the last pass (see [`Registry::persist_last_used`]).

use std::{sync::Arc, time::Duration};

use crate::{
    access::{Actor, Reach, is_reserved},
    audit::{self, Draft},
    change::Change,
    clock::{Clock, Time},
    commit::{Committer, FlushObserver},
    error::Error,
    id::{IdGenerator, TokenId},
    index::{Arrivals, Entry, Index, ListFilter, ListQuery, Page},
    record::{ROTATED_REASON, Status, TokenRecord},
    sealer::{self, Sealer},
    spec::{TokenSpec, TtlPolicy},
    store::{OwnerQuota, Store, StoreError},
    token::{Secret, TokenHash},
};

/// Settings of the admin rules.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Prefix of newly generated tokens.
    pub token_prefix: String,
    /// Most active tokens one owner may hold; 0 = unlimited.
    pub max_tokens_per_owner: u32,
    /// `--max-ttl` and `--default-ttl`.
    pub ttl_policy: TtlPolicy,
    /// `--audit-log-file`: where each audit event is also written, once
    /// its change is durable.
    pub audit_log: Option<Arc<audit::LogFile>>,
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
    /// Seals audit events where the store keeps them unsealed.
    sealer: Option<Sealer>,
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
            sealer: store.seals_audit_later().then(|| Sealer::start(store.clone(), options.audit_log.clone())),
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
    pub async fn bootstrap(self: &Arc<Self>, already: bool, given: Option<Secret>) -> Result<Option<Created>, Error> {
        if already {
            return Ok(None);
        }
        let spec = TokenSpec {
            name: "bootstrap-admin".into(),
            owner: "tokend".into(),
            scopes: vec![crate::access::ADMIN_SCOPE.into()],
            labels: Default::default(),
            // The policy's --max-ttl does not apply: an expiring bootstrap
            // token would lock the operator out of the admin plane.
            ttl: None,
            not_before: None,
            allowed_cidrs: Default::default(),
        };
        let generated = given.is_none();
        let secret = given.unwrap_or_else(|| Secret::generate(&self.options.token_prefix));
        let (hash, hint) = (secret.hash(), secret.hint());
        let token = self
            .write(move |this, sealed| {
                let now = this.clock.now();
                let record = this.new_record(hash, hint.clone(), spec.clone(), now, None);
                let draft = Draft { target_id: Some(record.id), ..Draft::ok(now, "bootstrap", None, &record.owner) }
                    .with_record(&record);
                let changes = vec![Change::Put(record.clone()), Change::Bootstrapped];
                match this.write_locked(changes, Some(draft), None, sealed) {
                    // Another replica sharing the store was first: its token
                    // is the one, and this start shows no banner.
                    Err(Error::Store(StoreError::AlreadyBootstrapped)) => Ok(None),
                    other => other.and_then(|()| this.entry(record.id)).map(Some),
                }
            })
            .await?;
        Ok(token.filter(|_| generated).map(|token| Created { secret, token }))
    }

    /// Issues a new token, under the expiry policy, if `actor` may write
    /// the owner's tokens and hand out the scopes.
    pub async fn issue(self: &Arc<Self>, mut spec: TokenSpec, actor: &Actor) -> Result<Created, Error> {
        if !actor.access.write.covers(&spec.owner) {
            return Err(Error::PermissionDenied(format!(
                "this admin token may not issue tokens for owner {:?}",
                spec.owner
            )));
        }
        may_carry(actor, spec.scopes.iter().map(String::as_str), "issue")?;
        spec.ttl = self.options.ttl_policy.issue_ttl(spec.ttl)?;
        let actor = actor.clone();
        let secret = Secret::generate(&self.options.token_prefix);
        let (hash, hint) = (secret.hash(), secret.hint());
        let token = self
            .write(move |this, sealed| {
                let now = this.clock.now();
                let limit = this.options.max_tokens_per_owner;
                if limit > 0 && this.index.count_active(&spec.owner, now) >= limit as usize {
                    return Err(Error::QuotaExceeded { limit });
                }
                if let (Some(not_before), Some(ttl)) = (spec.not_before, spec.ttl)
                    && not_before > now.saturating_add(ttl)
                {
                    return Err(Error::invalid("not_before", "is after the token's expiry (create time + ttl)"));
                }
                let quota = (limit > 0).then_some(OwnerQuota { owner: &spec.owner, limit, now });
                let record = this.new_record(hash, hint.clone(), spec.clone(), now, None);
                let draft = this.draft(&actor, "issue", &record, now).with_record(&record);
                this.write_locked(vec![Change::Put(record.clone())], Some(draft), quota, sealed)?;
                this.entry(record.id)
            })
            .await?;
        Ok(Created { secret, token })
    }

    /// One token, if `reach` covers it (else, as if there were none).
    pub fn get(&self, id: TokenId, reach: &Reach) -> Result<Arc<Entry>, Error> {
        self.entry_within(id, reach)
    }

    /// One page of tokens (see [`Index::list`]). On the blocking pool: with a
    /// status filter that few tokens match, a page may scan the whole index.
    pub async fn list(
        self: &Arc<Self>,
        filter: ListFilter,
        after: Option<TokenId>,
        late_since: Option<Arrivals>,
        limit: usize,
    ) -> Result<Page, Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.index.list(ListQuery { filter: &filter, after, late_since, limit, now: this.clock.now() })
        })
        .await
        .map_err(task_failed)
    }

    /// Revokes a token. Idempotent: a revoked token keeps its first revoke
    /// time and reason.
    pub async fn revoke(self: &Arc<Self>, id: TokenId, reason: String, actor: &Actor) -> Result<Arc<Entry>, Error> {
        // Even a repeated revoke waits for a flush (`write` always does): the
        // first may not be durable yet, and an OK must never acknowledge a
        // change a crash could undo. It is audited too: the call was made.
        let actor = actor.clone();
        self.write(move |this, sealed| {
            let now = this.clock.now();
            let current = this.entry_within(id, &actor.access.write)?;
            let held = current.record();
            let draft = this.draft(&actor, "revoke", &held, now);
            if held.revoke_time.is_some() {
                this.write_locked(vec![], Some(draft.with("already_revoked", "true")), None, sealed)?;
                return Ok(current);
            }
            let mut record = held.revised_at(now);
            record.revoke_time = Some(now);
            record.revoke_reason = reason.as_str().into();
            this.write_locked(vec![Change::Put(record)], Some(draft.with("reason", reason.as_str())), None, sealed)?;
            this.entry(id)
        })
        .await
    }

    /// Replaces a token with a new one (same name, owner, scopes, labels and
    /// TTL length). The old token keeps working for `grace`, or is revoked at
    /// once if `grace` is `None`. Returns the new token and the old one.
    pub async fn rotate(
        self: &Arc<Self>,
        id: TokenId,
        grace: Option<Duration>,
        actor: &Actor,
    ) -> Result<(Created, Arc<Entry>), Error> {
        let secret = Secret::generate(&self.options.token_prefix);
        let (hash, hint) = (secret.hash(), secret.hint());
        let actor = actor.clone();
        let (token, previous) = self
            .write(move |this, sealed| {
                let now = this.clock.now();
                let old = this.entry_within(id, &actor.access.write)?.record();
                may_carry(&actor, old.scopes.iter(), "rotate")?;
                match old.status_at(now) {
                    Status::Revoked => return Err(Error::FailedPrecondition { id, why: "is revoked" }),
                    Status::Expired => return Err(Error::FailedPrecondition { id, why: "has expired" }),
                    Status::Active => {}
                }
                if old.rotated_to.is_some() {
                    return Err(Error::FailedPrecondition {
                        id,
                        why: "was already rotated; rotate its newest successor",
                    });
                }
                let spec = TokenSpec {
                    name: old.name.to_string(),
                    owner: old.owner.to_string(),
                    scopes: old.scopes.to_vec(),
                    labels: old.labels.clone(),
                    ttl: this.options.ttl_policy.cap(old.ttl),
                    // A not-before already past has done its work.
                    not_before: old.not_before.filter(|t| *t > now),
                    allowed_cidrs: old.allowed_cidrs.clone(),
                };
                let new = this.new_record(hash, hint.clone(), spec, now, Some(id));
                let mut old_record = old.revised_at(now);
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
                let mut draft = this.draft(&actor, "rotate", &old, now).with("new_id", new.id.to_string());
                draft = draft.with("grace_period", format!("{}s", grace.unwrap_or_default().as_secs_f64()));
                if let Some(t) = old_record.expire_time.filter(|_| grace.is_some()) {
                    draft = draft.with("expire_time", audit::time_text(t));
                }
                this.write_locked(vec![Change::Put(new.clone()), Change::Put(old_record)], Some(draft), None, sealed)?;
                Ok((this.entry(new.id)?, this.entry(id)?))
            })
            .await?;
        Ok((Created { secret, token }, previous))
    }

    /// Changes a token's name, labels, scopes, expiry or allowlist (see
    /// [`TokenUpdate`] for the rules). Verify sees the change before this
    /// returns.
    pub async fn update(
        self: &Arc<Self>,
        id: TokenId,
        update: TokenUpdate,
        actor: &Actor,
    ) -> Result<Arc<Entry>, Error> {
        let actor = actor.clone();
        self.write(move |this, sealed| {
            let now = this.clock.now();
            let old = &this.entry_within(id, &actor.access.write)?.record();
            match &update.scopes {
                Some(scopes) => may_carry(&actor, scopes.iter().map(String::as_str), "update")?,
                None => may_carry(&actor, old.scopes.iter(), "update")?,
            }
            if old.revoke_time.is_some() {
                return Err(Error::FailedPrecondition { id, why: "is revoked" });
            }
            let mut record = old.revised_at(now);
            if let Some(name) = &update.name {
                record.name = name.as_str().into();
            }
            if let Some(labels) = &update.labels {
                record.labels = labels.clone();
            }
            if let Some(scopes) = &update.scopes {
                if let Some(added) = scopes.iter().find(|s| !old.scopes.contains(s)) {
                    return Err(Error::invalid(
                        "scopes",
                        format!("may only remove scopes: {added:?} is not granted (adding a scope needs a new token)"),
                    ));
                }
                record.scopes = scopes.iter().cloned().collect();
            }
            if let Some(expire_time) = update.expire_time {
                match (old.expire_time, expire_time) {
                    (Some(_), None) => {
                        return Err(Error::invalid("expire_time", "may only move earlier: it cannot be cleared"));
                    }
                    (Some(old), Some(new)) if new > old => {
                        return Err(Error::invalid("expire_time", "may only move earlier"));
                    }
                    _ => {}
                }
                if let (Some(new), Some(latest)) = (expire_time, this.options.ttl_policy.latest_expiry(now))
                    && new > latest
                {
                    return Err(Error::invalid("expire_time", "must be within --max-ttl from now"));
                }
                if let (Some(new), Some(not_before)) = (expire_time, old.not_before)
                    && new < not_before
                {
                    return Err(Error::invalid("expire_time", "is before the token's not_before"));
                }
                record.expire_time = expire_time;
            }
            if let Some(cidrs) = &update.allowed_cidrs {
                record.allowed_cidrs = cidrs.clone();
            }
            let draft = this.draft(&actor, "update", old, now);
            let draft = update.describe(draft, &record);
            this.write_locked(vec![Change::Put(record)], Some(draft), None, sealed)?;
            this.entry(id)
        })
        .await
    }

    /// Persists the last-used times recorded since the previous call and
    /// makes them durable; returns how many were written. Blocking: call it
    /// from a plain thread (see `last_used`), never an async worker.
    ///
    /// A busy replica may have a few hundred thousand tokens to write, so
    /// they go to the store in chunks, with a pause between chunks: the
    /// work is spread over a few milliseconds more instead of taking a core
    /// from Verify in one burst.
    pub fn persist_last_used(&self) -> Result<usize, Error> {
        let times = self.index.take_last_used();
        if times.is_empty() {
            return Ok(0);
        }
        for (i, chunk) in times.chunks(LAST_USED_CHUNK).enumerate() {
            if i > 0 {
                std::thread::sleep(LAST_USED_PAUSE);
            }
            self.store.record_last_used(chunk)?;
        }
        if !self.store.writes_are_durable() {
            self.committer.sync_blocking()?;
        }
        Ok(times.len())
    }

    /// Final flush at shutdown: last-used times, then the store. Blocking.
    pub fn close(&self) -> Result<(), StoreError> {
        if let Some(sealer) = &self.sealer {
            sealer.close();
        }
        let times = self.index.take_last_used();
        let result = self.store.record_last_used(&times);
        self.committer.close();
        result
    }

    /// Runs `step` (rule checks and `write_locked`) on the blocking pool —
    /// under the write lock unless the store decides the rules itself — then
    /// waits for a shared flush unless the store's writes are durable as
    /// they return.
    ///
    /// With a shared store the index may be behind another replica's write
    /// to the same token; the store then refuses the write as a conflict.
    /// The token is re-read from the store and `step` decides again on the
    /// fresh state (the loser of a rotation race then finds the token
    /// rotated and answers FAILED_PRECONDITION).
    async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        step: impl Fn(&Registry, &mut Vec<audit::Event>) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let this = self.clone();
        let (value, sealed) = tokio::task::spawn_blocking(move || {
            let mut sealed = Vec::new();
            // A store that decides the rules in its transactions needs no
            // process-wide order; holding the mutex across a database commit
            // would cap a replica at one transaction at a time.
            let _guard = (!this.store.decides_rules()).then(|| this.lock());
            let mut conflicts = 0;
            let value = loop {
                let result = step(&this, &mut sealed);
                // A conflict: another replica wrote the token first. Not found
                // in the index: issued through another replica a moment ago,
                // before the feed brought it here. Either way the store has the
                // last word. (Found but hidden from the caller is final.)
                let behind = match &result {
                    Err(Error::Store(StoreError::Conflict { id })) => Some(*id),
                    Err(Error::NotFound(id)) if this.index.get(*id).is_none() => Some(*id),
                    _ => None,
                };
                match behind {
                    Some(id) if conflicts < MAX_CONFLICTS => {
                        conflicts += 1;
                        match this.store.fetch(id)? {
                            Some(fresh) => this.index.apply(&[Change::Put(fresh)]),
                            None => break result,
                        };
                    }
                    _ => break result,
                }
            }?;
            Ok::<_, Error>((value, sealed))
        })
        .await
        .map_err(task_failed)??;
        if !self.store.writes_are_durable() {
            self.committer.sync().await?;
        }
        if let Some(log) = &self.options.audit_log {
            log.append(&sealed);
        }
        if let Some(sealer) = &self.sealer {
            sealer.wake();
        }
        Ok(value)
    }

    /// Appends the audit event of a refused admin call (durably, like a
    /// change: the refusal is answered after it).
    pub async fn audit_refusal(self: &Arc<Self>, draft: Draft) -> Result<(), Error> {
        self.write(move |this, sealed| this.write_locked(vec![], Some(draft.clone()), None, sealed)).await
    }

    /// One page of audit events after `after` (see [`Store::audit_page`]).
    pub async fn audit_page(
        self: &Arc<Self>,
        filter: audit::Filter,
        after: u64,
        limit: usize,
    ) -> Result<audit::Page, Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // Every acknowledged change's event, sealed or not, is read.
            if this.sealer.is_some() {
                sealer::seal_all(this.store.as_ref(), this.options.audit_log.as_deref())?;
            }
            this.store.audit_page(&filter, after, limit)
        })
        .await
        .map_err(task_failed)?
        .map_err(Error::Store)
    }

    /// A draft of `action` by `actor` on the token `target`, at `now`.
    fn draft(&self, actor: &Actor, action: &'static str, target: &TokenRecord, now: Time) -> Draft {
        Draft {
            target_id: Some(target.id),
            ..Draft::ok(now, action, Some((actor.token_id, actor.peer)), &target.owner)
        }
    }

    fn new_record(
        &self,
        hash: TokenHash,
        hint: String,
        spec: TokenSpec,
        now: Time,
        rotated_from: Option<TokenId>,
    ) -> TokenRecord {
        TokenRecord {
            id: self.ids.next(now),
            hash,
            hint: hint.into(),
            name: spec.name.into(),
            owner: spec.owner.into(),
            scopes: spec.scopes.into_iter().collect(),
            labels: spec.labels,
            create_time: now,
            ttl: spec.ttl,
            expire_time: spec.ttl.map(|ttl| now.saturating_add(ttl)),
            not_before: spec.not_before,
            allowed_cidrs: spec.allowed_cidrs,
            update_time: now,
            revoke_time: None,
            revoke_reason: "".into(),
            rotated_from,
            rotated_to: None,
            version: 1,
        }
    }

    /// Store first, then index: if the store refuses, nothing changed. A
    /// quota the store decided is the same refusal as the index's.
    /// `sealed` collects the audit event as the store sealed it.
    fn write_locked(
        &self,
        changes: Vec<Change>,
        draft: Option<Draft>,
        quota: Option<OwnerQuota<'_>>,
        sealed: &mut Vec<audit::Event>,
    ) -> Result<(), Error> {
        let event = self.store.apply(&changes, draft.as_ref(), quota).map_err(|e| match e {
            StoreError::QuotaExceeded { limit } => Error::QuotaExceeded { limit },
            other => Error::Store(other),
        })?;
        sealed.extend(event);
        self.index.apply(&changes);
        Ok(())
    }

    fn entry(&self, id: TokenId) -> Result<Arc<Entry>, Error> {
        self.index.get(id).ok_or(Error::NotFound(id))
    }

    /// [`Registry::entry`] for a caller who may only see `reach`: another
    /// owner's token is not found, so its existence is not revealed.
    fn entry_within(&self, id: TokenId, reach: &Reach) -> Result<Arc<Entry>, Error> {
        self.entry(id).and_then(|e| if reach.covers(e.owner()) { Ok(e) } else { Err(Error::NotFound(id)) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Only a full admin (`tokend.admin`) may issue, rotate or update a token
/// that carries (or would carry) a reserved scope: an admin limited to some
/// owners could otherwise mint or widen admin tokens. (It may revoke one.)
fn may_carry<'a>(actor: &Actor, mut scopes: impl Iterator<Item = &'a str>, action: &str) -> Result<(), Error> {
    match scopes.find(|s| is_reserved(s)) {
        Some(scope) if !actor.access.is_full_admin() => Err(Error::PermissionDenied(format!(
            "only a tokend.admin token may {action} a token carrying the reserved scope {scope:?}"
        ))),
        _ => Ok(()),
    }
}

/// What an Update changes: each field present is replaced. Checked
/// against the token as it stands: scopes may only be removed, an expiry
/// may only move earlier (or be set where there was none, never past
/// `--max-ttl` from now, never before the token's not-before), and a
/// revoked token cannot be changed.
#[derive(Debug, Clone, Default)]
pub struct TokenUpdate {
    /// A new name.
    pub name: Option<String>,
    /// New labels (the whole map).
    pub labels: Option<crate::record::Labels>,
    /// The scopes to keep.
    pub scopes: Option<Vec<String>>,
    /// A new expiry (`Some(None)`: none, refused where there is one).
    pub expire_time: Option<Option<Time>>,
    /// A new allowlist.
    pub allowed_cidrs: Option<crate::cidr::Allowlist>,
}

impl TokenUpdate {
    /// Adds what this update changed, as `record` now has it, to `draft`.
    fn describe(&self, mut draft: Draft, record: &TokenRecord) -> Draft {
        let mut paths = Vec::new();
        if self.name.is_some() {
            paths.push("name");
            draft = draft.with("name", &*record.name);
        }
        if self.labels.is_some() {
            paths.push("labels");
            draft = draft.with_labels(&record.labels);
        }
        if self.scopes.is_some() {
            paths.push("scopes");
            draft = draft.with("scopes", record.scopes.joined());
        }
        if self.expire_time.is_some() {
            paths.push("expire_time");
            draft = draft.with("expire_time", record.expire_time.map(audit::time_text).unwrap_or_default());
        }
        if self.allowed_cidrs.is_some() {
            paths.push("allowed_cidrs");
            draft = draft.with("allowed_cidrs", audit::cidrs_text(&record.allowed_cidrs));
        }
        draft.with("update_mask", paths.join(","))
    }
}

/// How often one write re-decides after conflicting with another replica's.
const MAX_CONFLICTS: u32 = 3;

/// Last-used times go to the store this many at a time.
const LAST_USED_CHUNK: usize = 4096;
/// The pause between two chunks.
const LAST_USED_PAUSE: Duration = Duration::from_millis(1);

/// A blocking-pool task (a write, a List page) panicked or was cancelled
/// (at shutdown). The panic itself is reported by the runtime; the caller
/// sees a storage error.
fn task_failed(e: tokio::task::JoinError) -> Error {
    Error::Store(StoreError::Io(format!("blocking task failed: {e}")))
}
