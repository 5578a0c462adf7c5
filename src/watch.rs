//! The sequence of token changes that `Watch` streams to siblings' caches.
//!
//! Every record [`crate::index::Index::apply`] takes — a local write, or a
//! change from a shared store's feed — is numbered and kept in a bounded
//! ring ([`RING`] changes), in the order the index applied them. A watcher's
//! position is that number together with this process's epoch (the
//! index's random instance id), so a position from another process or
//! replica, or one the ring has dropped, is told apart and answered with a
//! reset: a cache fed by it must then forget everything.

use std::{
    collections::VecDeque,
    sync::{Mutex, PoisonError},
};

use tokio::sync::watch;

use crate::{clock::Time, id::TokenId, record::TokenRecord};

/// Changes kept for watchers that fall behind or reconnect.
pub const RING: usize = 65_536;

/// What a watcher needs to know of a changed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenChange {
    /// The token.
    pub id: TokenId,
    /// Revoked (for good); otherwise active until `expire_time`.
    pub revoked: bool,
    /// When it expires; `None`: never.
    pub expire_time: Option<Time>,
}

/// A position in the sequence: after change `seq` of process `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    epoch: u64,
    seq: u64,
}

impl Position {
    /// The opaque text a client hands back to resume.
    pub fn token(&self) -> String {
        format!("{:016x}{:016x}", self.epoch, self.seq)
    }

    fn parse(text: &str) -> Option<Position> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let epoch = u64::from_str_radix(&text[..16], 16).ok()?;
        let seq = u64::from_str_radix(&text[16..], 16).ok()?;
        Some(Position { epoch, seq })
    }
}

/// The ring: changes `first + 1 ..= first + len`.
#[derive(Debug, Default)]
struct Ring {
    first: u64,
    changes: VecDeque<TokenChange>,
}

impl Ring {
    fn last(&self) -> u64 {
        self.first + self.changes.len() as u64
    }
}

/// The numbered changes, and a signal for each new one.
#[derive(Debug)]
pub struct Changes {
    epoch: u64,
    ring: Mutex<Ring>,
    /// The number of the newest change.
    newest: watch::Sender<u64>,
}

/// What a watcher reads after its position.
#[derive(Debug)]
pub enum Read {
    /// The changes after it (possibly none), and the position after them.
    Changes(Vec<TokenChange>, Position),
    /// The position is not from this process or has left the ring: start
    /// again from the returned (current) position.
    Reset(Position),
}

impl Changes {
    /// An empty sequence for the process (index) `epoch`.
    pub fn new(epoch: u64) -> Changes {
        Changes { epoch, ring: Mutex::default(), newest: watch::Sender::new(0) }
    }

    /// Numbers the changes of one write (a rotation's two records, say),
    /// all at once, so a watcher reads them together. The caller holds the
    /// index's write lock, so the numbering is the order of application.
    pub(crate) fn push<'a>(&self, records: impl IntoIterator<Item = &'a TokenRecord>) {
        let newest = {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            let before = ring.last();
            for record in records {
                if ring.changes.len() == RING {
                    ring.changes.pop_front();
                    ring.first += 1;
                }
                let (revoked, expire_time) = (record.revoke_time.is_some(), record.expire_time);
                ring.changes.push_back(TokenChange { id: record.id, revoked, expire_time });
            }
            if ring.last() == before {
                return;
            }
            ring.last()
        };
        self.newest.send_replace(newest);
    }

    /// The current position (after the newest change).
    pub fn now(&self) -> Position {
        Position { epoch: self.epoch, seq: self.ring.lock().unwrap_or_else(PoisonError::into_inner).last() }
    }

    /// Where a client's resume token points, if it can be resumed from here.
    pub fn resume(&self, token: &str) -> Option<Position> {
        Position::parse(token).filter(|p| p.epoch == self.epoch)
    }

    /// At most `limit` changes after `from`.
    pub fn read(&self, from: Position, limit: usize) -> Read {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Position { epoch: self.epoch, seq: ring.last() };
        if from.epoch != self.epoch || from.seq < ring.first || from.seq > ring.last() {
            return Read::Reset(now);
        }
        let skip = (from.seq - ring.first) as usize;
        let changes: Vec<TokenChange> = ring.changes.iter().skip(skip).take(limit).cloned().collect();
        let at = Position { epoch: self.epoch, seq: from.seq + changes.len() as u64 };
        Read::Changes(changes, at)
    }

    /// A receiver told of every new change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{id::IdGenerator, record::TokenRecord, token::Secret};

    fn record(ids: &IdGenerator) -> TokenRecord {
        crate::record::sample(ids.next(Time(1_000_000_000)), &Secret::generate("tk"), "o")
    }

    #[test]
    fn positions_resume_in_order_and_reset_when_foreign_or_dropped() {
        let ids = IdGenerator::default();
        let changes = Changes::new(7);
        let start = changes.now();
        let (a, b) = (record(&ids), record(&ids));
        changes.push([&a, &b]);
        let Read::Changes(read, at) = changes.read(start, 10) else { panic!("reset") };
        assert_eq!(read.iter().map(|c| c.id).collect::<Vec<_>>(), [a.id, b.id]);
        assert_eq!(at, changes.now());
        let Read::Changes(read, _) = changes.read(start, 1) else { panic!("reset") };
        assert_eq!(read.len(), 1);
        // Through its text, as a client hands it back.
        assert_eq!(changes.resume(&start.token()), Some(start));
        assert_eq!(changes.resume("nonsense"), None);
        assert_eq!(Changes::new(8).resume(&start.token()), None, "another process");
        // Past the ring's end, the oldest positions are gone.
        changes.push(std::iter::repeat_n(&a, RING));
        assert!(matches!(changes.read(start, 10), Read::Reset(now) if now == changes.now()));
    }
}
