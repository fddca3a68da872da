//! Median, minimum and maximum of a few runs; quantiles of an exposed histogram.

use std::collections::HashMap;

/// Median, min and max of `values` (NaN-free); `None` when empty.
pub fn summary(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, v[0], v[n - 1]))
}

/// `median [min – max]` with `digits` decimals, or `—`.
pub fn format(values: &[f64], digits: usize) -> String {
    match summary(values) {
        Some((m, lo, hi)) if values.len() > 1 => {
            format!("{m:.digits$} [{lo:.digits$}–{hi:.digits$}]")
        }
        Some((m, _, _)) => format!("{m:.digits$}"),
        None => "—".into(),
    }
}

/// The `q` quantile of histogram `family` in a scrape (series keyed `family_bucket{le="…"}`),
/// interpolated linearly within its bucket as Prometheus' `histogram_quantile` does; NaN when
/// the histogram is empty or the quantile lies beyond the last finite bound.
pub fn histogram_quantile(metrics: &HashMap<String, f64>, family: &str, q: f64) -> f64 {
    let prefix = format!("{family}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            Some((le.parse().unwrap_or(f64::INFINITY), *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return f64::NAN;
            }
            let inside = count - below;
            return lower + (le - lower) * (rank - below) / inside.max(f64::MIN_POSITIVE);
        }
        (lower, below) = (le, count);
    }
    f64::NAN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(summary(&[]), None);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let scrape: HashMap<String, f64> = [
            ("0.01", 50.0),
            ("0.02", 90.0),
            ("0.05", 100.0),
            ("+Inf", 100.0),
        ]
        .into_iter()
        .map(|(le, n)| (format!("lat_bucket{{le=\"{le}\"}}"), n))
        .collect();
        let q = |x| histogram_quantile(&scrape, "lat", x);
        assert!((q(0.5) - 0.01).abs() < 1e-12, "{}", q(0.5));
        assert!((q(0.7) - 0.015).abs() < 1e-12, "{}", q(0.7));
        assert!((q(0.95) - 0.035).abs() < 1e-12, "{}", q(0.95));
        assert!(histogram_quantile(&HashMap::new(), "lat", 0.5).is_nan());
    }
}
