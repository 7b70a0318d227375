use std::fmt::Write as _;

use super::*;
use crate::drift::{report as exact_report, NumericStat};
use crate::table::Table;

/// A deterministic pair of files: `rows` rows of a numeric column whose current side is shifted by `shift`, a
/// categorical one whose current side gains a category, a 0/1 one, and a missing cell every 97 rows.
fn write_pair(dir: &Path, rows: usize, shift: f64) -> (PathBuf, PathBuf) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut paths = Vec::new();
    for (side, shift) in [("reference", 0.0), ("current", shift)] {
        let mut text = String::from("x,colour,flag\n");
        for row in 0..rows {
            // A sum of three uniforms: a bell shape with thin tails, in [0, 3) before the shift.
            let x = uniform() + uniform() + uniform() + shift;
            let colours = if side == "current" { ["red", "blue", "teal"] } else { ["red", "blue", "blue"] };
            let colour = colours[(uniform() * 3.0) as usize % 3];
            let flag = u8::from(uniform() < 0.3);
            if row % 97 == 5 {
                writeln!(text, ",{colour},{flag}").unwrap();
            } else {
                writeln!(text, "{x:.5},{colour},{flag}").unwrap();
            }
        }
        let path = dir.join(format!("{side}.csv"));
        std::fs::write(&path, text).unwrap();
        paths.push(path);
    }
    (paths[0].clone(), paths[1].clone())
}

fn both(reference: &Path, current: &Path) -> (DriftReport, DriftReport) {
    let exact =
        exact_report(&Table::from_path(reference).unwrap(), &Table::from_path(current).unwrap(), &Options::default())
            .unwrap();
    (exact, run(reference, current, &Options::default()).unwrap())
}

#[test]
fn files_within_the_exact_values_give_the_exact_report() {
    let dir = tempfile::tempdir().unwrap();
    let (reference, current) = write_pair(dir.path(), 5_000, 0.2);
    let (exact, mut streamed) = both(&reference, &current);
    let how = streamed.streamed.take().expect("a streamed report says so");
    assert!(how.approximate_columns.is_empty());
    assert_eq!(streamed, exact);
}

#[test]
fn large_files_are_estimated_within_the_sketch_error_and_the_rest_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    // Past EXACT_VALUES on both sides, so the numeric column is estimated.
    let (reference, current) = write_pair(dir.path(), 100_000, 0.05);
    let (exact, streamed) = both(&reference, &current);
    let how = streamed.streamed.as_ref().unwrap();
    assert_eq!(how.approximate_columns, ["x"]);
    let page = crate::html::report_page(&streamed, "t");
    assert!(page.contains("the numeric statistics of x are estimated"), "the HTML report says what is estimated");
    assert!(how.rank_error > 0.0 && how.rank_error < 0.001, "{}", how.rank_error);
    assert_eq!(streamed.n_rows, exact.n_rows);
    assert_eq!(streamed.dataset_drift, exact.dataset_drift);
    // Categorical and binary columns, and their checks: exact.
    for name in ["colour", "flag"] {
        assert_eq!(streamed.columns[name], exact.columns[name], "{name}");
        assert_eq!(streamed.data_quality[name], exact.data_quality[name], "{name}");
    }
    let (s, e) = (&streamed.columns["x"], &exact.columns["x"]);
    assert_eq!(s.missing, e.missing);
    assert_eq!(s.n_valid, e.n_valid);
    let (NumericStat::Value(sk), NumericStat::Value(ek)) = (&s.ks, &e.ks) else { panic!("K-S on both") };
    // D is within each side's rank error plus half a grid step of each side.
    let bound = 2.0 * how.rank_error + 1.0 / GRID as f64;
    assert!((sk.statistic - ek.statistic).abs() <= bound, "D {} vs {} (bound {bound})", sk.statistic, ek.statistic);
    assert!(sk.pvalue < 1e-6 && ek.pvalue < 1e-6, "a 0.05 shift at 100,000 rows is detected either way");
    let (NumericStat::Value(sw), NumericStat::Value(ew)) = (&s.wasserstein, &e.wasserstein) else { panic!() };
    assert!((sw.normed - ew.normed).abs() < 0.005, "normed W1 {} vs {}", sw.normed, ew.normed);
    let (ss, es) = (s.summary.unwrap().current.unwrap(), e.summary.unwrap().current.unwrap());
    assert!((ss.mean - es.mean).abs() < 1e-9 && (ss.std - es.std).abs() < 1e-9, "{ss:?} vs {es:?}");
    assert_eq!((ss.min, ss.max), (es.min, es.max));
    let (sp, ep) = (s.psi.as_ref().unwrap(), e.psi.as_ref().unwrap());
    assert_eq!(sp.n_bins, ep.n_bins);
    assert_eq!(sp.current_counts.as_ref().unwrap().iter().sum::<u64>(), s.n_valid.current, "counts sum to n");
    assert!((sp.value - ep.value).abs() < 0.002, "PSI {} vs {}", sp.value, ep.value);
    assert_eq!(s.drift.as_ref().map(|d| d.drifted), e.drift.as_ref().map(|d| d.drifted));
    assert_eq!(s.drift.as_ref().map(|d| d.stattest), Some("wasserstein"));
    // The range check: the estimate is near the exact count, and the example (the farthest value) is exact.
    let (sq, eq) = (
        streamed.data_quality["x"].out_of_range.as_ref().unwrap(),
        exact.data_quality["x"].out_of_range.as_ref().unwrap(),
    );
    assert_eq!(sq.example, eq.example);
    let slack = (how.rank_error * s.n_valid.current as f64).ceil() as u64 * 2;
    assert!(sq.count.abs_diff(eq.count) <= slack, "out of range {} vs {} (slack {slack})", sq.count, eq.count);
}

