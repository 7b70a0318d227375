//! The network transports against real servers on loopback: https (Git's `http-backend` behind TLS and a token,
//! served by `git_https_server.py`) and ssh (OpenSSH's `sshd`, a client key, host keys checked against known_hosts).
//!
//! `harness = false`: libgit2's CA file is a process-wide setting that must be applied before any thread uses Git,
//! so this binary runs its cases one after another on the main thread, and prints cargo's summary line itself.
//! OpenSSH's server is installed from Debian when missing, so the README's test command needs nothing by hand.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reconciler::artifacts::{ArtifactCache, ArtifactPolicy, DvcConfig};
use reconciler::manifest::{ArtifactRef, ArtifactSource};
use reconciler::source::{set_global_options, GitAuth, GitSource, GitSpec, GlobalOptions};
use sha2::{Digest, Sha256};

/// A child process killed when dropped, so a failed case leaves no server behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    run(Command::new("git").arg("-C").arg(dir).args(args))
}

/// A bare repository `remote.git` under `root`, holding one commit with a manifest; returns the commit.
fn seed_remote(root: &Path) -> String {
    let work = root.join("work");
    std::fs::create_dir_all(work.join("deploy")).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["config", "user.email", "ci@vane.dev"]);
    git(&work, &["config", "user.name", "ci"]);
    std::fs::write(work.join("deploy/m.yaml"), "apiVersion: vane.dev/v1alpha1\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "seed"]);
    run(Command::new("git").args(["clone", "-q", "--bare"]).arg(&work).arg(root.join("remote.git")));
    git(&work, &["rev-parse", "HEAD"]).trim().to_owned()
}

/// Fetches `url` with `auth` into a fresh clone; returns the head fetched and the manifests it lists.
fn fetch(url: &str, auth: GitAuth) -> Result<(String, Vec<String>), String> {
    let data = tempfile::tempdir().unwrap();
    let spec = GitSpec { auth, ..GitSpec::new(url, "main", "deploy") };
    let source = GitSource::open(&GitSource::clone_dir(data.path()), spec, Arc::new(AtomicBool::new(false)))
        .map_err(|e| e.to_string())?;
    let remote = source.remote_head().map_err(|e| e.to_string())?;
    let head = source.fetch().map_err(|e| e.to_string())?;
    assert_eq!(remote, head, "ls-remote and fetch agree");
    let files = source.manifests(head).map_err(|e| e.to_string())?;
    Ok((head.to_string(), files.into_iter().map(|(path, _)| path).collect()))
}

fn expect_error(result: Result<(String, Vec<String>), String>, needle: &str) {
    match result {
        Ok(fetched) => panic!("expected an error with {needle:?}, fetched {fetched:?}"),
        Err(error) => assert!(error.contains(needle), "error {error:?} should contain {needle:?}"),
    }
}

// === https ===

struct Https {
    /// The CA that signed the server's certificate.
    cert: PathBuf,
    _server: KillOnDrop,
    _plain: KillOnDrop,
    url: String,
    plain_url: String,
    commit: String,
    _dir: tempfile::TempDir,
}

const TOKEN: &str = "glpat-test-token-1234";

/// Starts `git_https_server.py` over `root`; `tls` is (cert, key), or None for plain HTTP. Returns it and its port.
fn git_http_server(root: &Path, tls: Option<(&Path, &Path)>) -> (KillOnDrop, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/git_https_server.py");
    let (cert, key) = tls.unwrap_or((Path::new("-"), Path::new("-")));
    let mut child = Command::new("python3")
        .arg(script)
        .arg(root)
        .arg(cert)
        .arg(key)
        .arg(TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    // The server prints its port once it listens: that line is the readiness signal.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("server said {line:?}"));
    (KillOnDrop(child), port)
}

/// Certificates for 127.0.0.1 and the TLS Git server (plus a plain-HTTP twin), before any Git call in
/// this process.
fn start_https() -> (Https, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let commit = seed_remote(dir.path());
    // A private CA and a leaf certificate for 127.0.0.1 signed by it, as a company's Git server would have.
    let path = |name: &str| dir.path().join(name);
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args).current_dir(dir.path()).stderr(Stdio::null()));
    openssl(
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=Vane Test CA"]
            .into_iter()
            .chain(["-keyout", "ca.key", "-out", "ca.pem"])
            .collect::<Vec<_>>(),
    );
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.csr",
    ]);
    std::fs::write(path("leaf.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "cert.pem",
    ]);
    let (ca, cert, key) = (path("ca.pem"), path("cert.pem"), path("key.pem"));
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    std::fs::write(dir.path().join("files/model.onnx"), ARTIFACT).unwrap();
    let (server, port) = git_http_server(dir.path(), Some((&cert, &key)));
    let (plain, plain_port) = git_http_server(dir.path(), None);
    let https = Https {
        cert: ca.clone(),
        _server: server,
        _plain: plain,
        url: format!("https://127.0.0.1:{port}/remote.git"),
        plain_url: format!("http://127.0.0.1:{plain_port}/remote.git"),
        commit,
        _dir: dir,
    };
    (https, ca)
}

