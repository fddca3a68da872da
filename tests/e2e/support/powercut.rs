//! A FUSE filesystem that can lose power: what a process writes stays volatile until it is
//! fsynced, and [`PowerCutFs::cut`] throws the volatile part away, as a power cut throws away
//! the page cache and the drive's write cache.
//!
//! The model, stricter than ext4 in `data=ordered` mode where it differs:
//! - **File data and size** become durable only with `fsync`/`fdatasync` of that file.
//!   `sync_file_range` and `close` make nothing durable (on FUSE they never reach us).
//! - **Names** (create, unlink, rename, mkdir) become durable with any fsync on the filesystem,
//!   as ext4's single journal commits every pending name change with the next fsync.
//! - **A cut** keeps the durable image, plus, in torn mode, a random subset of the unsynced
//!   4 KiB pages, as a kernel that had started writeback would.
//!
//! Everything lives in memory in the test process; the mount is taken down before each cut so
//! the kernel keeps no cached page or attribute from before it. An fsync can be made to take
//! time, as on an SD card, so that cuts land in the middle of one.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};
use rand::Rng;

const PAGE: usize = 4096;
const ROOT: u64 = 1;
/// No attribute or name caching in the kernel: every process sees the model as it is.
const TTL: Duration = Duration::ZERO;
/// What `statfs` reports: 1 GiB, so that the queue's disk budget never engages.
const BLOCKS: u64 = 1 << 18;

/// One file's content: the durable image, and the pages written since its last fsync.
#[derive(Default)]
struct Content {
    durable: Vec<u8>,
    /// Unsynced pages by index, each a whole page (unwritten parts copied from the image).
    dirty: BTreeMap<u64, Box<[u8]>>,
    /// Bytes of `durable` still visible: a truncation since the last fsync hides the rest.
    visible: u64,
    len: u64,
}

/// A byte of a durable image of which only `visible` bytes are still seen.
fn image_byte(durable: &[u8], visible: u64, at: u64) -> u8 {
    if at < visible {
        durable.get(at as usize).copied().unwrap_or(0)
    } else {
        0
    }
}

impl Content {
    fn durable_byte(&self, at: u64) -> u8 {
        image_byte(&self.durable, self.visible, at)
    }

    fn read(&self, offset: u64, size: u64) -> Vec<u8> {
        let end = (offset + size).min(self.len);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let index = at / PAGE as u64;
            let within = (at % PAGE as u64) as usize;
            let n = (end - at).min((PAGE - within) as u64) as usize;
            match self.dirty.get(&index) {
                Some(page) => out.extend_from_slice(&page[within..within + n]),
                None => out.extend((at..at + n as u64).map(|b| self.durable_byte(b))),
            }
            at += n as u64;
        }
        out
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (durable, visible) = (&self.durable, self.visible);
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = at / PAGE as u64;
            let within = (at % PAGE as u64) as usize;
            let n = rest.len().min(PAGE - within);
            let page = match self.dirty.entry(index) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let start = index * PAGE as u64;
                    e.insert(
                        (start..start + PAGE as u64)
                            .map(|b| image_byte(durable, visible, b))
                            .collect(),
                    )
                }
            };
            page[within..within + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            at += n as u64;
        }
        self.len = self.len.max(offset + data.len() as u64);
    }

    fn truncate(&mut self, len: u64) {
        if len < self.len {
            let first_gone = len.div_ceil(PAGE as u64);
            self.dirty.retain(|&index, _| index < first_gone);
            if let Some(page) = self.dirty.get_mut(&(len / PAGE as u64)) {
                page[(len % PAGE as u64) as usize..].fill(0);
            }
            self.visible = self.visible.min(len);
        }
        self.len = len;
    }

    fn persist_page(&mut self, index: u64, page: &[u8], upto: u64) {
        let start = index * PAGE as u64;
        let end = (start + PAGE as u64).min(upto);
        if end <= start {
            return;
        }
        if (self.durable.len() as u64) < end {
            self.durable.resize(end as usize, 0);
        }
        self.durable[start as usize..end as usize].copy_from_slice(&page[..(end - start) as usize]);
    }

    /// fsync: the current content becomes the durable image.
    fn sync(&mut self) -> u64 {
        let synced = self.dirty.len() as u64 * PAGE as u64;
        self.durable.truncate(self.visible as usize);
        self.durable.resize(self.len as usize, 0);
        let dirty = std::mem::take(&mut self.dirty);
        for (index, page) in &dirty {
            self.persist_page(*index, page, self.len);
        }
        self.visible = self.len;
        synced
    }

    /// Power cut: back to the durable image, keeping each unsynced page with probability
    /// `keep`. Returns the unsynced pages lost.
    fn cut(&mut self, keep: f64, rng: &mut impl Rng) -> u64 {
        let dirty = std::mem::take(&mut self.dirty);
        let mut lost = 0;
        for (index, page) in &dirty {
            if keep > 0.0 && rng.random_bool(keep) {
                self.persist_page(*index, page, self.len);
            } else {
                lost += 1;
            }
        }
        self.visible = self.durable.len() as u64;
        self.len = self.visible;
        lost
    }
}

