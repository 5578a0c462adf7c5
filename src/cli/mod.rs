//! The admin CLI: `tokend issue | list | get | revoke | rotate | update |
//! verify | audit`, a
//! gRPC client on the same binary for people who would rather not type
//! grpcurl JSON.
//!
//! The server comes from `--server` / `TOKEND_SERVER`, the admin token from
//! `TOKEND_TOKEN` (or `--token-file`; never a flag, which would show in `ps`).
//! Exit codes scripts can rely on: 0 success; 1 `verify` found the token
//! invalid; 2 bad usage; 3 the server refused the call; 4 the server could
//! not be reached.

pub mod audit;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::{
    auth::BearerToken,
    config::parse_duration,
    pb::{self, token_service_client::TokenServiceClient, verify_service_client::VerifyServiceClient},
};

/// Where the server is and how to print answers; shared by every client
/// subcommand.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// tokend's address (`http://` or `https://`).
    #[arg(long, env = "TOKEND_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// PEM CA certificate to trust for an `https://` server.
    #[arg(long, env = "TOKEND_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// File holding the admin token (default: the TOKEND_TOKEN variable).
    #[arg(long, env = "TOKEND_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

/// How answers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns and `key: value` lines, for people.
    Table,
    /// JSON, for scripts.
    Json,
}

/// A token status on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    /// Verifies.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

