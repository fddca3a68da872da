//! The operations listener: `/metrics` (Prometheus text), `/health/live`, `/health/ready`, and
//! `/status.json`, `/status/queue` and `/status/log` for `kedge status`, over a minimal
//! HTTP/1.1 server (GET only, one request per connection), so that no web framework lands on an
//! edge device for a handful of endpoints.

pub mod config;
pub mod exposition;
pub mod fd_limit;
pub mod metrics;
pub mod pidfd;
pub mod procfs;
pub mod sd_notify;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::telemetry::Stats;
use exposition::{Readiness, Snapshot};
use kedge_queue::{Queue, QueueError, budget, tools};
use status::Report;

/// Longest request head read; scrapers send a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// A client that sends no complete request head within this is dropped (slowloris).
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that does not take its whole answer within this is dropped: it would hold a task
/// and a socket for as long as it likes. A `/metrics` of a few hundred KiB takes milliseconds.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once. Each holds a descriptor, which the journal and the segment
/// files need too: a flood of connections must not take them all. Scrapers and `kedge status`
/// need a handful.
const MAX_CONNECTIONS: usize = 32;
/// How long one `/status/queue` report is served before the queue is read again: it reads
/// (and decompresses) every journal chunk, too much to do for each request.
const QUEUE_REPORT_MAX_AGE: Duration = Duration::from_secs(10);

/// What a connection beyond [`MAX_CONNECTIONS`] is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
    Content-Length: 5\r\nConnection: close\r\n\r\nbusy\n";

/// What the endpoints read from.
pub struct OpsState {
    /// Pipeline counters.
    pub stats: Arc<Stats>,
    /// The open queue.
    pub queue: Arc<Queue>,
    /// The queue's byte budget (a reload may change it).
    pub queue_max_bytes: AtomicU64,
    /// Readiness limits.
    pub readiness: Readiness,
    /// Every plugin's counters (a reload replaces them).
    pub plugins: std::sync::Mutex<Vec<Arc<kedge_plugin_host::stats::PluginStats>>>,
    /// The `source` label of the source's counters (the MQTT connection's name).
    pub source: String,
    /// The config file the agent was started with and re-reads on SIGHUP.
    pub config_file: std::path::PathBuf,
}

impl OpsState {
    /// Reads everything a scrape reports (a few sled reads: call it off the async workers).
    pub fn snapshot(&self) -> Snapshot {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let oldest = tools::oldest_pending_ms(&self.queue)
            .inspect_err(|e| tracing::debug!(error = %e, "metrics: cannot read the oldest record"))
            .ok()
            .flatten();
        let age = |ts: i64| (now_ms.saturating_sub(ts)).max(0) as f64 / 1000.0;
        let last_ack = self
            .stats
            .delivery
            .kafka
            .last_ack_ms
            .load(Ordering::Relaxed);
        let reload = self.stats.reload.last();
        Snapshot {
            families: Snapshot::families_of(&self.stats, &self.source),
            histograms: Snapshot::histograms_of(&self.stats),
            queue_live_bytes: self.queue.live_bytes(),
            queue_max_bytes: self.queue_max_bytes.load(Ordering::Relaxed),
            queue_disk_bytes: budget::dir_size(self.queue.path()).ok(),
            queue_free_bytes: budget::free_bytes(self.queue.path()).ok(),
            journal_records: self.queue.journal_records().ok(),
            oldest_pending_age: oldest.map(age),
            lost_records: self.queue.lost_records().unwrap_or(0),
            dropped_by_topic: self
                .queue
                .dropped_records()
                .map(|d| d.into_iter().collect())
                .unwrap_or_default(),
            last_ack_age: (last_ack > 0).then(|| age(last_ack)),
            quarantined: self
                .queue
                .quarantined_db()
                .ok()
                .flatten()
                .map(|p| p.display().to_string()),
            reload_refused: reload.refusal,
            reload_answered: reload.read,
            mqtt_connected: self.stats.source.mqtt_connected.load(Ordering::Relaxed),
            resident_bytes: exposition::resident_bytes(),
            open_fds: exposition::open_fds(),
            plugins: self
                .plugins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|p| p.snapshot())
                .collect(),
            // The listener's own counters, which it adds to a `/metrics` answer.
            http_refused: Vec::new(),
        }
    }
}

