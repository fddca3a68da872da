//! MQTT source (rumqttc): persistent session, manual acknowledgements released only after the
//! journal made the events durable, in arrival order (ARCHITECTURE.md §2, step 1).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::backoff::Backoff;
use crate::commit::Incoming;
use crate::record::Header;
use crate::telemetry::Stats;

/// Largest MQTT packet accepted; rumqttc's default (10 KiB) is too small for many payloads.
const MAX_PACKET: u32 = 1024 * 1024;
/// Outgoing QoS 1 publishes in flight: kedge publishes nothing, so the smallest table will do.
const OUTGOING_INFLIGHT: u16 = 8;

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 5.
    V5,
    /// MQTT 3.1.1.
    V311,
}

/// Everything the source needs, resolved from the config (secrets read, TLS built).
#[derive(Clone)]
pub struct MqttSettings {
    /// Source name, for logs.
    pub name: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Protocol version.
    pub protocol: Protocol,
    /// Stable client id: the broker keeps the session under it.
    pub client_id: String,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// MQTT 5 session expiry: how long the broker keeps the session while kedge is away.
    pub session_expiry: Duration,
    /// Unacknowledged QoS 1 messages the broker may have in flight to kedge.
    pub receive_maximum: u16,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// TLS, when configured.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Topic filters with their QoS (0 or 1).
    pub subscriptions: Vec<(String, u8)>,
    /// Reconnect backoff bounds.
    pub reconnect: (Duration, Duration),
}

/// What acknowledges one QoS 1 message: its packet id.
#[derive(Debug, Clone, Copy)]
pub struct AckToken {
    pkid: u16,
}

