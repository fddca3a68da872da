//! The MQTT side of e2e-bench, run as its own process: QoS 1 (or 2) sensor readings over several
//! MQTT 5 connections (rumqttc), as fast as mosquitto acknowledges them or paced at a fixed rate.
//!
//! Each payload is a 200-byte JSON reading the `rust-units` plugin accepts
//! (`{"sensor":"dev-7","temp_f":71.3,"n":…,"ts":"…","pad":"…"}`); `ts` is the wall-clock time of
//! the publish call in microseconds since the epoch, kept as a string so that the plugin passes
//! it through unchanged and the latency consumer can read it back from Kafka.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, PubRecReason};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

/// What the parent asks for.
pub struct PublishArgs {
    pub port: u16,
    pub count: u64,
    /// Messages per second over all connections; as fast as possible when `None`.
    pub rate: Option<f64>,
    pub connections: usize,
    /// 1 or 2.
    pub qos: u8,
    pub devices: u64,
    pub payload_bytes: usize,
}

/// The topic and payload of message `n`.
pub fn message(n: u64, devices: u64, payload_bytes: usize) -> (String, Vec<u8>) {
    let device = n % devices;
    let ts = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let temp_f = 50.0 + (n % 400) as f64 / 10.0;
    let mut s =
        format!(r#"{{"sensor":"dev-{device}","temp_f":{temp_f:.1},"n":{n},"ts":"{ts}","pad":""#);
    while s.len() < payload_bytes.saturating_sub(2) {
        s.push(char::from(b'a' + ((n as usize + s.len()) % 26) as u8));
    }
    s.push_str(r#""}"#);
    (format!("sensors/dev-{device}/reading"), s.into_bytes())
}

/// Publishes and waits for every PUBACK; prints the `RESULT` line.
pub fn run(args: PublishArgs) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let acked = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let k = args.connections.max(1) as u64;
        let mut tasks = Vec::new();
        for c in 0..k {
            let client = connect(
                format!("bench-publisher-{}-{c}", args.port),
                args.port,
                acked.clone(),
                refused.clone(),
            );
            let (count, rate, devices, bytes) =
                (args.count, args.rate, args.devices, args.payload_bytes);
            let qos = if args.qos == 2 {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            };
            tasks.push(tokio::spawn(async move {
                // Connection c sends messages c, c + k, c + 2k, … in order.
                let mut i = 0u64;
                let mut n = c;
                while n < count {
                    if let Some(rate) = rate {
                        let due = started + Duration::from_secs_f64(n as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let (topic, payload) = message(n, devices, bytes);
                    client
                        .publish(topic, qos, false, payload)
                        .await
                        .expect("queue MQTT publish");
                    i += 1;
                    n = c + i * k;
                }
                client
            }));
        }
        let mut clients = Vec::new();
        for t in tasks {
            clients.push(t.await.expect("publisher task"));
        }
        let sent_at = started.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(600);
        while acked.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed) < args.count {
            assert!(Instant::now() < deadline, "PUBACKs missing after 600 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        for c in clients {
            let _ = c.disconnect().await;
        }
        println!(
            "RESULT published={} acked={} refused={} sent_s={sent_at:.4} acked_s={elapsed:.4}",
            args.count,
            acked.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed)
        );
    });
}

fn connect(
    client_id: String,
    port: u16,
    acked: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
) -> AsyncClient {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_outgoing_inflight_upper_limit(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) if ack.reason == PubAckReason::Success => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if refused.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("publisher: PUBACK refused: {:?}", ack.reason);
                    }
                }
                // QoS 2: done at PUBCOMP (a refusal comes in PUBREC).
                Ok(Event::Incoming(Packet::PubComp(_))) => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::PubRec(rec)))
                    if rec.reason != PubRecReason::Success
                        && rec.reason != PubRecReason::NoMatchingSubscribers =>
                {
                    if refused.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("publisher: PUBREC refused: {:?}", rec.reason);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("publisher: MQTT connection error: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    client
}
