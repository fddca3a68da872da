//! `kedge check` and `kedge --version`: bad configs exit 2 with `error: FILE:LINE:COLUMN: key: ...`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use crate::support::kedge::kedge_bin;
use crate::support::{repo_root, run};

/// A valid config (the documented example); each test breaks one thing in it.
const VALID: &str = r#"[agent]
device_id = "dev-1"
data_dir = "@DATA_DIR@"
shutdown_timeout = "10s"

[mqtt]
host = "127.0.0.1"
port = 1883
protocol = "5"
receive_maximum = 2048
reconnect = { initial = "100ms", max = "2s" }

[[mqtt.subscriptions]]
filter = "sensors/#"
qos = 1

[routing]
default_topic = "sensors"
dead_letter_topic = "kedge-dead-letter"

[[routing.rules]]
filter = "sensors/+/reading"
topic = "readings"
key_level = 1

[kafka]
bootstrap = ["127.0.0.1:9092"]
linger = "5ms"
retry_backoff = { initial = "100ms", max = "1s" }

[queue]
commit_window = "5ms"

[log]
level = "info"
"#;

/// A config file written for `kedge check`, in a temp dir that also serves as its data dir.
struct ConfigFile {
    /// Holds the file.
    dir: TempDir,
    /// The config text as written.
    text: String,
}

impl ConfigFile {
    /// The valid config with `from` replaced by `to` (which must occur exactly once).
    fn edited(from: &str, to: &str) -> ConfigFile {
        assert_eq!(
            VALID.matches(from).count(),
            1,
            "{from:?} must occur once in the valid config"
        );
        ConfigFile::write(&VALID.replace(from, to))
    }

    /// Writes `text` (with `@DATA_DIR@` replaced) to `kedge.toml` in a fresh temp dir.
    fn write(text: &str) -> ConfigFile {
        let dir = tempfile::Builder::new()
            .prefix("kedge-e2e-check-")
            .tempdir()
            .expect("temp dir");
        let text = text.replace("@DATA_DIR@", dir.path().to_str().expect("UTF-8 temp path"));
        std::fs::write(dir.path().join("kedge.toml"), &text).expect("write config");
        ConfigFile { dir, text }
    }

    /// Path of the file.
    fn path(&self) -> PathBuf {
        self.dir.path().join("kedge.toml")
    }

    /// 1-based line and column where `needle` (occurring once) starts in the file.
    fn locate(&self, needle: &str) -> (usize, usize) {
        assert_eq!(
            self.text.matches(needle).count(),
            1,
            "{needle:?} must occur once"
        );
        let before = &self.text[..self.text.find(needle).expect("needle present")];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (
            before.matches('\n').count() + 1,
            before[line_start..].chars().count() + 1,
        )
    }
}

/// Runs `kedge` with `args`, bounded in time.
fn kedge(args: &[&std::ffi::OsStr]) -> Output {
    let mut command = Command::new(kedge_bin());
    command.args(args);
    run(command, Duration::from_secs(20))
}

/// Runs `kedge check --config FILE`.
fn check(path: &Path) -> Output {
    kedge(&["check".as_ref(), "--config".as_ref(), path.as_os_str()])
}

/// Asserts exit code 2 and returns the single `error: ` line on stderr.
fn error_line(config: &ConfigFile) -> String {
    let output = check(&config.path());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(2),
        "exit status of `kedge check` on a bad config; stderr:\n{stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error: "))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "exactly one `error: ` line expected on stderr:\n{stderr}"
    );
    errors[0].to_owned()
}

/// Asserts that `kedge check` reports `key` at the position where `needle` starts.
fn assert_error_at(config: &ConfigFile, needle: &str, key: &str) {
    let (line, column) = config.locate(needle);
    let expected = format!(
        "error: {}:{line}:{column}: {key}: ",
        config.path().display()
    );
    let error = error_line(config);
    assert!(
        error.starts_with(&expected),
        "expected a line starting with\n  {expected}\ngot\n  {error}"
    );
}

#[test]
fn unknown_key_is_reported_at_its_line_and_column_1() {
    let config = ConfigFile::edited(r#"linger = "5ms""#, r#"lingr = "5ms""#);
    assert_error_at(&config, "lingr", "kafka.lingr");
}

#[test]
fn wrong_type_is_reported_at_the_value() {
    let config = ConfigFile::edited("port = 1883", r#"port = "1883""#);
    assert_error_at(&config, r#""1883""#, "mqtt.port");
}

#[test]
fn bad_duration_is_reported_at_the_value() {
    let config = ConfigFile::edited(r#"linger = "5ms""#, r#"linger = "5 parsecs""#);
    assert_error_at(&config, r#""5 parsecs""#, "kafka.linger");
}

#[test]
fn missing_subscriptions_are_reported() {
    let config = ConfigFile::edited(
        "[[mqtt.subscriptions]]\nfilter = \"sensors/#\"\nqos = 1\n",
        "",
    );
    let error = error_line(&config);
    let prefix = format!("error: {}:", config.path().display());
    assert!(
        error.starts_with(&prefix),
        "expected a line starting with {prefix}, got {error}"
    );
    assert!(
        error.contains("mqtt.subscriptions"),
        "error does not name mqtt.subscriptions: {error}"
    );
}

#[test]
fn bad_topic_name_in_a_rule_is_reported_at_the_value() {
    let config = ConfigFile::edited(r#"topic = "readings""#, r#"topic = "bad topic!""#);
    assert_error_at(&config, r#""bad topic!""#, "routing.rules[0].topic");
}

#[test]
fn a_listener_other_machines_reach_is_refused_without_allow_remote() {
    let refused = ConfigFile::edited("[log]\n", "[metrics]\nlisten = \"0.0.0.0:9464\"\n\n[log]\n");
    assert_error_at(&refused, r#""0.0.0.0:9464""#, "metrics.listen");
    assert!(error_line(&refused).contains("metrics.allow_remote = true"));
    let allowed = ConfigFile::edited(
        "[log]\n",
        "[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\n\n[log]\n",
    );
    let output = check(&allowed.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn valid_config_passes_check() {
    let config = ConfigFile::write(VALID);
    let output = check(&config.path());
    assert!(
        output.status.success(),
        "kedge check failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn repository_default_config_passes_check() {
    let path = repo_root().join("config/kedge.toml");
    assert!(path.is_file(), "{} is missing", path.display());
    let output = check(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kedge check {} failed ({}):\n{}",
        path.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.trim().is_empty(), "kedge check printed no pipeline");
}

#[test]
fn version_prints_the_crate_version() {
    let output = kedge(&["--version".as_ref()]);
    assert!(
        output.status.success(),
        "kedge --version failed ({})",
        output.status
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim_end(),
        format!("kedge {}", env!("CARGO_PKG_VERSION"))
    );
}
