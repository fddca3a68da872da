//! Opening sled whatever state a power cut or a crash left it in (ARCHITECTURE.md §6): a lock
//! held by another kedge is refused with its pid, interrupted snapshots and torn blob files are
//! moved aside, and a database that still cannot be opened is moved to
//! `quarantine/<timestamp>/` beside the queue directory so that a fresh one can start.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::QueueError;
use crate::recovery::{META_QUARANTINED, Recovery};

/// File written into each quarantine folder saying why it was made.
pub(crate) const REASON_FILE: &str = "REASON";

/// Opens sled in `dir`, repairing what can be repaired; see the module docs.
pub(crate) fn open_db(dir: &Path, cache_bytes: u64) -> Result<(sled::Db, Recovery), QueueError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| QueueError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    check_not_in_use(dir)?;
    let mut recovery = Recovery::default();
    let first = match try_open(dir, cache_bytes) {
        Ok(db) => return Ok((db, recovery)),
        Err(e) => e,
    };
    if !is_damage(&first) {
        return Err(QueueError::Db {
            path: dir.to_path_buf(),
            source: first.into(),
        });
    }
    // sled issues #1527/#1533: a snapshot interrupted by a crash is read as the newest one and
    // makes every later open fail. Without it sled replays its log from the previous snapshot.
    let generating = generating_snapshots(dir).map_err(io_err(dir))?;
    // A blob file whose name a power cut kept and whose data it did not: sled fails the whole
    // open on it, but skips a log entry whose blob file is missing. Every blob an acknowledged
    // commit needs was fsynced before the acknowledgement, so a damaged one was never needed.
    let blobs = damaged_blobs(dir).map_err(io_err(&dir.join("blobs")))?;
    let second = if generating.is_empty() && blobs.is_empty() {
        first
    } else {
        let to = quarantine_dir(dir)?;
        for f in generating.iter().chain(&blobs) {
            let mut name = f.file_name().unwrap_or_default().to_owned();
            if blobs.contains(f) {
                name = format!("blob-{}", name.to_string_lossy()).into();
            }
            let dest = to.join(name);
            std::fs::rename(f, &dest).map_err(io_err(f))?;
            if blobs.contains(f) {
                recovery.moved_blobs.push(dest);
            } else {
                recovery.moved_snapshots.push(dest);
            }
        }
        write_reason(
            &to,
            &format!(
                "{} interrupted sled snapshot(s), {} damaged blob file(s); open failed with: {first}",
                generating.len(),
                blobs.len()
            ),
        );
        tracing::error!(
            queue = %dir.display(),
            moved_to = %to.display(),
            snapshots = generating.len(),
            blobs = blobs.len(),
            error = %first,
            "QUEUE RECOVERY: sled could not open the queue; moved interrupted snapshots and \
             damaged blob files aside and retrying"
        );
        match try_open(dir, cache_bytes) {
            Ok(db) => {
                tracing::warn!(queue = %dir.display(), "queue opened after moving the files aside");
                return Ok((db, recovery));
            }
            Err(e) if is_damage(&e) => e,
            Err(e) => {
                return Err(QueueError::Db {
                    path: dir.to_path_buf(),
                    source: e.into(),
                });
            }
        }
    };
    // Still corrupt: keep the damaged files for a human and start over rather than exit and be
    // restarted into the same failure forever.
    let to = quarantine_dir(dir)?;
    let dest = to.join(dir.file_name().unwrap_or_else(|| "queue".as_ref()));
    std::fs::rename(dir, &dest).map_err(io_err(dir))?;
    write_reason(&to, &format!("sled could not open the queue: {second}"));
    tracing::error!(
        queue = %dir.display(),
        moved_to = %dest.display(),
        error = %second,
        "QUEUE RECOVERY: the queue database is corrupt and was quarantined; starting a fresh \
         queue. Records that were in it are not delivered; see the quarantine folder"
    );
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let db = try_open(dir, cache_bytes).map_err(|source| QueueError::Db {
        path: dir.to_path_buf(),
        source: source.into(),
    })?;
    let meta = db.open_tree("meta").map_err(|source| QueueError::Db {
        path: dir.to_path_buf(),
        source: source.into(),
    })?;
    // The marker lets a health check (and `kedge queue stats`) report the quarantine later.
    meta.insert(META_QUARANTINED, dest.to_string_lossy().as_bytes())
        .map_err(|source| QueueError::Db {
            path: dir.to_path_buf(),
            source: source.into(),
        })?;
    recovery.quarantined_db = Some(dest);
    Ok((db, recovery))
}

