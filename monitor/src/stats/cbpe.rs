//! Estimated quality without labels: confidence-based performance estimation (CBPE, as NannyML 0.13.1 computes it)
//! for a binary classifier. A [`Calibrator`] is fitted on the reference's scores and labels; each window's scores
//! then become calibrated probabilities `p` of the positive class, and the window's quality is the quality of the
//! confusion matrix those probabilities expect: `TP = Σ p` over predicted positives, `FP = Σ (1 − p)` over them,
//! `FN = Σ p` and `TN = Σ (1 − p)` over predicted negatives. The estimated ROC AUC ranks the window by its raw
//! score and counts each row as `p` of a positive and `1 − p` of a negative. The conventions and the cases they are
//! matched against: `monitor/tests/quality-cases/README.md` (a copy of `shared/quality-cases`).

use serde::Serialize;

/// How scores become probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Calibration {
    /// The score is the probability.
    None,
    /// An isotonic regression of the label on the score, fitted on the reference.
    Isotonic,
    /// Isotonic when it calibrates better on held-out reference rows, see [`Calibrator::fit`].
    Auto,
}

impl Calibration {
    /// The name the flag and the manifest use.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Isotonic => "isotonic",
            Self::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Calibration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "isotonic" => Ok(Self::Isotonic),
            "auto" => Ok(Self::Auto),
            other => Err(format!("unknown calibration {other:?} (isotonic, none or auto)")),
        }
    }
}

/// scikit-learn's `IsotonicRegression(increasing=True, out_of_bounds="clip")`: equal scores pooled by their mean
/// label (weighted by their count), pool-adjacent-violators, prediction by linear interpolation between the fitted
/// points, clipped to their range.
#[derive(Debug, Clone, PartialEq)]
pub struct Isotonic {
    x: Vec<f64>,
    y: Vec<f64>,
}

impl Isotonic {
    /// Fits on `(score, label)` pairs (finite scores); `None` when there are none.
    pub fn fit(pairs: &[(f64, bool)]) -> Option<Self> {
        let mut sorted: Vec<(f64, f64)> = pairs.iter().map(|&(s, l)| (s, f64::from(u8::from(l)))).collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Unique scores, each with its mean label and weight.
        let mut x: Vec<f64> = Vec::new();
        let mut blocks: Vec<(f64, f64)> = Vec::new(); // (weighted sum of y, weight)
        for (s, y) in sorted {
            match (x.last(), blocks.last_mut()) {
                (Some(&last), Some(block)) if last == s => {
                    block.0 += y;
                    block.1 += 1.0;
                }
                _ => {
                    x.push(s);
                    blocks.push((y, 1.0));
                }
            }
        }
        if x.is_empty() {
            return None;
        }
        // Pool adjacent violators: a stack of blocks (sum, weight, unique points covered).
        let mut stack: Vec<(f64, f64, usize)> = Vec::with_capacity(blocks.len());
        for (sum, weight) in blocks {
            let mut block = (sum, weight, 1usize);
            while let Some(&(s, w, n)) = stack.last() {
                if s / w < block.0 / block.1 {
                    break;
                }
                stack.pop();
                block = (block.0 + s, block.1 + w, block.2 + n);
            }
            stack.push(block);
        }
        let y = stack.iter().flat_map(|&(s, w, n)| std::iter::repeat_n(s / w, n)).collect();
        Some(Self { x, y })
    }

    /// The calibrated probability of `score`.
    pub fn predict(&self, score: f64) -> f64 {
        let (x, y) = (&self.x, &self.y);
        let last = x.len() - 1;
        if score <= x[0] {
            return y[0];
        }
        if score >= x[last] {
            return y[last];
        }
        // x[i - 1] < score < x[i] (or score == x[i - 1]).
        let i = x.partition_point(|&v| v <= score);
        let (x0, x1, y0, y1) = (x[i - 1], x[i], y[i - 1], y[i]);
        (y1 - y0) / (x1 - x0) * (score - x0) + y0
    }
}

