use super::*;

const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn manifest(name: &str, body: &str) -> (String, Vec<u8>) {
    let text =
        format!("apiVersion: vane.dev/v1alpha1\nkind: ModelDeployment\nmetadata:\n  name: {name}\nspec:\n{body}");
    (format!("deploy/{name}.yaml"), text.into_bytes())
}

fn one_version(model: &str) -> String {
    format!("  versions:\n    - version: 1\n      model: {{{model}, sha256: {SHA}}}\n")
}

fn error_of(files: &[(String, Vec<u8>)]) -> String {
    parse_commit(files).unwrap_err().to_string()
}

#[test]
fn a_full_manifest_parses_into_a_deployment() {
    let body = format!(
        "  versions:\n    - version: 2\n      model: {{path: models/bc/2/model.onnx, sha256: \"sha256:{SHA}\"}}\n      io:\n        inputs: [{{name: input, datatype: FP32, shape: [-1, 30]}}]\n      warmup: {{golden: golden/bc.json, tolerance: 0.001}}\n    - version: 1\n      model: {{dvc: models/bc1.onnx.dvc, sha256: {SHA}}}\n  reference_data: {{uri: \"file:///data/ref.csv\", sha256: {SHA}}}\n  serving: {{max_batch_size: 32, max_queue_delay: 1ms}}\n  monitoring: {{sample_rate: 0.5, thresholds: {{psi: 0.2}}, for: 5m}}\n"
    );
    let deployments = parse_commit(&[manifest("bc", &body)]).unwrap();
    let d = &deployments[0];
    assert_eq!(d.name, "bc");
    assert_eq!(d.versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2], "sorted");
    assert_eq!(d.versions[1].model.source, ArtifactSource::Repo(RepoPath::parse("models/bc/2/model.onnx").unwrap()));
    assert_eq!(d.versions[1].model.sha256, SHA, "the sha256: prefix is accepted");
    assert_eq!(d.versions[0].model.source, ArtifactSource::Dvc(RepoPath::parse("models/bc1.onnx.dvc").unwrap()));
    assert_eq!(d.versions[1].io.as_ref().unwrap().inputs[0].shape, [-1, 30]);
    assert_eq!(d.versions[1].warmup.as_ref().unwrap().tolerance, 0.001);
    assert_eq!(d.reference_data.as_ref().unwrap().source, ArtifactSource::Uri("file:///data/ref.csv".into()));
    assert_eq!(d.serving.max_batch_size, Some(32));
    let monitoring = d.monitoring.as_ref().unwrap();
    assert_eq!((monitoring.thresholds["psi"], monitoring.for_duration), (0.2, Some(Duration::from_secs(300))));
}

#[test]
fn each_mistake_is_refused_with_its_file_and_field() {
    let cases = [
        ("apiVersion: vane.dev/v2\nkind: ModelDeployment\nmetadata: {name: a}\nspec: {versions: []}\n", "apiVersion \"vane.dev/v2\" is not supported"),
        ("apiVersion: vane.dev/v1alpha1\nkind: Deployment\nmetadata: {name: a}\nspec: {versions: []}\n", "kind \"Deployment\" is not supported"),
        ("apiVersion: vane.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: a, owner: me}\nspec: {versions: []}\n", "unknown field `owner`"),
        ("apiVersion: vane.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: a}\nspec: {versions: []}\n", "spec.versions must list 1 to 16 versions, not 0"),
        ("apiVersion: [\n", "invalid manifest"),
    ];
    for (text, needle) in cases {
        let message = error_of(&[("deploy/a.yaml".to_owned(), text.as_bytes().to_vec())]);
        assert!(message.starts_with("deploy/a.yaml: "), "{message}");
        assert!(message.contains(needle), "{message:?} should contain {needle:?}");
    }
}

#[test]
fn artifacts_need_exactly_one_source_and_a_real_digest() {
    let bad = [
        ("path: a.onnx, dvc: a.onnx.dvc", "exactly one of path, dvc or uri"),
        ("uri: \"http://x/a.onnx\"", "must be file:///... or https://..."),
        ("uri: \"https://user:token@host/a.onnx\"", "must not carry credentials"),
        ("dvc: a.onnx", "must name a .dvc pointer file"),
    ];
    for (model, needle) in bad {
        let message = error_of(&[manifest("a", &one_version(model))]);
        assert!(message.contains(needle), "{message:?} should contain {needle:?}");
    }
    let body = "  versions:\n    - version: 1\n      model: {path: a.onnx, sha256: abc}\n";
    assert!(error_of(&[manifest("a", body)])
        .contains("spec.versions[version 1].model: sha256 \"abc\" is not 64 hex digits"));
}

