//! ENOSPC on a real small filesystem: kedge stops acknowledging, reopens its poisoned queue once
//! space is freed, and loses nothing it acknowledged. Needs root for a size-limited tmpfs; skips
//! (with a message) where mount is not permitted.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::consume::{consume, tally};
use crate::support::free_port;
use crate::support::kedge::{Kedge, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::wait_until;

/// Messages published: how many fit in the room left inside sled's own files varies (about
/// 40,000–60,000 here), so publish well beyond that.
const MESSAGES: usize = 150_000;
/// What kedge logs when sled failed an I/O and the queue is reopened.
const REOPENING: &str = "reopening the queue";

use crate::support::kedge::READINGS_ROUTING as ROUTING;

/// An 8 MiB tmpfs, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount() -> Option<SmallFs> {
        let dir = tempfile::Builder::new()
            .prefix("kedge-e2e-tmpfs-")
            .tempdir()
            .expect("temp dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(dir.path())
            .status();
        match status {
            Ok(s) if s.success() => Some(SmallFs { dir }),
            other => {
                eprintln!("disk_full: SKIPPED, cannot mount a tmpfs here ({other:?})");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let c = CString::new(path.to_str().expect("UTF-8")).expect("no NUL");
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0, "statvfs");
    s.f_bavail * s.f_frsize
}

#[test]
fn a_full_disk_holds_acks_and_kedge_recovers_when_space_is_freed() {
    let Some(fs) = SmallFs::mount() else {
        return;
    };
    let queue_dir: PathBuf = fs.path().join("queue");
    let kafka_port = free_port();
    let mosquitto = Mosquitto::start();
    // No byte budget and no reserve: only the real ENOSPC stops the queue.
    let config = pipeline_config(
        mosquitto.port(),
        &format!("127.0.0.1:{kafka_port}"),
        ROUTING,
    )
    .replace(
        "[queue]\n",
        &format!(
            "[queue]\ndir = \"{}\"\nmax_bytes = \"1GiB\"\nmin_free = \"0B\"\n",
            queue_dir.display()
        ),
    );
    let mut kedge = Kedge::start(&config);
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    // Fill the filesystem: sled then has only the free room inside its own files, and its
    // next blob or segment write fails with ENOSPC.
    let filler = fs.path().join("filler");
    let size = free_bytes(fs.path()) as usize;
    std::fs::write(&filler, vec![0x5a; size]).expect("write filler");

    let published = readings(MESSAGES, 20);
    let publishing = Publishing::start(mosquitto.port(), published.clone(), None);
    wait_until("kedge hits ENOSPC", Duration::from_secs(60), || {
        kedge.log_text().contains(REOPENING)
    });
    kedge.assert_running();
    let acked_when_full = publishing.acked();
    eprintln!(
        "disk_full: kedge hit ENOSPC with {acked_when_full} publishes acknowledged by mosquitto"
    );

    std::fs::remove_file(&filler).expect("free the space");
    publishing.wait_acked(Duration::from_secs(90));
    kedge.assert_running();

    let tansu = Tansu::start_on(kafka_port);
    tansu.create_topic("readings", 3);
    let records = consume(
        &tansu.bootstrap(),
        "readings",
        published.len(),
        Duration::from_secs(120),
    );
    let t = tally(&published, &records);
    eprintln!(
        "disk_full: {} published, {} missing, {} duplicates (unacknowledged redeliveries)",
        published.len(),
        t.missing.len(),
        t.duplicates
    );
    assert_eq!(t.unknown, 0);
    assert!(t.missing.is_empty(), "lost: {:?}", t.missing);
    kedge.assert_running();
}
