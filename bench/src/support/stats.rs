//! Median, minimum and maximum of a few runs.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(summary(&[]), None);
    }
}
