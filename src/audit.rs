//! The audit trail: one event for every admin change and for every admin
//! call refused to an authenticated token, chained by hash so that nobody
//! can quietly rewrite, drop or reorder it.
//!
//! An event is drafted by whoever knows what happened (the registry for a
//! change, the admin service for a refusal) and sealed by the store as it
//! appends it, in the same atomic batch or transaction as the change:
//! the store owns the chain's head, so sealing and appending are one step
//! (one chain per token set, replicas included). Sealing numbers the event
//! (from 1) and sets
//!
//! ```text
//! hash = blake3(prev_hash || canonical encoding of the event)
//! ```
//!
//! with the first event's `prev_hash` 32 zero bytes. The canonical encoding
//! is the protobuf encoding of `tokend.v1.AuditEvent` with `prev_hash` and
//! `hash` unset, fields in number order, unset (default) fields omitted and
//! `details` entries in key order — what [`Event`] encodes (and stores, with
//! the two hashes added). [`Chain`] recomputes it.
//!
//! An event never holds a secret or a token hash: details name what changed
//! in the words of the API (`name`, `scopes`, `expire_time`, …).

use std::{
    collections::BTreeMap,
    fmt,
    fs::File,
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Mutex,
};

use prost::Message as _;

use crate::{
    cidr::Allowlist,
    clock::{Time, rfc3339},
    id::TokenId,
    record::{Labels, TokenRecord},
};

/// A blake3 hash in the chain.
pub type Hash = [u8; 32];

/// The first event's `prev_hash`.
pub const GENESIS: Hash = [0; 32];

/// An event as the caller knows it, before the store numbers and chains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// When it happened.
    pub time: Time,
    /// The admin token that acted (none for the bootstrap).
    pub actor_id: Option<TokenId>,
    /// The RPC's name in lower case (`issue`, `revoke`, …) or `bootstrap`.
    pub action: &'static str,
    /// The token acted on (for Rotate the old one), if one.
    pub target_id: Option<TokenId>,
    /// That token's owner (for a refused Issue, the owner asked for).
    pub owner: String,
    /// The gRPC code's canonical name: `OK`, `PERMISSION_DENIED`, …
    pub code: &'static str,
    /// The caller's address.
    pub peer: Option<IpAddr>,
    /// What changed, or why the call was refused.
    pub details: BTreeMap<String, String>,
}

impl Draft {
    /// A draft of `action` by `actor` on `target` of `owner`, answered OK,
    /// with no details yet.
    pub fn ok(time: Time, action: &'static str, actor: Option<(TokenId, Option<IpAddr>)>, owner: &str) -> Draft {
        Draft {
            time,
            actor_id: actor.map(|(id, _)| id),
            action,
            target_id: None,
            owner: owner.to_owned(),
            code: "OK",
            peer: actor.and_then(|(_, peer)| peer),
            details: BTreeMap::new(),
        }
    }

    /// Adds a detail.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Draft {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// The event without its place in the chain (`seq` 0, no hashes): what
    /// a store that seals later keeps until then.
    pub fn unsealed(&self) -> Event {
        let (seconds, nanos) = self.time.to_parts();
        Event {
            seq: 0,
            time: Some(prost_types::Timestamp { seconds, nanos }),
            actor_id: self.actor_id.map(|id| id.to_string()).unwrap_or_default(),
            action: self.action.to_owned(),
            target_id: self.target_id.map(|id| id.to_string()).unwrap_or_default(),
            owner: self.owner.clone(),
            code: self.code.to_owned(),
            peer: self.peer.map(|ip| ip.to_canonical().to_string()).unwrap_or_default(),
            details: self.details.clone(),
            prev_hash: Vec::new(),
            hash: Vec::new(),
        }
    }

    /// Adds `labels` as `labels.<key>` details (`labels` alone, empty, for
    /// none).
    pub fn with_labels(mut self, labels: &Labels) -> Draft {
        if labels.is_empty() {
            return self.with("labels", "");
        }
        for (key, value) in labels.iter() {
            self = self.with(&format!("labels.{key}"), value);
        }
        self
    }

