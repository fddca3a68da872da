//! Config reload under load: while a publisher streams QoS 1 readings, kedge is reloaded (by
//! SIGHUP and by `kedge reload`) with new routing, a plugin and a new Kafka codec, then with a
//! config it must refuse, then with a good one again. Every reading lands once (the audit over
//! both topics finds every kedge-seq once), the MQTT session is never dropped (kedge's own
//! connection counter stays at 1, and mosquitto saw one connection), the batches after the
//! reload are in the new codec, and the refusal is visible in `/health/ready`, `kedge status`
//! and the exit code of `kedge reload`.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::audit::kedge_audit;
use crate::codecs::batch_codecs;
use crate::plugins::{assert_each_value_once, backpressure_section, config_with, messages, plugin};
use crate::support::consume::consume;
use crate::support::kedge::DEVICE_ID;
use crate::support::kedge::{Kedge, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::{free_port, metric, run, wait_until};
use kafka_sim::{Cluster, SimBroker};

/// Readings published, at [`RATE`] a second.
const MESSAGES: usize = 12_000;
const RATE: u32 = 1_500;

/// Routing before the reload: everything to `readings`.
const BEFORE: &str = r#"[routing]
dead_letter_topic = "kedge-dead-letter"

[[routing.rules]]
filter = "sensors/+/reading"
topic = "readings"
key_level = 1"#;

fn config(mosquitto: &Mosquitto, tansu: &Tansu, metrics: SocketAddr, routing: &str) -> String {
    pipeline_config(
        mosquitto.port(),
        &tansu.bootstrap(),
        &format!("{routing}\n\n[metrics]\nlisten = \"{metrics}\"\n"),
    )
}

/// Runs `kedge reload --config FILE`: (exit code, stdout, stderr).
fn kedge_reload(kedge: &Kedge) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kedge"));
    command
        .arg("reload")
        .arg("--config")
        .arg(kedge.config_path());
    let out = run(command, Duration::from_secs(120));
    (
        out.status.code().expect("kedge reload exited normally"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn reloads(metrics: SocketAddr, result: &str) -> f64 {
    metric(
        metrics,
        "kedge_config_reloads_total",
        &format!("result=\"{result}\""),
    )
}

/// `/health/ready`: (status code, body).
fn ready(metrics: SocketAddr) -> (u16, String) {
    kedge::ops::get(metrics, "/health/ready", Duration::from_secs(5)).expect("ready")
}

#[test]
fn reloads_under_load_change_routing_plugins_and_codec_without_loss_duplicates_or_a_new_session() {
    let filter = plugin("c-filter");
    let tansu = Tansu::start();
    tansu.create_topic("readings", 1);
    tansu.create_topic("readings-b", 1);
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let before = config(&mosquitto, &tansu, metrics, BEFORE);
    let mut kedge = Kedge::start(&before);
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));
    wait_until("the metrics listener", Duration::from_secs(30), || {
        kedge::ops::get(metrics, "/health/live", Duration::from_secs(1)).is_ok()
    });
    // The config as kedge runs it: the harness put the data dir in.
    let running = std::fs::read_to_string(kedge.config_path()).expect("config");

    let published = readings(MESSAGES, 5);
    let publishing = Publishing::start(mosquitto.port(), published, Some(RATE));
    wait_until("a quarter delivered", Duration::from_secs(60), || {
        metric(metrics, "kedge_records_delivered_total", "") >= (MESSAGES / 4) as f64
    });

    // 1. SIGHUP: new routing, a plugin, and lz4 instead of zstd (the producer is replaced).
    let after = running
        .replace("topic = \"readings\"", "topic = \"readings-b\"")
        .replace(
            "linger = \"5ms\"",
            "linger = \"5ms\"\ncompression = \"lz4\"",
        )
        + &format!(
            "\n[[plugin]]\nname = \"filter\"\npath = \"{}\"\n",
            filter.display()
        );
    std::fs::write(kedge.config_path(), &after).expect("write config");
    // SAFETY: kill only sends a signal, to the kedge this test started.
    assert_eq!(
        unsafe { libc::kill(kedge.pid() as libc::pid_t, libc::SIGHUP) },
        0
    );
    wait_until("the first reload", Duration::from_secs(120), || {
        reloads(metrics, "applied") >= 1.0
    });
    wait_until(
        "records through the plugin",
        Duration::from_secs(30),
        || metric(metrics, "kedge_plugin_events_total", "plugin=\"filter\"") > 0.0,
    );
    assert_eq!(ready(metrics).0, 200, "{:?}", ready(metrics));
    // A child process compiled the plugin into the cache, and the agent loaded it from there.
    assert_eq!(
        kedge.log_count("plugin compiled"),
        0,
        "{}",
        kedge.log_text()
    );
    let cached = std::fs::read_dir(kedge.data_dir().join("plugin-cache"))
        .expect("the plugin cache")
        .count();
    assert_eq!(cached, 1);

    // 2. A config that fails check: a plugin that does not exist. Refused, the old one runs.
    let broken = after.replace(&filter.display().to_string(), "/nonexistent/filter.wasm");
    std::fs::write(kedge.config_path(), &broken).expect("write config");
    let (code, out, err) = kedge_reload(&kedge);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.starts_with("refused: ") && out.contains("/nonexistent/filter.wasm"),
        "{out}"
    );
    let (status, body) = ready(metrics);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("config reload refused, kedge runs the config it had")
            && body.contains("/nonexistent/filter.wasm"),
        "{body}"
    );
    let mut command = Command::new(env!("CARGO_BIN_EXE_kedge"));
    command
        .arg("status")
        .arg("--config")
        .arg(kedge.config_path());
    let status_out =
        String::from_utf8_lossy(&run(command, Duration::from_secs(120)).stdout).into_owned();
    assert!(
        status_out.contains("config reloads   1 applied, 1 refused")
            && status_out.contains("config reload refused"),
        "{status_out}"
    );
    // A change the running source holds needs a restart: refused, and says which.
    let moved = after.replace(
        &format!("port = {}", mosquitto.port()),
        &format!("port = {}", free_port()),
    );
    std::fs::write(kedge.config_path(), &moved).expect("write config");
    let (code, out, _) = kedge_reload(&kedge);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("mqtt cannot change while kedge runs: restart kedge to apply them"),
        "{out}"
    );

    // 3. The good config again, by `kedge reload`: ready again.
    std::fs::write(kedge.config_path(), &after).expect("write config");
    let (code, out, err) = kedge_reload(&kedge);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.starts_with("reloaded "), "{out}");
    assert_eq!(ready(metrics).0, 200, "{:?}", ready(metrics));

    publishing.wait_acked(Duration::from_secs(120));
    wait_until("every reading delivered", Duration::from_secs(120), || {
        metric(metrics, "kedge_records_delivered_total", "") >= MESSAGES as f64
    });

    // Kedge's own evidence: each reading journaled once, one MQTT connection throughout, and
    // the reloads counted as they went.
    assert_eq!(
        metric(metrics, "kedge_records_journaled_total", ""),
        MESSAGES as f64
    );
    assert_eq!(metric(metrics, "kedge_mqtt_connections_total", ""), 1.0);
    // No batch was sent again that Kafka already held: tansu's own deduplication would hide
    // such a resend from the audit, but not from this counter of its answers.
    assert_eq!(metric(metrics, "kedge_batches_duplicate_total", ""), 0.0);
    assert_eq!(
        (reloads(metrics, "applied"), reloads(metrics, "refused")),
        (2.0, 2.0)
    );
    assert_eq!(
        mosquitto.log_count(&format!("as kedge-{DEVICE_ID} ")),
        1,
        "mosquitto saw kedge connect once"
    );

    // Kafka's evidence: every kedge-seq once over both topics, and each topic holding some.
    let config_path = kedge.config_path();
    let (code, out, err) = kedge_audit(&[
        "--config",
        config_path.to_str().expect("UTF-8 path"),
        "--topic",
        "readings",
        "--topic",
        "readings-b",
    ]);
    let last = MESSAGES - 1;
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(&format!(
            ": {MESSAGES} records, kedge-seq 0..={last}, 0 missing, 0 duplicates"
        )),
        "{out}"
    );
    let (old, new) = (
        batch_codecs(&tansu.bootstrap(), "readings"),
        batch_codecs(&tansu.bootstrap(), "readings-b"),
    );
    // Records routed before the reload may still be sealed by the new producer, in lz4; those
    // routed after it only by the new one.
    assert!(
        old.first() == Some(&"zstd") && old.iter().all(|c| ["zstd", "lz4"].contains(c)),
        "{old:?}"
    );
    assert!(
        !new.is_empty() && new.iter().all(|c| *c == "lz4"),
        "{new:?}"
    );
    kedge.terminate(Duration::from_secs(10));
}

