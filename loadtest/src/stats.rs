//! Latency percentiles.

use serde::Serialize;

/// Percentiles of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Sample size.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// Summarises a sample of milliseconds (nearest-rank percentiles).
    pub fn of(mut ms: Vec<f64>) -> Self {
        ms.retain(|v| v.is_finite());
        if ms.is_empty() {
            return Self::default();
        }
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = (q * ms.len() as f64).ceil() as usize;
            ms[rank.clamp(1, ms.len()) - 1]
        };
        Self {
            n: ms.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: ms[ms.len() - 1],
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }

    /// "p50 / p99" for tables.
    pub fn short(&self) -> String {
        if self.n == 0 {
            return "–".into();
        }
        format!("{} / {} ms", fmt_ms(self.p50_ms), fmt_ms(self.p99_ms))
    }
}

/// Milliseconds with sensible precision.
pub fn fmt_ms(v: f64) -> String {
    if v.abs() < 10.0 {
        format!("{v:.2}")
    } else if v.abs() < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latency::of((1..=100).map(f64::from).collect());
        assert_eq!(l.n, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(Latency::of(vec![]).n, 0);
    }
}
