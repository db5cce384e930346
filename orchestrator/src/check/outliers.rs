//! Marking the pairs whose figures stand out from the others'.
//!
//! For each message size, over the pairs that passed: a pair is an outlier when its latency
//! is more than [`FACTOR`] times the median latency, or its bandwidth less than the median
//! bandwidth divided by [`FACTOR`]. With fewer than [`MIN_PAIRS`] passed pairs of a size the
//! median says little, and nothing is marked. An outlier still passed: it is reported, not
//! counted as a failure.

/// How far from the median a figure must be to stand out.
pub(crate) const FACTOR: f64 = 3.0;

/// The fewest passed pairs of a size that make a median worth comparing with.
pub(crate) const MIN_PAIRS: usize = 3;

/// One pair's figures for one size, as the marking sees them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Bytes per message.
    pub(crate) size: u64,
    /// Microseconds.
    pub(crate) latency_us: f64,
    /// Megabytes per second.
    pub(crate) bandwidth_mb_s: f64,
}

/// For each sample, why it is an outlier (`None` when it is not), in words.
pub(crate) fn mark(samples: &[Sample]) -> Vec<Option<String>> {
    let mut sizes: Vec<u64> = samples.iter().map(|s| s.size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut marks = vec![None; samples.len()];
    for size in sizes {
        let of_size: Vec<usize> = (0..samples.len())
            .filter(|&i| samples[i].size == size)
            .collect();
        if of_size.len() < MIN_PAIRS {
            continue;
        }
        let latency = median(of_size.iter().map(|&i| samples[i].latency_us).collect());
        let bandwidth = median(of_size.iter().map(|&i| samples[i].bandwidth_mb_s).collect());
        for &i in &of_size {
            let sample = samples[i];
            let mut why = Vec::new();
            if latency > 0.0 && sample.latency_us > FACTOR * latency {
                why.push(format!(
                    "latency {:.1}x the median {latency:.1} µs",
                    sample.latency_us / latency
                ));
            }
            if sample.bandwidth_mb_s * FACTOR < bandwidth {
                why.push(format!(
                    "bandwidth {:.2}x the median {bandwidth:.1} MB/s",
                    sample.bandwidth_mb_s / bandwidth
                ));
            }
            if !why.is_empty() {
                marks[i] = Some(why.join("; "));
            }
        }
    }
    marks
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(size: u64, latency_us: f64, bandwidth_mb_s: f64) -> Sample {
        Sample {
            size,
            latency_us,
            bandwidth_mb_s,
        }
    }

    #[test]
    fn a_slow_pair_among_even_ones_is_marked_with_its_ratio() {
        let samples = [
            sample(64, 10.0, 12.0),
            sample(64, 11.0, 11.0),
            sample(64, 45.0, 2.8),
            sample(64, 9.0, 13.0),
            sample(1 << 20, 300.0, 7000.0),
            sample(1 << 20, 310.0, 6900.0),
            sample(1 << 20, 320.0, 2000.0),
        ];
        let marks = mark(&samples);
        assert_eq!(marks[0], None);
        assert_eq!(marks[1], None);
        let slow = marks[2].as_deref().expect("marked");
        // Median latency of 64 B: (10 + 11) / 2 = 10.5; 45 / 10.5 = 4.3.
        assert!(slow.contains("latency 4.3x the median 10.5 µs"), "{slow}");
        assert!(
            slow.contains("bandwidth 0.24x the median 11.5 MB/s"),
            "{slow}"
        );
        assert_eq!(marks[3], None);
        assert_eq!(marks[4], None);
        // 2000 < 6900 / 3: bandwidth alone marks it; its latency is ordinary.
        let thin = marks[6].as_deref().expect("marked");
        assert!(thin.starts_with("bandwidth 0.29x"), "{thin}");
    }

    #[test]
    fn exactly_three_times_the_median_is_not_an_outlier() {
        let marks = mark(&[
            sample(64, 10.0, 9.0),
            sample(64, 10.0, 9.0),
            sample(64, 30.0, 3.0),
        ]);
        assert_eq!(marks, [None, None, None]);
    }

    #[test]
    fn too_few_pairs_of_a_size_mark_nothing() {
        let marks = mark(&[sample(64, 10.0, 10.0), sample(64, 1000.0, 0.1)]);
        assert_eq!(marks, [None, None]);
        assert!(mark(&[]).is_empty());
    }
}
