//! Model quality from predictions joined with ground truth: binary classification (confusion counts, accuracy,
//! precision, recall, F1, mid-rank ROC AUC, and an uncalibrated expected-confusion estimate from scores alone) and
//! regression (MAE, RMSE, R², mean error). Rows without a label are delayed labels: they count in the coverage and
//! are left out of the metrics. A ratio whose denominator is 0 is 0 (sklearn's `zero_division=0`).

use serde::Serialize;

use super::numeric::pairwise_sum;

/// Confusion counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// True positives.
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// True negatives.
    pub tn: u64,
    /// False negatives.
    #[serde(rename = "fn")]
    pub fn_: u64,
}

/// Accuracy, precision, recall and F1 from (possibly fractional) confusion counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rates {
    /// (tp + tn) / n.
    pub accuracy: f64,
    /// tp / (tp + fp).
    pub precision: f64,
    /// tp / (tp + fn).
    pub recall: f64,
    /// 2·precision·recall / (precision + recall).
    pub f1: f64,
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 {
        0.0
    } else {
        numerator / denominator
    }
}

fn rates(tp: f64, fp: f64, tn: f64, fn_: f64) -> Rates {
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    Rates {
        accuracy: ratio(tp + tn, tp + fp + tn + fn_),
        precision,
        recall,
        f1: ratio(2.0 * precision * recall, precision + recall),
    }
}

/// The expected confusion from scores taken as calibrated probabilities (labels not needed).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimated {
    /// Rows with a score.
    pub n_scored: u64,
    /// The rates of the expected confusion.
    #[serde(flatten)]
    pub rates: Rates,
}

/// Binary classification quality on one side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    /// All rows.
    pub n_rows: u64,
    /// Rows with a label.
    pub n_labelled: u64,
    /// n_labelled / n_rows.
    pub label_coverage: f64,
    /// Rows with both a label and a score.
    pub n_evaluated: u64,
    /// Predicted class = score ≥ threshold.
    pub confusion: Confusion,
    /// The rates.
    #[serde(flatten)]
    pub rates: Rates,
    /// P(a random positive scores above a random negative), ties ½; `None` with one class only.
    pub roc_auc: Option<f64>,
    /// Positives among the evaluated rows.
    pub positive_rate_true: f64,
    /// Predicted positives among the evaluated rows.
    pub positive_rate_predicted: f64,
    /// The expected confusion from scores alone.
    pub estimated_from_scores_uncalibrated: Estimated,
}

impl Classification {
    /// A metric by name: accuracy, precision, recall, f1, roc_auc or specificity (tn / (tn + fp); `None` without
    /// negatives).
    pub fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "accuracy" => Some(self.rates.accuracy),
            "precision" => Some(self.rates.precision),
            "recall" => Some(self.rates.recall),
            "f1" => Some(self.rates.f1),
            "roc_auc" => self.roc_auc,
            "specificity" => {
                let (tn, fp) = (self.confusion.tn as f64, self.confusion.fp as f64);
                (tn + fp > 0.0).then(|| tn / (tn + fp))
            }
            _ => None,
        }
    }
}

/// Computes classification quality; `labels[i]` is whether row i is positive (`None`: no label yet).
pub fn classification(labels: &[Option<bool>], scores: &[Option<f64>], threshold: f64) -> Classification {
    let n_rows = labels.len() as u64;
    let n_labelled = labels.iter().filter(|l| l.is_some()).count() as u64;
    let mut confusion = Confusion::default();
    let mut evaluated: Vec<(f64, bool)> = Vec::new();
    for (label, score) in labels.iter().zip(scores) {
        let (Some(positive), Some(score)) = (label, score) else { continue };
        evaluated.push((*score, *positive));
        match (*positive, *score >= threshold) {
            (true, true) => confusion.tp += 1,
            (false, true) => confusion.fp += 1,
            (false, false) => confusion.tn += 1,
            (true, false) => confusion.fn_ += 1,
        }
    }
    let n_evaluated = evaluated.len() as u64;
    let c = confusion;
    let (mut tp, mut fp, mut fn_, mut tn, mut n_scored) = (0.0, 0.0, 0.0, 0.0, 0u64);
    for score in scores.iter().flatten() {
        n_scored += 1;
        if *score >= threshold {
            tp += score;
            fp += 1.0 - score;
        } else {
            fn_ += score;
            tn += 1.0 - score;
        }
    }
    Classification {
        n_rows,
        n_labelled,
        label_coverage: ratio(n_labelled as f64, n_rows as f64),
        n_evaluated,
        confusion,
        rates: rates(c.tp as f64, c.fp as f64, c.tn as f64, c.fn_ as f64),
        roc_auc: roc_auc(&mut evaluated),
        positive_rate_true: ratio((c.tp + c.fn_) as f64, n_evaluated as f64),
        positive_rate_predicted: ratio((c.tp + c.fp) as f64, n_evaluated as f64),
        estimated_from_scores_uncalibrated: Estimated { n_scored, rates: rates(tp, fp, tn, fn_) },
    }
}

