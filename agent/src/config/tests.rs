//! Tests of parsing, defaults and error positions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const FILE: &str = "kedge.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(FILE))
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("expected an error, parsed {config:?}"),
        Err(err) => err.to_string(),
    }
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_config_parses() {
    let mut files = Vec::new();
    toml_files(&config_dir(), &mut files);
    assert!(
        files.len() >= 3,
        "expected kedge.toml and examples, found {files:?}"
    );
    for file in files {
        if let Err(err) = Config::load(&file) {
            panic!("{err}");
        }
    }
}

const MINIMAL: &str = r#"
[mqtt]
subscriptions = [{ filter = "sensors/#" }]

[kafka]
bootstrap = ["127.0.0.1:9092"]
"#;

#[test]
fn defaults_match_the_schema() {
    let config = parse(MINIMAL).expect("minimal config parses");
    let agent = &config.agent;
    assert_eq!(agent.data_dir, Path::new("/var/lib/kedge"));
    assert_eq!(agent.shutdown_timeout, Duration::from_secs(10));
    assert!(!agent.device_id.is_empty());

    let mqtt = &config.mqtt;
    assert_eq!(mqtt.name, "mqtt");
    assert_eq!(mqtt.host, "127.0.0.1");
    assert_eq!(mqtt.port, None);
    assert_eq!(mqtt.effective_port(), 1883);
    assert_eq!(mqtt.protocol, MqttProtocol::V5);
    assert_eq!(
        mqtt.effective_client_id(&agent.device_id),
        format!("kedge-{}", agent.device_id)
    );
    assert_eq!(mqtt.keep_alive, Duration::from_secs(30));
    assert_eq!(mqtt.session_expiry, Duration::from_secs(7 * 86_400));
    assert_eq!(mqtt.receive_maximum, 2048);
    assert_eq!(mqtt.username, None);
    assert_eq!(mqtt.password, None);
    assert_eq!(mqtt.tls, None);
    assert_eq!(mqtt.reconnect.initial, Duration::from_millis(250));
    assert_eq!(mqtt.reconnect.max, Duration::from_secs(30));
    assert_eq!(mqtt.subscriptions[0].qos, 1);

    assert_eq!(config.routing.default_topic, None);
    assert_eq!(config.routing.dead_letter_topic, "kedge-dead-letter");
    assert!(config.routing.rules.is_empty());

    let kafka = &config.kafka;
    assert_eq!(kafka.client_id, "kedge");
    assert_eq!(kafka.compression, Compression::Zstd);
    assert_eq!(kafka.linger, Duration::from_millis(5));
    assert_eq!(kafka.batch_max_records, 10_000);
    assert_eq!(kafka.batch_max_bytes, ByteSize::mib(1));
    assert_eq!(kafka.max_in_flight, 5);
    assert_eq!(kafka.connect_timeout, Duration::from_secs(10));
    assert_eq!(kafka.request_timeout, Duration::from_secs(30));
    assert_eq!(kafka.retry_backoff.initial, Duration::from_millis(100));
    assert_eq!(kafka.retry_backoff.max, Duration::from_secs(10));
    assert_eq!(kafka.metadata_refresh, Duration::from_secs(300));

    let queue = &config.queue;
    assert_eq!(
        queue.effective_dir(agent),
        Path::new("/var/lib/kedge/queue")
    );
    assert_eq!(queue.commit_window, Duration::from_millis(5));
    assert_eq!(queue.commit_max_records, 4096);
    assert_eq!(queue.commit_max_bytes, ByteSize::mib(1));
    assert_eq!(queue.cache, ByteSize::mib(8));
    assert_eq!(queue.durability, Durability::Fsync);
    assert_eq!(queue.max_bytes, None);
    assert_eq!(queue.min_free, ByteSize::mib(64));
    assert_eq!(queue.when_full, WhenFull::Backpressure);

    assert_eq!(config.log.level, "info");
    assert_eq!(config.log.format, LogFormat::Auto);
}

#[test]
fn documented_defaults_are_the_real_defaults() {
    let documented = Config::load(&config_dir().join("kedge.toml")).expect("kedge.toml parses");
    let mut expected = parse(MINIMAL).expect("minimal config parses");
    // The keys kedge.toml sets to something other than "absent" for illustration.
    expected.mqtt.port = Some(1883);
    expected.routing.default_topic = Some("sensors".to_owned());
    expected.routing.rules = vec![RouteRule {
        filter: "sensors/+/temperature".to_owned(),
        topic: "temperature".to_owned(),
        key_level: Some(1),
    }];
    assert_eq!(documented, expected);
}

