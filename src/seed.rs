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

/// Makes `n` realistic tokens (two scopes, one label, a 30-day TTL, 1,000
/// owners) created at `now`.
pub fn tokens(n: usize, keep_every: usize, now: Time) -> Seeded {
    let ids = IdGenerator::default();
    let mut secrets = Vec::with_capacity(n / keep_every.max(1) + 1);
    let scopes: Scopes = ["orders:read".to_string(), "orders:write".to_string()].into_iter().collect();
    let records = (0..n)
        .map(|i| {
            let secret = Secret::generate("tk");
            let ttl = Duration::from_secs(30 * 86_400);
            let record = TokenRecord {
                id: ids.next(now),
                hash: secret.hash(),
                hint: secret.hint().into(),
                name: format!("token-{i}").into(),
                owner: format!("team-{}", i % 1000).into(),
                scopes: scopes.clone(),
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
            if i % keep_every.max(1) == 0 {
                secrets.push(secret);
            }
            record
        })
        .collect();
    Seeded { records, secrets }
}

/// Writes `n` synthetic tokens into a sled store at `dir` (marked
/// bootstrapped, so tokend will not create an admin token there) plus one
/// admin token, whose secret is returned first, before the sample.
pub fn store(dir: &Path, n: usize, keep_every: usize, now: Time) -> Result<Vec<Secret>, StoreError> {
    let store = SledStore::open(dir, &SledOptions { cache_bytes: 64 << 20, fsync: true })?;
    let (records, secrets) = with_admin(n, keep_every, now);
    for chunk in records.chunks(10_000) {
        let changes: Vec<Change> = chunk.iter().cloned().map(Change::Put).collect();
        store.apply(&changes, None, None)?;
    }
    store.apply(&[Change::Bootstrapped], None, None)?;
    store.flush()?;
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
    let mut seeded = tokens(n, keep_every, now);
    let admin = Secret::generate("tk");
    let mut admin_record = seeded.records[0].clone();
    admin_record.id = IdGenerator::starting_after(seeded.records.last().map(|r| r.id)).next(now);
    admin_record.hash = admin.hash();
    admin_record.hint = admin.hint().into();
    admin_record.name = "bench-admin".into();
    admin_record.owner = "tokend".into();
    admin_record.scopes = [crate::record::ADMIN_SCOPE.to_string()].into_iter().collect();
    seeded.records.push(admin_record);
    let mut secrets = vec![admin];
    secrets.extend(seeded.secrets);
    (seeded.records, secrets)
}
