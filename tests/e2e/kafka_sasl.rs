//! SASL against a real broker: tansu 0.6 with `--authentication` runs SaslHandshake and a
//! SCRAM-SHA-512 exchange but, on memory storage, can hold no users (creating one needs an
//! authenticated connection), and it hangs up on mechanisms it lacks rather than answering
//! UNSUPPORTED_SASL_MECHANISM. So only the failure paths can be tested end to end: kedge names the user, the broker and the broker's reason, never logs
//! the password, keeps running and rate-limits the complaint. A successful SCRAM login is covered
//! by the unit tests (RFC 7677 vector, scripted broker) only.

use std::time::Duration;

use crate::support::free_port;
use crate::support::kedge::{Kedge, pipeline_config};
use crate::support::tls::AuthTansu;
use crate::support::wait_until;

/// A password that must never appear in the log.
const PASSWORD: &str = "never-log-me-7f3a";

/// Everything goes to `readings`.
const ROUTING: &str = r#"[routing]
default_topic = "readings""#;

/// Runs kedge with `[kafka.sasl]` against `tansu` until its log contains `expected`.
fn assert_reported(tansu: &AuthTansu, mechanism: &str, expected: &str) {
    // No MQTT broker is needed to see the Kafka side fail: kedge retries MQTT on its own.
    let config = format!(
        "{}\n[kafka.sasl]\nmechanism = \"{mechanism}\"\nusername = \"edge-user\"\npassword = \"{PASSWORD}\"\n",
        pipeline_config(free_port(), &tansu.bootstrap(), ROUTING)
    );
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