#[test]
fn effective_values_follow_tls_and_overrides() {
    let config = parse(
        r#"
[agent]
data_dir = "/data"
[mqtt]
host = "broker"
subscriptions = [{ filter = "a" }]
[mqtt.tls]
[kafka]
bootstrap = ["k:9092"]
"#,
    )
    .expect("parses");
    assert_eq!(config.mqtt.effective_port(), 8883);
    let tls = config.mqtt.tls.as_ref().expect("tls present");
    assert_eq!(tls.effective_server_name(&config.mqtt.host), "broker");
    assert_eq!(
        config.queue.effective_dir(&config.agent),
        Path::new("/data/queue")
    );
}

#[test]
fn secrets_parse_in_all_three_forms() {
    let with_password = |password: &str| {
        parse(&format!(
            "[mqtt]\nusername = \"u\"\npassword = {password}\nsubscriptions = [{{ filter = \"a\" }}]\n[kafka]\nbootstrap = [\"k:1\"]\n"
        ))
    };
    let secret = |password: &str| with_password(password).map(|c| c.mqtt.password);
    assert_eq!(
        secret(r#""hunter2""#).ok().flatten(),
        Some(Secret::Inline("hunter2".into()))
    );
    assert_eq!(
        secret(r#"{ env = "MQTT_PASSWORD" }"#).ok().flatten(),
        Some(Secret::Env {
            env: "MQTT_PASSWORD".into()
        })
    );
    assert_eq!(
        secret(r#"{ file = "/run/secrets/mqtt" }"#).ok().flatten(),
        Some(Secret::File {
            file: "/run/secrets/mqtt".into()
        })
    );
    let err = with_password(r#"{ env = "A", file = "b" }"#)
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("kedge.toml:3:12: mqtt.password: a secret has exactly one source"),
        "{err}"
    );
    // The Debug output of a whole config must not leak an inline password.
    let config = with_password(r#""hunter2""#).expect("parses");
    assert!(!format!("{config:?}").contains("hunter2"));
}

/// Every keyword names one value and every value has its word back, for each setting.
fn keywords_round_trip<T: Keyword + PartialEq + std::fmt::Debug>() {
    for (i, &(word, value)) in T::WORDS.iter().enumerate() {
        assert_eq!(value.word(), word, "{value:?}");
        for &(other, other_value) in &T::WORDS[i + 1..] {
            assert_ne!(word, other);
            assert_ne!(value, other_value, "{word} and {other}");
        }
    }
}

#[test]
fn keywords_name_runtime_values_one_to_one() {
    keywords_round_trip::<MqttProtocol>();
    keywords_round_trip::<Redelivery>();
    keywords_round_trip::<SaslMechanism>();
    keywords_round_trip::<Compression>();
    keywords_round_trip::<Durability>();
    keywords_round_trip::<WhenFull>();
    keywords_round_trip::<LogFormat>();
    assert_eq!(Durability::Relaxed.word(), "relaxed");
    assert_eq!(WhenFull::DropOldest.word(), "drop-oldest");
}

#[test]
fn keywords_parse_into_the_runtime_enums() {
    let config = Config::parse(
        r#"[mqtt]
subscriptions = [{ filter = "a" }]
protocol = "3.1.1"
redelivery = "payload"

[kafka]
bootstrap = ["k:9092"]
compression = "none"

[queue]
durability = "relaxed"
when_full = "drop-newest"

[log]
format = "json"
"#,
        Path::new("kedge.toml"),
    )
    .expect("parses");
    assert_eq!(config.mqtt.protocol, crate::source::mqtt::Protocol::V311);
    assert_eq!(
        config.mqtt.redelivery,
        crate::source::session::Match::Payload
    );
    assert_eq!(
        config.kafka.compression,
        kedge_wire::batch::BatchCompression::None
    );
    assert_eq!(config.queue.durability, kedge_queue::Sync::Relaxed);
    for (word, codec) in [
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let text = format!(
            "[mqtt]\nsubscriptions = [{{ filter = \"a\" }}]\n[kafka]\nbootstrap = [\"k:9092\"]\ncompression = \"{word}\"\n"
        );
        let config = Config::parse(&text, Path::new("kedge.toml")).expect("parses");
        assert_eq!(config.kafka.compression, codec, "{word}");
    }
    assert_eq!(
        config.queue.when_full,
        kedge_queue::budget::FullPolicy::DropNewest
    );
    assert_eq!(config.log.format, crate::telemetry::LogFormat::Json);
}

#[test]
fn unknown_key_is_located_at_the_key() {
    let text = r#"[mqtt]
subscriptions = [{ filter = "a" }]

[kafka]
bootstrap = ["k:9092"]
  lingr = "5ms"
"#;
    assert_eq!(
        error(text),
        "kedge.toml:6:3: kafka.lingr: unknown key; expected one of: bootstrap, client_id, \
         compression, linger, batch_max_records, batch_max_bytes, max_in_flight, \
         connect_timeout, request_timeout, retry_backoff, metadata_refresh, tls, sasl"
    );
}

#[test]
fn unknown_key_in_nested_inline_table() {
    let text = r#"[mqtt]
subscriptions = [{ filter = "a" }, { filter = "b", qso = 1 }]
[kafka]
bootstrap = ["k:9092"]
"#;
    assert_eq!(
        error(text),
        "kedge.toml:2:52: mqtt.subscriptions[1].qso: unknown key; expected one of: filter, qos"
    );
}

#[test]
fn unknown_top_level_section() {
    let text = "[mqtt]\nsubscriptions = [{ filter = \"a\" }]\n[kafka]\nbootstrap = [\"k:9092\"]\n[quueue]\n";
    assert_eq!(
        error(text),
        "kedge.toml:5:2: quueue: unknown key; expected one of: agent, mqtt, routing, kafka, queue, log, metrics, plugin"
    );
}

#[test]
fn wrong_type_is_located_at_the_value() {
    let text = r#"[mqtt]
host = "broker"
port = "1883"
subscriptions = [{ filter = "a" }]
[kafka]
bootstrap = ["k:9092"]
"#;
    assert_eq!(
        error(text),
        "kedge.toml:3:8: mqtt.port: expected an integer from 1 to 65535, found a string"
    );
}

#[test]
fn wrong_types_read_plainly() {
    let cases = [
        (
            "compression = 5",
            "kafka.compression: expected one of \"zstd\", \"lz4\", \"snappy\", \"gzip\", \"none\", found an integer",
        ),
        (
            "compression = \"brotli\"",
            "kafka.compression: expected one of \"zstd\", \"lz4\", \"snappy\", \"gzip\", \"none\", found \"brotli\"",
        ),
        (
            "linger = 5",
            "kafka.linger: expected a duration string with a unit, e.g. \"5ms\" or \"30s\", found an integer",
        ),
        (
            "max_in_flight = 6",
            "kafka.max_in_flight: expected an integer from 1 to 5, found 6",
        ),
        (
            "batch_max_records = 1.5",
            "kafka.batch_max_records: expected an integer from 1 to 1000000, found a float",
        ),
        (
            "client_id = true",
            "kafka.client_id: expected a string, found a boolean",
        ),
        (
            "retry_backoff = \"1s\"",
            "kafka.retry_backoff: expected a table, found a string",
        ),
        (
            "batch_max_bytes = -1",
            "kafka.batch_max_bytes: invalid size \"-1\": must not be negative",
        ),
        (
            "batch_max_bytes = \"2 parsecs\"",
            "kafka.batch_max_bytes: invalid size \"2 parsecs\": expected a whole number followed by a unit",
        ),
        (
            "bootstrap = \"k:9092\"",
            "kafka.bootstrap: expected an array, found a string",
        ),
    ];
    for (line, want) in cases {
        let text = format!(
            "[mqtt]\nsubscriptions = [{{ filter = \"a\" }}]\n[kafka]\nbootstrap = [\"k:9092\"]\n{line}\n"
        );
        let text = if line.starts_with("bootstrap") {
            text.replace("bootstrap = [\"k:9092\"]\n", "")
        } else {
            text
        };
        let got = error(&text);
        let prefix = if line.starts_with("bootstrap") {
            "kedge.toml:4:"
        } else {
            "kedge.toml:5:"
        };
        assert!(got.starts_with(prefix), "{got}");
        assert!(got.contains(want), "{got}\n  does not contain\n{want}");
    }
}

#[test]
fn bad_duration_is_located_at_the_value() {
    let text = r#"[mqtt]
subscriptions = [{ filter = "a" }]
[kafka]
bootstrap = ["k:9092"]
linger = "5 parsecs"
"#;
    assert_eq!(
        error(text),
        "kedge.toml:5:10: kafka.linger: invalid duration \"5 parsecs\": expected a number \
         followed by a unit (ms, s, m, h, d), e.g. \"5ms\" or \"30s\""
    );
}

#[test]
fn bad_duration_in_inline_backoff() {
    let text = r#"[mqtt]
subscriptions = [{ filter = "a" }]
reconnect = { initial = "1 fortnight" }
[kafka]
bootstrap = ["k:9092"]
"#;
    assert!(
        error(text).starts_with(
            "kedge.toml:3:25: mqtt.reconnect.initial: invalid duration \"1 fortnight\""
        ),
        "{}",
        error(text)
    );
}

#[test]
fn missing_required_key_is_located_at_the_table_header() {
    let text = r#"# kedge
[mqtt]
host = "broker"

[kafka]
bootstrap = ["k:9092"]
"#;
    assert_eq!(
        error(text),
        "kedge.toml:2:1: mqtt.subscriptions: missing required key; add at least one, e.g. \
         subscriptions = [{ filter = \"sensors/#\", qos = 1 }] under [mqtt]"
    );
}

#[test]
fn missing_section_is_located_at_the_start() {
    assert!(
        error("[mqtt]\nsubscriptions = [{ filter = \"a\" }]\n").starts_with(
            "kedge.toml:1:1: kafka.bootstrap: missing required key; list the Kafka brokers"
        ),
        "{}",
        error("[mqtt]\nsubscriptions = [{ filter = \"a\" }]\n")
    );
    assert!(error("").starts_with("kedge.toml:1:1: mqtt.subscriptions: missing required key"));
    // A table at offset 0 must not be mistaken for the enclosing one.
    assert!(
        error("[kafka]\nbootstrap = [\"k:9092\"]\n")
            .starts_with("kedge.toml:1:1: mqtt.subscriptions: missing required key")
    );
}

#[test]
fn missing_key_in_array_of_tables_element() {
    let text = r#"[mqtt]
subscriptions = [{ filter = "a" }]
[kafka]
bootstrap = ["k:9092"]

[[routing.rules]]
filter = "a"
topic = "t"

[[routing.rules]]
filter = "b"
"#;
    assert_eq!(
        error(text),
        "kedge.toml:10:1: routing.rules[1].topic: missing required key; each rule needs the \
         Kafka topic it sends to, e.g. topic = \"temperature\""
    );
}

#[test]
fn bad_topic_name_is_located_at_the_value() {
    let text = r#"[mqtt]
subscriptions = [{ filter = "a" }]
[kafka]
bootstrap = ["k:9092"]
[[routing.rules]]
filter = "sensors/+/temperature"
topic = "sensors/temperature"
"#;
    assert_eq!(
        error(text),
        "kedge.toml:7:9: routing.rules[0].topic: Kafka topic name \"sensors/temperature\" \
         contains '/'; only letters, digits, '.', '_' and '-' are allowed"
    );
}

#[test]
fn semantic_errors_are_located_at_the_value() {
    let base = "[kafka]\nbootstrap = [\"k:9092\"]\n[mqtt]\n";
    let cases = [
        (
            "subscriptions = [{ filter = \"a\" }, { filter = \"b\", qos = 3 }]",
            "kedge.toml:4:58: mqtt.subscriptions[1].qos: expected a QoS level, 0, 1 or 2, found 3",
        ),
        (
            "max_packet_size = \"512B\"\nsubscriptions = [{ filter = \"a\" }]",
            "kedge.toml:4:19: mqtt.max_packet_size: expected a size from 1 KiB to 256 MiB, found 512 B",
        ),
        (
            "receive_maximum = 100\nredelivery_window = 100\nsubscriptions = [{ filter = \"a\" }]",
            "kedge.toml:5:21: mqtt.redelivery_window: must be more than mqtt.receive_maximum (100), found 100",
        ),
        (
            "redelivery = \"dup\"\nsubscriptions = [{ filter = \"a\" }]",
            "kedge.toml:4:14: mqtt.redelivery: expected one of \"packet-id\", \"payload\", \"off\"",
        ),
        (
            "subscriptions = [{ filter = \"a/#/b\" }]",
            "kedge.toml:4:29: mqtt.subscriptions[0].filter: invalid MQTT topic filter \"a/#/b\": '#' must be",
        ),
        (
            "subscriptions = [{ filter = \"a\" }, { filter = \"a\" }]",
            "kedge.toml:4:47: mqtt.subscriptions[1].filter: duplicate subscription; mqtt.subscriptions[0] has the same filter",
        ),
        (
            "subscriptions = []",
            "kedge.toml:4:17: mqtt.subscriptions: at least one subscription is required",
        ),
        (
            "password = \"x\"\nsubscriptions = [{ filter = \"a\" }]",
            "kedge.toml:4:12: mqtt.password: a password requires mqtt.username",
        ),
        (
            "reconnect = { initial = \"1m\" }\nsubscriptions = [{ filter = \"a\" }]",
            "kedge.toml:4:25: mqtt.reconnect.initial: initial delay 1m is larger than max 30s",
        ),
        (
            "reconnect = { max = \"100ms\" }\nsubscriptions = [{ filter = \"a\" }]",
            "kedge.toml:4:13: mqtt.reconnect.initial: initial delay 250ms is larger than max 100ms",
        ),
        (
            "keep_alive = \"1.5s\"\nsubscriptions = [{ filter = \"a\" }]",
            "kedge.toml:4:14: mqtt.keep_alive: expected whole seconds",
        ),
        (
            "session_expiry = \"0s\"\nsubscriptions = [{ filter = \"a\" }]",
            "kedge.toml:4:18: mqtt.session_expiry: expected from 1s to 4294967295s, found 0s",
        ),
        (
            "client_id = \"kedge gw\"\nsubscriptions = [{ filter = \"a\" }]",
            "kedge.toml:4:13: mqtt.client_id: client id \"kedge gw\" contains ' '",
        ),
        (
            "subscriptions = [{ filter = \"a\" }]\n[mqtt.tls]\nclient_key_file = \"k.pem\"",
            "kedge.toml:6:19: mqtt.tls.client_key_file: client_key_file requires client_cert_file",
        ),
        (
            "subscriptions = [{ filter = \"a\" }]\n[routing]\ndead_letter_topic = \"..\"",
            "kedge.toml:6:21: routing.dead_letter_topic: invalid Kafka topic name \"..\"",
        ),
        (
            "subscriptions = [{ filter = \"a\" }]\n[[routing.rules]]\nfilter = \"a/+/c\"\ntopic = \"t\"\nkey_level = 3",
            "kedge.toml:8:13: routing.rules[0].key_level: level 3 does not exist in filter \"a/+/c\", which has 3 levels (0 to 2)",
        ),
        (
            "subscriptions = [{ filter = \"a\" }]\n[log]\nlevel = \"loud\"",
            "kedge.toml:6:9: log.level: expected one of error, warn, info, debug, trace",
        ),
        (
            "subscriptions = [{ filter = \"a\" }]\n[queue]\ncommit_max_records = 0",
            "kedge.toml:6:22: queue.commit_max_records: must be at least 1",
        ),
        (
            "subscriptions = [{ filter = \"a\" }]\n[queue]\nmax_bytes = \"1KiB\"",
            "kedge.toml:6:13: queue.max_bytes: must be at least queue.commit_max_bytes, or one commit never fits",
        ),
        (
            "subscriptions = [{ filter = \"a\" }]\n[queue]\nwhen_full = \"drop-all\"",
            "kedge.toml:6:13: queue.when_full: expected one of \"backpressure\", \"drop-oldest\", \"drop-newest\", found \"drop-all\"",
        ),
        (
            "subscriptions = [{ filter = \"a\" }]\n[agent]\ndevice_id = \"\"",
            "kedge.toml:6:13: agent.device_id: device id must not be empty",
        ),
    ];
    for (mqtt, want) in cases {
        let got = error(&format!("{base}{mqtt}\n"));
        assert!(
            got.starts_with(want),
            "{got}\n  does not start with\n{want}"
        );
    }
}

#[test]
fn kafka_semantic_errors() {
    let base = "[mqtt]\nsubscriptions = [{ filter = \"a\" }]\n[kafka]\n";
    let cases = [
        (
            "bootstrap = [\"k:9092\", \"k2\"]",
            "kedge.toml:4:24: kafka.bootstrap[1]: expected \"host:port\"",
        ),
        (
            "bootstrap = [\"k:99999\"]",
            "kedge.toml:4:14: kafka.bootstrap[0]: invalid port \"99999\"",
        ),
        (
            "bootstrap = []",
            "kedge.toml:4:13: kafka.bootstrap: at least one broker is required",
        ),
        (
            "bootstrap = [\"k:1\"]\nbatch_max_bytes = \"65MiB\"",
            "kedge.toml:5:19: kafka.batch_max_bytes: expected a size from 1 KiB to 64 MiB, found 65 MiB",
        ),
        (
            "bootstrap = [\"k:1\"]\nretry_backoff = { initial = \"0s\" }",
            "kedge.toml:5:29: kafka.retry_backoff.initial: must be greater than 0s",
        ),
    ];
    for (kafka, want) in cases {
        let got = error(&format!("{base}{kafka}\n"));
        assert!(
            got.starts_with(want),
            "{got}\n  does not start with\n{want}"
        );
    }
}

#[test]
fn syntax_errors_are_located() {
    let got = error("[mqtt]\nhost = \"x\nport = 1\n");
    assert!(got.starts_with("kedge.toml:2:"), "{got}");
    assert!(got.contains("invalid TOML: "), "{got}");
    let got = error("[mqtt\n");
    assert!(got.starts_with("kedge.toml:1:6: invalid TOML: "), "{got}");
    let got = error("[kafka]\nlinger = 5ms\n");
    assert!(
        got.starts_with("kedge.toml:2:10: kafka.linger: invalid TOML: "),
        "{got}"
    );
    let got = error("[mqtt]\nhost = \"a\"\n\n[mqtt]\n");
    assert_eq!(
        got,
        "kedge.toml:4:2: mqtt: invalid TOML: duplicate key mqtt: it is already defined earlier in the file"
    );
}

#[test]
fn display_omits_an_empty_key_path() {
    let err = ConfigError {
        file: "a.toml".into(),
        line: 3,
        column: 7,
        key_path: String::new(),
        message: "boom".into(),
    };
    assert_eq!(err.to_string(), "a.toml:3:7: boom");
}

#[test]
fn load_reports_unreadable_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("absent.toml");
    let err = Config::load(&missing).map(|_| ()).unwrap_err();
    assert_eq!((err.line, err.column), (1, 1));
    assert!(err.message.starts_with("cannot read: "), "{err}");

    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, b"[mqtt]\nhost = \"\xff\"\n").expect("write");
    let err = Config::load(&binary).map(|_| ()).unwrap_err();
    assert_eq!((err.line, err.column), (2, 9), "{err}");
}

#[test]
fn device_id_is_sanitized() {
    assert_eq!(sanitize_device_id("gw 17/ä"), "gw-17--");
    assert_eq!(sanitize_device_id(""), "kedge");
    assert_eq!(sanitize_device_id(&"x".repeat(100)).len(), 64);
    let id = hostname_device_id();
    assert!(!id.is_empty() && id.len() <= 64, "{id:?}");
    assert!(id.chars().all(kedge_wire::record::is_name_char), "{id:?}");
}

/// Bytes that make TOML interesting: structure, quotes, escapes, newlines, odd Unicode.
fn garble() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("[".to_owned()),
            Just("]".to_owned()),
            Just("[[".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("=".to_owned()),
            Just("\"".to_owned()),
            Just("'''".to_owned()),
            Just("\\u".to_owned()),
            Just("\n".to_owned()),
            Just(".".to_owned()),
            Just(",".to_owned()),
            Just("#".to_owned()),
            Just("mqtt".to_owned()),
            Just("kafka".to_owned()),
            Just("subscriptions".to_owned()),
            Just("1979-05-27T07:32:00Z".to_owned()),
            "[a-z_]{1,8}",
            "-?[0-9]{1,25}(\\.[0-9]{0,3})?",
            "\\PC{0,4}",
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn garbled_toml_never_panics(text in garble()) {
        if let Err(err) = parse(&text) {
            prop_assert!(err.line >= 1 && err.column >= 1);
        }
    }

    #[test]
    fn mutated_default_config_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), "\\PC{0,3}"), 1..6)
    ) {
        let mut text = std::fs::read_to_string(config_dir().join("kedge.toml"))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (at, insert) in edits {
            let mut at = at.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            // Replace a few bytes rather than only inserting, so values get truncated too.
            let mut end = (at + insert.len().min(2)).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.replace_range(at..end, &insert);
        }
        if let Err(err) = parse(&text) {
            prop_assert!(err.line >= 1 && err.column >= 1);
            let lines = text.lines().count() + 1;
            prop_assert!(err.line <= lines, "line {} of {}", err.line, lines);
        }
    }
}

