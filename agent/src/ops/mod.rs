//! The operations listener: `/metrics` (Prometheus text), `/health/live`, `/health/ready`, and
//! `/status/queue` and `/status/log` for `kedge status`, over a minimal HTTP/1.1 server (GET
//! only, one request per connection), so that no web framework lands on an edge device for a
//! handful of endpoints.

pub mod exposition;
pub mod fd_limit;
pub mod sd_notify;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::queue::{Queue, budget, tools};
use crate::telemetry::Stats;
use exposition::{Readiness, Snapshot};

/// Longest request head read; scrapers send a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// A client that sends no complete request head within this is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoints read from.
pub struct OpsState {
    /// Pipeline counters.
    pub stats: Arc<Stats>,
    /// The open queue.
    pub queue: Arc<Queue>,
    /// The queue's byte budget.
    pub queue_max_bytes: u64,
    /// Readiness limits.
    pub readiness: Readiness,
    /// Every plugin's counters.
    pub plugins: Vec<Arc<crate::transform::stats::PluginStats>>,
    /// The `source` label of the source's counters (the MQTT connection's name).
    pub source: String,
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
        let last_ack = self.stats.kafka.last_ack_ms.load(Ordering::Relaxed);
        Snapshot {
            families: Snapshot::families_of(&self.stats, &self.source),
            histograms: Snapshot::histograms_of(&self.stats),
            queue_live_bytes: self.queue.live_bytes(),
            queue_max_bytes: self.queue_max_bytes,
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
            mqtt_connected: self.stats.mqtt_connected.load(Ordering::Relaxed),
            resident_bytes: exposition::resident_bytes(),
            open_fds: exposition::open_fds(),
            plugins: self.plugins.iter().map(|p| p.snapshot()).collect(),
        }
    }
}

/// Serves the endpoints until the task is aborted.
pub async fn serve(listener: TcpListener, state: Arc<OpsState>) {
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
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, state).await {
                tracing::debug!(error = %e, "metrics request failed");
            }
        });
    }
}

async fn handle(mut stream: TcpStream, state: Arc<OpsState>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return respond(&mut stream, 400, "text/plain", "bad request\n").await;
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let json = query.split('&').any(|q| q == "format=json");
    let (status, kind, body) = match path {
        "/health/live" => (200, "text/plain", "live\n".to_owned()),
        "/status/log" => (200, "text/plain", crate::telemetry::recent_problems()),
        "/status/queue" => {
            // A full scan of the queue (what `kedge queue stats` prints): for people, not scrapers.
            let q = state.queue.clone();
            match tokio::task::spawn_blocking(move || tools::stats(&q))
                .await
                .map_err(std::io::Error::other)?
            {
                Ok(report) => (200, "text/plain", report),
                Err(e) => (503, "text/plain", format!("cannot read the queue: {e}\n")),
            }
        }
        "/metrics" | "/health/ready" => {
            let s = state.clone();
            let snapshot = tokio::task::spawn_blocking(move || s.snapshot())
                .await
                .map_err(std::io::Error::other)?;
            if path == "/metrics" {
                (200, "text/plain; version=0.0.4", snapshot.render())
            } else {
                ready(&snapshot.unready(&state.readiness), json)
            }
        }
        _ => (404, "text/plain", "not found\n".to_owned()),
    };
    respond(&mut stream, status, kind, &body).await
}

/// Status, content type and body of `/health/ready` for `reasons`.
fn ready(reasons: &[String], json: bool) -> (u16, &'static str, String) {
    let status = if reasons.is_empty() { 200 } else { 503 };
    if json {
        let body = serde_json::json!({ "ready": reasons.is_empty(), "reasons": reasons });
        return (status, "application/json", format!("{body}\n"));
    }
    let body = if reasons.is_empty() {
        "ready\n".to_owned()
    } else {
        reasons.iter().map(|r| format!("{r}\n")).collect()
    };
    (status, "text/plain", body)
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
