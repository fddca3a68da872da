//! The store layer: the one part of kedge that knows the queue's database is sled 0.34.7, and
//! what that costs (ARCHITECTURE.md §6, §8). It opens sled and repairs what a power cut left
//! ([`open`]), makes a flush durable (sled's flush neither fsyncs its data file nor its blob
//! files: [`blobs`]), and turns sled's errors into kedge's kinds ([`StoreError`]), so that
//! nothing above the queue names sled.

mod blobs;
pub(crate) mod open;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What went wrong in the database, in kedge's terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The device is full: nothing more can be written until space is freed.
    #[error("no space left on the device: {0}")]
    NoSpace(io::Error),
    /// Any other failed read or write.
    #[error("I/O error: {0}")]
    Io(io::Error),
    /// The files do not hold what they should: a failed checksum, a file shorter than what
    /// points into it.
    #[error("damaged: {0}")]
    Corrupt(String),
    /// The files were written by a version of the database this one cannot read, or it met a
    /// state it reports as its own bug.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl StoreError {
    /// Whether the error is a failed I/O, after which the handle refuses every later write
    /// until the database is reopened (ARCHITECTURE.md §8).
    pub fn is_io(&self) -> bool {
        matches!(self, Self::NoSpace(_) | Self::Io(_))
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => Self::NoSpace(io),
            // Even a short read (a file shorter than a pointer into it) poisons the handle like
            // any failed I/O: reopening is what runs the repairs of `open`.
            sled::Error::Io(io) => Self::Io(io),
            sled::Error::Corruption { at, bt: _ } => Self::Corrupt(match at {
                Some(at) => format!("corrupt data at {at}"),
                None => "corrupt data".to_owned(),
            }),
            sled::Error::CollectionNotFound(name) => Self::Unsupported(format!(
                "tree {:?} not found",
                String::from_utf8_lossy(&name)
            )),
            sled::Error::Unsupported(why) => Self::Unsupported(why),
            sled::Error::ReportableBug(why) => Self::Unsupported(format!("database bug: {why}")),
        }
    }
}

/// The open database and what makes its flush durable.
pub(crate) struct Store {
    path: PathBuf,
    db: sled::Db,
    /// With fsync durability, the data file, kept open to fdatasync it after each flush.
    data_file: Option<File>,
    /// With fsync durability: sled's blob files, which its flush does not fsync.
    blobs: Option<blobs::BlobSync>,
}

impl Store {
    /// Opens the database in `dir` (repairing what [`open`] can) with `durable` flushes or not.
    pub(crate) fn open(
        dir: &Path,
        cache_bytes: u64,
        durable: bool,
    ) -> Result<(Self, crate::recovery::Recovery), crate::QueueError> {
        let (db, recovery) = open::open_db(dir, cache_bytes)?;
        let data_file = if durable {
            // sled's flush uses sync_file_range, which flushes neither the drive cache nor
            // metadata (ARCHITECTURE.md §8): keep the data file open to fdatasync it.
            let f = dir.join("db");
            Some(File::open(&f).map_err(|source| crate::QueueError::Io { path: f, source })?)
        } else {
            None
        };
        let store = Store {
            path: dir.to_path_buf(),
            blobs: data_file.as_ref().map(|_| blobs::BlobSync::default()),
            data_file,
            db,
        };
        Ok((store, recovery))
    }

    /// The database, for its trees and transactions.
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Whether flushes are made durable (fsync durability).
    pub(crate) fn durable(&self) -> bool {
        self.data_file.is_some()
    }

    /// Flushes sled and, when durable, fsyncs its new blob files and fdatasyncs its data file;
    /// returns how long the fsync calls took. Blobs come first: once the log is durable its
    /// pointers are, and sled cannot open a log that points at a blob file a power cut left
    /// empty.
    pub(crate) fn flush(&self) -> Result<Duration, crate::QueueError> {
        self.db.flush().map_err(|e| crate::QueueError::Db {
            path: self.path.clone(),
            source: e.into(),
        })?;
        let started = Instant::now();
        if let Some(b) = &self.blobs {
            b.sync(&self.path).map_err(|source| crate::QueueError::Io {
                path: self.path.join("blobs"),
                source,
            })?;
        }
        if let Some(f) = &self.data_file {
            f.sync_data().map_err(|source| crate::QueueError::Io {
                path: self.path.join("db"),
                source,
            })?;
        }
        Ok(started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_errors_become_kedge_kinds() {
        let full = StoreError::from(sled::Error::Io(io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(
            matches!(full, StoreError::NoSpace(_)) && full.is_io(),
            "{full:?}"
        );
        let eio = StoreError::from(sled::Error::Io(io::Error::from_raw_os_error(libc::EIO)));
        assert!(matches!(eio, StoreError::Io(_)) && eio.is_io(), "{eio:?}");
        let short = StoreError::from(sled::Error::Io(io::ErrorKind::UnexpectedEof.into()));
        assert!(
            matches!(short, StoreError::Io(_)) && short.is_io(),
            "{short:?}"
        );
        let damaged = StoreError::from(sled::Error::Corruption { at: None, bt: () });
        assert!(
            matches!(damaged, StoreError::Corrupt(_)) && !damaged.is_io(),
            "{damaged:?}"
        );
        let bad = StoreError::from(sled::Error::Unsupported("old format".into()));
        assert!(
            matches!(bad, StoreError::Unsupported(_)) && !bad.is_io(),
            "{bad:?}"
        );
    }
}