fn try_open(dir: &Path, cache_bytes: u64) -> sled::Result<sled::Db> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        // kedge flushes itself after each group commit; sled's background flusher would
        // only add writes.
        .flush_every_ms(None)
        .open()
}

/// Whether sled's error means damaged files (as opposed to permissions, a full disk, a lock):
/// a failed checksum, or a file shorter than what points into it.
fn is_damage(e: &sled::Error) -> bool {
    match e {
        sled::Error::Corruption { .. } => true,
        sled::Error::Io(io) => io.kind() == std::io::ErrorKind::UnexpectedEof,
        _ => false,
    }
}

/// Blob files that fail sled's own framing: a little-endian CRC-32 of the rest, a kind byte,
/// then the data.
pub(crate) fn damaged_blobs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir.join("blobs")) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let bytes = std::fs::read(&path)?;
        let intact = bytes.len() > 4 && bytes[..4] == crc32fast::hash(&bytes[4..]).to_le_bytes();
        if !intact {
            out.push(path);
        }
    }
    Ok(out)
}

fn generating_snapshots(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// A new `quarantine/<unix seconds>-<nanos>/` folder beside the queue directory (in the data
/// directory for the default layout), so that moving the whole queue there is a rename.
fn quarantine_dir(dir: &Path) -> Result<PathBuf, QueueError> {
    let base = dir
        .parent()
        .map_or_else(|| PathBuf::from("quarantine"), |p| p.join("quarantine"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let to = base.join(format!("{}-{:09}", now.as_secs(), now.subsec_nanos()));
    std::fs::create_dir_all(&to).map_err(|source| QueueError::Io {
        path: to.clone(),
        source,
    })?;
    Ok(to)
}

fn write_reason(to: &Path, reason: &str) {
    if let Err(e) = std::fs::write(to.join(REASON_FILE), format!("{reason}\n")) {
        tracing::warn!(error = %e, folder = %to.display(), "cannot write the quarantine reason");
    }
}

/// Refuses a queue whose `db` file another process holds locked (sled takes an exclusive
/// `flock`), naming the process when `/proc/locks` tells.
fn check_not_in_use(dir: &Path) -> Result<(), QueueError> {
    let db = dir.join("db");
    let Ok(file) = std::fs::File::open(&db) else {
        // No data file yet: a fresh queue, nobody can hold it.
        return Ok(());
    };
    // A just-dropped sled handle releases its lock only when its background threads finish:
    // give that a moment, so that a reopen in the same process is not taken for another kedge.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        // SAFETY: flock on a descriptor we own; the lock goes with `file` when it is dropped.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    use std::os::unix::fs::MetadataExt;
    let pid = file.metadata().ok().and_then(|m| lock_holder(m.ino()));
    Err(QueueError::InUse {
        path: dir.to_path_buf(),
        pid,
    })
}

/// The pid holding a flock on inode `ino`, from `/proc/locks`.
fn lock_holder(ino: u64) -> Option<u32> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        let i = f.iter().position(|s| *s == "FLOCK")?;
        let pid = f.get(i + 3)?.parse().ok()?;
        let file_ino: u64 = f.get(i + 4)?.rsplit(':').next()?.parse().ok()?;
        (file_ino == ino).then_some(pid)
    })
}
