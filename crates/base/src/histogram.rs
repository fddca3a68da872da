//! Fixed-bucket latency histograms, lock-free on the hot path: each stage owns its own and the
//! exposition renders them.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket upper bounds of one histogram family, in seconds.
pub trait Bounds {
    /// At most [`MAX_BUCKETS`] bounds, ascending.
    const BOUNDS: &'static [f64];
}

/// Most buckets a histogram family may have.
pub const MAX_BUCKETS: usize = 16;

/// A latency histogram over `B`'s bounds, lock-free for the hot path.
#[derive(Debug)]
pub struct Histogram<B> {
    /// Observations per bucket (not cumulative); beyond the last bound only in `count`.
    buckets: [AtomicU64; MAX_BUCKETS],
    count: AtomicU64,
    sum_micros: AtomicU64,
    bounds: PhantomData<fn() -> B>,
}

impl<B> Default for Histogram<B> {
    fn default() -> Self {
        Histogram {
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            bounds: PhantomData,
        }
    }
}

/// A histogram read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative count per bucket upper bound.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl<B: Bounds> Histogram<B> {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        self.observe_n(d, 1);
    }

    /// Records `n` observations of the same value.
    pub fn observe_n(&self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let secs = d.as_secs_f64();
        if let Some(i) = B::BOUNDS.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(n, Ordering::Relaxed);
        }
        self.count.fetch_add(n, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros
            .fetch_add(micros.saturating_mul(n), Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound, the total count and the sum in seconds.
    pub fn read(&self) -> HistogramSnapshot {
        let mut total = 0;
        let buckets = B::BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(&le, b)| {
                total += b.load(Ordering::Relaxed);
                (le, total)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}
