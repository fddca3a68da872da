//! Counters of what went through the pipeline, and log setup.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Pipeline counters; every stage adds to its own.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events received from sources.
    pub received: AtomicU64,
    /// Events acknowledged to their source after the journal made them durable.
    pub source_acked: AtomicU64,
    /// Records committed to the journal.
    pub journaled: AtomicU64,
    /// Records routed to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Records dropped because not even the dead-letter topic accepts them.
    pub dropped: AtomicU64,
    /// Journal commits (one write, one flush, one fdatasync each).
    pub commits: AtomicU64,
    /// Records sealed into Kafka batches.
    pub sealed: AtomicU64,
    /// Records Kafka acknowledged.
    pub delivered: AtomicU64,
    /// Batches Kafka acknowledged.
    pub batches_delivered: AtomicU64,
    /// Batches Kafka reported as already written (a resend it deduplicated).
    pub duplicates_detected: AtomicU64,
    /// Batches sent again after an error or a lost response.
    pub retries: AtomicU64,
    /// Whether the MQTT session is up (for the metrics endpoint).
    pub mqtt_connected: AtomicBool,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "received={} acked_to_source={} journaled={} dead_lettered={} dropped={} commits={} \
             sealed={} delivered={} batches_delivered={} duplicates_detected={} retries={}",
            g(&self.received),
            g(&self.source_acked),
            g(&self.journaled),
            g(&self.dead_lettered),
            g(&self.dropped),
            g(&self.commits),
            g(&self.sealed),
            g(&self.delivered),
            g(&self.batches_delivered),
            g(&self.duplicates_detected),
            g(&self.retries),
        )
    }
}

/// Installs the log subscriber: human-readable on a terminal, JSON otherwise (or as configured).
pub fn init_logging(log: &crate::config::LogConfig) -> Result<(), String> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&log.level).map_err(|e| format!("log.level: {e}"))?;
    let json = match log.format {
        crate::config::LogFormat::Json => true,
        crate::config::LogFormat::Text => false,
        crate::config::LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    result.map_err(|e| e.to_string())
}
