//! The embedded sled store: the only code that touches sled.
//!
//! Layout in sled: tree `tokens` (16-byte id → encoded record), tree
//! `last_used` (16-byte id → big-endian i64 nanos), tree `meta` (flags).
//! Records are encoded as a private protobuf message ([`StoredToken`]): compact,
//! and new fields can be added without a migration.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    path::Path,
    time::Duration,
};

use prost::Message as _;

use super::{Store, StoreError};
use crate::{change::Change, clock::Time, id::TokenId, record::TokenRecord, token::TokenHash};

impl From<::sled::Error> for StoreError {
    fn from(e: ::sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// Settings of [`SledStore`].
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// sled's page cache, in bytes. Verify never reads sled, so small is fine.
    pub cache_bytes: u64,
    /// fsync sled's files after each flush. sled 0.34's flush ends with
    /// `sync_file_range`, which does not flush the drive's write cache, so
    /// without this an acknowledged write survives a process crash but not
    /// necessarily a power loss.
    pub fsync: bool,
}

/// The embedded sled store.
pub struct SledStore {
    db: ::sled::Db,
    tokens: ::sled::Tree,
    last_used: ::sled::Tree,
    meta: ::sled::Tree,
    /// Handles fsynced after each flush (see [`SledOptions::fsync`]).
    sync_files: Vec<File>,
}

const META_BOOTSTRAPPED: &[u8] = b"bootstrapped";

impl SledStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path, options: &SledOptions) -> Result<SledStore, StoreError> {
        let open_err = |message: String| StoreError::Open { path: dir.to_path_buf(), message };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let config = ::sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes)
            // Our own committer flushes for every write batch; sled's background
            // flusher would only add a second writer of the same pages.
            .flush_every_ms(None);
        // sled's file lock outlives a closed `Db` for a moment while its
        // background tasks finish (a restart within one process, as in tests):
        // retry briefly before calling the directory locked.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(open_err(describe_sled_open_error(e))),
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(|e| open_err(e.to_string()));
        let (tokens, last_used, meta) = (tree("tokens")?, tree("last_used")?, tree("meta")?);
        let mut sync_files = Vec::new();
        if options.fsync {
            for path in [dir.join("db"), dir.to_path_buf()] {
                sync_files.push(File::open(&path).map_err(|e| open_err(format!("{}: {e}", path.display())))?);
            }
        }
        Ok(SledStore { db, tokens, last_used, meta, sync_files })
    }
}

fn is_lock_error(e: &::sled::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

fn describe_sled_open_error(e: ::sled::Error) -> String {
    let text = e.to_string();
    if is_lock_error(&e) {
        "the data directory is locked by another running process (is another tokend using it?)".to_owned()
    } else {
        text
    }
}

impl Store for SledStore {
    fn load(&self, each: &mut dyn FnMut(TokenRecord, Option<Time>)) -> Result<bool, StoreError> {
        let mut last_used = HashMap::new();
        for item in self.last_used.iter() {
            let (key, value) = item?;
            let corrupt = || StoreError::Corrupt { key: hex(&key), message: "bad last-used entry".into() };
            let id = TokenId::from_bytes(key.as_ref().try_into().map_err(|_| corrupt())?).map_err(|_| corrupt())?;
            let nanos = i64::from_be_bytes(value.as_ref().try_into().map_err(|_| corrupt())?);
            last_used.insert(id, Time(nanos));
        }
        for item in self.tokens.iter() {
            let (key, value) = item?;
            let record = decode(&key, &value)?;
            let used = last_used.remove(&record.id);
            each(record, used);
        }
        Ok(self.meta.get(META_BOOTSTRAPPED)?.is_some())
    }

    fn apply(&self, changes: &[Change]) -> Result<(), StoreError> {
        let mut batch = ::sled::Batch::default();
        let mut bootstrapped = false;
        for change in changes {
            match change {
                Change::Put(r) => batch.insert(&r.id.to_bytes()[..], encode(r)),
                Change::Bootstrapped => bootstrapped = true,
            }
        }
        if !bootstrapped {
            // One tree: a batch is atomic and much cheaper than a transaction.
            return Ok(self.tokens.apply_batch(batch)?);
        }
        // The bootstrap token and its marker land together or not at all.
        use ::sled::Transactional;
        (&self.tokens, &self.meta)
            .transaction(|(tokens, meta)| {
                tokens.apply_batch(&batch)?;
                meta.insert(META_BOOTSTRAPPED, &[1u8][..])?;
                Ok(())
            })
            .map_err(|e: ::sled::transaction::TransactionError<()>| StoreError::Io(format!("{e:?}")))
    }

    fn record_last_used(&self, times: &[(TokenId, Time)]) -> Result<(), StoreError> {
        let mut batch = ::sled::Batch::default();
        for (id, t) in times {
            batch.insert(&id.to_bytes()[..], &t.0.to_be_bytes()[..]);
        }
        Ok(self.last_used.apply_batch(batch)?)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        for f in &self.sync_files {
            f.sync_all().map_err(|e| StoreError::Io(format!("fsync: {e}")))?;
        }
        Ok(())
    }
}

/// The stored form of a [`TokenRecord`]. Private to the store: the public
/// API's `Token` message is a different, presentation type.
#[derive(Clone, PartialEq, prost::Message)]
struct StoredToken {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    hash: Vec<u8>,
    #[prost(string, tag = "3")]
    hint: String,
    #[prost(string, tag = "4")]
    name: String,
    #[prost(string, tag = "5")]
    owner: String,
    #[prost(string, repeated, tag = "6")]
    scopes: Vec<String>,
    #[prost(btree_map = "string, string", tag = "7")]
    labels: BTreeMap<String, String>,
    #[prost(int64, tag = "8")]
    create_time: i64,
    #[prost(uint64, optional, tag = "9")]
    ttl_nanos: Option<u64>,
    #[prost(int64, optional, tag = "10")]
    expire_time: Option<i64>,
    #[prost(int64, optional, tag = "11")]
    revoke_time: Option<i64>,
    #[prost(string, tag = "12")]
    revoke_reason: String,
    #[prost(bytes = "vec", optional, tag = "13")]
    rotated_from: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "14")]
    rotated_to: Option<Vec<u8>>,
}

