//! MQTT source (rumqttc, vendored with kedge's patch: vendor/rumqttc/KEDGE.md): persistent
//! session, manual acknowledgements released only after the journal made the events durable,
//! in arrival order (ARCHITECTURE.md §2, step 1), and redeliveries recognised by
//! [`super::session`] (ARCHITECTURE.md §9).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::Incoming;
use super::session::{self, Arrival, Connected, Match, Session, Unproven, Verdict};
use crate::backoff::Backoff;
use crate::source::SourceStats;
use crate::telemetry::add;
use kedge_queue::inbound::{Inbound, ReceiptWindow};
use kedge_wire::record::Header;

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
    /// Unacknowledged QoS 1 and 2 messages the broker may have in flight to kedge.
    pub receive_maximum: u16,
    /// `mqtt.redelivery_window`, as configured or its default.
    pub redelivery_window: usize,
    /// Largest MQTT packet kedge accepts (announced to an MQTT 5 broker); larger messages are
    /// skipped and counted.
    pub max_packet_size: u32,
    /// How QoS 1 redeliveries are recognised.
    pub redelivery: Match,
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// TLS, when configured.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Topic filters with their QoS (0, 1 or 2).
    pub subscriptions: Vec<(String, u8)>,
    /// Reconnect backoff bounds.
    pub reconnect: (Duration, Duration),
    /// How long, once asked to stop, the source waits for the last acknowledgements to go out
    /// before it drops the connection.
    pub drain_timeout: Duration,
}

impl MqttSettings {
    /// Receipts kept to recognise redeliveries (`mqtt.redelivery_window`): more than the
    /// broker may have unacknowledged, which is what proves it does not reuse packet ids
    /// ([`session`]).
    pub fn receipt_window(&self) -> usize {
        self.redelivery_window
    }
}

/// What one acknowledgement sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckKind {
    /// PUBACK, for QoS 1.
    Ack,
    /// PUBREC, for QoS 2.
    Rec,
    /// PUBCOMP, after PUBREL.
    Comp,
}

/// What acknowledges one message (or completes one QoS 2 exchange), on the connection it
/// arrived on: after a reconnect the broker sends it again, possibly under another packet id,
/// so an acknowledgement must never go out on a later connection.
#[derive(Debug, Clone, Copy)]
pub struct AckToken {
    pkid: u16,
    kind: AckKind,
    connection: u64,
}

