//! A fleet on one machine: kedge scales out as many devices writing into one Kafka cluster.
//! Fifty agents, each with its own device id, MQTT session and queue, write into the same
//! topic while kill -9 storms sweep across them; `kedge audit --all-devices` must find every
//! device's records exactly once, and so must the independent consumer.
//!
//! Two more agents are left with the same device id (as a fleet of boards all called
//! "raspberrypi" would be). kedge must never confuse their records (each queue carries its own
//! `kedge-queue`), and the audit must judge them apart; that the agents themselves say so is
//! [`twins_sharing_a_device_id_say_so_and_never_take_each_others_records`].
//!
//! `KEDGE_FLEET_AGENTS` and `KEDGE_FLEET_MESSAGES` (per agent) make it larger.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use std::net::{Ipv4Addr, SocketAddr};

use kafka_sim::{Cluster, SimBroker};

use crate::audit::kedge_audit;
use crate::support::kedge::{DEVICE_ID, Kedge, READINGS_ROUTING, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Message, Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::verdict::{Stopwatch, Verdict, read_back};
use crate::support::{free_port, metric, try_metric, wait_until};

/// The topic every agent writes to.
const TOPIC: &str = "readings";

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An agent's config: device `device`, subscribed to `fleet/{slot}/…`, with its own MQTT
/// client id (agents sharing a device id must not take over each other's MQTT session).
fn agent_config(mqtt_port: u16, bootstrap: &str, device: &str, slot: usize) -> String {
    // Keyed by the reading's device level (`dev-N`), shared by every agent, so that agents
    // write into the same partitions.
    let routing = READINGS_ROUTING
        .replace("sensors/+/reading", "fleet/+/+/reading")
        .replace("key_level = 1", "key_level = 2");
    pipeline_config(mqtt_port, bootstrap, &routing)
        .replace(
            &format!("device_id = \"{DEVICE_ID}\""),
            &format!("device_id = \"{device}\""),
        )
        .replace(
            "filter = \"sensors/#\"",
            &format!("filter = \"fleet/{slot}/#\""),
        )
        .replace(
            "protocol = \"5\"",
            &format!("protocol = \"5\"\nclient_id = \"kedge-fleet-{slot}\""),
        )
        .replace("[kafka]\n", "[kafka]\nbatch_max_records = 20\n")
}

/// `count` readings for agent `slot`, with payloads unique across the fleet.
fn messages(slot: usize, count: usize) -> Vec<Message> {
    readings(count, 4)
        .into_iter()
        .enumerate()
        .map(|(i, mut m)| {
            m.topic = m.topic.replace("sensors/", &format!("fleet/{slot}/"));
            let mut payload = format!("{{\"agent\":{slot},\"i\":{i}}}").into_bytes();
            payload.extend_from_slice(&m.payload[payload.len().min(m.payload.len())..]);
            m.payload = payload.into();
            m
        })
        .collect()
}

#[test]
fn a_fleet_under_kill_storms_delivers_every_device_exactly_once() {
    let _stopwatch = Stopwatch::start("fleet");
    let agents = knob("KEDGE_FLEET_AGENTS", 50);
    let per_agent = knob("KEDGE_FLEET_MESSAGES", 200);
    let mut rng = StdRng::seed_from_u64(0x666c_6565);
    let tansu = Tansu::start();
    tansu.create_topic(TOPIC, 6);
    let mosquitto = Mosquitto::start();

    // Slots 0..agents have their own ids; the last two share one.
    let twins = [agents, agents + 1];
    let device = |slot: usize| {
        if twins.contains(&slot) {
            "twin-board".to_owned()
        } else {
            format!("fleet-{slot:03}")
        }
    };
    let mut fleet: Vec<Kedge> = (0..agents + 2)
        .map(|slot| {
            Kedge::start(&agent_config(
                mosquitto.port(),
                &tansu.bootstrap(),
                &device(slot),
                slot,
            ))
        })
        .collect();
    for slot in 0..agents + 2 {
        mosquitto.wait_subscribed(&format!("fleet/{slot}/#"), Duration::from_secs(60));
    }

    let mut published = Vec::new();
    for slot in 0..agents + 2 {
        published.extend(messages(slot, per_agent));
    }
    let publishing = Publishing::start_split(mosquitto.port(), published.clone(), 4, Some(2_000));
    // Storms: every second a few agents die at once and come back a moment later.
    // At least one kill per agent on average, while publishing and after.
    let mut kills = 0;
    while publishing.acked() < published.len() || kills < agents {
        std::thread::sleep(Duration::from_millis(rng.random_range(200..800)));
        let victims: Vec<usize> = (0..rng.random_range(1..=5))
            .map(|_| rng.random_range(0..agents + 2))
            .collect();
        for &v in &victims {
            if fleet[v].is_running() {
                fleet[v].kill9();
                kills += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        for &v in &victims {
            if !fleet[v].is_running() {
                fleet[v].restart();
            }
        }
    }
    publishing.wait_acked(Duration::from_secs(120));
    eprintln!("fleet: {kills} kills across {} agents", agents + 2);

    let verdict = read_back(
        &tansu.bootstrap(),
        TOPIC,
        &published,
        Duration::from_secs(180),
    );
    verdict.report(
        &format!("fleet ({} agents, {kills} kills)", agents + 2),
        published.len(),
    );
    assert_eq!(
        verdict.unknown, 0,
        "records whose value was never published"
    );
    verdict.assert_exactly_once();

    let (code, out, err) = kedge_audit(&[
        "--bootstrap",
        &tansu.bootstrap(),
        "--topic",
        TOPIC,
        "--all-devices",
    ]);
    assert_eq!(code, 0, "audit not clean:\n{out}{err}");
    for slot in 0..agents {
        let line = format!("device {} queue ", device(slot));
        assert_eq!(
            out.matches(&line).count(),
            1,
            "device {} must be reported once with its one queue:\n{out}",
            device(slot)
        );
    }
    assert!(
        out.contains("device twin-board: records of 2 queues, each judged on its own"),
        "{out}"
    );
    assert!(out.ends_with("clean\n"), "{out}");
}

/// Two agents with the same device id write into the same partitions of kafka-sim while its
/// answers are lost; both are killed and restarted, and each verify scan reads the other's
/// records after its own: neither may take them for its own, and both must say the id is
/// shared (in the log and in `kedge_device_id_conflict_records_total`).
#[test]
fn twins_sharing_a_device_id_say_so_and_never_take_each_others_records() {
    let _stopwatch = Stopwatch::start("fleet::twins");
    let broker = SimBroker::start(Cluster::new().with_topic(TOPIC, 2));
    let mosquitto = Mosquitto::start();
    let addr = broker.addr().to_string();
    let metrics: Vec<SocketAddr> = (0..2)
        .map(|_| SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())))
        .collect();
    let mut twins: Vec<Kedge> = (0..2)
        .map(|slot| {
            let mut config = agent_config(mosquitto.port(), &addr, "raspberrypi", slot);
            config.push_str(&format!("\n[metrics]\nlisten = \"{}\"\n", metrics[slot]));
            Kedge::start(&config)
        })
        .collect();
    for slot in 0..2 {
        mosquitto.wait_subscribed(&format!("fleet/{slot}/#"), Duration::from_secs(30));
    }
    let first: Vec<Message> = (0..2).flat_map(|slot| messages(slot, 40)).collect();
    Publishing::start(mosquitto.port(), first.clone(), None).wait_acked(Duration::from_secs(30));
    wait_until(
        "the first readings delivered",
        Duration::from_secs(30),
        || {
            metrics
                .iter()
                .all(|m| metric(*m, "kedge_records_delivered_total", "") >= 40.0)
        },
    );
    // Both write on, and hear nothing back: their batches land unacknowledged, interleaved.
    broker.lose_responses(true);
    let second: Vec<Message> = (0..2)
        .flat_map(|slot| {
            messages(slot, 200).into_iter().skip(40).map(move |mut m| {
                m.payload = format!("{}-late", String::from_utf8_lossy(&m.payload)).into();
                m
            })
        })
        .collect();
    Publishing::start(mosquitto.port(), second.clone(), Some(400))
        .wait_acked(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(1));
    for twin in &mut twins {
        twin.kill9();
    }
    broker.lose_responses(false);
    for twin in &mut twins {
        twin.restart();
    }
    let mut published = first;
    published.extend(second);
    let log = || crate::faults::lost_acks::sim_records(&broker, TOPIC, 2);
    let verdict = Verdict::of(&published, &log());
    // Wait on the log itself: the unacknowledged gauge counts sealed batches only, not records
    // still in the journal, so on its own it proves nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = Verdict::of(&published, &log());
    while !after.missing.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = Verdict::of(&published, &log());
    }
    after.report("fleet::twins", published.len());
    assert!(
        after.missing.is_empty(),
        "a twin took the other's records for its own and never sent its own: {} missing (right after the restart {} were)",
        after.missing.len(),
        verdict.missing.len()
    );
    wait_until("both twins to settle", Duration::from_secs(30), || {
        metrics
            .iter()
            .all(|m| try_metric(*m, "kedge_records_unacknowledged", "").is_ok_and(|v| v == 0.0))
    });
    after = Verdict::of(&published, &log());
    after.assert_exactly_once();
    for (i, twin) in twins.iter().enumerate() {
        assert!(
            twin.log_count("another agent writes with this device id") > 0,
            "twin {i} did not say that its device id is shared"
        );
        assert!(metric(metrics[i], "kedge_device_id_conflict_records_total", "") > 0.0);
    }
}
