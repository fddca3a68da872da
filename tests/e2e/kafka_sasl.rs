//! SASL against a real broker: tansu 0.6 with `--authentication` runs SaslHandshake and a
//! SCRAM exchange against the users its storage holds, and hangs up on mechanisms it lacks
//! (PLAIN among them) rather than answering UNSUPPORTED_SASL_MECHANISM. On memory storage it can
//! hold no users (a user is created on an unauthenticated broker, which memory storage forgets
//! on the restart that turns authentication on): the failure paths run on it, and kedge names
//! the user, the broker and the broker's reason, never logs the password, keeps running and
//! rate-limits the complaint. A successful SCRAM-SHA-256 and -512 login runs against a tansu
//! with a persistent store (`KEDGE_TANSU_SQLITE`, built by scripts/build-tansu-sqlite.sh),
//! skipped loudly without it. `kedge audit --config` with the same `[kafka.sasl]` fails the same
//! way, with exit code 2.

use std::time::Duration;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;

use crate::audit::kedge_audit;
use crate::support::kedge::{Kedge, READINGS_ROUTING, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::tls::AuthTansu;
use crate::support::verdict::read_back;
use crate::support::{free_port, metric, python_bin, repo_root, run, wait_until};

/// A password that must never appear in the log.
const PASSWORD: &str = "never-log-me-7f3a";

/// Everything goes to `readings`.
const ROUTING: &str = r#"[routing]
default_topic = "readings""#;

/// A config for Kafka at `bootstrap` with `[kafka.sasl]` using `mechanism` and `password`.
fn sasl_config(bootstrap: &str, mechanism: &str, password: &str) -> String {
    // No MQTT broker is needed to see the Kafka side fail: kedge retries MQTT on its own. The
    // test broker has no TLS, so PLAIN must be allowed in the clear.
    format!(
        "{}\n[kafka.sasl]\nmechanism = \"{mechanism}\"\nusername = \"edge-user\"\npassword = {password}\nallow_plaintext = true\n",
        pipeline_config(free_port(), bootstrap, ROUTING)
    )
}

/// Runs kedge with `[kafka.sasl]` against `tansu` until its log contains `expected`, then
/// `kedge audit` with the same config file, which must fail with the same reason.
fn assert_reported(tansu: &AuthTansu, mechanism: &str, expected: &str) {
    let config = sasl_config(&tansu.bootstrap(), mechanism, &format!("\"{PASSWORD}\""));
    let mut kedge = Kedge::start(&config);
    wait_until(
        &format!("kedge to log {expected:?}"),
        Duration::from_secs(30),
        || kedge.log_text().contains(expected),
    );
    std::thread::sleep(Duration::from_secs(3));
    kedge.assert_running();
    let log = kedge.log_text();
    assert!(!log.contains(PASSWORD), "the password is in the log");
    let complaints = log.matches(expected).count();
    assert!(
        complaints < 30,
        "{complaints} log lines in ~3 s: the error is not rate-limited"
    );

    let path = kedge.config_path();
    let (code, out, err) = kedge_audit(&["--config", path.to_str().expect("UTF-8 path")]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    // The log escapes quotes; the terminal does not. One line, possibly with the cause after.
    let expected = format!("error: {}", expected.replace("\\\"", "\""));
    assert!(
        err.starts_with(&expected),
        "expected {expected:?}, got:\n{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        !err.contains(PASSWORD),
        "the password is in the audit's error"
    );
    assert!(out.is_empty(), "{out}");
}

#[test]
fn scram_login_rejected_by_tansu_is_reported() {
    let tansu = AuthTansu::start();
    let expected = format!(
        "authentication failed for user \\\"edge-user\\\" at Kafka broker {}: the server \
         rejected the SCRAM exchange: unknown-user",
        tansu.bootstrap()
    );
    assert_reported(&tansu, "SCRAM-SHA-512", &expected);
}

#[test]
fn mechanism_tansu_lacks_is_reported() {
    let tansu = AuthTansu::start();
    let expected = format!(
        "authentication failed for user \\\"edge-user\\\" at Kafka broker {}: SaslHandshake for \
         PLAIN failed (does the broker offer it?)",
        tansu.bootstrap()
    );
    assert_reported(&tansu, "PLAIN", &expected);
}

#[test]
fn audit_with_an_unresolvable_password_exits_2_before_connecting() {
    // Nothing listens there: the password is resolved before anything connects.
    let config = sasl_config(
        &format!("127.0.0.1:{}", free_port()),
        "SCRAM-SHA-512",
        r#"{ env = "KEDGE_E2E_UNSET_SASL_PASSWORD" }"#,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("kedge.toml");
    std::fs::write(
        &path,
        config.replace("@DATA_DIR@", dir.path().to_str().expect("UTF-8 path")),
    )
    .expect("write kedge.toml");
    let (code, out, err) = kedge_audit(&["--config", path.to_str().expect("UTF-8 path")]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        err,
        "error: kafka.sasl.password: environment variable KEDGE_E2E_UNSET_SASL_PASSWORD is not \
         set\n"
    );
}

#[test]
fn scram_logins_succeed_against_users_the_broker_stores() {
    let Some(binary) = std::env::var_os("KEDGE_TANSU_SQLITE").map(PathBuf::from) else {
        eprintln!(
            "\n*** SKIPPED scram_logins_succeed_against_users_the_broker_stores: no tansu built ***\n\
             *** with libsql here; run scripts/build-tansu-sqlite.sh once (35-70 min), or set ***\n\
             *** KEDGE_TANSU_SQLITE=/path/to/tansu.                                          ***\n"
        );
        return;
    };
    let port = free_port();
    let mut tansu = Tansu::start_with(&binary, port, port, "sqlite://tansu.db");
    tansu.create_topic("readings", 1);
    // Users are created while the broker still lets anyone in, then it requires a login.
    let mut create = Command::new(python_bin());
    create
        .arg(repo_root().join("tests/peers/scram_user.py"))
        .args([&tansu.bootstrap(), "edge-user", PASSWORD])
        .args(["SCRAM-SHA-256", "SCRAM-SHA-512"]);
    let out = run(create, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "creating the SCRAM user failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tansu.restart_with(&["--authentication"]);

    let mosquitto = Mosquitto::start();
    let mut sent_all = Vec::new();
    for (round, mechanism) in ["SCRAM-SHA-256", "SCRAM-SHA-512"].into_iter().enumerate() {
        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let config = format!(
            "{}\n[kafka.sasl]\nmechanism = \"{mechanism}\"\nusername = \"edge-user\"\n\
             password = \"{PASSWORD}\"\n[metrics]\nlisten = \"{metrics}\"\n",
            pipeline_config(mosquitto.port(), &tansu.bootstrap(), READINGS_ROUTING)
        );
        let mut kedge = Kedge::start(&config);
        mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));
        let sent: Vec<_> = readings(20 * (round + 1), 2).split_off(20 * round);
        Publishing::start(mosquitto.port(), sent.clone(), None).wait_acked(Duration::from_secs(30));
        // kedge's own evidence: Kafka acknowledged its batches over the authenticated connection.
        wait_until(
            &format!("{mechanism}: Kafka to acknowledge 20 records"),
            Duration::from_secs(60),
            || metric(metrics, "kedge_records_delivered_total", "") >= 20.0,
        );
        assert_eq!(kedge.log_count("authentication failed"), 0, "{mechanism}");
        kedge.assert_running();
        sent_all.extend(sent);
    }

    // The broker checks the password: a wrong one is refused.
    let config = sasl_config(&tansu.bootstrap(), "SCRAM-SHA-512", "\"wrong-password\"");
    let kedge = Kedge::start(&config);
    wait_until(
        "kedge to report the refused password",
        Duration::from_secs(30),
        || kedge.log_text().contains("authentication failed for user"),
    );
    drop(kedge);

    // The independent consumer speaks no SASL: read back once the broker lets it in again.
    tansu.restart_with(&[]);
    let verdict = read_back(
        &tansu.bootstrap(),
        "readings",
        &sent_all,
        Duration::from_secs(60),
    );
    verdict.report("SCRAM logins", sent_all.len());
    verdict.assert_exactly_once();
}
