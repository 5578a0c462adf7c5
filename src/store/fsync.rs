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

/// The names in `dir`; none if it does not exist (yet).
fn names(dir: &Path) -> io::Result<BTreeSet<OsString>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map(|e| e.file_name())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
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
        match File::open(dir.join("conf")) {
            Ok(conf) => conf.sync_all()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let fsync = Fsync { db, dir: dir.to_path_buf(), synced: Mutex::default() };
        fsync.sync_names(true)?;
        for parent in created.iter().filter_map(|d| d.parent()).filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(fsync)
    }

    /// Makes everything sled has flushed durable. Returns whether a
    /// directory had changed and was synced.
    pub(super) fn sync(&self) -> io::Result<bool> {
        let changed = self.sync_names(false)?;
        self.db.sync_data()?;
        Ok(changed)
    }

    /// Syncs new blobs and the directories whose names changed since the
    /// last call (all of them when `all`).
    fn sync_names(&self, all: bool) -> io::Result<bool> {
        // Held while listing and syncing, so that concurrent flushes (only
        // the commit thread flushes while serving) never record a listing
        // older than one already synced.
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        let now = Names::read(&self.dir)?;
        if !all && now == *synced {
            return Ok(false);
        }
        let blobs = self.dir.join("blobs");
        for name in now.blobs.difference(&synced.blobs) {
            match File::open(blobs.join(name)) {
                Ok(f) => f.sync_data()?,
                // Collected by sled since the listing: nothing points at it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if all || now.blobs != synced.blobs {
            sync_dir(&blobs)?;
        }
        if all || now.top != synced.top {
            sync_dir(&self.dir)?;
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
