//! Exit codes of every command through the real binary, one scheme for all (README.md, "Exit
//! codes"): 0 success, 1 the command ran and found a problem, 2 it could not do its work, as
//! clap exits on a usage error. The cases need no broker: missing and invalid files, a queue
//! held by another process, a listener nobody answers on, and a stand-in for a running agent.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use kedge_queue::{Queue, Sync};
use tempfile::TempDir;

use crate::support::kedge::kedge_command;
use crate::support::{free_port, run};

/// Runs `kedge` with `args`, bounded in time.
fn kedge(args: &[&str]) -> Output {
    let mut command = kedge_command();
    command.args(args);
    run(command, Duration::from_secs(60))
}

/// Asserts that `kedge args` exits with `code`; returns its stderr.
fn assert_exit(args: &[&str], code: i32) -> String {
    let out = kedge(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "kedge {}\nstdout:\n{}\nstderr:\n{stderr}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// A temp dir with a valid `kedge.toml` whose data dir is `data/` in it (not created).
struct Setup {
    dir: TempDir,
}

impl Setup {
    /// The config, with `extra` appended (e.g. a `[metrics]` section).
    fn new(extra: &str) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("kedge-e2e-exit-")
            .tempdir()
            .expect("temp dir");
        let text = format!(
            "[agent]\ndevice_id = \"exit-dev\"\ndata_dir = \"{}\"\n\n\
             [mqtt]\nsubscriptions = [{{ filter = \"sensors/#\" }}]\n\n\
             [kafka]\nbootstrap = [\"127.0.0.1:9\"]\n{extra}",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("kedge.toml"), text).expect("write config");
        Setup { dir }
    }

    fn config(&self) -> String {
        self.path("kedge.toml")
    }

    /// A path in the temp dir, as an argument.
    fn path(&self, name: &str) -> String {
        let path = self.dir.path().join(name);
        path.to_str().expect("UTF-8 temp path").to_owned()
    }

    /// Opens (creating) the queue kedge would use; it stays locked while the result lives.
    fn open_queue(&self) -> Queue {
        let dir = self.dir.path().join("data/queue");
        Queue::open(&dir, 1 << 20, Sync::Relaxed, "exit-dev").expect("open queue")
    }

    /// A file in the temp dir that is no configuration.
    fn not_a_config(&self) -> String {
        std::fs::write(self.dir.path().join("bad.toml"), "[agent\n").expect("write");
        self.path("bad.toml")
    }
}

#[test]
fn usage_errors_exit_2_as_clap_does() {
    assert_exit(&[], 2);
    assert_exit(&["frobnicate"], 2);
    assert_exit(&["check", "--no-such-flag"], 2);
    // Without --config, audit needs --bootstrap and --topic.
    assert_exit(&["audit", "--topic", "t"], 2);
    assert_exit(&["--help"], 0);
    assert_exit(&["status", "--help"], 0);
}

#[test]
fn every_help_states_the_exit_codes() {
    for command in [
        &[][..],
        &["run"],
        &["check"],
        &["status"],
        &["audit"],
        &["queue"],
        &["queue", "stats"],
        &["queue", "inspect"],
        &["queue", "export"],
        &["plugin"],
        &["plugin", "test"],
        &["plugin", "compile"],
    ] {
        let out = kedge(&[command, &["--help"]].concat());
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && help.contains("Exit codes"),
            "kedge {} --help:\n{help}",
            command.join(" ")
        );
    }
}

#[test]
fn bad_size_and_duration_flags_are_usage_errors_naming_the_flag() {
    let setup = Setup::new("");
    let input = setup.path("input.jsonl");
    std::fs::write(&input, "{\"subject\": \"a\", \"value\": \"1\"}\n").expect("write input");
    let plugin = setup.path("plugin.wasm");
    for (flag, value, message) in [
        ("--memory", "16XB", "invalid size \"16XB\""),
        (
            "--max-output",
            "-1KiB",
            "invalid size \"-1KiB\": must not be negative",
        ),
        ("--timeout", "5 parsecs", "invalid duration \"5 parsecs\""),
        ("--config", "no-equals-sign", "expected KEY=VALUE"),
    ] {
        let arg = format!("{flag}={value}");
        let stderr = assert_exit(&["plugin", "test", &plugin, "--input", &input, &arg], 2);
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{flag} "))
                && stderr.contains(message),
            "{flag}={value}: {stderr}"
        );
    }
}

#[test]
fn check_exits_2_without_a_valid_config() {
    let setup = Setup::new("");
    assert_exit(&["check", "--config", &setup.path("missing.toml")], 2);
    assert_exit(&["check", "--config", &setup.not_a_config()], 2);
    assert_exit(&["check", "--config", &setup.config()], 0);
}

#[test]
fn run_exits_2_when_it_cannot_start() {
    let setup = Setup::new("");
    assert_exit(&["run", "--config", &setup.path("missing.toml")], 2);
    assert_exit(&["run", "--config", &setup.not_a_config()], 2);
    // The configuration is valid, but another process holds the queue.
    let held = setup.open_queue();
    let stderr = assert_exit(&["run", "--config", &setup.config()], 2);
    assert!(stderr.contains("in use by a running kedge"), "{stderr}");
    drop(held);
}