const KAFKA_BASE: &str =
    "[mqtt]\nsubscriptions = [{ filter = \"a\" }]\n[kafka]\nbootstrap = [\"k:9092\"]\n";

#[test]
fn kafka_tls_and_sasl_parse() {
    let config = parse(&format!(
        "{KAFKA_BASE}[kafka.tls]\nca_file = \"/etc/kedge/kafka-ca.pem\"\nserver_name = \"kafka.example\"\n\
         [kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"edge-17\"\npassword = {{ env = \"KAFKA_PASSWORD\" }}\n"
    ))
    .expect("parses");
    let tls = config.kafka.tls.expect("tls present");
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(Path::new("/etc/kedge/kafka-ca.pem"))
    );
    assert_eq!(tls.effective_server_name("k"), "kafka.example");
    let sasl = config.kafka.sasl.expect("sasl present");
    assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
    assert_eq!(sasl.username, "edge-17");
    assert_eq!(
        sasl.password,
        Secret::Env {
            env: "KAFKA_PASSWORD".into()
        }
    );
    let plain = parse(&format!(
        "{KAFKA_BASE}[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"\nallow_plaintext = true\n"
    ))
    .expect("parses");
    assert_eq!(
        plain.kafka.sasl.map(|s| s.mechanism),
        Some(SaslMechanism::Plain)
    );
    assert_eq!(plain.kafka.tls, None);
    let default = parse(KAFKA_BASE).expect("parses");
    assert_eq!((default.kafka.tls, default.kafka.sasl), (None, None));
}

