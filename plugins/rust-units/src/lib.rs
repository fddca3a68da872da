//! Converts sensor temperature readings to degrees Celsius and drops implausible ones.
//! Schema and configuration: README.md.

use kedge_plugin::json::Json;
use kedge_plugin::{BatchInfo, Config, Error, Event, Level, Output, Plugin, Verdict};

/// Digits after the decimal point beyond which rounding means nothing for an `f64`.
const MAX_DECIMALS: u32 = 15;

struct Units {
    min_c: f64,
    max_c: f64,
    /// 10^decimals: the reading is rounded to a multiple of its inverse.
    scale: f64,
}

impl Plugin for Units {
    fn init(config: Config) -> Result<Self, Error> {
        let min_c: f64 = config.get_or("min_c", -40.0)?;
        let max_c: f64 = config.get_or("max_c", 85.0)?;
        let decimals: u32 = config.get_or("decimals", 2)?;
        // Incomparable means a NaN bound, which would drop everything.
        if min_c.partial_cmp(&max_c).is_none_or(|order| order.is_gt()) {
            return Err(Error::new(format!(
                "config: min_c ({min_c}) must not exceed max_c ({max_c})"
            )));
        }
        if decimals > MAX_DECIMALS {
            return Err(Error::new(format!(
                "config `decimals`: at most {MAX_DECIMALS}, got {decimals}"
            )));
        }
        kedge_plugin::log(
            Level::Info,
            &format!("keeping readings from {min_c} °C to {max_c} °C, {decimals} decimals"),
        );
        Ok(Units {
            min_c,
            max_c,
            scale: 10_f64.powi(decimals as i32),
        })
    }

    fn process(&mut self, info: &BatchInfo, events: Vec<Event>) -> Result<Vec<Verdict>, Error> {
        let topic_sensor = sensor_from_topic(&info.subject);
        let (mut converted, mut out_of_range, mut invalid) = (0, 0, 0);
        let verdicts = events
            .into_iter()
            .map(|event| match self.convert(&event.value, topic_sensor) {
                Ok(Some((sensor, value))) => {
                    converted += 1;
                    Verdict::Replace(vec![Output {
                        topic: None,
                        key: Some(sensor.into_bytes()),
                        value,
                        headers: event.headers,
                        timestamp_ms: None,
                    }])
                }
                Ok(None) => {
                    out_of_range += 1;
                    Verdict::Drop
                }
                Err(message) => {
                    invalid += 1;
                    Verdict::Fail(message)
                }
            })
            .collect();
        // One host call per counter and batch, not per event.
        for (name, count) in [
            ("converted", converted),
            ("out_of_range", out_of_range),
            ("invalid", invalid),
        ] {
            if count > 0 {
                kedge_plugin::counter_add(name, count);
            }
        }
        Ok(verdicts)
    }
}

impl Units {
    /// The sensor id and the converted reading, or `None` if it is out of range.
    fn convert(
        &self,
        value: &[u8],
        topic_sensor: Option<&str>,
    ) -> Result<Option<(String, Vec<u8>)>, String> {
        let Json::Object(members) = Json::parse(value).map_err(|e| e.to_string())? else {
            return Err("a reading must be a JSON object".into());
        };
        let (mut sensor, mut temp_f, mut temp_c) = (None, None, None);
        let mut others = Vec::new();
        for (name, value) in members {
            match name.as_str() {
                "sensor" => sensor = Some(value),
                "temp_f" => temp_f = Some(value),
                "temp_c" => temp_c = Some(value),
                _ => others.push((name, value)),
            }
        }
        let sensor = match sensor {
            Some(Json::String(id)) => id,
            Some(_) => return Err("`sensor` must be a string".into()),
            None => topic_sensor
                .ok_or("no `sensor` in the reading and no id in the topic (sensors/<id>/…)")?
                .to_owned(),
        };
        let celsius = match (temp_f, temp_c) {
            (Some(Json::Number(f)), _) => (f - 32.0) * 5.0 / 9.0,
            (Some(_), _) => return Err("`temp_f` must be a number".into()),
            (None, Some(Json::Number(c))) => c,
            (None, Some(_)) => return Err("`temp_c` must be a number".into()),
            (None, None) => return Err("no `temp_f` or `temp_c` in the reading".into()),
        };
        // Adding 0.0 turns -0.0 into 0.0, which would otherwise print as "-0".
        let celsius = (celsius * self.scale).round() / self.scale + 0.0;
        if !(self.min_c..=self.max_c).contains(&celsius) {
            return Ok(None);
        }
        let mut reading = vec![
            ("sensor".to_owned(), Json::String(sensor.clone())),
            ("temp_c".to_owned(), Json::Number(celsius)),
        ];
        reading.extend(others);
        Ok(Some((sensor, Json::Object(reading).to_bytes())))
    }
}

