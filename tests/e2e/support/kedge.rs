//! The real kedge binary, run from a temp dir that holds its config, its data dir and its log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use tempfile::TempDir;

use super::{log_stdio, print_log_if_panicking, send_signal, wait_timeout};

/// Device id every test configures; it must come back in each record's `kedge-device` header.
pub const DEVICE_ID: &str = "e2e-dev";

/// Placeholder in a config that [`Kedge::start`] replaces with its data dir.
const DATA_DIR: &str = "@DATA_DIR@";

/// Path of the kedge binary Cargo built for this test run.
/// The kedge binary under test: `KEDGE_BIN` when set (e.g. a release build, for figures),
/// else the one cargo built for this test run.
pub fn kedge_bin() -> String {
    std::env::var("KEDGE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_kedge").to_owned())
}

/// A `Command` for [`kedge_bin`], prefixed by `KEDGE_RUNNER` when set (whitespace-separated, e.g.
/// `qemu-aarch64-static` to run an ARM build here; see cross/test-aarch64.sh).
pub fn kedge_command() -> Command {
    let runner = std::env::var("KEDGE_RUNNER").unwrap_or_default();
    let mut runner = runner.split_whitespace();
    match runner.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(runner).arg(kedge_bin());
            command
        }
        None => Command::new(kedge_bin()),
    }
}

/// The routing most tests use: `sensors/+/reading` → `readings`, keyed by the device level;
/// anything else (with no default topic) → `kedge-dead-letter`.
pub const READINGS_ROUTING: &str = r#"[routing]
dead_letter_topic = "kedge-dead-letter"

[[routing.rules]]
filter = "sensors/+/reading"
topic = "readings"
key_level = 1"#;

/// A complete kedge config for MQTT on `mqtt_port` and Kafka at `kafka_bootstrap`, with the given
/// `[routing]` section (which must include the `[routing]` header and its rules).
pub fn pipeline_config(mqtt_port: u16, kafka_bootstrap: &str, routing: &str) -> String {
    format!(
        r#"[agent]
device_id = "{DEVICE_ID}"
data_dir = "{DATA_DIR}"
shutdown_timeout = "10s"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
protocol = "5"
receive_maximum = 2048
reconnect = {{ initial = "100ms", max = "1s" }}

[[mqtt.subscriptions]]
filter = "sensors/#"
qos = 1

{routing}

[kafka]
bootstrap = ["{kafka_bootstrap}"]
linger = "5ms"
retry_backoff = {{ initial = "100ms", max = "1s" }}

[queue]
commit_window = "5ms"

[log]
level = "info"
"#
    )
}

/// A kedge process; SIGKILLed when dropped, and its log tail printed if the test failed.
pub struct Kedge {
    /// Holds `kedge.toml`, the `data` dir and `kedge.log`; survives restarts.
    dir: TempDir,
    /// The data dir: `data` in `dir` unless the test put it elsewhere.
    data_dir: PathBuf,
    /// The running process, `None` between a kill and a restart.
    child: Option<Child>,
    /// How many times the process was started (marks the log).
    starts: u32,
}

impl Kedge {
    /// Writes `config_toml` (with `@DATA_DIR@` replaced) into a fresh temp dir and runs kedge on it.
    pub fn start(config_toml: &str) -> Kedge {
        Kedge::start_with_data_dir(config_toml, None)
    }

    /// [`Kedge::start`] with the data dir at `data` (e.g. on a special filesystem) instead of in
    /// the temp dir.
    pub fn start_with_data_dir(config_toml: &str, data: Option<&Path>) -> Kedge {
        let dir = tempfile::Builder::new()
            .prefix("kedge-e2e-agent-")
            .tempdir()
            .expect("temp dir");
        let data_dir = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        let config = config_toml.replace(DATA_DIR, data_dir.to_str().expect("UTF-8 temp path"));
        std::fs::write(dir.path().join("kedge.toml"), config).expect("write kedge.toml");
        let mut kedge = Kedge {
            dir,
            data_dir,
            child: None,
            starts: 0,
        };
        kedge.spawn();
        kedge
    }

    /// Starts the process again with the same config and data dir.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart() while kedge is still running"
        );
        self.spawn();
    }

    /// Peak resident set size of the running process so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("kedge is running").id();
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }

    /// Kills the process with SIGKILL (no chance to flush anything) and reaps it.
    pub fn kill9(&mut self) {
        let mut child = self
            .child
            .take()
            .expect("kill9() while kedge is not running");
        send_signal(&child, libc::SIGKILL);
        child.wait().expect("wait for killed kedge");
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status; panics if it does not exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("terminate() while kedge is not running");
        send_signal(&child, libc::SIGTERM);
        let status = wait_timeout(&mut child, timeout);
        self.child = status.is_none().then_some(child);
        status.unwrap_or_else(|| panic!("kedge did not exit within {timeout:?} of SIGTERM"))
    }

    /// The running process's id (for its /proc entries).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("kedge is running").id()
    }

    /// Whether the process was started and not killed or stopped since.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Panics if the process has exited (kedge must wait out broker outages, never give up).
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("kedge is not started");
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("kedge exited unexpectedly with {status}");
        }
    }

    /// Everything kedge logged so far, over all its runs.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// The data dir kedge runs with (given on the command line).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The config file kedge runs with (its data dir is given on the command line).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("kedge.toml")
    }

    /// Spawns `kedge run --config FILE --data-dir DIR`, appending its output to the log.
    fn spawn(&mut self) {
        self.starts += 1;
        let log = self.log();
        let mut file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open log");
        writeln!(
            file,
            "===== kedge start #{} (e2e harness) =====",
            self.starts
        )
        .expect("write log");
        let (stdout, stderr) = log_stdio(&log);
        let child = kedge_command()
            .arg("run")
            .arg("--config")
            .arg(self.dir.path().join("kedge.toml"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .current_dir(self.dir.path())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn kedge");
        self.child = Some(child);
    }

    /// How many lines of kedge's log (all runs so far) contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.log())
            .map(|log| log.lines().filter(|line| line.contains(needle)).count())
            .unwrap_or(0)
    }

    /// The sum of the numeric JSON field `field` over kedge's log lines (all runs so far).
    pub fn log_field_sum(&self, field: &str) -> u64 {
        let key = format!("\"{field}\":");
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let rest = &line[line.find(&key)? + key.len()..];
                let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
                digits.parse::<u64>().ok()
            })
            .sum()
    }

    /// Path of the log that collects stdout and stderr of every run.
    fn log(&self) -> PathBuf {
        self.dir.path().join("kedge.log")
    }
}

impl Drop for Kedge {
    fn drop(&mut self) {
        print_log_if_panicking(&self.log());
        if let Some(mut child) = self.child.take() {
            send_signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }
}
