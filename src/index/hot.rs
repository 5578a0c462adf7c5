//! The hot map: token hash → entry, the one lookup Verify makes.
//!
//! Sharded behind `RwLock`s so that verifications on different cores rarely
//! touch the same lock word. Each shard is a table of bare entry pointers:
//! the entry holds its own hash, so the table stores no key (a map keyed by
//! the 32-byte hash spent 40 bytes a slot, this spends 8 and one control
//! byte). A blake3 output is uniformly distributed, so its first eight bytes
//! are the table's hash and byte 8 picks the shard; equality compares all 32
//! bytes, read from the entry the lookup was going to read anyway.

use std::sync::{Arc, RwLock};

use hashbrown::{HashTable, hash_table};

use super::{Entry, read, write};
use crate::token::TokenHash;

/// Number of shards (a power of two).
const SHARDS: usize = 64;

type Shard = HashTable<Arc<Entry>>;

/// Token hash → entry.
pub(super) struct HotMap {
    shards: Box<[RwLock<Shard>]>,
}

#[inline]
fn hash_of(hash: &TokenHash) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&hash.0[..8]);
    u64::from_le_bytes(word)
}

#[inline]
fn shard_of(hash: &TokenHash) -> usize {
    // Not from bytes 0..8: within a shard those would then all share bits
    // the table uses to pick a bucket.
    usize::from(hash.0[8]) & (SHARDS - 1)
}

impl HotMap {
    /// A map with room for `n` entries before any shard grows.
    pub(super) fn with_capacity(n: usize) -> HotMap {
        let per_shard = n.div_ceil(SHARDS);
        HotMap { shards: (0..SHARDS).map(|_| RwLock::new(Shard::with_capacity(per_shard))).collect() }
    }

    /// The entry for `hash`.
    #[inline]
    pub(super) fn get(&self, hash: &TokenHash) -> Option<Arc<Entry>> {
        read(&self.shards[shard_of(hash)]).find(hash_of(hash), |e| e.hash() == hash).cloned()
    }

    /// Adds `entry`, or replaces the entry with the same hash unless that
    /// one is a newer version.
    pub(super) fn insert(&self, entry: Arc<Entry>) {
        put(&mut write(&self.shards[shard_of(entry.hash())]), entry);
    }

    /// [`HotMap::insert`] into a map nobody else holds yet (loading).
    pub(super) fn insert_mut(&mut self, entry: Arc<Entry>) {
        let shard = self.shards[shard_of(entry.hash())].get_mut().unwrap_or_else(|e| e.into_inner());
        put(shard, entry);
    }
}

fn put(shard: &mut Shard, entry: Arc<Entry>) {
    let hash = *entry.hash();
    match shard.entry(hash_of(&hash), |e| *e.hash() == hash, |e| hash_of(e.hash())) {
        hash_table::Entry::Occupied(mut held) => {
            if held.get().version() <= entry.version() {
                *held.get_mut() = entry;
            }
        }
        hash_table::Entry::Vacant(slot) => {
            slot.insert(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{clock::Time, id::IdGenerator, token::Secret};

    fn entry(hash: TokenHash, version: u64) -> Arc<Entry> {
        let mut r = crate::record::sample(IdGenerator::default().next(Time(0)), &Secret::generate("tk"), "o");
        r.hash = hash;
        r.version = version;
        Arc::new(Entry::for_test(r))
    }

    #[test]
    fn hashes_sharing_their_first_nine_bytes_stay_apart() {
        // Same table hash and same shard: only the full comparison tells
        // them apart.
        let mut a = [7u8; 32];
        let mut b = a;
        a[31] = 1;
        b[31] = 2;
        let (a, b) = (TokenHash(a), TokenHash(b));
        let map = HotMap::with_capacity(0);
        map.insert(entry(a, 1));
        map.insert(entry(b, 1));
        assert_eq!(map.get(&a).unwrap().hash(), &a);
        assert_eq!(map.get(&b).unwrap().hash(), &b);
        let mut c = a.0;
        c[20] ^= 0xff;
        assert!(map.get(&TokenHash(c)).is_none());
        // Replacing keeps one entry per hash, and never an older version.
        map.insert(entry(a, 2));
        assert_eq!(map.get(&a).unwrap().version(), 2);
        map.insert(entry(a, 1));
        assert_eq!(map.get(&a).unwrap().version(), 2);
        assert_eq!(map.shards.iter().map(|s| read(s).len()).sum::<usize>(), 2);
    }
}