#[test]
fn a_column_with_too_many_categories_and_words_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,n\n");
    for i in 0..MAX_CATEGORIES + 10 {
        writeln!(text, "user-{i},{i}").unwrap();
    }
    let path = dir.path().join("ids.csv");
    std::fs::write(&path, &text).unwrap();
    let error = run(&path, &path, &Options::default()).unwrap_err().to_string();
    assert!(error.contains("\"id\"") && error.contains("more than 10000 distinct values"), "{error}");
    assert!(error.contains("row 2, \"user-0\""), "the first word is named: {error}");
    // Numbers first, past the bound, then a word: the column is refused at the report, naming the word's row.
    let mut late = String::from("n\n");
    for i in 0..MAX_CATEGORIES + 10 {
        writeln!(late, "{i}").unwrap();
    }
    late.push_str("many\n");
    let late_path = dir.path().join("late.csv");
    std::fs::write(&late_path, &late).unwrap();
    let error = run(&late_path, &late_path, &Options::default()).unwrap_err().to_string();
    assert!(error.contains(&format!("row {}, \"many\"", MAX_CATEGORIES + 12)), "{error}");
    // A numeric column with as many distinct values is fine: it never needed its categories.
    let mut numbers = String::from("n\n");
    for i in 0..MAX_CATEGORIES + 10 {
        writeln!(numbers, "{i}").unwrap();
    }
    std::fs::write(&path, numbers).unwrap();
    let report = run(&path, &path, &Options::default()).unwrap();
    assert_eq!(report.columns["n"].kind, ColumnKind::Numeric);
}

#[test]
fn words_that_arrive_late_on_one_side_make_the_column_categorical_on_both() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.csv");
    let current = dir.path().join("current.csv");
    std::fs::write(&reference, "v\n1\n2\n3\n2\n").unwrap();
    std::fs::write(&current, "v\n1\n2\n3\nthree\n").unwrap();
    let (exact, mut streamed) = both(&reference, &current);
    streamed.streamed = None;
    assert_eq!(streamed.columns["v"].kind, ColumnKind::Categorical);
    assert_eq!(streamed, exact);
}

