//! The plugin chain as the pipeline runs it: events in, routed-ready events out, one plugin
//! after another in config order (ARCHITECTURE.md §2, step 2).
//!
//! Each plugin sees the events whose MQTT topic matches its `subjects`, grouped by MQTT topic
//! and by the Kafka topic they are bound for, so that one `process` call shares one
//! `batch-info`. Verdicts are applied in input order; an event a plugin fails (or a fault pins
//! on) goes to the dead-letter topic with the reason and skips the rest of the chain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;

use super::circuit::Circuit;
use super::host::{BatchInfo, Output, Verdict};
use super::isolate::{Caller, Fault, isolate};
use super::plugin::Plugin;
use super::stats::PluginStats;
use crate::config::OnFailure;
use crate::event::{Event, topic_matches};
use kedge_wire::record::{HEADER_ERROR, Header};

/// Most events in one `process` call: bounds the guest memory one call needs.
pub const MAX_CALL_EVENTS: usize = 1024;

/// One plugin in the chain, with the policy around it.
pub struct Stage {
    plugin: Plugin,
    subjects: Vec<String>,
    circuit: Circuit,
    when_open: OnFailure,
    tick: Option<(Duration, Instant)>,
}

impl Stage {
    /// A stage that runs `plugin` on events whose MQTT topic matches one of `subjects` (all
    /// when empty), calling `tick` every `tick` if set.
    pub fn new(
        plugin: Plugin,
        subjects: Vec<String>,
        circuit: Circuit,
        when_open: OnFailure,
        tick: Option<Duration>,
    ) -> Self {
        Stage {
            plugin,
            subjects,
            circuit,
            when_open,
            tick: tick.map(|every| (every, kedge_base::deadline::later(Instant::now(), every))),
        }
    }

    fn name(&self) -> &str {
        &self.plugin.stats().name
    }

    fn wants(&self, subject: &str) -> bool {
        self.subjects.is_empty() || self.subjects.iter().any(|f| topic_matches(f, subject))
    }
}

/// The result of running a batch through the chain.
#[derive(Debug)]
pub enum Applied {
    /// The events to route and journal, in input order.
    Events(Vec<Event>),
    /// A plugin with [`OnFailure::Backpressure`] is failing: offer the same batch again at `until`.
    Held {
        /// The failing plugin.
        plugin: String,
        /// When its circuit lets a probe through.
        until: Instant,
    },
}

/// An event on its way through the chain.
struct Item {
    event: Event,
    /// Dead-lettered: later plugins skip it.
    dead: bool,
}

/// The configured plugins, in order.
pub struct Chain {
    stages: Vec<Stage>,
    source: String,
    dead_letter_topic: String,
}

impl Chain {
    /// A chain over `stages` for events from `source`; failed events go to `dead_letter_topic`.
    pub fn new(stages: Vec<Stage>, source: String, dead_letter_topic: String) -> Self {
        Chain {
            stages,
            source,
            dead_letter_topic,
        }
    }

    /// Whether there are no plugins.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Every plugin's counters, for the metrics endpoint.
    pub fn stats(&self) -> Vec<Arc<PluginStats>> {
        self.stages
            .iter()
            .map(|s| s.plugin.stats().clone())
            .collect()
    }

    /// Runs `events` through every plugin. `topic_for` names the Kafka topic routing picks for
    /// an MQTT topic (the `default-topic` plugins see); `now_ms` is the wall clock.
    pub fn apply(
        &mut self,
        events: &[Event],
        topic_for: &dyn Fn(&str) -> Option<String>,
        now_ms: i64,
    ) -> Applied {
        let now = Instant::now();
        for stage in &self.stages {
            if stage.when_open == OnFailure::Backpressure && !stage.circuit.allows(now) {
                return Applied::Held {
                    plugin: stage.name().to_owned(),
                    until: stage.circuit.retry_at().unwrap_or(now),
                };
            }
        }
        let items = events
            .iter()
            .map(|e| Item {
                event: e.clone(),
                dead: false,
            })
            .collect();
        self.run_from(0, items, topic_for, now_ms)
    }

    /// When the next plugin `tick` is due, if any plugin ticks.
    pub fn next_tick(&self) -> Option<Instant> {
        self.stages.iter().filter_map(|s| s.tick.map(|t| t.1)).min()
    }

