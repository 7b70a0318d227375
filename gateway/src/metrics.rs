//! `GET /metrics` in the Prometheus text format (0.0.4, which every Prometheus and `promtool check metrics`
//! read), from one `prometheus-client` registry that the parts of Vane register into at start-up.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

/// The server's metrics registry.
#[derive(Debug, Default)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry, for registering series at start-up.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Every series, as Prometheus text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// The `Content-Type` of [`Metrics::render`]'s output.
    pub const CONTENT_TYPE: &'static str = prometheus_text::CONTENT_TYPE;
}

/// The monitor's series: per model version and feature (both fixed by the model's schema, so bounded), never per
/// value or category.
pub mod monitor_series {
    use std::sync::atomic::AtomicU64;

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use monitor::live::{LiveReport, QueueCounters};
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    /// A model version.
    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct VersionLabels {
        /// The model.
        pub model: String,
        /// The version.
        pub version: String,
    }

    /// A feature of a model version.
    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct FeatureLabels {
        /// The model.
        pub model: String,
        /// The version.
        pub version: String,
        /// The feature (reference column).
        pub feature: String,
    }

    /// A statistic of a feature.
    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct StatisticLabels {
        /// The model.
        pub model: String,
        /// The version.
        pub version: String,
        /// The feature (reference column).
        pub feature: String,
        /// psi, js_distance, ks_pvalue, wasserstein_normed, chi2_pvalue, missing_share or drift_score.
        pub statistic: &'static str,
    }

    /// One bin of a feature: a reference-quantile bin of a numeric feature (`0`, `1`, ...), or a category of the
    /// reference (and `__unseen__` for every category it never had).
    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct BinLabels {
        /// The model.
        pub model: String,
        /// The version.
        pub version: String,
        /// The feature (reference column).
        pub feature: String,
        /// numeric, categorical or binary.
        pub kind: &'static str,
        /// The bin.
        pub bin: String,
    }

    /// Categories of a feature exported as bins at most; a feature with more reference categories has no bin series
    /// (its cardinality would be the reference's to choose, and the reference is untrusted).
    pub const MAX_CATEGORY_BINS: usize = 64;
    /// The bin every category the reference never had is counted in.
    pub const UNSEEN_BIN: &str = "__unseen__";
    /// Features of a version with bin series at most (the first by name), and the longest category a bin
    /// label may carry (a feature with a longer one has none): at most 128 x 65 x 2 bin series per version and
    /// replica, each label at most 64 bytes, whatever the reference holds.
    pub const MAX_BIN_FEATURES: usize = 128;
    /// See [`MAX_BIN_FEATURES`].
    pub const MAX_BIN_LABEL_BYTES: usize = 64;

    /// A model.
    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct ModelLabels {
        /// The model.
        pub model: String,
    }

    /// A statistic of a model version's predictions.
    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct PredictionLabels {
        /// The model.
        pub model: String,
        /// The version.
        pub version: String,
        /// As for features.
        pub statistic: &'static str,
    }

    /// Gauges updated from each live report.
    #[derive(Debug, Clone, Default)]
    pub struct MonitorMetrics {
        statistic: Family<StatisticLabels, Gauge<f64, AtomicU64>>,
        drifted: Family<FeatureLabels, Gauge>,
        dataset_share: Family<VersionLabels, Gauge<f64, AtomicU64>>,
        window_rows: Family<VersionLabels, Gauge>,
        quality: Family<QualityLabels, Gauge<f64, AtomicU64>>,
        prediction: Family<PredictionLabels, Gauge<f64, AtomicU64>>,
        /// Estimated quality (`metric` one of CBPE's) and multivariate drift (`statistic` one of [`MULTIVARIATE`]).
        estimated: Family<PredictionLabels, Gauge<f64, AtomicU64>>,
        multivariate: Family<PredictionLabels, Gauge<f64, AtomicU64>>,
        /// Each feature's share of cells failing a data-quality check (`statistic` one of its checks).
        data_quality: Family<StatisticLabels, Gauge<f64, AtomicU64>>,
        /// The window's and the reference's counts per bin, summed over replicas by the fleet's recording rules.
        window_bins: Family<BinLabels, Gauge>,
        reference_bins: Family<BinLabels, Gauge>,
        /// The bin series set per version, so a retired version's can all be removed.
        bins: Arc<Mutex<BinsByVersion>>,
        alerts_firing: Family<ModelLabels, Gauge>,
        /// The features each version's series were set for, so a retired version's series can all be removed.
        features: Arc<Mutex<FeaturesByVersion>>,
    }