fn token(token: &str) -> GitAuth {
    GitAuth { token: Some(token.to_owned()), ..GitAuth::default() }
}

fn https_with_the_token_fetches(https: &Https) {
    let (head, files) = fetch(&https.url, token(TOKEN)).unwrap();
    assert_eq!(head, https.commit);
    assert_eq!(files, ["deploy/m.yaml"]);
}

fn https_with_a_wrong_or_missing_token_says_so(https: &Https) {
    expect_error(fetch(&https.url, token("wrong")), "refused the token");
    expect_error(fetch(&https.url, GitAuth::default()), "set VANE_GIT_TOKEN");
}

fn https_never_sends_a_token_over_plain_http(https: &Https) {
    // A server that asks for credentials over plain HTTP: the token must not leave the process.
    expect_error(fetch(&https.plain_url, token(TOKEN)), "only sent over https");
}

fn https_with_an_untrusted_certificate_is_refused(https: &Https) {
    expect_error(fetch(&https.url, token(TOKEN)), "certificate");
}

const ARTIFACT: &[u8] = b"an onnx model, served like a presigned object-store URL";

/// Resolves an https artifact into a fresh cache trusting `ca`; returns the bytes cached and the data directory.
fn download(
    https: &Https,
    name: &str,
    sha256: String,
    ca: Option<PathBuf>,
) -> (Result<Vec<u8>, String>, tempfile::TempDir) {
    // The test server is on loopback, which artifact hosts may be only when the operator allows it.
    let policy = ArtifactPolicy { allow_private_hosts: true, ..ArtifactPolicy::default() };
    download_with(https, name, sha256, ca, policy)
}

fn download_with(
    https: &Https,
    name: &str,
    sha256: String,
    ca: Option<PathBuf>,
    policy: ArtifactPolicy,
) -> (Result<Vec<u8>, String>, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let spec = GitSpec { auth: token(TOKEN), ..GitSpec::new(&https.url, "main", "deploy") };
    let source = GitSource::open(&GitSource::clone_dir(data.path()), spec, Arc::new(AtomicBool::new(false))).unwrap();
    let commit = source.fetch().unwrap();
    let cache = ArtifactCache::new(data.path()).with_ca_file(ca).with_policy(policy);
    let uri = format!("{}/{name}", https.url.trim_end_matches("/remote.git"));
    let artifact = ArtifactRef { source: ArtifactSource::Uri(uri), sha256 };
    let result = cache.resolve(&artifact, &source, commit, &DvcConfig::default());
    (result.map(|path| std::fs::read(path).unwrap()).map_err(|e| e.to_string()), data)
}

fn https_artifacts_are_downloaded_verified_and_cached(https: &Https) {
    let sha = hex::encode(Sha256::digest(ARTIFACT));
    let (bytes, data) = download(https, "files/model.onnx", sha.clone(), Some(https.cert.clone()));
    assert_eq!(bytes.unwrap(), ARTIFACT);
    assert!(data.path().join("artifacts/sha256").join(&sha).is_file());
}

fn https_artifacts_with_a_wrong_digest_leave_nothing_cached(https: &Https) {
    let wrong = hex::encode(Sha256::digest(b"another model"));
    let (result, data) = download(https, "files/model.onnx", wrong, Some(https.cert.clone()));
    let error = result.unwrap_err();
    assert!(error.contains("but the manifest says"), "{error}");
    let folder = data.path().join("artifacts/sha256");
    let left: Vec<_> =
        std::fs::read_dir(&folder).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "no partial file or wrong digest left behind: {left:?}");
}

fn https_artifact_errors_name_the_status_and_the_certificate(https: &Https) {
    let sha = hex::encode(Sha256::digest(ARTIFACT));
    let (result, _) = download(https, "files/missing.onnx", sha.clone(), Some(https.cert.clone()));
    let error = result.unwrap_err();
    assert!(error.contains("HTTP 404"), "{error}");
    let (result, _) = download(https, "files/model.onnx", sha, None);
    let error = result.unwrap_err();
    assert!(error.contains("certificate") || error.contains("UnknownIssuer"), "{error}");
}

