//! A scripted MQTT 3.1.1 broker for one subscriber: the test decides every packet it sends, its
//! packet ids and DUP flags, and reads every packet kedge answers with. For what no real broker
//! can be made to do on purpose (reuse a packet id at once, lose a PUBACK, cut a PUBLISH in half).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// MQTT control packet types (3.1.1 §2.2.1).
pub mod kind {
    /// CONNECT.
    pub const CONNECT: u8 = 1;
    /// PUBLISH.
    pub const PUBLISH: u8 = 3;
    /// PUBACK.
    pub const PUBACK: u8 = 4;
    /// PUBREC.
    pub const PUBREC: u8 = 5;
    /// PUBCOMP.
    pub const PUBCOMP: u8 = 7;
    /// SUBSCRIBE.
    pub const SUBSCRIBE: u8 = 8;
    /// PINGREQ.
    pub const PINGREQ: u8 = 12;
}

/// Listens on 127.0.0.1; each [`ScriptedBroker::accept`] is one connection of kedge's.
pub struct ScriptedBroker {
    listener: TcpListener,
}

/// One packet as read: its type, the flags of its first byte, and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Control packet type.
    pub kind: u8,
    /// Low nibble of the first byte.
    pub flags: u8,
    /// Everything after the remaining length.
    pub body: Vec<u8>,
}

impl Packet {
    /// The packet id of an acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP) or SUBSCRIBE.
    pub fn pkid(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }
}

/// One accepted connection, after CONNECT.
pub struct Connection {
    stream: TcpStream,
}

impl ScriptedBroker {
    /// Binds a free port on 127.0.0.1.
    pub fn start() -> ScriptedBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        ScriptedBroker { listener }
    }

    /// The port kedge must connect to.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().expect("local addr").port()
    }

    /// Waits for kedge to connect and send CONNECT, and answers CONNACK with
    /// `session_present`; with a new session, also answers kedge's SUBSCRIBE (granting what it
    /// asked). Returns the connection and, for a new session, the QoS kedge subscribed with.
    pub fn accept(&self, session_present: bool, timeout: Duration) -> (Connection, Option<u8>) {
        self.listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "kedge did not connect in {timeout:?}"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream.set_nodelay(true).expect("nodelay");
        let mut c = Connection { stream };
        let connect = c.read(timeout).expect("CONNECT");
        assert_eq!(connect.kind, kind::CONNECT, "first packet: {connect:?}");
        c.write(&[0x20, 0x02, u8::from(session_present), 0x00]);
        if session_present {
            return (c, None);
        }
        let sub = c.read(timeout).expect("SUBSCRIBE");
        assert_eq!(sub.kind, kind::SUBSCRIBE, "after a new session: {sub:?}");
        let qos = *sub.body.last().expect("requested QoS");
        let pkid = sub.pkid();
        c.write(&[0x90, 0x03, (pkid >> 8) as u8, pkid as u8, qos]);
        (c, Some(qos))
    }
}

/// Encodes a 3.1.1 PUBLISH.
pub fn publish(topic: &str, payload: &[u8], qos: u8, pkid: u16, dup: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    let mut p = vec![(kind::PUBLISH << 4) | (u8::from(dup) << 3) | (qos << 1)];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        p.push(byte);
        if len == 0 {
            break;
        }
    }
    p.extend(body);
    p
}

impl Connection {
    /// Writes raw bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to kedge");
    }

    /// Sends a PUBLISH.
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: u8, pkid: u16, dup: bool) {
        self.write(&publish(topic, payload, qos, pkid, dup));
    }

    /// Sends PUBREL for `pkid`.
    pub fn pubrel(&mut self, pkid: u16) {
        self.write(&[0x62, 0x02, (pkid >> 8) as u8, pkid as u8]);
    }

    /// Reads the next packet other than PINGREQ (answered); `None` when kedge closed the
    /// connection or `timeout` passed.
    pub fn read(&mut self, timeout: Duration) -> Option<Packet> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("read timeout");
            let mut first = [0u8; 1];
            if self.stream.read_exact(&mut first).is_err() {
                return None;
            }
            let mut len = 0usize;
            let mut shift = 0;
            loop {
                let mut b = [0u8; 1];
                self.stream.read_exact(&mut b).ok()?;
                len |= usize::from(b[0] & 0x7f) << shift;
                shift += 7;
                if b[0] & 0x80 == 0 {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).ok()?;
            let p = Packet {
                kind: first[0] >> 4,
                flags: first[0] & 0x0f,
                body,
            };
            if p.kind == kind::PINGREQ {
                self.write(&[0xd0, 0x00]);
                continue;
            }
            return Some(p);
        }
    }

    /// Reads the next packet and asserts it is `kind` for `pkid`.
    pub fn expect(&mut self, kind: u8, pkid: u16, timeout: Duration) {
        let p = self
            .read(timeout)
            .unwrap_or_else(|| panic!("no packet of type {kind} for id {pkid} in {timeout:?}"));
        assert_eq!((p.kind, p.pkid()), (kind, pkid), "{p:?}");
    }

    /// Closes the connection at once, as a network failure would.
    pub fn drop_connection(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