/// A plugin that keeps failing under `on_failure = "backpressure"` holds the pipeline; a reload
/// that fixes its config takes effect at once, and the held batch goes through the new plugin:
/// every event lands once, without a restart or a new MQTT session.
#[test]
fn a_reload_replaces_a_plugin_that_holds_the_pipeline() {
    let hostile = plugin("hostile");
    let tansu = Tansu::start();
    tansu.create_topic("readings", 1);
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let section = |mode: &str| backpressure_section(&hostile, mode);
    let kedge = Kedge::start(&config_with(&mosquitto, &tansu, metrics, &section("loop")));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));
    let values: Vec<String> = (0..200).map(|i| format!("reading {i}")).collect();
    let publishing = Publishing::start(mosquitto.port(), messages(&values), None);
    wait_until("the circuit to open", Duration::from_secs(30), || {
        metric(metrics, "kedge_plugin_circuit_open", r#"plugin="hostile""#) == 1.0
    });
    assert_eq!(metric(metrics, "kedge_records_journaled_total", ""), 0.0);

    let running = std::fs::read_to_string(kedge.config_path()).expect("config");
    std::fs::write(
        kedge.config_path(),
        running.replace("mode = \"loop\"", "mode = \"keep\""),
    )
    .expect("rewrite config");
    let (code, out, err) = kedge_reload(&kedge);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    publishing.wait_acked(Duration::from_secs(60));
    let got = consume(
        &tansu.bootstrap(),
        "readings",
        values.len(),
        Duration::from_secs(60),
    );
    assert_each_value_once(&got, &values);
    assert_eq!(
        metric(metrics, "kedge_records_journaled_total", ""),
        values.len() as f64
    );
    assert_eq!(metric(metrics, "kedge_mqtt_connections_total", ""), 1.0);
    assert!(
        kedge.log_count("reloaded plugins replace the one holding the pipeline") == 1,
        "{}",
        kedge.log_text()
    );
    assert_eq!(ready(metrics).0, 200, "{:?}", ready(metrics));
}

