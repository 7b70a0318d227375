//! Alerts from the live reports: rules from the manifest's thresholds, each condition debounced by a `for`
//! duration on the way in and on the way out, with a hysteresis band so a value hovering at the threshold does not
//! flap. States: pending (condition holds, not yet for `for`), firing, resolved (clear for `for` after firing).
//!
//! One alert per model version and rule: feature rules (`psi`, `js_distance`, `ks_p_value`, `wasserstein_normed`,
//! `chi2_p_value`, `missing_share`) list every feature past the threshold with its value; `dataset_drift_share`
//! fires on the share of drifted features; `prediction_<statistic>` (e.g. `prediction_psi`) on the drift of the
//! model's output against the reference predictions; quality rules (`accuracy`, `precision`, `recall`, `f1`,
//! `roc_auc`, `r2` below the threshold, `mae`, `rmse` above it) on the metrics of labelled predictions, once the
//! labelled window holds `min_samples` pairs. Labels stay bounded (model, version, rule, severity); the feature list
//! is in the annotations. The engine is pure: it is given the time, so its lifecycle is tested on a fake clock.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::drift::NumericStat;
use crate::feedback::QualityReport;
use crate::live::LiveReport;

/// Which way a statistic is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Drift when the value is above the threshold (distances, PSI, missing share).
    Above,
    /// Drift when the value is below the threshold (p-values).
    Below,
}

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Each feature's statistic.
    Features,
    /// The share of drifted features.
    Dataset,
    /// The prediction column's statistic (the rule's name without `prediction_`).
    Prediction,
    /// A quality metric of the labelled predictions.
    Quality,
    /// A quality metric estimated from the window's scores (the rule's name without `estimated_`).
    Estimated,
    /// The window's multivariate drift, in standard errors of a window its size (`multivariate_z`).
    Multivariate,
    /// Each feature's share of cells failing a data-quality check (`data_<check>_share`).
    DataQuality,
}

/// A rule: a statistic held against a threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The statistic's name, as in the manifest.
    pub statistic: String,
    /// The threshold.
    pub threshold: f64,
    direction: Direction,
    target: Target,
}

/// The feature statistics a rule may name (and, prefixed with `prediction_`, apply to the prediction).
const FEATURE_STATISTICS: [&str; 6] =
    ["psi", "js_distance", "ks_p_value", "wasserstein_normed", "chi2_p_value", "missing_share"];

/// Quality metrics that alert when they fall below the threshold.
const QUALITY_FLOORS: [&str; 6] = ["accuracy", "precision", "recall", "f1", "roc_auc", "r2"];
/// Quality metrics that alert when they rise above the threshold.
const QUALITY_CEILINGS: [&str; 2] = ["mae", "rmse"];
/// Estimated quality metrics (`estimated_<metric>`), alerting below the threshold.
const ESTIMATED: [&str; 6] = crate::stats::cbpe::METRICS;

/// The hysteresis band, as a share: a condition clears only once the value is back inside the threshold by 10% of
/// the smaller of the threshold's magnitude and its distance to the statistic's best value (0 for distances, shares
/// and errors; 1 for p-values, quality scores and r2). Measured from the best value, the band can never push the
/// clearing point out of the statistic's range: a floor of 0.95 accuracy clears at 0.955 (a band of 10% of the
/// threshold would have needed 1.045, so it could never resolve), a threshold of 0 clears at 0, and a negative r2
/// floor clears above it, not below.
const HYSTERESIS: f64 = 0.1;

impl Rule {
    /// A rule for `statistic` at `threshold`; an unknown name is an error listing the known ones.
    pub fn new(statistic: &str, threshold: f64) -> Result<Self, String> {
        let drift_direction = |name: &str| match name {
            "ks_p_value" | "chi2_p_value" => Direction::Below,
            _ => Direction::Above,
        };
        let (direction, target) = if statistic == "dataset_drift_share" {
            (Direction::Above, Target::Dataset)
        } else if FEATURE_STATISTICS.contains(&statistic) {
            (drift_direction(statistic), Target::Features)
        } else if let Some(inner) = statistic.strip_prefix("prediction_").filter(|s| FEATURE_STATISTICS.contains(s)) {
            (drift_direction(inner), Target::Prediction)
        } else if QUALITY_FLOORS.contains(&statistic) {
            (Direction::Below, Target::Quality)
        } else if QUALITY_CEILINGS.contains(&statistic) {
            (Direction::Above, Target::Quality)
        } else if statistic.strip_prefix("estimated_").is_some_and(|m| ESTIMATED.contains(&m)) {
            (Direction::Below, Target::Estimated)
        } else if statistic == "multivariate_z" {
            (Direction::Above, Target::Multivariate)
        } else if data_check(statistic).is_some() {
            (Direction::Above, Target::DataQuality)
        } else {
            return Err(format!(
                "unknown threshold {statistic:?}; known: {}, dataset_drift_share, prediction_<one of those>, {}, {}, \
                 estimated_<one of {}>, multivariate_z, data_<one of {}>_share",
                FEATURE_STATISTICS.join(", "),
                QUALITY_FLOORS.join(", "),
                QUALITY_CEILINGS.join(", "),
                ESTIMATED.join(", "),
                crate::data_quality::CHECKS.join(", ")
            ));
        };
        let (low, high) = match (direction, statistic) {
            (Direction::Below, "r2") => (f64::NEG_INFINITY, 1.0),
            (
                _,
                "psi"
                | "wasserstein_normed"
                | "prediction_psi"
                | "prediction_wasserstein_normed"
                | "mae"
                | "rmse"
                | "multivariate_z",
            ) => (0.0, f64::INFINITY),
            _ => (0.0, 1.0),
        };
        if !(low..=high).contains(&threshold) {
            let range = match (low.is_finite(), high.is_finite()) {
                (true, true) => format!("from {low} to {high}"),
                (true, false) => format!("{low} or more"),
                _ => format!("at most {high}"),
            };
            return Err(format!("threshold {statistic:?} is {threshold}; it must be {range}"));
        }
        Ok(Self { statistic: statistic.to_owned(), threshold, direction, target })
    }

