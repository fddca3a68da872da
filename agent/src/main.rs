//! The `kedge` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::io::Write as _;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kedge::config::{ByteSize, Config, HumanDuration};
use kedge::ops::{pidfd, procfs};

/// How every command exits. One scheme for all, so that a script or unit can tell "ran, and
/// found something wrong" from "could not do its work" without knowing the command; 2 is also
/// what clap exits with on a usage error, so a bad argument and a bad config file agree.
/// `kedge --help`, each command's `--help` and README.md ("Exit codes") describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// The command did what was asked, and found nothing wrong.
    Success = 0,
    /// The command ran and found a problem: `audit` loss or duplicates, `status` an agent that
    /// is not running or not ready, `check --kafka` a routed topic missing or refused.
    Problem = 1,
    /// The command could not do its work: a usage error, an invalid configuration, a file,
    /// queue or broker it cannot read or reach, or `run` stopping on an error.
    Error = 2,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The scheme of [`Exit`], for `kedge --help`.
const EXIT_CODES: &str = "\
Exit codes, the same for every command:
  0  success
  1  the command ran and found a problem (audit: loss or duplicates; status: the agent is
     not running or not ready; check --kafka: a routed topic missing or refused; reload:
     the agent refused the config)
  2  it could not do its work: a usage error, an invalid configuration, a file, queue or
     broker it cannot read or reach, or `run` stopping on an error";
/// [`Exit`] as each command's `--help` says it.
const EXIT_RUN: &str = "\
SIGHUP reloads the configuration and plugins (see `kedge reload --help`).

Exit codes:
  0  stopped by SIGTERM or SIGINT
  2  cannot start (usage, invalid configuration, queue in use), or stopped on an error";
const EXIT_RELOAD: &str = "\
Exit codes:
  0  the agent reloaded the configuration
  1  the agent refused it (the reason is printed) and runs the configuration it had
  2  no verdict: usage, the file is not a valid configuration (the agent was not asked), no
     agent answers at metrics.listen, the process id it reports is not that agent here (another
     pid namespace, another start), or it gave none in time (or ended or restarted first)";
const EXIT_CHECK: &str = "\
Exit codes:
  0  the configuration is valid and every plugin loads (with --kafka: and every topic exists)
  1  with --kafka: a topic the routing names does not exist in Kafka, or Kafka refuses it
  2  it is not valid, cannot be read, or a plugin cannot be loaded; with --kafka, Kafka cannot
     be reached or asked; or a usage error";
const EXIT_AUDIT: &str = "\
Exit codes:
  0  clean
  1  loss or duplicates
  2  cannot read: usage, configuration, connection, unknown topic";
