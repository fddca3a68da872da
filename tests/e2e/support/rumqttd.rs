//! rumqttd 0.20.0, a second MQTT broker, on two loopback ports: one listener for MQTT 5 and one
//! for MQTT 3.1.1 (rumqttd serves each protocol on its own listener; both share one router).
//!
//! A persistent session (clean session 0 / clean start 0) outlives its client's connection
//! (kill -9) but not the broker, and rumqttd keeps it regardless of the session expiry interval.
//! How it differs from mosquitto, measured with a raw-socket subscriber:
//! - unacknowledged QoS 1/2 PUBLISHes are resent on reconnect renumbered from packet id 1, with
//!   DUP=0 (mosquitto: original id, DUP=1); PUBRELs are resent with their original ids, which
//!   can be the same ids as renumbered PUBLISHes in the same burst;
//! - outgoing packet ids wrap after 100 (1..=100), and restart at 1 on every connection;
//! - acks must come in order: an out-of-order PUBACK/PUBREC is logged as "out of order ack"
//!   and the oldest in-flight message is silently forgotten (lost);
//! - a subscriber's MQTT 5 Maximum Packet Size is ignored: bigger messages are sent anyway.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use tempfile::TempDir;

use super::{
    free_port, log_stdio, peer, print_log_if_panicking, stop_child, wait_for_port, wait_until,
};

/// Largest PUBLISH payload the listeners accept from clients (publishers): generous, so tests
/// can send oversized messages through the broker to kedge.
const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// A running rumqttd broker; killed when dropped.
pub struct Rumqttd {
    /// Port of the MQTT 5 listener on 127.0.0.1.
    port_v5: u16,
    /// Port of the MQTT 3.1.1 listener on 127.0.0.1.
    port_v311: u16,
    /// Holds the config file and the log.
    dir: TempDir,
    /// The broker process.
    child: Child,
}

impl Rumqttd {
    /// Starts rumqttd on two free ports and waits until both accept connections.
    pub fn start() -> Rumqttd {
        // Built and copied there by scripts/install-peers.sh.
        let binary = peer("bin/rumqttd");
        let (port_v5, port_v311) = (free_port(), free_port());
        let dir = tempfile::Builder::new()
            .prefix("kedge-e2e-rumqttd-")
            .tempdir()
            .expect("temp dir");
        // No [console], [prometheus], [ws] or [bridge] section: those listeners stay off.
        // The commit log a persistent session's offline messages are read back from holds up to
        // max_segment_size x max_segment_count bytes per filter (older segments are dropped).
        let config = format!(
            "id = 0\n\
             \n\
             [router]\n\
             id = 0\n\
             max_connections = 10010\n\
             max_outgoing_packet_count = 200\n\
             max_segment_size = 104857600\n\
             max_segment_count = 10\n\
             \n\
             [v5.1]\n\
             name = \"v5-1\"\n\
             listen = \"127.0.0.1:{port_v5}\"\n\
             next_connection_delay_ms = 1\n\
             [v5.1.connections]\n\
             connection_timeout_ms = 60000\n\
             max_payload_size = {MAX_PAYLOAD_BYTES}\n\
             max_inflight_count = 100\n\
             \n\
             [v4.1]\n\
             name = \"v4-1\"\n\
             listen = \"127.0.0.1:{port_v311}\"\n\
             next_connection_delay_ms = 1\n\
             [v4.1.connections]\n\
             connection_timeout_ms = 60000\n\
             max_payload_size = {MAX_PAYLOAD_BYTES}\n\
             max_inflight_count = 100\n\
             dynamic_filters = true\n"
        );
        let config_path = dir.path().join("rumqttd.toml");
        std::fs::write(&config_path, config).expect("write rumqttd.toml");
        let log = dir.path().join("rumqttd.log");
        let (stdout, stderr) = log_stdio(&log);
        // -q: no banner; -v: info (connections, subscriptions, errors; nothing per message).
        let mut child = Command::new(binary)
            .arg("-q")
            .arg("-v")
            .arg("-c")
            .arg(&config_path)
            .env("NO_COLOR", "1")
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn rumqttd");
        wait_for_port("rumqttd (MQTT 5)", port_v5, &mut child, &log);
        wait_for_port("rumqttd (MQTT 3.1.1)", port_v311, &mut child, &log);
        Rumqttd {
            port_v5,
            port_v311,
            dir,
            child,
        }
    }

    /// The MQTT 5 listener's port on 127.0.0.1 (kedge's default protocol).
    pub fn port(&self) -> u16 {
        self.port_v5
    }

    /// The MQTT 3.1.1 listener's port on 127.0.0.1.
    pub fn port_v311(&self) -> u16 {
        self.port_v311
    }

    /// Waits until some client has subscribed to exactly `filter` (rumqttd logs
    /// `Adding subscription on topic <filter>` at info level).
    pub fn wait_subscribed(&self, filter: &str, timeout: Duration) {
        let line_end = format!("Adding subscription on topic {filter}");
        wait_until(
            &format!("a subscription to {filter} (rumqttd log)"),
            timeout,
            || {
                std::fs::read_to_string(self.log())
                    .map(|log| log.lines().any(|line| line.ends_with(&line_end)))
                    .unwrap_or(false)
            },
        );
    }

