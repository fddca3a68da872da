//! Checks that serde cannot express: names, topic filters, cross-field rules.

use kedge_wire::record::check_name as name;
use std::time::Duration;

use super::{
    AgentConfig, Backoff, ByteSize, Config, HumanDuration, KafkaConfig, LogConfig, MetricsConfig,
    MqttConfig, PluginConfig, QueueConfig, RoutingConfig, SaslConfig, SaslMechanism, TlsConfig,
};

/// Longest device id; it also bounds the default MQTT client id.
pub(super) const DEVICE_ID_MAX: usize = 64;
const CLIENT_ID_MAX: usize = 64;
const MQTT_TOPIC_MAX_BYTES: usize = 65_535;
/// A plugin's output per batch: MQTT's largest message, and far below the journal chunk's
/// 4 GiB field limit.
const PLUGIN_OUTPUT_MAX: ByteSize = ByteSize::mib(256);
/// One commit's payload bytes: a journal chunk's raw length is a 32-bit field.
const COMMIT_BYTES_MAX: ByteSize = ByteSize::mib(256);

/// A failed check: the dotted key path of the offending value and what is wrong with it.
pub(super) struct Invalid {
    pub(super) path: String,
    pub(super) message: String,
}

type Check = Result<(), Invalid>;

fn fail(path: impl Into<String>, message: impl Into<String>) -> Check {
    Err(Invalid {
        path: path.into(),
        message: message.into(),
    })
}

fn at(path: impl Into<String>) -> impl FnOnce(String) -> Invalid {
    let path = path.into();
    move |message| Invalid { path, message }
}

/// Runs every check, reporting the first failure.
pub(super) fn validate(config: &Config) -> Check {
    agent(&config.agent)?;
    mqtt(&config.mqtt, &config.agent)?;
    routing(&config.routing)?;
    kafka(&config.kafka)?;
    queue(&config.queue)?;
    metrics(&config.metrics)?;
    plugins(&config.plugins)?;
    log(&config.log)
}

/// Smallest plugin memory limit: below this not even a Rust plugin's stack fits.
const PLUGIN_MEMORY_MIN: u64 = 1 << 20;
/// Largest plugin memory limit: 32-bit WebAssembly addresses 4 GiB.
const PLUGIN_MEMORY_MAX: u64 = 4 << 30;

fn plugins(plugins: &[PluginConfig]) -> Check {
    for (i, p) in plugins.iter().enumerate() {
        let path = format!("plugin[{i}]");
        name(&p.name, 64, "plugin name").map_err(at(format!("{path}.name")))?;
        if let Some(j) = plugins[..i].iter().position(|q| q.name == p.name) {
            return fail(
                format!("{path}.name"),
                format!("plugin name {:?} is already used by plugin[{j}]", p.name),
            );
        }
        if p.path.as_os_str().is_empty() {
            return fail(format!("{path}.path"), "must not be empty");
        }
        for (k, filter) in p.subjects.iter().enumerate() {
            mqtt_filter(filter).map_err(at(format!("{path}.subjects[{k}]")))?;
        }
        let memory = p.memory.bytes();
        if !(PLUGIN_MEMORY_MIN..=PLUGIN_MEMORY_MAX).contains(&memory) {
            return fail(
                format!("{path}.memory"),
                format!("must be between 1 MiB and 4 GiB, got {}", p.memory),
            );
        }
        positive(&format!("{path}.timeout"), p.timeout, HOUR)?;
        if p.max_output.bytes() == 0 {
            return fail(format!("{path}.max_output"), "must be greater than 0");
        }
        if p.max_output > PLUGIN_OUTPUT_MAX {
            return fail(
                format!("{path}.max_output"),
                format!(
                    "must be at most {PLUGIN_OUTPUT_MAX}, found {}",
                    p.max_output
                ),
            );
        }
        if let Some(tick) = p.tick {
            positive(&format!("{path}.tick"), tick, DAY)?;
        }
        positive(&format!("{path}.failure_window"), p.failure_window, DAY)?;
        backoff(&format!("{path}.circuit_backoff"), &p.circuit_backoff, DAY)?;
        for (k, var) in p.env.iter().enumerate() {
            if var.is_empty() || var.contains('=') || var.contains('\0') {
                return fail(
                    format!("{path}.env[{k}]"),
                    format!("{var:?} is not an environment variable name"),
                );
            }
        }
        for (k, dir) in p.dirs.iter().enumerate() {
            if dir.guest.is_empty() {
                return fail(format!("{path}.dirs[{k}].guest"), "must not be empty");
            }
        }
    }
    Ok(())
}