    /// Adds what a new token was given: name, scopes, labels, expiry,
    /// not-before, allowlist (never its secret or hash).
    pub fn with_record(self, r: &TokenRecord) -> Draft {
        let mut draft = self.with("name", &*r.name).with("scopes", r.scopes.joined()).with_labels(&r.labels);
        if let Some(t) = r.expire_time {
            draft = draft.with("expire_time", time_text(t));
        }
        if let Some(t) = r.not_before {
            draft = draft.with("not_before", time_text(t));
        }
        if !r.allowed_cidrs.is_empty() {
            draft = draft.with("allowed_cidrs", cidrs_text(&r.allowed_cidrs));
        }
        if let Some(from) = r.rotated_from {
            draft = draft.with("rotated_from", from.to_string());
        }
        draft
    }
}

/// A time in details: RFC 3339, UTC.
pub fn time_text(t: Time) -> String {
    let (seconds, nanos) = t.to_parts();
    rfc3339(seconds, nanos)
}

/// An allowlist in details: its canonical entries, space-separated.
pub fn cidrs_text(list: &Allowlist) -> String {
    list.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" ")
}

/// A sealed event: its stored form and the canonical encoding it is hashed
/// over (see the module docs) are the API's own `tokend.v1.AuditEvent`,
/// generated with `details` as a `BTreeMap` (`build.rs`), so its entries
/// encode in key order.
pub type Event = crate::pb::AuditEvent;

impl Event {
    /// `time` as a [`Time`].
    pub fn time(&self) -> Time {
        let t = self.time.unwrap_or_default();
        Time(t.seconds.saturating_mul(1_000_000_000).saturating_add(i64::from(t.nanos)))
    }

    /// The hash this event must carry if `prev` precedes it.
    pub fn expected_hash(&self, prev: &Hash) -> Hash {
        let body = Event { prev_hash: Vec::new(), hash: Vec::new(), ..self.clone() };
        let mut hasher = blake3::Hasher::new();
        hasher.update(prev);
        hasher.update(&body.encode_to_vec());
        *hasher.finalize().as_bytes()
    }

    /// Decodes a stored event.
    pub fn decode_stored(bytes: &[u8]) -> Result<Event, prost::DecodeError> {
        Event::decode(bytes)
    }

    /// One line of `--audit-log-file`: the event in protobuf's JSON mapping
    /// (lowerCamelCase names, uint64 as a string, bytes in base64, unset
    /// fields left out).
    pub fn to_json_line(&self) -> String {
        let mut line = serde_json::Map::new();
        let mut put = |key: &str, value: serde_json::Value| {
            line.insert(key.to_owned(), value);
        };
        put("seq", self.seq.to_string().into());
        if let Some(t) = self.time {
            put("time", rfc3339(t.seconds, t.nanos).into());
        }
        for (key, value) in [
            ("actorId", &self.actor_id),
            ("action", &self.action),
            ("targetId", &self.target_id),
            ("owner", &self.owner),
            ("code", &self.code),
            ("peer", &self.peer),
        ] {
            if !value.is_empty() {
                put(key, value.as_str().into());
            }
        }
        if !self.details.is_empty() {
            put(
                "details",
                self.details.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect(),
            );
        }
        put("prevHash", base64(&self.prev_hash).into());
        put("hash", base64(&self.hash).into());
        serde_json::Value::Object(line).to_string()
    }
}

/// The end of a chain: the last event's number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The last event's `seq` (0: no event yet).
    pub seq: u64,
    /// The last event's hash ([`GENESIS`] before the first).
    pub hash: Hash,
}

impl Head {
    /// The head of an empty chain.
    pub const EMPTY: Head = Head { seq: 0, hash: GENESIS };

    /// The head after `event`; `None` if its hash is not 32 bytes.
    pub fn of(event: &Event) -> Option<Head> {
        Some(Head { seq: event.seq, hash: event.hash.as_slice().try_into().ok()? })
    }

    /// Numbers and chains `draft` after this head.
    pub fn seal(&self, draft: &Draft) -> Event {
        self.chain(draft.unsealed())
    }

    /// Numbers and chains an unsealed event (see [`Draft::unsealed`]) after
    /// this head.
    pub fn chain(&self, mut event: Event) -> Event {
        event.seq = self.seq + 1;
        event.prev_hash = self.hash.to_vec();
        event.hash = event.expected_hash(&self.hash).to_vec();
        event
    }
}

