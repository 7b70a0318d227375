use super::counters::upper_bound;
use super::*;

#[test]
fn a_key_has_one_position_on_every_replica_and_build() {
    // The first 8 bytes of SHA-256("breast_cancer\0user-42"), fixed: a change here would move every user.
    let expected = {
        let digest = Sha256::digest(b"breast_cancer\0user-42");
        u64::from_be_bytes(digest[..8].try_into().unwrap())
    };
    assert_eq!(position("breast_cancer", b"user-42"), expected);
    assert_eq!(position("breast_cancer", b"user-42"), position("breast_cancer", b"user-42"));
    // Models split independently: the same user is not on every model's candidate at once.
    assert_ne!(position("breast_cancer", b"user-42"), position("digits", b"user-42"));
}

#[test]
fn a_larger_weight_only_adds_keys_to_the_candidate() {
    let (low, high) = (threshold(5.0), threshold(25.0));
    let mut moved_back = 0;
    let mut inside = [0u32; 2];
    for k in 0..20_000u32 {
        let p = u128::from(position("m", format!("k{k}").as_bytes()));
        let (a, b) = (p < low, p < high);
        inside[0] += u32::from(a);
        inside[1] += u32::from(b);
        moved_back += u32::from(a && !b);
    }
    assert_eq!(moved_back, 0, "no key inside 5% is outside 25%");
    // Binomial bounds, four standard deviations.
    for (count, w) in [(inside[0], 0.05f64), (inside[1], 0.25)] {
        let (mean, sd) = (20_000.0 * w, (20_000.0 * w * (1.0 - w)).sqrt());
        assert!((f64::from(count) - mean).abs() < 4.0 * sd, "{count} at weight {w}");
    }
    assert_eq!(threshold(100.0), 1 << 64, "100% takes every position");
    assert_eq!(threshold(0.0), 0);
}

#[test]
fn latency_quantiles_are_within_a_bucket_of_the_truth() {
    let counters = VariantCounters::default();
    // 1 ms x 990, 20 ms x 10: p50 is 1 ms, p99 is 1 ms (the 990th), p99.5 is 20 ms.
    for _ in 0..990 {
        counters.record(true, false, 0.001);
    }
    for _ in 0..10 {
        counters.record(true, false, 0.020);
    }
    let within = |got: f64, truth: f64| got >= truth && got <= truth * 1.25;
    let counts = counters.counts();
    assert!(within(counts.quantile(0.5).unwrap(), 0.001), "{:?}", counts.quantile(0.5));
    assert!(within(counts.quantile(0.99).unwrap(), 0.001), "{:?}", counts.quantile(0.99));
    assert!(within(counts.quantile(0.995).unwrap(), 0.020), "{:?}", counts.quantile(0.995));
    // Failures are counted apart: the server's against the variant, the client's not at all.
    counters.record(false, true, 0.5);
    counters.record(false, false, 0.5);
    let report = counters.counts().report();
    assert_eq!((report.requests, report.errors, report.client_errors), (1002, 1, 1));
    assert_eq!(report.error_rate, Some(1.0 / 1001.0));
    assert!(upper_bound(63) > 60.0, "the last finite bucket covers a minute");
}

#[test]
fn comparisons_average_and_count_agreement() {
    let mut compared = Compared::default();
    compared.add(true, 0.0, 0.0);
    compared.add(false, 1.0, 0.5);
    compared.add(true, 0.5, f64::INFINITY);
    assert_eq!((compared.rows, compared.agreed), (3, 2));
    assert_eq!(compared.agreement(), Some(2.0 / 3.0));
    assert!((compared.mean_abs_diff - 0.5).abs() < 1e-12);
    assert_eq!(compared.max_abs_diff, 1.0);
}

#[test]
fn the_compared_column_is_one_value_per_row() {
    use crate::infer::TensorData;
    let outputs = vec![
        Tensor { name: "label".into(), shape: vec![2].into(), data: TensorData::Int64(vec![1, 0]) },
        Tensor {
            name: "probabilities".into(),
            shape: vec![2, 2].into(),
            data: TensorData::Fp32(vec![0.25, 0.75, 0.5, 0.5]),
        },
    ];
    assert_eq!(column(&outputs, &("probabilities".into(), 1)), Some(vec![0.75, 0.5]));
    assert_eq!(column(&outputs, &("label".into(), 0)), Some(vec![1.0, 0.0]));
    assert_eq!(column(&outputs, &("missing".into(), 0)), None);
}
