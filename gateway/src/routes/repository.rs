//! The model repository extension (`/v2/repository/...`, and the same calls over gRPC): what is served, and loading
//! or unloading a model by hand.
//!
//! In model-directory mode these act as Triton's explicit model control over the directory: `load` rescans it and
//! loads (or reloads) the model from its folder; `unload` stops serving the model and keeps the directory poller
//! from bringing it back until it is loaded again. In GitOps mode Git is the only source of truth, so both are
//! refused with 409 naming the repository: a manual change would be silently undone by the next sync (Argo CD's
//! self-heal), or would make the served set differ from what the repository says until then. There is deliberately
//! no override flag; to change what is served, change the manifest and push (a rollback is `POST /api/v1/rollback`).

use serde::{Deserialize, Serialize};

use super::AppState;
use crate::errors::ApiError;
use crate::repository::ModelDirControl;

/// One row of the repository index.
#[derive(Debug, Clone, Serialize)]
pub struct IndexEntry {
    /// The model.
    pub name: String,
    /// The version.
    pub version: String,
    /// `READY`, or `UNAVAILABLE` for a model unloaded by hand.
    pub state: &'static str,
    /// Why it is not ready, if it is not.
    pub reason: String,
}

/// Every served model version (READY) and, in model-directory mode, every model unloaded by hand (UNAVAILABLE);
/// with `ready_only`, only the ready ones.
pub fn repository_index(state: &AppState, ready_only: bool) -> Vec<IndexEntry> {
    let table = state.registry.snapshot();
    let mut entries: Vec<IndexEntry> = table
        .names()
        .flat_map(|name| {
            table.versions(name).into_iter().map(move |v| IndexEntry {
                name: name.to_owned(),
                version: v.to_string(),
                state: "READY",
                reason: String::new(),
            })
        })
        .collect();
    if !ready_only {
        // Kept by the registry, so listing them reads no directory on the async thread.
        entries.extend(state.registry.unloaded().into_iter().map(|name| IndexEntry {
            name,
            version: String::new(),
            state: "UNAVAILABLE",
            reason: "unloaded".to_owned(),
        }));
    }
    entries
}

/// The model directory to act on; refused in GitOps mode, naming the repository.
fn model_dir<'a>(state: &'a AppState, verb: &str, model: &str) -> Result<&'a ModelDirControl, ApiError> {
    if let Some(controller) = &state.controller {
        let repo = controller.status().borrow().repo.clone();
        return Err(ApiError::Conflict {
            reason: format!(
                "cannot {verb} model '{model}' by hand: this server serves what Git says ({repo}); change the model's \
                 manifest there and push (or POST /api/v1/rollback)"
            ),
        });
    }
    state.model_dir.as_ref().ok_or(ApiError::Disabled {
        what: "loading and unloading models by hand",
        how: "serve a model directory (--model-dir)",
    })
}

/// The model directory as it is now, off the async threads.
async fn scan(control: &ModelDirControl) -> Result<reconciler::DesiredState, String> {
    let dir = control.dir.clone();
    match tokio::task::spawn_blocking(move || reconciler::model_dir::scan(&dir)).await {
        Ok(scanned) => scanned.map_err(|e| e.to_string()),
        Err(e) => Err(format!("scanning the model directory failed: {e}")),
    }
}

/// Loads or reloads `model` from its folder.
pub async fn repository_load(state: &AppState, model: &str) -> Result<(), ApiError> {
    let control = model_dir(state, "load", model)?;
    let scanned = scan(control).await.map_err(|reason| ApiError::Conflict { reason })?;
    if !scanned.models.iter().any(|m| m.name == model) {
        return Err(ApiError::ModelNotFound {
            model: model.to_owned(),
            available: scanned.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "),
        });
    }
    state.registry.set_unloaded(model, false);
    let desired = state.registry.without_unloaded(scanned);
    if let Err(error) = state.registry.apply(&control.loader, desired).await {
        return Err(ApiError::Conflict { reason: format!("model '{model}' could not be loaded: {error}") });
    }
    Ok(())
}