/// Where a chain stops holding together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at seq {seq}: {why}")]
pub struct Broken {
    /// The first sequence number that does not check out.
    pub seq: u64,
    /// What is wrong there.
    pub why: String,
}

/// Recomputes a chain, event by event in stored order.
#[derive(Debug, Clone, Copy)]
pub struct Chain {
    head: Head,
}

impl Default for Chain {
    fn default() -> Self {
        Chain { head: Head::EMPTY }
    }
}

impl Chain {
    /// Checks the next stored event (`None`: stored bytes that do not
    /// decode) against everything before it.
    pub fn push(&mut self, event: Option<&Event>) -> Result<(), Broken> {
        let seq = self.head.seq + 1;
        let broken = |why: String| Err(Broken { seq, why });
        let Some(event) = event else {
            return broken("the stored event does not decode".into());
        };
        if event.seq != seq {
            return broken(format!("found event {} in its place (an event deleted or moved)", event.seq));
        }
        if event.prev_hash != self.head.hash {
            return broken("prev_hash is not the previous event's hash".into());
        }
        if event.hash != event.expected_hash(&self.head.hash) {
            return broken("the event was modified (its hash does not match its contents)".into());
        }
        self.head = Head::of(event).expect("checked: equal to a 32-byte hash");
        Ok(())
    }

    /// The events checked so far and the last one's hash.
    pub fn head(&self) -> Head {
        self.head
    }
}

/// Which events ListAuditEvents returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only events on this token.
    pub target_id: Option<TokenId>,
    /// Only events by this admin token.
    pub actor_id: Option<TokenId>,
    /// Only events at or after this time.
    pub since: Option<Time>,
    /// Only events of these owners (a caller limited to some owners).
    pub owners: Option<Vec<String>>,
}

impl Filter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        let id = |want: Option<TokenId>, have: &str| want.is_none_or(|id| have.parse() == Ok(id));
        id(self.target_id, &event.target_id)
            && id(self.actor_id, &event.actor_id)
            && self.since.is_none_or(|since| event.time() >= since)
            && self.owners.as_ref().is_none_or(|owners| owners.contains(&event.owner))
    }
}

/// One page of events.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Matching events in sequence order.
    pub events: Vec<Event>,
    /// The last sequence number looked at, if there may be more after it.
    pub next_after: Option<u64>,
}

/// `--audit-log-file`: every sealed event, appended as a JSON line once its
/// change is durable, for log shippers. The store stays the record: a line
/// that cannot be written is logged as an error, and the call it audits is
/// not failed for it. With several writers at once (PostgreSQL), lines may
/// be a few events out of order; each carries its `seq`.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    /// Opens `path` for appending, creating it if needed.
    pub fn open(path: &Path) -> std::io::Result<LogFile> {
        let file = File::options().create(true).append(true).open(path)?;
        Ok(LogFile { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    /// Appends `events`, one line each, in one write.
    pub fn append(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut text = String::new();
        for event in events {
            text.push_str(&event.to_json_line());
            text.push('\n');
        }
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(text.as_bytes()) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write to --audit-log-file");
        }
    }
}

impl fmt::Debug for LogFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogFile({})", self.path.display())
    }
}

/// Most events one page looks at: a filter that matches little must not
/// make one call read the whole trail.
pub const SCAN_BUDGET: usize = 10_000;

/// Cuts a page from stored events in sequence order (`(seq, event)`, after
/// the page token's position): up to `limit` that pass `filter`, looking at
/// no more than [`SCAN_BUDGET`] events.
pub fn page_of<E>(
    stored: impl IntoIterator<Item = Result<(u64, Event), E>>,
    filter: &Filter,
    limit: usize,
) -> Result<Page, E> {
    let mut page = Page::default();
    for (scanned, item) in stored.into_iter().enumerate() {
        let (seq, event) = item?;
        if filter.matches(&event) {
            if page.events.len() == limit {
                // One more passes: there is a next page.
                page.next_after = page.events.last().map(|e| e.seq);
                return Ok(page);
            }
            page.events.push(event);
        }
        if scanned + 1 >= SCAN_BUDGET {
            page.next_after = Some(seq);
            return Ok(page);
        }
    }
    Ok(page)
}