/// The client subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Issue a token; its secret is printed once.
    Issue {
        /// Human-readable name.
        #[arg(long)]
        name: String,
        /// Owner (team, user or service).
        #[arg(long)]
        owner: String,
        /// A scope to grant (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A label `key=value` (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Time to live: 30d, 12h, 90m … or 0 for never (or the server's
        /// --default-ttl).
        #[arg(long, default_value = "0", value_parser = parse_duration)]
        ttl: Duration,
        /// Not valid before this time: 2026-12-01T00:00:00Z, or a duration
        /// from now (2h, 1d).
        #[arg(long, value_parser = parse_time)]
        not_before: Option<prost_types::Timestamp>,
        /// A network the token may be used from: 10.0.0.0/8, 2001:db8::/32,
        /// 192.0.2.7 (repeatable; none = anywhere).
        #[arg(long = "allow")]
        allowed_cidrs: Vec<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Change a token in place: only what the flags name is changed.
    Update {
        /// Token id.
        id: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// Replace all labels with these `key=value` (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Remove every label.
        #[arg(long, conflicts_with = "labels")]
        clear_labels: bool,
        /// Keep only these scopes (repeatable; scopes can only be removed).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Expire at this time (only earlier than now set): an RFC 3339
        /// time or a duration from now.
        #[arg(long, value_parser = parse_time)]
        expire_at: Option<prost_types::Timestamp>,
        /// Replace the allowlist with these networks (repeatable).
        #[arg(long = "allow")]
        allowed_cidrs: Vec<String>,
        /// Remove the allowlist: usable from anywhere.
        #[arg(long, conflicts_with = "allowed_cidrs")]
        clear_allow: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// List tokens in creation order.
    List {
        /// Only this owner's tokens.
        #[arg(long)]
        owner: Option<String>,
        /// Only tokens with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only tokens whose name starts with this.
        #[arg(long)]
        name_prefix: Option<String>,
        /// Only tokens not used since this time (never-used included):
        /// RFC 3339, or a duration ago (90d).
        #[arg(long, value_parser = parse_past)]
        unused_since: Option<prost_types::Timestamp>,
        /// Only tokens expiring before this time: RFC 3339, or a duration
        /// from now (7d).
        #[arg(long, value_parser = parse_time)]
        expiring_before: Option<prost_types::Timestamp>,
        #[command(flatten)]
        conn: Connection,
    },
    /// Show one token.
    Get {
        /// Token id.
        id: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Revoke a token at once.
    Revoke {
        /// Token id.
        id: String,
        /// Why (kept with the token).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Replace a token's secret; the old one works for --grace (0: revoked at once).
    Rotate {
        /// Token id.
        id: String,
        /// How long the old secret keeps working: 24h, 7d … or 0.
        #[arg(long, default_value = "0", value_parser = parse_duration)]
        grace: Duration,
        #[command(flatten)]
        conn: Connection,
    },
    /// Check the audit chain, or list audit events.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Check a token as a sibling service would; exits 1 if it is not valid.
    Verify {
        /// The token, or `-` to read it from standard input.
        token: String,
        /// A scope the token must grant (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// The address the request came from (for tokens with an
        /// allowlist).
        #[arg(long, default_value = "")]
        client_ip: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// Exit code: `verify` found the token invalid.
pub const EXIT_INVALID: u8 = 1;
/// Exit code: bad usage (also clap's).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the server answered with an error.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: the server could not be reached.
pub const EXIT_UNREACHABLE: u8 = 4;

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {server}: {message}")]
    Unreachable { server: String, message: String },
    #[error("{code:?}: {message}", code = .0.code(), message = .0.message())]
    Refused(tonic::Status),
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Refused(s)
    }
}

/// Runs a client subcommand and returns the process exit code.
pub fn run(command: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokend: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(command)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("tokend: {e}");
            ExitCode::from(match e {
                CliError::Usage(_) => EXIT_USAGE,
                CliError::Refused(_) => EXIT_REFUSED,
                CliError::Unreachable { .. } => EXIT_UNREACHABLE,
            })
        }
    }
}

async fn execute(command: ClientCommand) -> Result<u8, CliError> {
    match command {
        ClientCommand::Audit(command) => audit::execute(command).await,
        ClientCommand::Verify { token, scopes, client_ip, conn } => {
            let token = if token == "-" { read_stdin()? } else { token };
            let mut client = VerifyServiceClient::new(connect(&conn).await?);
            let r = client.verify(pb::VerifyRequest { token, required_scopes: scopes, client_ip }).await?.into_inner();
            print_verify(&r, conn.output);
            Ok(if r.valid { 0 } else { EXIT_INVALID })
        }
        ClientCommand::Issue { name, owner, scopes, labels, ttl, not_before, allowed_cidrs, conn } => {
            let mut admin = admin(&conn).await?;
            let ttl = (!ttl.is_zero()).then(|| duration(ttl));
            let labels = labels.into_iter().collect();
            let req = pb::IssueRequest { name, owner, scopes, ttl, labels, not_before, allowed_cidrs };
            let r = admin.issue(req).await?.into_inner();
            print_created(&r.secret, r.token.as_ref(), None, conn.output);
            Ok(0)
        }
        ClientCommand::Update {
            id,
            name,
            labels,
            clear_labels,
            scopes,
            expire_at,
            allowed_cidrs,
            clear_allow,
            conn,
        } => {
            let mut paths = Vec::new();
            let mut token = pb::Token { id, ..Default::default() };
            if let Some(name) = name {
                token.name = name;
                paths.push("name");
            }
            if clear_labels || !labels.is_empty() {
                token.labels = labels.into_iter().collect();
                paths.push("labels");
            }
            if !scopes.is_empty() {
                token.scopes = scopes;
                paths.push("scopes");
            }
            if let Some(at) = expire_at {
                token.expire_time = Some(at);
                paths.push("expire_time");
            }
            if clear_allow || !allowed_cidrs.is_empty() {
                token.allowed_cidrs = allowed_cidrs;
                paths.push("allowed_cidrs");
            }
            if paths.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give --name, --label, --clear-labels, --scope, --expire-at, --allow or \
                     --clear-allow"
                        .into(),
                ));
            }
            let update_mask = Some(prost_types::FieldMask { paths: paths.into_iter().map(String::from).collect() });
            let req = pb::UpdateRequest { token: Some(token), update_mask };
            let token = admin(&conn).await?.update(req).await?.into_inner().token;
            print_token(token.as_ref(), conn.output);
            Ok(0)
        }
        ClientCommand::List { owner, status, name_prefix, unused_since, expiring_before, conn } => {
            let mut admin = admin(&conn).await?;
            let status = status.map_or(pb::TokenStatus::Unspecified, |s| match s {
                StatusArg::Active => pb::TokenStatus::Active,
                StatusArg::Expired => pb::TokenStatus::Expired,
                StatusArg::Revoked => pb::TokenStatus::Revoked,
            });
            let mut req = pb::ListRequest {
                owner: owner.unwrap_or_default(),
                status: status.into(),
                page_size: 1000,
                name_prefix: name_prefix.unwrap_or_default(),
                last_used_before: unused_since,
                expire_before: expiring_before,
                ..Default::default()
            };
            let mut tokens = Vec::new();
            loop {
                let page = admin.list(req.clone()).await?.into_inner();
                tokens.extend(page.tokens);
                if page.next_page_token.is_empty() {
                    break;
                }
                req.page_token = page.next_page_token;
            }
            print_list(&tokens, conn.output);
            Ok(0)
        }
        ClientCommand::Get { id, conn } => {
            let token = admin(&conn).await?.get(pb::GetRequest { id }).await?.into_inner().token;
            print_token(token.as_ref(), conn.output);
            Ok(0)
        }
        ClientCommand::Revoke { id, reason, conn } => {
            let token = admin(&conn).await?.revoke(pb::RevokeRequest { id, reason }).await?.into_inner().token;
            print_token(token.as_ref(), conn.output);
            Ok(0)
        }
        ClientCommand::Rotate { id, grace, conn } => {
            let req = pb::RotateRequest { id, grace_period: Some(duration(grace)) };
            let r = admin(&conn).await?.rotate(req).await?.into_inner();
            print_created(&r.secret, r.token.as_ref(), r.previous.as_ref(), conn.output);
            Ok(0)
        }
    }
}

