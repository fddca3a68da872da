//! `kedge status` for a running agent: a human summary of its `/metrics` and `/health/ready`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

/// The unlabelled samples of a Prometheus text exposition, by name.
pub fn samples(text: &str) -> HashMap<&str, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name, value.trim().parse().ok()?))
        })
        .collect()
}

/// The summary of a running agent from its scrape and readiness answer.
pub fn running(addr: SocketAddr, metrics: &str, ready: &str) -> String {
    let m = samples(metrics);
    let g = |name: &str| m.get(name).copied().unwrap_or(0.0);
    let mut o = String::new();
    let _ = writeln!(o, "kedge is running (metrics at http://{addr}/metrics)");
    let _ = writeln!(
        o,
        "records          received {} journaled {} delivered {} dead-lettered {} dropped {}",
        g("kedge_records_received_total"),
        g("kedge_records_journaled_total"),
        g("kedge_records_delivered_total"),
        g("kedge_records_dead_lettered_total"),
        g("kedge_records_dropped_total"),
    );
    let _ = writeln!(
        o,
        "batches          delivered {} retried {} duplicates {}",
        g("kedge_batches_delivered_total"),
        g("kedge_batch_retries_total"),
        g("kedge_batches_duplicate_total"),
    );
    let budget = m
        .get("kedge_queue_max_bytes")
        .map_or_else(|| "no limit".to_owned(), |b| format!("{b} B budget"));
    let _ = writeln!(
        o,
        "queue            {} B pending ({budget}), oldest {}s",
        g("kedge_queue_live_bytes"),
        g("kedge_queue_oldest_pending_age_seconds"),
    );
    let _ = writeln!(
        o,
        "mqtt             {}",
        if g("kedge_mqtt_connected") == 1.0 {
            "connected"
        } else {
            "disconnected"
        }
    );
    let _ = writeln!(
        o,
        "memory           {:.1} MiB resident",
        g("kedge_process_resident_memory_bytes") / 1048576.0
    );
    for (i, line) in ready.lines().enumerate() {
        let _ = writeln!(
            o,
            "{}{line}",
            if i == 0 {
                "ready            "
            } else {
                "                 "
            }
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_a_scrape() {
        let metrics = "# HELP x y\n# TYPE x counter\nkedge_records_delivered_total 7\n\
                       kedge_mqtt_connected 1\n";
        let s = running(([127, 0, 0, 1], 9464).into(), metrics, "a\nb\n");
        assert!(s.contains("delivered 7 dead-lettered 0"), "{s}");
        assert!(s.contains("mqtt             connected"), "{s}");
        assert!(
            s.contains("ready            a\n                 b\n"),
            "{s}"
        );
        assert!(s.contains("no limit"), "{s}");
    }
}