enum Node {
    File(Content),
    Dir {
        entries: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

/// The model: inodes, and what a cut has thrown away so far.
struct Disk {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    /// Name changes since the last fsync (lost by a cut).
    pending_names: u64,
    stats: CutStats,
}

/// What the cuts threw away, to prove they did (a test that loses nothing proves nothing).
#[derive(Clone, Copy, Debug, Default)]
pub struct CutStats {
    pub cuts: u64,
    pub fsyncs: u64,
    pub pages_lost: u64,
    pub pages_torn_in: u64,
    pub name_changes_lost: u64,
}

impl Disk {
    fn new() -> Self {
        let root = Node::Dir {
            entries: BTreeMap::new(),
            durable: BTreeMap::new(),
        };
        Disk {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            pending_names: 0,
            stats: CutStats::default(),
        }
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm) = match self.nodes.get(&ino)? {
            Node::File(c) => (FileType::RegularFile, c.len, 0o644),
            Node::Dir { .. } => (FileType::Directory, 0, 0o755),
        };
        let now = SystemTime::now();
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, i32> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { entries, .. }) => Ok(entries),
            Some(Node::File(_)) => Err(libc::ENOTDIR),
            None => Err(libc::ENOENT),
        }
    }

    fn lookup(&mut self, dir: u64, name: &OsStr) -> Result<u64, i32> {
        self.entries_mut(dir)?
            .get(name)
            .copied()
            .ok_or(libc::ENOENT)
    }

    fn content(&mut self, ino: u64) -> Result<&mut Content, i32> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(c)) => Ok(c),
            Some(Node::Dir { .. }) => Err(libc::EISDIR),
            None => Err(libc::ENOENT),
        }
    }

    fn make(&mut self, dir: u64, name: &OsStr, node: Node) -> Result<u64, i32> {
        let ino = self.next_ino;
        let entries = self.entries_mut(dir)?;
        if entries.contains_key(name) {
            return Err(libc::EEXIST);
        }
        entries.insert(name.to_owned(), ino);
        self.nodes.insert(ino, node);
        self.next_ino += 1;
        self.pending_names += 1;
        Ok(ino)
    }

    fn remove(&mut self, dir: u64, name: &OsStr, want_dir: bool) -> Result<(), i32> {
        let ino = self.lookup(dir, name)?;
        match (self.nodes.get(&ino), want_dir) {
            (Some(Node::Dir { entries, .. }), true) if !entries.is_empty() => {
                return Err(libc::ENOTEMPTY);
            }
            (Some(Node::Dir { .. }), false) => return Err(libc::EISDIR),
            (Some(Node::File(_)), true) => return Err(libc::ENOTDIR),
            _ => {}
        }
        self.entries_mut(dir)?.remove(name);
        self.pending_names += 1;
        // The node itself stays until a cut: the durable names may still point at it.
        Ok(())
    }

    fn rename(&mut self, from: u64, name: &OsStr, to: u64, new: &OsStr) -> Result<(), i32> {
        let ino = self.lookup(from, name)?;
        self.entries_mut(to)?;
        self.entries_mut(from)?.remove(name);
        self.entries_mut(to)?.insert(new.to_owned(), ino);
        self.pending_names += 1;
        Ok(())
    }

    /// An fsync of `ino`: its data, and every name change so far (ext4's journal commit).
    fn fsync(&mut self, ino: u64) {
        self.stats.fsyncs += 1;
        if let Some(Node::File(c)) = self.nodes.get_mut(&ino) {
            c.sync();
        }
        for node in self.nodes.values_mut() {
            if let Node::Dir { entries, durable } = node {
                durable.clone_from(entries);
            }
        }
        self.pending_names = 0;
    }

    fn cut(&mut self, keep: f64, rng: &mut impl Rng) {
        self.stats.cuts += 1;
        self.stats.name_changes_lost += self.pending_names;
        self.pending_names = 0;
        for node in self.nodes.values_mut() {
            match node {
                Node::File(c) => {
                    let dirty = c.dirty.len() as u64;
                    let lost = c.cut(keep, rng);
                    self.stats.pages_lost += lost;
                    self.stats.pages_torn_in += dirty - lost;
                }
                Node::Dir { entries, durable } => entries.clone_from(durable),
            }
        }
        let mut reachable = vec![ROOT];
        let mut seen = std::collections::HashSet::from([ROOT]);
        while let Some(ino) = reachable.pop() {
            if let Some(Node::Dir { entries, .. }) = self.nodes.get(&ino) {
                for &child in entries.values() {
                    if seen.insert(child) {
                        reachable.push(child);
                    }
                }
            }
        }
        self.nodes.retain(|ino, _| seen.contains(ino));
    }
}