/// `t1` for the topic `sensors/t1/temp`.
fn sensor_from_topic(topic: &str) -> Option<&str> {
    let id = topic.strip_prefix("sensors/")?.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

kedge_plugin::export!(Units);

#[cfg(test)]
mod tests {
    use super::*;
    use kedge_plugin::Header;

    fn units(config: &[(&str, &str)]) -> Result<Units, Error> {
        Units::init(Config::new(
            config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    fn process(plugin: &mut Units, subject: &str, values: &[&str]) -> Vec<Verdict> {
        let info = BatchInfo {
            source: "mqtt".into(),
            subject: subject.into(),
            default_topic: None,
            topic: None,
            now_ms: 0,
        };
        let events = values
            .iter()
            .map(|v| Event {
                key: None,
                value: v.as_bytes().to_vec(),
                headers: vec![],
                timestamp_ms: 0,
            })
            .collect();
        plugin.process(&info, events).unwrap()
    }

    fn replaced(sensor: &str, value: &str) -> Verdict {
        Verdict::Replace(vec![Output {
            topic: None,
            key: Some(sensor.as_bytes().to_vec()),
            value: value.as_bytes().to_vec(),
            headers: vec![],
            timestamp_ms: None,
        }])
    }

    #[test]
    fn converts_keeps_other_fields_and_keys_by_sensor() {
        let mut plugin = units(&[]).unwrap();
        let verdicts = process(
            &mut plugin,
            "sensors/t1/temp",
            &[
                r#"{"sensor":"t1","temp_f":72.5}"#,
                r#"{"temp_f":-40,"battery":0.87}"#,
                r#"{"sensor":"t2","temp_c":21.456}"#,
                r#"{"temp_f":98.6}"#,
            ],
        );
        assert_eq!(
            verdicts,
            [
                replaced("t1", r#"{"sensor":"t1","temp_c":22.5}"#),
                replaced("t1", r#"{"sensor":"t1","temp_c":-40,"battery":0.87}"#),
                replaced("t2", r#"{"sensor":"t2","temp_c":21.46}"#),
                replaced("t1", r#"{"sensor":"t1","temp_c":37}"#),
            ]
        );
    }

    #[test]
    fn drops_out_of_range_readings() {
        let mut plugin = units(&[("min_c", "-10"), ("max_c", "50")]).unwrap();
        let verdicts = process(
            &mut plugin,
            "sensors/t1/temp",
            &[
                r#"{"temp_f":212}"#,
                r#"{"temp_c":-10.001}"#,
                r#"{"temp_c":-10.004}"#,
                r#"{"temp_c":50}"#,
            ],
        );
        assert_eq!(
            verdicts,
            [
                Verdict::Drop,
                replaced("t1", r#"{"sensor":"t1","temp_c":-10}"#),
                replaced("t1", r#"{"sensor":"t1","temp_c":-10}"#),
                replaced("t1", r#"{"sensor":"t1","temp_c":50}"#),
            ]
        );
        let verdicts = process(&mut plugin, "sensors/t1/temp", &[r#"{"temp_c":-10.006}"#]);
        assert_eq!(verdicts, [Verdict::Drop]);
    }

    #[test]
    fn fails_what_is_not_a_reading() {
        let mut plugin = units(&[]).unwrap();
        let fail = |m: &str| Verdict::Fail(m.into());
        let verdicts = process(
            &mut plugin,
            "devices/x",
            &[
                "not json",
                "[1]",
                r#"{"sensor":"t3","humidity":40}"#,
                r#"{"sensor":7,"temp_c":1}"#,
                r#"{"sensor":"t3","temp_f":"72"}"#,
                r#"{"temp_c":1}"#,
            ],
        );
        assert_eq!(
            verdicts,
            [
                fail("invalid JSON at byte 0: expected a value"),
                fail("a reading must be a JSON object"),
                fail("no `temp_f` or `temp_c` in the reading"),
                fail("`sensor` must be a string"),
                fail("`temp_f` must be a number"),
                fail("no `sensor` in the reading and no id in the topic (sensors/<id>/…)"),
            ]
        );
    }

    #[test]
    fn carries_headers_over() {
        let mut plugin = units(&[]).unwrap();
        let info = BatchInfo {
            source: "mqtt".into(),
            subject: "sensors/t3/temp".into(),
            default_topic: None,
            topic: None,
            now_ms: 0,
        };
        let header = Header {
            name: "site".into(),
            value: b"north".to_vec(),
        };
        let event = Event {
            key: Some(b"old".to_vec()),
            value: br#"{"temp_f":32}"#.to_vec(),
            headers: vec![header.clone()],
            timestamp_ms: 5,
        };
        let verdicts = plugin.process(&info, vec![event]).unwrap();
        let Verdict::Replace(outputs) = &verdicts[0] else {
            panic!("{:?}", verdicts[0]);
        };
        assert_eq!(outputs[0].headers, [header]);
        assert_eq!(outputs[0].key.as_deref(), Some(&b"t3"[..]));
        assert_eq!(outputs[0].value, br#"{"sensor":"t3","temp_c":0}"#);
    }

    #[test]
    fn rejects_bad_config() {
        assert_eq!(
            units(&[("min_c", "10"), ("max_c", "0")]).err(),
            Some(Error::new("config: min_c (10) must not exceed max_c (0)"))
        );
        assert_eq!(
            units(&[("decimals", "16")]).err(),
            Some(Error::new("config `decimals`: at most 15, got 16"))
        );
        assert_eq!(
            units(&[("max_c", "hot")]).err(),
            Some(Error::new("config `max_c`: expected a number, got `hot`"))
        );
    }

    #[test]
    fn sensor_ids_come_from_the_second_topic_level() {
        assert_eq!(sensor_from_topic("sensors/t1/temp"), Some("t1"));
        assert_eq!(sensor_from_topic("sensors/t1"), Some("t1"));
        assert_eq!(sensor_from_topic("sensors//temp"), None);
        assert_eq!(sensor_from_topic("other/t1/temp"), None);
    }
}