#[test]
fn paths_cannot_leave_the_repository() {
    for path in ["../secrets.onnx", "/etc/passwd", "models/../../x.onnx", "models//x.onnx", "./x.onnx", "C:/x", "a\\b"]
    {
        let message = error_of(&[manifest("a", &one_version(&format!("path: '{path}'")))]);
        assert!(message.contains("path"), "{path}: {message}");
    }
    assert!(RepoPath::parse("models/bc/1/model.onnx").is_ok());
}

#[test]
fn a_commit_is_all_or_nothing_and_names_are_unique() {
    let good = manifest("a", &one_version("path: a.onnx"));
    let bad = manifest("b", "  versions: oops\n");
    let errors = parse_commit(&[good.clone(), bad]).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].file, "deploy/b.yaml");
    let (_, twin) = manifest("a", &one_version("path: b.onnx"));
    let errors = parse_commit(&[good, ("deploy/a-again.yaml".into(), twin)]).unwrap_err();
    assert!(
        errors.to_string().contains("deploy/a-again.yaml: model 'a' is already deployed by deploy/a.yaml"),
        "{errors}"
    );
}

#[test]
fn serving_settings_are_checked_like_a_config_file() {
    let body = format!("{}  serving: {{workers: 0}}\n", one_version("path: a.onnx"));
    assert!(error_of(&[manifest("a", &body)]).contains("spec.serving: workers must be at least 1"));
    let body = format!("{}  serving: {{batch: 3}}\n", one_version("path: a.onnx"));
    assert!(error_of(&[manifest("a", &body)]).contains("unknown field `batch`"));
}

#[test]
fn the_commented_example_in_configs_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/deploy/breast-cancer.yaml");
    let text = std::fs::read(&path).unwrap();
    let deployments = parse_commit(&[("deploy/breast-cancer.yaml".into(), text)]).unwrap();
    assert_eq!(deployments[0].name, "breast_cancer");
}

fn two_versions_with(rollout: &str) -> String {
    format!(
        "  versions:\n    - version: 1\n      model: {{path: m/1.onnx, sha256: {SHA}}}\n    - version: 2\n      model: {{path: m/2.onnx, sha256: {SHA}}}\n  rollout:\n{rollout}"
    )
}

#[test]
fn a_rollout_block_parses_with_its_defaults() {
    let body = two_versions_with(
        "    stable: 1\n    candidate: 2\n    strategy: canary\n    key: x-user-id\n    steps:\n      - {weight: 5, duration: 30s, min_requests: 100}\n      - {weight: 100, duration: 1m}\n",
    );
    let d = &parse_commit(&[manifest("bc", &body)]).unwrap()[0];
    let rollout = d.rollout.as_ref().unwrap();
    assert_eq!((rollout.stable, rollout.candidate, rollout.strategy), (1, 2, Strategy::Canary));
    assert_eq!(rollout.steps[0].duration, Duration::from_secs(30));
    assert_eq!(
        (rollout.analysis.interval, rollout.analysis.min_samples, rollout.analysis.failure_limit),
        (Duration::from_secs(1), 100, 2)
    );
    assert_eq!(rollout.grace_period, Duration::from_secs(300));
    // No checks named: the error rate and the p99 latency are checked.
    assert_eq!(rollout.checks(), RolloutChecks::standard());
}

#[test]
fn rollout_mistakes_are_refused_with_the_field() {
    let cases = [
        ("    stable: 1\n    candidate: 3\n    strategy: canary\n    steps: [{weight: 5, duration: 1s}]\n", "spec.rollout: candidate version 3 is not in spec.versions"),
        ("    stable: 1\n    candidate: 1\n    strategy: canary\n    steps: [{weight: 5, duration: 1s}]\n", "must be different versions"),
        ("    stable: 1\n    candidate: 2\n    strategy: blue\n    steps: [{weight: 5, duration: 1s}]\n", "blue"),
        ("    stable: 1\n    candidate: 2\n    strategy: canary\n    steps: []\n", "steps must list 1 to 32 steps"),
        ("    stable: 1\n    candidate: 2\n    strategy: canary\n    steps: [{weight: 150, duration: 1s}]\n", "steps[0].weight must be a percent in (0, 100]"),
        ("    stable: 1\n    candidate: 2\n    strategy: canary\n    steps: [{weight: 50, duration: 1s}, {weight: 10, duration: 1s}]\n", "steps[1].weight goes down"),
        ("    stable: 1\n    candidate: 2\n    strategy: ab\n    steps: [{weight: 50, duration: 1s}, {weight: 60, duration: 1s}]\n", "an ab rollout has one step"),
        ("    stable: 1\n    candidate: 2\n    strategy: canary\n    key: X-User\n    steps: [{weight: 5, duration: 1s}]\n", "lower-case header name"),
        ("    stable: 1\n    candidate: 2\n    strategy: canary\n    steps: [{weight: 5, duration: 1s}]\n    analysis: {interval: 10ms}\n", "analysis.interval must be between 100ms and 1h"),
        ("    stable: 1\n    candidate: 2\n    strategy: canary\n    steps: [{weight: 5, duration: 1s}]\n    analysis: {failure_limit: 0}\n", "failure_limit must be at least 1"),
        ("    stable: 1\n    candidate: 2\n    strategy: canary\n    steps: [{weight: 5, duration: 1s}]\n    analysis: {checks: {quality_drop: 0.05}}\n", "quality_drop needs spec.monitoring.quality"),
        ("    stable: 1\n    candidate: 2\n    strategy: canary\n    steps: [{weight: 5, duration: 1s}]\n    analysis: {checks: {agreement: 2}}\n", "agreement is a share in [0, 1]"),
        ("    stable: 1\n    candidate: 2\n    strategy: canary\n    steps: [{weight: 5, duration: 1s}]\n    analysis: {checks: {quality_metric: vibes, error_rate_increase: 0.1}}\n", "quality_metric \"vibes\""),
        ("    stable: 1\n    candidate: 2\n    strategy: canary\n    steps: [{weight: 5, duration: 1s}]\n    analysis: {checks: {latency: 2}}\n", "unknown field `latency`"),
    ];
    for (rollout, needle) in cases {
        let error = error_of(&[manifest("bc", &two_versions_with(rollout))]);
        assert!(error.contains(needle), "{error:?} should contain {needle:?}");
        assert!(error.starts_with("deploy/bc.yaml: "), "{error}");
    }
}