fn read_stdin() -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .read_line(&mut text)
        .map_err(|e| CliError::Usage(format!("cannot read the token from stdin: {e}")))?;
    Ok(text.trim().to_owned())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| format!("{s:?} is not key=value"))
}

/// A time given on the command line: RFC 3339 in UTC
/// (`2026-12-01T00:00:00Z`, fractions allowed), or a duration from now.
fn parse_time(s: &str) -> Result<prost_types::Timestamp, String> {
    parse_rfc3339(s).or_else(|| parse_duration(s).ok().map(|d| from_now(d, 1))).ok_or_else(|| {
        format!("{s:?} is neither an RFC 3339 UTC time (2026-12-01T00:00:00Z) nor a duration from now (2h, 7d)")
    })
}

/// [`parse_time`], a duration counting back from now (`90d`: 90 days ago).
fn parse_past(s: &str) -> Result<prost_types::Timestamp, String> {
    parse_rfc3339(s)
        .or_else(|| parse_duration(s).ok().map(|d| from_now(d, -1)))
        .ok_or_else(|| format!("{s:?} is neither an RFC 3339 UTC time (2026-09-01T00:00:00Z) nor a duration ago (90d)"))
}

fn from_now(d: Duration, sign: i128) -> prost_types::Timestamp {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let nanos = now.as_nanos() as i128 + sign * d.as_nanos() as i128;
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000) as i64,
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (civil-to-days after H. Hinnant).
fn parse_rfc3339(s: &str) -> Option<prost_types::Timestamp> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let (time, fraction) = time.split_once('.').unwrap_or((time, ""));
    let number = |text: &str, len: usize| -> Option<i64> {
        (text.len() == len && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok()).flatten()
    };
    let mut d = date.split('-');
    let (year, month, day) = (number(d.next()?, 4)?, number(d.next()?, 2)?, number(d.next()?, 2)?);
    let mut t = time.split(':');
    let (hour, minute, second) = (number(t.next()?, 2)?, number(t.next()?, 2)?, number(t.next()?, 2)?);
    if d.next().is_some() || t.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 || fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos = if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").parse().ok()? };
    let y = if month <= 2 { year - 1 } else { year };
    let (era, yoe) = (y.div_euclid(400), y.rem_euclid(400));
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(prost_types::Timestamp { seconds: days * 86_400 + hour * 3600 + minute * 60 + second, nanos })
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

