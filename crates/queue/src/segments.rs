//! Segment files: the bodies of journal chunks and sealed batches, appended to numbered files
//! under `segments/`, while sled keeps only small pointers to them.
//!
//! sled 0.34 is a poor home for values of 100 KiB and more (issue #4). It writes a page that
//! large to a blob file, and deletes the blob a newer page replaces before that page is
//! durable, so a power cut lost acknowledged records. And its cache never evicts a shard's only
//! page, so every pending chunk stayed in memory. Here a body is written once, made durable
//! before any pointer to it, read back through the page cache only when it is delivered, and
//! its file is deleted whole once no pointer names it and that is durable too.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Directory of the segment files, inside the queue directory.
pub(super) const DIR: &str = "segments";
/// A new file is started past this size: small enough that a batch Kafka keeps refusing pins
/// little space, large enough to keep the file count low for a week of backlog.
const TARGET_SIZE: u64 = 4 << 20;
/// A file is written with zeros this far ahead of its bodies. An fdatasync after an append that
/// grows the file must also write the inode (its size, new blocks), and where ext4 has a journal
/// (`mkfs.ext4`'s default), a journal commit: measured here, 21 KiB reached the disk per
/// 1,500-byte append and fdatasync, against 7.1 KiB within zeros written ahead, the zeros
/// included (bench/README.md). Without a journal the zeros cost about what they save. Small, so
/// that the sync that writes them stays short on slow flash.
const FILL_STEP: u64 = 256 << 10;
/// No zeros are written ahead on a filesystem with less free than this: near a full disk the
/// space is worth more, and sled must never be the one to meet ENOSPC (ARCHITECTURE.md §8).
const FILL_MIN_FREE: u64 = 64 << 20;
const SUFFIX: &str = ".seg";

/// Where a body lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Number of the segment file.
    pub segment: u64,
    /// Byte offset in it.
    pub offset: u64,
    /// Length of the body.
    pub len: u32,
}

impl Location {
    /// Bytes of [`Location::put`]'s encoding.
    pub(super) const ENCODED_LEN: usize = 8 + 8 + 4;

    /// Appends the big-endian encoding.
    pub(super) fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.segment.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
    }

    /// Reads an encoding from the start of `b`.
    pub(super) fn get(b: &[u8]) -> Option<Location> {
        Some(Location {
            segment: u64::from_be_bytes(b.get(..8)?.try_into().ok()?),
            offset: u64::from_be_bytes(b.get(8..16)?.try_into().ok()?),
            len: u32::from_be_bytes(b.get(16..20)?.try_into().ok()?),
        })
    }
}

struct Active {
    id: u64,
    file: Arc<File>,
    len: u64,
    /// Bodies up to here land in zeros written ahead ([`FILL_STEP`]); `u64::MAX` once a fill
    /// was skipped or failed: the file then grows with its bodies.
    filled: u64,
}

#[derive(Default)]
struct State {
    active: Option<Active>,
    next_id: u64,
    /// Files written since the last sync; `None` for a file found at open, opened only while
    /// it is synced, so that a backlog of thousands of files holds no descriptors.
    unsynced: BTreeMap<u64, Option<Arc<File>>>,
    /// A file was created since the last sync: the directory needs an fsync too.
    dir_unsynced: bool,
    /// Pointers to each file, counting bodies written whose pointer is not committed yet, so
    /// that a file is never deleted under a commit in progress.
    refs: BTreeMap<u64, u64>,
    /// Files no pointer names any more: deleted once a sync has made that durable.
    unreferenced: Vec<u64>,
}

/// What one sync makes durable, taken before sled's flush.
pub(super) struct Pending {
    files: BTreeMap<u64, Option<Arc<File>>>,
    dir: bool,
    deletable: Vec<u64>,
}

/// The segment files of one queue.
pub(super) struct Segments {
    dir: PathBuf,
    state: Mutex<State>,
}