const EXIT_STATUS: &str = "\
Exit codes:
  0  the agent is running and ready
  1  it is not running (the report is its queue's), or not ready
  2  cannot tell: usage, configuration, or no agent answers and its queue cannot be read";
const EXIT_QUEUE: &str = "\
Exit codes:
  0  success
  2  cannot read the queue: usage, configuration, no queue there, held by a running kedge";
const EXIT_PLUGIN: &str = "\
Exit codes:
  0  success (faults of the plugin under `plugin test` are its output, not failures)
  2  usage, a plugin or input that cannot be read or loaded, an output that cannot be written";

#[derive(Parser)]
#[command(
    name = "kedge",
    version,
    about = "Edge agent: MQTT sensor events to Kafka, durably and exactly once",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    #[command(after_help = EXIT_RUN)]
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/kedge/kedge.toml")]
        config: PathBuf,
        /// Overrides agent.data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Look into the queue of a stopped kedge, or rescue its records.
    #[command(after_help = EXIT_QUEUE)]
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Read topics back from Kafka and report lost, duplicated and reordered records per device.
    ///
    /// With --config, audit connects as the kedge of that config does (its [kafka] section:
    /// bootstrap, client id, timeouts, TLS, SASL) and reads, by default, every topic it writes to
    /// for its own device. Without --config, --bootstrap and --topic are required and the
    /// connection is plaintext without authentication.
    #[command(override_usage = "kedge audit --config FILE [--topic TOPIC]... \
        [--device DEVICE | --all-devices] [--from-offset OFFSET] [--bootstrap HOST:PORT]\n       \
        kedge audit --bootstrap HOST:PORT --topic TOPIC... [--device DEVICE] \
        [--from-offset OFFSET]", after_help = EXIT_AUDIT)]
    Audit(AuditArgs),
    /// Summarise a running agent (from its metrics listener) or a stopped one (from its queue).
    #[command(after_help = EXIT_STATUS)]
    Status {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/kedge/kedge.toml")]
        config: PathBuf,
    },
    /// Compile and try out WebAssembly transform plugins.
    #[command(after_help = EXIT_PLUGIN)]
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Make the running agent re-read its configuration and plugins, as SIGHUP does, and tell
    /// whether it took them.
    ///
    /// The agent keeps its MQTT session and its queue: routing, plugins, queue limits and
    /// [kafka] change in place; a change to [agent], [mqtt], [log], [metrics] or the queue's
    /// dir, cache or durability is refused, as is a config whose plugins cannot start. A
    /// refused config leaves the old one running, and the reason stays in /health/ready and
    /// `kedge status` until a reload is applied. The agent is found at the file's
    /// metrics.listen; the file must be the one it was started with.
    #[command(after_help = EXIT_RELOAD)]
    Reload {
        /// Configuration file of the running agent.
        #[arg(long, short, default_value = "/etc/kedge/kedge.toml")]
        config: PathBuf,
    },
    /// Validate a configuration, load its plugins, and print the pipeline it describes.
    ///
    /// Each plugin is loaded as `kedge run` loads it: its component compiled (or its `.cwasm`
    /// artifact loaded), instantiated, and its `init` run with its config; `tick` on a plugin
    /// of the `transform` world is refused. Every plugin that cannot start is reported, with
    /// its name and the reason. Components are compiled without the plugin cache, which check
    /// neither reads nor writes, and `init` sees check's own environment for the plugin's `env`
    /// grants.
    #[command(after_help = EXIT_CHECK)]
    Check {
        /// Configuration file.
        #[arg(long, short, default_value = "/etc/kedge/kedge.toml")]
        config: PathBuf,
        /// Only read the configuration, and check that each plugin file is a component or an
        /// artifact this kedge can load, without compiling or starting it.
        #[arg(long)]
        no_plugins: bool,
        /// Also connect to Kafka as [kafka] says (TLS, SASL) and ask it about every topic the
        /// routing names (rules, default and dead-letter topics), creating none: each must
        /// exist. Topics that plugins choose are not in the config and are not asked about.
        #[arg(long)]
        kafka: bool,
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
    #[command(after_help = EXIT_QUEUE)]
    Stats {
        /// Configuration file (gives the queue directory and device id).
        #[arg(long, short, default_value = "/etc/kedge/kedge.toml")]
        config: PathBuf,
    },
    /// List journal chunks and sealed batches.
    #[command(after_help = EXIT_QUEUE)]
    Inspect {
        /// Configuration file (gives the queue directory and device id).
        #[arg(long, short, default_value = "/etc/kedge/kedge.toml")]
        config: PathBuf,
    },
    /// Dump every pending record to stdout, one JSON object per line (for rescue).
    #[command(after_help = EXIT_QUEUE)]
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
    /// Create a plugin project: source, build script, sample events and their expected
    /// verdicts, the WIT contract (and for Rust the SDK) of this kedge. Build it with
    /// `./build.sh`, check it with `./test.sh`.
    #[command(after_help = EXIT_PLUGIN)]
    New {
        /// The plugin's name: lowercase letters, digits and `-`.
        name: String,
        /// The language: rust, c, python, js or go.
        #[arg(long, value_parser = |s: &str| s.parse::<kedge::scaffold::Lang>())]
        lang: kedge::scaffold::Lang,
        /// Where to create the project (must not exist); ./NAME when absent.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Compile a plugin component ahead of time for a device (`.cwasm`), with the exact engine
    /// settings kedge runs plugins with.
    #[command(after_help = EXIT_PLUGIN)]
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
    /// Compiles plugin components into kedge's plugin cache: `kedge run` runs this in a child
    /// process, so that the compiler's memory never enters the daemon.
    #[command(hide = true)]
    FillCache {
        /// The plugin cache directory.
        #[arg(long)]
        cache: PathBuf,
        /// Plugin names and paths, alternating.
        plugins: Vec<std::ffi::OsString>,
    },
    /// Run a plugin on sample events (JSON lines) and print its verdicts, one line per event
    /// and per tick.
    #[command(after_help = EXIT_PLUGIN)]
    Test {
        /// The plugin (`.wasm` or `.cwasm`).
        plugin: PathBuf,
        /// Sample events, {"subject": …, "value": …, "key": …, "headers": [[n, v]],
        /// "timestamp_ms": …, "topic": …}, and ticks, {"tick": NOW_MS}, one per line. A value
        /// may be a string, {"hex": …}, or any JSON value (its compact text).
        #[arg(long)]
        input: PathBuf,
        /// A setting for the plugin's init, `key=value`; repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        settings: Vec<(String, String)>,
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
        /// Compile the plugin again instead of using the compile cache
        /// ($XDG_CACHE_HOME/kedge/plugin-cache, else ~/.cache/kedge/plugin-cache).
        #[arg(long)]
        no_cache: bool,
        /// Memory limit per instance, e.g. `16MiB`.
        #[arg(long, value_name = "SIZE", default_value = "16MiB")]
        memory: ByteSize,
        /// Longest one call may run, e.g. `200ms`.
        #[arg(long, value_name = "DURATION", default_value = "200ms")]
        timeout: HumanDuration,
        /// Most bytes of results one call may return, e.g. `8MiB`.
        #[arg(long, value_name = "SIZE", default_value = "8MiB")]
        max_output: ByteSize,
    },
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let outcome = match Cli::parse().command {
        Command::Check {
            config,
            no_plugins,
            kafka,
        } => check(&config, no_plugins, kafka),
        Command::Audit(args) => audit(args),
        Command::Status { config } => status(&config),
        Command::Reload { config } => reload(&config),
        Command::Queue { command } => queue_tool(command),
        Command::Plugin { command } => plugin_tool(command),
        Command::Run { config, data_dir } => run(&config, data_dir),
    };
    match outcome {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Error.into()
        }
    }
}

/// An error as its own message alone: kedge's error types name their cause in their message,
/// and the chain `main` prints would repeat it.
fn flat(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
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

fn check(path: &Path, no_plugins: bool, kafka: bool) -> anyhow::Result<Exit> {
    let config = Config::load(path).map_err(flat)?;
    if no_plugins {
        kedge_plugin_host::load::probe(&config.plugins).map_err(flat)?;
    }
    for w in config.secret_warnings() {
        eprintln!("warning: {w}");
    }
    if !no_plugins {
        check_plugins(&config.plugins)?;
    }
    print!("{}", kedge::check::describe(&config, path));
    if !kafka {
        return Ok(Exit::Success);
    }
    let settings = kedge::pipeline::cluster_settings(&config).map_err(flat)?;
    let topics = kedge::audit::config_topics(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let states = runtime
        .block_on(kedge::check::ask_kafka(settings, &topics))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot ask Kafka ({}) about the topics: {e}",
                config.kafka.bootstrap.join(", ")
            )
        })?;
    let (text, all) = kedge::check::describe_topics(&config, &topics, &states);
    print!("\n{text}");
    Ok(if all { Exit::Success } else { Exit::Problem })
}

