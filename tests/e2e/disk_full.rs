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

/// Messages published while the disk is full.
const MESSAGES: usize = 60_000;

const ROUTING: &str = r#"[routing]
dead_letter_topic = "kedge-dead-letter"

[[routing.rules]]
filter = "sensors/+/reading"
topic = "readings"
key_level = 1"#;

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

    // Leave sled a little room, then fill it.
    let filler = fs.path().join("filler");
    let leave = 64 * 1024;
    let size = free_bytes(fs.path()).saturating_sub(leave) as usize;
    std::fs::write(&filler, vec![0x5a; size]).expect("write filler");

    let published = readings(MESSAGES, 20);
    let publishing = Publishing::start(mosquitto.port(), published.clone(), None);
    wait_until("kedge hits ENOSPC", Duration::from_secs(60), || {
        kedge.log_contains("reopening the queue")
    });
    kedge.assert_running();
    let acked_when_full = publishing.acked();
    eprintln!("disk_full: ENOSPC after {acked_when_full} acknowledged publishes");
    assert!(acked_when_full < MESSAGES, "the disk never filled up");

    std::fs::remove_file(&filler).expect("free the space");
    publishing.wait_acked(Duration::from_secs(90));
    kedge.assert_running();

    let tansu = Tansu::start_on(kafka_port);
    tansu.create_topic("readings", 3);
    let records = consume(
        &tansu.bootstrap(),
        "readings",
        MESSAGES,
        Duration::from_secs(120),
    );
    let t = tally(&published, &records);
    eprintln!(
        "disk_full: {MESSAGES} published, {} missing, {} duplicates (unacknowledged redeliveries)",
        t.missing.len(),
        t.duplicates
    );
    assert_eq!(t.unknown, 0);
    assert!(t.missing.is_empty(), "lost: {:?}", t.missing);
    kedge.assert_running();
}
