//! A hostile or spoofed Kafka broker must not crash kedge: its answers are errors like any
//! other broker failure. Here a scripted broker on 127.0.0.1 answers every request with an
//! ApiVersions body whose array claims 2^31 entries, which aborted kedge ("memory allocation
//! of 137438953408 bytes failed", exit 134) before authentication.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::audit::{arg, config_file, kedge_audit};
use crate::support::kedge::{DEVICE_ID, Kedge, READINGS_ROUTING, pipeline_config};
use crate::support::{free_port, wait_until};

/// The ApiVersions v3 body: error code 0, then a compact array length (varint 2^31) and no
/// entries.
const HOSTILE_API_VERSIONS: [u8; 7] = [0, 0, 0x80, 0x80, 0x80, 0x80, 0x08];

/// A broker that answers every request with [`HOSTILE_API_VERSIONS`]; stops when dropped.
struct HostileBroker {
    port: u16,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HostileBroker {
    fn start() -> HostileBroker {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        std::thread::spawn(move || answer(stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        HostileBroker {
            port,
            connections,
            stop,
        }
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for HostileBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers each request frame on `stream` until the peer closes it.
fn answer(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    loop {
        let mut len = [0; 4];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut request = vec![0; usize::try_from(i32::from_be_bytes(len)).unwrap_or(0)];
        if request.len() < 8 || stream.read_exact(&mut request).is_err() {
            return;
        }
        // Request header: api key (2), api version (2), correlation id (4).
        let mut frame = Vec::new();
        frame.extend_from_slice(&(4 + HOSTILE_API_VERSIONS.len() as i32).to_be_bytes());
        frame.extend_from_slice(&request[4..8]);
        frame.extend_from_slice(&HOSTILE_API_VERSIONS);
        if stream.write_all(&frame).is_err() {
            return;
        }
    }
}

#[test]
fn audit_against_a_hostile_broker_exits_2_with_the_reason() {
    let broker = HostileBroker::start();
    let (_dir, config) = config_file(&broker.bootstrap(), READINGS_ROUTING, DEVICE_ID);
    let (code, out, err) = kedge_audit(&["--config", arg(&config)]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains(&format!(
            "Kafka broker {}: bad ApiVersions response",
            broker.bootstrap()
        )),
        "{err}"
    );
}

#[test]
fn run_against_a_hostile_broker_logs_the_reason_and_keeps_retrying() {
    let broker = HostileBroker::start();
    let mut kedge = Kedge::start(&pipeline_config(
        free_port(),
        &broker.bootstrap(),
        READINGS_ROUTING,
    ));
    wait_until(
        "kedge to log the broker's bad answer",
        Duration::from_secs(30),
        || {
            kedge.assert_running();
            kedge.log_count("bad ApiVersions response") > 0
        },
    );
    // It goes on trying (with backoff) instead of exiting or aborting.
    let seen = broker.connections();
    wait_until("kedge to connect again", Duration::from_secs(30), || {
        broker.connections() > seen
    });
    kedge.assert_running();
}
