//! Config reload (SIGHUP, `kedge reload`): which changes a running agent takes, decided from the
//! old and the new config, and what became of the last attempt.
//!
//! The MQTT source, the queue and the metrics listener stay as they are: the MQTT session is
//! never dropped by a reload, so their settings need a restart. Everything between them is
//! rebuilt: the plugins (re-read from disk even when the config names the same files), the
//! routing and the commit limits, which the commit stage takes between two commits; and, when
//! `[kafka]` or the dead-letter topic changed or `[kafka]` reads TLS material or a password from
//! files, the producer, which hands the queue over to a new one (ARCHITECTURE.md §11).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;

/// What a reload changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Whether the producer must be replaced: its settings changed, or the TLS material and
    /// secrets it reads from files must be read again.
    pub restart_delivery: bool,
    /// The config sections that changed, for the log (empty: the plugins are re-read all the
    /// same).
    pub changed: Vec<&'static str>,
}

/// A reload that was refused: the old config keeps running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The new file is not a valid config.
    #[error("{0}")]
    Invalid(String),
    /// It changes settings a running agent cannot take.
    #[error(
        "{} cannot change while kedge runs: restart kedge to apply them",
        .0.join(", ")
    )]
    NeedsRestart(Vec<&'static str>),
    /// A plugin, a secret or TLS material it names cannot be loaded.
    #[error("{0}")]
    CannotLoad(String),
}

/// Decides what reloading `new` over `old` changes, or why it cannot be done without a restart.
pub fn plan(old: &Config, new: &Config) -> Result<Plan, Refused> {
    let fixed = [
        ("agent", old.agent != new.agent),
        ("mqtt", old.mqtt != new.mqtt),
        ("log", old.log != new.log),
        ("metrics", old.metrics != new.metrics),
        ("queue.dir", old.queue.dir != new.queue.dir),
        ("queue.cache", old.queue.cache != new.queue.cache),
        (
            "queue.durability",
            old.queue.durability != new.queue.durability,
        ),
    ];
    let needs_restart: Vec<_> = fixed.iter().filter(|(_, c)| *c).map(|(k, _)| *k).collect();
    if !needs_restart.is_empty() {
        return Err(Refused::NeedsRestart(needs_restart));
    }
    let q = (&old.queue, &new.queue);
    let limits = q.0.commit_window != q.1.commit_window
        || q.0.commit_max_records != q.1.commit_max_records
        || q.0.commit_max_bytes != q.1.commit_max_bytes
        || q.0.max_bytes != q.1.max_bytes
        || q.0.min_free != q.1.min_free
        || q.0.when_full != q.1.when_full;
    let changes = [
        ("routing", old.routing != new.routing),
        ("plugin", old.plugins != new.plugins),
        ("queue limits", limits),
        ("kafka", old.kafka != new.kafka),
    ];
    Ok(Plan {
        // The files [kafka.tls] and [kafka.sasl] name may have changed without the config (a
        // certificate or password rotated): read them again.
        restart_delivery: old.kafka != new.kafka
            || old.routing.dead_letter_topic != new.routing.dead_letter_topic
            || new.kafka.tls.is_some()
            || new.kafka.sasl.is_some(),
        changed: changes
            .iter()
            .filter(|(_, c)| *c)
            .map(|(k, _)| *k)
            .collect(),
    })
}

/// A config read on SIGHUP, numbered in the order the file was read (from 1), so that a
/// verdict can be matched to the reads it answers. `Err` when the file could not be read.
#[derive(Debug)]
pub struct ReloadRequest {
    /// The number of this read: [`ReloadStats::read`] after it began.
    pub number: u64,
    /// The config read.
    pub config: Result<Config, String>,
}

/// Reloads so far, and the last verdict.
///
/// `kedge reload` notes [`read`](Self::read) before it signals, and waits until the last
/// verdict's read number passes it: that read began after it asked, so the verdict is on the
/// file as it was when asked, or as changed since; never on an earlier reload that was still
/// running.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Reloads applied.
    pub applied: AtomicU64,
    /// Reloads refused.
    pub refused: AtomicU64,
    /// Times the file was read on SIGHUP (counted before each read).
    pub read: AtomicU64,
    /// The last verdict: its read number and its refusal are one value, so that no report can
    /// pair one verdict's number with another's refusal.
    last: Mutex<LastVerdict>,
}

/// The last reload's verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastVerdict {
    /// The number of the read it was on (0 before the first verdict).
    pub read: u64,
    /// Why it was refused; `None` when it was applied (or before the first).
    pub refusal: Option<String>,
}

impl ReloadStats {
    /// Numbers a read of the config file that is about to begin.
    pub fn begin_read(&self) -> u64 {
        self.read.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Records that read `number` was applied: a refusal before it no longer stands.
    pub fn applied(&self, number: u64) {
        self.applied.fetch_add(1, Ordering::Relaxed);
        self.record(number, None);
    }

    /// Records that read `number` was refused, and why.
    pub fn refused(&self, number: u64, why: &Refused) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.record(number, Some(why.to_string()));
    }

    fn record(&self, read: u64, refusal: Option<String>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = LastVerdict { read, refusal };
    }