#[test]
fn kafka_tls_and_sasl_errors_are_located() {
    let cases = [
        (
            "[kafka.tls]\nclient_cert_file = \"c.pem\"",
            "kedge.toml:6:20: kafka.tls.client_cert_file: client_cert_file requires client_key_file",
        ),
        (
            "[kafka.tls]\nserver_name = \"\"",
            "kedge.toml:6:15: kafka.tls.server_name: must not be empty",
        ),
        (
            "[kafka.sasl]\nmechanism = \"GSSAPI\"\nusername = \"u\"\npassword = \"p\"",
            "kedge.toml:6:13: kafka.sasl.mechanism: expected one of \"PLAIN\", \"SCRAM-SHA-256\", \"SCRAM-SHA-512\", found \"GSSAPI\"",
        ),
        (
            "[kafka.sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"jörg\"\npassword = \"p\"",
            "kedge.toml:7:12: kafka.sasl.username: SCRAM user names must be printable ASCII",
        ),
        (
            "[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"\"\npassword = \"p\"",
            "kedge.toml:7:12: kafka.sasl.username: must not be empty",
        ),
        (
            "[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"",
            "kedge.toml:5:1: kafka.sasl.password: missing required key",
        ),
        (
            "[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"",
            "kedge.toml:6:13: kafka.sasl.mechanism: PLAIN without [kafka.tls] sends the password in the clear",
        ),
    ];
    for (section, want) in cases {
        let got = error(&format!("{KAFKA_BASE}{section}\n"));
        assert!(got.contains(want), "{section:?}:\n got {got}\nwant {want}");
    }
}

