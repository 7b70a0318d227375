//! Properties every drift statistic must have, on random tables with ties and missing cells: a sample compared with
//! itself shows no drift, the report does not depend on row order, and every count adds up.

use std::path::Path;

use monitor::drift::{self, Options};
use monitor::table::Table;
use proptest::prelude::*;
use serde_json::Value;

/// A CSV with a numeric column (quarter steps, so ties happen), a categorical one, and empty cells.
fn csv(rows: &[(Option<i32>, Option<u8>)]) -> String {
    let mut text = String::from("x,c\n");
    for (x, c) in rows {
        let x = x.map(|v| format!("{}", f64::from(v) / 4.0)).unwrap_or_default();
        let c = c.map(|v| ["red", "green", "blue", "black"][usize::from(v % 4)].to_owned()).unwrap_or_default();
        text.push_str(&format!("{x},{c}\n"));
    }
    text
}

fn report(reference: &str, current: &str) -> Value {
    let r = Table::from_csv_reader(reference.as_bytes(), Path::new("ref.csv")).unwrap();
    let c = Table::from_csv_reader(current.as_bytes(), Path::new("cur.csv")).unwrap();
    serde_json::to_value(drift::report(&r, &c, &Options::default()).unwrap()).unwrap()
}

fn rows() -> impl Strategy<Value = Vec<(Option<i32>, Option<u8>)>> {
    // At least one present value per column, so every statistic is defined.
    prop::collection::vec((prop::option::weighted(0.9, -40..40i32), prop::option::weighted(0.9, 0..4u8)), 2..120)
        .prop_filter("a value in each column", |rows| {
            rows.iter().any(|(x, _)| x.is_some()) && rows.iter().any(|(_, c)| c.is_some())
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_sample_compared_with_itself_shows_no_drift(rows in rows()) {
        // x must be read as numeric for its numeric statistics: present values all 0 or 1 (0 and 4 quarters) make it
        // a binary column, which has no K-S or Wasserstein (a generated case once did: two rows, x = 0 and missing).
        prop_assume!(rows.iter().any(|(x, _)| x.is_some_and(|v| v != 0 && v != 4)));
        let text = csv(&rows);
        let report = report(&text, &text);
        let x = &report["columns"]["x"];
        prop_assert_eq!(x["psi"]["value"].as_f64(), Some(0.0));
        prop_assert_eq!(x["js_distance"].as_f64(), Some(0.0));
        prop_assert_eq!(x["ks"]["statistic"].as_f64(), Some(0.0));
        prop_assert_eq!(x["ks"]["pvalue"].as_f64(), Some(1.0));
        prop_assert_eq!(x["wasserstein"]["distance"].as_f64(), Some(0.0));
        let c = &report["columns"]["c"];
        prop_assert_eq!(c["psi"]["value"].as_f64(), Some(0.0));
        prop_assert_eq!(c["js_distance"].as_f64(), Some(0.0));
        prop_assert_eq!(c["l_infinity"].as_f64(), Some(0.0));
        prop_assert!(c["chi2"]["statistic"].as_f64().unwrap().abs() < 1e-12);
        prop_assert_eq!(report["dataset_drift"]["number_of_drifted_columns"].as_u64(), Some(0));
    }

    #[test]
    fn the_report_does_not_depend_on_row_order(reference in rows(), current in rows(), seed in any::<u64>()) {
        let shuffle = |rows: &[(Option<i32>, Option<u8>)], seed: u64| {
            let mut rows = rows.to_vec();
            let mut state = seed | 1;
            for i in (1..rows.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                rows.swap(i, (state % (i as u64 + 1)) as usize);
            }
            rows
        };
        let straight = report(&csv(&reference), &csv(&current));
        let shuffled = report(&csv(&shuffle(&reference, seed)), &csv(&shuffle(&current, seed.rotate_left(7))));
        prop_assert_eq!(straight, shuffled);
    }

    #[test]
    fn every_count_adds_up(reference in rows(), current in rows()) {
        let report = report(&csv(&reference), &csv(&current));
        for (side, rows) in [("reference", &reference), ("current", &current)] {
            for name in ["x", "c"] {
                let column = &report["columns"][name];
                let valid = column["n_valid"][side].as_u64().unwrap();
                let missing = column["missing"][side]["count"].as_u64().unwrap();
                prop_assert_eq!(valid + missing, rows.len() as u64);
            }
            let bins: u64 = report["columns"]["x"]["psi"][format!("{side}_counts")]
                .as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum();
            prop_assert_eq!(bins, report["columns"]["x"]["n_valid"][side].as_u64().unwrap());
            let categories: u64 = report["columns"]["c"][format!("{side}_counts")]
                .as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
            prop_assert_eq!(categories, report["columns"]["c"]["n_valid"][side].as_u64().unwrap());
        }
    }

    #[test]
    fn swapping_the_sides_keeps_the_symmetric_statistics(reference in rows(), current in rows()) {
        let forward = report(&csv(&reference), &csv(&current));
        let backward = report(&csv(&current), &csv(&reference));
        for (column, stat) in [("x", "/ks/statistic"), ("x", "/wasserstein/distance"), ("c", "/js_distance"),
                               ("c", "/l_infinity"), ("c", "/chi2/statistic")] {
            let a = forward["columns"][column].pointer(stat).and_then(Value::as_f64).unwrap();
            let b = backward["columns"][column].pointer(stat).and_then(Value::as_f64).unwrap();
            prop_assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{column}{stat}: {a} vs {b}");
        }
    }
}

/// Scores (tied ones too) and labels; the labels follow the scores loosely, so both classes and violators occur.
fn scored() -> impl Strategy<Value = Vec<(f64, bool)>> {
    prop::collection::vec((0..40u32, 0..100u32), 2..300)
        .prop_map(|rows| rows.into_iter().map(|(s, u)| (f64::from(s) / 40.0, u < 10 + 2 * s)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Isotonic calibration fitted on a sample, estimating that same sample, expects exactly the confusion its labels
    /// show, when the prediction thresholds the score where the calibrated probability crosses ½ (a threshold on
    /// the score, since calibration is monotone): every pooled block of scores is then wholly on one side, and a
    /// block's probabilities sum to its positives. (A threshold inside a pooled block would split its positives
    /// unevenly, and the ROC AUC interpolates within blocks, so neither is exact in general.)
    #[test]
    fn an_isotonic_estimate_of_the_reference_is_its_realized_quality(sample in scored()) {
        use monitor::stats::cbpe::{estimate, Calibration, Calibrator};
        use monitor::stats::quality::classification;
        let calibrator = Calibrator::fit(&sample, Calibration::Isotonic);
        let rows: Vec<(f64, bool)> = sample.iter().map(|&(s, _)| (s, calibrator.probability(s) >= 0.5)).collect();
        let estimated = estimate(&calibrator, &rows);
        // The realized quality of the same predictions: score ≥ the smallest score predicted positive.
        let threshold = rows.iter().filter(|r| r.1).map(|r| r.0).fold(f64::INFINITY, f64::min);
        let labels: Vec<Option<bool>> = sample.iter().map(|&(_, l)| Some(l)).collect();
        let scores: Vec<Option<f64>> = sample.iter().map(|&(s, _)| Some(s)).collect();
        let realized = classification(&labels, &scores, threshold);
        let close = |a: Option<f64>, b: f64| a.map_or(b == 0.0, |a| (a - b).abs() < 1e-9);
        prop_assert!(close(estimated.accuracy, realized.rates.accuracy), "{:?} {:?}", estimated, realized);
        prop_assert!(close(estimated.precision, realized.rates.precision), "{:?} {:?}", estimated, realized);
        prop_assert!(close(estimated.recall, realized.rates.recall), "{:?} {:?}", estimated, realized);
        prop_assert!(close(estimated.f1, realized.rates.f1), "{:?} {:?}", estimated, realized);
        // Specificity is undefined (None) on both sides when no row is negative.
        let same = match (estimated.specificity, realized.metric("specificity")) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            (a, b) => a.is_none() && b.is_none(),
        };
        prop_assert!(same, "{:?} {:?}", estimated, realized);
    }

    /// The reference compared with itself through the whole report: the current side's reconstruction error is the
    /// fitted reference value, inside the bounds, whatever the missing cells and categories.
    #[test]
    fn the_reference_reconstruction_error_is_the_fitted_value(rows in rows(), extra in prop::collection::vec(-50..50i32, 2..120)) {
        // A third, correlated column so that PCA has something to keep and something to drop.
        let mut text = String::from("x,c,y\n");
        for ((x, c), e) in csv(&rows).lines().skip(1).map(|l| l.split_once(',').unwrap()).zip(extra.iter().cycle()) {
            let y = x.parse::<f64>().map(|x| format!("{}", x * 2.0 + f64::from(*e) / 100.0)).unwrap_or_default();
            text.push_str(&format!("{x},{c},{y}\n"));
        }
        let table = Table::from_csv_reader(text.as_bytes(), Path::new("ref.csv")).unwrap();
        let options = Options { multivariate: true, ..Options::default() };
        let report = drift::report(&table, &table, &options).unwrap();
        let m = report.multivariate.unwrap();
        let (reference, current) = (m.reconstruction_error.reference.unwrap(), m.reconstruction_error.current.unwrap());
        prop_assert!((reference - current).abs() <= 1e-12 * reference.max(1.0), "{} {}", reference, current);
        prop_assert!(!m.drifted);
        prop_assert!(m.pca_components >= 1 && m.pca_components <= 3);
    }
}

/// Random numeric columns (quarter steps, a correlated pair, missing cells).
fn numeric_table() -> impl Strategy<Value = Vec<[Option<i32>; 3]>> {
    prop::collection::vec(
        (prop::option::weighted(0.95, -40..40i32), -40..40i32, prop::option::weighted(0.95, -40..40i32)),
        5..150,
    )
    .prop_map(|rows| rows.into_iter().map(|(a, b, c)| [a, a.map(|a| 2 * a + b / 8), c]).collect())
    .prop_filter("values in every column, not all equal", |rows: &Vec<[Option<i32>; 3]>| {
        (0..3).all(|c| {
            let values: Vec<i32> = rows.iter().filter_map(|r| r[c]).collect();
            values.len() >= 2 && values.iter().any(|v| *v != values[0])
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The fitted reference error equals an independent computation: impute each column's mean, standardise with the
    /// population standard deviation, centre, and reconstruct through the right singular vectors of an SVD (not
    /// the covariance's eigenvectors the monitor uses), keeping the fewest whose explained variance passes 0.65.
    #[test]
    fn the_reference_reconstruction_error_matches_an_svd_computed_apart(rows in numeric_table()) {
        use monitor::drift::Values;
        use monitor::stats::multivariate::Reconstruction;
        let columns: Vec<Values> =
            (0..3).map(|c| Values::Numeric(rows.iter().map(|r| r[c].map(|v| f64::from(v) / 4.0)).collect())).collect();
        let named: Vec<(String, &Values, bool)> = columns.iter().enumerate().map(|(i, v)| (format!("c{i}"), v, false)).collect();
        let fit = Reconstruction::fit(&named).unwrap();

        let n = rows.len();
        let mut x = nalgebra::DMatrix::<f64>::zeros(n, 3);
        for c in 0..3 {
            let present: Vec<f64> = rows.iter().filter_map(|r| r[c]).map(|v| f64::from(v) / 4.0).collect();
            let mean = present.iter().sum::<f64>() / present.len() as f64;
            for (r, row) in rows.iter().enumerate() {
                x[(r, c)] = row[c].map_or(mean, |v| f64::from(v) / 4.0);
            }
            let m = x.column(c).mean();
            let sd = (x.column(c).iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n as f64).sqrt();
            let sd = if sd > 0.0 { sd } else { 1.0 };
            for r in 0..n {
                x[(r, c)] = (x[(r, c)] - m) / sd;
            }
            let m = x.column(c).mean();
            for r in 0..n {
                x[(r, c)] -= m;
            }
        }
        let svd = nalgebra::SVD::new(x.clone(), false, true);
        let v_t = svd.v_t.unwrap();
        let mut order: Vec<usize> = (0..svd.singular_values.len()).collect();
        order.sort_by(|&a, &b| svd.singular_values[b].total_cmp(&svd.singular_values[a]));
        let total: f64 = svd.singular_values.iter().map(|s| s * s).sum();
        let (mut kept, mut cumulative) = (Vec::new(), 0.0);
        for &i in &order {
            kept.push(i);
            cumulative += svd.singular_values[i].powi(2) / total;
            if cumulative > 0.65 {
                break;
            }
        }
        let mut mean_error = 0.0;
        for r in 0..n {
            let row = x.row(r).transpose();
            let mut back = nalgebra::DVector::<f64>::zeros(3);
            for &i in &kept {
                let v = v_t.row(i).transpose();
                back += &v * v.dot(&row);
            }
            mean_error += (row - back).norm() / n as f64;
        }
        prop_assert_eq!(fit.n_components, kept.len());
        prop_assert!((fit.reference_mean - mean_error).abs() <= 1e-9 * mean_error.max(1.0), "{} vs {}", fit.reference_mean, mean_error);
    }
}
