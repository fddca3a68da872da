//! The real kedge binary as a child process: started on a config, watched through its metrics
//! endpoint and `/proc/PID/{stat,status,io}`, stopped with SIGTERM.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{proc_field, process_cpu_seconds};

/// A running kedge; SIGTERM, then SIGKILL, when dropped.
pub struct Agent {
    child: Option<Child>,
    metrics_port: u16,
    log: PathBuf,
}

/// What `/proc` says about the process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// User + system CPU seconds so far.
    pub cpu_s: f64,
    /// Resident set now, KiB.
    pub rss_kib: u64,
    /// Peak resident set so far, KiB.
    pub hwm_kib: u64,
    /// Bytes the process caused to be written to storage so far (`write_bytes`).
    pub write_bytes: u64,
}

impl Agent {
    /// Writes `config` to `dir/kedge.toml` and runs `binary run --config` on it; waits until its
    /// metrics listener (at 127.0.0.1:`metrics_port`) answers.
    pub fn start(binary: &Path, dir: &Path, config: &str, metrics_port: u16) -> Agent {
        let path = dir.join("kedge.toml");
        std::fs::write(&path, config).expect("write kedge.toml");
        let log = dir.join("kedge.log");
        let file = std::fs::File::create(&log).expect("kedge log");
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        super::started(child.id());
        let mut agent = Agent {
            child: Some(child),
            metrics_port,
            log,
        };
        // Compiling a plugin at first start takes a few seconds.
        let deadline = Instant::now() + Duration::from_secs(120);
        while agent.metrics().is_none() {
            if let Some(status) = agent
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                // Reaped by try_wait: its pid may name another process by the time the panic
                // hook kills the peers still listed.
                super::stopping(agent.pid());
                panic!(
                    "kedge exited with {status} at start:\n{}",
                    agent.log_tail(40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "kedge metrics did not come up:\n{}",
                agent.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `/proc` figures of the process now.
    pub fn sample(&self) -> ProcSample {
        let pid = self.pid();
        let status = PathBuf::from(format!("/proc/{pid}/status"));
        ProcSample {
            cpu_s: process_cpu_seconds(pid),
            rss_kib: proc_field(&status, "VmRSS:"),
            hwm_kib: proc_field(&status, "VmHWM:"),
            write_bytes: proc_field(Path::new(&format!("/proc/{pid}/io")), "write_bytes:"),
        }
    }

    /// The metrics endpoint's samples by series (`name` or `name{labels}` as exposed); `None`
    /// when it does not answer.
    pub fn metrics(&self) -> Option<HashMap<String, f64>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let body = text.split_once("\r\n\r\n")?.1;
        Some(
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_owned(), value.trim().parse().ok()?))
                })
                .collect(),
        )
    }

    /// One counter of the metrics endpoint (0 when absent or unreachable).
    pub fn counter(&self, name: &str) -> f64 {
        self.metrics()
            .and_then(|m| m.get(name).copied())
            .unwrap_or(0.0)
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        super::stopping(child.id());
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The last `lines` lines of kedge's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
