//! Test harness: real peers (tansu, mosquitto), the real kedge binary and an independent consumer,
//! each behind an RAII guard that kills its process and deletes its temp dir on drop.

pub mod broker;
pub mod consume;
pub mod kedge;
pub mod mock_cluster;
pub mod mosquitto;
pub mod powercut;
pub mod proxy;
pub mod publish;
pub mod rumqttd;
pub mod scripted_mqtt;
pub mod tansu;
pub mod tls;
pub mod verdict;

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How many log lines a guard prints when the test that owns it fails.
const LOG_TAIL_LINES: usize = 60;

/// The value of `name` with exactly these `labels` (none: "") in a scrape of kedge's metrics
/// listener at `addr`, 0 when absent. `name` must be a metric kedge defines, so that a misspelt
/// one fails rather than reads 0.
pub fn metric(addr: std::net::SocketAddr, name: &str, labels: &str) -> f64 {
    try_metric(addr, name, labels).expect("scrape")
}

/// [`metric`], or the error when the listener does not answer (not up yet, or gone).
pub fn try_metric(addr: std::net::SocketAddr, name: &str, labels: &str) -> std::io::Result<f64> {
    assert!(
        ::kedge::ops::metrics::Metric::of_series(name).is_some(),
        "{name} is not a metric kedge defines (agent/src/ops/metrics.rs)"
    );
    let (_, body) = ::kedge::ops::get(addr, "/metrics", Duration::from_secs(5))?;
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0.0, |v| v.parse().expect("a number")))
}

/// The repository root (the package's manifest dir is `agent/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent directory")
        .to_path_buf()
}

/// Where `scripts/install-peers.sh` put the peers: `$KEDGE_PEERS_DIR`, else `<repo>/.peers`.
fn peers_dir() -> PathBuf {
    std::env::var_os("KEDGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".peers"))
}

/// Panics with install instructions: a missing peer fails the test, it never skips it.
fn missing_peer(what: &str, looked_at: &str) -> ! {
    panic!(
        "{what} not found (looked at {looked_at}); run scripts/install-peers.sh \
         (or point KEDGE_PEERS_DIR at an existing .peers directory)"
    )
}

/// A file inside the peers directory, which must exist.
pub fn peer(relative: &str) -> PathBuf {
    let path = peers_dir().join(relative);
    if !path.is_file() {
        missing_peer(relative, &path.display().to_string());
    }
    path
}

/// The tansu broker binary.
pub fn tansu_bin() -> PathBuf {
    peer("bin/tansu")
}

/// The Python interpreter of the peers' virtualenv (it has confluent-kafka).
pub fn python_bin() -> PathBuf {
    peer("venv/bin/python")
}

/// The mosquitto binary: on `PATH`, else `/usr/sbin/mosquitto`.
pub fn mosquitto_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("mosquitto"));
    on_path
        .chain([PathBuf::from("/usr/sbin/mosquitto")])
        .find(|path| path.is_file())
        .unwrap_or_else(|| missing_peer("mosquitto", "$PATH and /usr/sbin/mosquitto"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until 127.0.0.1:`port` accepts connections; panics (with the log) if `child` exits.
pub fn wait_for_port(name: &str, port: u16, child: &mut Child, log: &Path) {
    wait_until(
        &format!("{name} to listen on 127.0.0.1:{port}"),
        Duration::from_secs(20),
        || {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "{name} exited with {status} before listening:\n{}",
                    log_tail(log)
                );
            }
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
        },
    );
}

/// Opens a log file for appending, as a child's stdout and (a clone) its stderr.
pub fn log_stdio(path: &Path) -> (Stdio, Stdio) {
    let file = File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let clone = file.try_clone().expect("clone log file handle");
    (Stdio::from(file), Stdio::from(clone))
}

/// The last lines of a log file, framed for printing.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    format!(
        "----- tail of {} -----\n{tail}\n----- end -----",
        path.display()
    )
}

/// Prints the tail of a guard's log if the current test is failing (called from `Drop`).
pub fn print_log_if_panicking(path: &Path) {
    if std::thread::panicking() {
        eprintln!("{}", log_tail(path));
    }
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to a child process.
pub fn send_signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped child.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Waits up to `timeout` for a child to exit; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child either way.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if child.try_wait().expect("try_wait").is_some() {
        return;
    }
    send_signal(child, libc::SIGTERM);
    if wait_timeout(child, grace).is_none() {
        send_signal(child, libc::SIGKILL);
        child.wait().expect("wait after SIGKILL");
    }
}

/// Runs a short-lived command to completion, capturing its output; kills it after `timeout`.
pub fn run(mut command: Command, timeout: Duration) -> Output {
    let dir = tempfile::tempdir().expect("temp dir for command output");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create stdout file"))
        .stderr(File::create(&err_path).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let Some(status) = wait_timeout(&mut child, timeout) else {
        send_signal(&child, libc::SIGKILL);
        child.wait().expect("wait after SIGKILL");
        panic!(
            "{command:?} did not finish within {timeout:?}:\n{}",
            log_tail(&err_path)
        );
    };
    Output {
        status,
        stdout: std::fs::read(&out_path).expect("read stdout"),
        stderr: std::fs::read(&err_path).expect("read stderr"),
    }
}
