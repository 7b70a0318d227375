//! The fleet's view on Prometheus: two replicas serve the same deployment and each gets half the traffic; a real
//! Prometheus (Debian's) scrapes both and evaluates `configs/prometheus/vane-fleet-rules.yaml`; the fleet's PSI,
//! Jensen-Shannon distance and chi-squared it records equal, to 1e-6, what one Vane monitor computes on all the
//! traffic (a third server that gets every row).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::drift_compare::{cases, expected};
use crate::gitops::serve;
use crate::live_drift_cases::{manifest, read_csv, replay};
use crate::monitor::report_of;
use crate::support::GitRemote;

const CASE: &str = "p02_categorical_and_integers";

fn query(port: u16, promql: &str) -> Value {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "5", "-G", &format!("http://127.0.0.1:{port}/api/v1/query")])
        .args(["--data-urlencode", &format!("query={promql}")])
        .output()
        .expect("curl runs");
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

/// The recorded value per feature of `record` for the case's model.
fn by_feature(port: u16, record: &str) -> Vec<(String, f64)> {
    let answer = query(port, &format!("{record}{{model=\"{CASE}\"}}"));
    let mut values: Vec<(String, f64)> = answer["data"]["result"]
        .as_array()
        .map(|results| {
            results
                .iter()
                .filter_map(|r| {
                    let value = r["value"][1].as_str()?.parse::<f64>().ok()?;
                    Some((r["metric"]["feature"].as_str()?.to_owned(), value))
                })
                .collect()
        })
        .unwrap_or_default();
    values.sort_by(|a, b| a.0.cmp(&b.0));
    values
}

fn close(expected: f64, actual: f64) -> bool {
    (expected - actual).abs() <= if expected.abs() < 1e-9 { 1e-9 } else { 1e-6 * expected.abs() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_rules_on_a_real_prometheus_equal_one_monitor_on_all_the_traffic() {
    let case = cases().into_iter().find(|c| c.ends_with(CASE)).unwrap();
    let expected = expected(&case);
    let remote = GitRemote::new();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/drift-models");
    remote.write(&format!("models/{CASE}.onnx"), &std::fs::read(models.join(format!("{CASE}.onnx"))).unwrap());
    remote.write(&format!("data/{CASE}/reference.csv"), &std::fs::read(case.join("reference.csv")).unwrap());
    let text = manifest(CASE, CASE, &expected, remote.work.path(), "");
    remote.write(&format!("deploy/{CASE}.yaml"), text.as_bytes());
    remote.push("one deployment, served by every replica");
    let url = remote.bare.path().display().to_string();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (a, b, all) =
        (serve(url.clone(), &dirs[0]).await, serve(url.clone(), &dirs[1]).await, serve(url, &dirs[2]).await);

    // Every row to the oracle; even rows to replica a, odd rows to replica b.
    let (header, rows) = read_csv(&case.join("current.csv"));
    let kinds = &expected["columns"];
    let (even, odd): (Vec<_>, Vec<_>) = rows.iter().cloned().enumerate().partition(|(i, _)| i % 2 == 0);
    let even: Vec<Vec<String>> = even.into_iter().map(|(_, r)| r).collect();
    let odd: Vec<Vec<String>> = odd.into_iter().map(|(_, r)| r).collect();
    replay(&a, CASE, &header, kinds, &even).await;
    replay(&b, CASE, &header, kinds, &odd).await;
    replay(&all, CASE, &header, kinds, &rows).await;
    report_of(&a, CASE, even.len() as u64).await;
    report_of(&b, CASE, odd.len() as u64).await;
    let oracle = report_of(&all, CASE, rows.len() as u64).await;
    let columns = oracle["versions"][0]["columns"].as_object().unwrap().clone();
    let want = |pick: &dyn Fn(&Value) -> Option<f64>| -> Vec<(String, f64)> {
        columns.iter().filter_map(|(name, c)| Some((name.clone(), pick(c)?))).collect()
    };
    let psi = want(&|c| c["psi"]["value"].as_f64());
    let js = want(&|c| c["js_distance"].as_f64());
    let chi2 = want(&|c| c["chi2"]["statistic"].as_f64());
    assert_eq!((psi.len(), js.len(), chi2.len()), (6, 6, 4), "every feature has PSI and JS; the categorical ones chi2");

    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/prometheus/vane-fleet-rules.yaml");
    let (_prometheus, port, _dir) = crate::support::prometheus(&rules, &[a.addr(), b.addr()]).await;

    // Each scrape of replica b wakes the test, which then reads the recorded fleet values; bounded by 60 s.
    let mut scrapes = b.server.metrics_scrapes();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = tokio::task::spawn_blocking(move || {
            [
                by_feature(port, "vane:feature_psi:fleet"),
                by_feature(port, "vane:feature_js_distance:fleet"),
                by_feature(port, "vane:feature_chi2:fleet"),
            ]
        })
        .await
        .unwrap();
        let matches = [&psi, &js, &chi2].iter().zip(&got).all(|(want, got)| {
            want.len() == got.len() && want.iter().zip(got.iter()).all(|(w, g)| w.0 == g.0 && close(w.1, g.1))
        });
        if matches {
            break;
        }
        let waited = tokio::time::timeout_at(deadline, scrapes.changed()).await;
        waited
            .unwrap_or_else(|_| {
                panic!("the fleet's values {got:?} never equalled one monitor's: psi {psi:?}, js {js:?}, chi2 {chi2:?}")
            })
            .unwrap();
    }
    // Each replica alone sees a different distribution than the fleet: the sums, not any one replica, are the fleet.
    let one = report_of(&a, CASE, even.len() as u64).await;
    let differs = psi
        .iter()
        .any(|(f, v)| one["versions"][0]["columns"][f]["psi"]["value"].as_f64().is_some_and(|x| !close(*v, x)));
    assert!(differs, "replica a's own PSI differs from the fleet's somewhere");
    let totals = query(port, &format!("vane:feature_window_total:fleet{{model=\"{CASE}\",feature=\"int_rating\"}}"));
    assert_eq!(totals["data"]["result"][0]["value"][1], json!(rows.len().to_string()), "{totals}");
    for server in [a, b, all] {
        server.stop().await;
    }
}
