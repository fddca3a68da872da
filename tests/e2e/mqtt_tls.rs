//! MQTT over TLS to a real mosquitto whose certificate names `broker.test` only, reached at
//! 127.0.0.1: `mqtt.tls.server_name` must be what the certificate is checked against (issue 17:
//! it was ignored, and the connection failed on the name whatever the setting).

use std::time::Duration;

use crate::support::kedge::{Kedge, READINGS_ROUTING, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::tls::openssl;
use crate::support::verdict::read_back;
use crate::support::wait_until;

/// A CA, and a server certificate it signed for DNS name `broker.test` (no IP address).
fn certificates(dir: &std::path::Path) {
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:broker.test\n").expect("san.ext");
    for command in [
        "req -x509 -newkey rsa:2048 -nodes -days 1 -keyout ca.key -out ca.pem -subj /CN=kedge-e2e-ca",
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=broker.test",
        "x509 -req -days 1 -CAcreateserial -in server.csr -CA ca.pem -CAkey ca.key \
         -out server.pem -extfile san.ext",
    ] {
        openssl(dir, command);
    }
}

fn tls_config(
    mosquitto_port: u16,
    bootstrap: &str,
    ca: &std::path::Path,
    name: Option<&str>,
) -> String {
    let config = pipeline_config(mosquitto_port, bootstrap, READINGS_ROUTING);
    let name = name.map_or(String::new(), |n| format!("server_name = \"{n}\"\n"));
    format!(
        "{config}\n[mqtt.tls]\nca_file = \"{}\"\n{name}",
        ca.display()
    )
}

#[test]
fn server_name_is_what_the_broker_certificate_is_checked_against() {
    let certs = tempfile::tempdir().expect("temp dir");
    certificates(certs.path());
    let mosquitto = Mosquitto::start_tls(
        &certs.path().join("server.pem"),
        &certs.path().join("server.key"),
    );
    let tansu = Tansu::start();
    tansu.create_topic("readings", 1);
    let ca = certs.path().join("ca.pem");

    // Without server_name the certificate (broker.test) does not match 127.0.0.1.
    let kedge = Kedge::start(&tls_config(
        mosquitto.tls_port(),
        &tansu.bootstrap(),
        &ca,
        None,
    ));
    wait_until(
        "kedge to report the name mismatch",
        Duration::from_secs(30),
        || kedge.log_text().contains("certificate not valid for name"),
    );
    drop(kedge);

    let mut kedge = Kedge::start(&tls_config(
        mosquitto.tls_port(),
        &tansu.bootstrap(),
        &ca,
        Some("broker.test"),
    ));
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));
    let sent = readings(5, 1);
    Publishing::start(mosquitto.port(), sent.clone(), None).wait_acked(Duration::from_secs(30));
    let verdict = read_back(
        &tansu.bootstrap(),
        "readings",
        &sent,
        Duration::from_secs(60),
    );
    verdict.assert_exactly_once();
    kedge.assert_running();
}