#[test]
fn the_disk_budget_keys_parse() {
    let base = "[mqtt]\nsubscriptions = [{ filter = \"a\" }]\n[kafka]\nbootstrap = [\"k:9092\"]\n";
    let c = parse(&format!(
        "{base}[queue]\nmax_bytes = \"2GiB\"\nmin_free = \"10MiB\"\nwhen_full = \"drop-oldest\"\n"
    ))
    .unwrap();
    assert_eq!(c.queue.max_bytes, Some(ByteSize::mib(2048)));
    assert_eq!(c.queue.min_free, ByteSize::mib(10));
    assert_eq!(c.queue.when_full, WhenFull::DropOldest);
    let c = parse(&format!("{base}[queue]\nwhen_full = \"drop-newest\"\n")).unwrap();
    assert_eq!(c.queue.when_full, WhenFull::DropNewest);
}

#[test]
fn metrics_are_off_by_default_and_parse_with_positions() {
    let config = parse(MINIMAL).expect("minimal config parses");
    assert_eq!(config.metrics, MetricsConfig::default());
    assert_eq!(config.metrics.listen, None);
    let text = format!(
        "{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1:9464\"\nready_max_pending_age = \"30s\"\n"
    );
    let config = parse(&text).expect("metrics parse");
    assert_eq!(config.metrics.listen, Some(([127, 0, 0, 1], 9464).into()));
    assert_eq!(
        config.metrics.ready_max_pending_age,
        Duration::from_secs(30)
    );

    let text = format!("{MINIMAL}\n[metrics]\nlisten = \"localhost\"\n");
    let line = text.lines().count();
    let e = error(&text);
    assert!(
        e.starts_with(&format!("kedge.toml:{line}:10: metrics.listen:")),
        "{e}"
    );
    let text = format!("{MINIMAL}\n[metrics]\nready_max_queue_percent = 0\n");
    let line = text.lines().count();
    let e = error(&text);
    assert_eq!(
        e,
        format!("kedge.toml:{line}:27: metrics.ready_max_queue_percent: must be between 1 and 100")
    );
}

