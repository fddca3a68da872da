//! The pipeline, wired as ARCHITECTURE.md §2 reads: source → router → journal (group commit) → ack to
//! the source; dispatcher → outbox → producer → Kafka.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::Keyword;
use crate::config::{self, Config};
use crate::delivery::{Committed, DeliveryStats, Drain, Producer, ProducerSettings};
use crate::dispatcher::{Dispatcher, SealSettings};
use crate::ingest::{self, CommitSettings, Stages};
use crate::ops::exposition::Readiness;
use crate::ops::{self, OpsState, sd_notify};
use crate::reload::{self, Refused, ReloadRequest};
use crate::route::{Router, Rule};
use crate::source::mqtt::{self, MqttSettings};
use crate::telemetry::Stats;
use kedge_queue::Queue;
use kedge_queue::budget::{self, Budget};
use kedge_wire::client::{Cluster, ClusterSettings};
use kedge_wire::connection::TlsSettings;
use kedge_wire::partitioner::StickyPartitioner;
use kedge_wire::sasl::{self, Mechanism, SaslSettings};

/// Sealed, unacknowledged batches per partition: the broker deduplicates only the last 5.
const WINDOW: usize = 5;

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A secret could not be read.
    #[error("mqtt.password: {0}")]
    Secret(String),
    /// TLS material could not be loaded.
    #[error("mqtt.tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Kafka's TLS material could not be loaded.
    #[error("kafka.tls: {0}")]
    KafkaTls(crate::tls::TlsError),
    /// Kafka's SASL password could not be read or is unusable.
    #[error("kafka.sasl.password: {0}")]
    KafkaSasl(String),
    /// The metrics listener could not be bound.
    #[error("metrics.listen: cannot listen on {addr}: {source}")]
    MetricsListen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The queue could not be opened.
    #[error(transparent)]
    Queue(#[from] kedge_queue::QueueError),
    /// A plugin could not be loaded.
    #[error(transparent)]
    Plugins(#[from] kedge_plugin_host::load::TransformError),
    /// The queue's database failed an I/O and must be reopened: run the pipeline again,
    /// passing `unacked_from` on.
    #[error("the queue database failed an I/O (disk full?) and must be reopened")]
    QueuePoisoned {
        /// First kedge-seq that was never acknowledged to the source.
        unacked_from: Option<u64>,
    },
}

/// Where compiled plugins are cached: `{agent.data_dir}/plugin-cache`.
pub fn plugin_cache_dir(config: &Config) -> std::path::PathBuf {
    config.agent.data_dir.join("plugin-cache")
}

/// Compiles the plugin components among `plugins` into `cache` in a child process
/// (`kedge plugin fill-cache`), so that the daemon then loads compiled code from the cache: the
/// compiler's heap and code pages, about 15 MiB resident once it has run (bench/README.md,
/// "Memory at 10,000 records/s"), stay in the child, which exits. If the child cannot do it
/// (no compiler in this build, a plugin that does not compile), the daemon's own load compiles
/// or reports the error as it would have without the child.
pub fn compile_apart(plugins: &[kedge_plugin_host::config::PluginConfig], cache: &std::path::Path) {
    if !cfg!(feature = "compiler") || plugins.is_empty() {
        return;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            tracing::debug!(error = %e, "cannot find kedge's own binary; plugins compile in this process");
            return;
        }
    };
    let mut command = std::process::Command::new(exe);
    command.args(["plugin", "fill-cache", "--cache"]).arg(cache);
    for p in plugins {
        command.arg(&p.name).arg(&p.path);
    }
    let started = std::time::Instant::now();
    match command.stdin(std::process::Stdio::null()).output() {
        Ok(out) if out.status.success() => {
            tracing::debug!(took = ?started.elapsed(), "plugins compiled into the cache by a child process");
        }
        Ok(out) => tracing::warn!(
            status = %out.status,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "the child process could not compile the plugins; they compile in this process"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a child process to compile the plugins; they compile in this process")
        }
    }
}