/// Loads every plugin as `kedge run` would, one line each, and fails after the last if any
/// cannot be loaded: an author fixing several plugins sees all their errors at once.
fn check_plugins(plugins: &[kedge::config::PluginConfig]) -> anyhow::Result<()> {
    use kedge_plugin_host::load;
    if plugins.is_empty() {
        return Ok(());
    }
    let loader = load::Loader::new().map_err(flat)?;
    let mut failed = 0;
    for (index, p) in plugins.iter().enumerate() {
        // No cache: a check run as another user, or before the data directory exists, must not
        // create it or leave files in it. The plugin's stderr may say more on why init failed.
        match loader.open(index, p, None, true) {
            Ok(opened) => {
                let code = if opened.artifact {
                    format!("artifact loaded in {:.1?}", opened.compiled_in)
                } else {
                    format!("compiled in {:.1?}", opened.compiled_in)
                };
                println!(
                    "plugin {}: loaded, {}, {code}, started in {:.1?}",
                    p.name,
                    opened.plugin.contract(),
                    opened.started_in
                );
                if p.tick.is_none() && opened.plugin.has_tick() {
                    eprintln!("warning: plugin {}: {}", p.name, load::TICK_NEVER_CALLED);
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} plugins cannot be loaded: `kedge run` would refuse this configuration",
            plugins.len()
        );
    }
    println!();
    Ok(())
}

fn audit(args: AuditArgs) -> anyhow::Result<Exit> {
    let defaulted_device = args.config.is_some() && args.device.is_none() && !args.all_devices;
    let settings = audit_settings(args).map_err(flat)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime
        .block_on(kedge::audit::audit(&settings))
        .map_err(flat)?;
    print!("{report}");
    if let Some(device) = settings.device.as_ref().filter(|_| defaulted_device)
        && report.devices.is_empty()
    {
        // "Clean" over nothing mostly means the default device is not the one meant, such as a
        // hostname-derived id read away from the device.
        eprintln!(
            "note: no records of device {device:?} (the config's agent.device_id); \
             choose another with --device, or --all-devices"
        );
    }
    Ok(if report.is_clean() {
        Exit::Success
    } else {
        Exit::Problem
    })
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

fn status(path: &Path) -> anyhow::Result<Exit> {
    let config = Config::load(path).map_err(flat)?;
    let timeout = std::time::Duration::from_secs(2);
    let why_not = match config.metrics.listen {
        Some(addr) => match kedge::ops::get(addr, "/status.json", timeout) {
            Ok((200, first)) => {
                let read = |body: &str| status_report(addr, body);
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
                // Readiness is the agent's own verdict on its health (README: /health/ready),
                // as of the newer report, which the printed "ready" block shows.
                return Ok(if second.unready.is_empty() {
                    Exit::Success
                } else {
                    Exit::Problem
                });
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
    let queue = kedge_queue::tools::open_existing(&dir, &config.agent.device_id)?;
    println!("kedge is not running ({why_not}); its queue says:");
    print!("{}", kedge_queue::tools::stats(&queue)?);
    // The report is what was asked for, but an agent that is not running delivers nothing.
    Ok(Exit::Problem)
}

/// An agent's `/status.json` report.
fn status_report(
    addr: std::net::SocketAddr,
    body: &str,
) -> anyhow::Result<kedge::ops::status::Report> {
    serde_json::from_str(body).with_context(|| {
        format!("http://{addr}/status.json cannot be read (perhaps an agent of an older kedge version: restart it after an upgrade)")
    })
}

/// How long `kedge reload` waits for the agent's verdict: plugins are compiled in the meantime.
const RELOAD_VERDICT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

fn reload(path: &Path) -> anyhow::Result<Exit> {
    let config = Config::load(path).map_err(|e| {
        anyhow::anyhow!("{e}\nthe agent was not asked to reload; it runs the config it had")
    })?;
    let Some(addr) = config.metrics.listen else {
        anyhow::bail!(
            "metrics.listen is not configured, so kedge reload cannot find the agent: send it SIGHUP instead (`systemctl reload kedge`, or `kill -HUP PID`)"
        );
    };
    let timeout = std::time::Duration::from_secs(2);
    let report = || -> anyhow::Result<kedge::ops::status::Report> {
        match kedge::ops::get(addr, "/status.json", timeout) {
            Ok((200, body)) => status_report(addr, &body),
            Ok((code, _)) => anyhow::bail!("the agent at {addr} answered HTTP {code}"),
            Err(e) => anyhow::bail!("nothing answers at {addr}: {e}"),
        }
    };
    let before = report()?;
    let pid = before.process.pid;
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    let running = PathBuf::from(&before.process.config_file);
    if canonical(&running) != canonical(path) {
        anyhow::bail!(
            "the agent at {addr} runs {}, not {}: it re-reads the file it was started with",
            running.display(),
            path.display()
        );
    }
    // The pid came over the network: signal it only if it names the agent that sent it here.
    if !procfs::proc_is_own() {
        anyhow::bail!(
            "the agent at {addr} says its process id is {pid}, but this command's /proc is not of its own pid namespace (entered with `nsenter -p` without `-m`?), so it cannot tell which process that id names"
        );
    }
    let agent = procfs::Identity {
        namespace: before.process.pid_namespace.clone(),
        start_ticks: before.process.start_ticks,
        name: "kedge".into(),
    };
    let here = procfs::Identity::own();
    let not_the_agent = |why: procfs::NotTheAgent| {
        anyhow::anyhow!("the agent at {addr} says its process id is {pid}, but {why}")
    };
    procfs::same_namespace(&agent, &here).map_err(not_the_agent)?;
    // Held before /proc is read: the check below is then of the process the signal can reach.
    let held = match pidfd::Pidfd::open(pid) {
        Ok(held) => held,
        // EINVAL: the id names a thread, not a process.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EINVAL)) => {
            return Err(not_the_agent(procfs::NotTheAgent::NotKedge));
        }
        Err(e) => anyhow::bail!("cannot open process {pid} (pidfd_open): {e}"),
    };
    procfs::same_process(&agent, &here, &procfs::Identity::of(pid)).map_err(not_the_agent)?;
    // A verdict on a read of the file that began after `before` is on this file as it is now
    // (or newer); an earlier reload still running when we asked does not answer us.
    let asked = before.process.reloads_read;
    // Without pidfds (a kernel before 5.3, or a seccomp profile refusing them) this is `kill`:
    // the agent could end, and its pid be taken, between the check and the signal.
    match pidfd::send(held.as_ref(), pid, libc::SIGHUP) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            anyhow::bail!("process {pid} ended before it could be sent SIGHUP; see its log")
        }
        Err(e) => anyhow::bail!("cannot signal process {pid}: {e}"),
    }
    let ended = || {
        held.as_ref()
            .map_or_else(|| !procfs::alive(pid), pidfd::Pidfd::ended)
    };
    let give_up = std::time::Instant::now() + RELOAD_VERDICT_TIMEOUT;
    while std::time::Instant::now() < give_up {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let Ok(now) = report() else {
            if ended() {
                anyhow::bail!(
                    "process {pid} was sent SIGHUP and ended before it gave a verdict; see its log"
                );
            }
            continue;
        };
        // A container's agent comes back with the same pid: its start tells a restart.
        if now.process.pid != pid || now.process.start_ticks != before.process.start_ticks {
            anyhow::bail!(
                "the agent at {addr} restarted before it gave a verdict (process {} answers, {pid} was sent SIGHUP); a new agent reads the file when it starts: see its log",
                now.process.pid
            );
        }
        if now.process.reload_answered <= asked {
            continue;
        }
        // The last verdict: a refusal stands until a reload is applied.
        let which = now.process.reload_answered;
        if let Some(why) = &now.process.reload_refused {
            println!("refused: {why}\nkedge runs the config it had (reload {which} of this agent)");
            return Ok(Exit::Problem);
        }
        println!("reloaded {} (reload {which} of this agent)", path.display());
        return Ok(Exit::Success);
    }
    anyhow::bail!(
        "process {pid} was sent SIGHUP but gave no verdict within {} s; see its log",
        RELOAD_VERDICT_TIMEOUT.as_secs()
    )
}

fn queue_tool(command: QueueCommand) -> anyhow::Result<Exit> {
    use kedge_queue::tools;
    let path = match &command {
        QueueCommand::Stats { config } | QueueCommand::Inspect { config } => config,
        QueueCommand::Export { config, .. } => config,
    };
    let config = Config::load(path).map_err(flat)?;
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
    Ok(Exit::Success)
}

/// Where `kedge plugin test` keeps compiled plugins: the user's cache directory (XDG).
fn user_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("kedge").join("plugin-cache"))
}

