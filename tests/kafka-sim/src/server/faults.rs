//! Fault switches the server applies per request, and the counters tests assert on.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::lock;

/// A Produce answered with a chosen error code instead of the model's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FailedProduce {
    /// The error code every partition of the request gets.
    pub(crate) code: i16,
    /// Whether the request is applied to the model first (an append whose acknowledgement is
    /// lost, as with REQUEST_TIMED_OUT after the write) or not at all.
    pub(crate) appended: bool,
}

#[derive(Debug, Default)]
struct Switches {
    lose_all: bool,
    lose_next: u64,
    throttled_fetches: u64,
    throttle_ms: i32,
    failed_produce: Option<FailedProduce>,
}

/// The switches, shared by all connections.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    switches: Mutex<Switches>,
    refuse: AtomicBool,
    describe_producers: AtomicBool,
}

impl Faults {
    pub(crate) fn lose_responses(&self, on: bool) {
        lock(&self.switches).lose_all = on;
    }

    pub(crate) fn lose_next_responses(&self, n: u64) {
        lock(&self.switches).lose_next = n;
    }

    pub(crate) fn throttle_fetches(&self, n: u64, throttle_ms: i32) {
        let mut s = lock(&self.switches);
        s.throttled_fetches = n;
        s.throttle_ms = throttle_ms;
    }

    pub(crate) fn fail_next_produce(&self, failure: FailedProduce) {
        lock(&self.switches).failed_produce = Some(failure);
    }

    pub(crate) fn refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::Relaxed);
    }

    pub(crate) fn refusing(&self) -> bool {
        self.refuse.load(Ordering::Relaxed)
    }

    pub(crate) fn advertise_describe_producers(&self, on: bool) {
        self.describe_producers.store(on, Ordering::Relaxed);
    }

    pub(crate) fn describe_producers_advertised(&self) -> bool {
        self.describe_producers.load(Ordering::Relaxed)
    }

    /// Whether the response about to be written is to be swallowed (consumes one of
    /// `lose_next_responses`).
    pub(crate) fn take_lost_response(&self) -> bool {
        let mut s = lock(&self.switches);
        if s.lose_all {
            return true;
        }
        if s.lose_next > 0 {
            s.lose_next -= 1;
            return true;
        }
        false
    }

    /// The throttle time for this Fetch, if it is one of the throttled ones.
    pub(crate) fn take_fetch_throttle(&self) -> Option<i32> {
        let mut s = lock(&self.switches);
        if s.throttled_fetches == 0 {
            return None;
        }
        s.throttled_fetches -= 1;
        Some(s.throttle_ms)
    }

    /// The failure to answer this Produce with, if one is armed.
    pub(crate) fn take_failed_produce(&self) -> Option<FailedProduce> {
        lock(&self.switches).failed_produce.take()
    }
}

/// What the server saw and answered.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: Mutex<BTreeMap<i16, u64>>,
    produce_answers: Mutex<BTreeMap<i16, u64>>,
    connections: AtomicU64,
}

impl Counters {
    pub(crate) fn request(&self, api_key: i16) {
        *lock(&self.requests).entry(api_key).or_default() += 1;
    }

    pub(crate) fn produce_answer(&self, code: i16) {
        *lock(&self.produce_answers).entry(code).or_default() += 1;
    }

    pub(crate) fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn requests(&self, api_key: i16) -> u64 {
        lock(&self.requests).get(&api_key).copied().unwrap_or(0)
    }

    pub(crate) fn produce_answers(&self, code: i16) -> u64 {
        lock(&self.produce_answers).get(&code).copied().unwrap_or(0)
    }

    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}