impl Segments {
    /// Opens `segments/` in `queue_dir`, given every pointer the database holds. Files nothing
    /// points to are deleted after the first sync; the files pointed to are synced by it, since
    /// the process that wrote them may have died before it synced them.
    pub(super) fn open(
        queue_dir: &Path,
        referenced: impl IntoIterator<Item = Location>,
    ) -> io::Result<Segments> {
        let dir = queue_dir.join(DIR);
        let created = !dir.exists();
        std::fs::create_dir_all(&dir)?;
        if created {
            File::open(queue_dir)?.sync_all()?;
        }
        let mut s = State::default();
        for l in referenced {
            *s.refs.entry(l.segment).or_insert(0) += 1;
        }
        let mut newest = s.refs.keys().next_back().copied();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            // Anything else in the directory is not ours to delete.
            let Some(id) = parse_name(&entry.file_name()) else {
                continue;
            };
            newest = newest.max(Some(id));
            if s.refs.contains_key(&id) {
                s.unsynced.insert(id, None);
            } else {
                s.unreferenced.push(id);
            }
        }
        // Never append to a file a crash may have left with a torn tail.
        s.next_id = newest.map_or(0, |n| n + 1);
        Ok(Segments {
            dir,
            state: Mutex::new(s),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn path_of(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}{SUFFIX}"))
    }

    /// Appends `body`; durable after the next [`Segments::sync`]. The caller commits a pointer
    /// to it, or gives it back with [`Segments::release`].
    pub(super) fn append(&self, body: &[u8]) -> io::Result<Location> {
        let len = u32::try_from(body.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "body over 4 GiB"))?;
        let mut s = self.lock();
        let roll = s
            .active
            .as_ref()
            .is_none_or(|a| a.len > 0 && a.len + u64::from(len) > TARGET_SIZE);
        if roll {
            self.roll(&mut s)?;
        }
        let a = s.active.as_mut().expect("a file was just started");
        // A write that fails halfway leaves bytes past `len` that the next append overwrites.
        a.file.write_all_at(body, a.len)?;
        let loc = Location {
            segment: a.id,
            offset: a.len,
            len,
        };
        a.len += u64::from(len);
        if a.len >= a.filled {
            a.filled = fill_ahead(&a.file, a.len, &self.dir);
        }
        let file = a.file.clone();
        s.unsynced.insert(loc.segment, Some(file));
        *s.refs.entry(loc.segment).or_insert(0) += 1;
        Ok(loc)
    }

    fn roll(&self, s: &mut State) -> io::Result<()> {
        let id = s.next_id;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path_of(id))?;
        s.next_id += 1;
        s.dir_unsynced = true;
        let old = s.active.replace(Active {
            id,
            file: Arc::new(file),
            len: 0,
            filled: 0,
        });
        if let Some(old) = old
            && s.refs.get(&old.id).is_none_or(|n| *n == 0)
        {
            s.refs.remove(&old.id);
            s.unreferenced.push(old.id);
        }
        Ok(())
    }

    /// Drops one pointer to `loc`'s file: its entry was removed, or never committed.
    pub(super) fn release(&self, loc: Location) {
        let mut s = self.lock();
        let active = s.active.as_ref().map(|a| a.id);
        let Some(n) = s.refs.get_mut(&loc.segment) else {
            return;
        };
        *n = n.saturating_sub(1);
        if *n == 0 && active != Some(loc.segment) {
            s.refs.remove(&loc.segment);
            s.unreferenced.push(loc.segment);
        }
    }

    /// Reads the body at `loc`. A pointer past the end of its file is `UnexpectedEof`, never a
    /// huge allocation. A power cut that kept the pointer, not the body, leaves the file short
    /// of it, or zeros written ahead where it was, or a mix: the caller's checks of the body
    /// tell.
    pub(super) fn read(&self, loc: Location) -> io::Result<Vec<u8>> {
        let f = File::open(self.path_of(loc.segment))?;
        let meta = f.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other(format!(
                "segment {:016x} is not a regular file",
                loc.segment
            )));
        }
        let end = loc.offset.checked_add(u64::from(loc.len));
        if end.is_none_or(|end| end > meta.len()) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "segment {:016x} ends before byte {} + {}",
                    loc.segment, loc.offset, loc.len
                ),
            ));
        }
        let mut buf = vec![0; loc.len as usize];
        f.read_exact_at(&mut buf, loc.offset)?;
        Ok(buf)
    }

    /// Takes what the next sync covers: the files written and the files no pointer names. Take
    /// it before sled's flush, so that the flush covers every release behind a deletion.
    pub(super) fn take_pending(&self) -> Pending {
        let mut s = self.lock();
        Pending {
            files: std::mem::take(&mut s.unsynced),
            dir: std::mem::take(&mut s.dir_unsynced),
            deletable: std::mem::take(&mut s.unreferenced),
        }
    }

    /// fdatasyncs the files written, then the directory if a file was created.
    pub(super) fn sync(&self, p: &Pending) -> io::Result<()> {
        for (&id, f) in &p.files {
            match f {
                Some(f) => f.sync_data()?,
                None => File::open(self.path_of(id))?.sync_data()?,
            }
        }
        if p.dir {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Syncs the files written so far, leaving deletions to the next [`Segments::take_pending`].
    pub(super) fn sync_written(&self) -> io::Result<()> {
        let p = {
            let mut s = self.lock();
            Pending {
                files: std::mem::take(&mut s.unsynced),
                dir: std::mem::take(&mut s.dir_unsynced),
                deletable: Vec::new(),
            }
        };
        self.sync(&p).inspect_err(|_| self.restore(p))
    }

    /// Hands back a pending sync that failed, for the next one to retry.
    pub(super) fn restore(&self, p: Pending) {
        let mut s = self.lock();
        for (id, f) in p.files {
            let slot = s.unsynced.entry(id).or_insert(None);
            if slot.is_none() {
                *slot = f;
            }
        }
        s.dir_unsynced |= p.dir;
        s.unreferenced.extend(p.deletable);
    }

    /// Deletes the files of a sync that completed: no durable pointer names them now.
    pub(super) fn delete(&self, p: Pending) {
        for id in p.deletable {
            match std::fs::remove_file(self.path_of(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Only space is wasted; the next open finds the file unreferenced again.
                Err(e) => tracing::warn!(segment = id, error = %e, "cannot delete a segment file"),
            }
        }
    }

    /// Number of files in `segments/`.
    #[cfg(test)]
    pub(super) fn files(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| d.filter(|e| e.is_ok()).count())
            .unwrap_or(0)
    }
}

/// Writes zeros from `end`, where the bodies end, to the next [`FILL_STEP`] boundary after it
/// (never past [`TARGET_SIZE`]); synced with the bodies by the next sync. Returns how far
/// appends now land in zeros, or `u64::MAX` when the filesystem is short of space or the write
/// fails: only an optimisation, never retried for that file, which then grows with its bodies.
fn fill_ahead(file: &File, end: u64, dir: &Path) -> u64 {
    // After `end`, not at it: bodies ending on a boundary would leave the next append none.
    let to = (end + 1).next_multiple_of(FILL_STEP).min(TARGET_SIZE);
    if to <= end {
        return end;
    }
    if crate::budget::free_bytes(dir).is_ok_and(|free| free < FILL_MIN_FREE) {
        return u64::MAX;
    }
    let zeros = vec![0u8; (to - end) as usize];
    match file.write_all_at(&zeros, end) {
        Ok(()) => to,
        Err(e) => {
            tracing::debug!(error = %e, "segment file not filled ahead");
            u64::MAX
        }
    }
}

/// Whether a failed [`Segments::read`] means the body is damaged or gone (a power cut, a
/// deleted file), as opposed to an I/O failure worth retrying (EIO, too many open files).
pub(super) fn means_damage(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof
    )
}

