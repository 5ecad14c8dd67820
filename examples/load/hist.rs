//! A fixed-size log-linear histogram of nanosecond latencies (HdrHistogram's idea, 7.4k buckets).
//!
//! Exact below 256 ns; above, each power of two is split into 128 buckets, so a reported
//! percentile is within 1/128 (0.8 %) of the true value. Recording is a few instructions and
//! never allocates.

/// Values below `1 << PRECISION` get a bucket each.
const PRECISION: u32 = 8;
const SUB: u64 = 1 << (PRECISION - 1);
const BUCKETS: usize = (1 << PRECISION) + (64 - PRECISION as usize) * SUB as usize;

pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    min: u64,
    max: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, value: u64) {
        self.counts[index(value)] += 1;
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0.5 = median): the highest value of the bucket holding the
    /// sample of rank ⌈q·count⌉, capped to the range seen. `None` if nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(highest(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

/// The bucket of `v`.
fn index(v: u64) -> usize {
    if v < 1 << PRECISION {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= PRECISION
    let shift = exp + 1 - PRECISION;
    let mantissa = v >> shift; // in [SUB, 2 * SUB)
    ((1u64 << PRECISION) + u64::from(exp - PRECISION) * SUB + (mantissa - SUB)) as usize
}

/// The highest value that falls in bucket `i`.
fn highest(i: usize) -> u64 {
    let i = i as u64;
    if i < 1 << PRECISION {
        return i;
    }
    let j = i - (1 << PRECISION);
    let exp = PRECISION as u64 + j / SUB;
    let mantissa = SUB + j % SUB;
    let shift = exp + 1 - PRECISION as u64;
    // The top bucket's end is u64::MAX; saturate rather than overflow.
    ((mantissa + 1) << shift)
        .wrapping_sub(1)
        .max(mantissa << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nearest-rank percentile of sorted `v`: the sample of rank ⌈q·n⌉.
    fn exact(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    #[test]
    fn bucket_bounds_cover_every_value_in_order() {
        for v in (0..5000).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS);
            assert!(highest(i) >= v, "{v} above its bucket {i}");
            if i > 0 {
                assert!(highest(i - 1) < v, "{v} inside the previous bucket");
            }
        }
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=200 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), Some(100));
        assert_eq!(h.quantile(0.99), Some(198));
        assert_eq!(h.quantile(1.0), Some(200));
        assert_eq!(h.quantile(0.0), Some(1));
    }

    #[test]
    fn percentiles_stay_within_the_stated_precision() {
        // A skewed pseudo-random spread from 1 µs to ~100 ms.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut values = Vec::new();
        let mut h = Histogram::new();
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = 1000 + (x % 1_000_000) * (x % 100);
            values.push(v);
            h.record(v);
        }
        values.sort_unstable();
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            let want = exact(&values, q) as f64;
            let got = h.quantile(q).unwrap() as f64;
            assert!(
                (got - want).abs() <= want / 128.0,
                "q {q}: got {got}, want {want}"
            );
        }
        assert_eq!(h.count(), 100_000);
        assert_eq!(h.quantile(1.0), Some(*values.last().unwrap()));
    }

    #[test]
    fn empty_histogram_has_no_percentile() {
        assert_eq!(Histogram::new().quantile(0.5), None);
    }
}