/// Runs the source until `stop` turns true; then stops forwarding, releases the acks of what
/// was committed, and disconnects.
pub async fn run(
    settings: MqttSettings,
    events: mpsc::Sender<Incoming<AckToken>>,
    acks: mpsc::UnboundedReceiver<Vec<AckToken>>,
    stop: watch::Receiver<bool>,
    stats: Arc<Stats>,
) {
    match settings.protocol {
        Protocol::V5 => v5::run(settings, events, acks, stop, stats).await,
        Protocol::V311 => v311::run(settings, events, acks, stop, stats).await,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Capacity of rumqttc's request channel: it carries our acks, and at most `receive_maximum`
/// messages can be unacknowledged (twice that across a reconnect's redeliveries).
fn request_capacity(s: &MqttSettings) -> usize {
    usize::from(s.receive_maximum) * 2 + 64
}

fn log_connection_error(name: &str, e: &dyn std::fmt::Display, backoff: &Backoff, delay: Duration) {
    if backoff.should_log() {
        tracing::warn!(source = name, error = %e, attempt = backoff.attempts(), retry_in = ?delay, "MQTT broker unreachable; reconnecting");
    }
}

/// The event loop is the same for both protocol versions; only the rumqttc types differ.
macro_rules! event_loop {
    ($settings:ident, $options:ident, $events:ident, $acks:ident, $stop:ident, $stats:ident,
     ack_publish = $ack_publish:expr, headers = $headers:expr, filter = $filter:ident) => {{
        if let Some((u, p)) = &$settings.credentials {
            $options.set_credentials(u.clone(), p.clone());
        }
        if let Some(tls) = &$settings.tls {
            $options.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls.clone())));
        }
        let (client, mut eventloop) = AsyncClient::new($options, request_capacity(&$settings));
        let mut backoff = Backoff::new($settings.reconnect.0, $settings.reconnect.1);
        let mut events = Some($events);
        let mut stop = $stop;
        let acker_client = client.clone();
        let mut acks = $acks;
        let acks_stats = $stats.clone();
        // Acks go out in the order the commits release them, which is arrival order.
        let acker = tokio::spawn(async move {
            while let Some(tokens) = acks.recv().await {
                let n = tokens.len() as u64;
                for t in tokens {
                    if acker_client.ack(&$ack_publish(t)).await.is_err() {
                        return;
                    }
                }
                Stats::add(&acks_stats.source_acked, n);
            }
            let _ = acker_client.disconnect().await;
        });
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            let polled = tokio::select! {
                p = eventloop.poll() => p,
                _ = stop.changed(), if events.is_some() => {
                    // Stop forwarding: the commit stage drains and then closes the ack channel,
                    // after which the acker disconnects. Unacknowledged messages stay with the
                    // broker and come back next time.
                    events = None;
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(30));
                    continue;
                }
                _ = async { tokio::time::sleep_until(drain_deadline.unwrap()).await }, if drain_deadline.is_some() => {
                    tracing::warn!(source = %$settings.name, "MQTT did not disconnect in time");
                    break;
                }
            };
            match polled {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Some(tx) = &events else { continue };
                    Stats::add(&$stats.received, 1);
                    let ack = (p.qos != QoS::AtMostOnce).then_some(AckToken { pkid: p.pkid });
                    let event = crate::route::Event::new(
                        String::from_utf8_lossy(p.topic.as_ref()).into_owned(),
                        Bytes::clone(&p.payload),
                        $headers(&p),
                        now_ms(),
                    );
                    if tx.send(Incoming { event, ack }).await.is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    backoff.reset();
                    $stats.mqtt_connected.store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(source = %$settings.name, session_present = c.session_present, "connected to the MQTT broker");
                    if !c.session_present {
                        let filters = $settings.subscriptions.iter().map(|(f, q)| {
                            $filter::new(f.clone(), if *q == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce })
                        });
                        if let Err(e) = client.subscribe_many(filters.collect::<Vec<_>>()).await {
                            tracing::error!(source = %$settings.name, error = %e, "cannot subscribe");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    for (code, (filter, _)) in s.return_codes.iter().zip(&$settings.subscriptions) {
                        if !matches!(code, SubscribeReasonCode::Success(_)) {
                            tracing::error!(source = %$settings.name, filter = %filter, reason = ?code, "the broker refused the subscription");
                        }
                    }
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    $stats.mqtt_connected.store(false, std::sync::atomic::Ordering::Relaxed);
                    if events.is_none() {
                        break;
                    }
                    let delay = backoff.next_delay();
                    log_connection_error(&$settings.name, &e, &backoff, delay);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {
                            events = None;
                            break;
                        }
                    }
                }
            }
        }
        drop(events);
        acker.abort();
    }};
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish, SubscribeReasonCode};
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    use rumqttc::{Outgoing, TlsConfiguration, Transport};

    pub(super) async fn run(
        settings: MqttSettings,
        events: mpsc::Sender<Incoming<AckToken>>,
        acks: mpsc::UnboundedReceiver<Vec<AckToken>>,
        stop: watch::Receiver<bool>,
        stats: Arc<Stats>,
    ) {
        let mut o = MqttOptions::new(
            settings.client_id.clone(),
            settings.host.clone(),
            settings.port,
        );
        o.set_keep_alive(settings.keep_alive)
            .set_clean_start(false)
            .set_session_expiry_interval(Some(
                settings.session_expiry.as_secs().min(u64::from(u32::MAX)) as u32,
            ))
            .set_receive_maximum(Some(settings.receive_maximum))
            .set_max_packet_size(Some(MAX_PACKET))
            // kedge only subscribes; rumqttc sizes its outgoing-publish table by this limit
            // (u16::MAX by default: about 10 MiB resident for nothing).
            .set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT)
            .set_manual_acks(true)
            .set_request_channel_capacity(request_capacity(&settings));
        event_loop!(
            settings,
            o,
            events,
            acks,
            stop,
            stats,
            ack_publish = |t: AckToken| {
                let mut p = Publish::new("", QoS::AtLeastOnce, Vec::new(), None);
                p.pkid = t.pkid;
                p
            },
            headers = |p: &Publish| -> Vec<Header> {
                p.properties
                    .as_ref()
                    .map(|props| {
                        props
                            .user_properties
                            .iter()
                            .map(|(k, v)| Header {
                                name: k.clone(),
                                value: Bytes::from(v.clone()),
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            },
            filter = Filter
        );
    }
}

mod v311 {
    use super::*;
    use rumqttc::{
        AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeFilter,
        SubscribeReasonCode, TlsConfiguration, Transport,
    };

    pub(super) async fn run(
        settings: MqttSettings,
        events: mpsc::Sender<Incoming<AckToken>>,
        acks: mpsc::UnboundedReceiver<Vec<AckToken>>,
        stop: watch::Receiver<bool>,
        stats: Arc<Stats>,
    ) {
        let mut o = MqttOptions::new(
            settings.client_id.clone(),
            settings.host.clone(),
            settings.port,
        );
        o.set_keep_alive(settings.keep_alive)
            .set_clean_session(false)
            .set_max_packet_size(MAX_PACKET as usize, MAX_PACKET as usize)
            .set_inflight(OUTGOING_INFLIGHT)
            .set_manual_acks(true)
            .set_request_channel_capacity(request_capacity(&settings));
        event_loop!(
            settings,
            o,
            events,
            acks,
            stop,
            stats,
            ack_publish = |t: AckToken| {
                let mut p = Publish::new("", QoS::AtLeastOnce, Vec::new());
                p.pkid = t.pkid;
                p
            },
            headers = |_: &Publish| -> Vec<Header> { Vec::new() },
            filter = SubscribeFilter
        );
    }
}
