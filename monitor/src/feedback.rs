//! Ground truth arriving after the prediction: predictions with a request id wait in a bounded store (per model
//! version, oldest evicted first, dropped after a TTL), labels posted later are joined to them by id, and the
//! joined pairs of the last `window` feed the quality metrics of `stats::quality` (the same as `vane drift`'s).
//! Label coverage and label delay (feedback time − prediction time) are reported beside them.
//!
//! Memory: at most `capacity` waiting predictions per model version (id + value + time, about 64 bytes plus the id,
//! kept once: the map and the eviction order share it) and `window` joined pairs (32 bytes each). The gateway caps a
//! request id at 256 bytes, so a version's store is bounded in bytes by `capacity` x about 340.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::stats::numeric::pairwise_sum;
use crate::stats::quality::{self, Classification, Regression};

/// What a model predicts, for quality.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// A score for the positive class; predicted positive when score ≥ threshold. Labels: 1/0 or true/false.
    BinaryClassification {
        /// The decision threshold.
        threshold: f64,
    },
    /// A number.
    Regression,
}

/// How long and how many predictions wait for their labels, and how many joined pairs the metrics use.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackSettings {
    /// The task.
    pub task: Task,
    /// Predictions waiting per model version.
    pub capacity: usize,
    /// How long a prediction waits for its label.
    pub ttl: Duration,
    /// Joined pairs the metrics are computed over.
    pub window: usize,
}

#[derive(Debug)]
struct Waiting {
    value: f64,
    at: SystemTime,
}

#[derive(Debug)]
struct Joined {
    value: f64,
    truth: f64,
    delay_ms: u64,
}

#[derive(Debug)]
struct VersionStore {
    settings: FeedbackSettings,
    waiting: HashMap<Arc<str>, Waiting>,
    order: VecDeque<Arc<str>>,
    joined: VecDeque<Joined>,
    predictions: u64,
    labelled: u64,
    expired: u64,
}

/// Quality of one model version over its joined window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    /// The model.
    pub model: String,
    /// The version.
    pub version: u64,
    /// Predictions with an id stored since start.
    pub predictions: u64,
    /// Of those, joined to a label.
    pub labelled: u64,
    /// labelled / predictions.
    pub label_coverage: f64,
    /// Predictions that expired (TTL or capacity) without a label.
    pub expired: u64,
    /// Mean time from prediction to label over the window, in seconds.
    pub mean_label_delay_seconds: Option<f64>,
    /// Pairs in the window.
    pub window_pairs: usize,
    /// Classification metrics, for classifiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classification: Option<Classification>,
    /// Regression metrics, for regressors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression: Option<Regression>,
}

/// The outcome of one feedback call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JoinOutcome {
    /// Labels joined to a waiting prediction.
    pub joined: usize,
    /// Ids with no waiting prediction (unknown, already labelled, or expired).
    pub unknown: Vec<String>,
}

/// The store of every monitored model version.
#[derive(Debug, Default)]
pub struct FeedbackStore {
    versions: Mutex<BTreeMap<(String, u64), VersionStore>>,
}