    /// The statistic's best value: no drift, no error, a perfect score.
    fn best(&self) -> f64 {
        match self.direction {
            Direction::Above => 0.0,
            Direction::Below => 1.0,
        }
    }

    /// How far inside the threshold a value must come back to clear (see [`HYSTERESIS`]).
    fn band(&self) -> f64 {
        HYSTERESIS * self.threshold.abs().min((self.best() - self.threshold).abs())
    }

    /// The rules of a manifest's thresholds; none given means Evidently's verdict on the dataset (share ≥ 0.5).
    pub fn from_thresholds(thresholds: &BTreeMap<String, f64>) -> Result<Vec<Self>, String> {
        if thresholds.is_empty() {
            return Ok(vec![Self::new("dataset_drift_share", crate::drift::DRIFT_SHARE)?]);
        }
        thresholds.iter().map(|(name, value)| Self::new(name, *value)).collect()
    }

    /// Past the threshold. The best value never is, so a threshold at it (`missing_share: 0`) means "any at all".
    fn breached(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value >= self.threshold && value > self.best(),
            Direction::Below => value < self.threshold,
        }
    }

    /// Back inside the threshold by the band. The best value always is, so every alert can resolve.
    fn clear(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value < self.threshold - self.band() || value <= self.best(),
            Direction::Below => value >= self.threshold + self.band() || value >= self.best(),
        }
    }

    fn severity(&self) -> &'static str {
        // One feature or the output drifting is a ticket; the dataset drifting or quality measurably dropping pages.
        // Estimated quality pages like measured quality: it is the harm, known before the labels. Multivariate
        // drift is drift, not harm: a ticket, like one feature's.
        match self.target {
            Target::Dataset | Target::Quality | Target::Estimated => "page",
            Target::Features | Target::Prediction | Target::Multivariate | Target::DataQuality => "ticket",
        }
    }

    /// The dashboard section that shows what the rule looks at (its anchor is `<model>-v<version>-<section>`).
    pub fn section(&self) -> &'static str {
        match self.target {
            Target::Features | Target::Dataset => "drift",
            Target::Prediction => "prediction",
            Target::Quality | Target::Estimated => "quality",
            Target::Multivariate => "multivariate",
            Target::DataQuality => "data-quality",
        }
    }

    fn alert_name(&self) -> &'static str {
        match self.target {
            Target::Features => "VaneFeatureDrift",
            Target::Dataset => "VaneDatasetDrift",
            Target::Prediction => "VanePredictionDrift",
            Target::Quality => "VaneQualityDrop",
            Target::Estimated => "VaneEstimatedQualityDrop",
            Target::Multivariate => "VaneMultivariateDrift",
            Target::DataQuality => "VaneDataQuality",
        }
    }
}

/// An alert's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The condition holds, not yet for `for`.
    Pending,
    /// The condition has held for `for`.
    Firing,
    /// It fired, then was clear for `for`.
    Resolved,
}

/// A feature past its threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breach {
    /// The feature, or `dataset` for the dataset rule.
    pub feature: String,
    /// Its value.
    pub value: f64,
}

/// One alert, as `GET /api/v1/alerts` lists it and as it is sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// `VaneFeatureDrift`, `VaneDatasetDrift`, `VanePredictionDrift` or `VaneQualityDrop`.
    pub name: &'static str,
    /// The model.
    pub model: String,
    /// The version.
    pub version: u64,
    /// The commit that deployed it.
    pub commit: Option<String>,
    /// The statistic.
    pub statistic: String,
    /// Its threshold.
    pub threshold: f64,
    /// `ticket` or `page`.
    pub severity: &'static str,
    /// The state.
    pub state: State,
    /// What is past the threshold now (the last breaches seen, once it clears).
    pub breaches: Vec<Breach>,
    /// When the condition began (Unix milliseconds).
    pub since_unix_ms: u64,
    /// When it fired, if it did.
    pub fired_unix_ms: Option<u64>,
    /// When it resolved, if it did.
    pub resolved_unix_ms: Option<u64>,
    /// One line for a person: what, where, how much, since when, which model and reference bytes.
    pub summary: String,
    /// Consecutive windows the condition has held in.
    pub windows: u32,
    /// The sha256 of the model version's bytes.
    pub model_sha256: Option<String>,
    /// The sha256 of its reference data.
    pub data_sha256: Option<String>,
    /// Where to look: the dashboard section that shows it.
    pub dashboard: String,
}

#[derive(Debug)]
struct Tracked {
    alert: Alert,
    /// When the condition last became clear while firing.
    clear_since: Option<SystemTime>,
    /// The evaluation (its time) last counted in `alert.windows`.
    last_window: u64,
}

/// How long a condition must hold before its alert fires: for a duration (`for`) and for a number of consecutive
/// windows (evaluations with new rows), both. A window only counts once, however many ticks look at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// `for`.
    pub duration: Duration,
    /// Consecutive windows (at least 1).
    pub windows: u32,
}