/// Connections the listener closed without a full answer, by reason.
#[derive(Debug, Default)]
struct Refused {
    /// [`MAX_CONNECTIONS`] were open already.
    limit: AtomicU64,
    /// No complete request head within [`READ_TIMEOUT`].
    slow_request: AtomicU64,
    /// A head over [`MAX_HEAD`], unreadable, or cut short by the client.
    bad_request: AtomicU64,
    /// The answer not taken within [`WRITE_TIMEOUT`].
    slow_reader: AtomicU64,
}

impl Refused {
    fn rows(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("limit", g(&self.limit)),
            ("slow_request", g(&self.slow_request)),
            ("bad_request", g(&self.bad_request)),
            ("slow_reader", g(&self.slow_reader)),
        ]
    }
}

/// The listener's own state beside what the endpoints report.
struct Server {
    state: Arc<OpsState>,
    refused: Refused,
    /// The last `/status/queue` report and when it was made; the lock also makes concurrent
    /// requests wait for one reading of the queue rather than each start their own.
    queue_report: tokio::sync::Mutex<Option<(Instant, String)>>,
}

/// Serves the endpoints until the task is aborted.
pub async fn serve(listener: TcpListener, state: Arc<OpsState>) {
    let server = Arc::new(Server {
        state,
        refused: Refused::default(),
        queue_report: tokio::sync::Mutex::new(None),
    });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "metrics listener cannot accept");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            server.refused.limit.fetch_add(1, Ordering::Relaxed);
            // Told without reading its request or waiting: a fresh socket's send buffer takes
            // these few bytes at once, or they are not sent. Then closed, freeing its descriptor.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &server).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
            drop(slot);
        });
    }
}

/// Why a request head could not be read.
enum HeadError {
    /// Not complete within [`READ_TIMEOUT`].
    Slow,
    /// Over [`MAX_HEAD`], cut short, or a read failed.
    Bad,
}

/// The request head, read within [`READ_TIMEOUT`] (one deadline for the whole head, so that a
/// client sending a byte at a time does not extend it).
async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.map_err(|_| HeadError::Bad)?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return Err(HeadError::Bad);
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await;
    match read {
        Ok(Ok(())) => Ok(head),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HeadError::Slow),
    }
}

async fn handle(mut stream: TcpStream, server: &Server) -> std::io::Result<()> {
    let refused = &server.refused;
    let (status, kind, body) = match read_head(&mut stream).await {
        Ok(head) => answer(&head, server).await?,
        Err(HeadError::Slow) => {
            refused.slow_request.fetch_add(1, Ordering::Relaxed);
            (
                408,
                "text/plain",
                "no complete request in time\n".to_owned(),
            )
        }
        Err(HeadError::Bad) => {
            refused.bad_request.fetch_add(1, Ordering::Relaxed);
            (400, "text/plain", "bad request\n".to_owned())
        }
    };
    match tokio::time::timeout(WRITE_TIMEOUT, respond(&mut stream, status, kind, &body)).await {
        Ok(written) => written,
        Err(_) => {
            refused.slow_reader.fetch_add(1, Ordering::Relaxed);
            Err(std::io::ErrorKind::TimedOut.into())
        }
    }
}

/// Status, content type and body for the request whose head is `head`.
async fn answer(head: &[u8], server: &Server) -> std::io::Result<(u16, &'static str, String)> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return Ok((405, "text/plain", "only GET\n".to_owned()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let json = query.split('&').any(|q| q == "format=json");
    let state = &server.state;
    Ok(match path {
        "/health/live" => (200, "text/plain", "live\n".to_owned()),
        "/status/log" => (200, "text/plain", crate::telemetry::recent_problems()),
        "/status/queue" => match queue_report(server).await? {
            Ok(report) => (200, "text/plain", report),
            Err(e) => (503, "text/plain", format!("cannot read the queue: {e}\n")),
        },
        "/metrics" | "/health/ready" | "/status.json" => {
            let s = state.clone();
            let mut snapshot = tokio::task::spawn_blocking(move || s.snapshot())
                .await
                .map_err(std::io::Error::other)?;
            match path {
                "/metrics" => {
                    snapshot.http_refused = server.refused.rows();
                    (200, "text/plain; version=0.0.4", snapshot.render())
                }
                "/health/ready" => ready(&snapshot.unready(&state.readiness), json),
                _ => {
                    let mut report = Report::of(&state.stats, &snapshot, &state.readiness);
                    report.process.config_file = state.config_file.display().to_string();
                    let body = serde_json::to_string(&report).map_err(std::io::Error::other)?;
                    (200, "application/json", format!("{body}\n"))
                }
            }
        }
        _ => (404, "text/plain", "not found\n".to_owned()),
    })
}

