//! mosquitto, the MQTT broker, on a loopback port with a queue big enough for an offline kedge.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;

use super::{
    free_port, log_stdio, mosquitto_bin, print_log_if_panicking, stop_child, wait_for_port,
    wait_until,
};

/// A running mosquitto broker; killed when dropped.
pub struct Mosquitto {
    /// Port of the MQTT listener on 127.0.0.1.
    port: u16,
    /// Port of the TLS listener on 127.0.0.1, if started with one.
    tls_port: Option<u16>,
    /// Holds the config file and the log.
    dir: TempDir,
    /// The broker process.
    child: Child,
}

impl Mosquitto {
    /// Starts mosquitto on a free port and waits until it accepts connections.
    pub fn start() -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("kedge-e2e-mosquitto-")
            .tempdir()
            .expect("temp dir");
        Mosquitto::start_in(dir, "")
    }

    /// Starts mosquitto with a second, TLS listener ([`Mosquitto::tls_port`]): the certificate in
    /// `cert`/`key`. The PEM files are copied into the broker's own directory.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("kedge-e2e-mosquitto-")
            .tempdir()
            .expect("temp dir");
        let (c, k) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        std::fs::copy(cert, &c).expect("copy the certificate");
        std::fs::copy(key, &k).expect("copy the key");
        // A root mosquitto drops privileges before it reads them: a test key may be readable.
        use std::os::unix::fs::PermissionsExt;
        for (path, mode) in [(dir.path(), 0o755), (&c, 0o644), (&k, 0o644)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .expect("chmod for mosquitto");
        }
        let tls_port = free_port();
        let mut m = Mosquitto::start_in(
            dir,
            &format!(
                "listener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                c.display(),
                k.display()
            ),
        );
        m.tls_port = Some(tls_port);
        m
    }

    /// The TLS listener's port on 127.0.0.1.
    pub fn tls_port(&self) -> u16 {
        self.tls_port.expect("started with Mosquitto::start_tls")
    }

    fn start_in(dir: TempDir, tls_listener: &str) -> Mosquitto {
        let port = free_port();
        // Persistent sessions (kedge's, while it is down) queue in memory: keep up to a million
        // QoS 1 messages per client rather than the default 1000, which would silently drop some.
        // At most 512 unacknowledged messages to an MQTT 3.1.1 client (the MQTT 5 client's
        // receive maximum): mosquitto 2.0.11 holds to it only until the client starts
        // acknowledging (tests/brokers/inflight_probe.py), so kedge's redelivery window is not
        // sized by it (ARCHITECTURE.md §9).
        // Logging goes to stderr (a root mosquitto drops privileges and may not open a log file).
        let config = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence false\n\
             max_queued_messages 1000000\n\
             max_inflight_messages 512\n\
             log_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\n\
             log_timestamp_format %H:%M:%S\n\
             {tls_listener}"
        );
        let config_path = dir.path().join("mosquitto.conf");
        std::fs::write(&config_path, config).expect("write mosquitto.conf");
        let log = dir.path().join("mosquitto.log");
        let (stdout, stderr) = log_stdio(&log);
        let mut child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&config_path)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn mosquitto");
        wait_for_port("mosquitto", port, &mut child, &log);
        Mosquitto {
            port,
            tls_port: None,
            dir,
            child,
        }
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits until some client has subscribed to exactly `filter` (mosquitto logs every SUBSCRIBE).
    pub fn wait_subscribed(&self, filter: &str, timeout: Duration) {
        let suffix = format!(" {filter}");
        wait_until(
            &format!("a subscription to {filter} (mosquitto log)"),
            timeout,
            || {
                std::fs::read_to_string(self.log())
                    .map(|log| log.lines().any(|line| line.ends_with(&suffix)))
                    .unwrap_or(false)
            },
        );
    }

    /// How many lines of the broker's log contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.log())
            .map(|log| log.lines().filter(|l| l.contains(needle)).count())
            .unwrap_or(0)
    }

    /// Path of the broker's log file.
    fn log(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        print_log_if_panicking(&self.log());
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}