impl From<Duration> for Hold {
    fn from(duration: Duration) -> Self {
        Self { duration, windows: 1 }
    }
}

/// The alert engine of one process.
#[derive(Debug, Default)]
pub struct Engine {
    tracked: BTreeMap<(String, u64, String), Tracked>,
    /// The base URL links point to (the dashboard).
    pub base_url: String,
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The check a `data_<check>_share` rule names.
fn data_check(statistic: &str) -> Option<&'static str> {
    let check = statistic.strip_prefix("data_")?.strip_suffix("_share")?;
    crate::data_quality::CHECKS.into_iter().find(|c| *c == check)
}

fn feature_value(rule: &Rule, column: &crate::drift::ColumnReport) -> Option<f64> {
    statistic_value(&rule.statistic, column)
}

fn statistic_value(statistic: &str, column: &crate::drift::ColumnReport) -> Option<f64> {
    match (statistic, column) {
        ("psi", c) => c.psi.as_ref().map(|p| p.value),
        ("js_distance", c) => c.js_distance,
        ("missing_share", c) => Some(c.missing.current.share),
        ("ks_p_value", crate::drift::ColumnReport { ks: NumericStat::Value(ks), .. }) => Some(ks.pvalue),
        ("chi2_p_value", crate::drift::ColumnReport { chi2: NumericStat::Value(chi2), .. }) => Some(chi2.pvalue),
        ("wasserstein_normed", crate::drift::ColumnReport { wasserstein: NumericStat::Value(w), .. }) => Some(w.normed),
        _ => None,
    }
}