fn elapsed_ms(from: SystemTime, to: SystemTime) -> u64 {
    to.duration_since(from).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl FeedbackStore {
    /// Keeps predictions of `model` version `version` (one value per row, rows `id`, `id#1`, `id#2`, … for a batch)
    /// until their labels arrive. The settings come with the first prediction of the version.
    pub fn record(
        &self,
        (model, version): (&str, u64),
        settings: &FeedbackSettings,
        id: &str,
        values: &[f64],
        at: SystemTime,
    ) {
        let Ok(mut versions) = self.versions.lock() else { return };
        let store = versions.entry((model.to_owned(), version)).or_insert_with(|| VersionStore {
            settings: settings.clone(),
            waiting: HashMap::new(),
            order: VecDeque::new(),
            joined: VecDeque::new(),
            predictions: 0,
            labelled: 0,
            expired: 0,
        });
        for (row, &value) in values.iter().enumerate() {
            let key: Arc<str> = if values.len() == 1 { id.into() } else { format!("{id}#{row}").into() };
            if store.waiting.insert(Arc::clone(&key), Waiting { value, at }).is_none() {
                store.order.push_back(key);
                store.predictions += 1;
            }
        }
        store.evict(at);
    }

    /// Joins `labels` (id → truth) for `model`, to every version of it that holds each id, at `now`: during a
    /// rollout both variants may have answered the same request (a shadow, a comparison run), and each is judged on
    /// the label.
    pub fn join(&self, model: &str, labels: &[(String, f64)], now: SystemTime) -> JoinOutcome {
        let mut outcome = JoinOutcome::default();
        let Ok(mut versions) = self.versions.lock() else { return outcome };
        // A prediction past its TTL is not joined, even if nothing evicted it yet.
        for store in versions.values_mut() {
            store.evict(now);
        }
        for (id, truth) in labels {
            let mut found = false;
            for (_, store) in versions.iter_mut().filter(|((name, _), _)| name == model) {
                let Some(waiting) = store.waiting.remove(id.as_str()) else { continue };
                if store.joined.len() == store.settings.window.max(1) {
                    store.joined.pop_front();
                }
                store.joined.push_back(Joined {
                    value: waiting.value,
                    truth: *truth,
                    delay_ms: elapsed_ms(waiting.at, now),
                });
                store.labelled += 1;
                found = true;
            }
            if found {
                outcome.joined += 1;
            } else {
                outcome.unknown.push(id.clone());
            }
        }
        outcome
    }

    /// The quality of every version of `model` (all models when `None`).
    pub fn reports(&self, model: Option<&str>) -> Vec<QualityReport> {
        let Ok(versions) = self.versions.lock() else { return Vec::new() };
        versions
            .iter()
            .filter(|((name, _), _)| model.is_none_or(|m| m == name))
            .map(|((name, version), store)| store.report(name, *version))
            .collect()
    }

    /// Forgets versions no longer served.
    pub fn retain(&self, served: impl Fn(&str, u64) -> bool) {
        if let Ok(mut versions) = self.versions.lock() {
            versions.retain(|(name, version), _| served(name, *version));
        }
    }
}

impl VersionStore {
    fn evict(&mut self, now: SystemTime) {
        let ttl = self.settings.ttl;
        while let Some(id) = self.order.front() {
            let stale = match self.waiting.get(&**id) {
                // Already joined: its place in the order is spent.
                None => true,
                Some(w) => {
                    self.waiting.len() > self.settings.capacity || elapsed_ms(w.at, now) > ttl.as_millis() as u64
                }
            };
            if !stale {
                break;
            }
            if let Some(id) = self.order.pop_front() {
                if self.waiting.remove(&id).is_some() {
                    self.expired += 1;
                }
            }
        }
    }

    fn report(&self, model: &str, version: u64) -> QualityReport {
        let delays: Vec<f64> = self.joined.iter().map(|j| j.delay_ms as f64 / 1000.0).collect();
        let (classification, regression) = match self.settings.task {
            _ if self.joined.is_empty() => (None, None),
            Task::BinaryClassification { threshold } => {
                let labels: Vec<Option<bool>> = self.joined.iter().map(|j| Some(j.truth >= 0.5)).collect();
                let scores: Vec<Option<f64>> = self.joined.iter().map(|j| Some(j.value)).collect();
                (Some(quality::classification(&labels, &scores, threshold)), None)
            }
            Task::Regression => {
                let targets: Vec<Option<f64>> = self.joined.iter().map(|j| Some(j.truth)).collect();
                let predictions: Vec<Option<f64>> = self.joined.iter().map(|j| Some(j.value)).collect();
                (None, Some(quality::regression(&targets, &predictions)))
            }
        };
        QualityReport {
            model: model.to_owned(),
            version,
            predictions: self.predictions,
            labelled: self.labelled,
            label_coverage: if self.predictions == 0 { 0.0 } else { self.labelled as f64 / self.predictions as f64 },
            expired: self.expired,
            mean_label_delay_seconds: (!delays.is_empty()).then(|| pairwise_sum(&delays) / delays.len() as f64),
            window_pairs: self.joined.len(),
            classification,
            regression,
        }
    }
}

/// Unix milliseconds of `time`.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(capacity: usize, ttl: u64) -> FeedbackSettings {
        FeedbackSettings {
            task: Task::BinaryClassification { threshold: 0.5 },
            capacity,
            ttl: Duration::from_secs(ttl),
            window: 100,
        }
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    #[test]
    fn labels_join_by_id_and_batch_rows_by_index_with_coverage_and_delay() {
        let store = FeedbackStore::default();
        store.record(("m", 1), &settings(10, 3600), "a", &[0.9], at(0));
        store.record(("m", 1), &settings(10, 3600), "b", &[0.2, 0.7], at(0));
        let outcome = store.join("m", &[("a".into(), 1.0), ("b#1".into(), 0.0), ("zzz".into(), 1.0)], at(30));
        assert_eq!(outcome, JoinOutcome { joined: 2, unknown: vec!["zzz".into()] });
        let report = &store.reports(Some("m"))[0];
        assert_eq!((report.predictions, report.labelled, report.window_pairs), (3, 2, 2));
        assert!((report.label_coverage - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(report.mean_label_delay_seconds, Some(30.0));
        let q = report.classification.as_ref().unwrap();
        assert_eq!((q.confusion.tp, q.confusion.fp), (1, 1));
        // A label for an id already joined is unknown the second time.
        assert_eq!(store.join("m", &[("a".into(), 1.0)], at(31)).unknown, ["a"]);
    }

    #[test]
    fn waiting_predictions_expire_by_ttl_and_capacity() {
        let store = FeedbackStore::default();
        for i in 0..5 {
            store.record(("m", 1), &settings(3, 60), &format!("p{i}"), &[0.5], at(i));
        }
        // Capacity 3: p0 and p1 were evicted.
        assert_eq!(store.join("m", &[("p0".into(), 1.0)], at(10)).unknown, ["p0"]);
        assert_eq!(store.reports(None)[0].expired, 2);
        // TTL 60 s: at 200 s everything waiting has expired.
        let outcome = store.join("m", &[("p4".into(), 1.0)], at(200));
        assert_eq!(outcome.joined, 0);
        assert_eq!(store.reports(None)[0].expired, 5);
    }
}
