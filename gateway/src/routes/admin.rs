//! Vane's own API beside the V2 protocol: reconcile status, the push webhook, and the admin calls.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use reconciler::controller::{SyncStatus, Trigger};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{json_response, AppState, HttpResponse};
use crate::errors::ApiError;

/// `GET /api/v1/status`: the sync state with ages, conditions, and the served models.
pub(super) fn status(state: &AppState) -> HttpResponse {
    #[derive(Serialize)]
    struct Status<'a> {
        mode: &'static str,
        ready: bool,
        conditions: Conditions,
        #[serde(skip_serializing_if = "Option::is_none")]
        sync: Option<&'a SyncStatus>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_applied_age_seconds: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        observed_age_seconds: Option<u64>,
        revision: Option<String>,
        models: Vec<ModelState>,
        loads: Loads,
    }
    /// Model-set loads: one at a time, a superseded one cancelled before its next version.
    #[derive(Serialize)]
    struct Loads {
        running: usize,
        cancelled: u64,
        /// Loads that started while another ran: a self-check, always 0.
        overlapped: u64,
    }
    #[derive(Serialize)]
    struct Conditions {
        ready: bool,
        reconciling: bool,
        stalled: bool,
        degraded: bool,
        /// Why it is degraded, in words, when it is.
        #[serde(skip_serializing_if = "Option::is_none")]
        degraded_reason: Option<String>,
    }
    #[derive(Serialize)]
    struct ModelState {
        name: String,
        versions: Vec<String>,
        state: &'static str,
    }
    let table = state.registry.snapshot();
    let models = table
        .names()
        .map(|name| ModelState {
            name: name.to_owned(),
            versions: table.versions(name).iter().map(u64::to_string).collect(),
            state: "READY",
        })
        .collect();
    let ready = state.registry.is_ready();
    let sync = state.controller.as_ref().map(|c| c.status().borrow().clone());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let age = |at: u64| now.saturating_sub(at) / 1000;
    let stalled = sync.as_ref().is_some_and(|s| {
        s.last_attempted
            .as_ref()
            .is_some_and(|a| a.reason.is_some() && a.commit.as_ref() != s.last_applied.as_ref().map(|c| &c.commit))
    });
    let unreachable = sync.as_ref().and_then(|s| s.remote_error.clone());
    let diverged = sync.as_ref().is_some_and(|s| s.diverged_from_head);
    // A rollout rolled back by its analysis: the branch head names a candidate that is not served.
    let rolled_back: Vec<String> = table
        .rollouts()
        .filter(|r| r.plan().phase == crate::rollout::Phase::RolledBack)
        .map(|r| {
            format!(
                "the rollout of {} version {} was rolled back; version {} serves until a new commit: {}",
                r.model,
                r.spec.candidate,
                r.spec.stable,
                r.stop_reason().unwrap_or_default()
            )
        })
        .collect();
    let source_reason = match (&unreachable, stalled, diverged) {
        (Some(error), _, _) => Some(format!(
            "the last sync could not finish (the remote or an artifact cannot be had now; retried with backoff), so \
             the last applied commit serves: {error}"
        )),
        (None, true, _) => Some("the branch head was refused; the last applied commit serves".to_owned()),
        (None, false, true) => {
            Some("rolled back by an admin call: serving an older commit than the branch head".into())
        }
        (None, false, false) => None,
    };
    // Every reason at once: the source's, then each rolled-back rollout's.
    let reasons: Vec<String> = source_reason.into_iter().chain(rolled_back).collect();
    let degraded_reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    let body = Status {
        mode: if state.controller.is_some() { "git" } else { "model_dir" },
        ready,
        conditions: Conditions {
            ready,
            reconciling: sync.as_ref().is_some_and(|s| s.reconciling),
            // The branch head was refused: the last good set serves, and the commit is not retried.
            stalled,
            // Serving something other than the branch head (rolled back, or the head is refused), or not knowing
            // the head (the remote cannot be read).
            degraded: degraded_reason.is_some(),
            degraded_reason,
        },
        sync: sync.as_ref(),
        last_applied_age_seconds: sync.as_ref().and_then(|s| s.last_applied.as_ref()).map(|c| age(c.at_unix_ms)),
        observed_age_seconds: sync.as_ref().and_then(|s| s.observed.as_ref()).map(|c| age(c.at_unix_ms)),
        revision: table.revision().map(|r| r.to_string()),
        models,
        loads: {
            let (running, cancelled, overlapped) = state.registry.load_counts();
            Loads { running, cancelled, overlapped }
        },
    };
    json_response(StatusCode::OK, &body)
}