async fn connect(conn: &Connection) -> Result<Channel, CliError> {
    let unreachable = |message: String| CliError::Unreachable { server: conn.server.clone(), message };
    let mut endpoint = Endpoint::from_shared(conn.server.clone())
        .map_err(|e| CliError::Usage(format!("--server {:?}: {e}", conn.server)))?
        .connect_timeout(Duration::from_secs(5));
    if conn.server.starts_with("https://") || conn.ca_cert.is_some() {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(path) = &conn.ca_cert {
            let pem = std::fs::read(path).map_err(|e| CliError::Usage(format!("--ca-cert {}: {e}", path.display())))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| unreachable(e.to_string()))?;
    }
    endpoint.connect().await.map_err(|e| unreachable(error_chain(&e)))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

type AdminClient = TokenServiceClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>;

async fn admin(conn: &Connection) -> Result<AdminClient, CliError> {
    let token = match &conn.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("--token-file {}: {e}", path.display())))?,
        None => std::env::var("TOKEND_TOKEN")
            .map_err(|_| CliError::Usage("set TOKEND_TOKEN (or --token-file) to an admin token".into()))?,
    };
    let bearer =
        BearerToken::new(&token).map_err(|_| CliError::Usage("the admin token is not a valid header value".into()))?;
    Ok(TokenServiceClient::with_interceptor(connect(conn).await?, bearer))
}

fn status_name(value: i32) -> &'static str {
    match pb::TokenStatus::try_from(value) {
        Ok(pb::TokenStatus::Active) => "active",
        Ok(pb::TokenStatus::Expired) => "expired",
        Ok(pb::TokenStatus::Revoked) => "revoked",
        _ => "unknown",
    }
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), rfc3339)
}

/// `YYYY-MM-DDTHH:MM:SSZ`: whole seconds are enough for people.
fn rfc3339(t: &prost_types::Timestamp) -> String {
    crate::clock::rfc3339(t.seconds, 0)
}

fn token_json(t: &pb::Token) -> Value {
    let opt = |t: Option<&prost_types::Timestamp>| t.map_or(Value::Null, |t| Value::String(rfc3339(t)));
    let empty_null = |s: &str| if s.is_empty() { Value::Null } else { Value::String(s.to_owned()) };
    let labels: serde_json::Map<String, Value> =
        t.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    json!({
        "id": t.id, "name": t.name, "owner": t.owner, "scopes": t.scopes, "labels": labels,
        "status": status_name(t.status), "hint": t.hint,
        "create_time": opt(t.create_time.as_ref()), "expire_time": opt(t.expire_time.as_ref()),
        "last_used_time": opt(t.last_used_time.as_ref()), "revoke_time": opt(t.revoke_time.as_ref()),
        "revoke_reason": empty_null(&t.revoke_reason),
        "rotated_from": empty_null(&t.rotated_from), "rotated_to": empty_null(&t.rotated_to),
        "not_before": opt(t.not_before.as_ref()), "allowed_cidrs": t.allowed_cidrs,
        "update_time": opt(t.update_time.as_ref()),
    })
}

fn print_token(t: Option<&pb::Token>, output: Output) {
    let Some(t) = t else { return };
    match output {
        Output::Json => println!("{}", token_json(t)),
        Output::Table => print_fields(t),
    }
}

fn print_fields(t: &pb::Token) {
    let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let rows = [
        ("id", t.id.clone()),
        ("name", t.name.clone()),
        ("owner", t.owner.clone()),
        ("status", status_name(t.status).to_owned()),
        ("hint", t.hint.clone()),
        ("scopes", t.scopes.join(" ")),
        ("labels", labels.join(" ")),
        ("created", time(t.create_time.as_ref())),
        ("expires", t.expire_time.as_ref().map_or_else(|| "never".to_owned(), rfc3339)),
        ("not before", time(t.not_before.as_ref())),
        ("allowed from", t.allowed_cidrs.join(" ")),
        ("updated", time(t.update_time.filter(|u| Some(*u) != t.create_time).as_ref())),
        ("last used", t.last_used_time.as_ref().map_or_else(|| "never".to_owned(), rfc3339)),
        ("revoked", time(t.revoke_time.as_ref())),
        ("revoke reason", t.revoke_reason.clone()),
        ("rotated from", t.rotated_from.clone()),
        ("rotated to", t.rotated_to.clone()),
    ];
    for (key, value) in rows {
        if !value.is_empty() && value != "-" {
            println!("{:<14}{value}", format!("{key}:"));
        }
    }
}