/// The `/status/queue` report (what `kedge queue stats` prints), read from the queue at most
/// every [`QUEUE_REPORT_MAX_AGE`], with its age appended. The reading only reads.
async fn queue_report(server: &Server) -> std::io::Result<Result<String, QueueError>> {
    let mut cached = server.queue_report.lock().await;
    let fresh = cached
        .as_ref()
        .is_some_and(|(at, _)| at.elapsed() < QUEUE_REPORT_MAX_AGE);
    if !fresh {
        let q = server.state.queue.clone();
        match tokio::task::spawn_blocking(move || tools::stats(&q))
            .await
            .map_err(std::io::Error::other)?
        {
            Ok(report) => *cached = Some((Instant::now(), report)),
            // Not cached: the next request tries again.
            Err(e) => return Ok(Err(e)),
        }
    }
    let (at, report) = cached.as_ref().expect("a report was just made");
    Ok(Ok(format!(
        "{report}report age       {} s (the queue is read at most every {} s)\n",
        at.elapsed().as_secs(),
        QUEUE_REPORT_MAX_AGE.as_secs()
    )))
}

/// Status, content type and body of `/health/ready` for `reasons`.
fn ready(reasons: &[String], json: bool) -> (u16, &'static str, String) {
    let status = if reasons.is_empty() { 200 } else { 503 };
    if json {
        let body = serde_json::json!({ "ready": reasons.is_empty(), "reasons": reasons });
        return (status, "application/json", format!("{body}\n"));
    }
    (status, "text/plain", Snapshot::ready_text(reasons))
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    kind: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// A blocking `GET http://{addr}{path}` for `kedge status` and tests: (status, body).
pub fn get(
    addr: std::net::SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP response head"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status"))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::SocketAddr;

    use kedge_plugin_host::stats::PluginStats;

    /// The listener on a free loopback port over a fresh queue in `dir`, with `plugins` plugins'
    /// counters (each adds some 1.6 KiB to `/metrics`).
    async fn serving(
        dir: &std::path::Path,
        plugins: usize,
    ) -> (SocketAddr, Arc<OpsState>, tokio::task::JoinHandle<()>) {
        let queue = Queue::open(dir, 1 << 20, kedge_queue::Sync::Relaxed, "dev").unwrap();
        let state = Arc::new(OpsState {
            stats: Arc::new(Stats::default()),
            queue: Arc::new(queue),
            queue_max_bytes: AtomicU64::new(u64::MAX),
            readiness: Readiness {
                max_pending_age: 60.0,
                max_queue_percent: 90,
            },
            plugins: std::sync::Mutex::new(
                (0..plugins)
                    .map(|i| Arc::new(PluginStats::new(&format!("plugin-{i}"))))
                    .collect(),
            ),
            source: "mqtt".into(),
            config_file: "/etc/kedge/kedge.toml".into(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, state.clone(), tokio::spawn(serve(listener, state)))
    }

    /// A blocking client's work, off the runtime's workers.
    async fn client<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_beyond_the_cap_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, _, server) = serving(dir.path(), 0).await;
        let late = client(move || {
            let idle: Vec<std::net::TcpStream> = (0..100)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            let mut late = std::net::TcpStream::connect(addr).unwrap();
            late.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut text = String::new();
            let answer = late.read_to_string(&mut text).map(|_| text);
            drop(idle);
            answer
        })
        .await;
        let text = late.expect("an answer within 2 s, without a request");
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        // The idle ones within the cap see their end of file, are answered 400 and free their slots.
        let metrics = client(move || {
            let deadline = Instant::now() + READ_TIMEOUT;
            loop {
                match get(addr, "/metrics", Duration::from_secs(5)) {
                    Ok((200, body)) => return body,
                    _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    other => panic!("/metrics: {other:?}"),
                }
            }
        })
        .await;
        let refused = |reason: &str| -> u64 {
            let series = format!("kedge_http_connections_refused_total{{reason=\"{reason}\"}} ");
            let line = metrics.lines().find_map(|l| l.strip_prefix(&series));
            line.unwrap_or_else(|| panic!("no {series}in\n{metrics}"))
                .parse()
                .unwrap()
        };
        // At least: a scrape above may have come before the slots were free.
        assert!(refused("limit") >= 101 - MAX_CONNECTIONS as u64);
        // Each idle one within the cap ends as a bad request (its end of file) or, on a machine
        // slow enough that the head timeout came first, as a slow request.
        assert_eq!(
            refused("bad_request") + refused("slow_request"),
            MAX_CONNECTIONS as u64
        );
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_does_not_read_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        // Some 6.5 MiB of /metrics: more than the socket buffers of both ends take (the
        // sender's grows to 4 MiB at most; the client's is pinned small).
        let (addr, _, server) = serving(dir.path(), 4000).await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let s = socket.connect(addr).await.unwrap().into_std().unwrap();
        s.set_nonblocking(false).unwrap();
        let (head, body) = client(move || {
            let mut s = s;
            s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
            // Stall only once the answer is being written: rendering it may take seconds on a
            // slow machine (under qemu, beside a build), and that is no stall of the writer.
            let mut text = Vec::new();
            let mut chunk = [0u8; 512];
            while !text.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "the server closed before its head");
                text.extend_from_slice(&chunk[..n]);
            }
            std::thread::sleep(WRITE_TIMEOUT + Duration::from_secs(2));
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // An error (a reset) is a cut too; what arrived before it is in `text`.
            let _ = s.read_to_end(&mut text);
            let at = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            let head = String::from_utf8_lossy(&text[..at]).into_owned();
            (head, text.len() - at - 4)
        })
        .await;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(length > 5 << 20, "{length}");
        assert!(
            body < length,
            "all {length} bytes came after the client stalled"
        );
        let (_, metrics) = client(move || get(addr, "/metrics", Duration::from_secs(5)))
            .await
            .unwrap();
        assert!(
            metrics.contains("\nkedge_http_connections_refused_total{reason=\"slow_reader\"} 1\n"),
            "no slow reader counted"
        );
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_queue_is_served_from_a_snapshot_not_a_scan_per_request() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, state, server) = serving(dir.path(), 0).await;
        let ask = move || client(move || get(addr, "/status/queue", Duration::from_secs(5)));
        let (status, first) = ask().await.unwrap();
        assert_eq!(status, 200, "{first}");
        assert!(first.contains(" 0 records not yet sealed"), "{first}");
        let record = kedge_wire::record::Record {
            topic: "t".into(),
            key: None,
            value: bytes::Bytes::from_static(b"v"),
            headers: vec![],
            timestamp_ms: 1,
        };
        state.queue.append(0, &[record]).unwrap();
        let (_, second) = ask().await.unwrap();
        assert!(second.contains(" 0 records not yet sealed"), "{second}");
        assert!(second.contains("\nreport age       "), "{second}");
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn status_json_is_a_report() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, state, server) = serving(dir.path(), 1).await;
        crate::telemetry::add(&state.stats.delivery.delivered, 3);
        let (status, body) = client(move || get(addr, "/status.json", Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let report: Report = serde_json::from_str(&body).unwrap();
        assert_eq!(report.records.delivered, 3);
        assert_eq!(report.queue.journal_records, Some(0));
        assert_eq!(report.plugins[0].name, "plugin-0");
        assert_eq!(report.unready, Vec::<String>::new());
        server.abort();
    }

    #[test]
    fn ready_answers_in_text_and_json() {
        assert_eq!(ready(&[], false), (200, "text/plain", "ready\n".to_owned()));
        let reasons = ["a".to_owned(), "b".to_owned()];
        assert_eq!(
            ready(&reasons, false),
            (503, "text/plain", "a\nb\n".to_owned())
        );
        let (status, kind, body) = ready(&reasons, true);
        assert_eq!((status, kind), (503, "application/json"));
        assert_eq!(body, "{\"ready\":false,\"reasons\":[\"a\",\"b\"]}\n");
    }
}
