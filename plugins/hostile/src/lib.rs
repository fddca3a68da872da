//! A plugin that misbehaves on purpose, chosen by the config key `mode`, to test the host's
//! limits and recovery; `keep` and `replace` behave, for the host overhead benchmark.
//! Modes: README.md.

use std::hint::black_box;
use std::io::Read;
use std::time::Duration;

use kedge_plugin::{BatchInfo, Config, Error, Event, Level, Output, Plugin, Verdict};

const MODES: &str = "keep, replace, route, loop, memory, trap-on, huge-output, alias-output, sleep, read-socket, init-fail, fail-batch, wrong-count";

enum Hostile {
    Keep,
    Replace,
    Route { topic: String },
    Loop,
    Memory,
    TrapOn { poison: Vec<u8> },
    HugeOutput { copies: usize },
    AliasOutput { copies: usize, size: usize },
    Sleep { ms: u64 },
    ReadSocket { addr: String },
    FailBatch,
    WrongCount,
}

impl Plugin for Hostile {
    fn init(config: Config) -> Result<Self, Error> {
        let mode: String = config.require("mode")?;
        // Once per instance, so a log shows each recycle; never per batch, which would skew the
        // overhead benchmark.
        kedge_plugin::log(Level::Warn, &format!("hostile plugin, mode `{mode}`"));
        Ok(match mode.as_str() {
            "keep" => Hostile::Keep,
            "replace" => Hostile::Replace,
            "route" => Hostile::Route {
                topic: config.require("topic")?,
            },
            "loop" => Hostile::Loop,
            "memory" => Hostile::Memory,
            "trap-on" => Hostile::TrapOn {
                poison: config.require::<String>("poison")?.into_bytes(),
            },
            "huge-output" => Hostile::HugeOutput {
                copies: config.get_or("copies", 100_000)?,
            },
            "alias-output" => Hostile::AliasOutput {
                copies: config.get_or("copies", 1024)?,
                size: config.get_or("size", 1 << 20)?,
            },
            "sleep" => Hostile::Sleep {
                ms: config.get_or("ms", 60_000)?,
            },
            "read-socket" => Hostile::ReadSocket {
                addr: config.require("addr")?,
            },
            "init-fail" => return Err(Error::new("init-fail: refusing to start, as configured")),
            "fail-batch" => Hostile::FailBatch,
            "wrong-count" => Hostile::WrongCount,
            _ => {
                return Err(Error::new(format!(
                    "config `mode`: expected one of {MODES}, got `{mode}`"
                )));
            }
        })
    }

    fn process(&mut self, _info: &BatchInfo, events: Vec<Event>) -> Result<Vec<Verdict>, Error> {
        match self {
            Hostile::Keep => Ok(events.iter().map(|_| Verdict::Keep).collect()),
            Hostile::Route { topic } => Ok(events
                .iter()
                .map(|_| Verdict::Route(topic.clone()))
                .collect()),
            Hostile::Replace => Ok(events
                .into_iter()
                .map(|event| Verdict::Replace(vec![echo(event)]))
                .collect()),
            Hostile::Loop => {
                // black_box keeps the optimiser from proving the loop does nothing.
                let mut spins = 0_u64;
                loop {
                    spins = black_box(spins.wrapping_add(1));
                }
            }
            Hostile::Memory => {
                // Each block is written to, so the pages are really committed; growing memory
                // past the host's limit fails the allocation, which aborts (traps).
                let mut hoard = Vec::new();
                loop {
                    hoard.push(black_box(vec![0xA5_u8; 1 << 20]));
                }
            }
            // Counts each event it keeps before it gets to the poison: the host must count
            // only the calls that succeed, not those it re-runs after the trap.
            Hostile::TrapOn { poison } => Ok(events
                .iter()
                .map(|event| {
                    if event.value == *poison {
                        panic!("trap-on: poisoned event");
                    }
                    kedge_plugin::counter_add("kept", 1);
                    Verdict::Keep
                })
                .collect()),
            Hostile::HugeOutput { copies } => Ok(events
                .into_iter()
                .map(|event| Verdict::Replace(vec![echo(event); *copies]))
                .collect()),
            Hostile::AliasOutput { copies, size } => {
                // One buffer, leaked, that the value of every output points at: the plugin
                // spends `size` bytes of memory on values that add up to `copies` × `size`.
                let buffer = Vec::leak(vec![0x5A_u8; *size]);
                let (ptr, len) = (buffer.as_mut_ptr(), buffer.len());
                Ok(events
                    .iter()
                    .map(|_| {
                        Verdict::Replace(
                            (0..*copies)
                                .map(|_| Output {
                                    topic: None,
                                    key: None,
                                    // SAFETY: none. Many vectors owning one block is undefined
                                    // behaviour, on purpose: the bindings pass each value's
                                    // pointer to the host as it is, which is the attack. The
                                    // bindings' cleanup after the call frees the block again
                                    // and again, which aborts (a trap) if the host gets there.
                                    value: unsafe { Vec::from_raw_parts(ptr, len, len) },
                                    headers: Vec::new(),
                                    timestamp_ms: None,
                                })
                                .collect(),
                        )
                    })
                    .collect())
            }
            Hostile::Sleep { ms } => {
                // On wasm32-wasip2 this is wasi:clocks `subscribe-duration` and a blocking poll:
                // time the host spends in a call, not in the plugin's code.
                std::thread::sleep(Duration::from_millis(*ms));
                Ok(events.iter().map(|_| Verdict::Keep).collect())
            }
            Hostile::ReadSocket { addr } => {
                // A blocking read on a TCP connection (network granted) whose peer never
                // writes: wasi-libc waits for the socket's input stream to become readable.
                let mut stream = std::net::TcpStream::connect(addr.as_str())
                    .map_err(|e| Error::new(format!("read-socket: connect {addr}: {e}")))?;
                let mut byte = [0_u8; 1];
                let n = stream
                    .read(&mut byte)
                    .map_err(|e| Error::new(format!("read-socket: read: {e}")))?;
                Ok(events
                    .iter()
                    .map(|_| Verdict::Fail(format!("read-socket: read {n} bytes")))
                    .collect())
            }
            Hostile::FailBatch => Err(Error::new("fail-batch: failing the whole batch")),
            Hostile::WrongCount => Ok(events.iter().skip(1).map(|_| Verdict::Keep).collect()),
        }
    }
}