impl Engine {
    /// An engine whose alerts link to `base_url` (e.g. `http://vane:8080`).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self { tracked: BTreeMap::new(), base_url: base_url.into() }
    }

    /// Evaluates `rules` on `report` (and the quality of labelled predictions, if any) at `now`, with the debounce
    /// `hold`; returns the alerts whose state changed.
    pub fn evaluate(
        &mut self,
        report: &LiveReport,
        quality: Option<&QualityReport>,
        rules: &[Rule],
        hold: impl Into<Hold>,
        now: SystemTime,
    ) -> Vec<Alert> {
        let hold = hold.into();
        let mut changed = Vec::new();
        // Quality is judged on the labelled window, which fills at its own pace.
        let quality = quality.filter(|q| q.window_pairs >= report.min_samples.max(1));
        for rule in rules {
            // The value of each thing the rule looks at; a rule with nothing to look at yet is not stepped (a firing
            // alert does not resolve because labels stopped coming).
            let values: Vec<(String, f64)> = match rule.target {
                _ if rule.target != Target::Quality && !report.enough_samples => continue,
                Target::Dataset => match &report.dataset_drift {
                    Some(d) => vec![("dataset".to_owned(), d.share_of_drifted_columns)],
                    None => continue,
                },
                Target::Features => report
                    .columns
                    .iter()
                    .filter_map(|(name, column)| Some((name.clone(), feature_value(rule, column)?)))
                    .collect(),
                Target::Prediction => {
                    let inner = rule.statistic.trim_start_matches("prediction_");
                    match report.prediction_drift.as_ref().and_then(|p| statistic_value(inner, &p.report)) {
                        Some(value) => vec![("prediction".to_owned(), value)],
                        None => continue,
                    }
                }
                Target::Quality => match quality.and_then(|q| quality_value(&rule.statistic, q)) {
                    Some(value) => vec![(rule.statistic.clone(), value)],
                    None => continue,
                },
                Target::Estimated => {
                    let metric = rule.statistic.trim_start_matches("estimated_");
                    match report.estimated_quality.as_ref().and_then(|q| q.metric(metric)) {
                        Some(value) => vec![(rule.statistic.clone(), value)],
                        None => continue,
                    }
                }
                Target::DataQuality => {
                    let check = data_check(&rule.statistic).unwrap_or_default();
                    report.data_quality.iter().filter_map(|(name, q)| Some((name.clone(), q.share(check)?))).collect()
                }
                // Either way out of the bounds is drift: an error far below the reference's (a feature gone constant)
                // as much as one far above it.
                Target::Multivariate => match &report.multivariate {
                    Some(m) => vec![("multivariate".to_owned(), m.z.abs())],
                    None => continue,
                },
            };
            // Window size: a feature's drift statistic past its threshold counts only when the test Evidently picks for
            // the window's size agrees the feature drifted (a p-value test up to 1,000 rows, a distance above).
            // A small window's PSI is mostly noise, and a large window's p-value flags effects nobody would act on.
            let size_appropriate = |feature: &str| {
                rule.target != Target::Features
                    || rule.statistic == "missing_share"
                    || report.columns.get(feature).and_then(|c| c.drift.as_ref()).is_some_and(|d| d.drifted)
            };
            let breaches: Vec<Breach> = values
                .iter()
                .filter(|(feature, value)| rule.breached(*value) && size_appropriate(feature))
                .map(|(feature, value)| Breach { feature: feature.clone(), value: *value })
                .collect();
            // Clear only when every value is back inside the band, not merely under the threshold; a value the
            // size-appropriate test does not back counts as clear (it could not fire now either).
            let all_clear = values.iter().all(|(feature, value)| rule.clear(*value) || !size_appropriate(feature));
            let key = (report.model.clone(), report.version, rule.statistic.clone());
            let context = Context { report, quality };
            if let Some(alert) = self.step(key, rule, &context, breaches, all_clear, hold, now) {
                changed.push(alert);
            }
        }
        changed
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        key: (String, u64, String),
        rule: &Rule,
        context: &Context<'_>,
        breaches: Vec<Breach>,
        all_clear: bool,
        hold: Hold,
        now: SystemTime,
    ) -> Option<Alert> {
        let now_ms = unix_ms(now);
        // A window is identified by the rows observed so far: an evaluation with no new rows (rows expiring, a
        // later tick) is not another window.
        let window = context.report.rows_observed;
        let (windows_needed, hold) = (hold.windows.max(1), hold.duration);
        match self.tracked.get_mut(&key) {
            // Nothing tracked, or resolved: a breach starts a new alert.
            None | Some(Tracked { alert: Alert { state: State::Resolved, .. }, .. }) => {
                if breaches.is_empty() {
                    return None;
                }
                let alert = self.new_alert(rule, context, breaches, now_ms);
                self.tracked.insert(key.clone(), Tracked { alert, clear_since: None, last_window: window });
                let tracked = self.tracked.get_mut(&key)?;
                if hold.is_zero() && windows_needed <= 1 {
                    tracked.alert.state = State::Firing;
                    tracked.alert.fired_unix_ms = Some(now_ms);
                }
                Some(tracked.alert.clone())
            }
            Some(tracked) => {
                let holding = !breaches.is_empty();
                let alert = &mut tracked.alert;
                if holding {
                    alert.breaches = breaches;
                    alert.summary = summary(rule, context, &alert.breaches, alert.since_unix_ms);
                    if tracked.last_window != window {
                        tracked.last_window = window;
                        alert.windows = alert.windows.saturating_add(1);
                    }
                }
                match alert.state {
                    // Pending needs the condition to hold without a break.
                    State::Pending if !holding => {
                        self.tracked.remove(&key);
                        None
                    }
                    State::Pending => {
                        let since = UNIX_EPOCH + Duration::from_millis(alert.since_unix_ms);
                        if now.duration_since(since).unwrap_or_default() >= hold && alert.windows >= windows_needed {
                            alert.state = State::Firing;
                            alert.fired_unix_ms = Some(now_ms);
                            return Some(alert.clone());
                        }
                        None
                    }
                    // Firing needs every value back inside the hysteresis band, for `hold`, to resolve.
                    State::Firing if all_clear => {
                        let clear_since = *tracked.clear_since.get_or_insert(now);
                        if now.duration_since(clear_since).unwrap_or_default() >= hold {
                            alert.state = State::Resolved;
                            alert.resolved_unix_ms = Some(now_ms);
                            return Some(alert.clone());
                        }
                        None
                    }
                    State::Firing => {
                        tracked.clear_since = None;
                        None
                    }
                    State::Resolved => None,
                }
            }
        }
    }

    fn new_alert(&self, rule: &Rule, context: &Context<'_>, breaches: Vec<Breach>, now_ms: u64) -> Alert {
        let report = context.report;
        Alert {
            name: rule.alert_name(),
            model: report.model.clone(),
            version: report.version,
            commit: report.commit.clone(),
            statistic: rule.statistic.clone(),
            threshold: rule.threshold,
            severity: rule.severity(),
            state: State::Pending,
            summary: summary(rule, context, &breaches, now_ms),
            breaches,
            since_unix_ms: now_ms,
            fired_unix_ms: None,
            resolved_unix_ms: None,
            windows: 1,
            model_sha256: report.model_sha256.clone(),
            data_sha256: report.data_sha256.clone(),
            dashboard: format!("{}/dashboard#{}-v{}-{}", self.base_url, report.model, report.version, rule.section()),
        }
    }

    /// Every alert not resolved, and resolved ones still remembered, newest first.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut alerts: Vec<Alert> = self.tracked.values().map(|t| t.alert.clone()).collect();
        alerts.sort_by_key(|a| std::cmp::Reverse(a.since_unix_ms));
        alerts
    }

    /// Forgets the alerts of model versions no longer served.
    pub fn retain_versions(&mut self, served: impl Fn(&str, u64) -> bool) {
        self.tracked.retain(|(model, version, _), _| served(model, *version));
    }
}

/// What an alert is about: the drift report and, for quality rules, the labelled predictions.
struct Context<'a> {
    report: &'a LiveReport,
    quality: Option<&'a QualityReport>,
}

fn quality_value(metric: &str, quality: &QualityReport) -> Option<f64> {
    if let Some(c) = &quality.classification {
        return c.metric(metric);
    }
    let r = quality.regression.as_ref()?;
    match metric {
        "mae" => r.mae,
        "rmse" => r.rmse,
        "r2" => r.r2,
        _ => None,
    }
}

/// One line for a person: what changed and by how much ([`what`]), since when, and which model bytes.
fn summary(rule: &Rule, context: &Context<'_>, breaches: &[Breach], since_unix_ms: u64) -> String {
    let since = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(since_unix_ms));
    let digest = match (&context.report.model_sha256, &context.report.data_sha256) {
        (Some(model), Some(data)) => format!(", model sha256:{}, reference sha256:{}", short(model), short(data)),
        (Some(model), None) => format!(", model sha256:{}", short(model)),
        (None, Some(data)) => format!(", reference sha256:{}", short(data)),
        (None, None) => String::new(),
    };
    format!("{}; since {since}{digest}", what(rule, context, breaches))
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

