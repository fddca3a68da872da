//! {{name}}: a kedge transform plugin (`kedge plugin new`). It adds the MQTT topic each
//! JSON reading came from as member `subject`, drops empty readings, and sends readings that
//! are not JSON objects to the dead-letter topic. Change `event` to do what you need.
//!
//! Build: `./build.sh`; test: `./test.sh`. The SDK's API: vendor/kedge-plugin/src/lib.rs and
//! kedge's plugins/README.md; the contract: wit/transform.wit.

use kedge_plugin::json::Json;
use kedge_plugin::{BatchInfo, Config, Error, Event, EventPlugin, Output, Verdict};

struct AddSubject {
    /// The member the MQTT topic goes into (config `field`).
    field: String,
}

impl EventPlugin for AddSubject {
    /// Runs once per instance with the plugin's `[plugin.config]` table; an error refuses the
    /// plugin (`kedge check` reports it).
    fn init(config: Config) -> Result<Self, Error> {
        Ok(AddSubject {
            field: config.get_or("field", "subject".to_owned())?,
        })
    }

    /// One verdict per event: keep, drop, route(topic), replace(outputs) or fail(reason).
    fn event(&mut self, info: &BatchInfo, event: Event) -> Verdict {
        if event.value.is_empty() {
            kedge_plugin::counter_add("empty", 1);
            return Verdict::Drop;
        }
        let mut reading = match Json::parse(&event.value) {
            Ok(reading) => reading,
            Err(e) => return Verdict::Fail(e.to_string()),
        };
        if reading.set(&self.field, info.subject.as_str()).is_err() {
            return Verdict::Fail("the reading is not a JSON object".into());
        }
        // From the event: key, headers (the MQTT user properties) and timestamp stay; the topic
        // is left to kedge, which keeps the one the event is bound for.
        Verdict::Replace(vec![
            Output::from_event(&event).with_value(reading.to_bytes()),
        ])
    }
}

kedge_plugin::export!(AddSubject);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_subject() {
        let mut plugin = <AddSubject as EventPlugin>::init(Config::default()).unwrap();
        let info = BatchInfo {
            source: "mqtt".into(),
            subject: "sensors/t1".into(),
            default_topic: None,
            topic: None,
            now_ms: 0,
        };
        let event = Event {
            key: None,
            value: br#"{"temp_c":21}"#.to_vec(),
            headers: vec![],
            timestamp_ms: 0,
        };
        let Verdict::Replace(outputs) = plugin.event(&info, event) else {
            panic!("expected a replace");
        };
        assert_eq!(outputs[0].value, br#"{"temp_c":21,"subject":"sensors/t1"}"#);
    }
}
