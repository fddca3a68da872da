//! fsync of sled's blob files.
//!
//! sled 0.34 writes any page larger than a quarter segment (≈128 KiB) to its own file under
//! `blobs/`. Chunk and batch bodies live in segment files now, or in their entries when they
//! are small enough that a leaf of them stays below that size (`INLINE_MAX`), so only a queue
//! written by an older kedge or a large chunk kept in the quarantine tree still makes one.
//! sled writes it with `write_all` and no fsync, and logs only a pointer to it. fdatasync of
//! the `db` file therefore does not make such a record durable: after a power cut the pointer
//! survives and the blob may not. Each new blob file is fsynced once, then the directory,
//! before the `db` file whose log points at them, and so before a commit is acknowledged.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

/// The blob files already made durable.
#[derive(Debug, Default)]
pub(super) struct BlobSync {
    synced: Mutex<HashSet<OsString>>,
}

impl BlobSync {
    /// fsyncs every blob file not synced before, then the `blobs` directory.
    pub(super) fn sync(&self, queue_dir: &Path) -> std::io::Result<()> {
        let dir = queue_dir.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(f) => f.sync_all()?,
                    // sled deleted it meanwhile (its page was rewritten): nothing to keep.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new = true;
            }
            present.insert(name);
        }
        // Forget deleted blobs so the set stays as small as the directory.
        *synced = present;
        if new {
            File::open(&dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_blob_files_are_synced_once_and_deleted_ones_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let b = BlobSync::default();
        b.sync(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/1"), b"x").unwrap();
        std::fs::write(dir.path().join("blobs/2"), b"y").unwrap();
        b.sync(dir.path()).unwrap();
        assert_eq!(b.synced.lock().unwrap().len(), 2);
        std::fs::remove_file(dir.path().join("blobs/1")).unwrap();
        b.sync(dir.path()).unwrap();
        assert_eq!(b.synced.lock().unwrap().len(), 1);
    }
}