#[test]
fn a_listener_beyond_loopback_needs_allow_remote() {
    // The listener has no authentication: serving it beyond this machine must be a decision.
    for listen in ["0.0.0.0:9464", "[::]:9464", "192.168.1.5:9464"] {
        let text = format!("{MINIMAL}\n[metrics]\nlisten = \"{listen}\"\n");
        let line = text.lines().count();
        let e = error(&text);
        assert!(
            e.starts_with(&format!("kedge.toml:{line}:10: metrics.listen: ")),
            "{e}"
        );
        assert!(e.contains("metrics.allow_remote = true"), "{e}");
    }
    for listen in ["127.0.0.1:9464", "127.0.0.2:1", "[::1]:9464"] {
        let text = format!("{MINIMAL}\n[metrics]\nlisten = \"{listen}\"\n");
        parse(&text).unwrap_or_else(|e| panic!("{listen}: {e}"));
    }
    let text = format!("{MINIMAL}\n[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\n");
    parse(&text).expect("opted in");
}

const PLUGIN_BASE: &str =
    "[mqtt]\nsubscriptions = [{ filter = \"a\" }]\n[kafka]\nbootstrap = [\"k:9092\"]\n";

#[test]
fn plugins_parse_with_defaults_settings_as_text_and_paths_beside_the_config() {
    let text = format!(
        "{PLUGIN_BASE}[[plugin]]\nname = \"units\"\npath = \"plugins/units.wasm\"\n\
         [plugin.config]\nunit = \"C\"\nmax = 85\nratio = 0.5\non = true\nsites = {{ t1 = \"hall\", t2 = [1, 2] }}\n\
         [[plugin]]\nname = \"ds\"\npath = \"/opt/ds.cwasm\"\nsubjects = [\"sensors/+/temp\"]\ntick = \"1s\"\n\
         on_failure = \"backpressure\"\nmemory = \"64MiB\"\ncircuit_backoff = {{ initial = \"2s\" }}\n"
    );
    let c = Config::parse(&text, Path::new("/etc/kedge/kedge.toml")).expect("valid");
    let [units, ds] = &c.plugins[..] else {
        panic!("two plugins: {:?}", c.plugins)
    };
    assert_eq!(units.path, Path::new("/etc/kedge/plugins/units.wasm"));
    assert_eq!(units.memory, ByteSize::mib(16));
    assert_eq!(units.timeout, Duration::from_millis(200));
    assert_eq!(units.on_failure, OnFailure::DeadLetter);
    let settings: Vec<(&str, &str)> = units
        .config
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        settings,
        [
            ("max", "85"),
            ("on", "true"),
            ("ratio", "0.5"),
            ("sites", r#"{"t1":"hall","t2":[1,2]}"#),
            ("unit", "C"),
        ]
    );
    assert_eq!(ds.path, Path::new("/opt/ds.cwasm"));
    assert_eq!(ds.tick, Some(Duration::from_secs(1)));
    assert_eq!(ds.on_failure, OnFailure::Backpressure);
    assert_eq!(ds.memory, ByteSize::mib(64));
    assert_eq!(ds.circuit_backoff.initial, Duration::from_secs(2));
    assert_eq!(ds.circuit_backoff.max, Duration::from_secs(300));
}