fn encode(r: &TokenRecord) -> Vec<u8> {
    StoredToken {
        id: r.id.to_bytes().to_vec(),
        hash: r.hash.0.to_vec(),
        hint: r.hint.to_string(),
        name: r.name.to_string(),
        owner: r.owner.to_string(),
        scopes: r.scopes.to_vec(),
        labels: r.labels.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        create_time: r.create_time.0,
        ttl_nanos: r.ttl.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        expire_time: r.expire_time.map(|t| t.0),
        revoke_time: r.revoke_time.map(|t| t.0),
        revoke_reason: r.revoke_reason.to_string(),
        rotated_from: r.rotated_from.map(|id| id.to_bytes().to_vec()),
        rotated_to: r.rotated_to.map(|id| id.to_bytes().to_vec()),
    }
    .encode_to_vec()
}

fn decode(key: &[u8], value: &[u8]) -> Result<TokenRecord, StoreError> {
    let corrupt = |message: &str| StoreError::Corrupt { key: hex(key), message: message.to_owned() };
    let s = StoredToken::decode(value).map_err(|e| corrupt(&e.to_string()))?;
    let id_of = |b: &[u8]| -> Result<TokenId, StoreError> {
        TokenId::from_bytes(b.try_into().map_err(|_| corrupt("bad id"))?).map_err(|_| corrupt("bad id"))
    };
    let id = id_of(&s.id)?;
    if id.to_bytes() != key {
        return Err(corrupt("id does not match key"));
    }
    Ok(TokenRecord {
        id,
        hash: TokenHash(s.hash.as_slice().try_into().map_err(|_| corrupt("bad hash"))?),
        hint: s.hint.into(),
        name: s.name.into(),
        owner: s.owner.into(),
        scopes: s.scopes.into_iter().collect(),
        labels: s.labels.into_iter().collect(),
        create_time: Time(s.create_time),
        ttl: s.ttl_nanos.map(Duration::from_nanos),
        expire_time: s.expire_time.map(Time),
        revoke_time: s.revoke_time.map(Time),
        revoke_reason: s.revoke_reason.into(),
        rotated_from: s.rotated_from.as_deref().map(id_of).transpose()?,
        rotated_to: s.rotated_to.as_deref().map(id_of).transpose()?,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{id::IdGenerator, token::Secret};

    fn options() -> SledOptions {
        SledOptions { cache_bytes: 1 << 20, fsync: true }
    }

    fn record(ids: &IdGenerator) -> TokenRecord {
        let s = Secret::generate("tk");
        TokenRecord {
            id: ids.next(Time(1_700_000_000_000_000_000)),
            hash: s.hash(),
            hint: s.hint().into(),
            name: "ci".into(),
            owner: "team-a".into(),
            scopes: ["a:read".to_string(), "b".to_string()].into_iter().collect(),
            labels: [("env".to_string(), "prod".to_string())].into_iter().collect(),
            create_time: Time(1_700_000_000_000_000_000),
            ttl: Some(Duration::from_secs(3600)),
            expire_time: Some(Time(1_700_003_600_000_000_000)),
            revoke_time: None,
            revoke_reason: "".into(),
            rotated_from: Some(ids.next(Time(0))),
            rotated_to: None,
        }
    }

    #[test]
    fn records_round_trip_through_encoding() {
        let ids = IdGenerator::default();
        let r = record(&ids);
        assert_eq!(decode(&r.id.to_bytes(), &encode(&r)).unwrap(), r);
        assert!(matches!(decode(&[0; 16], &encode(&r)), Err(StoreError::Corrupt { .. })));
        assert!(matches!(decode(&r.id.to_bytes(), b"\xff\xff\xff"), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn changes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids = IdGenerator::default();
        let mut r = record(&ids);
        {
            let store = SledStore::open(dir.path(), &options()).unwrap();
            let mut n = 0;
            assert!(!store.load(&mut |_, _| n += 1).unwrap());
            assert_eq!(n, 0);
            store.apply(&[Change::Put(r.clone()), Change::Bootstrapped]).unwrap();
            r.revoke_time = Some(Time(5));
            store.apply(&[Change::Put(r.clone())]).unwrap();
            store.record_last_used(&[(r.id, Time(42))]).unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), &options()).unwrap();
        let mut loaded = Vec::new();
        assert!(store.load(&mut |record, used| loaded.push((record, used))).unwrap(), "bootstrapped");
        assert_eq!(loaded, vec![(r.clone(), Some(Time(42)))]);
    }

    #[test]
    fn a_locked_data_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path(), &options()).unwrap();
        let err = SledStore::open(dir.path(), &options()).err().expect("second open must fail");
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("locked"), "{text}");
    }
}
