//! SASL against a real broker: tansu 0.6 with `--authentication` runs SaslHandshake and a
//! SCRAM-SHA-512 exchange but, on memory storage, can hold no users (creating one needs an
//! authenticated connection), and it hangs up on mechanisms it lacks rather than answering
//! UNSUPPORTED_SASL_MECHANISM. So only the failure paths can be tested end to end: kedge names the user, the broker and the broker's reason, never logs
//! the password, keeps running and rate-limits the complaint. A successful SCRAM login is covered
//! by the unit tests (RFC 7677 vector, scripted broker) only. `kedge audit --config` with the
//! same `[kafka.sasl]` fails the same way, with exit code 2.

use std::time::Duration;

use crate::audit::kedge_audit;
use crate::support::free_port;
use crate::support::kedge::{Kedge, pipeline_config};
use crate::support::tls::AuthTansu;
use crate::support::wait_until;

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
