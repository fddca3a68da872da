//! The `kedge` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::io::Write as _;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kedge::config::Config;

#[derive(Parser)]
#[command(
    name = "kedge",
    version,
    about = "Edge agent: MQTT sensor events to Kafka, durably and exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/kedge/kedge.toml")]
        config: PathBuf,
        /// Overrides agent.data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Look into the queue of a stopped kedge, or rescue its records.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Read topics back from Kafka and report lost, duplicated and reordered records per device
    /// (exit 0 when clean, 1 on loss or duplicates, 2 when it cannot read).
    ///
    /// With --config, audit connects as the kedge of that config does (its [kafka] section:
    /// bootstrap, client id, timeouts, TLS, SASL) and reads, by default, every topic it writes to
    /// for its own device. Without --config, --bootstrap and --topic are required and the
    /// connection is plaintext without authentication.
    #[command(override_usage = "kedge audit --config FILE [--topic TOPIC]... \
        [--device DEVICE | --all-devices] [--from-offset OFFSET] [--bootstrap HOST:PORT]\n       \
        kedge audit --bootstrap HOST:PORT --topic TOPIC... [--device DEVICE] \
        [--from-offset OFFSET]")]
    Audit(AuditArgs),
    /// Summarise a running agent (from its metrics listener) or a stopped one (from its queue).
    Status {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/kedge/kedge.toml")]
        config: PathBuf,
    },
    /// Compile and try out WebAssembly transform plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Validate a configuration and print the pipeline it describes.
    Check {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/kedge/kedge.toml")]
        config: PathBuf,
    },
}