/// Stops serving `model` until it is loaded again. Requests in flight finish on the version they hold.
pub async fn repository_unload(state: &AppState, model: &str) -> Result<(), ApiError> {
    let control = model_dir(state, "unload", model)?;
    state.registry.snapshot().get(model, None)?;
    state.registry.set_unloaded(model, true);
    let applied = match scan(control).await {
        Ok(desired) => state
            .registry
            .apply(&control.loader, state.registry.without_unloaded(desired))
            .await
            .map_err(|e| e.to_string()),
        Err(error) => Err(error),
    };
    applied.map(|_| ()).map_err(|reason| {
        state.registry.set_unloaded(model, false);
        ApiError::Conflict { reason: format!("model '{model}' could not be unloaded: {reason}") }
    })
}

/// `POST /v2/repository/index` body: optional, `{"ready": true}` lists only ready models.
#[derive(Debug, Default, Deserialize)]
pub(super) struct IndexRequest {
    #[serde(default)]
    pub(super) ready: bool,
}

/// A load request's body, as Triton's clients send it: empty, `{}`, or `{"parameters": {...}}`. Triton's `config`
/// (a configuration override) and `file:<path>` (model files uploaded in the request) are not implemented and are
/// refused by name, rather than ignored: the client would believe its override or its files were served.
pub(super) fn check_load_body(body: &[u8]) -> Result<(), ApiError> {
    check_parameters(body, &[], |name| match name {
        "config" => "overriding a model's configuration at load is not supported; edit config.yaml in its folder",
        n if n.starts_with("file:") => {
            "uploading model files at load is not supported; put them in the model directory and load by name"
        }
        _ => "is not a load parameter Vane knows",
    })
}

/// An unload request's body: empty, `{}`, or `{"parameters": {"unload_dependents": bool}}` (accepted: Vane serves
/// no ensembles, so a model has no dependents).
pub(super) fn check_unload_body(body: &[u8]) -> Result<(), ApiError> {
    check_parameters(body, &["unload_dependents"], |_| "is not an unload parameter Vane knows")
}

/// Accepts the parameters in `known`; any other is a 400 naming it with `why`.
pub fn check_parameter_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
    known: &[&str],
    why: impl Fn(&str) -> &'static str,
) -> Result<(), ApiError> {
    match names.into_iter().find(|name| !known.contains(name)) {
        None => Ok(()),
        Some(name) => Err(ApiError::InvalidRepositoryParameter { name: name.to_owned(), message: why(name) }),
    }
}

fn check_parameters(body: &[u8], known: &[&str], why: impl Fn(&str) -> &'static str) -> Result<(), ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        #[serde(default)]
        parameters: serde_json::Map<String, serde_json::Value>,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let request: Request =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson { message: e.to_string() })?;
    check_parameter_names(request.parameters.keys().map(String::as_str), known, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_and_unload_bodies_are_read_not_ignored() {
        for ok in ["", " ", "{}", r#"{"parameters":{}}"#] {
            assert!(check_load_body(ok.as_bytes()).is_ok(), "{ok}");
        }
        assert!(check_unload_body(br#"{"parameters":{"unload_dependents":true}}"#).is_ok());
        let config = check_load_body(br#"{"parameters":{"config":"{}"}}"#).unwrap_err();
        assert_eq!(config.status(), http::StatusCode::BAD_REQUEST);
        assert!(config.to_string().contains("'config'") && config.to_string().contains("config.yaml"), "{config}");
        let file = check_load_body(br#"{"parameters":{"file:1/model.onnx":"AAAA"}}"#).unwrap_err().to_string();
        assert!(file.contains("file:1/model.onnx") && file.contains("not supported"), "{file}");
        assert!(check_load_body(br#"{"other":1}"#).unwrap_err().to_string().starts_with("invalid JSON body"));
        assert!(check_unload_body(br#"{"parameters":{"force":true}}"#).is_err());
    }
}