fn print_created(secret: &str, token: Option<&pb::Token>, previous: Option<&pb::Token>, output: Output) {
    match output {
        Output::Json => {
            let mut v = json!({ "secret": secret, "token": token.map(token_json) });
            if let Some(p) = previous {
                v["previous"] = token_json(p);
            }
            println!("{v}");
        }
        Output::Table => {
            println!("{:<14}{secret}", "secret:");
            println!("              (shown only now: store it in your secret manager)");
            if let Some(t) = token {
                print_fields(t);
            }
            if let Some(p) = previous {
                println!("\nprevious token:");
                print_fields(p);
            }
        }
    }
}

fn print_list(tokens: &[pb::Token], output: Output) {
    if output == Output::Json {
        println!("{}", Value::Array(tokens.iter().map(token_json).collect()));
        return;
    }
    let header = ["ID", "NAME", "OWNER", "STATUS", "HINT", "CREATED", "EXPIRES", "LAST USED"];
    let rows: Vec<[String; 8]> = tokens
        .iter()
        .map(|t| {
            [
                t.id.clone(),
                t.name.clone(),
                t.owner.clone(),
                status_name(t.status).to_owned(),
                t.hint.clone(),
                time(t.create_time.as_ref()),
                t.expire_time.as_ref().map_or_else(|| "never".to_owned(), rfc3339),
                t.last_used_time.as_ref().map_or_else(|| "never".to_owned(), rfc3339),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&header.map(str::to_owned));
    for row in &rows {
        line(row);
    }
}

fn print_verify(r: &pb::VerifyResponse, output: Output) {
    let result = pb::VerifyResult::try_from(r.result).map_or("unknown", |r| match r {
        pb::VerifyResult::Ok => "ok",
        pb::VerifyResult::Malformed => "malformed",
        pb::VerifyResult::Unknown => "unknown",
        pb::VerifyResult::Expired => "expired",
        pb::VerifyResult::Revoked => "revoked",
        pb::VerifyResult::InsufficientScope => "insufficient_scope",
        pb::VerifyResult::NotYetValid => "not_yet_valid",
        pb::VerifyResult::IpNotAllowed => "ip_not_allowed",
        pb::VerifyResult::Unspecified => "unspecified",
    });
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "valid": r.valid, "result": result,
                "token_id": if r.token_id.is_empty() { Value::Null } else { Value::String(r.token_id.clone()) },
                "owner": if r.valid { Value::String(r.owner.clone()) } else { Value::Null },
                "scopes": r.scopes, "expire_time": r.expire_time.as_ref().map(rfc3339),
            })
        ),
        Output::Table => {
            println!("{:<10}{}", "valid:", r.valid);
            println!("{:<10}{result}", "result:");
            if !r.token_id.is_empty() {
                println!("{:<10}{}", "token:", r.token_id);
            }
            if r.valid {
                println!("{:<10}{}", "owner:", r.owner);
                println!("{:<10}{}", "scopes:", r.scopes.join(" "));
                println!("{:<10}{}", "expires:", r.expire_time.as_ref().map_or_else(|| "never".to_owned(), rfc3339));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_what_it_formats() {
        for seconds in [0, 1_795_305_600, 951_782_400, -86_400, 4_102_444_799] {
            let t = prost_types::Timestamp { seconds, nanos: 0 };
            assert_eq!(parse_rfc3339(&rfc3339(&t)), Some(t), "{}", rfc3339(&t));
        }
        let t = parse_rfc3339("2026-12-01T00:00:00.25Z").unwrap();
        assert_eq!((t.seconds, t.nanos), (1_796_083_200, 250_000_000));
        for bad in ["2026-12-01", "2026-13-01T00:00:00Z", "2026-12-01T24:00:00Z", "2026-12-01T00:00:00+01:00", "x"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert!(parse_time("2h").unwrap().seconds > parse_past("2h").unwrap().seconds);
        assert!(parse_time("nonsense").is_err());
    }

    #[test]
    fn rfc3339_formats_utc_dates() {
        let t = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
        assert_eq!(rfc3339(&t(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(&t(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(&t(1_795_305_600 + 3_723)), "2026-11-22T01:02:03Z");
        assert_eq!(rfc3339(&t(-1)), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn labels_parse_as_key_value() {
        assert_eq!(parse_label("env=prod=1"), Ok(("env".into(), "prod=1".into())));
        assert!(parse_label("env").is_err());
    }
}