/// A `--config KEY=VALUE` of `plugin test`, split at the first `=`.
fn key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((key.to_owned(), value.to_owned()))
}

fn plugin_tool(command: PluginCommand) -> anyhow::Result<Exit> {
    use kedge_plugin_host::{engine, load, tester};
    match command {
        PluginCommand::New { name, lang, dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            kedge::scaffold::create(&dir, &name, lang)?;
            let d = dir.display();
            println!("created the plugin `{name}` in {d}");
            println!("  build:  {d}/build.sh     (it says what the build needs)");
            println!(
                "  test:   {d}/test.sh      (kedge plugin test, compared with expected.jsonl)"
            );
            println!(
                "  run:    add a [[plugin]] with path = \"{d}/{name}.wasm\" to kedge.toml; {d}/README.md shows one"
            );
            Ok(Exit::Success)
        }
        PluginCommand::FillCache { cache, plugins } => {
            if plugins.len() % 2 != 0 {
                anyhow::bail!("plugin fill-cache takes names and paths in pairs");
            }
            let plugins: Vec<(String, PathBuf)> = plugins
                .chunks(2)
                .map(|pair| {
                    (
                        pair[0].to_string_lossy().into_owned(),
                        PathBuf::from(&pair[1]),
                    )
                })
                .collect();
            #[cfg(feature = "compiler")]
            load::fill_cache(&plugins, &cache).map_err(anyhow::Error::msg)?;
            #[cfg(not(feature = "compiler"))]
            let _ = (plugins, cache);
            Ok(Exit::Success)
        }
        PluginCommand::Compile {
            input,
            target,
            output,
        } => {
            let target = target.map_or(engine::Target::Host, engine::Target::Triple);
            let started = std::time::Instant::now();
            let artifact = kedge_plugin_host::compile(&input, &target)?;
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
            Ok(Exit::Success)
        }
        PluginCommand::Test {
            plugin,
            input,
            settings,
            now,
            default_topic,
            ticks,
            no_cache,
            memory,
            timeout,
            max_output,
        } => {
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let lines = tester::parse_input(&text, &input.display().to_string())
                .map_err(anyhow::Error::msg)?;
            let wants_tick =
                !ticks.is_empty() || lines.iter().any(|l| matches!(l, tester::Line::Tick(_)));
            let limits = kedge_plugin_host::plugin::Limits::new(
                memory.bytes(),
                timeout.0,
                max_output.bytes(),
            );
            let cache = if no_cache { None } else { user_cache_dir() };
            let mut plugin = kedge_plugin_host::open_for_test(
                &plugin,
                settings,
                limits,
                wants_tick,
                cache.as_deref(),
            )?;
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
            // The events between two ticks are one run, grouped as the agent groups a batch;
            // a tick sees only the events before it, so late data can be tested.
            let (mut events, mut batch) = (0, Vec::new());
            let ticks_after = ticks.into_iter().map(tester::Line::Tick);
            for line in lines.into_iter().chain(ticks_after).map(Some).chain([None]) {
                if let Some(tester::Line::Event(sample)) = line {
                    batch.push(sample);
                    continue;
                }
                for outcome in tester::run(&mut plugin, &batch, &info) {
                    writeln!(out, "{}", tester::show_outcome(events, &outcome))?;
                    events += 1;
                }
                batch.clear();
                if let Some(tester::Line::Tick(t)) = line {
                    writeln!(out, "{}", tester::tick(&mut plugin, t))?;
                }
            }
            out.flush()?;
            eprintln!("{}", tester::summary(&plugin, events));
            Ok(Exit::Success)
        }
    }
}

