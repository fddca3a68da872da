//! A plugin author's first hour, as a new user meets it: `kedge plugin new` outside the
//! repository in each language the default suite builds (Rust and C; Python, JavaScript and Go
//! too when `KEDGE_ALL_PLUGINS` is set, as `scripts/test --all` does), the project's own
//! `build.sh` and `test.sh`, and `kedge check` on a config naming the plugins. Then the pipeline the issue that
//! asked for `batch-info.topic` described: the author's Rust plugin, edited to route `lab-*`
//! devices to topic `lab`, then the C plugin, then a windowed plugin averaging per device. The
//! averages of lab devices must land in `lab` (no routing rule names it: only the route kept
//! through the chain can put them there), the others in `readings`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::plugins::{config_with, plugin};
use crate::support::consume::consume;
use crate::support::kedge::{Kedge, kedge_bin, kedge_command};
use crate::support::mosquitto::Mosquitto;
use crate::support::publish::{Message, Publishing};
use crate::support::tansu::Tansu;
use crate::support::{free_port, peer, repo_root, run, try_metric, wait_until};

/// `kedge plugin new NAME --lang LANG` in `dir`; returns the project's directory.
fn new_project(dir: &Path, name: &str, lang: &str) -> PathBuf {
    let mut command = kedge_command();
    command
        .current_dir(dir)
        .args(["plugin", "new", name, "--lang", lang]);
    let out = run(command, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "plugin new: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("{name}/build.sh")), "{stdout}");
    dir.join(name)
}

/// Runs one of the project's scripts with `env`; panics with its output when it fails.
fn script(project: &Path, name: &str, env: &[(&str, PathBuf)], timeout: Duration) -> String {
    let mut command = Command::new(project.join(name));
    command.current_dir(project).env("KEDGE", kedge_bin());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = run(command, timeout);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{}/{name} failed: {text}",
        project.display()
    );
    text
}

/// What each language's build needs, from the peers `scripts/install-plugin-toolchains.sh`
/// installed.
fn build_env(lang: &str) -> Vec<(&'static str, PathBuf)> {
    match lang {
        // One target directory for the test's projects, apart from the one cargo test holds.
        "rust" => vec![("CARGO_TARGET_DIR", repo_root().join("target/plugin-author"))],
        "c" => vec![
            ("WIT_BINDGEN", peer("bin/wit-bindgen")),
            ("WASM_TOOLS", peer("bin/wasm-tools")),
            ("CLANG", PathBuf::from("clang-16")),
            ("ADAPTER", peer("wasi_snapshot_preview1.reactor.wasm")),
        ],
        "python" => vec![("COMPONENTIZE_PY", peer("plugin-venv/bin/componentize-py"))],
        "js" => vec![(
            "COMPONENTIZE_JS_DIR",
            peer("js/package.json").parent().unwrap().to_owned(),
        )],
        // Go from plugins/go-route/install-toolchain.sh, offline: no module proxy, no toolchain
        // download, the support package from its local copy.
        "go" => {
            let venv = go_venv();
            vec![
                ("GO", peer("go/bin/go")),
                ("WIT_BINDGEN", peer("bin/wit-bindgen")),
                ("WASM_TOOLS", peer("bin/wasm-tools")),
                ("ADAPTER", peer("wasi_snapshot_preview1.reactor.wasm")),
                ("GO_PKG", go_pkg(&venv)),
                ("GOTOOLCHAIN", PathBuf::from("local")),
                ("GOPROXY", PathBuf::from("off")),
                ("GOSUMDB", PathBuf::from("off")),
                ("GOCACHE", venv.join("cache")),
                ("GOPATH", venv.join("gopath")),
            ]
        }
        _ => unreachable!("{lang}"),
    }
}

/// The venv plugins/go-route/install-toolchain.sh installs Go into.
fn go_venv() -> PathBuf {
    let go = peer("go/bin/go");
    go.ancestors().nth(2).expect("PEERS/go/bin/go").to_owned()
}

