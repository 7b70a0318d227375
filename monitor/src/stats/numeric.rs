//! Statistics of a numeric column: summary, PSI and Jensen-Shannon on reference-quantile bins, Wasserstein.
//! Conventions are those of `shared/drift-cases/README.md` (and of the live monitor, which keeps the reference's
//! bin edges and counts with the model version).

use serde::Serialize;

/// PSI's smoothing: a proportion that is exactly 0 counts as this (each side on its own; no renormalisation).
pub const PSI_EPSILON: f64 = 1e-4;
/// Bins of the reference-quantile binning (before duplicate edges are dropped).
pub const PSI_BINS: usize = 10;

/// Mean, population standard deviation, min and max.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// The mean.
    pub mean: f64,
    /// Population standard deviation (ddof = 0).
    pub std: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

/// The summary of a sorted, non-empty sample; `None` when empty.
pub fn summary(sorted: &[f64]) -> Option<Summary> {
    let (first, last) = (*sorted.first()?, *sorted.last()?);
    let (mean, std) = mean_std(sorted);
    Some(Summary { mean, std, min: first, max: last })
}

/// Mean and population std, in two passes (numpy's order of operations: sum, then squared deviations).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = pairwise_sum(values) / n;
    (mean, (pairwise_sum_of(values, |v| (v - mean) * (v - mean)) / n).sqrt())
}

/// numpy's pairwise summation (blocks of 8 unrolled, split in halves above 128), so means agree to the last bits.
pub fn pairwise_sum(values: &[f64]) -> f64 {
    pairwise_sum_of(values, |v| v)
}