/// The filesystem, shared between its mounts; a cut needs it unmounted.
#[derive(Clone)]
pub struct PowerCutFs {
    disk: Arc<Mutex<Disk>>,
    /// How long an fsync takes, as on an SD card; a cut during it leaves it undone.
    fsync_time: Duration,
    /// Cuts so far: an fsync that started before a cut never lands.
    power_cycles: Arc<AtomicU64>,
}

/// A mount of the filesystem; dropping it unmounts.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Unmounts. The session's thread is not joined: it may end with an error once the
        // kernel drops the connection, and it only has requests of dead processes left.
        drop(self.session.take());
    }
}

impl PowerCutFs {
    /// An empty filesystem whose fsyncs take `fsync_time`.
    pub fn new(fsync_time: Duration) -> Self {
        PowerCutFs {
            disk: Arc::new(Mutex::new(Disk::new())),
            fsync_time,
            power_cycles: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether this machine can mount FUSE filesystems here (needs `/dev/fuse` and root).
    pub fn available() -> Result<(), String> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mount(2) needs root".into());
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map(drop)
            .map_err(|e| format!("/dev/fuse: {e}"))
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mounts the filesystem on `dir` (an existing, empty directory).
    pub fn mount(&self, dir: &Path) -> std::io::Result<Mounted> {
        let options = [
            MountOption::FSName("kedge-powercut".into()),
            MountOption::DefaultPermissions,
        ];
        let session = fuser::spawn_mount2(self.clone(), dir, &options)?;
        Ok(Mounted {
            session: Some(session),
        })
    }

    /// Cuts the power: every write since its file's last fsync is lost, except, with
    /// probability `keep` each, whole unsynced pages (torn writeback).
    pub fn cut(&self, mounted: Mounted, keep: f64, rng: &mut impl Rng) {
        self.power_cycles.fetch_add(1, Ordering::SeqCst);
        drop(mounted);
        self.disk().cut(keep, rng);
    }

    /// An fsync of `ino` that takes `fsync_time`, and is lost if the power goes meanwhile.
    fn slow_fsync(&self, ino: u64) {
        let cycle = self.power_cycles.load(Ordering::SeqCst);
        std::thread::sleep(self.fsync_time);
        let mut disk = self.disk();
        if self.power_cycles.load(Ordering::SeqCst) == cycle {
            disk.fsync(ino);
        }
    }

    /// What the cuts threw away so far.
    pub fn stats(&self) -> CutStats {
        self.disk().stats
    }
}

fn reply_entry(disk: &Disk, ino: u64, reply: ReplyEntry) {
    match disk.attr(ino) {
        Some(attr) => reply.entry(&TTL, &attr, 0),
        None => reply.error(libc::ENOENT),
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let mut disk = self.disk();
        match disk.lookup(parent, name) {
            Ok(ino) => reply_entry(&disk, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.disk().attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(libc::ENOENT),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut disk = self.disk();
        if let Some(size) = size {
            match disk.content(ino) {
                Ok(c) => c.truncate(size),
                Err(e) => return reply.error(e),
            }
        }
        match disk.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(libc::ENOENT),
        }
    }

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(libc::EPERM);
        }
        let mut disk = self.disk();
        match disk.make(parent, name, Node::File(Content::default())) {
            Ok(ino) => reply_entry(&disk, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let mut disk = self.disk();
        let dir = Node::Dir {
            entries: BTreeMap::new(),
            durable: BTreeMap::new(),
        };
        match disk.make(parent, name, dir) {
            Ok(ino) => reply_entry(&disk, ino, reply),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.disk().remove(parent, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.disk().remove(parent, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        match self.disk().rename(parent, name, newparent, newname) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.disk().content(ino) {
            Ok(_) => reply.opened(0, 0),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        match self.disk().content(ino) {
            Ok(c) => reply.data(&c.read(offset as u64, u64::from(size))),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        match self.disk().content(ino) {
            Ok(c) => {
                c.write(offset as u64, data);
                reply.written(data.len() as u32);
            }
            Err(e) => reply.error(e),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _data: bool, reply: ReplyEmpty) {
        self.slow_fsync(ino);
        reply.ok();
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let mut disk = self.disk();
        let listing: Vec<(u64, FileType, OsString)> = match disk.entries_mut(ino) {
            Ok(entries) => entries
                .iter()
                .map(|(name, &child)| (child, FileType::RegularFile, name.clone()))
                .collect(),
            Err(e) => return reply.error(e),
        };
        let dots = [
            (ino, FileType::Directory, OsString::from(".")),
            (ino, FileType::Directory, OsString::from("..")),
        ];
        for (i, (child, _, name)) in dots
            .into_iter()
            .chain(listing)
            .enumerate()
            .skip(offset as usize)
        {
            let kind = match disk.nodes.get(&child) {
                Some(Node::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            if reply.add(child, i as i64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _data: bool, reply: ReplyEmpty) {
        self.slow_fsync(ino);
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let used: u64 = self
            .disk()
            .nodes
            .values()
            .map(|n| match n {
                Node::File(c) => c.len.div_ceil(PAGE as u64),
                Node::Dir { .. } => 1,
            })
            .sum();
        let free = BLOCKS.saturating_sub(used);
        reply.statfs(
            BLOCKS,
            free,
            free,
            1 << 20,
            1 << 20,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut disk = self.disk();
        match disk.make(parent, name, Node::File(Content::default())) {
            Ok(ino) => match disk.attr(ino) {
                Some(attr) => reply.created(&TTL, &attr, 0, 0, 0),
                None => reply.error(libc::EIO),
            },
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(libc::EOPNOTSUPP);
        }
        match self.disk().content(ino) {
            Ok(c) => {
                let end = (offset + length) as u64;
                if end > c.len {
                    c.len = end;
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> rand::rngs::StdRng {
        rand::SeedableRng::seed_from_u64(7)
    }

    #[test]
    fn unsynced_writes_are_lost_and_synced_ones_kept() {
        let mut c = Content::default();
        c.write(0, b"hello");
        c.sync();
        c.write(5, &[b'x'; 10_000]);
        c.write(1, b"E");
        assert_eq!(c.read(0, 6), b"hEllox");
        assert_eq!(c.cut(0.0, &mut rng()), 3);
        assert_eq!(c.len, 5);
        assert_eq!(c.read(0, 100), b"hello");
    }

    #[test]
    fn a_truncation_hides_the_old_bytes_until_a_cut_brings_them_back() {
        let mut c = Content::default();
        c.write(0, &[1; 5000]);
        c.sync();
        c.truncate(10);
        c.write(20, &[2; 2]);
        assert_eq!(
            c.read(0, 30),
            [vec![1; 10], vec![0; 10], vec![2; 2]].concat()
        );
        c.sync();
        assert_eq!(c.durable, [vec![1; 10], vec![0; 10], vec![2; 2]].concat());
        c.truncate(0);
        c.cut(0.0, &mut rng());
        assert_eq!(c.len, 22);
    }

    #[test]
    fn torn_writeback_keeps_whole_pages_only() {
        let mut c = Content::default();
        c.write(0, &[7; 3 * PAGE]);
        let lost = c.cut(0.5, &mut rng());
        assert!(
            lost < 3,
            "some page should have been kept at p = 0.5 with this seed"
        );
        for page in c.durable.chunks(PAGE) {
            assert!(page.iter().all(|&b| b == 7) || page.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn names_are_durable_only_after_an_fsync() {
        let mut d = Disk::new();
        let kept = d
            .make(ROOT, OsStr::new("kept"), Node::File(Content::default()))
            .unwrap();
        d.fsync(kept);
        d.make(ROOT, OsStr::new("new"), Node::File(Content::default()))
            .unwrap();
        d.remove(ROOT, OsStr::new("kept"), false).unwrap();
        d.cut(0.0, &mut rng());
        assert_eq!(d.lookup(ROOT, OsStr::new("kept")), Ok(kept));
        assert_eq!(d.lookup(ROOT, OsStr::new("new")), Err(libc::ENOENT));
        assert_eq!(d.stats.name_changes_lost, 2);
        assert_eq!(d.nodes.len(), 2, "the unreachable inode is freed");
    }
}