/// The mapping from scores to probabilities fitted on a reference, and why it was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibrator {
    isotonic: Option<Isotonic>,
    /// What was asked for.
    pub requested: Calibration,
    /// The expected calibration errors behind an `auto` choice: (raw scores, cross-fitted isotonic).
    pub auto_errors: Option<(f64, f64)>,
}

/// Folds of the `auto` rule's cross-fitting.
pub const AUTO_FOLDS: usize = 10;
/// Equal-width probability bins of the expected calibration error.
pub const ECE_BINS: usize = 10;
/// How much lower the cross-fitted error must be for `auto` to calibrate: a well-calibrated model's isotonic fit
/// only adds noise, and a tie keeps the scores as they are.
pub const AUTO_MARGIN: f64 = 0.9;

impl Calibrator {
    /// Fits on the reference's `(score, label)` pairs. `auto` is deterministic: reference row `i` is held out in
    /// fold `i mod 10`; each fold's rows are calibrated by an isotonic fit on the other nine; the expected
    /// calibration error (10 equal-width bins of the probability, `Σ n_b/n · |mean label − mean probability|`) of
    /// these held-out probabilities is compared with that of the raw scores, and isotonic is chosen when its error
    /// is below 0.9 × the raw one. (NannyML makes the same comparison on random splits.)
    pub fn fit(pairs: &[(f64, bool)], requested: Calibration) -> Self {
        let mut auto_errors = None;
        let calibrate = match requested {
            Calibration::None => false,
            Calibration::Isotonic => true,
            Calibration::Auto => {
                let raw = expected_calibration_error(pairs.iter().map(|&(s, l)| (s, l)));
                let mut held_out = Vec::with_capacity(pairs.len());
                for fold in 0..AUTO_FOLDS.min(pairs.len()) {
                    let train: Vec<(f64, bool)> =
                        pairs.iter().enumerate().filter(|(i, _)| i % AUTO_FOLDS != fold).map(|(_, p)| *p).collect();
                    let Some(fit) = Isotonic::fit(&train) else { continue };
                    held_out.extend(
                        pairs
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| i % AUTO_FOLDS == fold)
                            .map(|(_, &(s, l))| (fit.predict(s), l)),
                    );
                }
                let calibrated = expected_calibration_error(held_out.into_iter());
                auto_errors = Some((raw, calibrated));
                calibrated < AUTO_MARGIN * raw
            }
        };
        Self { isotonic: if calibrate { Isotonic::fit(pairs) } else { None }, requested, auto_errors }
    }

    /// The calibration in use.
    pub fn chosen(&self) -> Calibration {
        if self.isotonic.is_some() {
            Calibration::Isotonic
        } else {
            Calibration::None
        }
    }

    /// The probability of the positive class for `score`; without calibration the score itself, held to [0, 1]
    /// (a score outside it is not a probability, and would make negative expected counts).
    pub fn probability(&self, score: f64) -> f64 {
        match &self.isotonic {
            Some(fit) => fit.predict(score),
            None => score.clamp(0.0, 1.0),
        }
    }
}