    /// Path of the broker's log file.
    fn log(&self) -> PathBuf {
        self.dir.path().join("rumqttd.log")
    }
}

impl Drop for Rumqttd {
    fn drop(&mut self) {
        print_log_if_panicking(&self.log());
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpStream};
    use std::time::Duration;

    use super::Rumqttd;

    /// Protocol level in CONNECT: 4 is MQTT 3.1.1, 5 is MQTT 5.
    #[derive(Clone, Copy)]
    enum Version {
        V311,
        V5,
    }

    /// Appends a length-prefixed UTF-8 string.
    fn put_str(out: &mut Vec<u8>, text: &str) {
        out.extend_from_slice(&u16::try_from(text.len()).expect("short").to_be_bytes());
        out.extend_from_slice(text.as_bytes());
    }

    /// Writes one packet (every packet here is under 128 bytes: one-byte remaining length).
    fn send(stream: &mut TcpStream, first: u8, body: &[u8]) {
        let mut packet = vec![first, u8::try_from(body.len()).expect("short packet")];
        packet.extend_from_slice(body);
        stream.write_all(&packet).expect("write");
    }

    /// Reads one packet: its first byte and its body.
    fn receive(stream: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut first = [0; 1];
        stream.read_exact(&mut first).expect("read packet type");
        let (mut length, mut shift) = (0_usize, 0);
        loop {
            let mut byte = [0; 1];
            stream.read_exact(&mut byte).expect("read remaining length");
            length |= usize::from(byte[0] & 0x7f) << shift;
            shift += 7;
            if byte[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).expect("read packet body");
        (first[0], body)
    }

    /// Connects with a CONNECT (keep-alive 60 s; at MQTT 5 a one-hour session expiry) and returns
    /// the stream and the CONNACK's session-present flag.
    fn connect(port: u16, version: Version, client_id: &str, clean: bool) -> (TcpStream, bool) {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        let mut body = Vec::new();
        put_str(&mut body, "MQTT");
        body.push(match version {
            Version::V311 => 4,
            Version::V5 => 5,
        });
        body.extend_from_slice(&[if clean { 2 } else { 0 }, 0, 60]);
        if let Version::V5 = version {
            body.extend_from_slice(&[5, 0x11, 0, 0, 0x0e, 0x10]);
        }
        put_str(&mut body, client_id);
        send(&mut stream, 0x10, &body);
        let (first, connack) = receive(&mut stream);
        assert_eq!(first, 0x20, "CONNACK");
        assert_eq!(connack[1], 0, "CONNACK reason code");
        (stream, connack[0] & 1 == 1)
    }

    /// Body of a packet that starts with a packet id, plus MQTT 5's empty property list.
    fn with_id(version: Version, packet_id: u16) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        if let Version::V5 = version {
            body.push(0);
        }
        body
    }

    /// A QoS 1 message published while a persistent session's client is gone (its socket
    /// dropped without DISCONNECT, as by kill -9) is delivered when the client comes back.
    fn keeps_a_persistent_session(version: Version) {
        let broker = Rumqttd::start();
        let port = match version {
            Version::V311 => broker.port_v311(),
            Version::V5 => broker.port(),
        };
        let id = "kedge-e2e-rumqttd-selftest";
        let (mut subscriber, present) = connect(port, version, id, false);
        assert!(!present, "a new session");
        let mut subscribe = with_id(version, 1);
        put_str(&mut subscribe, "selftest/#");
        subscribe.push(1);
        send(&mut subscriber, 0x82, &subscribe);
        let (first, suback) = receive(&mut subscriber);
        assert_eq!(first, 0x90, "SUBACK");
        assert_eq!(suback.last(), Some(&1), "granted QoS 1");
        broker.wait_subscribed("selftest/#", Duration::from_secs(5));
        drop(subscriber);

        let (mut publisher, _) = connect(port, version, "kedge-e2e-rumqttd-pub", true);
        let mut publish = Vec::new();
        put_str(&mut publish, "selftest/a");
        publish.extend_from_slice(&with_id(version, 7));
        publish.push(b'x');
        send(&mut publisher, 0x32, &publish);
        let (first, puback) = receive(&mut publisher);
        assert_eq!((first, &puback[..2]), (0x40, &[0, 7][..]), "PUBACK");

        let (mut subscriber, present) = connect(port, version, id, false);
        assert!(present, "the session survived the dropped connection");
        let (first, delivered) = receive(&mut subscriber);
        assert_eq!(first & 0xf6, 0x32, "a QoS 1 PUBLISH");
        assert_eq!(delivered[2..12], *b"selftest/a");
        assert_eq!(delivered.last(), Some(&b'x'));
    }

    #[test]
    fn rumqttd_keeps_a_persistent_session_at_mqtt_3_1_1() {
        keeps_a_persistent_session(Version::V311);
    }

    #[test]
    fn rumqttd_keeps_a_persistent_session_at_mqtt_5() {
        keeps_a_persistent_session(Version::V5);
    }
}