fn metrics(metrics: &MetricsConfig) -> Check {
    if let Some(addr) = metrics.listen
        && !addr.ip().is_loopback()
        && !metrics.allow_remote
    {
        return fail(
            "metrics.listen",
            format!(
                "{addr} can be reached from other machines, and the listener has no \
                 authentication; listen on 127.0.0.1 or [::1], or set metrics.allow_remote = true \
                 to serve it beyond this machine"
            ),
        );
    }
    if !(1..=100).contains(&metrics.ready_max_queue_percent) {
        return fail(
            "metrics.ready_max_queue_percent",
            "must be between 1 and 100",
        );
    }
    positive(
        "metrics.ready_max_pending_age",
        metrics.ready_max_pending_age,
        30 * DAY,
    )
}

/// The characters allowed in device ids, client ids and Kafka topic names.
/// Upper bounds of durations: far beyond any sensible setting, and far below what would
/// overflow the deadline arithmetic (`Instant + duration`) of the stage that uses them.
const HOUR: Duration = Duration::from_secs(3_600);
const DAY: Duration = Duration::from_secs(86_400);

fn positive(path: &str, value: Duration, max: Duration) -> Check {
    if value.is_zero() {
        return fail(path, "must be greater than 0s");
    }
    at_most(path, value, max)
}

fn at_most(path: &str, value: Duration, max: Duration) -> Check {
    if value > max {
        return fail(
            path,
            format!(
                "must be at most {}, found {}",
                HumanDuration(max),
                HumanDuration(value)
            ),
        );
    }
    Ok(())
}

fn not_empty(path: &str, value: &str) -> Check {
    if value.is_empty() {
        fail(path, "must not be empty")
    } else {
        Ok(())
    }
}

fn backoff(path: &str, value: &Backoff, max: Duration) -> Check {
    positive(&format!("{path}.initial"), value.initial, max)?;
    at_most(&format!("{path}.max"), value.max, max)?;
    if value.initial > value.max {
        return fail(
            format!("{path}.initial"),
            format!(
                "initial delay {} is larger than max {}",
                HumanDuration(value.initial),
                HumanDuration(value.max)
            ),
        );
    }
    Ok(())
}

fn agent(agent: &AgentConfig) -> Check {
    name(&agent.device_id, DEVICE_ID_MAX, "device id").map_err(at("agent.device_id"))?;
    not_empty("agent.data_dir", &agent.data_dir.to_string_lossy())?;
    positive("agent.shutdown_timeout", agent.shutdown_timeout, HOUR)
}