fn what(rule: &Rule, context: &Context<'_>, breaches: &[Breach]) -> String {
    let report = context.report;
    let commit = report.commit.as_deref().map(|c| format!(" (commit {})", &c[..c.len().min(12)])).unwrap_or_default();
    let where_ = format!("{} v{}{commit}", report.model, report.version);
    let window = format!("over the last {} predictions", report.window_rows);
    let comparison = match rule.direction {
        Direction::Above => "above",
        Direction::Below => "below",
    };
    let value = breaches.first().map_or(f64::NAN, |b| b.value);
    match (rule.target, context.quality) {
        (Target::Quality, Some(q)) => {
            return format!(
                "{where_}: {} {value:.4} {comparison} {} over the last {} labelled predictions (label coverage \
                 {:.0}%)",
                rule.statistic,
                rule.threshold,
                q.window_pairs,
                q.label_coverage * 100.0
            );
        }
        (Target::Estimated, _) => {
            let calibration = report.estimated_quality.as_ref().map_or("", |q| match q.calibration {
                crate::stats::cbpe::Calibration::Isotonic => ", isotonic calibration",
                _ => ", uncalibrated scores",
            });
            return format!(
                "{where_}: {} estimated at {value:.4} from the scores alone, {comparison} {} {window} (no labels \
                 needed{calibration})",
                rule.statistic.trim_start_matches("estimated_"),
                rule.threshold
            );
        }
        (Target::DataQuality, _) => {
            let check = data_check(&rule.statistic).unwrap_or_default();
            let mut worst: Vec<&Breach> = breaches.iter().collect();
            worst.sort_by(|a, b| b.value.total_cmp(&a.value));
            let listed: Vec<String> = worst
                .iter()
                .take(5)
                .map(|b| {
                    let example = report
                        .data_quality
                        .get(&b.feature)
                        .and_then(|q| q.check(check))
                        .and_then(|s| s.example.as_deref())
                        .map(|e| format!(" (e.g. {e:?})"))
                        .unwrap_or_default();
                    format!("{} {:.1}%{example}", b.feature, b.value * 100.0)
                })
                .collect();
            let more = if worst.len() > 5 { format!(" and {} more", worst.len() - 5) } else { String::new() };
            let what = match check {
                "missing" => "missing values",
                "out_of_range" => "values outside the reference's range",
                "unseen_category" => "categories the reference never had",
                _ => "values of the wrong type",
            };
            return format!(
                "{where_}: data quality: {what} above {:.1}% {window} in {} feature(s): {}{more}",
                rule.threshold * 100.0,
                breaches.len(),
                listed.join(", ")
            );
        }
        (Target::Multivariate, _) => {
            let m = report.multivariate.as_ref();
            return format!(
                "{where_}: the features' joint distribution moved: PCA reconstruction error {:.4} against the \
                 reference's {:.4}, {:+.1} standard errors from it (threshold {} either way) {window}",
                m.map_or(f64::NAN, |m| m.reconstruction_error),
                m.map_or(f64::NAN, |m| m.reference_error),
                m.map_or(f64::NAN, |m| m.z),
                rule.threshold
            );
        }
        (Target::Prediction, _) => {
            let column = report.prediction_drift.as_ref().map_or("", |p| p.column.as_str());
            return format!(
                "{where_}: the predictions drifted from the reference's '{column}': {} {value:.4} {comparison} {} \
                 {window}",
                rule.statistic.trim_start_matches("prediction_"),
                rule.threshold
            );
        }
        _ => {}
    }
    if rule.target == Target::Dataset {
        let drifted = report.dataset_drift.as_ref().map(|d| d.drifted_columns.join(", ")).unwrap_or_default();
        return format!(
            "{where_}: {:.0}% of features drifted {window} (threshold {:.0}%): {drifted}",
            value * 100.0,
            rule.threshold * 100.0
        );
    }
    let mut worst: Vec<&Breach> = breaches.iter().collect();
    worst.sort_by(|a, b| match rule.direction {
        Direction::Above => b.value.total_cmp(&a.value),
        Direction::Below => a.value.total_cmp(&b.value),
    });
    let listed: Vec<String> = worst.iter().take(5).map(|b| format!("{} {:.4}", b.feature, b.value)).collect();
    let more = if worst.len() > 5 { format!(" and {} more", worst.len() - 5) } else { String::new() };
    format!(
        "{where_}: {} feature(s) with {} {comparison} {} {window}: {}{more}",
        breaches.len(),
        rule.statistic,
        rule.threshold,
        listed.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::DatasetDrift;

    fn report(share: f64) -> LiveReport {
        LiveReport {
            model: "churn".into(),
            version: 3,
            commit: Some("0123456789abcdef".into()),
            data_sha256: None,
            model_sha256: Some("feedbeef".repeat(8)),
            window_rows: 500,
            rows_observed: 500,
            window_size: 500,
            min_samples: 100,
            window_start_unix_ms: None,
            evaluated_unix_ms: 0,
            enough_samples: true,
            columns: BTreeMap::new(),
            dataset_drift: Some(DatasetDrift {
                number_of_columns: 10,
                number_of_drifted_columns: (share * 10.0) as usize,
                share_of_drifted_columns: share,
                drift_share: 0.5,
                dataset_drift: share >= 0.5,
                drifted_columns: vec!["age".into(), "income".into()],
            }),
            prediction_drift: None,
            estimated_quality: None,
            multivariate: None,
            data_quality: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    #[test]
    fn an_alert_is_pending_for_its_for_duration_then_fires_then_resolves_after_clearing_for_as_long() {
        let rules = Rule::from_thresholds(&BTreeMap::new()).unwrap();
        let hold = Duration::from_secs(60);
        let mut engine = Engine::new("http://vane:8080");
        let changed = engine.evaluate(&report(0.6), None, &rules, hold, at(0));
        assert_eq!(changed[0].state, State::Pending);
        assert!(engine.evaluate(&report(0.7), None, &rules, hold, at(30)).is_empty(), "still pending");
        let fired = engine.evaluate(&report(0.6), None, &rules, hold, at(60));
        assert_eq!(fired[0].state, State::Firing);
        assert_eq!((fired[0].name, fired[0].severity), ("VaneDatasetDrift", "page"));
        assert!(
            fired[0].summary.starts_with("churn v3 (commit 0123456789ab): 60% of features drifted"),
            "{}",
            fired[0].summary
        );
        assert_eq!(fired[0].dashboard, "http://vane:8080/dashboard#churn-v3-drift");
        // Clear, then a relapse before `for` has passed: it keeps firing.
        assert!(engine.evaluate(&report(0.1), None, &rules, hold, at(70)).is_empty());
        assert!(engine.evaluate(&report(0.6), None, &rules, hold, at(100)).is_empty());
        assert!(engine.evaluate(&report(0.1), None, &rules, hold, at(110)).is_empty());
        assert!(engine.evaluate(&report(0.1), None, &rules, hold, at(160)).is_empty(), "clear for 50 s only");
        let resolved = engine.evaluate(&report(0.1), None, &rules, hold, at(170));
        assert_eq!(resolved[0].state, State::Resolved);
        assert_eq!(resolved[0].resolved_unix_ms, Some(unix_ms(at(170))));
        assert_eq!(engine.alerts()[0].state, State::Resolved, "remembered for the alert list");
    }

    #[test]
    fn a_condition_that_breaks_while_pending_never_fires_and_the_band_holds_a_firing_alert() {
        let rules = Rule::from_thresholds(&BTreeMap::new()).unwrap();
        let hold = Duration::from_secs(60);
        let mut engine = Engine::new("");
        engine.evaluate(&report(0.6), None, &rules, hold, at(0));
        assert!(engine.evaluate(&report(0.4), None, &rules, hold, at(30)).is_empty());
        assert!(engine.alerts().is_empty(), "a broken pending condition is forgotten");
        assert!(engine.evaluate(&report(0.6), None, &rules, hold, at(40))[0].state == State::Pending);
        engine.evaluate(&report(0.6), None, &rules, hold, at(100));
        // 0.47 is under the 0.5 threshold but inside the 10% band (0.45): not clear, so never resolves.
        for t in [110, 200, 300] {
            assert!(engine.evaluate(&report(0.47), None, &rules, hold, at(t)).is_empty());
        }
        assert_eq!(engine.alerts()[0].state, State::Firing);
    }

    #[test]
    fn unknown_thresholds_are_refused_by_name() {
        let thresholds = BTreeMap::from([("psi".to_owned(), 0.2), ("kl".to_owned(), 0.1)]);
        let error = Rule::from_thresholds(&thresholds).unwrap_err();
        assert!(error.starts_with("unknown threshold \"kl\"; known: psi, js_distance"), "{error}");
        assert!(error.contains("prediction_<one of those>, accuracy"), "{error}");
        assert!(Rule::new("prediction_kl", 0.1).is_err());
    }

    /// Every rule, at every threshold in its documented range, can both fire (unless the threshold is the best value
    /// of a floor: nothing is below a perfect score) and resolve; no value is past the threshold and clear at once;
    /// and the clearing point lies inside the statistic's range, on the good side of the threshold.
    #[test]
    fn every_threshold_in_range_can_fire_and_resolve() {
        let names = FEATURE_STATISTICS
            .iter()
            .map(|s| (*s).to_owned())
            .chain(FEATURE_STATISTICS.iter().map(|s| format!("prediction_{s}")))
            .chain(QUALITY_FLOORS.iter().chain(&QUALITY_CEILINGS).map(|s| (*s).to_owned()))
            .chain(ESTIMATED.iter().map(|m| format!("estimated_{m}")))
            .chain(crate::data_quality::CHECKS.iter().map(|c| format!("data_{c}_share")))
            .chain(["dataset_drift_share".to_owned(), "multivariate_z".to_owned()]);
        let mut checked = 0;
        for name in names {
            let (low, high) = match name.as_str() {
                "r2" => (-10.0, 1.0),
                n if n.ends_with("psi")
                    || n.ends_with("wasserstein_normed")
                    || matches!(n, "mae" | "rmse" | "multivariate_z") =>
                {
                    (0.0, 50.0)
                }
                _ => (0.0, 1.0),
            };
            for step in 0..=1000 {
                let threshold = low + (high - low) * f64::from(step) / 1000.0;
                let rule = Rule::new(&name, threshold).unwrap_or_else(|e| panic!("{name} {threshold}: {e}"));
                let best = rule.best();
                assert!(rule.clear(best), "{name} at {threshold}: the best value {best} must clear");
                assert!(!rule.breached(best), "{name} at {threshold}: the best value must not breach");
                let worst = match rule.direction {
                    Direction::Above => high.max(threshold) + 1.0,
                    Direction::Below => low - 1.0,
                };
                if !(rule.direction == Direction::Below && threshold >= best) {
                    assert!(rule.breached(worst), "{name} at {threshold}: {worst} must breach");
                }
                // Dense sweep of values: never both, and the band sits on the good side of the threshold.
                for v in 0..=400 {
                    let value = (low - 1.0) + (high - low + 2.0) * f64::from(v) / 400.0;
                    assert!(
                        !(rule.breached(value) && rule.clear(value)),
                        "{name} at {threshold}: {value} is both past the threshold and clear"
                    );
                }
                let band = rule.band();
                assert!(band >= 0.0 && band <= (best - threshold).abs() + f64::EPSILON, "{name} {threshold}: {band}");
                checked += 1;
            }
        }
        assert_eq!(checked, 32 * 1001);
        // The cases that could never resolve with a band proportional to the threshold.
        assert!(Rule::new("accuracy", 0.95).unwrap().clear(0.96));
        assert!(Rule::new("missing_share", 0.0).unwrap().clear(0.0));
        assert!(Rule::new("missing_share", 0.0).unwrap().breached(0.001));
        let r2 = Rule::new("r2", -0.5).unwrap();
        assert!(r2.breached(-0.52) && !r2.clear(-0.52) && !r2.clear(-0.47) && r2.clear(-0.44));
        // Outside the range is refused by name.
        assert_eq!(Rule::new("accuracy", 1.5).unwrap_err(), "threshold \"accuracy\" is 1.5; it must be from 0 to 1");
        assert_eq!(Rule::new("psi", -0.1).unwrap_err(), "threshold \"psi\" is -0.1; it must be 0 or more");
        assert_eq!(Rule::new("r2", 2.0).unwrap_err(), "threshold \"r2\" is 2; it must be at most 1");
        assert!(Rule::new("psi", f64::NAN).is_err());
    }

    fn quality(accuracy: f64, pairs: usize) -> QualityReport {
        let confusion = crate::stats::quality::Confusion { tp: 1, fp: 0, tn: 1, fn_: 0 };
        QualityReport {
            model: "churn".into(),
            version: 3,
            predictions: 1000,
            labelled: pairs as u64,
            label_coverage: pairs as f64 / 1000.0,
            expired: 0,
            mean_label_delay_seconds: None,
            window_pairs: pairs,
            classification: Some(crate::stats::quality::Classification {
                n_rows: pairs as u64,
                n_labelled: pairs as u64,
                label_coverage: 1.0,
                n_evaluated: pairs as u64,
                confusion,
                rates: crate::stats::quality::Rates { accuracy, precision: 0.9, recall: 0.9, f1: 0.9 },
                roc_auc: Some(0.9),
                positive_rate_true: 0.5,
                positive_rate_predicted: 0.5,
                estimated_from_scores_uncalibrated: crate::stats::quality::Estimated {
                    n_scored: pairs as u64,
                    rates: crate::stats::quality::Rates { accuracy, precision: 0.9, recall: 0.9, f1: 0.9 },
                },
            }),
            regression: None,
        }
    }

    #[test]
    fn a_quality_drop_pages_once_enough_labels_are_in_and_holds_while_labels_stop() {
        let rules = vec![Rule::new("accuracy", 0.8).unwrap(), Rule::new("mae", 1.0).unwrap()];
        let hold = Duration::from_secs(60);
        let mut engine = Engine::new("");
        let drifting = report(0.0);
        // 50 labelled pairs are fewer than min_samples (100): no verdict on so few.
        assert!(engine.evaluate(&drifting, Some(&quality(0.5, 50)), &rules, hold, at(0)).is_empty());
        let pending = engine.evaluate(&drifting, Some(&quality(0.7, 200)), &rules, hold, at(10));
        assert_eq!(pending.len(), 1, "mae does not apply to a classifier");
        assert_eq!(
            (pending[0].name, pending[0].state, pending[0].severity),
            ("VaneQualityDrop", State::Pending, "page")
        );
        let fired = engine.evaluate(&drifting, Some(&quality(0.72, 300)), &rules, hold, at(70));
        assert_eq!(fired[0].state, State::Firing);
        assert_eq!(
            fired[0].summary,
            "churn v3 (commit 0123456789ab): accuracy 0.7200 below 0.8 over the last 300 labelled predictions \
             (label coverage 30%); since 2027-01-15T08:00:10Z, model sha256:feedbeeffeed"
        );
        // No labels any more: nothing to judge, so the alert keeps firing rather than resolving on silence.
        assert!(engine.evaluate(&drifting, None, &rules, hold, at(200)).is_empty());
        assert_eq!(engine.alerts()[0].state, State::Firing);
        // Clearing needs the band above 0.8: 10% of its distance to a perfect 1 (0.82). 0.81 is past the threshold but
        // inside the band, so it keeps firing.
        assert!(engine.evaluate(&drifting, Some(&quality(0.81, 300)), &rules, hold, at(300)).is_empty());
        assert!(engine.evaluate(&drifting, Some(&quality(0.81, 300)), &rules, hold, at(400)).is_empty());
        engine.evaluate(&drifting, Some(&quality(0.9, 300)), &rules, hold, at(410));
        let resolved = engine.evaluate(&drifting, Some(&quality(0.9, 300)), &rules, hold, at(470));
        assert_eq!(resolved[0].state, State::Resolved);
    }

    #[test]
    fn prediction_drift_fires_on_the_prediction_column_only() {
        use crate::drift::{column_report, ColumnKind, Sides, Values};
        let rules = vec![Rule::new("prediction_psi", 0.2).unwrap()];
        let mut drifting = report(0.0);
        let reference = Values::Numeric((0..500).map(|i| Some(f64::from(i) / 500.0)).collect());
        let current = Values::Numeric((0..500).map(|i| Some(0.5 + f64::from(i) / 1000.0)).collect());
        drifting.prediction_drift = Some(crate::live::PredictionDrift {
            column: "score".into(),
            report: column_report(ColumnKind::Numeric, &Sides { reference, current }),
        });
        let mut engine = Engine::new("");
        let fired = engine.evaluate(&drifting, None, &rules, Duration::ZERO, at(0));
        assert_eq!(
            (fired[0].name, fired[0].state, fired[0].severity),
            ("VanePredictionDrift", State::Firing, "ticket")
        );
        assert_eq!(fired[0].breaches[0].feature, "prediction");
        assert!(
            fired[0].summary.contains("the predictions drifted from the reference's 'score': psi"),
            "{}",
            fired[0].summary
        );
        // Without prediction drift in the report (no prediction column), the rule has nothing to judge.
        assert!(Engine::new("").evaluate(&report(0.0), None, &rules, Duration::ZERO, at(0)).is_empty());
    }
}

#[cfg(test)]
mod fewer_pages {
    use super::*;
    use crate::drift::{column_report, ColumnKind, Sides, Values};

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    /// A report after `observed` rows with one shifted feature whose Evidently verdict is `drifted`.
    fn report(observed: u64, drifted: bool) -> LiveReport {
        let reference = Values::Numeric((0..200).map(|i| Some(f64::from(i) / 10.0)).collect());
        let current = Values::Numeric((0..200).map(|i| Some(f64::from(i) / 10.0 + 5.0)).collect());
        let mut column = column_report(ColumnKind::Numeric, &Sides { reference, current });
        assert!(column.drift.as_ref().unwrap().drifted && column.psi.as_ref().unwrap().value > 0.5);
        column.drift.as_mut().unwrap().drifted = drifted;
        LiveReport {
            model: "churn".into(),
            version: 3,
            commit: None,
            data_sha256: None,
            model_sha256: None,
            window_rows: 200,
            rows_observed: observed,
            window_size: 200,
            min_samples: 100,
            window_start_unix_ms: None,
            evaluated_unix_ms: observed * 1000,
            enough_samples: true,
            columns: BTreeMap::from([("age".to_owned(), column)]),
            dataset_drift: None,
            prediction_drift: None,
            estimated_quality: None,
            multivariate: None,
            data_quality: BTreeMap::new(),
            history: Vec::new(),
        }
    }

    #[test]
    fn a_condition_fires_after_n_consecutive_windows_and_ticks_on_one_window_count_once() {
        let rules = vec![Rule::new("psi", 0.2).unwrap()];
        let hold = Hold { duration: Duration::ZERO, windows: 3 };
        let mut engine = Engine::new("");
        let first = engine.evaluate(&report(200, true), None, &rules, hold, at(0));
        assert_eq!((first[0].state, first[0].windows), (State::Pending, 1));
        // The same window looked at on later ticks, or evaluated again with no new rows (rows expiring), is still
        // one window.
        for tick in 1..5 {
            assert!(engine.evaluate(&report(200, true), None, &rules, hold, at(tick)).is_empty());
        }
        assert!(engine.evaluate(&report(250, true), None, &rules, hold, at(5)).is_empty(), "two windows");
        let fired = engine.evaluate(&report(300, true), None, &rules, hold, at(10));
        assert_eq!((fired[0].state, fired[0].windows), (State::Firing, 3));
    }

    #[test]
    fn multivariate_drift_fires_out_of_the_bounds_either_way() {
        let rules = vec![Rule::new("multivariate_z", 3.0).unwrap()];
        let with_z = |observed: u64, z: f64| {
            let mut r = report(observed, true);
            r.multivariate = Some(crate::live::LiveMultivariate {
                reconstruction_error: 1.0 + z * 0.01,
                reference_error: 1.0,
                z,
                bounds: crate::stats::multivariate::Bounds { lower: 0.97, upper: 1.03 },
                pca_components: 2,
            });
            r
        };
        let mut engine = Engine::new("");
        assert!(engine.evaluate(&with_z(200, 2.9), None, &rules, Duration::ZERO, at(0)).is_empty());
        // Far below the reference's error (a feature gone constant reconstructs too well): drift too.
        let fired = engine.evaluate(&with_z(250, -4.0), None, &rules, Duration::ZERO, at(5));
        assert_eq!((fired[0].name, fired[0].breaches[0].value), ("VaneMultivariateDrift", 4.0));
        assert!(fired[0].summary.contains("-4.0 standard errors"), "{}", fired[0].summary);
    }

    #[test]
    fn a_drift_statistic_past_its_threshold_pages_only_when_the_size_appropriate_test_agrees() {
        let rules = vec![Rule::new("psi", 0.2).unwrap()];
        let mut engine = Engine::new("");
        // PSI far past 0.2, but the test for a window this size (K-S up to 1,000 rows) says no drift: no alert.
        assert!(engine.evaluate(&report(200, false), None, &rules, Duration::ZERO, at(0)).is_empty());
        let fired = engine.evaluate(&report(250, true), None, &rules, Duration::ZERO, at(5));
        assert_eq!((fired[0].state, fired[0].breaches[0].feature.as_str()), (State::Firing, "age"));
        // Firing, then the test stops backing it while PSI stays high: the alert resolves (it could not fire now).
        let hold = Duration::from_secs(60);
        assert!(engine.evaluate(&report(300, false), None, &rules, hold, at(10)).is_empty(), "clear for 0 s");
        let resolved = engine.evaluate(&report(350, false), None, &rules, hold, at(70));
        assert_eq!(resolved[0].state, State::Resolved);
    }
}
