//! What the comparison benchmarks share: the peers (tansu on loopback), a measured child process
//! (CPU and peak RSS from `wait4`), the records file both sides read, and summary statistics.

pub mod agent;
pub mod child;
pub mod mosquitto;
pub mod records;
pub mod stats;
pub mod tansu;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// Pids of the peers (brokers, the agent) this run started and has not stopped yet. The
/// benchmarks are built with `panic = "abort"`, so no `Drop` stops them when a run panics: the
/// panic hook kills them instead, else a broker left running would take CPU from later runs.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Records a peer just spawned, to be killed should this run panic or [`exit`] early.
pub fn started(pid: u32) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            kill_running();
        }));
    });
    RUNNING.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
}

/// Kills every peer still running. The list is held only to push or remove a pid, which does
/// not panic, so a panicking thread never holds it.
fn kill_running() {
    let pids = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for pid in pids {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child
        // (removed from the list before it is reaped, or before the panic where `try_wait`
        // reaped it).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

/// Exits with `code` (a missing peer, bad usage) after killing the peers started so far:
/// `std::process::exit` runs no `Drop`.
pub fn exit(code: i32) -> ! {
    kill_running();
    std::process::exit(code)
}

/// Forgets a peer about to be stopped and reaped (its pid may then name another process).
pub fn stopping(pid: u32) {
    RUNNING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|&p| p != pid);
}

/// The repository root (this package lives in `bench/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent directory")
        .to_path_buf()
}

/// Where `scripts/install-peers.sh` put the peers: `$KEDGE_PEERS_DIR`, else `<repo>/.peers`.
pub fn peers_dir() -> PathBuf {
    std::env::var_os("KEDGE_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".peers"))
}

/// A file inside the peers directory; exits with install instructions when it is missing.
pub fn peer(relative: &str) -> PathBuf {
    let path = peers_dir().join(relative);
    if !path.is_file() {
        eprintln!(
            "error: {} not found; run scripts/install-peers.sh (or point KEDGE_PEERS_DIR at an \
             existing .peers directory)",
            path.display()
        );
        exit(2);
    }
    path
}

/// The Python interpreter of the peers' virtualenv (it has confluent-kafka).
pub fn python_bin() -> PathBuf {
    peer("venv/bin/python")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Waits until 127.0.0.1:`port` accepts connections, or `timeout` passes.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A scratch directory on tmpfs (`/dev/shm`) when there is one, else in the temp dir.
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix(prefix);
        b
    };
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return dir;
    }
    builder.tempdir().expect("temp dir")
}

/// A numeric field of a `/proc` key-value file such as `/proc/self/status` (`VmHWM:`) or
/// `/proc/self/io` (`write_bytes:`); 0 when unreadable.
pub fn proc_field(path: &Path, name: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Bytes written so far to the block device that holds `path` (`/sys/dev/block/M:m/stat`,
/// sectors written × 512): what reached the disk from every writer, the filesystem's journal
/// included. 0 when `path` is not on a block device.
pub fn device_written_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat"))
        .ok()
        .and_then(|t| t.split_whitespace().nth(6)?.parse::<u64>().ok())
        .map_or(0, |sectors| sectors * 512)
}

/// CPU time (user + system, seconds) a running process has used so far, from `/proc/PID/stat`.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// The machine's load averages, as `uptime` prints them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Reads `topics` from offset 0 on every partition with kedge's own auditor (raw Fetch): records,
/// gaps and duplicates of `kedge-seq` per device.
pub fn audit_from_start(
    bootstrap: &str,
    topics: &[&str],
) -> Result<kedge::audit::analysis::Report, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime
        .block_on(kedge::audit::audit(&kedge::audit::AuditSettings {
            cluster: kedge::audit::plaintext(bootstrap.to_owned()),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            device: None,
            from_offset: Some(0),
            skip_absent: false,
        }))
        .map_err(|e| format!("audit: {e}"))
}
