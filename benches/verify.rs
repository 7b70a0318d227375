//! The cost of signature verification per sync, beside a sync's other local work on the same commit.
//!
//! Run: `cargo bench --bench verify`. A repository with the example manifest is made with `git`, its head signed
//! with an ed25519 key made by `ssh-keygen` (`git -c gpg.format=ssh commit -S`); criterion times
//! - `verify`: the head's SSHSIG checked against an allowed_signers file (`AllowedSigners::verify`),
//! - `verify_with_path_rule`: the same plus a path rule (the diff against the previous commit),
//! - `read_and_parse_manifests`: reading the commit's manifests from Git objects and parsing them, which every sync
//!   of a new commit does anyway (the comparison in the same run).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use reconciler::signers::{AllowedSigners, PathRule, SignerPolicy};
use reconciler::source::{GitSource, GitSpec};

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@vane.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ops");
    let made = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).status().unwrap();
    assert!(made.success());
    let allowed = dir.path().join("allowed_signers");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    std::fs::write(&allowed, format!("ops@example.com {public}")).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("deploy")).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read(root.join("configs/deploy/breast-cancer.yaml")).unwrap();
    std::fs::write(work.join("deploy/breast-cancer.yaml"), &manifest).unwrap();
    let signing = format!("user.signingkey={}", key.display());
    let commit = |message: &str| {
        git(&work, &["add", "-A"]);
        git(&work, &["-c", "gpg.format=ssh", "-c", &signing, "commit", "-q", "-S", "--allow-empty", "-m", message]);
        git2::Oid::from_str(&git(&work, &["rev-parse", "HEAD"])).unwrap()
    };
    let first = commit("first");
    std::fs::write(work.join("deploy/breast-cancer.yaml"), [manifest.as_slice(), b"# changed\n"].concat()).unwrap();
    let head = commit("second");

    let data = tempfile::tempdir().unwrap();
    let spec = GitSpec::new(work.display().to_string(), "main", "deploy");
    let source = GitSource::open(&GitSource::clone_dir(data.path()), spec, Arc::new(AtomicBool::new(false))).unwrap();
    source.fetch().unwrap();
    let signers = AllowedSigners::load(&allowed).unwrap();
    let with_rule = SignerPolicy {
        allowed: Some(signers.clone()),
        paths: vec![PathRule::parse("deploy/breast-cancer.yaml=ops@example.com").unwrap()],
    };
    let repo = source.repository();
    assert!(signers.verify(repo, head).is_ok());

    let mut group = c.benchmark_group("sync_checks");
    group.bench_function("verify", |b| b.iter(|| signers.verify(repo, head).unwrap()));
    group.bench_function("verify_with_path_rule", |b| b.iter(|| with_rule.check(repo, head, Some(first)).unwrap()));
    group.bench_function("read_and_parse_manifests", |b| {
        b.iter(|| reconciler::manifest::parse_commit(&source.manifests(head).unwrap()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