fn parse_name(name: &OsStr) -> Option<u64> {
    let hex = name.to_str()?.strip_suffix(SUFFIX)?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync_all(s: &Segments) {
        let p = s.take_pending();
        s.sync(&p).unwrap();
        s.delete(p);
    }

    fn open_descriptors() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    #[test]
    fn a_backlog_of_thousands_of_files_holds_no_descriptors() {
        // Before: every referenced file was opened at open and held until the first sync, so
        // a backlog over ~4 GiB (1,024 descriptors × 4 MiB) failed every start with EMFILE.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(DIR)).unwrap();
        let files = 3_000u64;
        let referenced: Vec<Location> = (0..files)
            .map(|id| {
                let seg = Segments {
                    dir: dir.path().join(DIR),
                    state: Mutex::default(),
                };
                std::fs::write(seg.path_of(id), b"body").unwrap();
                Location {
                    segment: id,
                    offset: 0,
                    len: 4,
                }
            })
            .collect();
        let before = open_descriptors();
        let s = Segments::open(dir.path(), referenced.clone()).unwrap();
        // Other tests run in parallel and open files too: allow them some.
        assert!(
            open_descriptors() < before + 200,
            "{} descriptors open after opening {files} segment files, {before} before",
            open_descriptors()
        );
        sync_all(&s);
        assert!(open_descriptors() < before + 200);
        assert_eq!(s.read(referenced[2_999]).unwrap(), b"body");
        assert_eq!(s.files(), files as usize);
    }

    #[test]
    fn bodies_read_back_and_a_file_goes_once_nothing_points_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path(), []).unwrap();
        let big = vec![7u8; (TARGET_SIZE / 2 + 1) as usize];
        let a = s.append(&big).unwrap();
        let b = s.append(b"second").unwrap();
        let c = s.append(&big).unwrap();
        assert_eq!((a.segment, b.segment), (0, 0));
        assert_eq!(c.segment, 1, "a full file rolls over");
        assert_eq!(s.read(b).unwrap(), b"second");
        assert_eq!(s.read(c).unwrap(), big);
        s.release(a);
        sync_all(&s);
        assert_eq!(s.files(), 2, "still pointed to by b");
        s.release(b);
        sync_all(&s);
        assert_eq!(s.files(), 1);
        s.release(c);
        sync_all(&s);
        assert_eq!(s.files(), 1, "the active file stays");
    }

    #[test]
    fn a_reopen_starts_a_new_file_and_deletes_unreferenced_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (kept, orphan) = {
            let s = Segments::open(dir.path(), []).unwrap();
            let kept = s.append(b"kept").unwrap();
            let big = vec![0u8; TARGET_SIZE as usize];
            let orphan = s.append(&big).unwrap();
            sync_all(&s);
            (kept, orphan)
        };
        assert_ne!(kept.segment, orphan.segment);
        let s = Segments::open(dir.path(), [kept]).unwrap();
        sync_all(&s);
        assert_eq!(s.files(), 1);
        assert_eq!(s.read(kept).unwrap(), b"kept");
        assert_eq!(s.append(b"x").unwrap().segment, orphan.segment + 1);
    }

    #[test]
    fn a_pointer_past_the_end_is_an_error_not_an_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path(), []).unwrap();
        let mut loc = s.append(b"abc").unwrap();
        loc.len = u32::MAX;
        assert_eq!(
            s.read(loc).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        loc.segment = 99;
        assert!(s.read(loc).is_err());
    }

    #[test]
    fn a_failed_sync_is_retried_and_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path(), []).unwrap();
        let a = s.append(b"a").unwrap();
        s.append(&vec![0u8; TARGET_SIZE as usize]).unwrap();
        s.release(a);
        let p = s.take_pending();
        assert_eq!(p.deletable, vec![0]);
        s.restore(p);
        let p = s.take_pending();
        assert_eq!((p.files.len(), p.dir, p.deletable.len()), (2, true, 1));
    }

    #[test]
    fn appends_inside_the_zeros_leave_the_file_length_alone() {
        // An fdatasync after an append that grows the file writes its inode too; inside the
        // zeros written ahead it writes only the body's pages.
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path(), []).unwrap();
        let len = |id: u64| std::fs::metadata(s.path_of(id)).unwrap().len();
        let first = s.append(&[1u8; 1500]).unwrap();
        assert_eq!(len(0), FILL_STEP);
        let mut last = first;
        while last.offset + 2 * 1500 <= FILL_STEP {
            last = s.append(&[2u8; 1500]).unwrap();
            assert_eq!(len(0), FILL_STEP, "after the body at {}", last.offset);
        }
        let past = s.append(&[3u8; 1500]).unwrap();
        assert_eq!(len(0), 2 * FILL_STEP, "the next step is filled");
        sync_all(&s);
        assert_eq!(s.read(first).unwrap(), [1u8; 1500]);
        assert_eq!(s.read(last).unwrap(), [2u8; 1500]);
        assert_eq!(s.read(past).unwrap(), [3u8; 1500]);
        // A body longer than a step, and the end of a file: filled no further than its size.
        let room = TARGET_SIZE - (past.offset + 1500) - 100;
        assert!(room > FILL_STEP);
        let big = s.append(&vec![4u8; room as usize]).unwrap();
        assert_eq!(big.segment, 0);
        assert_eq!(len(0), TARGET_SIZE);
        assert_eq!(s.read(big).unwrap().len() as u64, room);
        assert_eq!(
            s.append(&vec![5u8; TARGET_SIZE as usize]).unwrap().segment,
            1
        );
        assert_eq!(len(1), TARGET_SIZE);
    }

    #[test]
    fn bodies_ending_on_a_step_boundary_fill_the_next_step() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segments::open(dir.path(), []).unwrap();
        let len = |id: u64| std::fs::metadata(s.path_of(id)).unwrap().len();
        s.append(&vec![1u8; FILL_STEP as usize - 100]).unwrap();
        assert_eq!(len(0), FILL_STEP);
        s.append(&[2u8; 100]).unwrap();
        assert_eq!(len(0), 2 * FILL_STEP, "the next append lands in zeros too");
    }

    #[test]
    fn locations_round_trip() {
        let l = Location {
            segment: 3,
            offset: 1 << 40,
            len: 17,
        };
        let mut b = Vec::new();
        l.put(&mut b);
        assert_eq!(b.len(), Location::ENCODED_LEN);
        assert_eq!(Location::get(&b), Some(l));
        assert_eq!(Location::get(&b[..19]), None);
    }
}