/// `text` with `from` replaced by `to`; panics when `from` is not there (the test would
/// silently run another config).
fn edited(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "{from:?} is not in the config:\n{text}"
    );
    text.replace(from, to)
}

/// `kedge reload --config FILE`, started in the background.
fn start_reload(kedge: &Kedge) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kedge"))
        .arg("reload")
        .arg("--config")
        .arg(kedge.config_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kedge reload")
}

/// Panics, with its output, if `client` has ended: `what` says what was expected of it.
fn assert_still_waiting(client: &mut Child, what: &str) {
    if let Some(status) = client.try_wait().expect("try_wait") {
        let mut out = String::new();
        if let Some(mut pipe) = client.stdout.take() {
            let _ = pipe.read_to_string(&mut out);
        }
        if let Some(mut pipe) = client.stderr.take() {
            let _ = pipe.read_to_string(&mut out);
        }
        panic!("{what}, but kedge reload ended ({status}):\n{out}");
    }
}

/// Waits up to `timeout` for `client`: (exit code, stdout, stderr). Kills it past the timeout.
fn finish(mut client: Child, timeout: Duration) -> (i32, String, String) {
    let deadline = Instant::now() + timeout;
    while client.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = client.kill();
            let out = client.wait_with_output().expect("kedge reload");
            panic!(
                "kedge reload still waited after {timeout:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = client.wait_with_output().expect("kedge reload");
    (
        out.status.code().expect("kedge reload exited normally"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An agent on kafka-sim with a produce request in flight whose answer never comes, and a
/// `request_timeout` of 60 s: a reload that hands the producer over waits until the test lets
/// it go (`close_connections`, which fails the request), however slow the machine.
/// Returns the broker, mosquitto, the metrics address and the agent.
fn slow_to_reload() -> (SimBroker, Mosquitto, SocketAddr, Kedge) {
    let broker = SimBroker::start(Cluster::new().with_topic("readings", 1));
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let start = edited(
        &pipeline_config(
            mosquitto.port(),
            &broker.addr().to_string(),
            &format!("{BEFORE}\n\n[metrics]\nlisten = \"{metrics}\"\n"),
        ),
        "linger = \"5ms\"",
        "linger = \"5ms\"\nrequest_timeout = \"60s\"",
    );
    let kedge = Kedge::start(&start);
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));
    let published = readings(20, 2);
    Publishing::start(mosquitto.port(), published[..10].to_vec(), None)
        .wait_acked(Duration::from_secs(30));
    wait_until(
        "the first readings delivered",
        Duration::from_secs(30),
        || metric(metrics, "kedge_records_delivered_total", "") >= 10.0,
    );
    broker.lose_responses(true);
    Publishing::start(mosquitto.port(), published[10..].to_vec(), None)
        .wait_acked(Duration::from_secs(30));
    wait_until("a request in flight", Duration::from_secs(30), || {
        metric(metrics, "kedge_produce_requests_in_flight", "") >= 1.0
    });
    (broker, mosquitto, metrics, kedge)
}

/// Rewrites the agent's config with lz4 instead of zstd, a change that hands the producer over;
/// returns the new text.
fn write_lz4(kedge: &Kedge) -> String {
    let running = std::fs::read_to_string(kedge.config_path()).expect("config");
    let lz4 = edited(
        &running,
        "linger = \"5ms\"",
        "linger = \"5ms\"\ncompression = \"lz4\"",
    );
    std::fs::write(kedge.config_path(), &lz4).expect("write config");
    lz4
}

/// Two reloads overlap: the first (a new Kafka codec, whose producer handover waits for an
/// answer kafka-sim withholds) is under way when the file is changed again (another codec) and
/// `kedge reload` is run. Its verdict must be on the second read of the file, the one its
/// SIGHUP caused, not the first's: it says which read it answers for.
#[test]
fn a_reload_asked_while_another_runs_waits_for_a_read_made_after_it_asked() {
    let (broker, mosquitto, metrics, kedge) = slow_to_reload();
    // The first: lz4 instead of zstd, so the producer is handed over.
    let lz4 = write_lz4(&kedge);
    // SAFETY: kill only sends a signal, to the kedge this test started.
    assert_eq!(
        unsafe { libc::kill(kedge.pid() as libc::pid_t, libc::SIGHUP) },
        0
    );
    // Logged once the read is numbered: the client below notes it as begun.
    wait_until("the first SIGHUP", Duration::from_secs(30), || {
        kedge.log_count("SIGHUP received") >= 1
    });

    // The second, while the first waits: gzip.
    let gzip = edited(&lz4, "compression = \"lz4\"", "compression = \"gzip\"");
    std::fs::write(kedge.config_path(), &gzip).expect("write config");
    let mut client = start_reload(&kedge);
    wait_until("the client's SIGHUP", Duration::from_secs(60), || {
        assert_still_waiting(&mut client, "it should have sent SIGHUP and waited");
        kedge.log_count("SIGHUP received") >= 2
    });
    assert_eq!(
        reloads(metrics, "applied") + reloads(metrics, "refused"),
        0.0,
        "the first reload ended before the test let it"
    );
    // Both handovers may end now: the request in flight fails with its connection.
    broker.lose_responses(false);
    broker.close_connections();
    let (code, out, err) = finish(client, Duration::from_secs(90));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        out,
        format!(
            "reloaded {} (reload 2 of this agent)\n",
            kedge.config_path().display()
        )
    );
    assert_eq!(
        (reloads(metrics, "applied"), reloads(metrics, "refused")),
        (2.0, 0.0)
    );
    // And a refusal after them is reported as one.
    let moved = edited(
        &gzip,
        &format!("port = {}", mosquitto.port()),
        &format!("port = {}", free_port()),
    );
    std::fs::write(kedge.config_path(), &moved).expect("write config");
    let (code, out, _) = kedge_reload(&kedge);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("mqtt cannot change while kedge runs: restart kedge to apply them")
            && out.ends_with("kedge runs the config it had (reload 3 of this agent)\n"),
        "{out}"
    );
    wait_until("every reading delivered", Duration::from_secs(60), || {
        metric(metrics, "kedge_records_delivered_total", "") >= 20.0
    });
    assert_eq!(metric(metrics, "kedge_mqtt_connections_total", ""), 1.0);
}

