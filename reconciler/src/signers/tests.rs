//! Against commits signed by `git -c gpg.format=ssh commit -S` with keys made by `ssh-keygen`, and `git
//! verify-commit` as the reference.

use std::process::Command;

use super::*;
use crate::source::tests::WorkRepo;

/// An ed25519 key made by ssh-keygen: (private key path, public key line).
fn keygen(dir: &Path, name: &str, kind: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let mut command = Command::new("ssh-keygen");
    command.args(["-q", "-t", kind, "-N", "", "-C", name, "-f"]).arg(&key);
    if kind == "rsa" {
        command.args(["-b", "2048"]);
    }
    assert!(command.status().unwrap().success());
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap().trim().to_owned();
    (key, public)
}

/// Commits everything signed with `key`, or unsigned with `None`.
fn commit(work: &WorkRepo, key: Option<&Path>, message: &str) -> Oid {
    work.git(&["add", "-A"]);
    match key {
        Some(key) => work.git(&[
            "-c",
            "gpg.format=ssh",
            "-c",
            &format!("user.signingkey={}", key.display()),
            "commit",
            "-q",
            "-S",
            "--allow-empty",
            "-m",
            message,
        ]),
        None => work.git(&["commit", "-q", "--allow-empty", "-m", message]),
    };
    Oid::from_str(&work.git(&["rev-parse", "HEAD"])).unwrap()
}

struct Keys {
    dir: tempfile::TempDir,
    alice: PathBuf,
    bob: PathBuf,
    mallory: PathBuf,
    file: PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let (alice, alice_pub) = keygen(dir.path(), "alice", "ed25519");
    let (bob, bob_pub) = keygen(dir.path(), "bob", "ecdsa");
    let (mallory, _) = keygen(dir.path(), "mallory", "ed25519");
    let file = dir.path().join("allowed_signers");
    std::fs::write(
        &file,
        format!("# who may deploy\nalice@example.com namespaces=\"git\" {alice_pub}\nbob@example.com,ops@example.com {bob_pub}\n"),
    )
    .unwrap();
    Keys { dir, alice, bob, mallory, file }
}

#[test]
fn signed_heads_verify_and_unsigned_or_unknown_ones_are_refused_with_the_fingerprint() {
    let keys = keys();
    let work = WorkRepo::new();
    work.write("deploy/m.yaml", b"a: 1\n");
    let signed = commit(&work, Some(&keys.alice), "by alice");
    // git itself agrees (the reference behaviour).
    let verified = Command::new("git")
        .args([
            "-c",
            &format!("gpg.ssh.allowedSignersFile={}", keys.file.display()),
            "verify-commit",
            &signed.to_string(),
        ])
        .current_dir(work.dir.path())
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));

    let repo = Repository::open(work.dir.path()).unwrap();
    let allowed = AllowedSigners::load(&keys.file).unwrap();
    let signer = allowed.verify(&repo, signed).unwrap();
    assert_eq!(signer.principals, ["alice@example.com"]);
    assert!(signer.fingerprint.starts_with("SHA256:"), "{}", signer.fingerprint);
    let by_bob = commit(&work, Some(&keys.bob), "by bob (ecdsa)");
    assert_eq!(allowed.verify(&repo, by_bob).unwrap().principals, ["bob@example.com", "ops@example.com"]);

    let unsigned = commit(&work, None, "unsigned");
    let error = allowed.verify(&repo, unsigned).unwrap_err();
    assert!(error.contains("is not signed"), "{error}");

    let by_mallory = commit(&work, Some(&keys.mallory), "by mallory");
    let error = allowed.verify(&repo, by_mallory).unwrap_err();
    let mallory_pub = std::fs::read_to_string(keys.mallory.with_extension("pub")).unwrap();
    let fingerprint = PublicKey::from_openssh(mallory_pub.trim()).unwrap().fingerprint(HashAlg::Sha256).to_string();
    assert!(
        error.contains(&format!("signed by key {fingerprint}, which")) && error.contains("does not list"),
        "{error}"
    );
}

