//! The embedded sled store: the only code that touches sled.
//!
//! Layout in sled: tree `tokens` (16-byte id → record, encoded by
//! `codec`), tree `last_used` (16-byte id → big-endian i64 nanos), tree
//! `meta` (flags), tree `audit` (big-endian u64 seq → sealed audit event).
//!
//! The chain's head is kept in memory, behind a mutex held from sealing an
//! event to its transaction's end, so events are numbered in the order
//! they land.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use super::{
    Decoder, OwnerQuota, Store, StoreError,
    codec::{decode, encode, hex},
    fsync::Fsync,
};
use crate::{audit, change::Change, clock::Time, id::TokenId, record::TokenRecord};

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
    /// Sync sled's log (and any directory whose names changed) after each
    /// flush. sled 0.34's flush ends with `sync_file_range`, which does not
    /// flush the drive's write cache, so without this an acknowledged write
    /// survives a process crash but not necessarily a power loss.
    pub fsync: bool,
}

/// The embedded sled store.
pub struct SledStore {
    db: ::sled::Db,
    tokens: ::sled::Tree,
    last_used: ::sled::Tree,
    meta: ::sled::Tree,
    audit: ::sled::Tree,
    /// The audit chain's last event.
    head: Mutex<audit::Head>,
    /// What is synced after each flush (see [`SledOptions::fsync`]).
    fsync: Option<Fsync>,
}

const META_BOOTSTRAPPED: &[u8] = b"bootstrapped";
/// Records read by the last load (sled counts a tree only by reading it).
const META_LOADED: &[u8] = b"loaded";

impl SledStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path, options: &SledOptions) -> Result<SledStore, StoreError> {
        let open_err = |message: String| StoreError::Open { path: dir.to_path_buf(), message };
        // What create_dir_all is about to make, so --fsync can sync their entries.
        let created: Vec<_> =
            dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).map(Path::to_path_buf).collect();
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
        let (tokens, last_used, meta, audit) = (tree("tokens")?, tree("last_used")?, tree("meta")?, tree("audit")?);
        let head = match audit.last().map_err(|e| open_err(e.to_string()))? {
            None => audit::Head::EMPTY,
            Some((key, value)) => audit::Event::decode_stored(&value)
                .ok()
                .and_then(|event| audit::Head::of(&event))
                .ok_or_else(|| open_err(format!("the last audit event (key {}) does not decode", hex(&key))))?,
        };
        let fsync = if options.fsync {
            Some(Fsync::open(dir, &created).map_err(|e| open_err(format!("fsync: {e}")))?)
        } else {
            None
        };
        Ok(SledStore { db, tokens, last_used, meta, audit, head: Mutex::new(head), fsync })
    }
}

impl SledStore {
    /// Writes `records` one insert at a time, not atomically: for seeding
    /// a new store. sled 0.34 holds the pages an `apply_batch` touches in
    /// memory far past its cache capacity (spacejam/sled#1303): seeding
    /// ten million tokens in batches took 24 GB.
    pub fn bulk_put(&self, records: &[TokenRecord]) -> Result<(), StoreError> {
        for r in records {
            self.tokens.insert(&r.id.to_bytes()[..], encode(r))?;
        }
        Ok(())
    }