    /// Calls `tick` on every plugin whose interval has passed and runs what they emit through
    /// the plugins after them. Emissions without a topic are routed like an event with an empty
    /// MQTT topic (a `#` rule or the default topic).
    pub fn tick(&mut self, topic_for: &dyn Fn(&str) -> Option<String>, now_ms: i64) -> Vec<Event> {
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 0..self.stages.len() {
            let stage = &mut self.stages[i];
            let Some((every, due)) = stage.tick else {
                continue;
            };
            if due > now {
                continue;
            }
            stage.tick = Some((every, kedge_base::deadline::later(now, every)));
            if !stage.circuit.allows(now) {
                continue;
            }
            let outputs = match stage.plugin.tick(now_ms) {
                Ok(outputs) => {
                    stage.circuit.success();
                    stage
                        .plugin
                        .stats()
                        .circuit_open
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    outputs
                }
                Err(fault) => {
                    tracing::warn!(plugin = %stage.name(), %fault, "plugin tick failed; its emissions are lost");
                    let stats = stage.plugin.stats().clone();
                    stats.fault(fault.kind());
                    open_on_failure(&mut stage.circuit, &stats, now);
                    continue;
                }
            };
            PluginStats::add(&stage.plugin.stats().outputs, outputs.len() as u64);
            let items = outputs
                .into_iter()
                .map(|o| Item {
                    event: from_output(
                        o,
                        &Event::new(String::new(), Bytes::new(), Vec::new(), now_ms),
                    ),
                    dead: false,
                })
                .collect();
            // A hold further down cannot take back a tick: its emissions skip held plugins'
            // hold and are dead-lettered instead, as with an open circuit.
            match self.run_from(i + 1, items, topic_for, now_ms) {
                Applied::Events(events) => out.extend(events),
                Applied::Held { .. } => {}
            }
        }
        out
    }

    fn run_from(
        &mut self,
        start: usize,
        mut items: Vec<Item>,
        topic_for: &dyn Fn(&str) -> Option<String>,
        now_ms: i64,
    ) -> Applied {
        let dlq = self.dead_letter_topic.clone();
        for stage in &mut self.stages[start..] {
            match run_stage(stage, items, &self.source, &dlq, topic_for, now_ms) {
                Ok(next) => items = next,
                Err(held) => return held,
            }
        }
        Applied::Events(
            items
                .into_iter()
                .map(|mut item| {
                    if !item.dead
                        && let Some(topic) = &item.event.topic
                        && let Err(why) = kedge_wire::record::check_topic_name(topic)
                    {
                        dead_letter(&mut item, &dlq, format!("a plugin routed to {why}"));
                    }
                    item.event
                })
                .collect(),
        )
    }
}

