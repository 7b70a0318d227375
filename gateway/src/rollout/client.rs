//! `vane rollout status|promote|abort|pause|resume --server URL`: the human in the loop, over the admin API. The
//! admin token comes from `VANE_ADMIN_TOKEN` (never the command line). Answers are bounded (1 MiB, 10 s).

use std::time::Duration;

use serde_json::Value;

/// The largest answer read.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// List the rollouts.
    Status,
    /// Promote the candidate now.
    Promote,
    /// Send all traffic to the stable now.
    Abort,
    /// Hold the split where it is.
    Pause,
    /// Go on from a pause.
    Resume,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Status => "status",
            Action::Promote => "promote",
            Action::Abort => "abort",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }
}

/// Runs `action` against the server at `server` and returns what to print: the rollouts in lines of text (or the
/// JSON with `json`), or the decision taken.
pub fn run(
    server: &str,
    action: Action,
    model: Option<&str>,
    reason: Option<&str>,
    token: Option<&str>,
    json: bool,
) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let base = server.trim_end_matches('/');
    let mut response = match (action, model) {
        (Action::Status, None) => agent.get(format!("{base}/api/v1/rollouts")).call(),
        (Action::Status, Some(model)) => agent.get(format!("{base}/api/v1/rollouts/{model}")).call(),
        (_, None) => return Err(format!("say which model to {}: vane rollout {} MODEL", action.verb(), action.verb())),
        (_, Some(model)) => {
            let mut request = agent.post(format!("{base}/api/v1/rollouts/{model}/{}", action.verb()));
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            request.send_json(serde_json::json!({ "reason": reason }))
        }
    }
    .map_err(|e| format!("{base}: {e}"))?;
    let status = response.status();
    let text = response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_string()
        .map_err(|e| format!("{base}: {e}"))?;
    let body: Value = serde_json::from_str(&text).map_err(|e| format!("{base} answered {status}, not JSON: {e}"))?;
    if !status.is_success() {
        return Err(format!("{base} answered {status}: {}", body["error"].as_str().unwrap_or(&text)));
    }
    if json {
        return Ok(serde_json::to_string_pretty(&body).unwrap_or(text));
    }
    Ok(match action {
        Action::Status => render(&body),
        _ => {
            format!("{}: {}", body["action"].as_str().unwrap_or_default(), body["reason"].as_str().unwrap_or_default())
        }
    })
}

/// The rollouts as a person reads them: one block per model, its phase and step, the checks, the last decision.
pub fn render(listing: &Value) -> String {
    let rollouts = listing["rollouts"].as_array().map(Vec::as_slice).unwrap_or_default();
    if rollouts.is_empty() {
        return "no rollouts".to_owned();
    }
    let mut out = String::new();
    for r in rollouts {
        let n = |v: &Value| v.as_f64().map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"));
        out += &format!(
            "{} {} v{} -> v{}: {} (step {}/{}, weight {}%, {:.0}s in step, {}/{} failed evaluations)\n",
            r["model"].as_str().unwrap_or_default(),
            r["strategy"].as_str().unwrap_or_default(),
            r["stable"],
            r["candidate"],
            r["phase"].as_str().unwrap_or_default(),
            r["step"],
            r["steps"],
            r["weight"].as_f64().unwrap_or_default(),
            r["step_seconds"].as_f64().unwrap_or_default(),
            r["failures"],
            r["failure_limit"],
        );
        for side in ["stable", "candidate"] {
            let c = &r["step_counters"][side];
            out += &format!(
                "  {side:<9} requests {} errors {} p99 {} s\n",
                c["requests"],
                c["errors"],
                n(&c["latency_p99_seconds"])
            );
        }
        for check in r["checks"].as_array().map(Vec::as_slice).unwrap_or_default() {
            let verdict = match check["passed"].as_bool() {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "wait",
            };
            out += &format!(
                "  {verdict} {} = {} ({} {}) {}\n",
                check["name"].as_str().unwrap_or_default(),
                n(&check["value"]),
                check["bound"].as_str().unwrap_or_default(),
                check["threshold"],
                check["detail"].as_str().unwrap_or_default()
            );
        }
        if let Some(reason) = r["reason"].as_str() {
            out += &format!("  reason: {reason}\n");
        }
        if let Some(last) = r["decisions"].as_array().and_then(|d| d.last()) {
            out += &format!(
                "  last decision: {} by {}: {}\n",
                last["action"].as_str().unwrap_or_default(),
                last["by"].as_str().unwrap_or_default(),
                last["reason"].as_str().unwrap_or_default()
            );
        }
    }
    out.trim_end().to_owned()
}
