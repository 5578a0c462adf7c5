//! Bulk creation of synthetic tokens, straight into the index or the store,
//! for benchmarks and soak runs (a million tokens in seconds, not a million
//! RPCs).

use std::{path::Path, time::Duration};

use crate::{
    change::Change,
    clock::Time,
    id::IdGenerator,
    record::{Scopes, TokenRecord},
    store::{SledOptions, SledStore, Store, StoreError},
    token::Secret,
};

/// Synthetic tokens: `records`, and the secrets of every `keep_every`-th one
/// (benchmarks need some valid tokens to present, not a million secrets).
pub struct Seeded {
    /// The records, in id order.
    pub records: Vec<TokenRecord>,
    /// Secrets of a sample of the records.
    pub secrets: Vec<Secret>,
}

/// Makes `n` realistic tokens (two scopes, one label, a 20-character name,
/// a 30-day TTL, 1,000 owners) created at `now`.
pub fn tokens(n: usize, keep_every: usize, now: Time) -> Seeded {
    Maker::new(now).many(n, keep_every)
}

/// Makes one synthetic token after another, with ids in order.
struct Maker {
    ids: IdGenerator,
    scopes: Scopes,
    now: Time,
}

impl Maker {
    fn new(now: Time) -> Maker {
        let scopes = ["orders:read".to_string(), "orders:write".to_string()].into_iter().collect();
        Maker { ids: IdGenerator::default(), scopes, now }
    }

    /// The `i`-th token.
    fn next(&mut self, i: usize) -> (TokenRecord, Secret) {
        let (secret, now) = (Secret::generate("tk"), self.now);
        let ttl = Duration::from_secs(30 * 86_400);
        let record = TokenRecord {
            id: self.ids.next(now),
            hash: secret.hash(),
            hint: secret.hint().into(),
            name: format!("token-{i:014}").into(),
            owner: format!("team-{}", i % 1000).into(),
            scopes: self.scopes.clone(),
            labels: [("env".to_string(), "prod".to_string())].into_iter().collect(),
            create_time: now,
            ttl: Some(ttl),
            expire_time: Some(now.saturating_add(ttl)),
            not_before: None,
            allowed_cidrs: Default::default(),
            update_time: now,
            revoke_time: None,
            revoke_reason: "".into(),
            rotated_from: None,
            rotated_to: None,
            version: 1,
        };
        (record, secret)
    }

    /// `n` tokens, keeping every `keep_every`-th secret.
    fn many(&mut self, n: usize, keep_every: usize) -> Seeded {
        let mut secrets = Vec::with_capacity(n / keep_every.max(1) + 1);
        let records = (0..n)
            .map(|i| {
                let (record, secret) = self.next(i);
                if i % keep_every.max(1) == 0 {
                    secrets.push(secret);
                }
                record
            })
            .collect();
        Seeded { records, secrets }
    }

    /// An admin token (scope `tokend.admin`, owner `tokend`) after every
    /// token made so far.
    fn admin(&mut self) -> (TokenRecord, Secret) {
        let (mut record, secret) = self.next(0);
        record.name = "bench-admin".into();
        record.owner = "tokend".into();
        record.scopes = [crate::access::ADMIN_SCOPE.to_string()].into_iter().collect();
        (record, secret)
    }
}

/// Tokens written to the store per batch.
const CHUNK: usize = 10_000;
/// Tokens written between two flushes while seeding.
const FLUSH_EVERY: usize = 500_000;

/// Writes `n` synthetic tokens into a sled store at `dir` (marked
/// bootstrapped, so tokend will not create an admin token there) plus one
/// admin token, whose secret is returned first, before the sample. Made and
/// written a batch at a time: ten million tokens never sit in memory at
/// once.
pub fn store(dir: &Path, n: usize, keep_every: usize, now: Time) -> Result<Vec<Secret>, StoreError> {
    let store = SledStore::open(dir, &SledOptions { cache_bytes: 64 << 20, fsync: true })?;
    let mut maker = Maker::new(now);
    let mut secrets = vec![];
    let mut batch = Vec::with_capacity(CHUNK);
    for i in 0..n {
        let (record, secret) = maker.next(i);
        if i % keep_every.max(1) == 0 {
            secrets.push(secret);
        }
        batch.push(record);
        if batch.len() == CHUNK {
            store.bulk_put(&batch)?;
            batch.clear();
        }
        if (i + 1) % FLUSH_EVERY == 0 {
            store.flush()?;
        }
    }
    let (admin_record, admin) = maker.admin();
    batch.push(admin_record);
    store.bulk_put(&batch)?;
    store.apply(&[Change::Bootstrapped], None, None)?;
    store.flush()?;
    secrets.insert(0, admin);
    Ok(secrets)
}

/// Like [`store`], into an empty PostgreSQL database (bulk `COPY`, minutes
/// faster than a million transactions).
pub async fn postgres(
    options: &crate::store::PostgresOptions,
    n: usize,
    keep_every: usize,
    now: Time,
) -> Result<Vec<Secret>, StoreError> {
    let store = crate::store::PostgresStore::connect(options).await?;
    let (records, secrets) = with_admin(n, keep_every, now);
    store.copy_in(&records).await?;
    Ok(secrets)
}

/// `n` synthetic tokens and an admin token (last); the admin secret is
/// returned first, before the sample.
fn with_admin(n: usize, keep_every: usize, now: Time) -> (Vec<TokenRecord>, Vec<Secret>) {
    let mut maker = Maker::new(now);
    let Seeded { mut records, mut secrets } = maker.many(n, keep_every);
    let (admin_record, admin) = maker.admin();
    records.push(admin_record);
    secrets.insert(0, admin);
    (records, secrets)
}
