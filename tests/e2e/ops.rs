//! The metrics and health listener against a real pipeline: counters move as records flow,
//! readiness fails with its reason while Kafka is unreachable and recovers when it is back;
//! `kedge status` reads the running agent.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use crate::support::kedge::{Kedge, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::proxy::{Mode, Proxy};
use crate::support::publish::{Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::{free_port, run, try_metric, wait_until};

use crate::support::kedge::READINGS_ROUTING as ROUTING;

fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    kedge::ops::get(addr, path, Duration::from_secs(5)).ok()
}

/// The value of a series in a scrape: `name{labels}` exactly, or every series of a bare
/// `name` summed over its labels.
fn value(addr: SocketAddr, series: &str) -> f64 {
    let (status, body) = get(addr, "/metrics").expect("scrape /metrics");
    assert_eq!(status, 200, "{body}");
    let samples: Vec<f64> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (s, v) = l.rsplit_once(' ')?;
            let matches =
                s == series || (!series.contains('{') && s.split('{').next() == Some(series));
            matches.then(|| v.parse().expect("a number"))
        })
        .collect();
    assert!(!samples.is_empty(), "no {series} in\n{body}");
    samples.iter().sum()
}

/// `kedge status` for the agent's config, which must exit with `code` (0 running and ready, 1
/// not running or not ready): its stdout.
pub fn status(kedge: &Kedge, code: i32) -> String {
    let mut status = Command::new(env!("CARGO_BIN_EXE_kedge"));
    status.args(["status", "--config"]).arg(kedge.config_path());
    let out = run(status, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn metrics_move_and_readiness_follows_kafka() {
    let tansu_port = free_port();
    let proxy = Proxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, tansu_port)));
    let tansu = Tansu::start_advertising(tansu_port, proxy.port());
    tansu.create_topic("readings", 3);
    let mosquitto = Mosquitto::start();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let config = pipeline_config(
        mosquitto.port(),
        &proxy.addr(),
        &format!("{ROUTING}\n\n[metrics]\nlisten = \"{addr}\"\nready_max_pending_age = \"2s\"\n"),
    )
    // Stopping while Kafka is away leaves sealed batches for the next start to verify.
    .replace("shutdown_timeout = \"10s\"", "shutdown_timeout = \"1s\"");
    let mut kedge = Kedge::start(&config);
    wait_until("the metrics listener", Duration::from_secs(30), || {
        get(addr, "/health/live").is_some_and(|(s, _)| s == 200)
    });
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));
    assert_eq!(value(addr, "kedge_mqtt_connected"), 1.0);
    assert!(value(addr, "kedge_process_resident_memory_bytes") > 1e6);
    assert!(value(addr, "kedge_process_open_fds") >= 3.0);
    assert_eq!(get(addr, "/nope").map(|(s, _)| s), Some(404));

    let messages = readings(300, 10);
    let publishing = Publishing::start(mosquitto.port(), messages[..200].to_vec(), None);
    publishing.wait_acked(Duration::from_secs(60));
    wait_until("200 records delivered", Duration::from_secs(60), || {
        value(addr, "kedge_records_delivered_total") >= 200.0
    });
    assert_eq!(
        value(addr, "kedge_records_received_total{source=\"mqtt\"}"),
        200.0
    );
    assert_eq!(value(addr, "kedge_records_journaled_total"), 200.0);
    assert_eq!(
        value(addr, "kedge_records_routed_total{topic=\"readings\"}"),
        200.0
    );
    assert_eq!(value(addr, "kedge_records_dead_lettered_total"), 0.0);
    let batches = value(addr, "kedge_batches_delivered_total");
    assert!(batches >= 1.0);
    assert!(value(addr, "kedge_batches_sent_total") >= batches);
    assert_eq!(value(addr, "kedge_records_sent_total"), 200.0);
    // Every record was received in this run, so each one is in the latency histogram.
    assert_eq!(value(addr, "kedge_delivery_latency_seconds_count"), 200.0);
    assert!(value(addr, "kedge_journal_fsync_seconds_count") >= 1.0);
    assert_eq!(value(addr, "kedge_kafka_connected"), 1.0);
    assert_eq!(value(addr, "kedge_kafka_partitions{leader=\"known\"}"), 3.0);
    assert_eq!(
        value(addr, "kedge_kafka_partitions{leader=\"unknown\"}"),
        0.0
    );
    assert!(value(addr, "kedge_kafka_last_ack_age_seconds") < 60.0);
    assert!(value(addr, "kedge_queue_disk_bytes") > 0.0);
    assert_eq!(
        get(addr, "/health/ready"),
        Some((200, "ready\n".to_owned()))
    );

    // `/status.json`, which `kedge status` reads, tells what `/metrics` does.
    let (code, json) = get(addr, "/status.json").expect("/status.json");
    assert_eq!(code, 200, "{json}");
    let report: kedge::ops::status::Report = serde_json::from_str(&json).expect("a report");
    for (reported, series) in [
        (report.records.delivered, "kedge_records_delivered_total"),
        (report.records.journaled, "kedge_records_journaled_total"),
        (
            report.kafka.leaders_known,
            "kedge_kafka_partitions{leader=\"known\"}",
        ),
    ] {
        assert_eq!(reported as f64, value(addr, series), "{series}: {json}");
    }
    assert_eq!(report.records.delivered, 200, "{json}");
    assert!(report.kafka.connected, "{json}");
    assert_eq!(report.unready, Vec::<String>::new(), "{json}");

    // `kedge status` finds the running agent through its listener.
    let text = status(&kedge, 0);
    for want in [
        "kedge is running",
        "delivered 200",
        "kafka            connected, ",
        "partition leaders 3 known 0 unknown",
        "backlog          0 records",
        "nothing pending",
        // The queue report, as `kedge queue stats` prints it.
        "sealed batches   0 batches",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }

    // Kafka unreachable: records wait, and readiness says why once they are too old.
    // reset() leaves the proxy passing traffic: refuse new connections right after it.
    proxy.reset();
    proxy.set_mode(Mode::Refuse);
    let publishing = Publishing::start(mosquitto.port(), messages[200..].to_vec(), None);
    publishing.wait_acked(Duration::from_secs(60));
    wait_until("not ready", Duration::from_secs(30), || {
        get(addr, "/health/ready")
            .is_some_and(|(s, body)| s == 503 && body.starts_with("oldest pending record is "))
    });
    let (status_code, json) = get(addr, "/health/ready?format=json").expect("ready json");
    assert_eq!(status_code, 503);
    let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(json["ready"], false);
    assert!(
        json["reasons"][0].as_str().unwrap().contains("Kafka"),
        "{json}"
    );
    assert!(value(addr, "kedge_queue_oldest_pending_age_seconds") > 2.0);
    assert!(value(addr, "kedge_queue_live_bytes") > 0.0);
    wait_until("kafka reported down", Duration::from_secs(30), || {
        value(addr, "kedge_kafka_connected") == 0.0
    });
    // All 100 wait, sealed into batches: Kafka's metadata is still known.
    wait_until("100 records sealed", Duration::from_secs(30), || {
        value(addr, "kedge_records_unacknowledged") == 100.0
    });
    assert_eq!(value(addr, "kedge_journal_records"), 0.0);
    assert!(value(addr, "kedge_kafka_last_ack_age_seconds") > 2.0);
    assert_eq!(get(addr, "/health/live").map(|(s, _)| s), Some(200));
    // Every delivery round fails while Kafka is away; the log says so sparingly.
    std::thread::sleep(Duration::from_secs(3));
    let unreachable = kedge.log_count("cannot reach partition leader");
    assert!(
        unreachable <= 2,
        "{unreachable} lines about the unreachable leader"
    );
    let text = status(&kedge, 1);
    for want in [
        "kafka            NOT CONNECTED",
        "backlog          100 records",
        "ready            oldest pending record is ",
        "last problems    ",
        "cannot reach partition leader",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }

    // Stopped while Kafka is away: `kedge status` reads the queue instead.
    let exit = kedge.terminate(Duration::from_secs(15));
    assert!(exit.success(), "kedge exited with {exit}");
    let text = status(&kedge, 1);
    assert!(text.contains("kedge is not running"), "{text}");
    assert!(text.contains("queue "), "{text}");

    // Kafka back, kedge restarted: what was sealed is verified before anything is resent, then
    // everything is delivered and the agent is ready again.
    proxy.set_mode(Mode::Pass);
    kedge.restart();
    wait_until("ready again", Duration::from_secs(60), || {
        get(addr, "/health/ready").is_some_and(|(s, _)| s == 200)
    });
    wait_until("the other 100 delivered", Duration::from_secs(60), || {
        value(addr, "kedge_records_delivered_total") >= 100.0
    });
    assert_eq!(value(addr, "kedge_queue_oldest_pending_age_seconds"), 0.0);
    // None of them reached Kafka: the tail scan finds none of them, so all are sent.
    assert!(value(addr, "kedge_verify_total{outcome=\"tail_scan\"}") >= 1.0);
    assert!(value(addr, "kedge_verify_batches_total{result=\"resent\"}") >= 1.0);
    assert_eq!(
        value(addr, "kedge_verify_batches_total{result=\"in_kafka\"}"),
        0.0
    );

    let (code, out, err) =
        crate::audit::kedge_audit(&["--bootstrap", &proxy.addr(), "--topic", "readings"]);
    assert_eq!(code, 0, "{out}{err}");
    let exit = kedge.terminate(Duration::from_secs(15));
    assert!(exit.success(), "kedge exited with {exit}");
}