    /// The stored audit events after `after`, numbered by their keys.
    fn audit_after(&self, after: u64) -> impl Iterator<Item = Result<(u64, ::sled::IVec), StoreError>> + '_ {
        // A page token at the very end (u64::MAX) has nothing after it.
        let range = after.checked_add(1).map(|first| self.audit.range(first.to_be_bytes()..));
        range.into_iter().flatten().map(|item| {
            let (key, value) = item?;
            let seq = key
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt { key: hex(&key), message: "bad audit key".into() })?;
            Ok((seq, value))
        })
    }

    fn head(&self) -> MutexGuard<'_, audit::Head> {
        self.head.lock().unwrap_or_else(|e| e.into_inner())
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
    fn load(&self, decoder: &mut Decoder, each: &mut dyn FnMut(TokenRecord, Option<Time>)) -> Result<bool, StoreError> {
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
            let record = decoder.decode(&key, &value)?;
            let used = last_used.remove(&record.id);
            each(record, used);
        }
        Ok(self.meta.get(META_BOOTSTRAPPED)?.is_some())
    }

    fn fetch(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let key = id.to_bytes();
        self.tokens.get(key)?.map(|value| decode(&key, &value)).transpose()
    }

    fn size_hint(&self) -> Option<u64> {
        let value = self.meta.get(META_LOADED).ok()??;
        Some(u64::from_be_bytes(value.as_ref().try_into().ok()?))
    }

    fn note_size(&self, records: u64) -> Result<(), StoreError> {
        self.meta.insert(META_LOADED, &records.to_be_bytes()[..])?;
        Ok(())
    }

    /// One writer (the registry's lock): versions and the quota were
    /// decided from the index already.
    fn apply(
        &self,
        changes: &[Change],
        draft: Option<&audit::Draft>,
        _: Option<OwnerQuota<'_>>,
    ) -> Result<Option<audit::Event>, StoreError> {
        let mut batch = ::sled::Batch::default();
        let mut bootstrapped = false;
        for change in changes {
            match change {
                Change::Put(r) => batch.insert(&r.id.to_bytes()[..], encode(r)),
                Change::Bootstrapped => bootstrapped = true,
            }
        }
        if draft.is_none() && !bootstrapped {
            // One tree: a batch is atomic and much cheaper than a transaction.
            self.tokens.apply_batch(batch)?;
            return Ok(None);
        }
        // The records, their audit event and the bootstrap marker land
        // together or not at all.
        let mut head = self.head();
        let event = draft.map(|draft| head.seal(draft));
        let stored = event.as_ref().map(|event| (event.seq.to_be_bytes(), ::prost::Message::encode_to_vec(event)));
        use ::sled::Transactional;
        (&self.tokens, &self.meta, &self.audit)
            .transaction(|(tokens, meta, audit)| {
                tokens.apply_batch(&batch)?;
                if bootstrapped {
                    meta.insert(META_BOOTSTRAPPED, &[1u8][..])?;
                }
                if let Some((key, value)) = &stored {
                    audit.insert(&key[..], &value[..])?;
                }
                Ok(())
            })
            .map_err(|e: ::sled::transaction::TransactionError<()>| StoreError::Io(format!("{e:?}")))?;
        if let Some(event) = &event {
            *head = audit::Head::of(event).expect("sealed with a 32-byte hash");
        }
        Ok(event)
    }

    fn audit_page(&self, filter: &audit::Filter, after: u64, limit: usize) -> Result<audit::Page, StoreError> {
        let stored = self.audit_after(after).map(|item| {
            let (seq, value) = item?;
            let event = audit::Event::decode_stored(&value)
                .map_err(|e| StoreError::Corrupt { key: format!("audit {seq}"), message: e.to_string() })?;
            Ok((seq, event))
        });
        audit::page_of(stored, filter, limit)
    }

    fn audit_raw(&self, after: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.audit_after(after).take(limit).map(|item| item.map(|(seq, value)| (seq, value.to_vec()))).collect()
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
        if let Some(fsync) = &self.fsync {
            fsync.sync().map_err(|e| StoreError::Io(format!("fsync: {e}")))?;
        }
        Ok(())
    }
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
            not_before: None,
            allowed_cidrs: Default::default(),
            update_time: Time(1_700_000_000_000_000_000),
            revoke_time: None,
            revoke_reason: "".into(),
            rotated_from: Some(ids.next(Time(0))),
            rotated_to: None,
            version: 1,
        }
    }

    #[test]
    fn changes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let ids = IdGenerator::default();
        let mut r = record(&ids);
        {
            let store = SledStore::open(dir.path(), &options()).unwrap();
            let mut n = 0;
            assert!(!store.load(&mut Decoder::default(), &mut |_, _| n += 1).unwrap());
            assert_eq!(n, 0);
            let draft = audit::Draft::ok(Time(1), "bootstrap", None, "tokend");
            let first = store.apply(&[Change::Put(r.clone()), Change::Bootstrapped], Some(&draft), None).unwrap();
            assert_eq!(first.map(|e| e.seq), Some(1));
            r.revoke_time = Some(Time(5));
            store.apply(&[Change::Put(r.clone())], None, None).unwrap();
            store.record_last_used(&[(r.id, Time(42))]).unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path(), &options()).unwrap();
        let mut loaded = Vec::new();
        assert!(
            store.load(&mut Decoder::default(), &mut |record, used| loaded.push((record, used))).unwrap(),
            "bootstrapped"
        );
        assert_eq!(loaded, vec![(r.clone(), Some(Time(42)))]);
        // The chain goes on where it stopped.
        let draft = audit::Draft::ok(Time(2), "revoke", None, "team-a");
        let second = store.apply(&[], Some(&draft), None).unwrap().unwrap();
        assert_eq!(second.seq, 2);
        let page = store.audit_page(&audit::Filter::default(), 0, 10).unwrap();
        let mut chain = audit::Chain::default();
        page.events.iter().try_for_each(|e| chain.push(Some(e))).unwrap();
        assert_eq!(chain.head(), audit::Head::of(&second).unwrap());
        assert_eq!(store.audit_raw(1, 10).unwrap().len(), 1);
        // The load's size is kept for the next start's progress estimate.
        assert_eq!(store.size_hint(), None);
        store.note_size(1).unwrap();
        store.flush().unwrap();
        drop(store);
        assert_eq!(SledStore::open(dir.path(), &options()).unwrap().size_hint(), Some(1));
    }

    #[test]
    fn bulk_put_records_load_back_in_id_order() {
        let dir = tempfile::tempdir().unwrap();
        let ids = IdGenerator::default();
        let records: Vec<_> = (0..100).map(|_| record(&ids)).collect();
        let store = SledStore::open(dir.path(), &options()).unwrap();
        store.bulk_put(&records[50..]).unwrap();
        store.bulk_put(&records[..50]).unwrap();
        let mut loaded = Vec::new();
        store.load(&mut Decoder::default(), &mut |r, _| loaded.push(r)).unwrap();
        assert_eq!(loaded, records);
    }

    #[test]
    fn a_data_dir_several_levels_deep_is_created_with_fsync_on() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a").join("b").join("data");
        let ids = IdGenerator::default();
        let r = record(&ids);
        {
            let store = SledStore::open(&dir, &options()).unwrap();
            store.apply(&[Change::Put(r.clone())], None, None).unwrap();
            store.flush().unwrap();
        }
        let mut loaded = Vec::new();
        SledStore::open(&dir, &options()).unwrap().load(&mut Decoder::default(), &mut |r, _| loaded.push(r)).unwrap();
        assert_eq!(loaded, vec![r]);
    }

    #[test]
    fn pages_sled_keeps_as_blob_files_are_synced_before_the_flush_returns() {
        let dir = tempfile::tempdir().unwrap();
        let ids = IdGenerator::default();
        let store = SledStore::open(dir.path(), &options()).unwrap();
        // Records at the label limit (~20 KiB each): a leaf holds up to 17
        // before it splits, so its page passes sled's 128 KiB blob threshold.
        let value = "v".repeat(crate::spec::MAX_LABEL_VALUE_BYTES);
        for _ in 0..32 {
            let mut r = record(&ids);
            r.labels = (0..crate::spec::MAX_LABELS).map(|i| (format!("k{i}"), value.clone())).collect();
            store.apply(&[Change::Put(r)], None, None).unwrap();
        }
        store.flush().unwrap();
        let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs")).unwrap().map(|e| e.unwrap()).collect();
        assert!(!blobs.is_empty(), "sled keeps large pages in blobs/: what the fsync relies on");
        let fsync = store.fsync.as_ref().unwrap();
        assert!(!fsync.sync().unwrap(), "the flush already synced every blob and directory");
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