fn mqtt(mqtt: &MqttConfig, agent: &AgentConfig) -> Check {
    name(&mqtt.name, 64, "source name").map_err(at("mqtt.name"))?;
    if mqtt.host.is_empty() || mqtt.host.contains(char::is_whitespace) {
        return fail("mqtt.host", format!("invalid host {:?}", mqtt.host));
    }
    if mqtt.host.contains("://") {
        return fail(
            "mqtt.host",
            "expected a host name or IP address without a scheme; TLS is enabled by [mqtt.tls]",
        );
    }
    match &mqtt.client_id {
        Some(id) => name(id, CLIENT_ID_MAX, "client id").map_err(at("mqtt.client_id"))?,
        None => {
            let id = mqtt.effective_client_id(&agent.device_id);
            if id.len() > CLIENT_ID_MAX {
                return fail(
                    "mqtt.client_id",
                    format!(
                        "the default client id {id:?} is longer than {CLIENT_ID_MAX} characters; \
                         set mqtt.client_id or a shorter agent.device_id"
                    ),
                );
            }
        }
    }
    let keep_alive = mqtt.keep_alive;
    if keep_alive.subsec_nanos() != 0 || keep_alive.as_secs() > u64::from(u16::MAX) {
        return fail(
            "mqtt.keep_alive",
            format!(
                "expected whole seconds from 1s to 65535s, or 0s to disable, found {}",
                HumanDuration(keep_alive)
            ),
        );
    }
    let expiry = mqtt.session_expiry;
    if expiry.as_secs() == 0 || expiry.as_secs() > u64::from(u32::MAX) {
        return fail(
            "mqtt.session_expiry",
            format!(
                "expected from 1s to 4294967295s, found {}; the persistent session that keeps \
                 messages while kedge is down needs a non-zero expiry",
                HumanDuration(expiry)
            ),
        );
    }
    if let Some(username) = &mqtt.username {
        not_empty("mqtt.username", username)?;
    }
    if mqtt.password.is_some() && mqtt.username.is_none() {
        return fail("mqtt.password", "a password requires mqtt.username");
    }
    if let Some(tls) = &mqtt.tls {
        tls_config("mqtt.tls", tls)?;
    }
    backoff("mqtt.reconnect", &mqtt.reconnect, HOUR)?;
    // MQTT's largest packet: a remaining length of 268,435,455 bytes.
    let (min, max) = (ByteSize::kib(1), ByteSize::mib(256));
    if mqtt.max_packet_size < min || mqtt.max_packet_size > max {
        return fail(
            "mqtt.max_packet_size",
            format!(
                "expected a size from {min} to {max}, found {}",
                mqtt.max_packet_size
            ),
        );
    }
    if let Some(window) = mqtt.redelivery_window
        && window <= mqtt.receive_maximum
    {
        return fail(
            "mqtt.redelivery_window",
            format!(
                "must be more than mqtt.receive_maximum ({}), found {window}",
                mqtt.receive_maximum
            ),
        );
    }
    if mqtt.subscriptions.is_empty() {
        return fail(
            "mqtt.subscriptions",
            r#"at least one subscription is required, e.g. [{ filter = "sensors/#", qos = 1 }]"#,
        );
    }
    for (i, sub) in mqtt.subscriptions.iter().enumerate() {
        let path = format!("mqtt.subscriptions[{i}].filter");
        mqtt_filter(&sub.filter).map_err(at(&path))?;
        let earlier = mqtt.subscriptions[..i]
            .iter()
            .position(|other| other.filter == sub.filter);
        if let Some(j) = earlier {
            return fail(
                path,
                format!("duplicate subscription; mqtt.subscriptions[{j}] has the same filter"),
            );
        }
    }
    Ok(())
}