    /// The bin series of each (model, version).
    type BinsByVersion = HashMap<(String, String), Vec<BinLabels>>;

    /// The feature names of each (model, version) with series.
    type FeaturesByVersion = HashMap<(String, String), Vec<String>>;

    /// The statistics exported per column, by gauge label.
    const STATISTICS: [&str; 7] =
        ["psi", "js_distance", "missing_share", "ks_pvalue", "wasserstein_normed", "chi2_pvalue", "drift_score"];
    /// The quality metrics exported.
    const QUALITY: [&str; 10] =
        ["label_coverage", "accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse", "r2", "mean_error"];

    /// The multivariate drift series, by `statistic` label.
    const MULTIVARIATE: [&str; 5] = ["reconstruction_error", "reference_error", "z", "lower_bound", "upper_bound"];

    /// A column's statistics, by gauge label.
    fn column_statistics(column: &monitor::drift::ColumnReport) -> Vec<(&'static str, f64)> {
        use monitor::drift::NumericStat;
        let mut out = vec![("missing_share", column.missing.current.share)];
        out.extend(column.psi.as_ref().map(|p| ("psi", p.value)));
        out.extend(column.js_distance.map(|v| ("js_distance", v)));
        if let NumericStat::Value(ks) = &column.ks {
            out.push(("ks_pvalue", ks.pvalue));
        }
        if let NumericStat::Value(w) = &column.wasserstein {
            out.push(("wasserstein_normed", w.normed));
        }
        if let NumericStat::Value(chi2) = &column.chi2 {
            out.push(("chi2_pvalue", chi2.pvalue));
        }
        out.extend(column.drift.as_ref().map(|v| ("drift_score", v.drift_score)));
        out
    }