fn run(path: &Path, data_dir: Option<PathBuf>) -> anyhow::Result<Exit> {
    // SIGHUP's default action ends the process: ignored until the reload handler is installed
    // (a SIGHUP in between is lost; the config is read after this line).
    // SAFETY: signal only changes this process's disposition of SIGHUP.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    // Absolute (symbolic links kept, as plugin paths are relative to the file's directory), so
    // that `kedge reload` run from another directory finds the same file.
    let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut config = Config::load(path).map_err(flat)?;
    if let Some(d) = &data_dir {
        config.agent.data_dir.clone_from(d);
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
        let stats = std::sync::Arc::new(kedge::telemetry::Stats::default());
        let mut reloads = hangups(path.to_owned(), data_dir, stats.clone())?;
        let mut backoff = kedge::backoff::Backoff::new(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(30),
        );
        let mut reopening = false;
        let mut unacked_from = None;
        loop {
            let outcome = kedge::pipeline::run(
                &mut config,
                path,
                shutdown_signal(),
                &mut reloads,
                stats.clone(),
                unacked_from,
            )
            .await;
            match outcome {
                Err(kedge::pipeline::PipelineError::QueuePoisoned { unacked_from: from }) => {
                    reopening = true;
                    // That run already discarded the previous range; a failed open (below)
                    // did not, and keeps it.
                    unacked_from = from;
                }
                // While reopening after a failed I/O the disk may still be full: keep trying.
                Err(kedge::pipeline::PipelineError::Queue(kedge_queue::QueueError::Db {
                    source: e,
                    ..
                })) if reopening && e.is_io() => {
                    tracing::error!(error = %e, "cannot reopen the queue yet");
                }
                // The previous run's tasks may not all have let go of the queue yet.
                Err(kedge::pipeline::PipelineError::Queue(
                    e @ kedge_queue::QueueError::InUse { .. },
                )) if reopening => {
                    tracing::error!(error = %e, "cannot reopen the queue yet");
                }
                other => {
                    other?;
                    return Ok(Exit::Success);
                }
            }
            // Reopen rather than exit: a restart by systemd would do the same, slower, and
            // without systemd nothing would.
            let delay = backoff.next_delay();
            tracing::warn!(retry_in = ?delay, "reopening the queue");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown_signal() => return Ok(Exit::Success),
            }
        }
    })
}