fn expected_calibration_error(pairs: impl Iterator<Item = (f64, bool)>) -> f64 {
    let mut bins = [(0.0f64, 0.0f64, 0u64); ECE_BINS];
    let mut n = 0u64;
    for (p, label) in pairs {
        let bin = ((p.clamp(0.0, 1.0) * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        bins[bin].0 += p;
        bins[bin].1 += f64::from(u8::from(label));
        bins[bin].2 += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    bins.iter().filter(|b| b.2 > 0).map(|&(p, l, _)| (l - p).abs() / n as f64).sum()
}

/// The expected confusion matrix of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ExpectedConfusion {
    /// Σ p over predicted positives.
    pub tp: f64,
    /// Σ (1 − p) over predicted positives.
    pub fp: f64,
    /// Σ (1 − p) over predicted negatives.
    pub tn: f64,
    /// Σ p over predicted negatives.
    #[serde(rename = "fn")]
    pub fn_: f64,
}

/// A window's estimated quality. A ratio whose denominator is 0 is `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstimatedQuality {
    /// The calibration used.
    pub calibration: Calibration,
    /// Rows estimated (with a score and a prediction).
    pub n_rows: u64,
    /// The expected confusion (binary; a multiclass estimate has one per class, averaged in the metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_confusion: Option<ExpectedConfusion>,
    /// Classes, for a multiclass estimate (one-vs-rest, macro averages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<usize>,
    /// Estimated ROC AUC; `None` when every row is surely one class.
    pub roc_auc: Option<f64>,
    /// TP / (TP + (FP + FN) / 2).
    pub f1: Option<f64>,
    /// TP / (TP + FP).
    pub precision: Option<f64>,
    /// TP / (TP + FN).
    pub recall: Option<f64>,
    /// TN / (TN + FP).
    pub specificity: Option<f64>,
    /// (TP + TN) / n.
    pub accuracy: Option<f64>,
}

impl EstimatedQuality {
    /// A metric by name: roc_auc, f1, precision, recall, specificity or accuracy.
    pub fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "roc_auc" => self.roc_auc,
            "f1" => self.f1,
            "precision" => self.precision,
            "recall" => self.recall,
            "specificity" => self.specificity,
            "accuracy" => self.accuracy,
            _ => None,
        }
    }
}

/// The metrics CBPE estimates.
pub const METRICS: [&str; 6] = ["roc_auc", "f1", "precision", "recall", "specificity", "accuracy"];

fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator != 0.0).then(|| numerator / denominator)
}

/// numpy's `round(x, 5)`: scale, round half to even, scale back.
fn round5(x: f64) -> f64 {
    (x * 1e5).round_ties_even() / 1e5
}

/// Estimates a window's quality from its `(score, predicted positive)` rows.
pub fn estimate(calibrator: &Calibrator, rows: &[(f64, bool)]) -> EstimatedQuality {
    let scored: Vec<(f64, f64, bool)> =
        rows.iter().map(|&(score, predicted)| (score, calibrator.probability(score), predicted)).collect();
    estimate_probabilities(calibrator.chosen(), scored)
}

/// Estimates a multiclass window's quality, one-vs-rest (NannyML's multiclass CBPE): `calibrators[k]` is class k's,
/// fitted on "the label is k" against class k's score; each row is `(scores by class, predicted class)`. Each row's
/// calibrated probabilities are divided by their sum (uniform when it is 0); ROC AUC, F1, precision, recall and
/// specificity are the mean over classes of the binary estimates (a class's ROC AUC ordering rows by its raw score),
/// and accuracy is the mean calibrated probability of the predicted class. `None` when a class's metric is.
pub fn estimate_multiclass(calibrators: &[Calibrator], rows: &[(Vec<f64>, usize)]) -> EstimatedQuality {
    let k = calibrators.len();
    let probabilities: Vec<Vec<f64>> = rows
        .iter()
        .map(|(scores, _)| {
            let p: Vec<f64> = calibrators.iter().zip(scores).map(|(c, &s)| c.probability(s)).collect();
            let sum: f64 = p.iter().sum();
            if sum != 0.0 {
                p.iter().map(|v| v / sum).collect()
            } else {
                vec![1.0 / k as f64; k]
            }
        })
        .collect();
    let per_class: Vec<EstimatedQuality> = (0..k)
        .map(|class| {
            let scored = rows
                .iter()
                .zip(&probabilities)
                .map(|((scores, predicted), p)| (scores[class], p[class], *predicted == class))
                .collect();
            estimate_probabilities(calibrators[class].chosen(), scored)
        })
        .collect();
    let mean = |pick: fn(&EstimatedQuality) -> Option<f64>| -> Option<f64> {
        let values: Option<Vec<f64>> = per_class.iter().map(pick).collect();
        values.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
    };
    let accuracy = (!rows.is_empty()).then(|| {
        let chosen: Vec<f64> = rows
            .iter()
            .zip(&probabilities)
            .map(|((_, predicted), p)| p.get(*predicted).copied().unwrap_or(0.0))
            .collect();
        chosen.iter().sum::<f64>() / chosen.len() as f64
    });
    let isotonic = calibrators.iter().any(|c| c.chosen() == Calibration::Isotonic);
    EstimatedQuality {
        calibration: if isotonic { Calibration::Isotonic } else { Calibration::None },
        n_rows: rows.len() as u64,
        expected_confusion: None,
        classes: Some(k),
        roc_auc: mean(|q| q.roc_auc),
        f1: mean(|q| q.f1),
        precision: mean(|q| q.precision),
        recall: mean(|q| q.recall),
        specificity: mean(|q| q.specificity),
        accuracy,
    }
}

