use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::*;
use crate::source::GitSpec;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Fixture {
    work: crate::source::tests::WorkRepo,
    data: tempfile::TempDir,
    source: GitSource,
    commit: Oid,
}

fn fixture(files: &[(&str, &[u8])]) -> Fixture {
    let work = crate::source::tests::WorkRepo::new();
    for (path, content) in files {
        work.write(path, content);
    }
    let commit = work.commit("artifacts");
    let data = tempfile::tempdir().unwrap();
    let spec = GitSpec::new(work.url(), "main", "deploy");
    let source = GitSource::open(&GitSource::clone_dir(data.path()), spec, Arc::new(AtomicBool::new(false))).unwrap();
    source.fetch().unwrap();
    Fixture { work, data, source, commit }
}

fn reference(source: ArtifactSource, sha256: String) -> ArtifactRef {
    ArtifactRef { source, sha256 }
}

#[test]
fn a_repo_file_is_verified_and_cached_and_checked_again_at_every_commit() {
    let f = fixture(&[("models/m.onnx", b"model v1")]);
    let cache = ArtifactCache::new(f.data.path());
    let artifact = reference(ArtifactSource::Repo(RepoPath::parse("models/m.onnx").unwrap()), sha(b"model v1"));
    let path = cache.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"model v1");
    assert_eq!(path, cache.path_of(&artifact.sha256));
    // A later commit whose file no longer matches is refused, although the digest's bytes are cached.
    f.work.write("models/m.onnx", b"tampered");
    let later = f.work.commit("tampered");
    f.source.fetch().unwrap();
    let err = cache.resolve(&artifact, &f.source, later, &DvcConfig::default()).unwrap_err().to_string();
    assert!(err.starts_with("models/m.onnx has sha256"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"model v1", "the cached bytes are untouched");
}

#[test]
fn a_digest_mismatch_is_refused_and_nothing_is_cached() {
    let f = fixture(&[("models/m.onnx", b"model v1")]);
    let cache = ArtifactCache::new(f.data.path());
    let wrong = sha(b"something else");
    let artifact = reference(ArtifactSource::Repo(RepoPath::parse("models/m.onnx").unwrap()), wrong.clone());
    let err = cache.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).unwrap_err().to_string();
    assert_eq!(err, format!("models/m.onnx has sha256 {}, but the manifest says {wrong}", sha(b"model v1")));
    assert!(!cache.contains(&wrong));
}

#[test]
fn dvc_pointers_resolve_against_a_store_with_md5_and_size_checked() {
    let object = b"dvc model bytes";
    let md5 = hex::encode(Md5::digest(object));
    let store = tempfile::tempdir().unwrap();
    let object_path = store.path().join("files/md5").join(&md5[..2]).join(&md5[2..]);
    fs::create_dir_all(object_path.parent().unwrap()).unwrap();
    fs::write(&object_path, object).unwrap();
    let pointer = format!("outs:\n- md5: {md5}\n  size: {}\n  hash: md5\n  path: model.onnx\n", object.len());
    let bad_size = format!("outs:\n- md5: {md5}\n  size: 3\n  path: model.onnx\n");
    let f = fixture(&[("models/model.onnx.dvc", pointer.as_bytes()), ("models/bad.onnx.dvc", bad_size.as_bytes())]);
    let cache = ArtifactCache::new(f.data.path());
    let config = DvcConfig { stores: vec![store.path().to_path_buf()] };
    let artifact = reference(ArtifactSource::Dvc(RepoPath::parse("models/model.onnx.dvc").unwrap()), sha(object));
    assert_eq!(fs::read(cache.resolve(&artifact, &f.source, f.commit, &config).unwrap()).unwrap(), object);
    // Once cached, a DVC artifact needs no store: a rollback works with the remote gone.
    assert!(cache.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).is_ok());

    let artifact = reference(ArtifactSource::Dvc(RepoPath::parse("models/bad.onnx.dvc").unwrap()), sha(b"x"));
    let err = cache.resolve(&artifact, &f.source, f.commit, &config).unwrap_err().to_string();
    assert!(err.contains("the pointer says 3"), "{err}");
    let err = cache.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).unwrap_err().to_string();
    assert!(err.contains("no DVC store configured"), "{err}");
}

