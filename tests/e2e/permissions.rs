//! What kedge writes is its own (issue 17): outside systemd (whose unit sets `UMask=0077`) the
//! queue was created world-readable (directories 755, files 644) under a usual umask of 022, and
//! a password file anyone could read was accepted silently.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::kedge::{Kedge, READINGS_ROUTING, kedge_bin, pipeline_config};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Publishing, readings};
use crate::support::tansu::Tansu;
use crate::support::verdict::read_back;

/// Every file and directory below `dir`, with its permission bits.
fn modes(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        let mode = format!("{:03o}", meta.permissions().mode() & 0o777);
        out.push((path.display().to_string(), mode));
        if meta.is_dir() {
            modes(&path, out);
        }
    }
}

#[test]
fn the_queue_is_private_to_kedge_whatever_the_umask() {
    let tansu = Tansu::start();
    tansu.create_topic("readings", 1);
    let mosquitto = Mosquitto::start();
    let config = pipeline_config(mosquitto.port(), &tansu.bootstrap(), READINGS_ROUTING);
    // The test harness runs kedge with the test's own umask (022 here, as in a login shell).
    let kedge = Kedge::start(&config);
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(30));
    let sent = readings(20, 2);
    Publishing::start(mosquitto.port(), sent.clone(), None).wait_acked(Duration::from_secs(30));
    read_back(
        &tansu.bootstrap(),
        "readings",
        &sent,
        Duration::from_secs(60),
    )
    .assert_exactly_once();

    let mut found = Vec::new();
    modes(kedge.data_dir(), &mut found);
    assert!(found.len() > 3, "the queue wrote files: {found:?}");
    let open: Vec<_> = found
        .iter()
        .filter(|(_, mode)| !mode.ends_with("00"))
        .collect();
    assert!(open.is_empty(), "open to group or others: {open:?}");
}

#[test]
fn check_warns_about_a_password_file_others_can_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("mqtt-password");
    std::fs::write(&secret, "hunter2\n").expect("write the secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = dir.path().join("kedge.toml");
    let text = pipeline_config(1883, "127.0.0.1:9092", READINGS_ROUTING).replace(
        "[mqtt]\n",
        &format!(
            "[mqtt]\nusername = \"edge\"\npassword = {{ file = \"{}\" }}\n",
            secret.display()
        ),
    );
    std::fs::write(&config, text).expect("write the config");
    let check = |_: ()| {
        Command::new(kedge_bin())
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("run kedge check")
    };
    let out = check(());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: mqtt.password: secret file") && stderr.contains("mode 644"),
        "{stderr}"
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = check(());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}