#[test]
fn a_set_kind_is_held_to_and_what_stream_cannot_do_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.csv");
    std::fs::write(&path, "v\n1\n2\nx\n").unwrap();
    let options = Options { kinds: [("v".to_owned(), ColumnKind::Numeric)].into(), ..Options::default() };
    let error = run(&path, &path, &options).unwrap_err().to_string();
    assert!(error.contains("row 4, column \"v\": \"x\" is not a number"), "{error}");
    let options = Options { multivariate: true, ..Options::default() };
    assert!(run(&path, &path, &options).unwrap_err().to_string().contains("--multivariate"));
    std::fs::write(&path, "v,v\n1,2\n").unwrap();
    let error = run(&path, &path, &Options::default()).unwrap_err().to_string();
    assert!(error.contains("\"v\""), "a column named twice is refused: {error}");
    std::fs::write(&path, "v,w\n1,2\n3\n").unwrap();
    let error = run(&path, &path, &Options::default()).unwrap_err().to_string();
    assert!(error.contains("row 3"), "a short row is refused with its row: {error}");
    std::fs::write(&path, b"PAR1 not really parquet").unwrap();
    assert!(run(&path, &path, &Options::default()).unwrap_err().to_string().contains("Parquet"));
}

#[test]
fn a_column_of_zeros_and_ones_that_turns_numeric_late_is_sketched_whole() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.csv");
    let current = dir.path().join("current.csv");
    // 0/1 for the first 70,000 rows (past EXACT_VALUES, so the sketch has waited), then 0, 1, 2 and 3 in turn:
    // the sketch must count the early zeros and ones, and the later ones too.
    let mut text = String::from("v\n");
    for row in 0..100_000 {
        let v = if row < 70_000 { row % 2 } else { row % 4 };
        writeln!(text, "{v}").unwrap();
    }
    std::fs::write(&reference, &text).unwrap();
    // The current side stays 0/1 throughout: its sketch is never fed, and its figures come from the counts.
    let mut text = String::from("v\n");
    for row in 0..100_000 {
        writeln!(text, "{}", u8::from(row % 3 == 0)).unwrap();
    }
    std::fs::write(&current, &text).unwrap();
    let (exact, streamed) = both(&reference, &current);
    let (s, e) = (&streamed.columns["v"], &exact.columns["v"]);
    assert_eq!(s.kind, ColumnKind::Numeric);
    for (ss, es) in [
        (s.summary.unwrap().reference, e.summary.unwrap().reference),
        (s.summary.unwrap().current, e.summary.unwrap().current),
    ] {
        let (ss, es) = (ss.unwrap(), es.unwrap());
        assert!((ss.mean - es.mean).abs() < 1e-12 && (ss.std - es.std).abs() < 1e-12, "{ss:?} vs {es:?}");
        assert_eq!((ss.min, ss.max), (es.min, es.max));
    }
    let (sp, ep) = (s.psi.as_ref().unwrap(), e.psi.as_ref().unwrap());
    assert_eq!(sp.bin_edges, ep.bin_edges);
    // The reference was sketched: its bin counts are within the rank error; the current side's come from its
    // counts, exactly.
    let slack = (2.0 * streamed.streamed.as_ref().unwrap().rank_error * 100_000.0).ceil() as u64;
    for (a, b) in sp.reference_counts.as_ref().unwrap().iter().zip(ep.reference_counts.as_ref().unwrap()) {
        assert!(a.abs_diff(*b) <= slack, "{a} vs {b} (slack {slack})");
    }
    assert_eq!(sp.current_counts, ep.current_counts);
    let (NumericStat::Value(sk), NumericStat::Value(ek)) = (&s.ks, &e.ks) else { panic!("K-S on both") };
    assert!((sk.statistic - ek.statistic).abs() < 0.002, "D {} vs {}", sk.statistic, ek.statistic);
    assert_eq!(s.drift.as_ref().map(|d| (d.stattest, d.drifted)), e.drift.as_ref().map(|d| (d.stattest, d.drifted)));
}
