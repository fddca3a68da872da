//! An MQTT 5 publisher (rumqttc) that sends QoS 1 (or 2) messages in the background and counts
//! the broker's acknowledgements (PUBACK, or PUBCOMP).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    Packet, PubAckReason, PubCompReason, PubRecReason, PublishProperties,
};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::runtime::Runtime;

use super::wait_until;

/// Size every reading payload is padded to.
const PAYLOAD_BYTES: usize = 200;

/// One MQTT message as published.
#[derive(Debug, Clone)]
pub struct Message {
    /// MQTT topic name.
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// MQTT 5 user properties, in order (kedge turns them into Kafka headers).
    pub user_properties: Vec<(String, String)>,
}

/// `count` sensor readings to `sensors/dev-{i % devices}/reading`, each payload unique
/// (`{"n":i,...}` padded to 200 bytes), every 7th with the user property `unit=C`.
pub fn readings(count: usize, devices: usize) -> Vec<Message> {
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    (0..count)
        .map(|i| {
            let mut payload = format!(r#"{{"n":{i},"t":{now_ms},"pad":""#);
            let pad = PAYLOAD_BYTES.saturating_sub(payload.len() + 2);
            payload.extend(std::iter::repeat_n('x', pad));
            payload.push_str(r#""}"#);
            let user_properties = if i % 7 == 0 {
                vec![("unit".to_owned(), "C".to_owned())]
            } else {
                Vec::new()
            };
            Message {
                topic: format!("sensors/dev-{}/reading", i % devices),
                payload: payload.into(),
                user_properties,
            }
        })
        .collect()
}

/// Messages being published by a background MQTT 5 client; dropping it disconnects.
pub struct Publishing {
    /// Runs the client's event loop and the publishing task; dropping it cancels both.
    _runtime: Runtime,
    /// How many messages the run publishes.
    total: usize,
    /// PUBACKs with reason Success so far.
    acked: Arc<AtomicUsize>,
    /// PUBACKs with any other reason (e.g. NoMatchingSubscribers: the message was dropped).
    refused: Arc<AtomicUsize>,
    /// When publishing began.
    started: Instant,
}

impl Publishing {
    /// Connects to mosquitto on 127.0.0.1:`port` and publishes `messages` at QoS 1 in order,
    /// as fast as the broker acknowledges them or at most `per_second` if given.
    pub fn start(port: u16, messages: Vec<Message>, per_second: Option<u32>) -> Publishing {
        Publishing::start_split(port, messages, 1, per_second)
    }

    /// Like [`Publishing::start`] over `connections` MQTT connections: connection `k` publishes
    /// messages `k`, `k + connections`, … in order, at `per_second / connections` each.
    pub fn start_split(
        port: u16,
        messages: Vec<Message>,
        connections: usize,
        per_second: Option<u32>,
    ) -> Publishing {
        Publishing::start_qos(port, messages, connections, per_second, 1)
    }

    /// [`Publishing::start_split`] at `qos` (1 or 2): a QoS 2 message counts as acknowledged
    /// at its PUBCOMP.
    pub fn start_qos(
        port: u16,
        messages: Vec<Message>,
        connections: usize,
        per_second: Option<u32>,
        qos: u8,
    ) -> Publishing {
        assert!(connections > 0, "at least one MQTT connection");
        let level = if qos == 2 {
            QoS::ExactlyOnce
        } else {
            QoS::AtLeastOnce
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (acked, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let total = messages.len();
        let started = Instant::now();
        let mut shares: Vec<Vec<Message>> = vec![Vec::new(); connections];
        for (i, message) in messages.into_iter().enumerate() {
            shares[i % connections].push(message);
        }
        let share_rate = per_second.map(|rate| f64::from(rate) / connections as f64);
        for (k, share) in shares.into_iter().enumerate() {
            let client_id = format!("e2e-publisher-{port}-{k}");
            let client = connect(&runtime, client_id, port, acked.clone(), refused.clone());
            runtime.spawn(async move {
                for (i, message) in share.into_iter().enumerate() {
                    if let Some(rate) = share_rate {
                        let due = started + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let properties = PublishProperties {
                        user_properties: message.user_properties,
                        ..Default::default()
                    };
                    client
                        .publish_with_properties(
                            message.topic,
                            level,
                            false,
                            message.payload,
                            properties,
                        )
                        .await
                        .expect("queue MQTT publish");
                }
            });
        }
        Publishing {
            _runtime: runtime,
            total,
            acked,
            refused,
            started,
        }
    }

    /// How many messages the broker has acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until the broker acknowledged every message with Success; returns the time taken.
    pub fn wait_acked(&self, timeout: Duration) -> Duration {
        let what = format!("mosquitto to acknowledge {} publishes", self.total);
        wait_until(&what, timeout, || {
            self.acked() + self.refused.load(Ordering::Relaxed) >= self.total
        });
        let refused = self.refused.load(Ordering::Relaxed);
        assert_eq!(
            refused, 0,
            "mosquitto refused {refused} publishes (is kedge subscribed?)"
        );
        let elapsed = self.started.elapsed();
        eprintln!(
            "publisher: {} messages acknowledged by the broker in {elapsed:.2?} ({:.0}/s)",
            self.total,
            self.total as f64 / elapsed.as_secs_f64()
        );
        elapsed
    }
}

/// Starts an MQTT 5 client on `runtime` whose event loop counts PUBACKs; returns its handle.
fn connect(
    runtime: &Runtime,
    client_id: String,
    port: u16,
    acked: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
) -> AsyncClient {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_outgoing_inflight_upper_limit(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    runtime.spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(ack))) if ack.reason == PubAckReason::Success => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if refused.fetch_add(1, Ordering::Relaxed) < 10 {
                        eprintln!("publisher: PUBACK {} refused: {:?}", ack.pkid, ack.reason);
                    }
                }
                Ok(Event::Incoming(Packet::PubComp(comp)))
                    if comp.reason == PubCompReason::Success =>
                {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::PubComp(comp))) => {
                    if refused.fetch_add(1, Ordering::Relaxed) < 10 {
                        eprintln!(
                            "publisher: PUBCOMP {} refused: {:?}",
                            comp.pkid, comp.reason
                        );
                    }
                }
                Ok(Event::Incoming(Packet::PubRec(rec))) if rec.reason != PubRecReason::Success => {
                    if refused.fetch_add(1, Ordering::Relaxed) < 10 {
                        eprintln!("publisher: PUBREC {} refused: {:?}", rec.pkid, rec.reason);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    eprintln!("publisher: MQTT connection error: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    client
}
