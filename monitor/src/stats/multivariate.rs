//! Multivariate drift: the PCA data-reconstruction error of a window against the reference (NannyML 0.13.1's
//! `DataReconstructionDriftCalculator`). One number that moves when the joint distribution of the features moves,
//! even when no single feature does (a correlation that breaks).
//!
//! Fitted on the reference: a missing number is imputed with its column's reference mean and a missing category
//! with its most frequent reference value (the smallest such value on a tie); a category becomes its share of the
//! reference rows (an unseen one becomes 0); a binary column is the number 0 or 1; every column is standardised with
//! the reference mean and population standard deviation (1 when it is 0); PCA keeps the fewest components whose
//! cumulative explained-variance ratio exceeds 0.65. A row's error is the Euclidean distance between its scaled
//! values and their projection onto the kept components; a window's value is the mean over its rows.
//!
//! The threshold comes from the reference's own spread, sized to the window: a window of `n` rows drawn like the
//! reference has a mean error of the reference mean ± σ/√n (σ the rows' standard deviation), so the bounds are the
//! reference mean ± 3σ/√n. A window of 100 rows gets bounds ten times wider than one of 10,000.

use std::collections::HashMap;

use nalgebra::{DMatrix, SymmetricEigen};
use serde::Serialize;

use super::numeric::mean_std;
use crate::drift::Values;

/// Components are kept until their cumulative explained-variance ratio exceeds this (NannyML's default).
pub const EXPLAINED_VARIANCE: f64 = 0.65;
/// The bounds are the reference mean ± this many standard errors of a window's mean.
pub const THRESHOLD_SIGMAS: f64 = 3.0;

#[derive(Debug, Clone, PartialEq)]
enum Encoder {
    Number { fill: f64 },
    Category { fill: String, shares: HashMap<String, f64> },
}

/// The fitted reconstruction: encoders, scaling, and the kept components.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconstruction {
    /// The features, in the order their values are given.
    pub features: Vec<String>,
    encoders: Vec<Encoder>,
    mean: Vec<f64>,
    scale: Vec<f64>,
    /// The mean of the scaled reference (PCA centres on it).
    center: Vec<f64>,
    /// d × k: the kept components as columns.
    components: DMatrix<f64>,
    /// Components kept.
    pub n_components: usize,
    /// The explained-variance ratio they hold.
    pub explained_variance: f64,
    /// The reference rows' errors: mean and population standard deviation.
    pub reference_mean: f64,
    /// See `reference_mean`.
    pub reference_std: f64,
}

/// Why a reconstruction could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("multivariate drift: {0}")]
pub struct FitError(pub String);

/// A window's multivariate drift.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bounds {
    /// Reference mean − 3σ/√n.
    pub lower: f64,
    /// Reference mean + 3σ/√n.
    pub upper: f64,
}

impl Reconstruction {
    /// Fits on the reference's typed columns (`Values::Categorical` holding "0"/"1" for a binary column is told by
    /// `binary`).
    pub fn fit(columns: &[(String, &Values, bool)]) -> Result<Self, FitError> {
        let Some(first) = columns.first() else {
            return Err(FitError("no features".to_owned()));
        };
        let rows = first.1.len();
        if rows < 2 {
            return Err(FitError(format!("the reference has {rows} rows; at least 2 are needed")));
        }
        let encoders: Vec<Encoder> = columns.iter().map(|(_, values, binary)| encoder(values, *binary)).collect();
        let d = columns.len();
        let mut encoded: Vec<Vec<f64>> = Vec::with_capacity(d);
        let (mut mean, mut scale) = (Vec::with_capacity(d), Vec::with_capacity(d));
        for ((_, values, _), enc) in columns.iter().zip(&encoders) {
            let column = encode(enc, values);
            let (m, s) = mean_std(&column);
            mean.push(m);
            scale.push(if s > 0.0 && s.is_finite() { s } else { 1.0 });
            encoded.push(column);
        }
        let scaled = DMatrix::from_fn(rows, d, |r, c| (encoded[c][r] - mean[c]) / scale[c]);
        drop(encoded);
        // PCA centres the scaled data on its own mean, which rounding leaves a hair off 0 (scikit-learn does the
        // same, and the last digits of the cases depend on it).
        let center: Vec<f64> = (0..d).map(|c| scaled.column(c).mean()).collect();
        let mut centred = scaled;
        for (c, m) in center.iter().enumerate() {
            centred.column_mut(c).add_scalar_mut(-m);
        }
        let covariance = centred.tr_mul(&centred) / (rows as f64 - 1.0);
        drop(centred);
        let eigen = SymmetricEigen::new(covariance);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
        let total: f64 = eigen.eigenvalues.iter().map(|v| v.max(0.0)).sum();
        let (mut kept, mut cumulative) = (0, 0.0);
        for &i in &order {
            kept += 1;
            cumulative += if total > 0.0 { eigen.eigenvalues[i].max(0.0) / total } else { 1.0 };
            if cumulative > EXPLAINED_VARIANCE {
                break;
            }
        }
        let components = DMatrix::from_fn(d, kept, |r, k| eigen.eigenvectors[(r, order[k])]);
        let mut fitted = Self {
            features: columns.iter().map(|(name, _, _)| name.clone()).collect(),
            encoders,
            mean,
            scale,
            center,
            components,
            n_components: kept,
            explained_variance: cumulative.min(1.0),
            reference_mean: 0.0,
            reference_std: 0.0,
        };
        let values: Vec<&Values> = columns.iter().map(|(_, v, _)| *v).collect();
        let errors = fitted.row_errors(&values)?;
        (fitted.reference_mean, fitted.reference_std) = mean_std(&errors);
        Ok(fitted)
    }