/// The copy of go.bytecodealliance.org/pkg that go-route's install-toolchain.sh made in
/// `venv` (there is no Go module proxy here); the newest version should there be several.
fn go_pkg(venv: &Path) -> PathBuf {
    let version = |p: &Path| -> Option<Vec<u64>> {
        let name = p.file_name()?.to_str()?.strip_prefix("pkg-v")?;
        name.split('.').map(|n| n.parse().ok()).collect()
    };
    let mut copies: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(venv)
        .unwrap_or_else(|e| panic!("{}: {e}", venv.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|p| p.join("go.mod").is_file())
        .filter_map(|p| Some((version(&p)?, p)))
        .collect();
    copies.sort();
    copies.pop().map(|(_, p)| p).unwrap_or_else(|| {
        panic!(
            "no pkg-v* in {} (run plugins/go-route/install-toolchain.sh)",
            venv.display()
        )
    })
}

/// A project made, built and checked against its own expected verdicts.
fn made_built_tested(dir: &Path, name: &str, lang: &str) -> PathBuf {
    let project = new_project(dir, name, lang);
    let built = script(
        &project,
        "build.sh",
        &build_env(lang),
        Duration::from_secs(600),
    );
    assert!(built.contains(&format!("built {name}.wasm")), "{built}");
    let tested = script(&project, "test.sh", &[], Duration::from_secs(120));
    assert!(tested.contains("every verdict as expected"), "{tested}");
    project
}

#[test]
fn a_new_author_makes_builds_tests_and_chains_plugins_that_keep_the_route() {
    let tmp = tempfile::tempdir().unwrap();
    let mut languages = vec!["rust", "c"];
    if std::env::var_os("KEDGE_ALL_PLUGINS").is_some() {
        languages.extend(["python", "js", "go"]);
    } else {
        eprintln!(
            "plugin_author: the Python, JavaScript and Go templates are checked only with KEDGE_ALL_PLUGINS (scripts/test --all)"
        );
    }
    let mut wasm = Vec::new();
    for lang in &languages {
        let name = format!("my-{lang}");
        let project = made_built_tested(tmp.path(), &name, lang);
        wasm.push(project.join(format!("{name}.wasm")));
    }

    // The author's edit: lab devices go to topic `lab`, before the template's own logic.
    let router = tmp.path().join("my-rust");
    let source = router.join("src/lib.rs");
    let text = std::fs::read_to_string(&source).unwrap();
    let edited = text.replacen(
        "        if event.value.is_empty() {",
        "        if info.subject.starts_with(\"sensors/lab-\") {\n            return Verdict::Route(\"lab\".into());\n        }\n        if event.value.is_empty() {",
        1,
    );
    assert_ne!(
        edited, text,
        "the template's event function changed: update this edit"
    );
    std::fs::write(&source, edited).unwrap();
    script(
        &router,
        "build.sh",
        &build_env("rust"),
        Duration::from_secs(600),
    );

    let tansu = Tansu::start();
    for topic in ["readings", "lab", "kedge-dead-letter"] {
        tansu.create_topic(topic, 1);
    }
    let mosquitto = Mosquitto::start();
    let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut plugins = String::new();
    for (lang, path) in languages.iter().zip(&wasm) {
        // An interpreter's first calls are slow on a loaded machine: this test is about the
        // route, not the plugins' speed.
        let memory = if ["python", "js"].contains(lang) {
            "memory = \"64MiB\"\ntimeout = \"5s\"\n"
        } else {
            ""
        };
        plugins.push_str(&format!(
            "[[plugin]]\nname = \"my-{lang}\"\npath = \"{}\"\n{memory}\n",
            path.display()
        ));
    }
    plugins.push_str(&format!(
        "[[plugin]]\nname = \"avg\"\npath = \"{}\"\ntick = \"200ms\"\n[plugin.config]\nwindow_ms = 1000\nfield = \"temp_c\"\n",
        plugin("rust-downsample").display()
    ));
    let config = config_with(&mosquitto, &tansu, metrics, &plugins);

    // `kedge check` loads every plugin of the chain, as `kedge run` will.
    let config_file = tmp.path().join("kedge.toml");
    std::fs::write(&config_file, &config).unwrap();
    let mut check = kedge_command();
    check.arg("check").arg("--config").arg(&config_file);
    let out = run(check, Duration::from_secs(300));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for lang in &languages {
        assert!(
            said.contains(&format!(
                "plugin my-{lang}: loaded, kedge:transform@0.2.0 world transform"
            )),
            "{said}"
        );
    }

    let mut kedge = Kedge::start(&config);
    // kedge compiles every plugin before it subscribes: a CPython or JavaScript engine takes
    // tens of seconds on a loaded machine.
    mosquitto.wait_subscribed("sensors/#", Duration::from_secs(300));
    // Two readings per device, all in one second-long window that has long ended.
    let mut messages = Vec::new();
    for device in ["lab-1", "lab-2", "hall-1"] {
        for temp in [20, 22] {
            messages.push(Message {
                topic: format!("sensors/{device}/reading"),
                payload: Bytes::from(format!(r#"{{"temp_c":{temp},"ts":1}}"#)),
                user_properties: Vec::new(),
            });
        }
    }
    let publishing = Publishing::start(mosquitto.port(), messages, None);
    publishing.wait_acked(Duration::from_secs(60));

    // Readings of one device may straddle a window's end: wait until the window took all six
    // and every window they opened has ended and been routed, then read every average.
    let verdicts = |plugin: &str, verdict: &str| {
        try_metric(
            metrics,
            "kedge_plugin_verdicts_total",
            &format!(r#"plugin="{plugin}",verdict="{verdict}""#),
        )
        .unwrap_or(0.0)
    };
    let routed = |topic: &str| {
        try_metric(
            metrics,
            "kedge_records_routed_total",
            &format!(r#"topic="{topic}""#),
        )
        .unwrap_or(0.0)
    };
    wait_until(
        "the window took every reading",
        Duration::from_secs(60),
        || verdicts("avg", "drop") == 6.0,
    );
    std::thread::sleep(Duration::from_millis(1500));
    let windows = || {
        try_metric(
            metrics,
            "kedge_plugin_counter_total",
            r#"plugin="avg",name="windows""#,
        )
        .unwrap_or(0.0)
    };
    wait_until("every average routed", Duration::from_secs(30), || {
        windows() >= 3.0 && routed("lab") + routed("readings") == windows()
    });
    let (to_lab, to_readings) = (routed("lab") as usize, routed("readings") as usize);
    // Per sensor: readings counted, and their sum (count × average).
    let totals = |topic: &str, n: usize| {
        let mut totals = std::collections::BTreeMap::<String, (f64, f64)>::new();
        for r in consume(&tansu.bootstrap(), topic, n, Duration::from_secs(60)) {
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            let (count, avg) = (v["count"].as_f64().unwrap(), v["avg"].as_f64().unwrap());
            let t = totals
                .entry(v["sensor"].as_str().unwrap().to_owned())
                .or_default();
            *t = (t.0 + count, t.1 + count * avg);
        }
        totals.into_iter().collect::<Vec<_>>()
    };
    assert_eq!(
        totals("lab", to_lab),
        [
            ("sensors/lab-1/reading".to_owned(), (2.0, 42.0)),
            ("sensors/lab-2/reading".to_owned(), (2.0, 42.0)),
        ],
        "the lab devices' averages keep the route"
    );
    assert_eq!(
        totals("readings", to_readings),
        [("sensors/hall-1/reading".to_owned(), (2.0, 42.0))],
        "the hall device's averages go where routing sends its readings"
    );
    // kedge's own account: the author's plugin routed the four lab readings and replaced the
    // two hall readings.
    assert_eq!(verdicts("my-rust", "route"), 4.0);
    assert_eq!(verdicts("my-rust", "replace"), 2.0);
    kedge.assert_running();
    let status = kedge.terminate(Duration::from_secs(15));
    assert!(status.success(), "kedge exited with {status}");
}