/// Runs the agent until `shutdown` resolves, then stops cleanly within the configured timeout.
/// `unacked_from` comes from a [`PipelineError::QueuePoisoned`] of the previous run: journal
/// chunks from there on were never acknowledged and are discarded, since the source redelivers.
///
/// Each config in `reloads` (read by the caller on SIGHUP; `Err` when it could not be read) is
/// applied while the source and the queue keep running ([`crate::reload`]), or refused with
/// the reason logged and kept in `stats.reload`. `config` becomes each config applied, so that a
/// queue reopen runs the newest.
pub async fn run(
    config: &mut Config,
    config_file: &std::path::Path,
    shutdown: impl std::future::Future<Output = ()>,
    reloads: &mut mpsc::Receiver<ReloadRequest>,
    stats: Arc<Stats>,
    unacked_from: Option<u64>,
) -> Result<(), PipelineError> {
    let mqtt = mqtt_settings(config)?;
    // Before the queue opens: a plugin that cannot start is a config error, reported at once.
    let plugins = tokio::task::block_in_place(|| {
        compile_apart(&config.plugins, &plugin_cache_dir(config));
        kedge_plugin_host::load::load(
            &config.plugins,
            Some(&plugin_cache_dir(config)),
            &config.mqtt.name,
            &config.routing.dead_letter_topic,
            false,
        )
    })?;
    let dir = config.queue.effective_dir(&config.agent);
    let sync = config.queue.durability;
    let queue = Arc::new(tokio::task::block_in_place(|| {
        Queue::open(
            &dir,
            config.queue.cache.bytes(),
            sync,
            &config.agent.device_id,
        )
    })?);
    tracing::info!(queue = %dir.display(), device = %config.agent.device_id, "queue open");
    report_damage(&queue);
    if let Some(from) = unacked_from {
        tokio::task::block_in_place(|| queue.discard_unacknowledged(from))?;
    }
    let budget = disk_budget(&config.queue, &queue);

    let (events_tx, events_rx) = mpsc::channel(usize::from(config.mqtt.receive_maximum) + 256);
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    let (committed_tx, committed_rx) = watch::channel(Committed::none());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(Drain::Run);

    let router = router(config);
    let commit_settings = commit_settings(config, budget);
    let producer = producer(config, queue.clone(), stats.delivery.clone())?;

    // Bound last before the tasks start: an earlier failure must not leave it serving.
    let (ops, ops_state) = match config.metrics.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| PipelineError::MetricsListen { addr, source })?;
            tracing::info!(%addr, "metrics and health listener");
            let state = Arc::new(OpsState {
                stats: stats.clone(),
                queue: queue.clone(),
                queue_max_bytes: AtomicU64::new(budget.max_bytes),
                readiness: Readiness {
                    max_pending_age: config.metrics.ready_max_pending_age.as_secs_f64(),
                    max_queue_percent: config.metrics.ready_max_queue_percent,
                },
                plugins: std::sync::Mutex::new(plugins.chain.stats()),
                source: config.mqtt.name.clone(),
                config_file: config_file.to_owned(),
            });
            (
                Some(tokio::spawn(ops::serve(listener, state.clone()))),
                Some(state),
            )
        }
        None => (None, None),
    };

    let window = queue.set_receipt_window(mqtt.receipt_window());
    let inbound = tokio::task::block_in_place(|| queue.inbound())?;
    let source = tokio::spawn(mqtt::run(
        mqtt,
        inbound,
        window,
        events_tx,
        acks_rx,
        stop_rx.clone(),
        stats.source.clone(),
    ));
    let (reconfigure_tx, reconfigure_rx) = mpsc::channel(1);
    let mut committer = tokio::spawn(ingest::run(
        queue.clone(),
        Stages {
            chain: plugins.chain,
            router,
            _ticker: plugins.ticker,
        },
        commit_settings,
        ingest::Links {
            rx: events_rx,
            acks: acks_tx,
            committed: committed_tx,
            stop: stop_rx,
            reconfigure: reconfigure_rx,
        },
        stats.ingest.clone(),
    ));
    let mut budget = budget;
    let mut delivery = Delivery {
        task: Some(tokio::spawn(producer.run(committed_rx.clone(), drain_rx))),
        drain: drain_tx,
        journal: committed_rx,
    };

    sd_notify::notify("READY=1");
    let watchdog = sd_notify::watchdog_interval().map(|every| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                sd_notify::notify("WATCHDOG=1");
            }
        })
    });

    let reporter_stats = stats.clone();
    let reporter = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            tracing::info!(stats = %reporter_stats.summary(), "pipeline");
        }
    });

    // The committer ends early only when the queue needs a reopen (sled poisons itself on an
    // I/O error such as ENOSPC): then stop everything, so the caller can open it again.
    tokio::pin!(shutdown);
    let poisoned = loop {
        tokio::select! {
            _ = &mut shutdown => break None,
            end = &mut committer => break match end {
                Ok(ingest::CommitEnd::QueuePoisoned { unacked_from }) => Some(unacked_from),
                // A committer that ended otherwise (a panic) left nothing durable half-done.
                Ok(ingest::CommitEnd::Drained | ingest::CommitEnd::Abandoned) | Err(_) => {
                    Some(None)
                }
            },
            Some(new) = reloads.recv() => {
                let number = new.number;
                let running = Running {
                    queue: &queue,
                    stats: &stats,
                    ops: ops_state.as_deref(),
                    reconfigure: &reconfigure_tx,
                };
                // A stop wins over a reload in progress (a plugin compiling, a producer handing
                // over): what the reload had not done yet is abandoned, what it had is kept.
                let outcome = tokio::select! {
                    biased;
                    _ = &mut shutdown => None,
                    r = reload(config, new, &running, &mut delivery, &mut budget) => Some(r),
                };
                match outcome {
                    None => {
                        tracing::warn!("stopping during a config reload; the reload is abandoned");
                        break None;
                    }
                    Some(Ok(())) => stats.reload.applied(number),
                    Some(Err(Reload::Refused(why))) => {
                        tracing::error!(reason = %why, reload = number, "config reload refused; kedge runs the config it had");
                        stats.reload.refused(number, &why);
                    }
                    Some(Err(Reload::NoProducer(e))) => {
                        tracing::error!(error = %e, reload = number, "no producer could start after a reload; reopening the queue with the config it had");
                        stats.reload.refused(number, &Refused::CannotLoad(e.to_string()));
                        // The committer may have ended meanwhile on a queue I/O error of its
                        // own: what it says must not be lost.
                        let unacked_from = if committer.is_finished() {
                            match (&mut committer).await {
                                Ok(ingest::CommitEnd::QueuePoisoned { unacked_from }) => unacked_from,
                                _ => None,
                            }
                        } else {
                            None
                        };
                        break Some(unacked_from);
                    }
                }
            }
        }
    };
    // Nothing more can be committed to a poisoned queue: stop quickly and reopen.
    let grace = if poisoned.is_some() {
        Duration::from_secs(1)
    } else {
        config.agent.shutdown_timeout
    };
    let deadline = kedge_base::deadline::after(grace);
    tracing::info!(timeout = ?grace, "shutting down: committing and acknowledging what was received");
    // A reopen after a queue I/O error is no stop: systemd hears READY=1 again after it.
    if poisoned.is_none() {
        sd_notify::notify("STOPPING=1");
    }
    let _ = stop_tx.send(true);
    // The committer ends once the source has stopped forwarding and everything received is
    // durable; the source then releases the acks and disconnects.
    if poisoned.is_none()
        && tokio::time::timeout_at(deadline, &mut committer)
            .await
            .is_err()
    {
        tracing::warn!("journal commit did not finish before the shutdown deadline");
    }
    // A source still connected past the deadline is cut off: a kedge started next (or this
    // pipeline reopened) must not find its session held by this connection.
    let mut source = source;
    if tokio::time::timeout_at(deadline, &mut source)
        .await
        .is_err()
    {
        tracing::warn!(
            "the MQTT source did not stop before the shutdown deadline; dropping its connection"
        );
        source.abort();
        let _ = source.await;
    }
    let _ = delivery.drain.send(Drain::Deliver(deadline));
    // None after a reload that stopped the producer and could not start another.
    let delivery_stopped = match delivery.task.as_mut() {
        Some(task) => tokio::time::timeout_at(
            kedge_base::deadline::later(deadline, Duration::from_secs(1)),
            task,
        )
        .await
        .is_ok(),
        None => true,
    };
    if !delivery_stopped {
        tracing::warn!("delivery did not stop before the shutdown deadline");
    }
    reporter.abort();
    // The next run (after a queue reopen) binds the listener again.
    for task in ops.iter().chain(&watchdog) {
        task.abort();
    }
    if let Some(unacked_from) = poisoned {
        // Every task must let go of the queue before it can be reopened: sled locks its file.
        if !delivery_stopped && let Some(task) = delivery.task.take() {
            task.abort();
            let _ = task.await;
        }
        return Err(PipelineError::QueuePoisoned { unacked_from });
    }
    let flushed = tokio::task::block_in_place(|| queue.sync());
    if let Err(e) = flushed {
        tracing::error!(error = %e, "final queue flush failed");
    }
    tracing::info!(stats = %stats.summary(), "stopped");
    Ok(())
}

