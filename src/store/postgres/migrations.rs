//! The PostgreSQL schema, as an ordered list of migrations, and the code
//! that applies them at start-up.
//!
//! Replicas starting together race to migrate, so the whole check-and-apply
//! runs under a session advisory lock: the first applies what is missing,
//! the others wait and then find nothing to do. A database migrated by a
//! newer tokend (a version this binary does not know) is refused rather
//! than written with the wrong assumptions.

use tokio_postgres::Client;

/// Key of the advisory lock held while migrating ("tokend" in ASCII).
const LOCK_KEY: i64 = 0x746f_6b65_6e64;

/// Each migration runs once, in its own transaction, in order.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        // Timestamps are nanoseconds since the epoch (bigint), as in memory:
        // timestamptz keeps microseconds, and a record must read back equal to
        // what was written. `record` is the same encoding sled stores; owner,
        // version, expiry and revocation are kept beside it for the checks made
        // in SQL (quota, conditional writes).
        //
        // `tokend_changes` is the outbox of the change feed: one row per record
        // written, in the same transaction. `last_used_seq` marks each batch of
        // last-used times, so replicas can read the batches they have not seen.
        "CREATE TABLE tokend_tokens (
         id            bytea  PRIMARY KEY,
         owner         text   NOT NULL,
         version       bigint NOT NULL,
         expire_time   bigint,
         revoke_time   bigint,
         record        bytea  NOT NULL,
         last_used     bigint,
         last_used_seq bigint
     );
     CREATE INDEX tokend_tokens_owner ON tokend_tokens (owner);
     CREATE INDEX tokend_tokens_last_used_seq ON tokend_tokens (last_used_seq);
     CREATE SEQUENCE tokend_last_used_batches;
     CREATE TABLE tokend_changes (
         seq      bigserial   PRIMARY KEY,
         token_id bytea       NOT NULL,
         version  bigint      NOT NULL,
         at       timestamptz NOT NULL DEFAULT clock_timestamp()
     );
     CREATE INDEX tokend_changes_at ON tokend_changes (at);
     CREATE TABLE tokend_meta (
         key   text PRIMARY KEY,
         value text NOT NULL
     );",
    ),
    (
        2,
        // The audit trail. A write appends its event to
        // `tokend_audit_pending` (unsealed, in its own transaction); a
        // sealer moves pending events into `tokend_audit`, numbered and
        // chained, under a lock on `tokend_audit_head`, the chain's end (one
        // row), many per transaction: writers never wait for one another
        // on the chain. `event` is the sealed event as sled stores it (see
        // `audit`); time, actor, target and owner are copied beside it for
        // ListAuditEvents' filters.
        "CREATE TABLE tokend_audit (
             seq       bigint PRIMARY KEY,
             time      bigint NOT NULL,
             actor_id  text   NOT NULL,
             target_id text   NOT NULL,
             owner     text   NOT NULL,
             event     bytea  NOT NULL
         );
         CREATE INDEX tokend_audit_target ON tokend_audit (target_id, seq);
         CREATE INDEX tokend_audit_actor ON tokend_audit (actor_id, seq);
         CREATE TABLE tokend_audit_head (
             one  boolean PRIMARY KEY DEFAULT true CHECK (one),
             seq  bigint  NOT NULL,
             hash bytea   NOT NULL
         );
         INSERT INTO tokend_audit_head (seq, hash) VALUES (0, decode(repeat('00', 32), 'hex'));
         CREATE TABLE tokend_audit_pending (
             id    bigserial PRIMARY KEY,
             event bytea     NOT NULL
         );",
    ),
];

/// The newest schema version this binary knows.
pub const LATEST: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The oldest PostgreSQL tokend runs on (`server_version_num`). The SQL
/// itself needs 12 (`MATERIALIZED` CTEs); 13 is the documented floor, and
/// the tests run on 15. Refused at start, rather than failing mid-write.
pub const OLDEST_SERVER: i32 = 130_000;

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The server is older than [`OLDEST_SERVER`].
    #[error("PostgreSQL {found} is too old: tokend needs 13 or newer")]
    TooOld { found: String },
    /// The database was migrated by a newer tokend.
    #[error(
        "the database schema is at version {found}, newer than this tokend supports ({LATEST}); \
         run a tokend at least as new as the one that migrated it"
    )]
    Newer { found: i32 },
    /// PostgreSQL refused or failed a statement.
    #[error("migration failed: {}", super::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
}

/// Applies every migration the database lacks; returns the version found
/// before migrating.
pub async fn run(client: &mut Client) -> Result<i32, MigrateError> {
    let version: String = client.query_one("SHOW server_version_num", &[]).await?.get(0);
    if version.parse::<i32>().is_ok_and(|v| v < OLDEST_SERVER) {
        let found: String = client.query_one("SHOW server_version", &[]).await?.get(0);
        return Err(MigrateError::TooOld { found });
    }
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY]).await?;
    let result = migrate_locked(client).await;
    // Unlock on failure too; a dropped connection releases it as well.
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY]).await;
    let found = result?;
    unlocked?;
    Ok(found)
}

async fn migrate_locked(client: &mut Client) -> Result<i32, MigrateError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS tokend_schema_migrations (
                 version    integer     PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let row = client.query_one("SELECT coalesce(max(version), 0) FROM tokend_schema_migrations", &[]).await?;
    let found: i32 = row.get(0);
    if found > LATEST {
        return Err(MigrateError::Newer { found });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO tokend_schema_migrations (version) VALUES ($1)", &[version]).await?;
        tx.commit().await?;
        tracing::info!(version, "database schema migrated");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_from_one() {
        for (i, (version, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version as usize, i + 1);
        }
    }
}
