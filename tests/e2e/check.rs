//! `kedge check` with plugins: it loads each one as `kedge run` would (compile or artifact,
//! instantiate, `init` with its config, `tick` against its world), names every one that cannot
//! start, and `--no-plugins` skips all that.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tempfile::TempDir;

use crate::plugins::plugin;
use crate::support::kedge::kedge_command;
use crate::support::run;

/// Writes a config with `plugins` (`[[plugin]]` sections) to a fresh temp dir.
fn config_with(plugins: &str) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("kedge-e2e-check-plugins-")
        .tempdir()
        .expect("temp dir");
    write_config(dir.path(), "127.0.0.1:1", plugins);
    dir
}

/// Writes `dir/kedge.toml`: Kafka at `bootstrap`, the default topic `readings`, then `rest`.
fn write_config(dir: &Path, bootstrap: &str, rest: &str) {
    std::fs::write(
        dir.join("kedge.toml"),
        format!(
            "[agent]\ndata_dir = \"{}\"\n[mqtt]\nsubscriptions = [{{ filter = \"sensors/#\", qos = 1 }}]\n\
             [kafka]\nbootstrap = [\"{bootstrap}\"]\n[routing]\ndefault_topic = \"readings\"\n\n{rest}",
            dir.display()
        ),
    )
    .expect("write config");
}

/// [`write_config`] routing `alarms/#` to the topic `alarms` besides `readings`.
fn routed_to(dir: &Path, bootstrap: &str, alarms: &str) {
    write_config(
        dir,
        bootstrap,
        &format!("[[routing.rules]]\nfilter = \"alarms/#\"\ntopic = \"{alarms}\"\n"),
    );
}

/// A `[[plugin]]` section for the built example `example`.
fn section(name: &str, example: &str, extra: &str) -> String {
    format!(
        "[[plugin]]\nname = \"{name}\"\npath = \"{}\"\n{extra}\n",
        plugin(example).display()
    )
}

