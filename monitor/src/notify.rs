//! Alert delivery, on its own thread so a slow receiver never holds up the monitor: Alertmanager's v2 API
//! (`POST /api/v2/alerts`, firing alerts re-sent every `resend_every` with an `endsAt` a few periods ahead, as
//! Prometheus does, and resolved ones sent once with their end) and generic JSON webhooks (`{"text": ...}`, which
//! Slack's incoming webhooks and most chat tools accept, plus the alerts themselves). The queue is bounded: when
//! full, a batch is dropped and counted. A failed POST is retried twice with a short backoff, then logged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use serde_json::json;

use crate::alerts::{Alert, State};

/// Where alerts go. Its `Debug` shows the hosts only: webhook URLs are secrets.
#[derive(Clone, Default)]
pub struct NotifyConfig {
    /// Alertmanager base URLs (`http://alertmanager:9093`); every one gets every alert, as Prometheus does.
    pub alertmanagers: Vec<String>,
    /// Generic webhook URLs.
    pub webhooks: Vec<String>,
    /// How often firing alerts are re-sent to Alertmanager.
    pub resend_every: Duration,
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts = |urls: &[String]| urls.iter().map(|u| destination(u).to_owned()).collect::<Vec<_>>();
        f.debug_struct("NotifyConfig")
            .field("alertmanagers", &hosts(&self.alertmanagers))
            .field("webhooks", &hosts(&self.webhooks))
            .field("resend_every", &self.resend_every)
            .finish()
    }
}

/// Delivery counters (Prometheus counters, registered by the gateway).
#[derive(Debug, Clone, Default)]
pub struct NotifyCounters {
    /// Deliveries that succeeded.
    pub sent: Counter,
    /// Deliveries that failed after retries.
    pub failed: Counter,
    /// Batches dropped because the delivery queue was full.
    pub dropped: Counter,
}

/// The handle the monitor thread uses.
#[derive(Clone)]
pub struct Notifier {
    sender: crossbeam_channel::Sender<Vec<Alert>>,
    counters: NotifyCounters,
}

impl Notifier {
    /// Starts the delivery thread; it stops when every handle is dropped. With no destination, alerts are only
    /// listed by the API.
    pub fn start(config: NotifyConfig) -> std::io::Result<Self> {
        let (sender, receiver) = crossbeam_channel::bounded(64);
        let counters = NotifyCounters::default();
        let thread_counters = counters.clone();
        std::thread::Builder::new()
            .name("vane-notify".into())
            .spawn(move || deliver(&receiver, &config, &thread_counters))?;
        Ok(Self { sender, counters })
    }

    /// Queues alerts whose state changed; never blocks.
    pub fn notify(&self, alerts: Vec<Alert>) {
        if alerts.is_empty() {
            return;
        }
        if self.sender.try_send(alerts).is_err() {
            self.counters.dropped.inc();
        }
    }