#[test]
fn a_tampered_commit_does_not_verify() {
    let keys = keys();
    let work = WorkRepo::new();
    work.write("deploy/m.yaml", b"a: 1\n");
    let signed = commit(&work, Some(&keys.alice), "by alice");
    // The same signature on another tree: a new commit object carrying alice's gpgsig header.
    let raw = work.git(&["cat-file", "commit", &signed.to_string()]);
    work.write("deploy/m.yaml", b"a: 2\n");
    work.git(&["add", "-A"]);
    let tree = work.git(&["write-tree"]);
    let forged = raw.replacen(&raw.lines().next().unwrap().to_owned(), &format!("tree {tree}"), 1);
    work.write("forged", format!("{forged}\n").as_bytes());
    let id = work.git(&["hash-object", "-t", "commit", "-w", "forged"]);
    let repo = Repository::open(work.dir.path()).unwrap();
    let error = AllowedSigners::load(&keys.file).unwrap().verify(&repo, Oid::from_str(&id).unwrap()).unwrap_err();
    assert!(error.contains("does not verify"), "{error}");
}

#[test]
fn path_rules_limit_who_may_change_a_manifest() {
    let keys = keys();
    let work = WorkRepo::new();
    work.write("deploy/fraud.yaml", b"a: 1\n");
    work.write("deploy/other.yaml", b"a: 1\n");
    let first = commit(&work, Some(&keys.alice), "first");
    let repo = Repository::open(work.dir.path()).unwrap();
    let policy = SignerPolicy {
        allowed: Some(AllowedSigners::load(&keys.file).unwrap()),
        paths: vec![PathRule::parse("deploy/fraud.yaml=ops@example.com").unwrap()],
    };
    // Bob (ops) may change fraud.yaml; alice may change other.yaml but not fraud.yaml.
    work.write("deploy/fraud.yaml", b"a: 2\n");
    let by_bob = commit(&work, Some(&keys.bob), "bob changes fraud");
    assert!(policy.check(&repo, by_bob, Some(first)).is_ok());
    work.write("deploy/other.yaml", b"a: 2\n");
    let by_alice = commit(&work, Some(&keys.alice), "alice changes other");
    assert!(policy.check(&repo, by_alice, Some(by_bob)).is_ok());
    work.write("deploy/fraud.yaml", b"a: 3\n");
    let sneaky = commit(&work, Some(&keys.alice), "alice changes fraud");
    let error = policy.check(&repo, sneaky, Some(by_alice)).unwrap_err();
    assert!(
        error.contains(
            "changes deploy/fraud.yaml, which only ops@example.com may change; it is signed by alice@example.com"
        ),
        "{error}"
    );
    // Folder rules match what is under them.
    let folder = PathRule::parse("deploy/=ops@example.com").unwrap();
    assert!(folder.matches("deploy/fraud.yaml") && !folder.matches("deployment/x.yaml"));
}

#[test]
fn allowed_signers_lines_are_read_as_ssh_keygen_reads_them_and_errors_name_the_line() {
    let keys = keys();
    let alice = std::fs::read_to_string(keys.alice.with_extension("pub")).unwrap();
    let alice = alice.trim();
    let file = Path::new("allowed_signers");
    let parsed = AllowedSigners::parse(
        &format!("\"alice@example.com,a b@example.com\" valid-after=\"20200101\",valid-before=20300101Z {alice}\n"),
        file,
    )
    .unwrap();
    let entry = &parsed.entries[0];
    assert_eq!(entry.principals, ["alice@example.com", "a b@example.com"]);
    assert_eq!(entry.valid_after, Some(1_577_836_800));
    assert_eq!(entry.valid_before, Some(1_893_456_000));
    let error = AllowedSigners::parse(&format!("# x\nca@example.com cert-authority {alice}\n"), file).unwrap_err();
    assert_eq!(
        error,
        "allowed signers allowed_signers:2: cert-authority entries are not supported; list each signer's key"
    );
    let error = AllowedSigners::parse("alice@example.com ssh-ed25519 AAAAnot-base64\n", file).unwrap_err();
    assert!(error.starts_with("allowed signers allowed_signers:1: not an OpenSSH public key"), "{error}");
    assert!(AllowedSigners::parse("# nothing\n", file).unwrap_err().contains("lists no key"));
    drop(keys.dir);
}
