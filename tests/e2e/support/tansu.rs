//! tansu, a Kafka-compatible broker, with in-memory storage on a loopback port.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;

use super::{
    free_port, log_stdio, print_log_if_panicking, run, stop_child, tansu_bin, wait_for_port,
};

/// A running tansu broker; killed when dropped. Its data lives in memory and dies with it.
pub struct Tansu {
    /// Port of the Kafka listener on 127.0.0.1.
    port: u16,
    /// Empty working directory (tansu reads a `.env` from its cwd) holding the log.
    dir: TempDir,
    /// The broker process, `None` once stopped.
    child: Option<Child>,
}

impl Tansu {
    /// Starts tansu on a free port.
    pub fn start() -> Tansu {
        Tansu::start_on(free_port())
    }

    /// Starts tansu on a chosen port (e.g. one kedge was configured with before the broker existed).
    pub fn start_on(port: u16) -> Tansu {
        Tansu::start_advertising(port, port)
    }

    /// Starts tansu on `port` advertising 127.0.0.1:`advertised` in its metadata, so that clients
    /// that bootstrap through a proxy on that port keep using the proxy.
    pub fn start_advertising(port: u16, advertised: u16) -> Tansu {
        let dir = tempfile::Builder::new()
            .prefix("kedge-e2e-tansu-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("tansu.log");
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://127.0.0.1:{advertised}");
        let (stdout, stderr) = log_stdio(&log);
        let mut child = Command::new(tansu_bin())
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &advertised_url])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(dir.path())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn tansu");
        wait_for_port("tansu", port, &mut child, &log);
        Tansu {
            port,
            dir,
            child: Some(child),
        }
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bootstrap address for Kafka clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// Creates a topic; a topic that already exists (a client may have auto-created it) is fine.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let mut command = Command::new(tansu_bin());
        command
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://{}", self.bootstrap())])
            .current_dir(self.dir.path());
        let output = run(command, Duration::from_secs(60));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if said.contains("already exists") {
            eprintln!("tansu: topic {name} already existed (auto-created by a client?)");
            return;
        }
        assert!(
            output.status.success(),
            "tansu topic create {name} failed ({}):\n{said}",
            output.status
        );
    }

    /// Stops the broker (SIGTERM, SIGKILL after 5 s); it loses all its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(5));
        }
    }

    /// Path of the broker's log file.
    fn log(&self) -> PathBuf {
        self.dir.path().join("tansu.log")
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        print_log_if_panicking(&self.log());
        self.stop();
    }
}