/// Redirects are followed over https only: a presigned URL's hop works, one to plain http (or to cloud metadata
/// behind it) is refused naming where it led.
fn https_artifacts_follow_redirects_over_https_only(https: &Https) {
    let sha = hex::encode(Sha256::digest(ARTIFACT));
    let (bytes, _) = download(https, "redirect-https/model.onnx", sha.clone(), Some(https.cert.clone()));
    assert_eq!(bytes.unwrap(), ARTIFACT);
    let (result, data) = download(https, "redirect-http/model.onnx", sha, Some(https.cert.clone()));
    let error = result.unwrap_err();
    assert!(error.contains("redirects to http://127.0.0.1:") && error.contains("only https is followed"), "{error}");
    assert!(std::fs::read_dir(data.path().join("artifacts/sha256")).map_or(true, |mut d| d.next().is_none()));
}

/// Without --allow-private-artifact-hosts, a host at a loopback (private, link-local) address is refused before
/// anything is sent to it.
fn https_artifact_hosts_at_private_addresses_are_refused_by_default(https: &Https) {
    let sha = hex::encode(Sha256::digest(ARTIFACT));
    let (result, _) =
        download_with(https, "files/model.onnx", sha, Some(https.cert.clone()), ArtifactPolicy::default());
    let error = result.unwrap_err();
    assert!(error.contains("127.0.0.1 resolves to 127.0.0.1, a loopback, private or link-local address"), "{error}");
}

// === ssh ===

struct Ssh {
    _server: KillOnDrop,
    url: String,
    commit: String,
    port: u16,
    host_key: String,
    client_key: PathBuf,
    dir: tempfile::TempDir,
}

/// Installs Debian's openssh-server when `sshd` is missing (we run as root in CI and on the dev machines).
fn sshd_binary() -> PathBuf {
    let sshd = PathBuf::from("/usr/sbin/sshd");
    if !sshd.exists() {
        eprintln!("transports: installing openssh-server from Debian for the ssh tests");
        run(Command::new("apt-get").args(["update", "-qq"]));
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", "openssh-server"])
            .env("DEBIAN_FRONTEND", "noninteractive"));
    }
    sshd
}

fn start_ssh() -> Ssh {
    let sshd = sshd_binary();
    let dir = tempfile::tempdir().unwrap();
    let commit = seed_remote(dir.path());
    let keygen = |path: &Path| {
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path));
    };
    let (host_key, client_key) = (dir.path().join("host_key"), dir.path().join("client_key"));
    keygen(&host_key);
    keygen(&client_key);
    std::fs::copy(client_key.with_extension("pub"), dir.path().join("authorized_keys")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let user = run(Command::new("id").arg("-un")).trim().to_owned();
    let config = dir.path().join("sshd_config");
    let d = dir.path().display();
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nAllowUsers {user}\n"
        ),
    )
    .unwrap();
    // sshd running as root wants its privilege-separation directory.
    std::fs::create_dir_all("/run/sshd").ok();
    let mut child =
        Command::new(&sshd).arg("-D").arg("-e").arg("-f").arg(&config).stderr(Stdio::piped()).spawn().expect("sshd");
    // Readiness: sshd logs "Server listening on 127.0.0.1 port N." once bound.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "sshd exited before listening:\n{log}");
        log.push_str(&line);
        if line.contains("Server listening on 127.0.0.1") {
            break;
        }
    }
    // Keep draining its log so sshd never blocks on a full pipe.
    std::thread::spawn(move || for _ in stderr.lines() {});
    let host_key = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
    let url = format!("ssh://{user}@127.0.0.1:{port}{}", dir.path().join("remote.git").display());
    Ssh { _server: KillOnDrop(child), url, commit, port, host_key, client_key, dir }
}

impl Ssh {
    /// A known_hosts file with `lines`; returns auth using the client key and that file.
    fn auth(&self, name: &str, lines: &str) -> GitAuth {
        let file = self.dir.path().join(name);
        std::fs::write(&file, lines).unwrap();
        GitAuth { ssh_key: Some(self.client_key.clone()), known_hosts: Some(file), ..GitAuth::default() }
    }

    /// The server's key as a known_hosts line for `[127.0.0.1]:port`.
    fn known_line(&self) -> String {
        let mut fields = self.host_key.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }
}

fn ssh_with_a_listed_host_key_fetches(ssh: &Ssh) {
    let (head, files) = fetch(&ssh.url, ssh.auth("known_hosts", &ssh.known_line())).unwrap();
    assert_eq!(head, ssh.commit);
    assert_eq!(files, ["deploy/m.yaml"]);
}