    /// A feature's bins: (kind, bin, reference count, window count). Numeric: the reference-quantile bins by index
    /// (none when a side has no values). Categorical: the reference's categories, and every other category the
    /// window holds counted together in [`UNSEEN_BIN`]; none past [`MAX_CATEGORY_BINS`] reference categories.
    fn column_bins(column: &monitor::drift::ColumnReport) -> Vec<(&'static str, String, u64, u64)> {
        use monitor::drift::ColumnKind;
        let kind = match column.kind {
            ColumnKind::Numeric => "numeric",
            ColumnKind::Categorical => "categorical",
            ColumnKind::Binary => "binary",
        };
        if let Some(psi) = &column.psi {
            if let (Some(r), Some(c)) = (&psi.reference_counts, &psi.current_counts) {
                return r.iter().zip(c).enumerate().map(|(i, (&r, &c))| (kind, i.to_string(), r, c)).collect();
            }
        }
        let (Some(reference), Some(current)) = (&column.reference_counts, &column.current_counts) else {
            return Vec::new();
        };
        let seen: Vec<(&String, u64)> = reference.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k, *n)).collect();
        if seen.len() > MAX_CATEGORY_BINS || seen.iter().any(|(k, _)| k.len() > MAX_BIN_LABEL_BYTES) {
            return Vec::new();
        }
        let unseen: u64 =
            current.iter().filter(|(k, _)| reference.get(*k).is_none_or(|n| *n == 0)).map(|(_, n)| n).sum();
        let mut bins: Vec<_> =
            seen.into_iter().map(|(k, r)| (kind, k.clone(), r, current.get(k).copied().unwrap_or(0))).collect();
        bins.push((kind, UNSEEN_BIN.to_owned(), 0, unseen));
        bins
    }

    /// A quality metric of a model version.
    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    pub struct QualityLabels {
        /// The model.
        pub model: String,
        /// The version.
        pub version: String,
        /// accuracy, precision, recall, f1, roc_auc, mae, rmse, r2, mean_error or label_coverage.
        pub metric: &'static str,
    }

    impl MonitorMetrics {
        /// Registers the series, and the observation queue's counters.
        pub fn register(&self, registry: &mut Registry, queue: &QueueCounters) {
            registry.register(
                "vane_feature_drift",
                "A drift statistic of a feature over the current window against the reference",
                self.statistic.clone(),
            );
            registry.register(
                "vane_feature_drifted",
                "1 when the feature's drift test (Evidently's default choice) says drifted, else 0",
                self.drifted.clone(),
            );
            registry.register(
                "vane_dataset_drift_share",
                "Share of a model version's features that drifted in the current window",
                self.dataset_share.clone(),
            );
            registry.register(
                "vane_prediction_drift",
                "A drift statistic of a model version's predictions against the reference data's prediction column",
                self.prediction.clone(),
            );
            registry.register(
                "vane_estimated_quality",
                "A quality metric of a model version's window estimated from its scores alone (CBPE; the `statistic` \
                 label names the metric)",
                self.estimated.clone(),
            );
            registry.register(
                "vane_multivariate_drift",
                "A model version's window against the reference by PCA reconstruction error: the window's and the \
                 reference's error, z (standard errors of a window this size) and the bounds (reference +- 3 of them)",
                self.multivariate.clone(),
            );
            registry.register(
                "vane_data_quality",
                "A feature's share of the window failing a data-quality check (`statistic`: missing, out_of_range, \
                 unseen_category, wrong_type)",
                self.data_quality.clone(),
            );
            registry.register(
                "vane_feature_window_values",
                "Values of a feature in a replica's current window per bin (reference-quantile bins of a numeric \
                 feature, reference categories and __unseen__ of a categorical one): summed over replicas, the fleet's \
                 distribution (configs/prometheus/vane-fleet-rules.yaml)",
                self.window_bins.clone(),
            );
            registry.register(
                "vane_feature_reference_values",
                "Values of a feature in the reference data per bin (the same on every replica)",
                self.reference_bins.clone(),
            );
            registry.register(
                "vane_drift_alerts_firing",
                "Drift and quality alerts of a model firing in Vane's monitor (delivered by Vane itself to Alertmanager)",
                self.alerts_firing.clone(),
            );
            registry.register(
                "vane_model_quality",
                "A quality metric of a model version over its last joined labels (POST /api/v1/feedback)",
                self.quality.clone(),
            );
            registry.register(
                "vane_monitor_window_rows",
                "Rows in a model version's monitoring window",
                self.window_rows.clone(),
            );
            registry.register(
                "vane_monitor_observations",
                "Predictions offered to the monitor and queued",
                queue.accepted.clone(),
            );
            registry.register(
                "vane_monitor_observations_dropped",
                "Predictions not monitored because the monitor's queue was full",
                queue.dropped.clone(),
            );
        }

        /// Registers the alert delivery counters.
        pub fn register_delivery(registry: &mut Registry, counters: &monitor::notify::NotifyCounters) {
            registry.register("vane_alert_deliveries", "Alert notifications delivered", counters.sent.clone());
            registry.register(
                "vane_alert_delivery_failures",
                "Alert notifications that failed after retries",
                counters.failed.clone(),
            );
            registry.register(
                "vane_alert_batches_dropped",
                "Alert batches dropped because the delivery queue was full",
                counters.dropped.clone(),
            );
        }

        /// Sets the quality gauges from `report`.
        pub fn record_quality(&self, report: &monitor::feedback::QualityReport) {
            let set = |metric, value: Option<f64>| {
                if let Some(value) = value.filter(|v| v.is_finite()) {
                    let labels =
                        QualityLabels { model: report.model.clone(), version: report.version.to_string(), metric };
                    self.quality.get_or_create(&labels).set(value);
                }
            };
            set("label_coverage", Some(report.label_coverage));
            if let Some(c) = &report.classification {
                set("accuracy", Some(c.rates.accuracy));
                set("precision", Some(c.rates.precision));
                set("recall", Some(c.rates.recall));
                set("f1", Some(c.rates.f1));
                set("roc_auc", c.roc_auc);
            }
            if let Some(r) = &report.regression {
                set("mae", r.mae);
                set("rmse", r.rmse);
                set("r2", r.r2);
                set("mean_error", r.mean_error);
            }
        }

        /// Sets the firing-alert counts from every alert the monitor tracks.
        pub fn record_alerts(&self, alerts: &[monitor::alerts::Alert]) {
            self.alerts_firing.clear();
            for alert in alerts.iter().filter(|a| a.state == monitor::alerts::State::Firing) {
                self.alerts_firing.get_or_create(&ModelLabels { model: alert.model.clone() }).inc();
            }
        }

        /// Removes every series of a model version that is no longer served, so dashboards do not show the last
        /// values of a retired version as if they were current.
        pub fn retire(&self, model: &str, version: u64) {
            let (model, version) = (model.to_owned(), version.to_string());
            let at = VersionLabels { model: model.clone(), version: version.clone() };
            self.window_rows.remove(&at);
            self.dataset_share.remove(&at);
            for statistic in STATISTICS {
                self.prediction.remove(&PredictionLabels { model: model.clone(), version: version.clone(), statistic });
            }
            for metric in QUALITY {
                self.quality.remove(&QualityLabels { model: model.clone(), version: version.clone(), metric });
            }
            self.remove_estimated(&model, &version);
            self.remove_multivariate(&model, &version);
            let bins = self.bins.lock().ok().and_then(|mut b| b.remove(&(model.clone(), version.clone())));
            for labels in bins.unwrap_or_default() {
                self.window_bins.remove(&labels);
                self.reference_bins.remove(&labels);
            }
            let features = self.features.lock().ok().and_then(|mut f| f.remove(&(model.clone(), version.clone())));
            for feature in features.unwrap_or_default() {
                self.remove_feature(&model, &version, feature);
            }
        }

        /// Sets the gauges from `report`.
        pub fn record(&self, report: &LiveReport) {
            let (model, version) = (report.model.clone(), report.version.to_string());
            let at = VersionLabels { model: model.clone(), version: version.clone() };
            self.window_rows.get_or_create(&at).set(i64::try_from(report.window_rows).unwrap_or(i64::MAX));
            if let Some(dataset) = &report.dataset_drift {
                self.dataset_share.get_or_create(&at).set(dataset.share_of_drifted_columns);
            }
            for (feature, column) in &report.columns {
                for (statistic, value) in column_statistics(column) {
                    let labels = StatisticLabels {
                        model: model.clone(),
                        version: version.clone(),
                        feature: feature.clone(),
                        statistic,
                    };
                    self.statistic.get_or_create(&labels).set(value);
                }
                if let Some(verdict) = &column.drift {
                    let at = FeatureLabels { model: model.clone(), version: version.clone(), feature: feature.clone() };
                    self.drifted.get_or_create(&at).set(i64::from(verdict.drifted));
                }
            }
            if let Some(prediction) = &report.prediction_drift {
                for (statistic, value) in column_statistics(&prediction.report) {
                    let labels = PredictionLabels { model: model.clone(), version: version.clone(), statistic };
                    self.prediction.get_or_create(&labels).set(value);
                }
            }
            let mut bins = Vec::new();
            for (feature, column) in report.columns.iter().take(MAX_BIN_FEATURES) {
                for (kind, bin, reference, window) in column_bins(column) {
                    let labels = BinLabels {
                        model: model.clone(),
                        version: version.clone(),
                        feature: feature.clone(),
                        kind,
                        bin,
                    };
                    self.reference_bins.get_or_create(&labels).set(i64::try_from(reference).unwrap_or(i64::MAX));
                    self.window_bins.get_or_create(&labels).set(i64::try_from(window).unwrap_or(i64::MAX));
                    bins.push(labels);
                }
            }
            // A bin set last time but not now (a numeric window left with no values has no bins) goes, so a sum
            // over replicas never adds a stale count.
            if let Ok(mut all) = self.bins.lock() {
                let now: std::collections::HashSet<&BinLabels> = bins.iter().collect();
                let stale: Vec<BinLabels> = all
                    .get(&(model.clone(), version.clone()))
                    .map(|before| before.iter().filter(|labels| !now.contains(labels)).cloned().collect())
                    .unwrap_or_default();
                drop(now);
                all.insert((model.clone(), version.clone()), bins);
                for stale in &stale {
                    self.window_bins.remove(stale);
                    self.reference_bins.remove(stale);
                }
            }
            for (feature, checks) in &report.data_quality {
                for statistic in monitor::data_quality::CHECKS {
                    if let Some(value) = checks.share(statistic) {
                        let labels = StatisticLabels {
                            model: model.clone(),
                            version: version.clone(),
                            feature: feature.clone(),
                            statistic,
                        };
                        self.data_quality.get_or_create(&labels).set(value);
                    }
                }
            }
            if let Some(estimated) = &report.estimated_quality {
                for statistic in monitor::stats::cbpe::METRICS {
                    if let Some(value) = estimated.metric(statistic) {
                        let labels = PredictionLabels { model: model.clone(), version: version.clone(), statistic };
                        self.estimated.get_or_create(&labels).set(value);
                    }
                }
            }
            if let Some(m) = &report.multivariate {
                let values = [m.reconstruction_error, m.reference_error, m.z, m.bounds.lower, m.bounds.upper];
                for (statistic, value) in MULTIVARIATE.into_iter().zip(values) {
                    let labels = PredictionLabels { model: model.clone(), version: version.clone(), statistic };
                    self.multivariate.get_or_create(&labels).set(value);
                }
            }
            if report.estimated_quality.is_none() {
                self.remove_estimated(&model, &version);
            }
            if report.multivariate.is_none() {
                self.remove_multivariate(&model, &version);
            }
            // A feature with series before but none now (the window fell below min_samples, or expired) loses them,
            // so no gauge shows a last value as if it were current.
            let before =
                self.features.lock().ok().and_then(|mut f| {
                    f.insert((model.clone(), version.clone()), report.columns.keys().cloned().collect())
                });
            for gone in before.unwrap_or_default().into_iter().filter(|f| !report.columns.contains_key(f)) {
                self.remove_feature(&model, &version, gone);
            }
        }

        fn remove_feature(&self, model: &str, version: &str, feature: String) {
            let labels = FeatureLabels { model: model.to_owned(), version: version.to_owned(), feature };
            self.drifted.remove(&labels);
            for statistic in monitor::data_quality::CHECKS {
                self.data_quality.remove(&StatisticLabels {
                    model: labels.model.clone(),
                    version: labels.version.clone(),
                    feature: labels.feature.clone(),
                    statistic,
                });
            }
            for statistic in STATISTICS {
                self.statistic.remove(&StatisticLabels {
                    model: labels.model.clone(),
                    version: labels.version.clone(),
                    feature: labels.feature.clone(),
                    statistic,
                });
            }
        }

        fn remove_estimated(&self, model: &str, version: &str) {
            for statistic in monitor::stats::cbpe::METRICS {
                let labels = PredictionLabels { model: model.to_owned(), version: version.to_owned(), statistic };
                self.estimated.remove(&labels);
            }
        }

        fn remove_multivariate(&self, model: &str, version: &str) {
            for statistic in MULTIVARIATE {
                let labels = PredictionLabels { model: model.to_owned(), version: version.to_owned(), statistic };
                self.multivariate.remove(&labels);
            }
        }
    }
}