/// Runs `kedge check --config DIR/kedge.toml` with `args` after it.
fn check(dir: &Path, args: &[&str]) -> Output {
    let mut command = kedge_command();
    command
        .args(["check", "--config"])
        .arg(dir.join("kedge.toml"))
        .args(args);
    // Compiling a component takes seconds on a busy machine.
    run(command, Duration::from_secs(300))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Plugins `kedge run` refuses, each for another reason, around one that is fine.
fn broken() -> TempDir {
    config_with(
        &[
            section(
                "hot-units",
                "rust-units",
                "[plugin.config]\nmax_c = \"hot\"",
            ),
            section("averages", "rust-downsample", "tick = \"1s\""),
            section("ticking-units", "rust-units", "tick = \"1s\""),
        ]
        .concat(),
    )
}

#[test]
fn check_names_every_plugin_that_cannot_start() {
    let dir = broken();
    let out = check(dir.path(), &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(2),
        "a config `kedge run` refuses must fail `kedge check` with the config-error code\n\
         stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let error = |prefix: &str| {
        stderr
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in stderr:\n{stderr}"))
            .to_owned()
    };
    // init refused its config, with the plugin's own reason.
    let hot = error("error: plugin[0] (hot-units): ");
    assert!(hot.contains("max_c") && hot.contains("hot"), "{hot}");
    // The second failure is reported too, not only the first.
    let ticking = error("error: plugin[2] (ticking-units): ");
    assert!(
        ticking.contains("`tick` is set") && ticking.contains("`transform` world"),
        "{ticking}"
    );
    assert!(
        !stderr.contains("plugin[1]"),
        "the good plugin is not an error:\n{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("plugin averages: loaded")),
        "the plugin that loads is reported as loaded:\n{stdout}"
    );
    assert!(
        !stdout.contains("configuration is valid"),
        "a config with a broken plugin is not valid:\n{stdout}"
    );
}

#[test]
fn check_reports_each_plugin_it_loaded_with_its_world_and_compile_time() {
    let dir = config_with(
        &[
            section("units", "rust-units", "[plugin.config]\nmax_c = \"60\""),
            section(
                "averages",
                "rust-downsample",
                "tick = \"1s\"\n[plugin.config]\nwindow_ms = \"10000\"",
            ),
        ]
        .concat(),
    );
    // An artifact from `kedge plugin compile` is loaded rather than compiled.
    let cwasm = dir.path().join("units.cwasm");
    let mut compile = kedge_command();
    compile
        .args(["plugin", "compile"])
        .arg(plugin("rust-units"))
        .arg("-o")
        .arg(&cwasm);
    let out = run(compile, Duration::from_secs(300));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = dir.path().join("kedge.toml");
    let mut toml = std::fs::read_to_string(&config).expect("read config");
    toml.push_str("[[plugin]]\nname = \"precompiled\"\npath = \"units.cwasm\"\n");
    std::fs::write(&config, toml).expect("write config");

    let out = check(dir.path(), &[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "kedge check failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let line = |name: &str| {
        let prefix = format!("plugin {name}: loaded");
        stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?}:\n{stdout}"))
            .to_owned()
    };
    let units = line("units");
    assert!(
        units.contains("world transform") && units.contains("compiled in "),
        "{units}"
    );
    let averages = line("averages");
    assert!(
        averages.contains("world windowed") && averages.contains("compiled in "),
        "{averages}"
    );
    let precompiled = line("precompiled");
    assert!(
        precompiled.contains("world transform")
            && precompiled.contains("artifact")
            && !precompiled.contains("compiled in "),
        "{precompiled}"
    );
    assert!(stdout.contains("configuration is valid"), "{stdout}");
}

#[test]
fn check_no_plugins_reads_the_config_without_loading_them() {
    let dir = broken();
    let out = check(dir.path(), &["--no-plugins"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "--no-plugins must not start the plugins ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(!stdout.contains(": loaded"), "{stdout}");

    // It still refuses a file that is no plugin at all, as before.
    std::fs::write(dir.path().join("not.wasm"), b"not a component").expect("write");
    let config = dir.path().join("kedge.toml");
    let mut toml = std::fs::read_to_string(&config).expect("read config");
    toml.push_str("[[plugin]]\nname = \"junk\"\npath = \"not.wasm\"\n");
    std::fs::write(&config, toml).expect("write config");
    let out = check(dir.path(), &["--no-plugins"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("plugin[3] (junk):") && stderr.contains("is neither a WebAssembly"),
        "{stderr}"
    );
}

/// `kedge check --kafka` asks the cluster about every topic the routing names, over the
/// connection `[kafka]` describes, and creates none: with all of them there it exits 0 and
/// gives their partitions; with one missing it exits 1 and says what becomes of its records;
/// with Kafka unreachable it exits 2. That it creates no topic is shown on a broker that
/// creates topics on request (the next test).
#[test]
fn check_kafka_asks_the_cluster_about_every_routed_topic_and_creates_none() {
    use crate::support::tansu::Tansu;
    let tansu = Tansu::start();
    tansu.create_topic("readings", 3);
    tansu.create_topic("alarms", 1);
    tansu.create_topic("kedge-dead-letter", 1);
    let dir = config_with("");
    let write = |bootstrap: &str, alarms: &str| routed_to(dir.path(), bootstrap, alarms);

    write(&tansu.bootstrap(), "alarms");
    let out = check(dir.path(), &["--kafka"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for line in [
        "  topic       alarms: 1 partition\n",
        "  topic       readings: 3 partitions\n",
        "  topic       kedge-dead-letter: 1 partition\n",
    ] {
        assert!(stdout.contains(line), "{line:?} in:\n{stdout}");
    }

    write(&tansu.bootstrap(), "alarmz");
    let out = check(dir.path(), &["--kafka"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "  topic       alarmz: missing: kedge run asks Kafka to create it where the broker allows; \
             else its records go to the dead-letter topic kedge-dead-letter after 60 s\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("  topic       readings: 3 partitions\n"),
        "{stdout}"
    );

    write(
        &format!("127.0.0.1:{}", crate::support::free_port()),
        "alarms",
    );
    let out = check(dir.path(), &["--kafka"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot ask Kafka (127.0.0.1:"), "{stderr}");
    // Without --kafka nothing is asked: the same config is valid.
    assert_eq!(check(dir.path(), &[]).status.code(), Some(0));
}

/// Where the broker creates topics a Metadata request allows it to (kafka-sim with
/// `auto.create.topics.enable`), `kedge check --kafka` still creates none: a missing topic is
/// missing when asked, and again when asked a second time.
#[test]
fn check_kafka_creates_no_topic_even_where_the_broker_would() {
    let mut cluster = kafka_sim::Cluster::new()
        .with_topic("readings", 2)
        .with_topic("kedge-dead-letter", 1);
    cluster.set_auto_create(Some(3));
    let broker = kafka_sim::SimBroker::start(cluster);
    let dir = config_with("");
    routed_to(dir.path(), &broker.addr().to_string(), "alarms");
    for _ in 0..2 {
        let out = check(dir.path(), &["--kafka"]);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{stdout}\n{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains("  topic       alarms: missing: "),
            "{stdout}"
        );
        assert!(
            stdout.contains("  topic       readings: 2 partitions\n"),
            "{stdout}"
        );
    }
}

/// A topic Kafka refuses to describe (no DESCRIBE for kedge's user): `kedge check --kafka` names
/// the error with what the user needs, and `kedge audit` names it too instead of calling the
/// topic absent or skipping it.
#[test]
fn check_kafka_and_audit_name_the_error_of_a_topic_kafka_refuses() {
    let mut cluster = kafka_sim::Cluster::new()
        .with_topic("readings", 2)
        .with_topic("alarms", 1)
        .with_topic("kedge-dead-letter", 1);
    cluster
        .deny_describe("alarms", true)
        .expect("alarms exists");
    let broker = kafka_sim::SimBroker::start(cluster);
    let bootstrap = broker.addr().to_string();
    let dir = config_with("");
    routed_to(dir.path(), &bootstrap, "alarms");

    let out = check(dir.path(), &["--kafka"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "  topic       alarms: Kafka answers TOPIC_AUTHORIZATION_FAILED for it: the user kedge \
             logs in as needs WRITE and READ on it\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("  topic       readings: 2 partitions\n"),
        "{stdout}"
    );

    let config = dir.path().join("kedge.toml");
    for args in [
        vec!["--bootstrap", bootstrap.as_str(), "--topic", "alarms"],
        vec!["--config", config.to_str().expect("utf-8 path")],
    ] {
        let (code, stdout, stderr) = crate::audit::kedge_audit(&args);
        assert_eq!(code, 2, "{args:?}\n{stdout}\n{stderr}");
        assert!(
            stderr.contains("Kafka answers TOPIC_AUTHORIZATION_FAILED for topic alarms"),
            "{args:?}\n{stderr}"
        );
    }
}