fn ssh_with_a_hashed_known_hosts_file_fetches(ssh: &Ssh) {
    let auth = ssh.auth("known_hosts_hashed", &ssh.known_line());
    let file = auth.known_hosts.clone().unwrap();
    // OpenSSH hashes the file in place, as Debian's HashKnownHosts does for every new host.
    run(Command::new("ssh-keygen").arg("-H").arg("-f").arg(&file).stderr(Stdio::null()));
    let hashed = std::fs::read_to_string(&file).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    assert_eq!(fetch(&ssh.url, auth).unwrap().0, ssh.commit);
}

fn ssh_with_an_unknown_host_is_refused(ssh: &Ssh) {
    expect_error(fetch(&ssh.url, ssh.auth("known_hosts_empty", "")), "is not in");
}

fn ssh_with_a_changed_host_key_is_refused(ssh: &Ssh) {
    let other = ssh.dir.path().join("other_host_key");
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&other));
    let other = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut fields = other.split_whitespace();
    let line = format!("[127.0.0.1]:{} {} {}\n", ssh.port, fields.next().unwrap(), fields.next().unwrap());
    expect_error(fetch(&ssh.url, ssh.auth("known_hosts_changed", &line)), "HOST KEY CHANGED");
}

fn ssh_with_a_key_the_server_does_not_know_is_refused(ssh: &Ssh) {
    let stranger = ssh.dir.path().join("stranger_key");
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&stranger));
    let auth = GitAuth { ssh_key: Some(stranger), ..ssh.auth("known_hosts", &ssh.known_line()) };
    expect_error(fetch(&ssh.url, auth), "refused the key");
}

fn main() {
    let started = Instant::now();
    let (https, cert) = start_https();
    let ssh = start_ssh();
    let mut passed = 0;
    let mut case = |name: &str, check: &dyn Fn()| {
        check();
        println!("test {name} ... ok");
        passed += 1;
    };
    // Before the CA is trusted: libgit2 and OpenSSL refuse the self-signed certificate.
    case("https_with_an_untrusted_certificate_is_refused", &|| https_with_an_untrusted_certificate_is_refused(&https));
    // Still on the main thread, before any other thread touches libgit2 (see set_global_options).
    set_global_options(&GlobalOptions {
        connect_timeout: Some(Duration::from_secs(10)),
        io_timeout: Some(Duration::from_secs(30)),
        ca_file: Some(cert),
    })
    .unwrap();
    case("https_with_the_token_fetches", &|| https_with_the_token_fetches(&https));
    case("https_with_a_wrong_or_missing_token_says_so", &|| https_with_a_wrong_or_missing_token_says_so(&https));
    case("https_never_sends_a_token_over_plain_http", &|| https_never_sends_a_token_over_plain_http(&https));
    case("https_artifacts_are_downloaded_verified_and_cached", &|| {
        https_artifacts_are_downloaded_verified_and_cached(&https)
    });
    case("https_artifacts_with_a_wrong_digest_leave_nothing_cached", &|| {
        https_artifacts_with_a_wrong_digest_leave_nothing_cached(&https)
    });
    case("https_artifact_errors_name_the_status_and_the_certificate", &|| {
        https_artifact_errors_name_the_status_and_the_certificate(&https)
    });
    case("https_artifacts_follow_redirects_over_https_only", &|| {
        https_artifacts_follow_redirects_over_https_only(&https)
    });
    case("https_artifact_hosts_at_private_addresses_are_refused_by_default", &|| {
        https_artifact_hosts_at_private_addresses_are_refused_by_default(&https)
    });
    case("ssh_with_a_listed_host_key_fetches", &|| ssh_with_a_listed_host_key_fetches(&ssh));
    case("ssh_with_a_hashed_known_hosts_file_fetches", &|| ssh_with_a_hashed_known_hosts_file_fetches(&ssh));
    case("ssh_with_an_unknown_host_is_refused", &|| ssh_with_an_unknown_host_is_refused(&ssh));
    case("ssh_with_a_changed_host_key_is_refused", &|| ssh_with_a_changed_host_key_is_refused(&ssh));
    case("ssh_with_a_key_the_server_does_not_know_is_refused", &|| {
        ssh_with_a_key_the_server_does_not_know_is_refused(&ssh)
    });
    println!(
        "\ntest result: ok. {passed} passed; 0 failed; 0 ignored; finished in {:.2}s",
        started.elapsed().as_secs_f64()
    );
}
