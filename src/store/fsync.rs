//! `--fsync` for the sled store: what makes a flushed write survive power
//! loss, paid for only where something changed.
//!
//! sled 0.34's flush writes its log with `pwrite` and `sync_file_range`,
//! which reaches the drive but not past its write cache, and never syncs a
//! directory. After each flush, [`Fsync::sync`]:
//!
//! * `fdatasync`s the log file `db` — its data and its size, which is all a
//!   reader needs (a full `fsync` would also write its times);
//! * when the data directory's or `blobs/`'s names differ from the last
//!   sync (sled writes a snapshot and renames it into place, removes old
//!   ones, and stores a page larger than 128 KiB as a file in `blobs/`),
//!   syncs each new blob's data, then those directories. Reading two small
//!   directories costs microseconds; syncing one on every flush cost a
//!   second cache flush of the drive per write (durable Issue from one
//!   client: +12 % without it; README, "Ten million tokens").
//!
//! New blobs and changed directories are synced before the log's
//! `fdatasync`, all of it before the write is acknowledged.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// The files and directories one sled store syncs after each flush.
#[derive(Debug)]
pub(super) struct Fsync {
    /// sled's log.
    db: File,
    dir: PathBuf,
    /// The names in the two directories when they were last synced.
    synced: Mutex<Names>,
}

/// The names in the data directory and in its `blobs/`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Names {
    top: BTreeSet<OsString>,
    blobs: BTreeSet<OsString>,
}

impl Names {
    fn read(dir: &Path) -> io::Result<Names> {
        Ok(Names { top: names(dir)?, blobs: names(&dir.join("blobs"))? })
    }
}

/// `Ok(None)` for a file or directory that does not exist (yet, or any
/// more): sled creates and removes them as it goes.
fn existing<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names in `dir`; none if it does not exist.
fn names(dir: &Path) -> io::Result<BTreeSet<OsString>> {
    match existing(std::fs::read_dir(dir))? {
        Some(entries) => entries.map(|e| e.map(|e| e.file_name())).collect(),
        None => Ok(BTreeSet::new()),
    }
}

/// Syncs the file or directory at `path`, if it exists; `data` syncs only
/// what reading it needs (`fdatasync`).
fn sync_path(path: &Path, data: bool) -> io::Result<()> {
    match existing(File::open(path))? {
        Some(f) if data => f.sync_data(),
        Some(f) => f.sync_all(),
        None => Ok(()),
    }
}

impl Fsync {
    /// Syncs everything sled created while opening `dir`, and the entries
    /// of the directories tokend `created` for it (in their parents), and
    /// remembers the names it saw.
    pub(super) fn open(dir: &Path, created: &[PathBuf]) -> io::Result<Fsync> {
        let db = File::open(dir.join("db"))?;
        db.sync_all()?;
        // sled writes its `conf` once, when it creates the store.
        sync_path(&dir.join("conf"), false)?;
        // Against no names at all, every directory with an entry (and every
        // blob) counts as changed.
        let fsync = Fsync { db, dir: dir.to_path_buf(), synced: Mutex::default() };
        fsync.sync_names()?;
        for parent in created.iter().filter_map(|d| d.parent()).filter(|p| !p.as_os_str().is_empty()) {
            sync_path(parent, false)?;
        }
        Ok(fsync)
    }

    /// Makes everything sled has flushed durable. Returns whether a
    /// directory had changed and was synced.
    pub(super) fn sync(&self) -> io::Result<bool> {
        let changed = self.sync_names()?;
        self.db.sync_data()?;
        Ok(changed)
    }

    /// Syncs new blobs and the directories whose names changed since the
    /// last call.
    fn sync_names(&self) -> io::Result<bool> {
        // Held while listing and syncing, so that concurrent flushes (only
        // the commit thread flushes while serving) never record a listing
        // older than one already synced.
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let now = Names::read(&self.dir)?;
        if now == *synced {
            return Ok(false);
        }
        let blobs = self.dir.join("blobs");
        if now.blobs != synced.blobs {
            // A blob collected by sled since the listing is skipped: nothing
            // points at it.
            for name in now.blobs.difference(&synced.blobs) {
                sync_path(&blobs.join(name), true)?;
            }
            sync_path(&blobs, false)?;
        }
        if now.top != synced.top {
            sync_path(&self.dir, false)?;
        }
        *synced = now;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_synced_when_their_names_change_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let fsync = Fsync::open(dir.path(), &[]).unwrap();
        assert!(!fsync.sync().unwrap(), "nothing changed since open");
        assert!(!fsync.sync().unwrap());

        // sled writes a snapshot and renames it into place.
        std::fs::write(dir.path().join("snap.1.generating"), b"s").unwrap();
        std::fs::rename(dir.path().join("snap.1.generating"), dir.path().join("snap.1")).unwrap();
        assert!(fsync.sync().unwrap(), "a new name in the data directory");
        assert!(!fsync.sync().unwrap(), "and once is enough");

        // A blob, in a directory that did not exist at open.
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        assert!(fsync.sync().unwrap(), "blobs/ appeared");
        std::fs::write(dir.path().join("blobs").join("4096"), b"page").unwrap();
        assert!(fsync.sync().unwrap(), "a new blob");
        assert!(!fsync.sync().unwrap());

        // Removals count too (an old snapshot, a collected blob).
        std::fs::remove_file(dir.path().join("blobs").join("4096")).unwrap();
        assert!(fsync.sync().unwrap(), "a blob removed");
        std::fs::remove_file(dir.path().join("snap.1")).unwrap();
        assert!(fsync.sync().unwrap(), "a snapshot removed");
        assert!(!fsync.sync().unwrap());
    }

    #[test]
    fn a_store_without_its_log_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Fsync::open(dir.path(), &[]).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
