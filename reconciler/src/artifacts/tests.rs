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
fn file_uris_are_read_and_unreachable_or_plain_http_uris_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("ref.csv"), b"a,b\n1,2\n").unwrap();
    let f = fixture(&[("x", b"x")]);
    let cache = ArtifactCache::new(f.data.path());
    let uri = format!("file://{}", dir.path().join("ref.csv").display());
    let artifact = reference(ArtifactSource::Uri(uri), sha(b"a,b\n1,2\n"));
    assert!(cache.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).is_ok());
    // Port 1 on loopback refuses at once: the error names the URI and the failure, and nothing is cached.
    let artifact = reference(ArtifactSource::Uri("https://127.0.0.1:1/m.onnx".into()), sha(b"m"));
    let err = cache.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).unwrap_err().to_string();
    assert!(err.starts_with("https://127.0.0.1:1/m.onnx: download failed"), "{err}");
    assert!(!cache.contains(&sha(b"m")));
    let artifact = reference(ArtifactSource::Uri("http://127.0.0.1:1/m.onnx".into()), sha(b"m"));
    let err = cache.resolve(&artifact, &f.source, f.commit, &DvcConfig::default()).unwrap_err().to_string();
    assert!(err.contains("plain http is refused"), "{err}");
}