/// Re-reads the config file at `path` on every SIGHUP, for the pipeline to apply. Installed
/// before the pipeline starts: SIGHUP's default action would end the process.
fn hangups(
    path: PathBuf,
    data_dir: Option<PathBuf>,
    stats: std::sync::Arc<kedge::telemetry::Stats>,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<kedge::reload::ReloadRequest>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            // Numbered before the file is read: see `ReloadStats`.
            let number = stats.reload.begin_read();
            tracing::info!(config = %path.display(), reload = number, "SIGHUP received: reloading the config");
            let config = Config::load(&path)
                .map(|mut c| {
                    if let Some(d) = &data_dir {
                        c.agent.data_dir.clone_from(d);
                    }
                    c
                })
                .map_err(|e| e.to_string());
            let request = kedge::reload::ReloadRequest { number, config };
            if tx.send(request).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    /// The repository's Markdown and TOML files (the docs, the example configs, the plugin
    /// templates), outside build output, vendored code and fuzz inputs.
    fn doc_files() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut out = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if path.is_dir() {
                    let skip = name.starts_with('.')
                        || name.starts_with("target")
                        || ["vendor", "corpus", "node_modules", "toolchain"]
                            .contains(&name.as_str());
                    if !skip {
                        dirs.push(path);
                    }
                } else if name.ends_with(".md") || name.ends_with(".toml") {
                    out.push(path);
                }
            }
        }
        out
    }

    /// Each `kedge <subcommand> …` the text shows: in code blocks, config comments and inline
    /// code; whether it is a whole command (code block or comment) rather than a mention.
    fn commands(text: &str, subcommands: &[String]) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut in_block = false;
        // A shell line continued with `\` is one command.
        let mut lines = Vec::new();
        let mut pending = String::new();
        for line in text.lines() {
            match line.strip_suffix('\\') {
                Some(head) => pending.push_str(head),
                None => {
                    pending.push_str(line);
                    lines.push(std::mem::take(&mut pending));
                }
            }
        }
        for line in &lines {
            let trimmed = line.trim_start();
            if trimmed.starts_with("```") {
                in_block = !in_block;
                continue;
            }
            let mut candidates: Vec<(&str, bool)> = Vec::new();
            let code = trimmed.trim_start_matches(['#', '$', ' ']);
            if in_block || trimmed.starts_with('#') {
                candidates.push((code, true));
            }
            candidates.extend(line.split('`').skip(1).step_by(2).map(|span| (span, false)));
            for (candidate, whole) in candidates {
                let Some(rest) = candidate.trim().strip_prefix("kedge ") else {
                    continue;
                };
                // The command ends at a comment or a shell operator.
                let end = [" #", "&&", "|", ">", ";", "(", "$"]
                    .iter()
                    .filter_map(|op| rest.find(op))
                    .min()
                    .unwrap_or(rest.len());
                let command = rest[..end].trim();
                let first = command.split_whitespace().next().unwrap_or("");
                if subcommands.iter().any(|s| s == first)
                    && !command.contains('…')
                    && !command.contains("...")
                {
                    out.push((command.to_owned(), whole));
                }
            }
        }
        out
    }

    #[test]
    fn every_kedge_command_the_docs_show_is_one_kedge_accepts() {
        let subcommands: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        let mut checked = 0;
        let mut wrong = Vec::new();
        for file in doc_files() {
            let text = std::fs::read_to_string(&file).unwrap();
            for (command, whole) in commands(&text, &subcommands) {
                let words = command
                    .split_whitespace()
                    .map(|w| w.trim_matches(['"', '\'', ',', '.', ':']));
                let args: Vec<&str> = std::iter::once("kedge").chain(words).collect();
                checked += 1;
                match Cli::try_parse_from(&args) {
                    Ok(_) => {}
                    // A mention in prose may leave out what the command needs.
                    Err(e)
                        if !whole
                            && matches!(
                                e.kind(),
                                ErrorKind::MissingRequiredArgument
                                    | ErrorKind::InvalidValue
                                    | ErrorKind::MissingSubcommand
                                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                            ) => {}
                    Err(e) => wrong.push(format!(
                        "{}: `kedge {command}`: {}",
                        file.display(),
                        e.kind()
                    )),
                }
            }
        }
        assert!(
            checked > 40,
            "only {checked} commands found: the scan is broken"
        );
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn clap_exits_on_a_usage_error_with_the_code_of_kedges_own_errors() {
        Cli::command().debug_assert();
        let usage = Cli::try_parse_from(["kedge", "frobnicate"])
            .err()
            .expect("a usage error");
        assert_eq!(usage.exit_code(), Exit::Error as i32);
    }
}