/// Runs one plugin over the items it wants; `Err` when it holds the pipeline.
fn run_stage(
    stage: &mut Stage,
    items: Vec<Item>,
    source: &str,
    dlq: &str,
    topic_for: &dyn Fn(&str) -> Option<String>,
    now_ms: i64,
) -> Result<Vec<Item>, Applied> {
    // By subject, then by the topic an earlier plugin chose (none: routing's), in first-seen
    // order: a call's `batch-info.topic` holds for all its events.
    let mut groups: IndexMap<(&str, Option<&str>), Vec<usize>> = IndexMap::new();
    for (i, item) in items.iter().enumerate() {
        if !item.dead && stage.wants(&item.event.subject) {
            groups
                .entry((item.event.subject.as_str(), item.event.topic.as_deref()))
                .or_default()
                .push(i);
        }
    }
    if groups.is_empty() {
        return Ok(items);
    }
    let stats = stage.plugin.stats().clone();
    let now = Instant::now();
    let mut outcomes: Vec<Option<Result<Verdict, Fault>>> = Vec::new();
    outcomes.resize_with(items.len(), || None);
    let mut faulted = false;
    for (&(subject, chosen), indices) in &groups {
        let default_topic = topic_for(subject);
        let topic = chosen.map(str::to_owned).or_else(|| default_topic.clone());
        for chunk in indices.chunks(MAX_CALL_EVENTS) {
            PluginStats::add(&stats.events, chunk.len() as u64);
            let results = if stage.circuit.allows(now) {
                let info = BatchInfo {
                    source: source.to_owned(),
                    subject: subject.to_owned(),
                    default_topic: default_topic.clone(),
                    topic: topic.clone(),
                    now_ms,
                };
                // Borrowed: the plugin's memory gets the events' bytes straight from the items.
                let events: Vec<&Event> = chunk.iter().map(|&i| &items[i].event).collect();
                let mut caller = StageCaller {
                    plugin: &mut stage.plugin,
                    circuit: &mut stage.circuit,
                    info: &info,
                    events: &events,
                    faulted: &mut faulted,
                };
                isolate(events.len(), &mut caller)
            } else {
                chunk.iter().map(|_| Err(Fault::CircuitOpen)).collect()
            };
            for (&i, result) in chunk.iter().zip(results) {
                outcomes[i] = Some(result);
            }
        }
    }
    if !faulted {
        stage.circuit.success();
        stats
            .circuit_open
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
    if stage.when_open == OnFailure::Backpressure && stage.circuit.is_open() {
        return Err(Applied::Held {
            plugin: stats.name.clone(),
            until: stage.circuit.retry_at().unwrap_or(now),
        });
    }
    let mut out = Vec::with_capacity(items.len());
    for (mut item, outcome) in items.into_iter().zip(outcomes) {
        match outcome {
            None => out.push(item),
            Some(Ok(Verdict::Keep)) => {
                PluginStats::add(&stats.kept, 1);
                out.push(item);
            }
            Some(Ok(Verdict::Drop)) => PluginStats::add(&stats.dropped, 1),
            Some(Ok(Verdict::Route(topic))) => {
                PluginStats::add(&stats.routed, 1);
                item.event.topic = Some(topic);
                out.push(item);
            }
            Some(Ok(Verdict::Replace(outputs))) => {
                PluginStats::add(&stats.replaced, 1);
                PluginStats::add(&stats.outputs, outputs.len() as u64);
                out.extend(outputs.into_iter().map(|o| Item {
                    event: from_output(o, &item.event),
                    dead: false,
                }));
            }
            Some(Ok(Verdict::Fail(why))) => {
                PluginStats::add(&stats.failed, 1);
                dead_letter(&mut item, dlq, format!("plugin {}: {why}", stats.name));
                out.push(item);
            }
            Some(Err(fault)) => {
                stats.fault(fault.kind());
                dead_letter(&mut item, dlq, format!("plugin {}: {fault}", stats.name));
                out.push(item);
            }
        }
    }
    Ok(out)
}

/// The bisection's view of one stage and one call's events.
struct StageCaller<'a> {
    plugin: &'a mut Plugin,
    circuit: &'a mut Circuit,
    info: &'a BatchInfo,
    events: &'a [&'a Event],
    faulted: &'a mut bool,
}

impl Caller<Verdict> for StageCaller<'_> {
    fn call(&mut self, range: std::ops::Range<usize>) -> Result<Vec<Verdict>, Fault> {
        self.plugin.process(self.info, &self.events[range])
    }

    fn failed(&mut self, fault: &Fault, events: usize) -> bool {
        *self.faulted = true;
        let stats = self.plugin.stats().clone();
        tracing::warn!(plugin = %stats.name, %fault, events, "plugin failed; events dead-lettered");
        !open_on_failure(self.circuit, &stats, Instant::now())
    }
}

/// Records a failure; returns whether the circuit is open now.
fn open_on_failure(circuit: &mut Circuit, stats: &PluginStats, now: Instant) -> bool {
    if circuit.failure(now) {
        PluginStats::add(&stats.circuit_opened, 1);
        stats
            .circuit_open
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(
            plugin = %stats.name,
            retry_at_in = ?circuit.retry_at().map(|t| t.saturating_duration_since(now)),
            "plugin keeps failing: circuit open"
        );
        return true;
    }
    false
}

fn dead_letter(item: &mut Item, dlq: &str, why: String) {
    item.dead = true;
    item.event.topic = Some(dlq.to_owned());
    item.event.headers.push(Header {
        name: HEADER_ERROR.to_owned(),
        value: Bytes::from(why),
    });
}

/// The event a plugin output becomes; what the output leaves unset comes from `input`.
pub fn from_output(o: Output, input: &Event) -> Event {
    Event {
        subject: input.subject.clone(),
        payload: Bytes::from(o.value),
        headers: o
            .headers
            .into_iter()
            .map(|h| Header {
                name: h.name,
                value: Bytes::from(h.value),
            })
            .collect(),
        timestamp_ms: o.timestamp_ms.unwrap_or(input.timestamp_ms),
        key: o.key.map(Bytes::from).or_else(|| input.key.clone()),
        topic: o.topic.or_else(|| input.topic.clone()),
    }
}