/// Runs the source until `stop` turns true; then stops forwarding, releases the acks of what
/// was committed, and disconnects. `inbound` is what the queue holds of earlier sessions.
pub async fn run(
    settings: MqttSettings,
    inbound: Inbound,
    window: ReceiptWindow,
    events: mpsc::Sender<Incoming<AckToken>>,
    acks: mpsc::UnboundedReceiver<Vec<AckToken>>,
    stop: watch::Receiver<bool>,
    stats: Arc<SourceStats>,
) {
    let session = Session::new(settings.redelivery, settings.receipt_window(), inbound)
        .proven_by(usize::from(settings.receive_maximum) + 1);
    match settings.protocol {
        Protocol::V5 => v5::run(settings, session, window, events, acks, stop, stats).await,
        Protocol::V311 => v311::run(settings, session, window, events, acks, stop, stats).await,
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

/// Logs, once per run of them, the redeliveries recognised: kedge's own evidence that a resend
/// was not journaled twice (the broker's acknowledgement cannot tell).
fn report_recognised(name: &str, recognised: &mut u64) {
    if *recognised > 0 {
        tracing::info!(
            source = name,
            recognised = *recognised,
            "messages the broker sent again were already journaled: acknowledged, not journaled again"
        );
        *recognised = 0;
    }
}

fn log_connected(name: &str, session_present: bool, connected: Connected) {
    match connected {
        Connected::Fresh(forgot) => tracing::info!(
            source = name,
            session_present,
            forgot_earlier_session = forgot.is_some(),
            "connected to the MQTT broker: new session"
        ),
        Connected::Resumed {
            candidates,
            unproven: None,
        } => tracing::info!(
            source = name,
            session_present,
            redelivery_candidates = candidates,
            "connected to the MQTT broker: session resumed"
        ),
        Connected::Resumed {
            unproven: Some(why),
            ..
        } => {
            let why = match why {
                Unproven::TooFew => {
                    "fewer messages than receive_maximum + 1 since the session began"
                }
                Unproven::IdsReused => "the broker reused a packet id among the recent messages",
            };
            tracing::info!(
                source = name,
                session_present,
                reason = why,
                "connected to the MQTT broker: session resumed; QoS 1 redeliveries cannot be told from new messages yet and are journaled again"
            );
        }
    }
}

/// Warns when more messages await kedge's acknowledgement than `receive_maximum`: the broker
/// does not bound what it sends by it (mosquitto 2.0.11 does not; an MQTT 3.1.1 broker has its
/// own limit), so more than `receive_maximum` can be resent after a crash: acknowledgements
/// the broker had not read yet are lost with the connection. Widens the receipt window when
/// even kedge's own count of unacknowledged messages, with a margin for those, exceeds it.
fn widen(
    settings: &MqttSettings,
    session: &mut Session,
    window: &ReceiptWindow,
    awaiting: usize,
    warned: &mut bool,
) {
    let receive_maximum = usize::from(settings.receive_maximum);
    if awaiting <= receive_maximum {
        return;
    }
    if !*warned {
        *warned = true;
        tracing::warn!(
            source = %settings.name,
            awaiting,
            receive_maximum,
            redelivery_window = session.window(),
            "the MQTT broker sends more unacknowledged messages than mqtt.receive_maximum: resends of more than mqtt.redelivery_window messages cannot be recognised"
        );
    }
    let need = (awaiting + receive_maximum + 1).min(usize::from(u16::MAX));
    if need > session.window() {
        session.widen(need);
        window.widen(need);
    }
}

/// The number of the connection acknowledgements may go out on, shared by the event loop and
/// the acker. The acker checks it and queues an ack under the lock; the event loop, on a
/// connection error, bumps it and drops the acks queued meanwhile under the lock: so no ack
/// of one connection is ever sent on the next.
type Gate = Arc<Mutex<u64>>;

fn lock(gate: &Gate) -> std::sync::MutexGuard<'_, u64> {
    gate.lock().unwrap_or_else(|p| p.into_inner())
}

/// An MQTT 5 PUBLISH's user properties as record headers, in order (duplicates kept).
pub fn user_properties(
    props: Option<&rumqttc::v5::mqttbytes::v5::PublishProperties>,
) -> Vec<Header> {
    props.map_or_else(Vec::new, |props| {
        props
            .user_properties
            .iter()
            .map(|(k, v)| Header {
                name: k.clone(),
                value: Bytes::from(v.clone()),
            })
            .collect()
    })
}

/// The event loop is the same for both protocol versions; only the rumqttc types differ.
macro_rules! event_loop {
    ($settings:ident, $options:ident, $session:ident, $window:ident, $events:ident, $acks:ident, $stop:ident,
     $stats:ident, try_send = $try_send:expr, qos = $qos:expr, topic = $topic:expr,
     headers = $headers:expr, filter = $filter:ident, taken_over = $taken_over:expr) => {{
        if let Some((u, p)) = &$settings.credentials {
            $options.set_credentials(u.clone(), p.clone());
        }
        if let Some(tls) = &$settings.tls {
            $options.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls.clone())));
        }
        let mut session = $session;
        let (client, mut eventloop) = AsyncClient::new($options, request_capacity(&$settings));
        let mut backoff = Backoff::new($settings.reconnect.0, $settings.reconnect.1);
        let mut events = Some($events);
        let mut stop = $stop;
        let gate: Gate = Arc::new(Mutex::new(0));
        let mut connection = 0u64;
        let acker_client = client.clone();
        let acker_gate = gate.clone();
        let mut acks = $acks;
        let acks_stats = $stats.clone();
        // Acks go out in the order the commits release them, which is arrival order.
        let acker = tokio::spawn(async move {
            while let Some(tokens) = acks.recv().await {
                let mut acked = 0u64;
                for t in tokens {
                    loop {
                        let sent = {
                            let current = lock(&acker_gate);
                            if t.connection != *current {
                                // Its connection is gone: the broker sends the message again.
                                Ok(false)
                            } else {
                                $try_send(&acker_client, t).map(|()| true)
                            }
                        };
                        match sent {
                            Ok(sent) => {
                                acked += u64::from(sent && t.kind != AckKind::Comp);
                                break;
                            }
                            // The request channel is full (or the event loop is gone, and
                            // this task is aborted): wait without holding the gate.
                            Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                        }
                    }
                }
                add(&acks_stats.acked, acked);
            }
            let _ = acker_client.disconnect().await;
        });
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let mut recognised = 0u64;
        // QoS 1 and 2 messages of this connection not yet acknowledged (PUBACK or PUBREC
        // written): each may be sent again after a crash.
        let mut awaiting = 0usize;
        let mut warned = false;
        let mut collided = false;
        loop {
            let polled = tokio::select! {
                p = eventloop.poll() => p,
                _ = stop.changed(), if events.is_some() => {
                    // Stop forwarding: the commit stage drains and then closes the ack channel,
                    // after which the acker disconnects. Unacknowledged messages stay with the
                    // broker and come back next time.
                    events = None;
                    drain_deadline = Some(kedge_base::deadline::after($settings.drain_timeout));
                    continue;
                }
                _ = async { tokio::time::sleep_until(drain_deadline.unwrap()).await }, if drain_deadline.is_some() => {
                    tracing::warn!(source = %$settings.name, "MQTT did not disconnect in time; dropping the connection");
                    break;
                }
            };
            match polled {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let Some(tx) = &events else { continue };
                    add(&$stats.received, 1);
                    let qos: u8 = $qos(p.qos);
                    let topic: &[u8] = $topic(&p);
                    // rumqttc (patched) hands over a message over the size limit without its
                    // payload, which it skips: remembered like any other, so that its resends
                    // are recognised, acknowledged once everything before it is durable, never
                    // journaled.
                    let size = p.oversized.map(|n| (n as u64).to_be_bytes());
                    let arrival = Arrival {
                        pkid: p.pkid,
                        qos,
                        dup: p.dup,
                        digest: match (qos, &size) {
                            (0, _) => 0,
                            (_, Some(size)) => session::digest(topic, size),
                            (_, None) => session::digest(topic, &p.payload),
                        },
                    };
                    if qos > 0 {
                        awaiting += 1;
                        widen(&$settings, &mut session, &$window, awaiting, &mut warned);
                    }
                    let ack = (qos > 0).then_some(AckToken {
                        pkid: p.pkid,
                        kind: if qos == 2 { AckKind::Rec } else { AckKind::Ack },
                        connection,
                    });
                    if session.collides(&arrival) {
                        add(&$stats.mqtt_id_collisions, 1);
                        if !collided {
                            collided = true;
                            tracing::warn!(source = %$settings.name, pkid = p.pkid,
                                "the MQTT broker sent a new QoS 2 message under a packet id kedge still holds for an earlier one, which MQTT forbids before PUBCOMP: resends of the earlier one may be journaled again");
                        }
                    }
                    let incoming = match session.arrived(arrival) {
                        Verdict::Journal(change) if p.oversized.is_some() => {
                            add(&$stats.mqtt_oversized, 1);
                            tracing::warn!(source = %$settings.name, topic = %String::from_utf8_lossy(topic),
                                bytes = p.oversized, max_packet_size = $settings.max_packet_size,
                                "message larger than mqtt.max_packet_size skipped: acknowledged, not journaled");
                            Incoming { event: None, ack, change }
                        }
                        Verdict::Journal(change) => {
                            report_recognised(&$settings.name, &mut recognised);
                            if p.dup && qos > 0 {
                                add(&$stats.mqtt_dup_journaled, 1);
                            }
                            let event = crate::route::Event::new(
                                String::from_utf8_lossy(topic).into_owned(),
                                Bytes::clone(&p.payload),
                                $headers(&p),
                                now_ms(),
                            );
                            Incoming::event(event, ack, change)
                        }
                        Verdict::Redelivered => {
                            add(&$stats.mqtt_redelivered, 1);
                            recognised += 1;
                            Incoming { event: None, ack, change: None }
                        }
                    };
                    if tx.send(incoming).await.is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::PubRel(r))) => {
                    // Unanswered after a stop: the broker sends PUBREL again next time.
                    let Some(tx) = &events else { continue };
                    report_recognised(&$settings.name, &mut recognised);
                    let change = session.released(r.pkid);
                    let ack = AckToken { pkid: r.pkid, kind: AckKind::Comp, connection };
                    if tx.send(Incoming { event: None, ack: Some(ack), change: Some(change) }).await.is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    report_recognised(&$settings.name, &mut recognised);
                    backoff.reset();
                    $stats.mqtt_connected.store(true, std::sync::atomic::Ordering::Relaxed);
                    $stats.mqtt_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let connected = session.connected(c.session_present);
                    log_connected(&$settings.name, c.session_present, connected);
                    if let (Connected::Fresh(Some(reset)), Some(tx)) = (connected, &events) {
                        // Durable before anything of the new session is acknowledged.
                        if tx.send(Incoming { event: None, ack: None, change: Some(reset) }).await.is_err() {
                            break;
                        }
                    }
                    if !c.session_present {
                        let filters = $settings.subscriptions.iter().map(|(f, q)| {
                            let qos = match q {
                                0 => QoS::AtMostOnce,
                                1 => QoS::AtLeastOnce,
                                _ => QoS::ExactlyOnce,
                            };
                            $filter::new(f.clone(), qos)
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
                Ok(Event::Outgoing(Outgoing::PubAck(_) | Outgoing::PubRec(_))) => {
                    awaiting = awaiting.saturating_sub(1);
                }
                // Read on until the broker closes: closing with its messages unread would make
                // the kernel reset the connection, and a broker drops what it had not read of
                // it, the last acknowledgements included (then resent next time). The drain
                // deadline bounds the wait.
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {}
                Ok(_) => {}
                Err(e) => {
                    {
                        // rumqttc dropped the acks queued for the old connection; drop those
                        // the acker queued since, before it can see the new number.
                        let mut current = lock(&gate);
                        *current += 1;
                        connection = *current;
                        eventloop.clean();
                    }
                    awaiting = 0;
                    $stats.mqtt_connected.store(false, std::sync::atomic::Ordering::Relaxed);
                    if events.is_none() {
                        break;
                    }
                    let taken_over: bool = $taken_over(&e);
                    let delay = if taken_over {
                        // Another client with this id took the session: taking it back at once
                        // would make the two fight over it. Likely a second kedge with the same
                        // client id, or an old one that did not stop.
                        tracing::error!(source = %$settings.name, client_id = %$settings.client_id, retry_in = ?$settings.reconnect.1,
                            "another client took over the MQTT session; is a second kedge running with this client id?");
                        $settings.reconnect.1
                    } else {
                        let delay = backoff.next_delay();
                        log_connection_error(&$settings.name, &e, &backoff, delay);
                        delay
                    };
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
        report_recognised(&$settings.name, &mut recognised);
        drop(events);
        acker.abort();
    }};
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{
        DisconnectReasonCode, Filter, Packet, PubComp, Publish, SubscribeReasonCode,
    };
    use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
    use rumqttc::{Outgoing, TlsConfiguration, Transport};

    fn topic(p: &Publish) -> &[u8] {
        p.topic.as_ref()
    }

    pub(super) async fn run(
        settings: MqttSettings,
        session: Session,
        window: ReceiptWindow,
        events: mpsc::Sender<Incoming<AckToken>>,
        acks: mpsc::UnboundedReceiver<Vec<AckToken>>,
        stop: watch::Receiver<bool>,
        stats: Arc<SourceStats>,
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
            .set_max_packet_size(Some(settings.max_packet_size))
            // kedge only subscribes; rumqttc sizes its outgoing-publish table by this limit
            // (u16::MAX by default: about 10 MiB resident for nothing).
            .set_outgoing_inflight_upper_limit(OUTGOING_INFLIGHT)
            .set_manual_acks(true)
            .set_request_channel_capacity(request_capacity(&settings));
        event_loop!(
            settings,
            o,
            session,
            window,
            events,
            acks,
            stop,
            stats,
            try_send = |client: &AsyncClient, t: AckToken| -> Result<(), ()> {
                let queued = match t.kind {
                    AckKind::Comp => client.try_complete(PubComp::new(t.pkid, None)),
                    kind => {
                        let qos = if kind == AckKind::Rec {
                            QoS::ExactlyOnce
                        } else {
                            QoS::AtLeastOnce
                        };
                        let mut p = Publish::new("", qos, Vec::new(), None);
                        p.pkid = t.pkid;
                        client.try_ack(&p)
                    }
                };
                queued.map_err(drop)
            },
            qos = |q: QoS| q as u8,
            topic = topic,
            headers = |p: &Publish| user_properties(p.properties.as_ref()),
            filter = Filter,
            taken_over = |e: &ConnectionError| matches!(
                e,
                ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code: DisconnectReasonCode::SessionTakenOver,
                    ..
                })
            )
        );
    }
}

mod v311 {
    use super::*;
    use rumqttc::{
        AsyncClient, ConnectionError, Event, MqttOptions, Outgoing, Packet, Publish, QoS,
        SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
    };

    fn topic(p: &Publish) -> &[u8] {
        p.topic.as_ref()
    }

    pub(super) async fn run(
        settings: MqttSettings,
        session: Session,
        window: ReceiptWindow,
        events: mpsc::Sender<Incoming<AckToken>>,
        acks: mpsc::UnboundedReceiver<Vec<AckToken>>,
        stop: watch::Receiver<bool>,
        stats: Arc<SourceStats>,
    ) {
        let mut o = MqttOptions::new(
            settings.client_id.clone(),
            settings.host.clone(),
            settings.port,
        );
        let max = settings.max_packet_size as usize;
        o.set_keep_alive(settings.keep_alive)
            .set_clean_session(false)
            .set_max_packet_size(max, max)
            .set_inflight(OUTGOING_INFLIGHT)
            .set_manual_acks(true)
            .set_request_channel_capacity(request_capacity(&settings));
        event_loop!(
            settings,
            o,
            session,
            window,
            events,
            acks,
            stop,
            stats,
            try_send = |client: &AsyncClient, t: AckToken| -> Result<(), ()> {
                let queued = match t.kind {
                    AckKind::Comp => client.try_complete(t.pkid),
                    kind => {
                        let qos = if kind == AckKind::Rec {
                            QoS::ExactlyOnce
                        } else {
                            QoS::AtLeastOnce
                        };
                        let mut p = Publish::new("", qos, Vec::new());
                        p.pkid = t.pkid;
                        client.try_ack(&p)
                    }
                };
                queued.map_err(drop)
            },
            qos = |q: QoS| q as u8,
            topic = topic,
            headers = |_: &Publish| -> Vec<Header> { Vec::new() },
            filter = SubscribeFilter,
            // MQTT 3.1.1 has no reason codes: a takeover is a closed connection like any other.
            taken_over = |_: &ConnectionError| false
        );
    }
}