/// Checks an MQTT topic filter: '+' and '#' must be whole levels, '#' only the last one.
fn mqtt_filter(filter: &str) -> Result<(), String> {
    let invalid = |why: &str| Err(format!("invalid MQTT topic filter {filter:?}: {why}"));
    if filter.is_empty() {
        return invalid("must not be empty");
    }
    if filter.contains('\0') {
        return invalid("must not contain NUL characters");
    }
    if filter.len() > MQTT_TOPIC_MAX_BYTES {
        return invalid("longer than 65535 bytes");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return invalid(r##"'#' must be a whole level and the last one, as in "sensors/#""##);
        }
        if level.contains('+') && *level != "+" {
            return invalid(r#"'+' must be a whole level, as in "sensors/+/temperature""#);
        }
    }
    Ok(())
}

fn kafka_topic(topic: &str) -> Result<(), String> {
    kedge_wire::record::check_topic_name(topic)
}

fn routing(routing: &RoutingConfig) -> Check {
    if let Some(topic) = &routing.default_topic {
        kafka_topic(topic).map_err(at("routing.default_topic"))?;
    }
    kafka_topic(&routing.dead_letter_topic).map_err(at("routing.dead_letter_topic"))?;
    for (i, rule) in routing.rules.iter().enumerate() {
        let path = format!("routing.rules[{i}]");
        mqtt_filter(&rule.filter).map_err(at(format!("{path}.filter")))?;
        kafka_topic(&rule.topic).map_err(at(format!("{path}.topic")))?;
        let Some(key_level) = rule.key_level else {
            continue;
        };
        let levels = rule.filter.split('/').count();
        // Under a trailing '#' any deeper level may exist; the router dead-letters records
        // whose topic turns out to be too short.
        let open_ended = rule.filter == "#" || rule.filter.ends_with("/#");
        if !open_ended && key_level >= levels {
            return fail(
                format!("{path}.key_level"),
                format!(
                    "level {key_level} does not exist in filter {:?}, which has {levels} \
                     level{} (0 to {}); key_level counts from 0",
                    rule.filter,
                    if levels == 1 { "" } else { "s" },
                    levels - 1
                ),
            );
        }
    }
    Ok(())
}

fn kafka(kafka: &KafkaConfig) -> Check {
    if kafka.bootstrap.is_empty() {
        return fail(
            "kafka.bootstrap",
            r#"at least one broker is required, e.g. ["127.0.0.1:9092"]"#,
        );
    }
    for (i, broker) in kafka.bootstrap.iter().enumerate() {
        host_port(broker).map_err(at(format!("kafka.bootstrap[{i}]")))?;
    }
    name(&kafka.client_id, 255, "client id").map_err(at("kafka.client_id"))?;
    let (min, max) = (ByteSize::kib(1), super::MAX_BATCH_BYTES);
    if kafka.batch_max_bytes < min || kafka.batch_max_bytes > max {
        return fail(
            "kafka.batch_max_bytes",
            format!(
                "expected a size from {min} to {max}, found {}",
                kafka.batch_max_bytes
            ),
        );
    }
    positive("kafka.connect_timeout", kafka.connect_timeout, HOUR)?;
    positive("kafka.request_timeout", kafka.request_timeout, HOUR)?;
    backoff("kafka.retry_backoff", &kafka.retry_backoff, HOUR)?;
    positive("kafka.metadata_refresh", kafka.metadata_refresh, DAY)?;
    at_most("kafka.linger", kafka.linger, Duration::from_secs(60))?;
    if let Some(tls) = &kafka.tls {
        tls_config("kafka.tls", tls)?;
    }
    if let Some(s) = &kafka.sasl {
        sasl(s)?;
        if s.mechanism == SaslMechanism::Plain && kafka.tls.is_none() && !s.allow_plaintext {
            return fail(
                "kafka.sasl.mechanism",
                "PLAIN without [kafka.tls] sends the password in the clear; enable [kafka.tls], \
                 use SCRAM-SHA-256/512, or set kafka.sasl.allow_plaintext = true",
            );
        }
    }
    Ok(())
}

fn tls_config(prefix: &str, tls: &TlsConfig) -> Check {
    let paths = [
        ("ca_file", &tls.ca_file),
        ("client_cert_file", &tls.client_cert_file),
        ("client_key_file", &tls.client_key_file),
    ];
    for (key, path) in paths {
        if let Some(path) = path {
            not_empty(&format!("{prefix}.{key}"), &path.to_string_lossy())?;
        }
    }
    match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(_), None) => {
            return fail(
                format!("{prefix}.client_cert_file"),
                "client_cert_file requires client_key_file; set both for mutual TLS, or neither",
            );
        }
        (None, Some(_)) => {
            return fail(
                format!("{prefix}.client_key_file"),
                "client_key_file requires client_cert_file; set both for mutual TLS, or neither",
            );
        }
        _ => {}
    }
    if let Some(server_name) = &tls.server_name {
        not_empty(&format!("{prefix}.server_name"), server_name)?;
    }
    Ok(())
}