/// An agent that dies while `kedge reload` waits for its verdict: the client says so within
/// its next polls (exit 2), instead of waiting out its 300 s.
#[test]
fn a_reload_whose_agent_dies_meanwhile_says_so() {
    let (_broker, _mosquitto, _metrics, mut kedge) = slow_to_reload();
    write_lz4(&kedge);
    let mut client = start_reload(&kedge);
    wait_until("the client's SIGHUP", Duration::from_secs(60), || {
        assert_still_waiting(&mut client, "it should have sent SIGHUP and waited");
        kedge.log_count("SIGHUP received") >= 1
    });
    kedge.kill9();
    let (code, out, err) = finish(client, Duration::from_secs(30));
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("ended before it gave a verdict"), "{err}");
}

/// Serves `body` as every answer at a free loopback port until the test ends: an agent's
/// status page that says what the test wants.
fn serve(body: String) -> SocketAddr {
    use std::io::Write;
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            // The whole request first: closing on unread bytes would reset the connection.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// `kedge reload` signals the pid an agent reports over HTTP only where it names that agent:
/// not a kedge that started at another time (another agent, or the pid reused), and nothing
/// when the agent runs in another pid namespace, as in a container, where its pid means another
/// process here. A status page reports a real agent's pid with another start, then another
/// namespace: the real agent must receive no SIGHUP (its own count of reads stays 0), and
/// `kedge reload` says why (exit 2). Its own status page, unchanged, gets it reloaded.
#[test]
fn a_reload_signals_no_process_but_the_agent_that_reported_its_pid() {
    let broker = SimBroker::start(Cluster::new().with_topic("readings", 1));
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let text = pipeline_config(
        mosquitto.port(),
        &broker.addr().to_string(),
        &format!("{BEFORE}\n\n[metrics]\nlisten = \"{metrics}\"\n"),
    );
    let kedge = Kedge::start(&text);
    let status = || -> serde_json::Value {
        let (code, body) =
            ::kedge::ops::get(metrics, "/status.json", Duration::from_secs(5)).expect("status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    };
    wait_until("the status page", Duration::from_secs(30), || {
        ::kedge::ops::get(metrics, "/status.json", Duration::from_secs(5)).is_ok()
    });
    let real = status();
    let process = &real["process"];
    assert_eq!(process["pid"], kedge.pid(), "{process}");
    let ticks = process["start_ticks"].as_u64().expect("start_ticks");
    let namespace = process["pid_namespace"].as_str().expect("pid_namespace");
    assert!(namespace.starts_with("pid:["), "{namespace}");

    // Each page is the real one with the pid given here and one field changed. A container's
    // agent whose pid names nothing here is named as in a container too (the third); a pid
    // nothing has here is no kedge (the fourth). No process has a pid this large (Linux's
    // pid_max is at most 2^22).
    let absent = 1u32 << 30;
    let impostors = [
        (
            "start_ticks",
            kedge.pid(),
            serde_json::json!(ticks + 1),
            "the kedge process with that id here started at another time",
        ),
        (
            "pid_namespace",
            kedge.pid(),
            serde_json::json!("pid:[1]"),
            "the agent runs in another pid namespace",
        ),
        (
            "pid_namespace",
            absent,
            serde_json::json!("pid:[1]"),
            "the agent runs in another pid namespace",
        ),
        (
            "pid",
            absent,
            serde_json::json!(absent),
            "no kedge process has that id here",
        ),
    ];
    for (field, pid, value, why) in impostors {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kedge.toml");
        let mut page = real.clone();
        page["process"]["pid"] = serde_json::json!(pid);
        page["process"][field] = value;
        page["process"]["config_file"] = serde_json::json!(path.display().to_string());
        let fake = serve(page.to_string());
        std::fs::write(
            &path,
            edited(&text, &metrics.to_string(), &fake.to_string()),
        )
        .expect("config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_kedge"));
        command.arg("reload").arg("--config").arg(&path);
        let out = run(command, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{field}: {err}");
        assert!(
            err.contains(&format!("says its process id is {pid}, but {why}")),
            "{field}, pid {pid}: {err}"
        );
        assert_eq!(status()["process"]["reloads_read"], 0, "{field}: signalled");
        assert_eq!(kedge.log_count("SIGHUP received"), 0, "{field}: signalled");
    }

    let (code, out, err) = kedge_reload(&kedge);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(status()["process"]["reloads_read"], 1);
}

/// Where a seccomp profile refuses the pidfd calls (Docker's before 20.10 answer EPERM),
/// `kedge reload` falls back to `kill`: refused `pidfd_open`, and refused `pidfd_send_signal`
/// after an allowed `pidfd_open`. Each reload is applied (the agent's own counter of applied
/// reloads) and logged as a SIGHUP received.
#[test]
fn a_reload_works_where_seccomp_refuses_pidfds() {
    let mut probe = Command::new("true");
    refuse_with_eperm(&mut probe, libc::SYS_pidfd_open);
    if let Err(e) = probe.status() {
        eprintln!("reload: SKIPPED: cannot install a seccomp filter here ({e})");
        return;
    }
    let broker = SimBroker::start(Cluster::new().with_topic("readings", 1));
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let kedge = Kedge::start(&pipeline_config(
        mosquitto.port(),
        &broker.addr().to_string(),
        &format!("{BEFORE}\n\n[metrics]\nlisten = \"{metrics}\"\n"),
    ));
    wait_until("the status page", Duration::from_secs(30), || {
        ::kedge::ops::get(metrics, "/status.json", Duration::from_secs(5)).is_ok()
    });
    for (read, refused) in [
        (1.0, libc::SYS_pidfd_open),
        (2.0, libc::SYS_pidfd_send_signal),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kedge"));
        command
            .arg("reload")
            .arg("--config")
            .arg(kedge.config_path());
        refuse_with_eperm(&mut command, refused);
        let out = run(command, Duration::from_secs(60));
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "syscall {refused} refused:\n{stdout}\n{stderr}"
        );
        assert!(stdout.starts_with("reloaded "), "{stdout}");
        assert_eq!(
            reloads(metrics, "applied"),
            read,
            "syscall {refused} refused"
        );
    }
    assert_eq!(
        kedge.log_count("SIGHUP received"),
        2,
        "{}",
        kedge.log_text()
    );
}

/// Makes `command`'s process run under a seccomp filter that answers EPERM to `syscall` and
/// allows every other call (this machine's architecture only: a test, not a sandbox).
fn refuse_with_eperm(command: &mut Command, syscall: libc::c_long) {
    use std::os::unix::process::CommandExt;
    let nr = u32::try_from(syscall).expect("a syscall number");
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let filter = [
        // The syscall number is the first word of seccomp_data.
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: nr,
        },
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    // SAFETY: between fork and exec the closure only makes two prctl calls on a filter that
    // lives as long as `command` (moved into the closure); seccomp copies it in.
    unsafe {
        command.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            // prctl's arguments are unsigned longs to the kernel.
            let (one, zero) = (1 as libc::c_ulong, 0 as libc::c_ulong);
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, one, zero, zero, zero) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