/// Standard base64 with padding, as protobuf's JSON mapping writes bytes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} events, head ", self.seq)?;
        self.hash.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::IdGenerator;

    fn chain(n: usize) -> Vec<Event> {
        let ids = IdGenerator::default();
        let mut head = Head::EMPTY;
        (0..n)
            .map(|i| {
                let draft = Draft {
                    target_id: Some(ids.next(Time(1))),
                    ..Draft::ok(Time(1_795_305_600_000_000_000 + i as i64), "issue", None, "team-a")
                }
                .with("name", format!("ci-{i}"))
                .with("scopes", "deploy");
                let event = head.seal(&draft);
                head = Head::of(&event).unwrap();
                event
            })
            .collect()
    }

    fn check(events: &[Event]) -> Result<Head, Broken> {
        let mut chain = Chain::default();
        events.iter().try_for_each(|e| chain.push(Some(e)))?;
        Ok(chain.head())
    }

    #[test]
    fn a_sealed_chain_checks_out() {
        let events = chain(5);
        assert_eq!(events[0].prev_hash, GENESIS.to_vec());
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        let head = check(&events).unwrap();
        assert_eq!(head.seq, 5);
        assert_eq!(head.hash.to_vec(), events[4].hash);
        // The hash covers the previous hash and the canonical encoding.
        let body = Event { prev_hash: vec![], hash: vec![], ..events[1].clone() };
        let mut input = events[0].hash.clone();
        input.extend(body.encode_to_vec());
        assert_eq!(events[1].hash, blake3::hash(&input).as_bytes().to_vec());
        // Stored and decoded, an event is the same.
        assert_eq!(Event::decode_stored(&events[2].encode_to_vec()).unwrap(), events[2]);
    }

    #[test]
    fn tampering_is_found_at_the_first_broken_event() {
        let events = chain(5);
        let mut modified = events.clone();
        modified[2].details.insert("scopes".into(), "deploy admin".into());
        assert_eq!(check(&modified).unwrap_err().seq, 3);
        let mut deleted = events.clone();
        deleted.remove(1);
        assert_eq!(check(&deleted).unwrap_err().seq, 2);
        let mut reordered = events.clone();
        reordered.swap(3, 4);
        assert_eq!(check(&reordered).unwrap_err().seq, 4);
        let mut renumbered = events.clone();
        renumbered[3].seq = 4; // unchanged number, rewritten hash link
        renumbered[3].prev_hash = GENESIS.to_vec();
        assert_eq!(check(&renumbered).unwrap_err().seq, 4);
        let mut chain = Chain::default();
        chain.push(Some(&events[0])).unwrap();
        assert_eq!(chain.push(None).unwrap_err().seq, 2);
    }

    #[test]
    fn json_lines_follow_the_protobuf_json_mapping() {
        let event = &chain(1)[0];
        let line: serde_json::Value = serde_json::from_str(&event.to_json_line()).unwrap();
        assert_eq!(line["seq"], "1");
        assert_eq!(line["time"], "2026-11-22T00:00:00Z");
        assert_eq!(line["action"], "issue");
        assert_eq!(line["targetId"], event.target_id.as_str());
        assert_eq!(line["details"]["name"], "ci-0");
        assert_eq!(line["prevHash"], "A".repeat(43) + "=");
        assert!(line.get("actorId").is_none(), "unset fields are left out");
        assert_eq!(base64(b"tokend"), "dG9rZW5k");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    #[test]
    fn filters_combine() {
        let events = chain(3);
        let target = events[1].target_id.parse::<TokenId>().unwrap();
        let only = |f: Filter| events.iter().filter(|e| f.matches(e)).map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(only(Filter::default()), [1, 2, 3]);
        assert_eq!(only(Filter { target_id: Some(target), ..Default::default() }), [2]);
        assert_eq!(only(Filter { since: Some(events[1].time()), ..Default::default() }), [2, 3]);
        assert_eq!(only(Filter { owners: Some(vec!["team-b".into()]), ..Default::default() }), Vec::<u64>::new());
        assert_eq!(
            only(Filter {
                owners: Some(vec!["team-a".into()]),
                since: events[2].time.map(|_| events[2].time()),
                ..Default::default()
            }),
            [3]
        );
    }
}
