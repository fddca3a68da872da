//! Downsamples sensor readings: one average (with min, max and count) per sensor and time window.
//! Schema and configuration: README.md.

use std::collections::{BTreeMap, BTreeSet};

use kedge_plugin::json::Json;
use kedge_plugin::{BatchInfo, Config, Error, Event, Output, Plugin, Verdict, Windowed};

struct Downsample {
    window_ms: i64,
    /// The numeric member of a reading to aggregate.
    field: String,
    /// Open windows, by (window start, sensor): the order `tick` emits them in.
    windows: BTreeMap<(i64, String), Window>,
    /// The topic each sensor's readings were bound for (routing's, or an earlier plugin's
    /// route), as last seen in `process`.
    topics: BTreeMap<String, Option<String>>,
    /// Windows ending at or before this have been emitted; readings for them come too late.
    emitted_until: i64,
}

struct Window {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Window {
    fn new(value: f64) -> Self {
        Window {
            count: 1,
            sum: value,
            min: value,
            max: value,
        }
    }

    fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }
}

impl Plugin for Downsample {
    fn init(config: Config) -> Result<Self, Error> {
        let window_ms: i64 = config.get_or("window_ms", 1000)?;
        if window_ms <= 0 {
            return Err(Error::new(format!(
                "config `window_ms`: must be positive, got {window_ms}"
            )));
        }
        Ok(Downsample {
            window_ms,
            field: config.get_or("field", "temp_c".to_owned())?,
            windows: BTreeMap::new(),
            topics: BTreeMap::new(),
            emitted_until: i64::MIN,
        })
    }

    /// Consumes every reading: each is dropped, to reappear only inside its window's aggregate.
    fn process(&mut self, info: &BatchInfo, events: Vec<Event>) -> Result<Vec<Verdict>, Error> {
        let mut late = 0;
        let verdicts = events
            .iter()
            .map(|event| match self.reading(&event.value, &info.subject) {
                Ok((sensor, value)) => {
                    let start = event.timestamp_ms - event.timestamp_ms.rem_euclid(self.window_ms);
                    if start.saturating_add(self.window_ms) <= self.emitted_until {
                        late += 1;
                        return Verdict::Drop;
                    }
                    if self.topics.get(&sensor) != Some(&info.topic) {
                        self.topics.insert(sensor.clone(), info.topic.clone());
                    }
                    self.windows
                        .entry((start, sensor))
                        .and_modify(|w| w.add(value))
                        .or_insert_with(|| Window::new(value));
                    Verdict::Drop
                }
                Err(message) => Verdict::Fail(message),
            })
            .collect();
        if late > 0 {
            kedge_plugin::counter_add("late", late);
        }
        Ok(verdicts)
    }
}

impl Windowed for Downsample {
    /// Emits every window that has ended by `now_ms`.
    fn tick(&mut self, now_ms: i64) -> Result<Vec<Output>, Error> {
        let mut outputs = Vec::new();
        // Windows are ordered by start and all have the same length, so the closed ones are a
        // prefix of the map.
        while let Some(entry) = self.windows.first_entry() {
            let (start, _) = *entry.key();
            if start.saturating_add(self.window_ms) > now_ms {
                break;
            }
            let ((start, sensor), window) = entry.remove_entry();
            outputs.push(self.aggregate(start, sensor, window));
        }
        self.emitted_until = self.emitted_until.max(now_ms);
        // Forget the topics of sensors with no open window, or the map grows with every sensor
        // ever seen.
        let open: BTreeSet<&String> = self.windows.keys().map(|(_, sensor)| sensor).collect();
        self.topics.retain(|sensor, _| open.contains(sensor));
        if !outputs.is_empty() {
            kedge_plugin::counter_add("windows", outputs.len() as u64);
        }
        Ok(outputs)
    }
}

impl Downsample {
    /// The sensor id (the reading's `sensor`, else the subject) and the reading's value.
    fn reading(&self, value: &[u8], subject: &str) -> Result<(String, f64), String> {
        let reading = Json::parse(value).map_err(|e| e.to_string())?;
        let Some(value) = reading.get(&self.field).and_then(Json::as_f64) else {
            return Err(format!("no `{}` number in the reading", self.field));
        };
        // 1e400 parses as infinity, which would turn the window's aggregates into nulls.
        if !value.is_finite() {
            return Err(format!("`{}` is out of the range of a double", self.field));
        }
        let sensor = match reading.get("sensor") {
            Some(Json::String(id)) => id.clone(),
            Some(_) => return Err("`sensor` must be a string".into()),
            None => subject.to_owned(),
        };
        Ok((sensor, value))
    }

    fn aggregate(&self, start: i64, sensor: String, window: Window) -> Output {
        let value = Json::Object(vec![
            ("sensor".into(), Json::String(sensor.clone())),
            ("start_ms".into(), Json::Number(start as f64)),
            (
                "end_ms".into(),
                Json::Number(start.saturating_add(self.window_ms) as f64),
            ),
            ("count".into(), Json::Number(window.count as f64)),
            ("avg".into(), Json::Number(window.sum / window.count as f64)),
            ("min".into(), Json::Number(window.min)),
            ("max".into(), Json::Number(window.max)),
        ]);
        Output {
            topic: self.topics.get(&sensor).cloned().flatten(),
            key: Some(sensor.into_bytes()),
            value: value.to_bytes(),
            headers: Vec::new(),
            timestamp_ms: Some(start),
        }
    }
}

kedge_plugin::export_windowed!(Downsample);

#[cfg(test)]
mod tests {
    use super::*;