#[test]
fn plugin_mistakes_are_located() {
    let plugin =
        |body: &str| format!("{PLUGIN_BASE}[[plugin]]\nname = \"p\"\npath = \"p.wasm\"\n{body}");
    assert_eq!(
        error(&plugin("memory = \"512KiB\"\n")),
        "kedge.toml:8:10: plugin[0].memory: must be between 1 MiB and 4 GiB, got 512 KiB"
    );
    assert_eq!(
        error(&plugin("on_failure = \"retry\"\n")),
        "kedge.toml:8:14: plugin[0].on_failure: expected \"dead-letter\" or \"backpressure\", found \"retry\""
    );
    assert_eq!(
        error(&plugin("subjects = [\"a/#/b\"]\n")),
        "kedge.toml:8:13: plugin[0].subjects[0]: invalid MQTT topic filter \"a/#/b\": '#' must be a whole level and the last one, as in \"sensors/#\""
    );
    assert_eq!(
        error(&plugin("timeot = \"1s\"\n"))
            .split(';')
            .next()
            .unwrap(),
        "kedge.toml:8:1: plugin[0].timeot: unknown key"
    );
    assert_eq!(
        error(&format!(
            "{}[[plugin]]\nname = \"p\"\npath = \"q.wasm\"\n",
            plugin("")
        )),
        "kedge.toml:9:8: plugin[1].name: plugin name \"p\" is already used by plugin[0]"
    );
}

