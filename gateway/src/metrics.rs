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
        /// The features each version's series were set for, so a retired version's series can all be removed.
        features: Arc<Mutex<FeaturesByVersion>>,
    }

    /// The feature names of each (model, version) with series.
    type FeaturesByVersion = HashMap<(String, String), Vec<String>>;

    /// The statistics exported per column, by gauge label.
    const STATISTICS: [&str; 7] =
        ["psi", "js_distance", "missing_share", "ks_pvalue", "wasserstein_normed", "chi2_pvalue", "drift_score"];
    /// The quality metrics exported.
    const QUALITY: [&str; 10] =
        ["label_coverage", "accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse", "r2", "mean_error"];

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
            let features = self.features.lock().ok().and_then(|mut f| f.remove(&(model.clone(), version.clone())));
            for feature in features.unwrap_or_default() {
                let labels = FeatureLabels { model: model.clone(), version: version.clone(), feature };
                self.drifted.remove(&labels);
                for statistic in STATISTICS {
                    self.statistic.remove(&StatisticLabels {
                        model: model.clone(),
                        version: version.clone(),
                        feature: labels.feature.clone(),
                        statistic,
                    });
                }
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
            if let Ok(mut features) = self.features.lock() {
                features.insert((model, version), report.columns.keys().cloned().collect());
            }
        }
    }
}
