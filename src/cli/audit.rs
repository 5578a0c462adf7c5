//! `tokend audit verify | list`: check the audit chain and read the trail.
//!
//! `verify` recomputes every hash — offline, from a stopped tokend's store
//! (`--data-dir`, or `--store` for PostgreSQL), or through a running
//! server's ListAuditEvents — prints the number of events and the head
//! hash, and exits 1 naming the first broken sequence number. Keep the head
//! hash it prints somewhere else: a later run whose chain still contains
//! that hash at that position proves nothing before it was rewritten.

use std::{path::PathBuf, sync::Arc};

use clap::Subcommand;
use serde_json::{Value, json};

use super::{CliError, Connection, EXIT_INVALID, Output, admin, parse_past, rfc3339};
use crate::{
    audit::{self, Broken, Chain, Event, Head},
    pb,
    store::{PostgresOptions, PostgresStore, SledOptions, SledStore, Store},
};

/// `tokend audit …`.
#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// Recompute the audit chain; exits 1 naming the first broken event.
    Verify {
        /// Read a stopped tokend's sled data directory instead of asking
        /// the server.
        #[arg(long, conflicts_with = "store")]
        data_dir: Option<PathBuf>,
        /// Read this PostgreSQL store (`postgres://…`) instead of asking the
        /// server.
        #[arg(long)]
        store: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Print the running server's audit events, oldest first.
    List {
        /// Only events on this token id.
        #[arg(long)]
        target: Option<String>,
        /// Only events by this admin token id.
        #[arg(long)]
        actor: Option<String>,
        /// Only events at or after this time: RFC 3339 UTC or a duration
        /// ago (24h).
        #[arg(long, value_parser = parse_past)]
        since: Option<prost_types::Timestamp>,
        #[command(flatten)]
        conn: Connection,
    },
}

/// Events read per request or query.
const CHUNK: usize = 1000;

pub(super) async fn execute(command: AuditCommand) -> Result<u8, CliError> {
    match command {
        AuditCommand::Verify { data_dir, store, conn } => {
            let checked = match (data_dir, store) {
                (Some(dir), _) => {
                    // Opening would create an empty store, and a mistyped path
                    // would "verify" with 0 events.
                    if !dir.join("db").is_file() {
                        return Err(CliError::Usage(format!("--data-dir {}: not a tokend data dir", dir.display())));
                    }
                    let options = SledOptions { cache_bytes: 16 << 20, fsync: false };
                    let store = SledStore::open(&dir, &options)
                        .map_err(|e| CliError::Usage(format!("--data-dir {}: {e}", dir.display())))?;
                    verify_store(Arc::new(store)).await?
                }
                (None, Some(url)) => {
                    let store = PostgresStore::connect(&PostgresOptions::new(url))
                        .await
                        .map_err(|e| CliError::Usage(format!("--store: {e}")))?;
                    verify_store(Arc::new(store)).await?
                }
                (None, None) => verify_server(&conn).await?,
            };
            Ok(report(checked, conn.output))
        }
        AuditCommand::List { target, actor, since, conn } => {
            let filter = pb::ListAuditEventsRequest {
                target_id: target.unwrap_or_default(),
                actor_id: actor.unwrap_or_default(),
                since,
                ..Default::default()
            };
            let mut events = Vec::new();
            each_page(&conn, filter, |page| {
                events.extend(page);
                true
            })
            .await?;
            print_events(&events, conn.output);
            Ok(0)
        }
    }
}

/// Checks every stored event, in stored order, undecoded bytes included.
async fn verify_store(store: Arc<dyn Store>) -> Result<Result<Head, Broken>, CliError> {
    tokio::task::spawn_blocking(move || {
        let mut chain = Chain::default();
        let mut after = 0;
        loop {
            let stored =
                store.audit_raw(after, CHUNK).map_err(|e| CliError::Usage(format!("reading the store: {e}")))?;
            let Some(&(last, _)) = stored.last() else { return Ok(Ok(chain.head())) };
            for (_, bytes) in &stored {
                if let Err(broken) = chain.push(Event::decode_stored(bytes).ok().as_ref()) {
                    return Ok(Err(broken));
                }
            }
            after = last;
        }
    })
    .await
    .map_err(|e| CliError::Usage(format!("the check failed: {e}")))?
}

/// Checks the events a running server serves. The caller needs
/// `tokend.admin` or `tokend.read`: an owner-limited token sees only part
/// of the chain, which then does not verify.
async fn verify_server(conn: &Connection) -> Result<Result<Head, Broken>, CliError> {
    let mut chain = Chain::default();
    let mut broken = None;
    each_page(conn, Default::default(), |page| {
        broken = page.into_iter().find_map(|e| chain.push(Some(&e)).err());
        broken.is_none()
    })
    .await?;
    Ok(broken.map_or(Ok(chain.head()), Err))
}

/// Reads the server's events matching `filter`, a page at a time, handing
/// each page to `each` until it returns false or the events run out.
async fn each_page(
    conn: &Connection,
    filter: pb::ListAuditEventsRequest,
    mut each: impl FnMut(Vec<pb::AuditEvent>) -> bool,
) -> Result<(), CliError> {
    let mut admin = admin(conn).await?;
    let mut req = pb::ListAuditEventsRequest { page_size: CHUNK as i32, ..filter };
    loop {
        let page = admin.list_audit_events(req.clone()).await?.into_inner();
        if !each(page.events) || page.next_page_token.is_empty() {
            return Ok(());
        }
        req.page_token = page.next_page_token;
    }
}

/// Prints the outcome; the exit code: 0 when the chain holds, 1 when not.
fn report(checked: Result<Head, Broken>, output: Output) -> u8 {
    let hex = |h: &audit::Hash| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match checked {
        Ok(head) => {
            match output {
                Output::Json => println!("{}", json!({ "ok": true, "events": head.seq, "head": hex(&head.hash) })),
                Output::Table => println!("audit chain ok: {} events, head {}", head.seq, hex(&head.hash)),
            }
            0
        }
        Err(broken) => {
            match output {
                Output::Json => println!("{}", json!({ "ok": false, "broken_seq": broken.seq, "why": broken.why })),
                Output::Table => eprintln!("tokend: {broken}"),
            }
            EXIT_INVALID
        }
    }
}

fn print_events(events: &[pb::AuditEvent], output: Output) {
    if output == Output::Json {
        // The same JSON as --audit-log-file writes.
        let all: Vec<Value> =
            events.iter().map(|e| serde_json::from_str(&e.to_json_line()).unwrap_or(Value::Null)).collect();
        println!("{}", Value::Array(all));
        return;
    }
    println!(
        "{:<6}  {:<20}  {:<15}  {:<19}  {:<36}  {:<36}  OWNER  DETAILS",
        "SEQ", "TIME", "ACTION", "CODE", "ACTOR", "TARGET"
    );
    for e in events {
        let details: Vec<String> = {
            let mut d: Vec<_> = e.details.iter().collect();
            d.sort();
            d.into_iter().map(|(k, v)| format!("{k}={v:?}")).collect()
        };
        println!(
            "{:<6}  {:<20}  {:<15}  {:<19}  {:<36}  {:<36}  {}  {}",
            e.seq,
            e.time.as_ref().map_or_else(|| "-".to_owned(), rfc3339),
            e.action,
            e.code,
            if e.actor_id.is_empty() { "-" } else { &e.actor_id },
            if e.target_id.is_empty() { "-" } else { &e.target_id },
            if e.owner.is_empty() { "-" } else { &e.owner },
            details.join(" ")
        );
    }
}