    /// The last verdict, read at one moment.
    pub fn last(&self) -> LastVerdict {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[agent]
device_id = "d1"
data_dir = "/var/lib/kedge"
[mqtt]
host = "127.0.0.1"
subscriptions = [{ filter = "sensors/#", qos = 1 }]
[routing]
default_topic = "readings"
[kafka]
bootstrap = ["127.0.0.1:9092"]
"#;

    fn config(extra: &str) -> Config {
        Config::parse(
            &format!("{BASE}{extra}"),
            Path::new("/etc/kedge/kedge.toml"),
        )
        .expect("valid config")
    }

    fn with(replace: &str, by: &str) -> Config {
        let text = BASE.replace(replace, by);
        assert_ne!(text, BASE, "{replace} is in the base config");
        Config::parse(&text, Path::new("/etc/kedge/kedge.toml")).expect("valid config")
    }

    #[test]
    fn the_same_config_changes_nothing_but_still_reloads_the_plugins() {
        let plan = plan(&config(""), &config("")).unwrap();
        assert_eq!(
            plan,
            Plan {
                restart_delivery: false,
                changed: vec![]
            }
        );
    }

    #[test]
    fn routing_plugins_and_limits_are_taken_without_a_new_producer() {
        let old = config("");
        let new = with(
            "default_topic = \"readings\"",
            "default_topic = \"other\"\n[[routing.rules]]\nfilter = \"sensors/lab/#\"\ntopic = \"lab\"",
        );
        assert_eq!(plan(&old, &new).unwrap().changed, vec!["routing"]);
        assert!(!plan(&old, &new).unwrap().restart_delivery);
        let new = config("[queue]\ncommit_window = \"20ms\"\nwhen_full = \"drop-oldest\"\n");
        let p = plan(&old, &new).unwrap();
        assert_eq!(
            (p.changed, p.restart_delivery),
            (vec!["queue limits"], false)
        );
    }

    #[test]
    fn kafka_settings_and_the_dead_letter_topic_replace_the_producer() {
        let old = config("");
        let new = with(
            "bootstrap = [\"127.0.0.1:9092\"]",
            "bootstrap = [\"127.0.0.1:9092\"]\ncompression = \"lz4\"",
        );
        let p = plan(&old, &new).unwrap();
        assert_eq!((p.changed, p.restart_delivery), (vec!["kafka"], true));
        let new = with(
            "default_topic = \"readings\"",
            "default_topic = \"readings\"\ndead_letter_topic = \"kedge-dlq\"",
        );
        let p = plan(&old, &new).unwrap();
        assert_eq!((p.changed, p.restart_delivery), (vec!["routing"], true));
    }

    #[test]
    fn kafka_tls_or_sasl_replaces_the_producer_at_every_reload_to_read_their_files_again() {
        let tls = config("[kafka.tls]\nca_file = \"/etc/kedge/ca.pem\"\n");
        let p = plan(&tls, &tls).unwrap();
        assert_eq!((p.changed, p.restart_delivery), (vec![], true));
        let sasl = config(
            "[kafka.sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"u\"\npassword = { file = \"/etc/kedge/p\" }\n",
        );
        assert!(plan(&sasl, &sasl).unwrap().restart_delivery);
    }

    #[test]
    fn what_the_running_source_and_queue_hold_needs_a_restart() {
        let old = config("");
        let cases = [
            (
                with("host = \"127.0.0.1\"", "host = \"127.0.0.2\""),
                vec!["mqtt"],
            ),
            (
                with("device_id = \"d1\"", "device_id = \"d2\""),
                vec!["agent"],
            ),
            (
                config("[queue]\ndurability = \"relaxed\"\n"),
                vec!["queue.durability"],
            ),
            (
                config("[metrics]\nlisten = \"127.0.0.1:9100\"\n[log]\nlevel = \"debug\"\n"),
                vec!["log", "metrics"],
            ),
        ];
        for (new, keys) in cases {
            assert_eq!(plan(&old, &new), Err(Refused::NeedsRestart(keys)));
        }
        let refused = Refused::NeedsRestart(vec!["mqtt", "agent"]);
        assert_eq!(
            refused.to_string(),
            "mqtt, agent cannot change while kedge runs: restart kedge to apply them"
        );
    }

    #[test]
    fn a_refusal_stands_until_a_reload_is_applied() {
        let stats = ReloadStats::default();
        assert_eq!(stats.last(), LastVerdict::default());
        let first = stats.begin_read();
        stats.refused(first, &Refused::Invalid("bad".into()));
        assert_eq!(stats.last().refusal.as_deref(), Some("bad"));
        let second = stats.begin_read();
        stats.applied(second);
        assert_eq!(stats.last().refusal, None);
        assert_eq!(stats.applied.load(Ordering::Relaxed), 1);
        assert_eq!(stats.refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn reads_are_numbered_and_verdicts_say_which_read_they_answer() {
        let stats = ReloadStats::default();
        let (first, second) = (stats.begin_read(), stats.begin_read());
        assert_eq!((first, second), (1, 2));
        // A client that noted 2 reads waits for a verdict on a later one; these are not it.
        stats.applied(first);
        assert_eq!(
            stats.last(),
            LastVerdict {
                read: 1,
                refusal: None
            }
        );
        stats.refused(second, &Refused::Invalid("bad".into()));
        assert_eq!(
            stats.last(),
            LastVerdict {
                read: 2,
                refusal: Some("bad".into())
            }
        );
        assert_eq!(stats.read.load(Ordering::SeqCst), 2);
    }
}