/// `GET /api/v1/monitor/{model}`: the current window's statistics of every monitored version of `model`.
pub(super) fn monitor(state: &AppState, model: &str) -> Result<HttpResponse, ApiError> {
    let table = state.registry.snapshot();
    table.get(model, None)?;
    let (Some(monitor), true) = (&state.monitor, table.is_monitored(model)) else {
        return Err(ApiError::Disabled {
            what: "monitoring of this model",
            how: "declare spec.reference_data in its manifest (in a model directory: a monitoring block in its \
                  config.yaml and reference.csv beside it)",
        });
    };
    #[derive(Serialize)]
    struct MonitorView<'a> {
        model: &'a str,
        versions: Vec<&'a monitor::live::LiveReport>,
        quality: Vec<monitor::feedback::QualityReport>,
        observations_dropped: u64,
    }
    let reports: Vec<_> = monitor.reports().remove(model).map(|v| v.into_values().collect()).unwrap_or_default();
    let versions = reports.iter().map(std::convert::AsRef::as_ref).collect();
    let quality = monitor.feedback().reports(Some(model));
    let body = MonitorView { model, versions, quality, observations_dropped: monitor.counters().dropped.get() };
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /api/v1/alerts`: every drift alert the monitor tracks (pending, firing, recently resolved), newest first.
pub(super) fn alerts(state: &AppState) -> HttpResponse {
    #[derive(Serialize)]
    struct Alerts {
        alerts: Vec<monitor::alerts::Alert>,
    }
    let mut alerts = state.monitor.as_ref().map(monitor::live::Monitor::alerts).unwrap_or_default();
    // Rollbacks firing now (until a new commit replaces the rollout).
    let table = state.registry.snapshot();
    for rollout in table.rollouts().filter(|r| r.plan().phase == crate::rollout::Phase::RolledBack) {
        alerts.insert(0, crate::rollout::driver::rollback_alert(rollout, ""));
    }
    json_response(StatusCode::OK, &Alerts { alerts })
}

/// `GET /api/v1/rollouts`: every rollout of the served set, with its phase, step, counters, checks and decisions.
/// `?view=stops` lists only the stopped ones (rolled back or aborted), with their identity and reason: what peers
/// read, small whatever the number of rollouts and decisions.
pub(super) fn rollouts(state: &AppState, model: Option<&str>, stops: bool) -> Result<HttpResponse, ApiError> {
    #[derive(Serialize)]
    struct Rollouts {
        rollouts: Vec<crate::rollout::Report>,
    }
    #[derive(Serialize)]
    struct Stop {
        model: String,
        identity: String,
        phase: &'static str,
        reason: Option<String>,
    }
    #[derive(Serialize)]
    struct Stops {
        rollouts: Vec<Stop>,
    }
    let table = state.registry.snapshot();
    if let Some(model) = model {
        table.get(model, None)?;
    }
    if stops {
        let rollouts = table
            .rollouts()
            .filter(|r| model.is_none_or(|m| m == r.model))
            .filter(|r| matches!(r.plan().phase, crate::rollout::Phase::RolledBack | crate::rollout::Phase::Aborted))
            .map(|r| Stop {
                model: r.model.clone(),
                identity: r.identity.clone(),
                phase: r.plan().phase.as_str(),
                reason: r.stop_reason(),
            })
            .collect();
        return Ok(json_response(StatusCode::OK, &Stops { rollouts }));
    }
    let rollouts = table.rollouts().filter(|r| model.is_none_or(|m| m == r.model)).map(|r| r.report()).collect();
    Ok(json_response(StatusCode::OK, &Rollouts { rollouts }))
}

/// `POST /api/v1/rollouts/{model}/{promote|abort|pause|resume}`: a person's decision, taken at once (admin token).
/// The body may say why: `{"reason": "..."}`.
pub(super) async fn rollout_action(
    state: &AppState,
    model: &str,
    action: &str,
    body: &Bytes,
) -> Result<HttpResponse, ApiError> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Why {
        #[serde(default)]
        reason: Option<String>,
    }
    if !matches!(action, "promote" | "abort" | "pause" | "resume") {
        return Err(ApiError::RouteNotFound { path: format!("/api/v1/rollouts/{model}/{action}") });
    }
    let why: Why = if body.iter().all(u8::is_ascii_whitespace) {
        Why::default()
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson { message: e.to_string() })?
    };
    let table = state.registry.snapshot();
    table.get(model, None)?;
    let rollout = table.rollout(model).ok_or_else(|| ApiError::Conflict {
        reason: format!("model '{model}' has no rollout; add a rollout block to its manifest"),
    })?;
    let reason = why.reason.map(|r| r.chars().take(512).collect::<String>());
    // A decision that ends the rollout is written to the data dir: off the async threads.
    let (rollout, action) = (std::sync::Arc::clone(rollout), action.to_owned());
    let decision = tokio::task::spawn_blocking(move || rollout.operate(&action, "operator", reason))
        .await
        .map_err(|e| ApiError::Conflict { reason: format!("the decision could not be taken: {e}") })?
        .map_err(|reason| ApiError::Conflict { reason })?;
    Ok(json_response(StatusCode::OK, &decision))
}

/// `POST /api/v1/feedback`: ground truth for earlier predictions, by the request id they were made with (`id` in
/// the V2 request; rows of a batch are `id#0`, `id#1`, …). `{"model": m, "id": i, "label": l}` or
/// `{"model": m, "labels": [{"id": i, "label": l}, ...]}`; a label is a number or a boolean.
pub(super) fn feedback(state: &AppState, body: &Bytes) -> Result<HttpResponse, ApiError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Label {
        Number(f64),
        Bool(bool),
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct One {
        id: String,
        label: Label,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Feedback {
        model: String,
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        label: Option<Label>,
        #[serde(default)]
        labels: Vec<One>,
    }
    let bad = |message: String| ApiError::InvalidJson { message };
    let request: Feedback = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "{e} (expected {{\"model\": ..., \"id\": ..., \"label\": ...}} or {{\"model\": ..., \"labels\": [...]}})"
        ))
    })?;
    let mut labels = request.labels;
    match (request.id, request.label) {
        (Some(id), Some(label)) => labels.push(One { id, label }),
        (None, None) => {}
        _ => return Err(bad("\"id\" and \"label\" go together".to_owned())),
    }
    if labels.is_empty() {
        return Err(bad("no labels given".to_owned()));
    }
    state.registry.snapshot().get(&request.model, None)?;
    let Some(monitor) = &state.monitor else {
        return Err(ApiError::Disabled { what: "feedback", how: "serve with monitoring" });
    };
    let labels: Vec<(String, f64)> = labels
        .into_iter()
        .map(|l| {
            let value = match l.label {
                Label::Number(v) => v,
                Label::Bool(b) => f64::from(u8::from(b)),
            };
            (l.id, value)
        })
        .collect();
    let outcome = monitor.feedback().join(&request.model, &labels, SystemTime::now());
    for report in monitor.feedback().reports(Some(&request.model)) {
        state.monitor_metrics.record_quality(&report);
    }
    Ok(json_response(StatusCode::OK, &outcome))
}