/// Durations and sizes `kedge run` would overflow on (`Instant + duration` panicked at the first
/// message with `commit_window = "200000000000000d"`) are refused by `kedge check`.
#[test]
fn durations_and_sizes_have_upper_bounds() {
    let cases = [
        (
            "[queue]\ncommit_window = \"200000000000000d\"",
            "queue.commit_window: must be at most 1m, found 200000000000000d",
        ),
        (
            "[queue]\ncommit_max_bytes = \"1GiB\"",
            "queue.commit_max_bytes: must be at most 256 MiB, found 1 GiB",
        ),
        (
            "[agent]\nshutdown_timeout = \"2h\"",
            "agent.shutdown_timeout: must be at most 1h, found 2h",
        ),
        (
            "[kafka]\nlinger = \"2m\"",
            "kafka.linger: must be at most 1m, found 2m",
        ),
        (
            "[kafka]\nmetadata_refresh = \"200000000000000d\"",
            "kafka.metadata_refresh: must be at most 1d, found 200000000000000d",
        ),
        (
            "[kafka]\nretry_backoff = { max = \"200000000000000d\" }",
            "kafka.retry_backoff.max: must be at most 1h, found 200000000000000d",
        ),
        (
            "[kafka]\nrequest_timeout = \"2h\"",
            "kafka.request_timeout: must be at most 1h, found 2h",
        ),
        (
            "[mqtt]\nreconnect = { max = \"2h\" }",
            "mqtt.reconnect.max: must be at most 1h, found 2h",
        ),
        (
            "[metrics]\nready_max_pending_age = \"31d\"",
            "metrics.ready_max_pending_age: must be at most 30d, found 31d",
        ),
    ];
    for (extra, want) in cases {
        // `[kafka]` and `[mqtt]` may appear once: merge the case into MINIMAL's tables.
        let text = if let Some(rest) = extra.strip_prefix("[kafka]\n") {
            MINIMAL.replace("[kafka]\n", &format!("[kafka]\n{rest}\n"))
        } else if let Some(rest) = extra.strip_prefix("[mqtt]\n") {
            MINIMAL.replace("[mqtt]\n", &format!("[mqtt]\n{rest}\n"))
        } else {
            format!("{MINIMAL}\n{extra}\n")
        };
        let got = error(&text);
        assert!(got.contains(want), "{got}\n  does not contain\n{want}");
    }
}