#[test]
fn status_exits_2_when_it_cannot_tell() {
    let setup = Setup::new("");
    assert_exit(&["status", "--config", &setup.path("missing.toml")], 2);
    assert_exit(&["status", "--config", &setup.not_a_config()], 2);
    // No listener configured, and no queue to read.
    let stderr = assert_exit(&["status", "--config", &setup.config()], 2);
    assert!(stderr.contains("no kedge queue here"), "{stderr}");
}

#[test]
fn status_exits_1_for_an_agent_that_is_not_running() {
    let setup = Setup::new(&format!(
        "\n[metrics]\nlisten = \"127.0.0.1:{}\"\n",
        free_port()
    ));
    drop(setup.open_queue());
    let out = kedge(&["status", "--config", &setup.config()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("kedge is not running (nothing answers at"),
        "{stdout}"
    );
}

#[test]
fn status_exits_0_for_a_ready_agent_and_1_for_one_that_is_not() {
    for (ready, code) in [(true, 0), (false, 1)] {
        let agent = FakeAgent::start(ready);
        let setup = Setup::new(&format!("\n[metrics]\nlisten = \"{}\"\n", agent.addr));
        let out = kedge(&["status", "--config", &setup.config()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "ready {ready}:\n{stdout}");
        assert!(stdout.contains("kedge is running"), "{stdout}");
    }
}

#[test]
fn queue_tools_exit_2_when_they_cannot_read() {
    let setup = Setup::new("");
    for tool in ["stats", "inspect", "export"] {
        assert_exit(&["queue", tool, "--config", &setup.path("missing.toml")], 2);
        let stderr = assert_exit(&["queue", tool, "--config", &setup.config()], 2);
        assert!(stderr.contains("no kedge queue here"), "{stderr}");
    }
    let held = setup.open_queue();
    let stderr = assert_exit(&["queue", "stats", "--config", &setup.config()], 2);
    assert!(stderr.contains("in use by a running kedge"), "{stderr}");
    drop(held);
    assert_exit(&["queue", "stats", "--config", &setup.config()], 0);
}

#[test]
fn plugin_tools_exit_2_when_they_cannot_read() {
    let setup = Setup::new("");
    let missing = setup.path("missing.wasm");
    let input = setup.path("input.jsonl");
    std::fs::write(&input, "{\"subject\": \"a\", \"value\": \"1\"}\n").expect("write input");
    assert_exit(&["plugin", "test", &missing, "--input", &input], 2);
    assert_exit(
        &["plugin", "test", &missing, "--input", &setup.path("none")],
        2,
    );
    let out = setup.path("out.cwasm");
    assert_exit(&["plugin", "compile", &missing, "-o", &out], 2);
}

#[test]
fn audit_exits_2_when_it_cannot_read() {
    let setup = Setup::new("");
    assert_exit(&["audit", "--config", &setup.path("missing.toml")], 2);
    let nobody = format!("127.0.0.1:{}", free_port());
    assert_exit(&["audit", "--bootstrap", &nobody, "--topic", "t"], 2);
}

/// A stand-in for a running agent's listener: `/health/ready` answers 200 or 503, everything
/// else 200 with a line of metrics. Stops on drop.
struct FakeAgent {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAgent {
    fn start(ready: bool) -> FakeAgent {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    answer(stream, ready);
                }
            }
        });
        FakeAgent {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

/// Reads one request head and answers it, closing the connection.
fn answer(stream: TcpStream, ready: bool) {
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let report = status_report(ready);
    let (code, body) = match request.split(' ').nth(1) {
        Some("/status.json") => ("200 OK", report.as_str()),
        Some("/health/ready") if ready => ("200 OK", "ready\n"),
        Some("/health/ready") => (
            "503 Service Unavailable",
            "oldest pending record is 9s old\n",
        ),
        _ => ("404 Not Found", ""),
    };
    let _ = write!(
        &stream,
        "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A `/status.json` report of an idle agent, ready or not.
fn status_report(ready: bool) -> String {
    let unready: Vec<&str> = if ready {
        vec![]
    } else {
        vec!["oldest pending record is 9s old"]
    };
    serde_json::json!({
        "records": {
            "received": 1, "journaled": 1, "delivered": 1, "dead_lettered": 0, "dropped": 0,
            "dropped_by_plugins": 0
        },
        "queue": {
            "journal_records": 0, "unacknowledged_records": 0, "oldest_pending_age_seconds": null,
            "live_bytes": 0, "max_bytes": null, "disk_bytes": 4096
        },
        "kafka": {
            "connected": true, "connections": 1, "leaders_known": 1, "leaders_unknown": 0,
            "requests_in_flight": 0, "last_ack_age_seconds": 1.0, "produce_errors": {},
            "batches_delivered": 1, "batch_retries": 0, "batches_duplicate": 0
        },
        "mqtt_connected": true,
        "plugins": [],
        "process": {
            "resident_bytes": 1048576, "open_fds": 10, "pid": 1,
            "pid_namespace": "pid:[4026531836]", "start_ticks": 987654, "reloads_applied": 0,
            "reloads_refused": 0, "reloads_read": 0, "reload_answered": 0, "reload_refused": null,
            "config_file": "/etc/kedge/kedge.toml"
        },
        "unready": unready,
    })
    .to_string()
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