/// The tester's finding: 200 idle connections to the listener held 200 descriptors until the
/// process ran out and a journal commit failed. Beyond the listener's cap they are closed at
/// once; those within it are dropped at the request-head timeout, and MQTT goes on being journaled.
#[test]
fn idle_connections_neither_exhaust_descriptors_nor_stop_journaling() {
    let mosquitto = Mosquitto::start();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    // No Kafka: the records stay in the journal, which is what this is about.
    let config = pipeline_config(
        mosquitto.port(),
        &format!("127.0.0.1:{}", free_port()),
        &format!("{ROUTING}\n\n[metrics]\nlisten = \"{addr}\"\n"),
    );
    let kedge = Kedge::start(&config);
    wait_until("the metrics listener", Duration::from_secs(30), || {
        get(addr, "/health/live").is_some_and(|(s, _)| s == 200)
    });
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", kedge.pid()))
            .expect("kedge's /proc fd dir")
            .count()
    };
    let before = fds();
    let idle: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let during = fds();
    let publishing = Publishing::start(mosquitto.port(), readings(200, 10), None);
    publishing.wait_acked(Duration::from_secs(60));
    assert!(
        during <= before + 40,
        "{before} descriptors before, {during} with 200 idle connections"
    );
    wait_until(
        "/health/live answers again",
        Duration::from_secs(15),
        || get(addr, "/health/live").is_some_and(|(s, _)| s == 200),
    );
    wait_until("200 records journaled", Duration::from_secs(30), || {
        try_metric(addr, "kedge_records_journaled_total", "").is_ok_and(|n| n >= 200.0)
    });
    assert!(
        try_metric(
            addr,
            "kedge_http_connections_refused_total",
            "reason=\"limit\""
        )
        .expect("scrape")
            >= 160.0
    );
    drop(idle);
}