/// The event as an output: same key, value and headers; `None` topic and timestamp keep the
/// input's.
fn echo(event: Event) -> Output {
    Output {
        topic: None,
        key: event.key,
        value: event.value,
        headers: event.headers,
        timestamp_ms: None,
    }
}

kedge_plugin::export!(Hostile);

#[cfg(test)]
mod tests {
    use super::*;
    use kedge_plugin::Header;

    fn hostile(config: &[(&str, &str)]) -> Result<Hostile, Error> {
        Hostile::init(Config::new(
            config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    fn info() -> BatchInfo {
        BatchInfo {
            source: "mqtt".into(),
            subject: "s".into(),
            default_topic: None,
            topic: None,
            now_ms: 0,
        }
    }

    fn events(values: &[&str]) -> Vec<Event> {
        values
            .iter()
            .map(|v| Event {
                key: Some(b"k".to_vec()),
                value: v.as_bytes().to_vec(),
                headers: vec![Header {
                    name: "h".into(),
                    value: b"v".to_vec(),
                }],
                timestamp_ms: 7,
            })
            .collect()
    }

    #[test]
    fn well_behaved_modes() {
        let mut keep = hostile(&[("mode", "keep")]).unwrap();
        assert_eq!(
            keep.process(&info(), events(&["a", "b"])).unwrap(),
            [Verdict::Keep, Verdict::Keep]
        );
        let mut replace = hostile(&[("mode", "replace")]).unwrap();
        let verdicts = replace.process(&info(), events(&["a"])).unwrap();
        assert_eq!(
            verdicts,
            [Verdict::Replace(vec![Output {
                topic: None,
                key: Some(b"k".to_vec()),
                value: b"a".to_vec(),
                headers: vec![Header {
                    name: "h".into(),
                    value: b"v".to_vec()
                }],
                timestamp_ms: None,
            }])]
        );
        let mut route = hostile(&[("mode", "route"), ("topic", "lab")]).unwrap();
        assert_eq!(
            route.process(&info(), events(&["a"])).unwrap(),
            [Verdict::Route("lab".into())]
        );
        assert_eq!(
            hostile(&[("mode", "route")]).err(),
            Some(Error::new("config `topic` is required"))
        );
    }

    #[test]
    fn misbehaving_modes_that_return() {
        let mut huge = hostile(&[("mode", "huge-output"), ("copies", "3")]).unwrap();
        let verdicts = huge.process(&info(), events(&["a"])).unwrap();
        assert!(matches!(&verdicts[..], [Verdict::Replace(outputs)] if outputs.len() == 3));

        let mut sleep = hostile(&[("mode", "sleep"), ("ms", "1")]).unwrap();
        assert_eq!(
            sleep.process(&info(), events(&["a"])).unwrap(),
            [Verdict::Keep]
        );

        let mut fail = hostile(&[("mode", "fail-batch")]).unwrap();
        assert_eq!(
            fail.process(&info(), events(&["a"])),
            Err(Error::new("fail-batch: failing the whole batch"))
        );

        let mut wrong = hostile(&[("mode", "wrong-count")]).unwrap();
        assert_eq!(
            wrong
                .process(&info(), events(&["a", "b", "c"]))
                .unwrap()
                .len(),
            2
        );

        let mut trap = hostile(&[("mode", "trap-on"), ("poison", "bad")]).unwrap();
        assert_eq!(
            trap.process(&info(), events(&["good"])).unwrap(),
            [Verdict::Keep]
        );
    }

    #[test]
    #[should_panic(expected = "trap-on: poisoned event")]
    fn trap_on_panics_on_the_poison() {
        let mut trap = hostile(&[("mode", "trap-on"), ("poison", "bad")]).unwrap();
        let _ = trap.process(&info(), events(&["good", "bad"]));
    }

    #[test]
    fn init_errors() {
        assert_eq!(
            hostile(&[("mode", "init-fail")]).err(),
            Some(Error::new("init-fail: refusing to start, as configured"))
        );
        assert_eq!(
            hostile(&[]).err(),
            Some(Error::new("config `mode` is required"))
        );
        assert_eq!(
            hostile(&[("mode", "trap-on")]).err(),
            Some(Error::new("config `poison` is required"))
        );
        assert_eq!(
            hostile(&[("mode", "read-socket")]).err(),
            Some(Error::new("config `addr` is required"))
        );
        assert_eq!(
            hostile(&[("mode", "nice")]).err(),
            Some(Error::new(format!(
                "config `mode`: expected one of {MODES}, got `nice`"
            )))
        );
    }
}