#[test]
fn the_commented_rollout_in_the_example_manifest_parses() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/deploy/breast-cancer.yaml")).unwrap();
    let start = example.find("  # rollout:").expect("the example documents a rollout block");
    // Uncomment the block: each line's "# " after the indentation goes, and comments after values stay comments.
    let block: String = example[start..]
        .lines()
        .map(|line| line.replacen("# ", "", 1))
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(|line| format!("{line}\n"))
        .collect();
    let uncommented = format!("{}{block}", &example[..start]);
    let deployments = parse_commit(&[("deploy/breast-cancer.yaml".to_owned(), uncommented.into_bytes())]).unwrap();
    let rollout = deployments[0].rollout.as_ref().expect("the uncommented block is read");
    assert_eq!((rollout.stable, rollout.candidate, rollout.steps.len()), (1, 2, 3));
    assert_eq!(rollout.checks().agreement, Some(0.95));
}

#[test]
fn the_commented_estimate_in_the_example_manifest_parses_and_mistakes_are_refused() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/deploy/breast-cancer.yaml")).unwrap();
    // Uncomment the estimate block and the commented thresholds (the lines between `# estimate:` and `multivariate:`,
    // and the two threshold lines).
    let mut inside = false;
    let uncommented: String = example
        .lines()
        .filter_map(|line| {
            inside = (inside || line.trim_start().starts_with("# estimate:")) && !line.contains("multivariate: true");
            let threshold =
                ["# estimated_accuracy:", "# multivariate_z:"].iter().any(|t| line.trim_start().starts_with(t));
            let line = if inside || threshold { line.replacen("# ", "", 1) } else { line.to_owned() };
            (!line.trim_start().starts_with('#')).then(|| format!("{line}\n"))
        })
        .collect();
    let deployments =
        parse_commit(&[("deploy/breast-cancer.yaml".to_owned(), uncommented.clone().into_bytes())]).unwrap();
    let monitoring = deployments[0].monitoring.as_ref().unwrap();
    let estimate = monitoring.quality.as_ref().unwrap().estimate.as_ref().expect("the uncommented block is read");
    assert_eq!((estimate.label_column.as_str(), estimate.calibration.as_deref()), ("target", Some("auto")));
    assert_eq!(monitoring.multivariate, Some(true));
    assert_eq!(monitoring.thresholds.get("multivariate_z"), Some(&3.0));

    let refused = |from: &str, to: &str, needle: &str| {
        let text = uncommented.replacen(from, to, 1);
        let error =
            parse_commit(&[("deploy/breast-cancer.yaml".to_owned(), text.into_bytes())]).unwrap_err().to_string();
        assert!(error.contains(needle), "{error:?} should contain {needle:?}");
    };
    refused("calibration: auto", "calibration: platt", "calibration: \"platt\" is not isotonic, none or auto");
    refused("task: binary_classification", "task: regression", "estimate needs task binary_classification");
    refused("label_column: target", "label_colum: target", "unknown field `label_colum`");
    refused("window_size: 1000 ", "window_size: 1000001 ", "window_size must be from 1 to 1000000");
    refused("consecutive_windows: 1 ", "consecutive_windows: 0 ", "consecutive_windows must be from 1 to 1000");
}
