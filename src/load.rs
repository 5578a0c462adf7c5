//! Start-up: the token set read from the store into a new [`Index`].
//!
//! Two threads share the work: the reader (sled's iterator or PostgreSQL's
//! row stream, decoding, which shares what records repeat, and packing each
//! record into its index entry) hands entries over in batches to the thread
//! that builds the index (the entries' shared allocations, the hot map and
//! the id-ordered views). Progress goes to the log every few seconds.
//!
//! Where memory is allocated and freed matters at ten million tokens
//! (README, "Ten million tokens"). Decoding's leftovers are freed on the
//! reader that allocated them: when records crossed over and the builder
//! freed them, glibc's allocator took half of the reader's time. And the
//! entries that live on are allocated on the builder: allocated on the
//! reader, between sled's short-lived page buffers, they took 230 MiB more
//! at ten million.

use std::{sync::Arc, sync::mpsc};

use crate::{
    index::{Entry, Index, Loader},
    progress::{self, Progress},
    store::{Decoder, Store, StoreError},
};

/// Records handed over at a time.
const BATCH: usize = 4096;
/// Batches in flight between the two threads (bounds the memory between).
const IN_FLIGHT: usize = 8;

/// Reads every record of `store` into a new index; returns whether the
/// first admin token was ever created, and the index. Blocking.
pub fn index_from(store: &Arc<dyn Store>) -> Result<(bool, Index), StoreError> {
    let expected = store.size_hint();
    let (send, batches) = mpsc::sync_channel::<Vec<Entry>>(IN_FLIGHT);
    let reader = {
        let store = store.clone();
        std::thread::Builder::new()
            .name("tokend-load".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(BATCH);
                let mut decoder = Decoder::default();
                let bootstrapped = store.load(&mut decoder, &mut |record, used| {
                    // Packed here, given its `Arc` (what lives on) there.
                    batch.push(Entry::new(record, used));
                    if batch.len() == BATCH {
                        // The builder is gone only if it failed; its error is
                        // the one reported.
                        let _ = send.send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
                    }
                })?;
                let _ = send.send(batch);
                Ok::<_, StoreError>((bootstrapped, decoder.into_interner()))
            })
            .map_err(|e| StoreError::Io(format!("cannot start the loading thread: {e}")))?
    };
    // A little above the estimate: the table then need not grow (and
    // rehash millions of entries) for a few tokens more than expected.
    let room = expected.map_or(0, |n| usize::try_from(n + n / 64).unwrap_or(0));
    let mut loader = Loader::new(room);
    let mut progress = Progress::new(expected, progress::INTERVAL);
    for batch in batches {
        for entry in batch {
            loader.push(Arc::new(entry));
            if let Some(r) = progress.step() {
                let left = r.left.map(|d| d.as_secs());
                tracing::info!(
                    tokens = r.done,
                    per_second = r.per_second,
                    expected,
                    seconds_left = left,
                    "loading tokens"
                );
            }
        }
    }
    // The channel closed: the reader has finished (or failed).
    let (bootstrapped, interner) =
        reader.join().map_err(|_| StoreError::Io("the loading thread panicked".into()))??;
    let index = loader.finish(interner);
    if let Err(e) = store.note_size(index.len() as u64) {
        tracing::warn!(error = %e, "cannot note the token count for the next start's progress");
    }
    Ok((bootstrapped, index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        change::Change,
        clock::Time,
        id::IdGenerator,
        record::TokenRecord,
        store::{SledOptions, SledStore},
        token::Secret,
    };

    #[test]
    fn every_record_arrives_across_batches_with_its_last_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &SledOptions { cache_bytes: 1 << 20, fsync: false }).unwrap();
        let ids = IdGenerator::default();
        let secrets: Vec<Secret> = (0..BATCH * 2 + 7).map(|_| Secret::generate("tk")).collect();
        let scopes = || ["a".to_string(), "b".to_string()].into_iter().collect();
        let records: Vec<TokenRecord> = secrets
            .iter()
            .map(|s| TokenRecord { scopes: scopes(), ..crate::record::sample(ids.next(Time(1_000)), s, "o") })
            .collect();
        let changes: Vec<Change> = records.iter().cloned().map(Change::Put).collect();
        store.apply(&changes, None, None).unwrap();
        store.apply(&[Change::Bootstrapped], None, None).unwrap();
        store.record_last_used(&[(records[5].id, Time(42))]).unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        let (bootstrapped, index) = index_from(&store).unwrap();
        assert!(bootstrapped);
        assert_eq!(index.len(), records.len());
        for (secret, record) in secrets.iter().zip(&records) {
            assert_eq!(index.lookup(&secret.hash()).unwrap().id(), record.id);
        }
        assert_eq!(index.get(records[5].id).unwrap().last_used(), Some(Time(42)));
        assert_eq!(store.size_hint(), Some(records.len() as u64), "noted for the next start");
        // Loaded entries share their owner and scopes, and so does a token
        // inserted after loading: the index took over the decoder's copies.
        let (first, last) = (index.get(records[0].id).unwrap(), index.get(records[BATCH * 2].id).unwrap());
        assert!(Arc::ptr_eq(first.owner(), last.owner()));
        assert!(first.scopes().shares_allocation(last.scopes()));
        let later = TokenRecord { scopes: scopes(), ..crate::record::sample(ids.next(Time(2_000)), &secrets[0], "o") };
        index.apply(&[Change::Put(later.clone())]);
        let later = index.get(later.id).unwrap();
        assert!(Arc::ptr_eq(first.owner(), later.owner()));
        assert!(first.scopes().shares_allocation(later.scopes()));
    }
}
