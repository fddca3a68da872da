//! A measured child process: its CPU time (user + system, all threads) and peak RSS come from
//! `wait4`, i.e. from the kernel's accounting of that process alone, whatever language it is in.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a measured child ended and what it cost.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit code, or `None` when killed by a signal (or the timeout).
    pub code: Option<i32>,
    /// User CPU seconds of the whole process lifetime.
    pub user_s: f64,
    /// System CPU seconds of the whole process lifetime.
    pub sys_s: f64,
    /// Peak resident set size, KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
    /// Wall-clock seconds from spawn to exit.
    pub wall_s: f64,
    /// `key=value` pairs of the child's `RESULT` line on stdout.
    pub result: HashMap<String, String>,
    /// The last lines of its stderr, for error reports.
    pub stderr_tail: String,
}

impl Outcome {
    /// A number the child reported; panics with its stderr when it did not report it.
    pub fn num(&self, key: &str) -> f64 {
        self.result
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the child reported no numeric {key:?} (exit {:?}); stderr:\n{}",
                    self.code, self.stderr_tail
                )
            })
    }
}

/// Runs `command` with stdout and stderr in files under `dir`, kills it after `timeout`, and
/// returns what the kernel accounted for it.
pub fn run_measured(mut command: Command, dir: &Path, name: &str, timeout: Duration) -> Outcome {
    let out_path = dir.join(format!("{name}.stdout"));
    let err_path = dir.join(format!("{name}.stderr"));
    let started = Instant::now();
    let child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    // The child is reaped here with wait4, not through `Child`, to get its rusage.
    let mut status = 0;
    // SAFETY: rusage is plain old data; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut killed = false;
    loop {
        // SAFETY: waiting for our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if r < 0 {
            panic!("wait4({pid}): {}", std::io::Error::last_os_error());
        }
        if !killed && started.elapsed() > timeout {
            eprintln!("{name}: no exit after {timeout:?}; killing it");
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall_s = started.elapsed().as_secs_f64();
    drop(child);
    let code = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        None
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let result = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let lines: Vec<&str> = stderr.lines().collect();
    let stderr_tail = lines[lines.len().saturating_sub(30)..].join("\n");
    Outcome {
        code,
        user_s: tv(usage.ru_utime),
        sys_s: tv(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss as u64,
        wall_s,
        result,
        stderr_tail,
    }
}

/// This process's CPU seconds so far (user, system), all threads.
pub fn self_cpu() -> (f64, f64) {
    // SAFETY: rusage is plain old data; getrusage fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(usage.ru_utime), tv(usage.ru_stime))
}

/// Resets this process's peak RSS (`VmHWM`) to its current RSS (Linux ≥ 4.0), so that a later
/// reading covers one phase only. False where the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's peak RSS since start or the last [`reset_peak_rss`], KiB.
pub fn peak_rss_kib() -> u64 {
    super::proc_field(Path::new("/proc/self/status"), "VmHWM:")
}