/// The binary estimate of `(raw score, calibrated probability, predicted positive)` rows.
fn estimate_probabilities(calibration: Calibration, mut scored: Vec<(f64, f64, bool)>) -> EstimatedQuality {
    let mut c = ExpectedConfusion::default();
    for &(_, p, predicted) in &scored {
        if predicted {
            c.tp += p;
            c.fp += 1.0 - p;
        } else {
            c.fn_ += p;
            c.tn += 1.0 - p;
        }
    }
    // Highest raw score first; equal scores keep their window order (a stable sort).
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut points = Vec::with_capacity(scored.len() + 1);
    points.push((0.0, 0.0));
    let mut tps = 0.0;
    for (rank, &(_, p, _)) in scored.iter().enumerate() {
        tps += p;
        points.push((round5(rank as f64 + 1.0 - tps), round5(tps)));
    }
    let &(fps_total, tps_total) = points.last().unwrap_or(&(0.0, 0.0));
    let roc_auc = (fps_total > 0.0 && tps_total > 0.0).then(|| {
        points
            .windows(2)
            .map(|w| (w[1].0 / fps_total - w[0].0 / fps_total) * (w[1].1 / tps_total + w[0].1 / tps_total) / 2.0)
            .sum()
    });
    let n = scored.len() as f64;
    EstimatedQuality {
        calibration,
        n_rows: scored.len() as u64,
        expected_confusion: Some(c),
        classes: None,
        roc_auc,
        f1: ratio(c.tp, c.tp + (c.fp + c.fn_) / 2.0),
        precision: ratio(c.tp, c.tp + c.fp),
        recall: ratio(c.tp, c.tp + c.fn_),
        specificity: ratio(c.tn, c.tn + c.fp),
        accuracy: ratio(c.tp + c.tn, n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isotonic_pools_violators_and_interpolates_between_points() {
        // Scores 0.1..0.4 with labels 0,1,0,1: the middle pair pools to ½.
        let fit = Isotonic::fit(&[(0.1, false), (0.2, true), (0.3, false), (0.4, true)]).unwrap();
        assert_eq!(fit.y, vec![0.0, 0.5, 0.5, 1.0]);
        assert_eq!(fit.predict(0.0), 0.0);
        assert_eq!(fit.predict(0.25), 0.5);
        assert!((fit.predict(0.35) - 0.75).abs() < 1e-12);
        assert_eq!(fit.predict(9.0), 1.0);
        // Equal scores pool first: 0.5 seen twice, once positive.
        let tied = Isotonic::fit(&[(0.5, true), (0.5, false), (0.9, true)]).unwrap();
        assert_eq!((tied.x.clone(), tied.y.clone()), (vec![0.5, 0.9], vec![0.5, 1.0]));
    }

    #[test]
    fn perfectly_separated_probabilities_estimate_perfect_quality() {
        let calibrator = Calibrator::fit(&[], Calibration::None);
        let q = estimate(&calibrator, &[(1.0, true), (1.0, true), (0.0, false)]);
        assert_eq!((q.accuracy, q.precision, q.recall, q.f1), (Some(1.0), Some(1.0), Some(1.0), Some(1.0)));
        assert_eq!(q.roc_auc, Some(1.0));
        // One class only: the AUC is undefined, not 0 or 1.
        assert_eq!(estimate(&calibrator, &[(1.0, true)]).roc_auc, None);
    }
}