    /// The delivery counters.
    pub fn counters(&self) -> &NotifyCounters {
        &self.counters
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// An alert in Alertmanager's v2 form.
#[derive(Serialize)]
struct PostableAlert {
    labels: BTreeMap<&'static str, String>,
    annotations: BTreeMap<&'static str, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: String,
}

fn postable(alert: &Alert, resend_every: Duration) -> PostableAlert {
    let labels = BTreeMap::from([
        ("alertname", alert.name.to_owned()),
        ("model", alert.model.clone()),
        ("version", alert.version.to_string()),
        ("statistic", alert.statistic.clone()),
        ("severity", alert.severity.to_owned()),
    ]);
    let features: Vec<String> = alert.breaches.iter().map(|b| format!("{}={:.6}", b.feature, b.value)).collect();
    let mut annotations = BTreeMap::from([
        ("summary", alert.summary.clone()),
        ("description", format!("{} vs threshold {}: {}", alert.statistic, alert.threshold, features.join(", "))),
        ("dashboard", alert.dashboard.clone()),
    ]);
    if let Some(commit) = &alert.commit {
        annotations.insert("commit", commit.clone());
    }
    if let Some(digest) = &alert.model_sha256 {
        annotations.insert("model_sha256", digest.clone());
    }
    if let Some(digest) = &alert.data_sha256 {
        annotations.insert("reference_sha256", digest.clone());
    }
    annotations.insert("since", rfc3339(alert.since_unix_ms));
    annotations.insert("windows", alert.windows.to_string());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let ends = match alert.state {
        State::Resolved => alert.resolved_unix_ms.unwrap_or(now),
        // Four resend periods ahead: Alertmanager keeps it firing while re-sends keep coming.
        _ => now + 4 * u64::try_from(resend_every.as_millis()).unwrap_or(60_000),
    };
    PostableAlert {
        labels,
        annotations,
        starts_at: rfc3339(alert.fired_unix_ms.unwrap_or(alert.since_unix_ms)),
        ends_at: rfc3339(ends),
        generator_url: alert.dashboard.clone(),
    }
}

/// Where a delivery goes, as logs may show it: the host only. A chat webhook's path is its secret (Slack's
/// `/services/T.../B.../<secret>`), and a URL may carry credentials.
fn destination(url: &str) -> &str {
    let after = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after.split(['/', '?', '#']).next().unwrap_or_default();
    authority.rsplit('@').next().unwrap_or_default()
}

fn post(agent: &ureq::Agent, url: &str, body: &serde_json::Value, counters: &NotifyCounters) {
    for attempt in 0..3 {
        match agent.post(url).send_json(body) {
            Ok(response) if response.status().is_success() => {
                counters.sent.inc();
                return;
            }
            Ok(response) => {
                tracing::warn!(to = destination(url), status = %response.status(), attempt, "alert delivery refused")
            }
            Err(error) => tracing::warn!(to = destination(url), %error, attempt, "alert delivery failed"),
        }
        std::thread::sleep(Duration::from_millis(200 * (attempt + 1)));
    }
    counters.failed.inc();
}

fn deliver(receiver: &crossbeam_channel::Receiver<Vec<Alert>>, config: &NotifyConfig, counters: &NotifyCounters) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let resend_every = if config.resend_every.is_zero() { Duration::from_secs(60) } else { config.resend_every };
    // Firing alerts, re-sent to Alertmanager until they resolve.
    let mut firing: BTreeMap<(String, u64, String), Alert> = BTreeMap::new();
    let mut next_resend = Instant::now() + resend_every;
    loop {
        let batch = match receiver.recv_timeout(next_resend.saturating_duration_since(Instant::now())) {
            Ok(batch) => batch,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                next_resend = Instant::now() + resend_every;
                if !firing.is_empty() {
                    let alerts: Vec<PostableAlert> = firing.values().map(|a| postable(a, resend_every)).collect();
                    let body = serde_json::to_value(alerts).unwrap_or_default();
                    for url in &config.alertmanagers {
                        post(&agent, &format!("{}/api/v2/alerts", url.trim_end_matches('/')), &body, counters);
                    }
                }
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        // Pending alerts are not sent (Prometheus sends only firing ones).
        let sendable: Vec<&Alert> = batch.iter().filter(|a| a.state != State::Pending).collect();
        for alert in &sendable {
            let key = (alert.model.clone(), alert.version, alert.statistic.clone());
            if alert.state == State::Firing {
                firing.insert(key, (*alert).clone());
            } else {
                firing.remove(&key);
            }
        }
        if sendable.is_empty() {
            continue;
        }
        let alerts: Vec<PostableAlert> = sendable.iter().map(|a| postable(a, resend_every)).collect();
        let body = serde_json::to_value(alerts).unwrap_or_default();
        for url in &config.alertmanagers {
            post(&agent, &format!("{}/api/v2/alerts", url.trim_end_matches('/')), &body, counters);
        }
        let text: Vec<String> = sendable
            .iter()
            .map(|a| {
                format!(
                    "[{}] {} — {}",
                    if a.state == State::Firing { "FIRING" } else { "RESOLVED" },
                    a.summary,
                    a.dashboard
                )
            })
            .collect();
        let webhook = json!({"text": text.join("\n"), "alerts": sendable});
        for url in &config.webhooks {
            post(&agent, url, &webhook, counters);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::destination;

    #[test]
    fn delivery_logs_name_the_host_only() {
        assert_eq!(destination("https://hooks.slack.com/services/T0/B0/s3cret"), "hooks.slack.com");
        assert_eq!(destination("http://user:pw@alertmanager:9093/api/v2/alerts"), "alertmanager:9093");
        let config = super::NotifyConfig {
            webhooks: vec!["https://hooks.slack.com/services/T0/B0/s3cret".into()],
            ..super::NotifyConfig::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
