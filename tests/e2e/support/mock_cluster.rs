//! librdkafka's mock Kafka cluster (`tests/peers/mock_cluster.c`, compiled at test time against
//! the system librdkafka) in a child process, driven by one-line commands on its stdin.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use tempfile::TempDir;

use super::{log_stdio, print_log_if_panicking, repo_root, run, send_signal, wait_timeout};

/// How long the mock may take to start or to answer one command.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Compiles `tests/peers/mock_cluster.c` once per test process into Cargo's per-target temp dir
/// (`cc` and `pkg-config --cflags --libs rdkafka`, about half a second) and returns the binary.
fn mock_cluster_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let flags = run(
            {
                let mut command = Command::new("pkg-config");
                command.args(["--cflags", "--libs", "rdkafka"]);
                command
            },
            Duration::from_secs(10),
        );
        assert!(
            flags.status.success(),
            "pkg-config --cflags --libs rdkafka failed ({}): {}; run scripts/install-peers.sh \
             (it installs librdkafka-dev, gcc and pkg-config)",
            flags.status,
            String::from_utf8_lossy(&flags.stderr)
        );
        let flags = String::from_utf8(flags.stdout).expect("pkg-config prints UTF-8");
        // Build under a per-process name and rename: test binaries running at once never see a
        // half-written executable.
        let building = dir.join(format!("mock_cluster.{}", std::process::id()));
        let mut command = Command::new("cc");
        command
            .args(["-O1", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&building)
            .arg(repo_root().join("tests/peers/mock_cluster.c"))
            .args(flags.split_whitespace());
        let output = run(command, Duration::from_secs(60));
        assert!(
            output.status.success(),
            "compiling mock_cluster.c failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let bin = dir.join("mock_cluster");
        std::fs::rename(&building, &bin).expect("rename the mock_cluster binary into place");
        bin
    })
}

/// A running mock cluster; `quit` (then SIGKILL) when dropped, its log printed if the test failed.
pub struct MockCluster {
    /// The brokers' `127.0.0.1:PORT` addresses, broker id 1 first.
    brokers: Vec<String>,
    /// Holds the log (librdkafka's stderr).
    dir: TempDir,
    /// The mock process.
    child: Child,
    /// Where commands go, one per line.
    stdin: ChildStdin,
    /// Lines the mock printed on stdout, read by a background thread.
    lines: Receiver<String>,
}

impl MockCluster {
    /// Starts a cluster of `brokers` brokers with the given topics (name, partitions); partition
    /// leaders are spread over the brokers.
    pub fn start(brokers: u32, topics: &[(&str, u32)]) -> MockCluster {
        let dir = tempfile::Builder::new()
            .prefix("kedge-e2e-mock-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("mock_cluster.log");
        let (_, stderr) = log_stdio(&log);
        let mut child = Command::new(mock_cluster_bin())
            .arg(brokers.to_string())
            .args(topics.iter().map(|(name, n)| format!("{name}:{n}")))
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn mock_cluster");
        let stdin = child.stdin.take().expect("mock stdin");
        let stdout = child.stdout.take().expect("mock stdout");
        let (sender, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut mock = MockCluster {
            brokers: Vec::new(),
            dir,
            child,
            stdin,
            lines,
        };
        let first = mock.next_line("the mock's bootstrap line");
        let list = first
            .strip_prefix("bootstrap ")
            .unwrap_or_else(|| panic!("mock_cluster printed {first:?}, not its bootstrap servers"));
        mock.brokers = list.split(',').map(str::to_owned).collect();
        assert_eq!(mock.brokers.len(), brokers as usize, "brokers in {list:?}");
        for broker in &mock.brokers {
            assert!(
                broker.starts_with("127.0.0.1:"),
                "mock broker {broker} is not on 127.0.0.1"
            );
        }
        eprintln!("mock cluster: {brokers} brokers at {list}, topics {topics:?}");
        mock
    }

    /// The brokers' addresses, broker id 1 first.
    pub fn brokers(&self) -> &[String] {
        &self.brokers
    }

    /// All brokers as a comma-separated bootstrap list (for librdkafka clients).
    pub fn bootstrap(&self) -> String {
        self.brokers.join(",")
    }

    /// Sends one command (see `mock_cluster.c`) and panics unless the mock answers `ok`.
    pub fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .unwrap_or_else(|e| panic!("send {line:?} to the mock: {e}"));
        let reply = self.next_line(line);
        assert_eq!(reply, format!("ok {line}"), "mock refused {line:?}");
        eprintln!("mock cluster: {line}");
    }

    /// The next stdout line, waiting at most [`REPLY_TIMEOUT`].
    fn next_line(&mut self, waiting_for: &str) -> String {
        match self.lines.recv_timeout(REPLY_TIMEOUT) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("mock_cluster did not answer {waiting_for:?} within {REPLY_TIMEOUT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => panic!(
                "mock_cluster exited ({:?}) while waiting for {waiting_for:?}",
                self.child.try_wait()
            ),
        }
    }

    /// Path of the mock's log (librdkafka's stderr).
    fn log(&self) -> PathBuf {
        self.dir.path().join("mock_cluster.log")
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        print_log_if_panicking(&self.log());
        let _ = writeln!(self.stdin, "quit").and_then(|()| self.stdin.flush());
        if wait_timeout(&mut self.child, Duration::from_secs(5)).is_none() {
            send_signal(&self.child, libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}
