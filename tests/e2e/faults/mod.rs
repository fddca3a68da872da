//! Fault injection: kedge killed at random moments, its Kafka connections reset, blackholed and
//! pointed at a broker that forgot its producer id. Each test reads the topic back with the
//! independent consumer and asserts the contract: nothing mosquitto acknowledged is missing and
//! no `kedge-seq` appears twice (MQTT redeliveries under a new `kedge-seq` are allowed, counted).

mod blackhole;
mod bootstrap_move;
mod broker_restart;
mod burst;
mod forgotten_producer;
pub mod lost_acks;
mod resets;
mod sigkill_storm;
mod topic_recreated;
mod verify_time;

use std::net::{Ipv4Addr, SocketAddr};

use crate::support::free_port;
use crate::support::kedge::pipeline_config;
use crate::support::proxy::Proxy;
use crate::support::tansu::Tansu;

use crate::support::kedge::READINGS_ROUTING as ROUTING;

/// The topic every fault test reads back.
const TOPIC: &str = "readings";

/// Seed for the tests' random fault moments: `$KEDGE_FAULT_SEED`, else a fixed value.
fn seed() -> u64 {
    let seed = std::env::var("KEDGE_FAULT_SEED")
        .ok()
        .map(|s| s.parse().expect("KEDGE_FAULT_SEED is a u64"))
        .unwrap_or(0x6b65_6467);
    eprintln!("fault seed {seed} (set KEDGE_FAULT_SEED to replay another)");
    seed
}

/// The pipeline config with extra `[kafka]` settings (TOML lines) appended to that section.
fn config(mqtt_port: u16, bootstrap: &str, kafka_extra: &str) -> String {
    let base = pipeline_config(mqtt_port, bootstrap, ROUTING);
    let anchor = "linger = \"5ms\"\n";
    assert!(
        base.contains(anchor),
        "pipeline_config changed its [kafka] section"
    );
    base.replacen(anchor, &format!("{anchor}{kafka_extra}\n"), 1)
}

/// A tansu broker reached only through a fault proxy (it advertises the proxy's address).
struct ProxiedTansu {
    /// Forwards to `tansu_port`; what kedge's bootstrap points at.
    proxy: Proxy,
    /// The port tansu itself listens on.
    tansu_port: u16,
    /// The broker.
    tansu: Tansu,
}

impl ProxiedTansu {
    /// Starts a proxy and, behind it, tansu with `readings` (3 partitions).
    fn start() -> ProxiedTansu {
        let tansu_port = free_port();
        let proxy = Proxy::start(SocketAddr::from((Ipv4Addr::LOCALHOST, tansu_port)));
        let tansu = Tansu::start_advertising(tansu_port, proxy.port());
        tansu.create_topic(TOPIC, 3);
        ProxiedTansu {
            proxy,
            tansu_port,
            tansu,
        }
    }
}
