//! tansu, a Kafka-compatible broker, on a loopback port: in-memory storage, or sqlite with a
//! tansu built with libsql.

use std::path::{Path, PathBuf};
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
    /// The tansu binary.
    binary: PathBuf,
    /// `--storage-engine`, relative to `dir` for sqlite.
    storage: String,
    /// Port advertised in metadata.
    advertised: u16,
    /// Further command-line arguments (e.g. `--authentication`).
    extra: Vec<String>,
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
        Tansu::start_with(Path::new(&tansu_bin()), port, advertised, "memory://tansu/")
    }

    /// Starts `binary` with `storage` (e.g. `sqlite://tansu.db`, relative to the broker's own
    /// directory, which outlives [`Tansu::restart`]).
    pub fn start_with(binary: &Path, port: u16, advertised: u16, storage: &str) -> Tansu {
        let dir = tempfile::Builder::new()
            .prefix("kedge-e2e-tansu-")
            .tempdir()
            .expect("temp dir");
        let mut tansu = Tansu {
            port,
            dir,
            child: None,
            binary: binary.to_owned(),
            storage: storage.to_owned(),
            advertised,
            extra: Vec::new(),
        };
        tansu.spawn();
        tansu
    }

    /// Stops the broker and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Like [`Tansu::restart`], with `extra` arguments from now on (e.g. `--authentication`).
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|&a| a.to_owned()).collect();
        self.restart();
    }

    fn spawn(&mut self) {
        let log = self.log();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised_url = format!("tcp://127.0.0.1:{}", self.advertised);
        let (stdout, stderr) = log_stdio(&log);
        let mut child = Command::new(&self.binary)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &advertised_url])
            .args(["--storage-engine", &self.storage])
            .args(&self.extra)
            .current_dir(self.dir.path())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn tansu");
        wait_for_port("tansu", self.port, &mut child, &log);
        self.child = Some(child);
        if self.storage.starts_with("sqlite://") {
            self.index_headers();
        }
    }

    /// tansu 0.6.0's sqlite engine reads a record's headers with a query that scans the whole
    /// `header` table (it has no index) once per record fetched: reading 20,000 records with 4
    /// headers each took over two minutes, so consumers timed out and reported records missing
    /// that were stored. The index it lacks makes the same read take 2 s; it changes nothing of
    /// what is stored or answered. tansu creates the table when it starts.
    fn index_headers(&self) {
        let db = self.dir.path().join("tansu.db");
        let mut command = Command::new(super::python_bin());
        command.args([
            "-c",
            "import sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1], timeout=30)\n\
             db.execute('create index if not exists header_topition_offset_id on header (topition, offset_id)')\n\
             db.commit()",
        ]);
        command.arg(&db);
        let output = run(command, Duration::from_secs(60));
        assert!(
            output.status.success(),
            "indexing tansu's header table in {}: {}",
            db.display(),
            String::from_utf8_lossy(&output.stderr)
        );
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
        let mut command = Command::new(&self.binary);
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

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) {
        let mut command = Command::new(&self.binary);
        command
            .args(["topic", "delete", name])
            .args(["--broker", &format!("tcp://{}", self.bootstrap())])
            .current_dir(self.dir.path());
        let output = run(command, Duration::from_secs(60));
        assert!(
            output.status.success(),
            "tansu topic delete {name} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
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