/// The options of `kedge audit`.
#[derive(clap::Args)]
struct AuditArgs {
    /// A kedge configuration file to connect with and to take the defaults from.
    ///
    /// The connection is the one its [kafka] section describes: bootstrap, client id,
    /// timeouts, TLS (CA, client certificate for mutual TLS, server name) and SASL (PLAIN,
    /// SCRAM-SHA-256/512). It also gives the default topics and device.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Broker to bootstrap from; with --config, it replaces kafka.bootstrap only.
    ///
    /// Without --config it is required, and the connection is plaintext without
    /// authentication. With --config, the config's TLS and SASL settings still apply.
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "config")]
    bootstrap: Option<String>,
    /// Topic to read; repeatable. With --config, every topic the config routes to by default.
    ///
    /// Name every topic a kedge writes to: one sequence spans them all, and a record routed
    /// elsewhere would otherwise look lost. Required without --config. With --config the
    /// default is the routing rules' topics, routing.default_topic and
    /// routing.dead_letter_topic, skipping any the cluster does not have (yet); topics that
    /// plugins choose are in no config, so then name them all. Topics given must exist.
    #[arg(long, value_name = "TOPIC", required_unless_present = "config")]
    topic: Vec<String>,
    /// Judge only this device (`kedge-device` header). With --config, its device by default.
    ///
    /// With --config the default is the config's agent.device_id: an audit on a device checks
    /// that device's records, not its neighbours' on the same topics, which are counted as
    /// "of other devices". When the file sets no agent.device_id, kedge uses the hostname, so
    /// the default is right on the device but not elsewhere: there, pass --device (or
    /// --all-devices).
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
    /// Judge every device found, even with --config (as without it).
    #[arg(long, conflicts_with = "device")]
    all_devices: bool,
    /// Start every partition at this offset instead of its earliest.
    #[arg(long, value_name = "OFFSET")]
    from_offset: Option<i64>,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Records and bytes pending per topic and partition, oldest record, disk use, losses.
    Stats {
        /// Configuration file (gives the queue directory and device id).
        #[arg(long, short, default_value = "/etc/kedge/kedge.toml")]
        config: PathBuf,
    },
    /// List journal chunks and sealed batches.
    Inspect {
        /// Configuration file (gives the queue directory and device id).
        #[arg(long, short, default_value = "/etc/kedge/kedge.toml")]
        config: PathBuf,
    },
    /// Dump every pending record to stdout, one JSON object per line (for rescue).
    Export {
        /// Configuration file (gives the queue directory and device id).
        #[arg(long, short, default_value = "/etc/kedge/kedge.toml")]
        config: PathBuf,
        /// Output format; only `jsonl`.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl"])]
        format: String,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Compile a plugin component ahead of time for a device (`.cwasm`), with the exact engine
    /// settings kedge runs plugins with.
    Compile {
        /// The component (`.wasm`).
        input: PathBuf,
        /// Rust target triple of the device, e.g. aarch64-unknown-linux-musl or
        /// armv7-unknown-linux-musleabihf (Pulley); this machine when absent.
        #[arg(long)]
        target: Option<String>,
        /// Where to write the artifact.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Run a plugin on sample events (JSON lines) and print its verdicts, one line per event.
    Test {
        /// The plugin (`.wasm` or `.cwasm`).
        plugin: PathBuf,
        /// Sample events: {"subject": …, "value": …, "key": …, "headers": [[n, v]], "timestamp_ms": …}.
        #[arg(long)]
        input: PathBuf,
        /// A setting for the plugin's init, `key=value`; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// The clock the plugin sees (`now-ms`), milliseconds since the Unix epoch; the real
        /// clock when absent.
        #[arg(long)]
        now: Option<i64>,
        /// The `default-topic` the plugin sees.
        #[arg(long)]
        default_topic: Option<String>,
        /// After the events, call `tick` with this clock; repeatable.
        #[arg(long = "tick", value_name = "NOW_MS")]
        ticks: Vec<i64>,
        /// Memory limit per instance, e.g. `16MiB`.
        #[arg(long, default_value = "16MiB")]
        memory: String,
        /// Longest one call may run, e.g. `200ms`.
        #[arg(long, default_value = "200ms")]
        timeout: String,
        /// Most bytes of results one call may return, e.g. `8MiB`.
        #[arg(long, default_value = "8MiB")]
        max_output: String,
    },
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                if let Err(e) = kedge::transform::load::probe(&c.plugins) {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
                for w in c.secret_warnings() {
                    eprintln!("warning: {w}");
                }
                print!("{}", kedge::check::describe(&c, &config));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Audit(args) => audit(args),
        Command::Status { config } => match status(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Queue { command } => match queue_tool(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Plugin { command } => match plugin_tool(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, data_dir } => match run(&config, data_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// glibc gives threads that allocate their own heap arenas (up to eight per core), and the
/// pipeline's threads spread its heap over them: e2e-bench measured 59–63 MiB RSS with the
/// default and 46 MiB with two arenas, at no measurable CPU cost. An explicit
/// `MALLOC_ARENA_MAX` wins. musl, which the device builds use, has no arenas.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it runs before any other thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn audit(args: AuditArgs) -> ExitCode {
    let defaulted_device = args.config.is_some() && args.device.is_none() && !args.all_devices;
    let settings = match audit_settings(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(kedge::audit::audit(&settings)) {
        Ok(report) => {
            print!("{report}");
            if let Some(device) = settings.device.as_ref().filter(|_| defaulted_device)
                && report.devices.is_empty()
            {
                // "Clean" over nothing mostly means the default device is not the one meant,
                // such as a hostname-derived id read away from the device.
                eprintln!(
                    "note: no records of device {device:?} (the config's agent.device_id); \
                     choose another with --device, or --all-devices"
                );
            }
            if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// What `kedge audit` reads: as the options say, and with --config as its kedge connects.
fn audit_settings(args: AuditArgs) -> anyhow::Result<kedge::audit::AuditSettings> {
    let Some(path) = args.config else {
        // Clap requires both without --config.
        let bootstrap = args
            .bootstrap
            .context("--bootstrap is required without --config")?;
        return Ok(kedge::audit::AuditSettings {
            cluster: kedge::audit::plaintext(bootstrap),
            topics: args.topic,
            device: args.device,
            from_offset: args.from_offset,
            skip_absent: false,
        });
    };
    let config = Config::load(&path)?;
    let mut cluster = kedge::pipeline::cluster_settings(&config)?;
    if let Some(bootstrap) = args.bootstrap {
        cluster.bootstrap = vec![bootstrap];
    }
    Ok(kedge::audit::AuditSettings::for_config(
        &config,
        cluster,
        args.topic,
        args.device,
        args.all_devices,
        args.from_offset,
    ))
}

fn status(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let timeout = std::time::Duration::from_secs(2);
    let why_not = match config.metrics.listen {
        Some(addr) => match kedge::ops::get(addr, "/status.json", timeout) {
            Ok((200, first)) => {
                let read = |body: &str| {
                    serde_json::from_str::<kedge::ops::status::Report>(body)
                        .with_context(|| format!("http://{addr}/status.json cannot be read"))
                };
                let first = read(&first)?;
                // A second report a moment later gives the rates.
                let interval = std::time::Duration::from_secs(1);
                std::thread::sleep(interval);
                let second = match kedge::ops::get(addr, "/status.json", timeout) {
                    Ok((200, body)) => read(&body)?,
                    // Stopping, or too busy: the first alone, without rates.
                    _ => first.clone(),
                };
                let text = |path: &str, timeout| {
                    kedge::ops::get(addr, path, timeout)
                        .ok()
                        .filter(|(code, _)| *code == 200)
                        .map(|(_, body)| body)
                };
                // The queue report reads the whole queue: a long backlog takes a while.
                let queue = text("/status/queue", std::time::Duration::from_secs(60));
                let log = text("/status/log", timeout);
                let seen = kedge::ops::status::Observed {
                    first: &first,
                    second: &second,
                    interval,
                    queue: queue.as_deref(),
                    log: log.as_deref(),
                };
                print!("{}", kedge::ops::status::running(addr, &seen));
                return Ok(());
            }
            // Running, but a kedge from before `/status.json`: its queue is locked by it, so
            // reading the queue instead would fail too.
            Ok((404, _)) => anyhow::bail!(
                "the agent at {addr} has no /status.json (an older kedge); http://{addr}/metrics has its metrics"
            ),
            Ok((code, _)) => format!("{addr} answered HTTP {code}"),
            Err(e) => format!("nothing answers at {addr}: {e}"),
        },
        None => "metrics.listen is not configured, so a running agent cannot be asked".to_owned(),
    };
    let dir = config.queue.effective_dir(&config.agent);
    let queue = kedge::queue::tools::open_existing(&dir, &config.agent.device_id)?;
    println!("kedge is not running ({why_not}); its queue says:");
    print!("{}", kedge::queue::tools::stats(&queue)?);
    Ok(())
}

fn queue_tool(command: QueueCommand) -> anyhow::Result<()> {
    use kedge::queue::tools;
    let path = match &command {
        QueueCommand::Stats { config } | QueueCommand::Inspect { config } => config,
        QueueCommand::Export { config, .. } => config,
    };
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = config.queue.effective_dir(&config.agent);
    let queue = tools::open_existing(&dir, &config.agent.device_id)?;
    match command {
        QueueCommand::Stats { .. } => print!("{}", tools::stats(&queue)?),
        QueueCommand::Inspect { .. } => print!("{}", tools::inspect(&queue)?),
        QueueCommand::Export { .. } => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let n = tools::export_jsonl(&queue, &mut out)?;
            std::io::Write::flush(&mut out)?;
            eprintln!("exported {n} records from {}", dir.display());
        }
    }
    Ok(())
}

fn plugin_tool(command: PluginCommand) -> anyhow::Result<()> {
    use kedge::transform::{engine, load, tester};
    match command {
        PluginCommand::Compile {
            input,
            target,
            output,
        } => {
            let target = target.map_or(engine::Target::Host, engine::Target::Triple);
            let started = std::time::Instant::now();
            let artifact = kedge::transform::compile(&input, &target)?;
            load::write_atomically(&output, &artifact)
                .with_context(|| format!("cannot write {}", output.display()))?;
            eprintln!(
                "compiled {} for {} in {:.1?}: {} ({} bytes)",
                input.display(),
                target.code()?,
                started.elapsed(),
                output.display(),
                artifact.len()
            );
            Ok(())
        }
        PluginCommand::Test {
            plugin,
            input,
            settings,
            now,
            default_topic,
            ticks,
            memory,
            timeout,
            max_output,
        } => {
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let samples = tester::parse_samples(&text, &input.display().to_string())
                .map_err(anyhow::Error::msg)?;
            let mut config = Vec::new();
            for kv in settings {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--config {kv:?}: expected KEY=VALUE"))?;
                config.push((k.to_owned(), v.to_owned()));
            }
            let memory = kedge::config::ByteSize::parse(&memory)
                .map_err(|e| anyhow::anyhow!("--memory {memory:?}: {e}"))?;
            let timeout = kedge::config::parse_duration(&timeout)
                .map_err(|e| anyhow::anyhow!("--timeout {timeout:?}: {e}"))?;
            let max_output = kedge::config::ByteSize::parse(&max_output)
                .map_err(|e| anyhow::anyhow!("--max-output {max_output:?}: {e}"))?;
            let limits =
                kedge::transform::plugin::Limits::new(memory.bytes(), timeout, max_output.bytes());
            let mut plugin =
                kedge::transform::open_for_test(&plugin, config, limits, !ticks.is_empty())?;
            let info = tester::RunInfo {
                source: "mqtt".to_owned(),
                default_topic,
                now_ms: now.unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64)
                }),
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for (i, outcome) in tester::run(&mut plugin, &samples, &info).iter().enumerate() {
                writeln!(out, "{}", tester::show_outcome(i, outcome))?;
            }
            for t in ticks {
                writeln!(out, "{}", tester::tick(&mut plugin, t))?;
            }
            out.flush()?;
            let stats = plugin.stats().snapshot();
            eprintln!(
                "{} events, {} calls, {} instance recycles; counters: {:?}",
                stats.events.max(samples.len() as u64),
                stats.calls,
                stats.recycles,
                stats.counters
            );
            Ok(())
        }
    }
}

fn run(path: &Path, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if let Some(d) = data_dir {
        config.agent.data_dir = d;
    }
    kedge::telemetry::init_logging(&config.log).map_err(anyhow::Error::msg)?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %path.display(), "kedge starting");
    // Files 0600 and directories 0700 whoever starts kedge: the queue holds every reading, and
    // the plugin cache native code that is loaded as it is (systemd's unit sets the same).
    // SAFETY: umask only replaces the process's file-mode creation mask.
    unsafe { libc::umask(0o077) };
    for w in config.secret_warnings() {
        tracing::warn!("{w}");
    }
    match kedge::ops::fd_limit::raise() {
        Ok((before, after)) if before != after => {
            tracing::info!(before, after, "open-file limit raised");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut backoff = kedge::backoff::Backoff::new(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(30),
        );
        let mut reopening = false;
        let mut unacked_from = None;
        loop {
            match kedge::pipeline::run(&config, shutdown_signal(), unacked_from).await {
                Err(kedge::pipeline::PipelineError::QueuePoisoned { unacked_from: from }) => {
                    reopening = true;
                    // That run already discarded the previous range; a failed open (below)
                    // did not, and keeps it.
                    unacked_from = from;
                }
                // While reopening after a failed I/O the disk may still be full: keep trying.
                Err(kedge::pipeline::PipelineError::Queue(kedge::queue::QueueError::Db {
                    source: sled::Error::Io(e),
                    ..
                })) if reopening => {
                    tracing::error!(error = %e, "cannot reopen the queue yet");
                }
                // The previous run's tasks may not all have let go of the queue yet.
                Err(kedge::pipeline::PipelineError::Queue(
                    e @ kedge::queue::QueueError::InUse { .. },
                )) if reopening => {
                    tracing::error!(error = %e, "cannot reopen the queue yet");
                }
                other => {
                    other?;
                    return Ok(());
                }
            }
            // Reopen rather than exit: a restart by systemd would do the same, slower, and
            // without systemd nothing would.
            let delay = backoff.next_delay();
            tracing::warn!(retry_in = ?delay, "reopening the queue");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown_signal() => return Ok(()),
            }
        }
    })
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