/// The pairwise sum of `f` of each value, in the same order of operations as [`pairwise_sum`] of the mapped values
/// (without storing them).
fn pairwise_sum_of(values: &[f64], f: impl Fn(f64) -> f64 + Copy) -> f64 {
    let n = values.len();
    if n < 8 {
        return values.iter().fold(0.0, |acc, &v| acc + f(v));
    }
    if n <= 128 {
        let mut r = [0.0f64; 8];
        for (slot, &v) in r.iter_mut().zip(&values[..8]) {
            *slot = f(v);
        }
        let mut i = 8;
        while i + 8 <= n {
            for (k, slot) in r.iter_mut().enumerate() {
                *slot += f(values[i + k]);
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &values[i..] {
            res += f(v);
        }
        return res;
    }
    let half = (n / 2) / 8 * 8;
    pairwise_sum_of(&values[..half], f) + pairwise_sum_of(&values[half..], f)
}

/// The bins of a reference: cut points from its order statistics, right-closed bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Bins {
    /// Strictly increasing cut points u_1 < … < u_m; bins are (−∞,u_1], (u_1,u_2], …, (u_m,∞).
    pub edges: Vec<f64>,
}

impl Bins {
    /// Cut points e_k = x_(⌈k·n/10⌉−1) of the sorted reference, k = 1..9, duplicates removed. `None` when empty.
    pub fn from_sorted_reference(sorted: &[f64]) -> Option<Self> {
        let n = sorted.len();
        if n == 0 {
            return None;
        }
        let mut edges: Vec<f64> = (1..PSI_BINS).map(|k| sorted[(k * n).div_ceil(PSI_BINS) - 1]).collect();
        edges.dedup();
        Some(Self { edges })
    }

    /// The number of bins.
    pub fn len(&self) -> usize {
        self.edges.len() + 1
    }

    /// Never empty (there is always at least one bin).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The bin of `v`: #{u_i < v} (numpy `searchsorted(u, v, side='left')`).
    pub fn bin_of(&self, v: f64) -> usize {
        self.edges.partition_point(|&u| u < v)
    }

    /// Counts of a **sorted** sample per bin, in one pass.
    pub fn counts_sorted(&self, sorted: &[f64]) -> Vec<u64> {
        let mut counts = vec![0u64; self.len()];
        let mut start = 0;
        for (i, &edge) in self.edges.iter().enumerate() {
            let end = start + sorted[start..].partition_point(|&v| v <= edge);
            counts[i] = (end - start) as u64;
            start = end;
        }
        counts[self.edges.len()] = (sorted.len() - start) as u64;
        counts
    }
}

/// PSI of two count vectors over the same bins: Σ (c − r)·ln(c/r) with zero proportions smoothed to ε.
pub fn psi(reference: &[u64], current: &[u64]) -> Option<f64> {
    let (nr, nc) = (reference.iter().sum::<u64>() as f64, current.iter().sum::<u64>() as f64);
    if nr == 0.0 || nc == 0.0 {
        return None;
    }
    let smooth = |p: f64| if p == 0.0 { PSI_EPSILON } else { p };
    Some(
        reference
            .iter()
            .zip(current)
            .map(|(&r, &c)| {
                let (r, c) = (smooth(r as f64 / nr), smooth(c as f64 / nc));
                (c - r) * (c / r).ln()
            })
            .sum(),
    )
}

/// Jensen-Shannon **distance** in base 2 (in [0, 1]) of two count vectors, unsmoothed, 0·log 0 = 0
/// (`scipy.spatial.distance.jensenshannon(r, c, base=2)`).
pub fn js_distance(reference: &[u64], current: &[u64]) -> Option<f64> {
    let (nr, nc) = (reference.iter().sum::<u64>() as f64, current.iter().sum::<u64>() as f64);
    if nr == 0.0 || nc == 0.0 {
        return None;
    }
    // scipy normalises p and q, takes m = (p+q)/2, and sums rel_entr (p·ln(p/m)) in natural log, then /ln 2.
    let (mut left, mut right) = (0.0, 0.0);
    for (&r, &c) in reference.iter().zip(current) {
        let (p, q) = (r as f64 / nr, c as f64 / nc);
        let m = (p + q) / 2.0;
        if p > 0.0 {
            left += p * (p / m).ln();
        }
        if q > 0.0 {
            right += q * (q / m).ln();
        }
    }
    let divergence = (left + right) / 2.0 / std::f64::consts::LN_2;
    Some(divergence.max(0.0).sqrt())
}

/// Wasserstein-1 distance between two **sorted** samples (`scipy.stats.wasserstein_distance`, unweighted).
pub fn wasserstein(u: &[f64], v: &[f64]) -> Option<f64> {
    if u.is_empty() || v.is_empty() {
        return None;
    }
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut total = 0.0;
    // Walk the merged values: between consecutive points x_k < x_{k+1}, |F_u − F_v| is constant.
    let next = |i: usize, j: usize| match (u.get(i), v.get(j)) {
        (Some(&a), Some(&b)) => Some(a.min(b)),
        (Some(&a), None) => Some(a),
        (None, Some(&b)) => Some(b),
        (None, None) => None,
    };
    let mut x = next(i, j)?;
    loop {
        while i < u.len() && u[i] <= x {
            i += 1;
        }
        while j < v.len() && v[j] <= x {
            j += 1;
        }
        let Some(following) = next(i, j) else { break };
        total += (i as f64 / nu - j as f64 / nv).abs() * (following - x);
        x = following;
    }
    Some(total)
}

/// Evidently's floor on the reference std when norming Wasserstein.
pub const WASSERSTEIN_STD_FLOOR: f64 = 0.001;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_follow_the_inverted_cdf_rule_and_close_on_the_right() {
        let sorted: Vec<f64> = (1..=20).map(f64::from).collect();
        let bins = Bins::from_sorted_reference(&sorted).unwrap();
        // j_k = ceil(k·20/10) − 1 = 2k − 1 → values 2, 4, …, 18.
        assert_eq!(bins.edges, [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0]);
        assert_eq!(bins.bin_of(2.0), 0, "right-closed: an edge value falls in the bin it closes");
        assert_eq!(bins.bin_of(2.5), 1);
        assert_eq!(bins.bin_of(-100.0), 0);
        assert_eq!(bins.bin_of(100.0), 9);
        assert_eq!(bins.counts_sorted(&sorted), vec![2; 10]);
        let constant = Bins::from_sorted_reference(&[7.0; 5]).unwrap();
        assert_eq!((constant.edges.as_slice(), constant.len()), ([7.0].as_slice(), 2));
    }

    #[test]
    fn psi_and_js_of_identical_counts_are_zero_and_js_is_bounded() {
        assert_eq!(psi(&[3, 0, 5], &[6, 0, 10]), Some(0.0));
        assert_eq!(js_distance(&[3, 0, 5], &[6, 0, 10]), Some(0.0));
        let disjoint = js_distance(&[5, 0], &[0, 5]).unwrap();
        assert!((disjoint - 1.0).abs() < 1e-12, "{disjoint}");
        assert_eq!(psi(&[0, 0], &[1, 1]), None);
    }

    #[test]
    fn wasserstein_matches_hand_computed_values() {
        // scipy.stats.wasserstein_distance([0, 1, 3], [5, 6, 8]) = 5.0
        assert_eq!(wasserstein(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]), Some(5.0));
        assert_eq!(wasserstein(&[1.0, 2.0], &[1.0, 2.0]), Some(0.0));
        // scipy.stats.wasserstein_distance([0, 1], [0, 0, 2]) = 0.5
        let w = wasserstein(&[0.0, 1.0], &[0.0, 0.0, 2.0]).unwrap();
        assert!((w - 0.5).abs() < 1e-15, "{w}");
    }

    #[test]
    fn pairwise_sum_is_exact_on_integers_and_summaries_use_ddof_zero() {
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(pairwise_sum(&values), 500_500.0);
        let s = summary(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!((s.mean, s.min, s.max), (2.5, 1.0, 4.0));
        assert!((s.std - 1.25f64.sqrt()).abs() < 1e-15);
    }
}
