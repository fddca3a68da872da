//! The config parser (agent/src/config): `Config::parse` with its validation, the error it
//! reports (line, column, key path, message), `kedge check`'s description of a valid config,
//! and the duration and size units on their own.

#![no_main]

use std::path::Path;

use kedge::config::{Config, HumanDuration, parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/kedge/kedge.toml");
    match Config::parse(text, path) {
        Ok(config) => {
            let described = kedge::check::describe(&config, path);
            assert!(described.contains("configuration is valid"));
            let _ = config.mqtt.effective_port();
            let _ = config.mqtt.effective_redelivery_window();
            let _ = config.mqtt.effective_client_id(&config.agent.device_id);
            let _ = config.queue.effective_dir(&config.agent);
            for p in &config.plugins {
                assert!(
                    p.path.is_absolute(),
                    "plugin path made relative to the config file"
                );
            }
            // A valid config parses to the same config again.
            let again = Config::parse(text, path).expect("a valid config parses twice");
            assert_eq!(format!("{config:?}"), format!("{again:?}"));
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty());
            assert!(e.line >= 1 && e.column >= 1, "line/column from 1: {e:?}");
        }
    }
    // The units, also reached through the config, on the raw text.
    if text.len() < 64 {
        if let Ok(d) = parse_duration(text) {
            let _ = HumanDuration(d).to_string();
        }
        if let Ok(s) = kedge::config::ByteSize::parse(text) {
            let _ = s.to_string();
        }
    }
});
