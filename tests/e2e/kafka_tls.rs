//! Kafka over TLS: records reach the broker through TLS with `kafka.tls.ca_file`; with a CA that
//! did not sign the broker's certificate kedge says so clearly, keeps retrying, and loses nothing
//! once the CA file is fixed and kedge restarted. `kedge audit --config` reads them back through
//! TLS with the same config file.

use std::path::Path;
use std::time::Duration;

use crate::audit::kedge_audit;
use crate::support::consume::{consume, tally};
use crate::support::kedge::{DEVICE_ID, Kedge, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Message, Publishing, readings};
use crate::support::tls::TlsKafka;
use crate::support::wait_until;

/// Readings published per test.
const READINGS: usize = 500;

use crate::support::kedge::READINGS_ROUTING as ROUTING;

/// A pipeline config for `kafka` with `[kafka.tls]` trusting `ca_file`.
fn tls_config(mosquitto: &Mosquitto, kafka: &TlsKafka, ca_file: &Path) -> String {
    format!(
        "{}\n[kafka.tls]\nca_file = \"{}\"\n",
        pipeline_config(mosquitto.port(), &kafka.bootstrap(), ROUTING),
        ca_file.display()
    )
}

/// Every reading is in `readings` exactly once.
fn assert_all_arrived(kafka: &TlsKafka, readings: &[Message]) {
    let records = consume(
        &kafka.bootstrap(),
        "readings",
        readings.len(),
        Duration::from_secs(120),
    );
    let t = tally(readings, &records);
    assert_eq!(t.unknown, 0, "records that are not readings");
    assert_eq!(t.missing.len(), 0, "readings missing: {:?}", t.missing);
    assert_eq!(t.duplicates, 0, "duplicated readings");
}

/// `kedge audit --config` with kedge's own config file; (exit code, stdout, stderr).
fn audit(kedge: &Kedge, extra: &[&str]) -> (i32, String, String) {
    let config = kedge.config_path();
    let mut args = vec!["--config", config.to_str().expect("UTF-8 path")];
    args.extend(extra);
    kedge_audit(&args)
}