    fn downsample(config: &[(&str, &str)]) -> Downsample {
        Downsample::init(Config::new(
            config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
        .unwrap()
    }

    fn process(
        plugin: &mut Downsample,
        subject: &str,
        topic: Option<&str>,
        readings: &[(i64, &str)],
    ) -> Vec<Verdict> {
        let info = BatchInfo {
            source: "mqtt".into(),
            subject: subject.into(),
            // Unlike `topic`, as after a plugin that routed the readings elsewhere: the outputs
            // must keep the route, not fall back to routing's pick.
            default_topic: topic.map(|_| "routing-pick".to_owned()),
            topic: topic.map(Into::into),
            now_ms: 0,
        };
        let events = readings
            .iter()
            .map(|(ts, v)| Event {
                key: None,
                value: v.as_bytes().to_vec(),
                headers: vec![],
                timestamp_ms: *ts,
            })
            .collect();
        plugin.process(&info, events).unwrap()
    }

    fn emitted(outputs: &[Output]) -> Vec<(Option<&str>, &str, &str, Option<i64>)> {
        outputs
            .iter()
            .map(|o| {
                (
                    o.topic.as_deref(),
                    std::str::from_utf8(o.key.as_deref().unwrap()).unwrap(),
                    std::str::from_utf8(&o.value).unwrap(),
                    o.timestamp_ms,
                )
            })
            .collect()
    }

    #[test]
    fn averages_per_sensor_and_window() {
        let mut p = downsample(&[]);
        let t = Some("sensors");
        let verdicts = process(
            &mut p,
            "sensors/t1/temp",
            t,
            &[
                (1_700_000_000_100, r#"{"sensor":"t1","temp_c":20}"#),
                (1_700_000_000_500, r#"{"sensor":"t1","temp_c":21}"#),
            ],
        );
        assert_eq!(verdicts, [Verdict::Drop, Verdict::Drop]);
        process(
            &mut p,
            "sensors/t2/temp",
            Some("other"),
            &[(1_700_000_000_900, r#"{"sensor":"t2","temp_c":30.5}"#)],
        );
        process(
            &mut p,
            "sensors/t1/temp",
            t,
            &[(1_700_000_001_200, r#"{"sensor":"t1","temp_c":22.5}"#)],
        );

        assert_eq!(p.tick(1_700_000_000_999).unwrap(), []);
        assert_eq!(
            emitted(&p.tick(1_700_000_001_000).unwrap()),
            [
                (
                    Some("sensors"),
                    "t1",
                    r#"{"sensor":"t1","start_ms":1700000000000,"end_ms":1700000001000,"count":2,"avg":20.5,"min":20,"max":21}"#,
                    Some(1_700_000_000_000)
                ),
                (
                    Some("other"),
                    "t2",
                    r#"{"sensor":"t2","start_ms":1700000000000,"end_ms":1700000001000,"count":1,"avg":30.5,"min":30.5,"max":30.5}"#,
                    Some(1_700_000_000_000)
                ),
            ]
        );
        assert_eq!(
            emitted(&p.tick(1_700_000_002_000).unwrap()),
            [(
                Some("sensors"),
                "t1",
                r#"{"sensor":"t1","start_ms":1700000001000,"end_ms":1700000002000,"count":1,"avg":22.5,"min":22.5,"max":22.5}"#,
                Some(1_700_000_001_000)
            )]
        );
        assert_eq!(p.tick(1_700_000_009_000).unwrap(), []);
        assert!(
            p.topics.is_empty(),
            "topics of closed sensors kept: {:?}",
            p.topics
        );
    }

    #[test]
    fn readings_for_emitted_windows_are_dropped_as_late() {
        let mut p = downsample(&[("window_ms", "10"), ("field", "v")]);
        process(&mut p, "s/a", None, &[(5, r#"{"v":1}"#)]);
        assert_eq!(p.tick(10).unwrap().len(), 1);
        process(
            &mut p,
            "s/a",
            None,
            &[(9, r#"{"v":2}"#), (10, r#"{"v":3}"#)],
        );
        assert_eq!(
            emitted(&p.tick(20).unwrap()),
            [(
                None,
                "s/a",
                r#"{"sensor":"s/a","start_ms":10,"end_ms":20,"count":1,"avg":3,"min":3,"max":3}"#,
                Some(10)
            )]
        );
    }

    #[test]
    fn windows_align_to_the_epoch_also_before_it() {
        let mut p = downsample(&[("window_ms", "10")]);
        process(&mut p, "s", None, &[(-1, r#"{"temp_c":1}"#)]);
        assert_eq!(p.tick(0).unwrap()[0].timestamp_ms, Some(-10));
    }

    #[test]
    fn fails_readings_without_the_field() {
        let mut p = downsample(&[]);
        let verdicts = process(
            &mut p,
            "s",
            None,
            &[
                (0, "oops"),
                (0, r#"{"sensor":"t3"}"#),
                (0, r#"{"sensor":1,"temp_c":1}"#),
                (0, r#"{"sensor":"t3","temp_c":1e400}"#),
            ],
        );
        assert_eq!(
            verdicts,
            [
                Verdict::Fail("invalid JSON at byte 0: expected a value".into()),
                Verdict::Fail("no `temp_c` number in the reading".into()),
                Verdict::Fail("`sensor` must be a string".into()),
                Verdict::Fail("`temp_c` is out of the range of a double".into()),
            ]
        );
        assert_eq!(p.tick(i64::MAX / 2).unwrap(), []);
    }

    #[test]
    fn rejects_a_window_that_is_not_positive() {
        let config = Config::new(vec![("window_ms".into(), "0".into())]);
        assert_eq!(
            Downsample::init(config).err(),
            Some(Error::new("config `window_ms`: must be positive, got 0"))
        );
    }
}
