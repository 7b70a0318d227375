//! Statistics of a categorical (or binary) column over the union of categories seen on either side: Pearson's
//! chi-squared test of homogeneity (no continuity correction), L-infinity, the pooled Z-test for two proportions,
//! and Evidently's goodness-of-fit chi-square (kept for its drift verdict only). Distributions come from `statrs`.

use serde::Serialize;
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

/// Pearson's chi-squared test on the 2×K table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Chi2 {
    /// X².
    pub statistic: f64,
    /// P(χ²_dof ≥ X²).
    pub pvalue: f64,
    /// K − 1.
    pub dof: u64,
}

/// `scipy.stats.chi2_contingency([reference, current], correction=False)`. `None` when a side has no values.
pub fn chi2_homogeneity(reference: &[u64], current: &[u64]) -> Option<Chi2> {
    let (nr, nc) = (reference.iter().sum::<u64>() as f64, current.iter().sum::<u64>() as f64);
    if nr == 0.0 || nc == 0.0 {
        return None;
    }
    let k = reference.len();
    if k <= 1 {
        return Some(Chi2 { statistic: 0.0, pvalue: 1.0, dof: 0 });
    }
    let total = nr + nc;
    let mut statistic = 0.0;
    for (&r, &c) in reference.iter().zip(current) {
        let column = (r + c) as f64;
        for (observed, row) in [(r as f64, nr), (c as f64, nc)] {
            let expected = row * column / total;
            statistic += (observed - expected) * (observed - expected) / expected;
        }
    }
    let dof = (k - 1) as u64;
    Some(Chi2 { statistic, pvalue: chi2_sf(statistic, dof as f64), dof })
}

/// P(χ²_dof ≥ x).
pub fn chi2_sf(x: f64, dof: f64) -> f64 {
    if x.is_infinite() {
        return 0.0;
    }
    match ChiSquared::new(dof) {
        Ok(distribution) => distribution.sf(x),
        Err(_) => f64::NAN,
    }
}

/// The largest difference of proportions, max_i |r_i − c_i|.
pub fn l_infinity(reference: &[u64], current: &[u64]) -> Option<f64> {
    let (nr, nc) = (reference.iter().sum::<u64>() as f64, current.iter().sum::<u64>() as f64);
    if nr == 0.0 || nc == 0.0 {
        return None;
    }
    Some(reference.iter().zip(current).map(|(&r, &c)| (r as f64 / nr - c as f64 / nc).abs()).fold(0.0, f64::max))
}

/// The pooled Z-test for two proportions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ZTest {
    /// z = (p_ref − p_cur) / sqrt(P(1−P)(1/n_ref + 1/n_cur)).
    pub statistic: f64,
    /// 2·Φ(−|z|).
    pub pvalue: f64,
    /// The share of positives in the reference.
    pub p_reference: f64,
    /// The share of positives in the current data.
    pub p_current: f64,
}

/// The test for `positives` out of `n` on each side. `None` when a side has no values.
pub fn z_test(positives: (u64, u64), n: (u64, u64)) -> Option<ZTest> {
    if n.0 == 0 || n.1 == 0 {
        return None;
    }
    let (n1, n2) = (n.0 as f64, n.1 as f64);
    let (p1, p2) = (positives.0 as f64 / n1, positives.1 as f64 / n2);
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let (statistic, pvalue) = if pooled == 0.0 || pooled == 1.0 {
        (0.0, 1.0)
    } else {
        let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
        (z, 2.0 * standard_normal().cdf(-z.abs()))
    };
    Some(ZTest { statistic, pvalue, p_reference: p1, p_current: p2 })
}

fn standard_normal() -> Normal {
    // Mean 0 and std 1 are valid parameters.
    Normal::standard()
}

/// Evidently's chi-square: a goodness-of-fit test of the current counts against the reference proportions
/// (expected = ref_count·n_cur/n_ref); a category unseen in the reference makes it infinite, p = 0.
pub fn evidently_chisquare_pvalue(reference: &[u64], current: &[u64]) -> Option<f64> {
    let (nr, nc) = (reference.iter().sum::<u64>() as f64, current.iter().sum::<u64>() as f64);
    if nr == 0.0 || nc == 0.0 {
        return None;
    }
    let mut statistic = 0.0;
    for (&r, &c) in reference.iter().zip(current) {
        let expected = r as f64 * nc / nr;
        let observed = c as f64;
        statistic += if expected == 0.0 {
            if observed == 0.0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (observed - expected) * (observed - expected) / expected
        };
    }
    let dof = reference.len().saturating_sub(1) as f64;
    Some(if dof == 0.0 { 1.0 } else { chi2_sf(statistic, dof) })
}

/// Evidently's Z-test p-value on two categories (the first sorted category coded 0, the rest 1), computed as
/// `2·(1 − Φ(|z|))`, so it underflows to 0 past |z| ≈ 8.3 exactly as Evidently's does.
pub fn evidently_z_pvalue(positives: (u64, u64), n: (u64, u64)) -> Option<f64> {
    let test = z_test(positives, n)?;
    if test.pvalue == 1.0 && test.statistic == 0.0 {
        return Some(1.0);
    }
    Some(2.0 * (1.0 - standard_normal().cdf(test.statistic.abs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_by_two_table_gives_z_squared() {
        // For a 2×2 table without Yates' correction, X² equals z² of the pooled test.
        let chi = chi2_homogeneity(&[30, 70], &[45, 55]).unwrap();
        let z = z_test((30, 45), (100, 100)).unwrap();
        assert!((chi.statistic - z.statistic * z.statistic).abs() < 1e-12);
        // scipy: chi2_contingency([[30, 70], [45, 55]], correction=False) → 4.8, p 0.028459736916310638.
        assert!((chi.statistic - 4.8).abs() < 1e-12, "{}", chi.statistic);
        assert!((chi.pvalue - 0.028_459_736_916_310_638).abs() < 1e-12, "{}", chi.pvalue);
        assert!((chi.pvalue - z.pvalue).abs() < 1e-9, "{} vs {}", chi.pvalue, z.pvalue);
        assert_eq!(chi.dof, 1);
    }

    #[test]
    fn one_category_is_no_evidence_and_a_new_category_is_infinite_for_evidently() {
        assert_eq!(chi2_homogeneity(&[5], &[7]), Some(Chi2 { statistic: 0.0, pvalue: 1.0, dof: 0 }));
        assert_eq!(evidently_chisquare_pvalue(&[10, 10, 0], &[10, 10, 1]), Some(0.0));
        assert_eq!(l_infinity(&[1, 1], &[2, 0]), Some(0.5));
        assert_eq!(z_test((0, 0), (10, 10)).unwrap().pvalue, 1.0);
    }
}