fn sasl(sasl: &SaslConfig) -> Check {
    not_empty("kafka.sasl.username", &sasl.username)?;
    let ascii = |c: char| c == ' ' || c.is_ascii_graphic();
    match sasl.mechanism {
        SaslMechanism::Plain if sasl.username.contains('\0') => fail(
            "kafka.sasl.username",
            "PLAIN user names must not contain NUL characters",
        ),
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512
            if !sasl.username.chars().all(ascii) =>
        {
            fail(
                "kafka.sasl.username",
                "SCRAM user names must be printable ASCII (kedge implements SASLprep for ASCII only)",
            )
        }
        _ => Ok(()),
    }
}

fn host_port(value: &str) -> Result<(), String> {
    let expected = || format!(r#"expected "host:port", e.g. "127.0.0.1:9092", found {value:?}"#);
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(expected());
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(expected());
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 && !port.starts_with('+') => Ok(()),
        _ => Err(format!(
            "invalid port {port:?} in {value:?}: expected an integer from 1 to 65535"
        )),
    }
}

fn queue(queue: &QueueConfig) -> Check {
    if let Some(dir) = &queue.dir {
        not_empty("queue.dir", &dir.to_string_lossy())?;
    }
    if queue.commit_max_records == 0 {
        return fail("queue.commit_max_records", "must be at least 1");
    }
    at_most(
        "queue.commit_window",
        queue.commit_window,
        Duration::from_secs(60),
    )?;
    if queue.commit_max_bytes > COMMIT_BYTES_MAX {
        return fail(
            "queue.commit_max_bytes",
            format!(
                "must be at most {COMMIT_BYTES_MAX}, found {}",
                queue.commit_max_bytes
            ),
        );
    }
    if queue.commit_max_bytes.bytes() == 0 {
        return fail("queue.commit_max_bytes", "must be greater than 0 B");
    }
    if queue.cache.bytes() == 0 {
        return fail("queue.cache", "must be greater than 0 B");
    }
    if queue
        .max_bytes
        .is_some_and(|b| b.bytes() < queue.commit_max_bytes.bytes())
    {
        return fail(
            "queue.max_bytes",
            "must be at least queue.commit_max_bytes, or one commit never fits",
        );
    }
    Ok(())
}

fn log(log: &LogConfig) -> Check {
    const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
    let level = log.level.trim();
    if LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) || level.contains('=') {
        Ok(())
    } else {
        fail(
            "log.level",
            format!(
                "expected one of error, warn, info, debug, trace, or a filter directive \
                 such as \"info,kedge=debug\", found {:?}",
                log.level
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_filters() {
        for good in [
            "#", "+", "a/b", "a/+/c", "a/#", "+/+/#", "/a", "a//b", "$SYS/#",
        ] {
            assert!(mqtt_filter(good).is_ok(), "{good:?}");
        }
        for bad in ["", "a/#/b", "a#", "a/b#", "a+/b", "a/+b", "##", "a\0b"] {
            assert!(mqtt_filter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kafka_topics() {
        for good in ["sensors", "a.b_c-d", &"x".repeat(249)] {
            assert!(kafka_topic(good).is_ok(), "{good:?}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ä", &"x".repeat(250)] {
            assert!(kafka_topic(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn host_ports() {
        for good in ["127.0.0.1:9092", "kafka:1", "[::1]:9092", "b.example:65535"] {
            assert!(host_port(good).is_ok(), "{good:?}");
        }
        for bad in [
            "kafka",
            ":9092",
            "kafka:",
            "kafka:0",
            "kafka:65536",
            "kafka:x",
            "k a:1",
        ] {
            assert!(host_port(bad).is_err(), "{bad:?}");
        }
    }
}
