//! Against real repositories made with the `git` command in temporary folders.

use std::process::Command;

use super::*;

/// A work repository with a `main` branch, driven by the git CLI.
pub(crate) struct WorkRepo {
    pub(crate) dir: tempfile::TempDir,
}

impl WorkRepo {
    pub(crate) fn new() -> Self {
        let repo = Self { dir: tempfile::tempdir().unwrap() };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    pub(crate) fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(["-c", "user.name=vane-test", "-c", "user.email=test@vane.invalid", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    pub(crate) fn write(&self, path: &str, content: &[u8]) {
        let file = self.dir.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }

    /// Commits everything and returns the commit id.
    pub(crate) fn commit(&self, message: &str) -> Oid {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        Oid::from_str(&self.git(&["rev-parse", "HEAD"])).unwrap()
    }

    pub(crate) fn url(&self) -> String {
        self.dir.path().display().to_string()
    }
}

fn open_source(url: String) -> (tempfile::TempDir, GitSource) {
    let data = tempfile::tempdir().unwrap();
    let spec = GitSpec::new(url, "main", "deploy");
    let source = GitSource::open(&GitSource::clone_dir(data.path()), spec, Arc::new(AtomicBool::new(false))).unwrap();
    (data, source)
}

#[test]
fn fetches_and_reads_manifests_and_files_from_objects() {
    let work = WorkRepo::new();
    work.write("deploy/a.yaml", b"a: 1\n");
    work.write("deploy/b.yml", b"b: 2\n");
    work.write("deploy/notes.md", b"ignored");
    work.write("models/a/1/model.onnx", b"onnx bytes");
    let first = work.commit("first");
    for url in [work.url(), format!("file://{}", work.url())] {
        let (_data, source) = open_source(url);
        assert_eq!(source.local_head(), None);
        assert_eq!(source.remote_head().unwrap(), first);
        assert_eq!(source.fetch().unwrap(), first);
        let manifests = source.manifests(first).unwrap();
        let names: Vec<&str> = manifests.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["deploy/a.yaml", "deploy/b.yml"]);
        assert_eq!(manifests[0].1, b"a: 1\n");
        let model = source.read(first, &RepoPath::parse("models/a/1/model.onnx").unwrap(), 1 << 20).unwrap();
        assert_eq!(model, b"onnx bytes");
        let err = source.read(first, &RepoPath::parse("models/a/1/model.onnx").unwrap(), 4).unwrap_err();
        assert!(err.to_string().contains("is 10 bytes; the limit is 4"), "{err}");
    }
}

#[test]
fn symlinks_and_missing_paths_are_refused_with_the_commit_named() {
    let work = WorkRepo::new();
    work.write("deploy/a.yaml", b"a: 1\n");
    std::os::unix::fs::symlink("/etc/passwd", work.dir.path().join("deploy/evil.yaml")).unwrap();
    std::os::unix::fs::symlink("/etc", work.dir.path().join("outside")).unwrap();
    let commit = work.commit("links");
    let (_data, source) = open_source(work.url());
    source.fetch().unwrap();
    let err = source.manifests(commit).unwrap_err().to_string();
    assert!(err.starts_with(&format!("deploy/evil.yaml at commit {commit}: is a symlink")), "{err}");
    let err = source.read(commit, &RepoPath::parse("outside/passwd").unwrap(), 1 << 20).unwrap_err().to_string();
    assert!(err.contains("no such file"), "{err}");
    let err = source.read(commit, &RepoPath::parse("outside").unwrap(), 1 << 20).unwrap_err().to_string();
    assert!(err.contains("is a symlink"), "{err}");
}

#[test]
fn a_force_push_is_seen_as_not_descending() {
    let work = WorkRepo::new();
    work.write("deploy/a.yaml", b"v: 1\n");
    let first = work.commit("first");
    work.write("deploy/a.yaml", b"v: 2\n");
    let second = work.commit("second");
    let (_data, source) = open_source(work.url());
    source.fetch().unwrap();
    assert!(source.descends_from(second, first).unwrap());
    work.git(&["reset", "-q", "--hard", &first.to_string()]);
    work.write("deploy/a.yaml", b"v: 3\n");
    let rewritten = work.commit("rewritten");
    assert_eq!(source.fetch().unwrap(), rewritten, "forced update of the tracking ref");
    assert!(!source.descends_from(rewritten, second).unwrap());
}

#[test]
fn a_missing_branch_or_remote_is_a_clear_error() {
    let work = WorkRepo::new();
    work.commit("empty");
    let data = tempfile::tempdir().unwrap();
    let spec = GitSpec::new(work.url(), "prod", "deploy");
    let source = GitSource::open(&GitSource::clone_dir(data.path()), spec, Arc::new(AtomicBool::new(false))).unwrap();
    assert!(source.remote_head().unwrap_err().to_string().contains("branch 'prod' not found"));
    let (_data, gone) = open_source("/nonexistent/repo".into());
    // The real cause, not libgit2's "unsupported URL protocol".
    let error = gone.remote_head().unwrap_err().to_string();
    assert!(error.starts_with("the remote /nonexistent/repo cannot be read (No such file"), "{error}");
    let (_data, gone) = open_source("file:///nonexistent/repo".into());
    assert!(gone.fetch().unwrap_err().to_string().contains("moved, deleted, or a volume not mounted"));
    assert_eq!(local_path("git@github.com:org/deploy.git"), None);
    assert_eq!(local_path("https://example.com/deploy.git"), None);
    assert_eq!(local_path("relative/repo"), Some("relative/repo"));
}