/// `GET /dashboard`: the monitor for a person, one section per monitored model (`#model` anchors, which alerts
/// link to).
pub(super) fn dashboard(state: &AppState) -> HttpResponse {
    let table = state.registry.snapshot();
    let (reports, alerts, quality) = match &state.monitor {
        Some(monitor) => (monitor.reports(), monitor.alerts(), monitor.feedback().reports(None)),
        None => Default::default(),
    };
    let models: Vec<(String, Vec<std::sync::Arc<monitor::live::LiveReport>>)> = table
        .names()
        .filter(|name| table.is_monitored(name))
        .map(|name| (name.to_owned(), reports.get(name).map(|v| v.values().cloned().collect()).unwrap_or_default()))
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut response = http::Response::new(http_body_util::Full::new(Bytes::from(monitor::html::dashboard_page(
        &models, &alerts, &quality, now,
    ))));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

/// `POST /api/v1/hooks/git`: a push webhook from GitHub (`X-Hub-Signature-256`), Gitea (`X-Gitea-Signature`) or
/// GitLab (`X-Gitlab-Token`). A bad or missing signature gets 401 and triggers nothing; a push to another branch is
/// acknowledged and ignored.
pub(super) fn webhook(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<HttpResponse, ApiError> {
    let (Some(controller), Some(secret)) = (&state.controller, &state.webhook_secret) else {
        return Err(ApiError::Disabled {
            what: "the push webhook",
            how: "serve from --repo with VANE_WEBHOOK_SECRET set",
        });
    };
    if !signature_ok(secret.expose().as_bytes(), headers, body) {
        return Err(ApiError::Unauthorized { what: "webhook signature missing or wrong" });
    }
    // GitHub, Gitea and GitLab all send `ref` and `after` (the new head) in their push payloads.
    #[derive(Deserialize)]
    struct Push {
        #[serde(rename = "ref")]
        git_ref: Option<String>,
        after: Option<String>,
    }
    // A signed payload can be captured and replayed: each delivery is acted on once. (A replay with a new id still
    // cannot cancel a sync in flight unless the branch head really moved: the loop reads the remote first.)
    let delivery = ["x-github-delivery", "x-gitea-delivery", "x-gitlab-event-uuid", "x-gogs-delivery"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()));
    if delivery.is_some_and(|id| !controller.first_delivery(id)) {
        return Ok(accepted(false, "this delivery was received before; ignored"));
    }
    let wanted = format!("refs/heads/{}", controller.status().borrow().branch);
    let push = serde_json::from_slice::<Push>(body).ok();
    if push.as_ref().and_then(|p| p.git_ref.as_deref()).is_some_and(|r| r != wanted) {
        return Ok(accepted(false, "push to another branch; ignored"));
    }
    let queued = controller.pushed(push.as_ref().and_then(|p| p.after.as_deref()));
    Ok(accepted(true, if queued { "sync queued" } else { "a sync was already pending" }))
}

/// `POST /api/v1/sync`: an admin asks for a sync now.
pub(super) fn sync(state: &AppState, headers: &HeaderMap) -> Result<HttpResponse, ApiError> {
    let controller = admin(state, headers)?;
    let queued = controller.trigger(Trigger::Admin);
    Ok(accepted(true, if queued { "sync queued" } else { "a sync was already pending" }))
}

/// `POST /api/v1/rollback` with `{"commit": "<sha>"}`: back to an applied commit, from the local cache.
pub(super) async fn rollback(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<HttpResponse, ApiError> {
    let controller = admin(state, headers)?;
    #[derive(Deserialize)]
    struct Rollback {
        commit: String,
    }
    let request: Rollback = serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidJson { message: format!("{e} (expected {{\"commit\": \"<sha>\"}})") })?;
    controller.rollback(request.commit).await.map_err(|reason| ApiError::Conflict { reason })?;
    Ok(accepted(true, "rolled back; holding until the branch head changes"))
}

/// The reconcile loop, for a caller with the admin token (or any caller on a loopback-only server with no token).
fn admin<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
) -> Result<&'a reconciler::controller::ControllerHandle, ApiError> {
    state.tokens.check_headers(crate::auth::Gate::Admin, headers)?;
    state.controller.as_ref().ok_or(ApiError::Disabled { what: "sync and rollback", how: "serve from --repo" })
}