    /// Each row's reconstruction error; `columns` are the features' values in `features` order, of equal length.
    pub fn row_errors(&self, columns: &[&Values]) -> Result<Vec<f64>, FitError> {
        if columns.len() != self.features.len() {
            return Err(FitError(format!("{} columns given, {} fitted", columns.len(), self.features.len())));
        }
        let rows = columns.first().map_or(0, |c| c.len());
        if columns.iter().any(|c| c.len() != rows) {
            return Err(FitError("the columns differ in length".to_owned()));
        }
        let encoded: Vec<Vec<f64>> = columns.iter().zip(&self.encoders).map(|(v, e)| encode(e, v)).collect();
        let (d, k) = (self.features.len(), self.n_components);
        let mut centred = vec![0.0; d];
        let mut projected = vec![0.0; k];
        Ok((0..rows)
            .map(|r| {
                for c in 0..d {
                    centred[c] = (encoded[c][r] - self.mean[c]) / self.scale[c] - self.center[c];
                }
                for (j, p) in projected.iter_mut().enumerate() {
                    *p = self.components.column(j).iter().zip(&centred).map(|(a, b)| a * b).sum();
                }
                (0..d)
                    .map(|c| {
                        let back: f64 = (0..k).map(|j| self.components[(c, j)] * projected[j]).sum();
                        (centred[c] - back).powi(2)
                    })
                    .sum::<f64>()
                    .sqrt()
            })
            .collect())
    }

    /// The mean reconstruction error of a window; `None` when it has no rows.
    pub fn window_error(&self, columns: &[&Values]) -> Result<Option<f64>, FitError> {
        let errors = self.row_errors(columns)?;
        Ok((!errors.is_empty()).then(|| mean_std(&errors).0))
    }

    /// How many standard errors of a window of `rows` rows `error` is from the reference's: beyond
    /// [`THRESHOLD_SIGMAS`] either way, the window is outside [`Self::bounds`]. 0 when the reference's rows all
    /// reconstruct equally well.
    pub fn z(&self, error: f64, rows: usize) -> f64 {
        let standard_error = self.reference_std / (rows.max(1) as f64).sqrt();
        if standard_error > 0.0 {
            (error - self.reference_mean) / standard_error
        } else {
            0.0
        }
    }

    /// The bounds for a window of `rows` rows.
    pub fn bounds(&self, rows: usize) -> Bounds {
        let half = THRESHOLD_SIGMAS * self.reference_std / (rows.max(1) as f64).sqrt();
        Bounds { lower: self.reference_mean - half, upper: self.reference_mean + half }
    }
}

fn binary_number(cell: &str) -> f64 {
    if cell == "1" {
        1.0
    } else {
        0.0
    }
}

fn encoder(values: &Values, binary: bool) -> Encoder {
    match values {
        Values::Numeric(v) => {
            let present: Vec<f64> = v.iter().flatten().copied().collect();
            Encoder::Number { fill: if present.is_empty() { 0.0 } else { mean_std(&present).0 } }
        }
        Values::Categorical(v) if binary => {
            let present: Vec<f64> = v.iter().flatten().map(binary_number).collect();
            Encoder::Number { fill: if present.is_empty() { 0.0 } else { mean_std(&present).0 } }
        }
        Values::Categorical(v) => {
            let mut counts: HashMap<&str, u64> = v.counts().collect();
            let fill = counts
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map_or_else(String::new, |(c, _)| (*c).to_owned());
            // Shares are counted after imputation: the missing rows count as the most frequent value.
            let missing = v.missing() as u64;
            *counts.entry(fill.as_str()).or_default() += missing;
            let n = v.len().max(1) as f64;
            let shares = counts.into_iter().map(|(c, k)| (c.to_owned(), k as f64 / n)).collect();
            Encoder::Category { fill, shares }
        }
    }
}

fn encode(encoder: &Encoder, values: &Values) -> Vec<f64> {
    match (encoder, values) {
        (Encoder::Number { fill }, Values::Numeric(v)) => v.iter().map(|x| x.unwrap_or(*fill)).collect(),
        (Encoder::Number { fill }, Values::Categorical(v)) => {
            v.iter().map(|x| x.map_or(*fill, binary_number)).collect()
        }
        (Encoder::Category { fill, shares }, Values::Categorical(v)) => {
            v.iter().map(|x| shares.get(x.unwrap_or(fill.as_str())).copied().unwrap_or(0.0)).collect()
        }
        // A number where a category was fitted: its text is the category.
        (Encoder::Category { fill, shares }, Values::Numeric(v)) => v
            .iter()
            .map(|x| match x {
                Some(x) => shares.get(&x.to_string()).copied().unwrap_or(0.0),
                None => shares.get(fill).copied().unwrap_or(0.0),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_correlation_raises_the_error_that_no_single_column_shows() {
        // Reference: y follows x. Current: the same marginals, y independent of x.
        let xs: Vec<f64> = (0..400).map(|i| ((i * 37) % 400) as f64 / 400.0 - 0.5).collect();
        let reference = [
            ("x".to_owned(), Values::Numeric(xs.iter().map(|&x| Some(x)).collect())),
            ("y".to_owned(), Values::Numeric(xs.iter().map(|&x| Some(x)).collect())),
        ];
        let fit =
            Reconstruction::fit(&reference.iter().map(|(n, v)| (n.clone(), v, false)).collect::<Vec<_>>()).unwrap();
        assert_eq!(fit.n_components, 1);
        assert!(fit.reference_mean < 1e-9, "{}", fit.reference_mean);
        let shuffled = Values::Numeric(xs.iter().rev().map(|&x| Some(x)).collect());
        let current = fit.window_error(&[&reference[0].1, &shuffled]).unwrap().unwrap();
        assert!(current > fit.bounds(400).upper + 0.5, "{current}");
    }
}
