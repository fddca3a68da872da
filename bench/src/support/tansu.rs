//! tansu, the Kafka-compatible broker, on a loopback port with in-memory storage: one fresh
//! broker per measured run, so that no run inherits another's log.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, peer, process_cpu_seconds, wait_for_port};

/// A running tansu; stopped when dropped.
pub struct Tansu {
    port: u16,
    /// Empty working directory (tansu reads a `.env` from its cwd) holding its log.
    dir: tempfile::TempDir,
    child: Child,
    binary: PathBuf,
}

impl Tansu {
    /// Starts tansu on a free port of 127.0.0.1 and waits until it listens.
    pub fn start() -> Tansu {
        Self::start_on(free_port())
    }

    /// Starts tansu on `port` of 127.0.0.1 (one a client was told about while nothing
    /// listened there) and waits until it listens.
    pub fn start_on(port: u16) -> Tansu {
        let binary = peer("bin/tansu");
        let dir = tempfile::Builder::new()
            .prefix("kedge-bench-tansu-")
            .tempdir()
            .expect("temp dir");
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).expect("tansu log");
        let mut child = Command::new(&binary)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        super::started(child.id());
        if !wait_for_port(port, Duration::from_secs(20)) {
            let _ = child.kill();
            panic!("tansu did not listen on 127.0.0.1:{port}");
        }
        Tansu {
            port,
            dir,
            child,
            binary,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(&self.binary)
            .args(["topic", "create", name, "--partitions"])
            .arg(partitions.to_string())
            .args(["--broker", &format!("tcp://{}", self.bootstrap())])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create {name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// CPU seconds the broker has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(self.child.id())
    }

    /// Resident memory of the broker now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        super::proc_field(
            &PathBuf::from(format!("/proc/{}/status", self.child.id())),
            "VmRSS:",
        )
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        super::stopping(self.child.id());
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        for _ in 0..300 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