/// The running delivery task, how to stop it, and what it listens to.
struct Delivery {
    /// `None` once a reload stopped it and before the next one runs.
    task: Option<tokio::task::JoinHandle<()>>,
    drain: watch::Sender<Drain>,
    journal: watch::Receiver<Committed>,
}

/// What a reload changes in a running pipeline, besides the delivery task.
struct Running<'a> {
    queue: &'a Arc<Queue>,
    stats: &'a Arc<Stats>,
    ops: Option<&'a OpsState>,
    reconfigure: &'a mpsc::Sender<ingest::Reconfigure>,
}

/// Why a reload did not take.
enum Reload {
    /// The old config keeps running.
    Refused(Refused),
    /// The producer was stopped, and no new one could start (it could not read the queue):
    /// the pipeline starts again, with the config it had.
    NoProducer(PipelineError),
}

impl From<Refused> for Reload {
    fn from(r: Refused) -> Self {
        Reload::Refused(r)
    }
}

/// Applies the config `request` holds over `config` ([`crate::reload`]): everything that can
/// fail is done before anything running is touched, so a refusal leaves the old config running
/// as it was.
async fn reload(
    config: &mut Config,
    request: ReloadRequest,
    running: &Running<'_>,
    delivery: &mut Delivery,
    budget: &mut Budget,
) -> Result<(), Reload> {
    let new = request.config.map_err(Refused::Invalid)?;
    let plan = reload::plan(config, &new)?;
    // Off the async workers, and so that a stop need not wait for a compile: dropped, this
    // future leaves the load to finish on its thread and its result unused.
    let (specs, cache, source, dead_letter) = (
        new.plugins.clone(),
        plugin_cache_dir(&new),
        new.mqtt.name.clone(),
        new.routing.dead_letter_topic.clone(),
    );
    let plugins = tokio::task::spawn_blocking(move || {
        compile_apart(&specs, &cache);
        kedge_plugin_host::load::load(&specs, Some(&cache), &source, &dead_letter, false)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| Refused::CannotLoad(format!("loading the plugins failed: {e}")))?
    .map_err(Refused::CannotLoad)?;
    // TLS material and secrets are read here, once: a bad one refuses the reload, and the
    // producer started below uses what was read.
    let cluster = match plan.restart_delivery {
        true => Some(cluster_settings(&new).map_err(|e| Refused::CannotLoad(e.to_string()))?),
        false => None,
    };
    // The default byte limit is a share of the free space when kedge started; it is computed
    // again only when a limit it derives from changed.
    let limits_changed = config.queue.max_bytes != new.queue.max_bytes
        || config.queue.min_free != new.queue.min_free;
    let new_budget = if limits_changed {
        disk_budget(&new.queue, running.queue)
    } else {
        Budget {
            policy: new.queue.when_full,
            ..*budget
        }
    };
    let plugin_stats = plugins.chain.stats();
    let stages = Stages {
        chain: plugins.chain,
        router: router(&new),
        _ticker: plugins.ticker,
    };
    let settings = commit_settings(&new, new_budget);
    if let Some(cluster) = cluster {
        // First, so that every record the new routing makes is sealed by the new producer.
        // Answers to the requests in flight are awaited, up to one request timeout, so that the
        // new producer has as few batches in doubt to verify as possible.
        if let Some(task) = delivery.task.as_mut() {
            let deadline = kedge_base::deadline::after(config.kafka.request_timeout);
            let _ = delivery.drain.send(Drain::Handover(deadline));
            let stopped = tokio::time::timeout_at(
                kedge_base::deadline::later(deadline, Duration::from_secs(1)),
                &mut *task,
            )
            .await
            .is_ok();
            if !stopped {
                task.abort();
                let _ = task.await;
            }
            delivery.task = None;
        }
        // The old producer is gone: only now may a new one read the queue's producer state.
        let producer = producer_with(
            &new,
            cluster,
            running.queue.clone(),
            running.stats.delivery.clone(),
        )
        .map_err(Reload::NoProducer)?;
        let (drain, drain_rx) = watch::channel(Drain::Run);
        delivery.task = Some(tokio::spawn(
            producer.run(delivery.journal.clone(), drain_rx),
        ));
        delivery.drain = drain;
    }
    // Waits only while the commit stage takes the previous reload, which it does between two
    // commits or while it waits for room or for a plugin.
    let _ = running
        .reconfigure
        .send(ingest::Reconfigure { stages, settings })
        .await;
    *budget = new_budget;
    if let Some(ops) = running.ops {
        *ops.plugins.lock().unwrap_or_else(|p| p.into_inner()) = plugin_stats;
        ops.queue_max_bytes
            .store(new_budget.max_bytes, std::sync::atomic::Ordering::Relaxed);
    }
    tracing::info!(
        changed = ?plan.changed,
        producer_replaced = plan.restart_delivery,
        reload = request.number,
        "config reloaded; plugins re-read"
    );
    *config = new;
    Ok(())
}

/// The router of `config`'s `[routing]`.
fn router(config: &Config) -> Router {
    Router::new(
        config
            .routing
            .rules
            .iter()
            .map(|r| Rule {
                filter: r.filter.clone(),
                topic: r.topic.clone(),
                key_level: r.key_level,
            })
            .collect(),
        config.routing.default_topic.clone(),
        config.routing.dead_letter_topic.clone(),
    )
}

/// The group commit limits of `config`'s `[queue]`, with its disk `budget`.
fn commit_settings(config: &Config, budget: Budget) -> CommitSettings {
    CommitSettings {
        window: config.queue.commit_window,
        max_records: config.queue.commit_max_records,
        max_bytes: config.queue.commit_max_bytes.bytes() as usize,
        budget,
    }
}

/// The Kafka producer over `queue`, as the agent runs it: dispatcher, cluster and settings from
/// `config`.
pub fn producer(
    config: &Config,
    queue: Arc<Queue>,
    stats: Arc<DeliveryStats>,
) -> Result<Producer<Cluster, Queue>, PipelineError> {
    producer_with(config, cluster_settings(config)?, queue, stats)
}

/// [`producer`] with the cluster settings already read.
fn producer_with(
    config: &Config,
    cluster: ClusterSettings,
    queue: Arc<Queue>,
    stats: Arc<DeliveryStats>,
) -> Result<Producer<Cluster, Queue>, PipelineError> {
    let compression = config.kafka.compression;
    let dispatcher = Dispatcher::new(
        SealSettings {
            origin: queue.origin().clone(),
            compression,
            max_records: config.kafka.batch_max_records as usize,
            max_bytes: config.kafka.batch_max_bytes.bytes() as usize,
        },
        StickyPartitioner::new(rand::SeedableRng::from_os_rng()),
    );
    Ok(Producer::new(
        queue,
        Cluster::new(cluster),
        dispatcher,
        ProducerSettings {
            max_in_flight: usize::from(config.kafka.max_in_flight).min(WINDOW),
            linger: config.kafka.linger,
            retry_initial: config.kafka.retry_backoff.initial,
            retry_max: config.kafka.retry_backoff.max,
            metadata_refresh: config.kafka.metadata_refresh,
            compression,
            dead_letter_topic: config.routing.dead_letter_topic.clone(),
        },
        stats,
    )?)
}

/// How to reach the `[kafka]` cluster, TLS and SASL included, with the secrets resolved; the
/// producer and `kedge audit --config` connect alike, so an audit passes where delivery does.
pub fn cluster_settings(config: &Config) -> Result<ClusterSettings, PipelineError> {
    Ok(ClusterSettings {
        bootstrap: config.kafka.bootstrap.clone(),
        client_id: config.kafka.client_id.clone(),
        connect_timeout: config.kafka.connect_timeout,
        request_timeout: config.kafka.request_timeout,
        tls: kafka_tls(&config.kafka).map_err(PipelineError::KafkaTls)?,
        sasl: kafka_sasl(&config.kafka)?,
        max_batch_bytes: usize::try_from(config.kafka.batch_max_bytes.bytes())
            .unwrap_or(usize::MAX),
    })
}

/// Logs, at every start, what recovery has cost so far, so that it is never silent.
fn report_damage(queue: &Queue) {
    match queue.lost_records() {
        Ok(0) => {}
        Ok(n) => tracing::error!(
            records = n,
            "records were lost to damaged journal chunks or sealed batches (see `kedge queue stats`)"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read the lost-records counter"),
    }
    if let Ok(Some(p)) = queue.quarantined_db() {
        tracing::error!(moved_to = %p.display(), "this queue was started fresh after the previous one could not be opened");
    }
}

/// The queue's disk budget: the configured `max_bytes`, or a share of the free space at start.
fn disk_budget(q: &config::QueueConfig, queue: &Queue) -> Budget {
    let min_free = q.min_free.bytes();
    let free = budget::free_bytes(queue.path());
    let on_disk = budget::dir_size(queue.path()).unwrap_or(0);
    let max_bytes = match (q.max_bytes, &free) {
        (Some(m), _) => m.bytes(),
        (None, Ok(free)) => budget::default_max_bytes(*free, on_disk, min_free),
        (None, Err(e)) => {
            // Without statvfs there is no safe default; the min_free check is skipped too.
            tracing::warn!(error = %e, "cannot read the free space of the queue's filesystem; no byte limit");
            u64::MAX
        }
    };
    if let (Some(m), Ok(free)) = (q.max_bytes, &free)
        && m.bytes() > free.saturating_add(on_disk)
    {
        tracing::warn!(
            max_bytes = m.bytes(),
            free,
            "queue.max_bytes is more than the disk has; min_free still guards it"
        );
    }
    let policy = q.when_full;
    tracing::info!(
        max_bytes,
        min_free,
        live_bytes = queue.live_bytes(),
        when_full = q.when_full.word(),
        "queue disk budget"
    );
    Budget {
        max_bytes,
        min_free,
        policy,
    }
}

fn mqtt_settings(config: &Config) -> Result<MqttSettings, PipelineError> {
    let m = &config.mqtt;
    let credentials = match (&m.username, &m.password) {
        (Some(u), Some(p)) => Some((
            u.clone(),
            p.resolve()
                .map_err(|e| PipelineError::Secret(e.to_string()))?,
        )),
        (Some(u), None) => Some((u.clone(), String::new())),
        _ => None,
    };
    let tls = match &m.tls {
        Some(t) => {
            let client = match (&t.client_cert_file, &t.client_key_file) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                _ => None,
            };
            // rumqttc checks the certificate against the host it dials; the verifier is told
            // the configured name instead.
            Some(crate::tls::client_config(
                t.ca_file.as_deref(),
                client,
                t.server_name.as_deref(),
            )?)
        }
        None => None,
    };
    Ok(MqttSettings {
        name: m.name.clone(),
        host: m.host.clone(),
        port: m.effective_port(),
        protocol: m.protocol,
        client_id: m.effective_client_id(&config.agent.device_id),
        keep_alive: m.keep_alive,
        session_expiry: m.session_expiry,
        receive_maximum: m.receive_maximum,
        redelivery_window: m.effective_redelivery_window(),
        // MQTT's largest remaining length is one byte short of 256 MiB.
        max_packet_size: m.max_packet_size.bytes().min(268_435_455) as u32,
        redelivery: m.redelivery,
        credentials,
        tls,
        subscriptions: m
            .subscriptions
            .iter()
            .map(|s| (s.filter.clone(), s.qos))
            .collect(),
        reconnect: (m.reconnect.initial, m.reconnect.max),
        drain_timeout: config.agent.shutdown_timeout,
    })
}

/// The rustls configuration for `[kafka.tls]`, if present.
fn kafka_tls(k: &config::KafkaConfig) -> Result<Option<TlsSettings>, crate::tls::TlsError> {
    let Some(t) = &k.tls else { return Ok(None) };
    let client = match (&t.client_cert_file, &t.client_key_file) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    Ok(Some(TlsSettings {
        // The Kafka connection names the server itself (`server_name` below).
        config: crate::tls::client_config(t.ca_file.as_deref(), client, None)?,
        server_name: t.server_name.clone(),
    }))
}

/// The credentials for `[kafka.sasl]`, if present, with the password resolved and checked.
fn kafka_sasl(k: &config::KafkaConfig) -> Result<Option<SaslSettings>, PipelineError> {
    let Some(s) = &k.sasl else { return Ok(None) };
    let settings = SaslSettings {
        mechanism: s.mechanism,
        username: s.username.clone(),
        password: s
            .password
            .resolve()
            .map_err(|e| PipelineError::KafkaSasl(e.to_string()))?,
    };
    sasl::check_credentials(&settings).map_err(PipelineError::KafkaSasl)?;
    if settings.mechanism == Mechanism::Plain && k.tls.is_none() {
        // `kedge check` refuses this unless allowed: say so once at start all the same.
        tracing::warn!(
            "kafka.sasl: PLAIN without [kafka.tls] sends the password in the clear (allowed by kafka.sasl.allow_plaintext)"
        );
    }
    Ok(Some(settings))
}