/// Mid-rank AUC: (Σ ranks of positives − n_pos(n_pos+1)/2) / (n_pos·n_neg).
fn roc_auc(pairs: &mut [(f64, bool)]) -> Option<f64> {
    let n_pos = pairs.iter().filter(|(_, p)| *p).count();
    let n_neg = pairs.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their mean.
        let mid = (i + 1 + j) as f64 / 2.0;
        rank_sum += mid * pairs[i..j].iter().filter(|(_, p)| *p).count() as f64;
        i = j;
    }
    let n_pos = n_pos as f64;
    Some((rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg as f64))
}

/// Regression quality on one side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Regression {
    /// All rows.
    pub n_rows: u64,
    /// Rows with a target.
    pub n_labelled: u64,
    /// n_labelled / n_rows.
    pub label_coverage: f64,
    /// Rows with both target and prediction.
    pub n_evaluated: u64,
    /// Mean absolute error.
    pub mae: Option<f64>,
    /// Root mean squared error.
    pub rmse: Option<f64>,
    /// 1 − SS_res/SS_tot around the evaluated rows' mean target; `None` when SS_tot = 0.
    pub r2: Option<f64>,
    /// Mean of prediction − target (positive = over-prediction).
    pub mean_error: Option<f64>,
}

/// Computes regression quality.
pub fn regression(targets: &[Option<f64>], predictions: &[Option<f64>]) -> Regression {
    let n_rows = targets.len() as u64;
    let n_labelled = targets.iter().filter(|t| t.is_some()).count() as u64;
    let pairs: Vec<(f64, f64)> = targets.iter().zip(predictions).filter_map(|(t, p)| Some(((*t)?, (*p)?))).collect();
    let n = pairs.len() as f64;
    let mean = |values: Vec<f64>| (!values.is_empty()).then(|| pairwise_sum(&values) / n);
    let errors: Vec<f64> = pairs.iter().map(|(t, p)| p - t).collect();
    let mae = mean(errors.iter().map(|e| e.abs()).collect());
    let mse = mean(errors.iter().map(|e| e * e).collect());
    let mean_target = mean(pairs.iter().map(|(t, _)| *t).collect());
    let r2 = mean_target.and_then(|mt| {
        let ss_tot = pairwise_sum(&pairs.iter().map(|(t, _)| (t - mt) * (t - mt)).collect::<Vec<_>>());
        let ss_res = pairwise_sum(&errors.iter().map(|e| e * e).collect::<Vec<_>>());
        (ss_tot != 0.0).then(|| 1.0 - ss_res / ss_tot)
    });
    Regression {
        n_rows,
        n_labelled,
        label_coverage: ratio(n_labelled as f64, n_rows as f64),
        n_evaluated: pairs.len() as u64,
        mae,
        rmse: mse.map(f64::sqrt),
        r2,
        mean_error: mean(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half_and_needs_both_classes() {
        let mut pairs = vec![(0.1, false), (0.4, true), (0.4, false), (0.8, true)];
        // Pairs (pos, neg): (0.4,0.1)=1, (0.4,0.4)=½, (0.8,0.1)=1, (0.8,0.4)=1 → 3.5/4.
        assert_eq!(roc_auc(&mut pairs), Some(0.875));
        assert_eq!(roc_auc(&mut [(0.3, true)]), None);
    }

    #[test]
    fn zero_denominators_give_zero_and_delayed_labels_count_in_coverage() {
        let q = classification(&[Some(false), None, Some(false)], &[Some(0.2), Some(0.9), Some(0.1)], 0.5);
        assert_eq!((q.n_rows, q.n_labelled, q.n_evaluated), (3, 2, 2));
        assert_eq!((q.rates.precision, q.rates.recall, q.rates.f1, q.rates.accuracy), (0.0, 0.0, 0.0, 1.0));
        assert_eq!(q.roc_auc, None);
        let r = regression(&[Some(1.0), Some(1.0), None], &[Some(2.0), Some(0.0), Some(5.0)]);
        assert_eq!((r.mae, r.mean_error, r.r2), (Some(1.0), Some(0.0), None));
    }
}