fn accepted(triggered: bool, message: &'static str) -> HttpResponse {
    #[derive(Serialize)]
    struct Accepted {
        triggered: bool,
        message: &'static str,
    }
    json_response(StatusCode::ACCEPTED, &Accepted { triggered, message })
}

fn signature_ok(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(token) = header("x-gitlab-token") {
        return constant_time_eq(token.as_bytes(), secret);
    }
    let signature =
        header("x-hub-signature-256").and_then(|v| v.strip_prefix("sha256=")).or_else(|| header("x-gitea-signature"));
    let Some(signature) = signature.and_then(|s| hex::decode(s).ok()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&signature).is_ok()
}

use crate::auth::constant_time_eq;

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn github_gitea_and_gitlab_signatures_are_checked() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut headers = HeaderMap::new();
        assert!(!signature_ok(b"s3cret", &headers, body), "no signature");
        headers.insert("x-hub-signature-256", format!("sha256={}", sign(b"s3cret", body)).parse().unwrap());
        assert!(signature_ok(b"s3cret", &headers, body));
        assert!(!signature_ok(b"other", &headers, body), "wrong secret");
        assert!(!signature_ok(b"s3cret", &headers, b"tampered"), "wrong body");
        let mut gitea = HeaderMap::new();
        gitea.insert("x-gitea-signature", sign(b"s3cret", body).parse().unwrap());
        assert!(signature_ok(b"s3cret", &gitea, body));
        let mut gitlab = HeaderMap::new();
        gitlab.insert("x-gitlab-token", "s3cret".parse().unwrap());
        assert!(signature_ok(b"s3cret", &gitlab, body));
        gitlab.insert("x-gitlab-token", "s3cre".parse().unwrap());
        assert!(!signature_ok(b"s3cret", &gitlab, body));
    }
}