/// `kedge audit --config` with kedge's config finds every reading, once, through TLS.
fn assert_audit_clean(kafka: &TlsKafka, kedge: &Kedge) {
    let sessions = kafka.tls_sessions();
    let (code, out, err) = audit(kedge, &[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    // kedge numbers its records from 0; the audit defaults to the config's device.
    let expected = format!(
        ": {READINGS} records, kedge-seq 0..={}, 0 missing, 0 duplicates",
        READINGS - 1
    );
    assert!(
        out.starts_with(&format!("device {DEVICE_ID} queue ")) && out.contains(&expected),
        "expected {expected:?} in:\n{out}"
    );
    assert!(out.ends_with("clean\n"), "{out}");
    // The terminator passes plain Kafka through, so only its sessions prove TLS was used.
    assert!(
        kafka.tls_sessions() > sessions,
        "the audit made no TLS session"
    );
}

#[test]
fn records_reach_kafka_over_tls() {
    let kafka = TlsKafka::start();
    kafka.create_topic("readings", 3);
    let mosquitto = Mosquitto::start();
    let mut kedge = Kedge::start(&tls_config(&mosquitto, &kafka, &kafka.ca_file()));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let published = readings(READINGS, 10);
    let publishing = Publishing::start(mosquitto.port(), published.clone(), None);
    publishing.wait_acked(Duration::from_secs(60));
    assert_all_arrived(&kafka, &published);
    // kedge cannot speak plain Kafka to the terminator once TLS is configured, so its records
    // arrived through TLS; the sessions prove the terminator saw TLS at all.
    assert!(kafka.tls_sessions() >= 1, "no TLS session was made");
    assert_audit_clean(&kafka, &kedge);

    // --bootstrap replaces the address only: TLS still applies (plain Kafka would pass the
    // terminator without a session).
    let sessions = kafka.tls_sessions();
    let bootstrap = kafka.bootstrap();
    let (code, out, err) = audit(&kedge, &["--bootstrap", &bootstrap, "--topic", "readings"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.starts_with(&format!("device {DEVICE_ID} queue "))
            && out.contains(&format!(": {READINGS} records")),
        "{out}"
    );
    assert!(
        kafka.tls_sessions() > sessions,
        "the audit made no TLS session"
    );
    kedge.assert_running();
}

#[test]
fn records_reach_kafka_over_mutual_tls() {
    let kafka = TlsKafka::start_mutual();
    kafka.create_topic("readings", 3);
    let mosquitto = Mosquitto::start();
    let (cert, key) = kafka.client_cert();
    // The certificate is also valid for "localhost": the configured name replaces the host.
    let config = format!(
        "{}client_cert_file = \"{}\"\nclient_key_file = \"{}\"\nserver_name = \"localhost\"\n",
        tls_config(&mosquitto, &kafka, &kafka.ca_file()),
        cert.display(),
        key.display()
    );
    let mut kedge = Kedge::start(&config);
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let published = readings(READINGS, 10);
    let publishing = Publishing::start(mosquitto.port(), published.clone(), None);
    publishing.wait_acked(Duration::from_secs(60));
    assert_all_arrived(&kafka, &published);
    // The terminator completes no handshake without a client certificate the CA signed.
    assert!(kafka.tls_sessions() >= 1, "no TLS session was made");
    assert_audit_clean(&kafka, &kedge);
    kedge.assert_running();
}

#[test]
fn wrong_ca_is_reported_and_nothing_is_lost() {
    let kafka = TlsKafka::start();
    kafka.create_topic("readings", 3);
    let mosquitto = Mosquitto::start();
    // The config names a CA file whose content is fixed later, as an operator would.
    let ca_dir = tempfile::tempdir().expect("temp dir");
    let ca_file = ca_dir.path().join("kafka-ca.pem");
    std::fs::copy(kafka.wrong_ca_file(), &ca_file).expect("copy the wrong CA");
    let mut kedge = Kedge::start(&tls_config(&mosquitto, &kafka, &ca_file));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));

    let published = readings(READINGS, 10);
    let publishing = Publishing::start(mosquitto.port(), published.clone(), None);
    publishing.wait_acked(Duration::from_secs(60));

    let expected = format!(
        "cannot connect to Kafka broker {}: TLS handshake failed: the broker's certificate is \
         not signed by a trusted CA (check kafka.tls.ca_file)",
        kafka.bootstrap()
    );
    wait_until(
        "kedge to log the untrusted certificate",
        Duration::from_secs(30),
        || kedge.log_text().contains(&expected),
    );
    // Retried with backoff, not a tight loop; and kedge waits rather than exits.
    std::thread::sleep(Duration::from_secs(3));
    kedge.assert_running();
    let complaints = kedge.log_text().matches(&expected).count();
    assert!(
        complaints < 30,
        "{complaints} log lines in ~3 s: the error is not rate-limited"
    );
    // The audit trusts what kedge trusts, and says why it cannot read.
    let (code, out, err) = audit(&kedge, &[]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(&expected), "expected {expected:?} in:\n{err}");
    assert_eq!(
        kafka.tls_sessions(),
        0,
        "a TLS session with an untrusted CA"
    );

    kedge.terminate(Duration::from_secs(30));
    std::fs::copy(kafka.ca_file(), &ca_file).expect("install the right CA");
    kedge.restart();
    assert_all_arrived(&kafka, &published);
    assert!(kafka.tls_sessions() >= 1, "no TLS session was made");
    assert_audit_clean(&kafka, &kedge);
    kedge.assert_running();
}

#[test]
fn certificate_for_another_name_is_reported() {
    let kafka = TlsKafka::start();
    let mosquitto = Mosquitto::start();
    let config = format!(
        "{}server_name = \"kafka.wrong.example\"\n",
        tls_config(&mosquitto, &kafka, &kafka.ca_file())
    );
    let mut kedge = Kedge::start(&config);
    let expected = format!(
        "cannot connect to Kafka broker {}: TLS handshake failed: the broker's certificate is \
         not valid for the name \\\"kafka.wrong.example\\\" (check kafka.tls.server_name)",
        kafka.bootstrap()
    );
    wait_until(
        "kedge to log the name mismatch",
        Duration::from_secs(30),
        || kedge.log_text().contains(&expected),
    );
    kedge.assert_running();
    // The audit verifies the configured name too.
    let (code, out, err) = audit(&kedge, &[]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains(&expected.replace("\\\"", "\"")),
        "expected {expected:?} in:\n{err}"
    );
    assert_eq!(kafka.tls_sessions(), 0, "a TLS session with the wrong name");
}
