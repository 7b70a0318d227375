//! `vane demo`: the example models, built into the binary, served with ready-to-paste `curl` commands.
//!
//! The models and their reference data are embedded, so the demo needs nothing but the binary (and ONNX Runtime).
//! They are written to a temporary Triton-style repository, served like any `--model-dir`, and each model gets an
//! example request made from the first row of its reference data.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use monitor::ReferenceData;
use serde_json::json;

use crate::infer::{DataType, Signature};

/// One embedded model version.
pub struct EmbeddedModel {
    /// The model's name.
    pub name: &'static str,
    /// Its version.
    pub version: u64,
    /// The ONNX file.
    pub onnx: &'static [u8],
    /// The reference data (CSV with a header).
    pub reference: &'static str,
}

macro_rules! embedded {
    ($name:literal, $version:literal) => {
        EmbeddedModel {
            name: $name,
            version: $version,
            onnx: include_bytes!(concat!("../../models/", $name, "/", $version, "/model.onnx")),
            reference: include_str!(concat!("../../models/", $name, "/reference.csv")),
        }
    };
}

/// The example models: a breast-cancer classifier in two versions, a digits MLP and an 8 MB dense MLP.
pub const MODELS: [EmbeddedModel; 4] =
    [embedded!("breast_cancer", 1), embedded!("breast_cancer", 2), embedded!("digits", 1), embedded!("dense", 1)];

/// Writes the embedded models into `dir` as `<model>/<version>/model.onnx` plus `<model>/reference.csv`. Blocking.
pub fn write_repository(dir: &Path) -> io::Result<()> {
    for model in &MODELS {
        let version_dir = dir.join(model.name).join(model.version.to_string());
        fs::create_dir_all(&version_dir)?;
        fs::write(version_dir.join(reconciler::model_dir::MODEL_FILE), model.onnx)?;
        fs::write(dir.join(model.name).join("reference.csv"), model.reference)?;
    }
    Ok(())
}

/// Writes `requests/<model>.json`, an inference request with the first row of the model's reference data, for
/// every example model whose single input is an FP32 row vector. Returns the model names and file paths. Blocking.
pub fn write_example_requests(dir: &Path, signatures: &[(String, Signature)]) -> io::Result<Vec<(String, PathBuf)>> {
    let requests = dir.join("requests");
    fs::create_dir_all(&requests)?;
    let mut written = Vec::new();
    for (name, signature) in signatures {
        let [input] = signature.inputs.as_slice() else { continue };
        let Some(model) = MODELS.iter().find(|m| m.name == name) else { continue };
        if input.datatype != DataType::Fp32 || input.shape.len() != 2 {
            continue;
        }
        let reference = ReferenceData::from_csv_reader(model.reference.as_bytes(), Path::new(model.name))
            .map_err(io::Error::other)?;
        let Some(row) = reference.numeric_row(0) else { continue };
        let body = json!({
            "id": format!("demo-{name}"),
            "inputs": [{"name": input.name, "shape": [1, row.len()], "datatype": "FP32", "data": row}],
        });
        let path = requests.join(format!("{name}.json"));
        fs::write(&path, serde_json::to_vec(&body).map_err(io::Error::other)?)?;
        written.push((name.clone(), path));
    }
    Ok(written)
}

/// The text the demo prints: what is served and a `curl` command for each thing to try.
pub fn instructions(base: &str, dir: &Path, requests: &[(String, PathBuf)], versions: &[(String, Vec<u64>)]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Vane is serving {} example models on {base} (model files in {})\n",
        versions.len(),
        dir.display()
    );
    let _ = writeln!(text, "  # Is the server ready? What does it offer?");
    let _ = writeln!(text, "  curl -s {base}/v2/health/ready");
    let _ = writeln!(text, "  curl -s {base}/v2\n");
    for (name, path) in requests {
        let served = versions.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice()).unwrap_or_default();
        let _ =
            writeln!(text, "  # {name}: what it takes and gives, then a prediction for row 0 of its reference data");
        let _ = writeln!(text, "  curl -s {base}/v2/models/{name}");
        let _ = writeln!(
            text,
            "  curl -s -H 'Content-Type: application/json' -d @{} {base}/v2/models/{name}/infer",
            path.display()
        );
        if let Some(oldest) = served.first().filter(|_| served.len() > 1) {
            let _ = writeln!(
                text,
                "  curl -s -H 'Content-Type: application/json' -d @{} {base}/v2/models/{name}/versions/{oldest}/infer",
                path.display()
            );
        }
        let _ = writeln!(text);
    }
    let _ = writeln!(text, "  # A mistake gets a 400 that says what was wrong:");
    let _ = writeln!(
        text,
        "  curl -s -d '{{\"inputs\":[{{\"name\":\"input\",\"shape\":[1,2],\"datatype\":\"FP32\",\"data\":[1,2]}}]}}' {base}/v2/models/breast_cancer/infer\n"
    );
    let _ = writeln!(text, "Press Ctrl-C to stop.");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_repository_is_what_the_model_dir_scanner_reads() {
        let dir = tempfile::tempdir().unwrap();
        write_repository(dir.path()).unwrap();
        let state = reconciler::model_dir::scan(dir.path()).unwrap();
        let names: Vec<_> = state.models.iter().map(|m| (m.name.as_str(), m.versions.len())).collect();
        assert_eq!(names, [("breast_cancer", 2), ("dense", 1), ("digits", 1)]);
    }
}