/// The request path's series: requests by outcome, their durations, time queued, inference time and batch sizes per
/// model version, queue depth and capacity, loaded models, and an info series per version. Labels are bounded: model
/// and version only ever take the names of versions that were loaded (a request for an unknown model counts under
/// `model=""`), protocol and outcome take a handful of values. A version's handles are created when it is loaded, so
/// the request path only increments atomics (no label lookup, no allocation).
pub mod request_series {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use monitor::shards::{Sharded, ShardedCounter};
    use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
    use prometheus_client::metrics::{MetricType, TypedMetric};

    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    use crate::errors::ApiError;

    /// Where a request came in.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Protocol {
        /// REST (HTTP/1.1 or HTTP/2).
        Http = 0,
        /// gRPC.
        Grpc = 1,
    }

    const PROTOCOLS: [&str; 2] = ["http", "grpc"];
    /// success; rejected (queue full or over the in-flight limit: 503 / UNAVAILABLE); timeout (deadline passed);
    /// client_error (any other 4xx); error (inference failed: 500).
    const OUTCOMES: [&str; 5] = ["success", "rejected", "timeout", "client_error", "error"];

    /// Request durations, in seconds: a small model answers in 50-100 µs here, the dense one in a few ms, a queued
    /// request under load in tens of ms; the top buckets reach the 30 s default timeout. Fine at the bottom, where
    /// the p50 of small models lives, so `histogram_quantile` interpolates within a factor of 2.5 there.
    pub const DURATION_BUCKETS: [f64; 16] =
        [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0];
    /// Rows per model run: powers of two up to 1024, past the default max_batch_size (128).
    pub const BATCH_BUCKETS: [f64; 11] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

    fn duration_histogram() -> ShardedHistogram {
        ShardedHistogram::new(&DURATION_BUCKETS)
    }

    fn batch_histogram() -> ShardedHistogram {
        ShardedHistogram::new(&BATCH_BUCKETS)
    }

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct RequestLabels {
        model: String,
        version: String,
        protocol: &'static str,
        outcome: &'static str,
    }

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct ProtocolLabels {
        model: String,
        version: String,
        protocol: &'static str,
    }

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct VersionLabels {
        model: String,
        version: String,
    }

    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct InfoLabels {
        model: String,
        version: String,
        commit: String,
        digest: String,
    }

    /// Every family, registered once.
    #[derive(Debug, Clone)]
    pub struct RequestMetrics {
        requests: Family<RequestLabels, ShardedCounter>,
        duration: Family<ProtocolLabels, ShardedHistogram, fn() -> ShardedHistogram>,
        queue: Family<VersionLabels, ShardedHistogram, fn() -> ShardedHistogram>,
        inference: Family<VersionLabels, ShardedHistogram, fn() -> ShardedHistogram>,
        batch: Family<VersionLabels, ShardedHistogram, fn() -> ShardedHistogram>,
        depth: Family<VersionLabels, Gauge>,
        capacity: Family<VersionLabels, Gauge>,
        loaded: Gauge,
        info: Family<InfoLabels, Gauge<f64, AtomicU64>>,
        unresolved: VersionSeries,
        /// The (model, version) pairs with series, so those of versions no longer served can be removed.
        versions: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<(String, String)>>>,
        enabled: bool,
    }

    /// One model version's handles.
    #[derive(Debug, Clone)]
    pub struct VersionSeries {
        requests: [[ShardedCounter; 5]; 2],
        duration: [ShardedHistogram; 2],
        /// Time from queueing to the start of the run it joined, per request.
        queue: ShardedHistogram,
        /// Time of one model run (a whole batch).
        inference: ShardedHistogram,
        /// Rows in one model run.
        batch: ShardedHistogram,
        /// False when request series are off (`--no-request-metrics`): every observation returns at once.
        enabled: bool,
    }

    impl Default for RequestMetrics {
        fn default() -> Self {
            let mut metrics = Self { enabled: true, ..Self::disabled() };
            // Requests that resolved to no version are counted and timed under model=""; they never queue or run,
            // so their queue, inference and batch histograms stay out of the registry.
            let registered = metrics.for_version("", "");
            metrics.unresolved = VersionSeries {
                requests: registered.requests,
                duration: registered.duration,
                ..VersionSeries::detached()
            };
            let nobody = VersionLabels { model: String::new(), version: String::new() };
            metrics.queue.remove(&nobody);
            metrics.inference.remove(&nobody);
            metrics.batch.remove(&nobody);
            metrics
        }
    }

    impl RequestMetrics {
        /// Registers every family.
        pub fn register(&self, registry: &mut Registry) {
            registry.register(
                "vane_requests",
                "Inference requests by model version, protocol and outcome (success, rejected, timeout, \
                 client_error, error); model=\"\" for requests that named no served model or were refused before \
                 routing (load shed, edge timeout)",
                self.requests.clone(),
            );
            registry.register(
                "vane_request_duration_seconds",
                "Inference request duration from arrival to answer, by model version and protocol",
                self.duration.clone(),
            );
            registry.register(
                "vane_queue_duration_seconds",
                "Time a request waited in its model version's queue before its run started",
                self.queue.clone(),
            );
            registry.register(
                "vane_inference_duration_seconds",
                "Time of one model run (one batch) in ONNX Runtime",
                self.inference.clone(),
            );
            registry.register(
                "vane_batch_rows",
                "Rows in one model run (the batch the batcher formed)",
                self.batch.clone(),
            );
            registry.register("vane_queue_depth", "Requests waiting in a model version's queue", self.depth.clone());
            registry.register(
                "vane_queue_capacity",
                "Requests a model version's queue holds before refusing with 503",
                self.capacity.clone(),
            );
            registry.register("vane_models_loaded", "Model versions being served", self.loaded.clone());
            registry.register(
                "vane_model_info",
                "1 per served model version, with the commit it was deployed from and the model file's digest \
                 (sha256:<hex> from Git; size and mtime in a model directory)",
                self.info.clone(),
            );
        }

        /// Series that record nothing (`--no-request-metrics`); the scrape-time gauges still work.
        pub fn disabled() -> Self {
            Self {
                requests: Family::default(),
                duration: Family::new_with_constructor(duration_histogram),
                queue: Family::new_with_constructor(duration_histogram),
                inference: Family::new_with_constructor(duration_histogram),
                batch: Family::new_with_constructor(batch_histogram),
                depth: Family::default(),
                capacity: Family::default(),
                loaded: Gauge::default(),
                info: Family::default(),
                unresolved: VersionSeries { enabled: false, ..VersionSeries::detached() },
                versions: std::sync::Arc::default(),
                enabled: false,
            }
        }

        /// The handles of `model` version `version`.
        pub fn for_version(&self, model: &str, version: &str) -> VersionSeries {
            if !self.enabled {
                return VersionSeries { enabled: false, ..VersionSeries::detached() };
            }
            if !model.is_empty() {
                if let Ok(mut versions) = self.versions.lock() {
                    versions.insert((model.to_owned(), version.to_owned()));
                }
            }
            let labels = VersionLabels { model: model.to_owned(), version: version.to_owned() };
            let request = |protocol: &'static str, outcome: &'static str| {
                self.requests
                    .get_or_create(&RequestLabels {
                        model: model.to_owned(),
                        version: version.to_owned(),
                        protocol,
                        outcome,
                    })
                    .clone()
            };
            let duration = |protocol: &'static str| {
                self.duration
                    .get_or_create(&ProtocolLabels { model: model.to_owned(), version: version.to_owned(), protocol })
                    .clone()
            };
            VersionSeries {
                requests: PROTOCOLS.map(|p| OUTCOMES.map(|o| request(p, o))),
                duration: PROTOCOLS.map(duration),
                queue: self.queue.get_or_create(&labels).clone(),
                inference: self.inference.get_or_create(&labels).clone(),
                batch: self.batch.get_or_create(&labels).clone(),
                enabled: true,
            }
        }

        /// The handles for requests that resolved to no served version.
        pub fn unresolved(&self) -> &VersionSeries {
            &self.unresolved
        }

        /// Refreshes the gauges read from the served set, just before a scrape: queue depth and capacity per version,
        /// the number of versions, and one info series per version (series of versions no longer served go).
        pub fn refresh(&self, registry: &crate::registry::Registry) {
            let table = registry.snapshot();
            self.depth.clear();
            self.capacity.clear();
            self.info.clear();
            let mut loaded = 0;
            for name in table.names() {
                for version in table.versions(name) {
                    let Ok(model) = table.get(name, Some(&version.to_string())) else { continue };
                    loaded += 1;
                    let labels = VersionLabels { model: name.to_owned(), version: version.to_string() };
                    let stats = model.stats().snapshot();
                    self.depth.get_or_create(&labels).set(i64::try_from(stats.queued).unwrap_or(i64::MAX));
                    self.capacity.get_or_create(&labels).set(i64::try_from(model.queue_capacity()).unwrap_or(i64::MAX));
                    let info = InfoLabels {
                        model: name.to_owned(),
                        version: version.to_string(),
                        commit: table.revision().map(ToString::to_string).unwrap_or_default(),
                        digest: model.fingerprint().to_owned(),
                    };
                    self.info.get_or_create(&info).set(1.0);
                }
            }
            self.loaded.set(loaded);
            // Versions no longer served leave every series (a bounded label set; the counts since their last scrape
            // are not reported, which rate() over the remaining series does not miss).
            let gone: Vec<(String, String)> = match self.versions.lock() {
                Ok(mut versions) => {
                    let gone = versions
                        .iter()
                        .filter(|(m, v)| v.parse().map_or(true, |v: u64| !table.versions(m).contains(&v)))
                        .cloned()
                        .collect::<Vec<_>>();
                    for key in &gone {
                        versions.remove(key);
                    }
                    gone
                }
                Err(_) => Vec::new(),
            };
            for (model, version) in gone {
                self.remove(&model, &version);
            }
        }

        fn remove(&self, model: &str, version: &str) {
            let labels = VersionLabels { model: model.to_owned(), version: version.to_owned() };
            for family in [&self.queue, &self.inference, &self.batch] {
                family.remove(&labels);
            }
            for protocol in PROTOCOLS {
                self.duration.remove(&ProtocolLabels {
                    model: model.to_owned(),
                    version: version.to_owned(),
                    protocol,
                });
                for outcome in OUTCOMES {
                    self.requests.remove(&RequestLabels {
                        model: model.to_owned(),
                        version: version.to_owned(),
                        protocol,
                        outcome,
                    });
                }
            }
        }
    }

    impl VersionSeries {
        /// Handles not registered anywhere (before the registry's own exist).
        fn detached() -> Self {
            Self {
                requests: Default::default(),
                duration: [duration_histogram(), duration_histogram()],
                queue: duration_histogram(),
                inference: duration_histogram(),
                batch: batch_histogram(),
                enabled: true,
            }
        }

        /// A request's time in the queue.
        pub fn observe_queued(&self, seconds: f64) {
            if self.enabled {
                self.queue.observe(seconds);
            }
        }

        /// One model run: its rows and its time.
        pub fn observe_run(&self, rows: usize, seconds: f64) {
            if self.enabled {
                self.batch.observe(rows as f64);
                self.inference.observe(seconds);
            }
        }

        /// Counts one request and its duration.
        pub fn observe(&self, protocol: Protocol, result: Result<(), &ApiError>, seconds: f64) {
            if !self.enabled {
                return;
            }
            let outcome = match result {
                Ok(()) => 0,
                Err(
                    ApiError::QueueFull { .. }
                    | ApiError::Overloaded
                    | ApiError::NotReady
                    | ApiError::MemoryBudget { .. },
                ) => 1,
                Err(ApiError::Timeout { .. } | ApiError::DeadlineExceeded { .. }) => 2,
                Err(error) if error.status().is_client_error() => 3,
                Err(_) => 4,
            };
            self.requests[protocol as usize][outcome].inc();
            self.duration[protocol as usize].observe(seconds);
        }
    }

    /// Buckets a [`ShardedHistogram`] can have, +Inf included.
    const MAX_BUCKETS: usize = 17;

    /// One thread slot's part of a histogram: the sum's bits and each bucket's (not cumulative) count.
    #[derive(Debug, Default)]
    struct HistogramShard {
        sum: AtomicU64,
        buckets: [AtomicU64; MAX_BUCKETS],
    }

    /// A classic Prometheus histogram (the same buckets, sum and count as prometheus-client's, which takes a mutex
    /// per observation) kept per thread slot: an observation is two uncontended atomic additions on the observing
    /// core's own line. The count is the buckets' total, so a scrape is always consistent with its buckets; the sum
    /// may lag an observation being made.
    #[derive(Debug, Clone)]
    pub struct ShardedHistogram {
        bounds: &'static [f64],
        shards: Arc<Sharded<HistogramShard>>,
    }

    impl ShardedHistogram {
        /// A histogram with these upper bounds (ascending, fewer than [`MAX_BUCKETS`]) and +Inf.
        fn new(bounds: &'static [f64]) -> Self {
            assert!(bounds.len() < MAX_BUCKETS, "{} bounds do not fit", bounds.len());
            Self { bounds, shards: Arc::new(Sharded::new(HistogramShard::default)) }
        }

        /// Counts `value` in the first bucket whose bound it does not exceed (+Inf for NaN, as prometheus-client).
        pub fn observe(&self, value: f64) {
            let shard = self.shards.mine();
            let bucket = self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len());
            shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
            // Only this slot's threads write here, so the update almost never retries.
            let add = |bits| Some((f64::from_bits(bits) + value).to_bits());
            let _ = shard.sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, add);
        }

        /// The sum, the count and each bucket's (upper bound, count), as the encoder takes them.
        fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
            let mut buckets: Vec<(f64, u64)> =
                self.bounds.iter().copied().chain([f64::INFINITY]).map(|bound| (bound, 0)).collect();
            let mut sum = 0.0;
            for shard in self.shards.iter() {
                sum += f64::from_bits(shard.sum.load(Ordering::Relaxed));
                for (total, count) in buckets.iter_mut().zip(&shard.buckets) {
                    total.1 += count.load(Ordering::Relaxed);
                }
            }
            let count = buckets.iter().map(|b| b.1).sum();
            (sum, count, buckets)
        }
    }

    impl TypedMetric for ShardedHistogram {
        const TYPE: MetricType = MetricType::Histogram;
    }

    impl EncodeMetric for ShardedHistogram {
        fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
            let (sum, count, buckets) = self.totals();
            encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
        }

        fn metric_type(&self) -> MetricType {
            Self::TYPE
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The same text as prometheus-client's own histogram and counter for the same observations, from threads
        /// on different shards.
        #[test]
        fn sharded_series_encode_as_prometheus_clients_own() {
            use prometheus_client::registry::Registry;
            let values = [0.00005, 0.0003, 0.0003, 0.02, 7.0, 99.0, f64::NAN];
            let (sharded, counter) = (ShardedHistogram::new(&DURATION_BUCKETS), ShardedCounter::default());
            std::thread::scope(|scope| {
                for chunk in values.chunks(2) {
                    let (sharded, counter) = (&sharded, &counter);
                    scope.spawn(move || chunk.iter().for_each(|v| (sharded.observe(*v), counter.inc()).1));
                }
            });
            let plain = prometheus_client::metrics::histogram::Histogram::new(DURATION_BUCKETS);
            let plain_counter = prometheus_client::metrics::counter::Counter::<u64>::default();
            for v in values {
                plain.observe(v);
                plain_counter.inc();
            }
            fn text(
                h: impl prometheus_client::registry::Metric,
                c: impl prometheus_client::registry::Metric,
            ) -> String {
                let mut registry = Registry::default();
                registry.register("d", "durations", h);
                registry.register("r", "requests", c);
                let mut out = String::new();
                prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
                out
            }
            let (ours, theirs) = (text(sharded, counter), text(plain, plain_counter));
            assert_eq!(ours, theirs);
            assert!(ours.contains("d_count 7") && ours.contains("r_total 7"), "{ours}");
        }
    }
}