#[test]
fn file_uris_are_read_under_the_artifact_roots_only_and_only_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("ref.csv"), b"a,b\n1,2\n").unwrap();
    fs::write(dir.path().join("secret"), b"private key").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(root.join("fifo")).status().unwrap().success());
    let f = fixture(&[("x", b"x")]);
    let uri = |path: &Path| format!("file://{}", path.display());
    let resolve = |cache: &ArtifactCache, uri: String, sha256: String| {
        cache.resolve(&reference(ArtifactSource::Uri(uri), sha256), &f.source, f.commit, &DvcConfig::default())
    };
    // No --artifact-root: refused, saying so.
    let closed = ArtifactCache::new(f.data.path());
    let error = resolve(&closed, uri(&root.join("ref.csv")), sha(b"a,b\n1,2\n")).unwrap_err().to_string();
    assert!(error.contains("no --artifact-root names a folder"), "{error}");

    let cache = ArtifactCache::new(f.data.path())
        .with_policy(ArtifactPolicy { roots: vec![root.clone()], ..ArtifactPolicy::default() });
    assert!(resolve(&cache, uri(&root.join("ref.csv")), sha(b"a,b\n1,2\n")).is_ok());
    // Outside the roots, by path, by `..` and by a symlink: refused before a byte is read (no digest to report).
    for outside in [dir.path().join("secret"), root.join("../secret"), root.join("escape"), "/etc/passwd".into()] {
        let error = resolve(&cache, uri(&outside), sha(b"x")).unwrap_err().to_string();
        assert!(error.contains("is outside the artifact roots"), "{outside:?}: {error}");
        assert!(!error.contains("has sha256"), "{error}");
    }
    // A FIFO (would block a thread forever) and a device (endless) are not regular files.
    let error = resolve(&cache, uri(&root.join("fifo")), sha(b"x")).unwrap_err().to_string();
    assert!(error.contains("FIFO"), "{error}");
    let devices = ArtifactCache::new(f.data.path())
        .with_policy(ArtifactPolicy { roots: vec!["/dev".into()], ..ArtifactPolicy::default() });
    let error = resolve(&devices, "file:///dev/zero".into(), sha(b"x")).unwrap_err().to_string();
    assert!(error.contains("device"), "{error}");
    // A file over the cap is stopped as it streams.
    let small = ArtifactCache::new(f.data.path()).with_policy(ArtifactPolicy {
        roots: vec![root.clone()],
        max_bytes: 4,
        ..ArtifactPolicy::default()
    });
    let error = resolve(&small, uri(&root.join("ref.csv")), sha(b"other")).unwrap_err().to_string();
    assert!(error.contains("larger than the 4-byte limit"), "{error}");
}

#[test]
fn a_cached_artifact_is_hashed_again_before_use_and_a_tampered_one_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("m.onnx"), b"model").unwrap();
    let f = fixture(&[("x", b"x")]);
    let cache = ArtifactCache::new(f.data.path())
        .with_policy(ArtifactPolicy { roots: vec![dir.path().to_path_buf()], ..ArtifactPolicy::default() });
    let artifact =
        reference(ArtifactSource::Uri(format!("file://{}", dir.path().join("m.onnx").display())), sha(b"model"));
    let path = cache.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).unwrap();
    fs::write(&path, b"planted").unwrap();
    // Offline (a restore): the planted file is found out and removed, and nothing is served.
    let error = cache.clone().offline().resolve(&artifact, &f.source, f.commit, &DvcConfig::default());
    assert!(error.unwrap_err().to_string().contains("is not in the artifact cache"));
    assert!(!path.exists());
    // Online: fetched again from its source.
    let path = cache.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).unwrap();
    assert_eq!(fs::read(path).unwrap(), b"model");
}

#[test]
fn a_git_blob_over_the_cap_is_refused_from_its_header() {
    let big = vec![0u8; MAX_GIT_BLOB_BYTES + 1];
    let f = fixture(&[("models/big.onnx", &big)]);
    let cache = ArtifactCache::new(f.data.path());
    let artifact = reference(ArtifactSource::Repo(RepoPath::parse("models/big.onnx").unwrap()), sha(&big));
    let error = cache.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).unwrap_err().to_string();
    assert!(error.contains(&format!("is {} bytes; the limit is {MAX_GIT_BLOB_BYTES}", big.len())), "{error}");
}

#[test]
fn unreachable_or_plain_http_uris_are_clear_errors() {
    let f = fixture(&[("x", b"x")]);
    let cache = ArtifactCache::new(f.data.path())
        .with_policy(ArtifactPolicy { allow_private_hosts: true, ..ArtifactPolicy::default() });
    // Port 1 on loopback refuses at once: the error names the URI and the failure, and nothing is cached.
    let artifact = reference(ArtifactSource::Uri("https://127.0.0.1:1/m.onnx".into()), sha(b"m"));
    let error = cache.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).unwrap_err();
    assert!(error.is_transient(), "a refused connection may pass: retried, the commit not refused");
    let err = error.to_string();
    assert!(err.starts_with("https://127.0.0.1:1/m.onnx: download failed"), "{err}");
    assert!(!cache.contains(&sha(b"m")));
    let artifact = reference(ArtifactSource::Uri("http://127.0.0.1:1/m.onnx".into()), sha(b"m"));
    let error = cache.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).unwrap_err();
    assert!(!error.is_transient(), "plain http is the manifest's fault");
    assert!(error.to_string().contains("plain http is refused"), "{error}");
    // Past the sync's deadline, work stops and the sync is retried, not refused.
    let expired = Deadline { at: Some(Instant::now()), cancel: Arc::default() };
    let late = ArtifactCache::new(f.data.path()).with_deadline(expired);
    let artifact = reference(ArtifactSource::Repo(RepoPath::parse("x").unwrap()), sha(b"x"));
    late.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).unwrap();
    let error = late.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).unwrap_err();
    assert!(error.is_transient() && error.to_string().contains("deadline"), "{error}");
}
