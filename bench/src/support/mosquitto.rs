//! mosquitto, the MQTT broker, on a loopback port, configured as the end-to-end tests configure
//! it: no persistence, a queue deep enough for a subscriber that falls behind (the default of
//! 1,000 queued messages would silently drop), and no broker-side in-flight cap (the
//! subscriber's MQTT 5 receive maximum is the cap).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, wait_for_port};

/// A running mosquitto; stopped when dropped.
pub struct Mosquitto {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Mosquitto {
    /// Starts mosquitto on a free port of 127.0.0.1 and waits until it listens.
    pub fn start() -> Mosquitto {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("kedge-bench-mosquitto-")
            .tempdir()
            .expect("temp dir");
        let config = format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence false\n\
             max_queued_messages 10000000\n\
             max_inflight_messages 0\n\
             log_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type subscribe\n"
        );
        let config_path = dir.path().join("mosquitto.conf");
        std::fs::write(&config_path, config).expect("write mosquitto.conf");
        let log = std::fs::File::create(dir.path().join("mosquitto.log")).expect("log");
        let binary = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                eprintln!("error: mosquitto not found; run scripts/install-peers.sh");
                super::exit(2);
            });
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto");
        super::started(child.id());
        if !wait_for_port(port, Duration::from_secs(20)) {
            let _ = child.kill();
            panic!("mosquitto did not listen on 127.0.0.1:{port}");
        }
        Mosquitto { port, dir, child }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits until some client subscribed to exactly `filter` (mosquitto logs every SUBSCRIBE).
    pub fn wait_subscribed(&self, filter: &str, timeout: Duration) -> bool {
        let suffix = format!(" {filter}");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let log =
                std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default();
            if log.lines().any(|l| l.ends_with(&suffix)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// CPU seconds the broker has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        super::process_cpu_seconds(self.child.id())
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        super::stopping(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
