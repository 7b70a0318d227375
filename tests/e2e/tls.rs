//! TLS on both listeners: Triton's Python clients over https and grpcs with a CA made here by openssl, a rotated
//! certificate served without a restart, and mutual TLS refusing a client without a certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gateway::tls::TlsConfig;

use crate::support::TestServer;

/// Runs openssl with `args` in `dir`, failing the test with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA, and `name`.pem / `name`.key signed by it for 127.0.0.1 and localhost (serverAuth or clientAuth).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        crate::support::ensure_debian_package("/usr/bin/openssl", "openssl");
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"]
                .into_iter()
                .chain(["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=vane test CA"])
                .collect::<Vec<_>>(),
        );
        Self { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Issues `name`.pem and `name`.key; `usage` is serverAuth or clientAuth.
    fn issue(&self, name: &str, usage: &str) {
        let dir = self.dir.path();
        let ext = format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n");
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, pem, extfile) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        let subject = format!("/CN={name}");
        openssl(
            dir,
            &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", &key, "-out", &csr]
                .into_iter()
                .chain(["-subj", subject.as_str()])
                .collect::<Vec<_>>(),
        );
        openssl(
            dir,
            &["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"]
                .into_iter()
                .chain(["-out", pem.as_str(), "-extfile", extfile.as_str()])
                .collect::<Vec<_>>(),
        );
    }

    /// The certificate's subject as the server presents it on `addr` (openssl s_client).
    fn served_subject(&self, addr: std::net::SocketAddr) -> String {
        let script = format!(
            "openssl s_client -connect {addr} -CAfile {} </dev/null 2>/dev/null | openssl x509 -noout -subject",
            self.path("ca.pem").display()
        );
        let output = Command::new("sh").args(["-c", &script]).output().unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

async fn serve_tls(pki: &Pki, client_ca: bool) -> TestServer {
    let config = TlsConfig {
        cert: pki.path("server.pem"),
        key: pki.path("server.key"),
        client_ca: client_ca.then(|| pki.path("ca.pem")),
        reload_every: Duration::from_millis(100),
    };
    TestServer::start_with(move |c| {
        c.grpc_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls = Some(config);
    })
    .await
}

/// Runs tests/python/test_tls.py against `server`; `client` names the client certificate for mutual TLS.
async fn tritonclient_over_tls(server: &TestServer, pki: &Pki, client: Option<&str>) -> String {
    let python = tokio::task::spawn_blocking(crate::tritonclient::python_with_requirements).await.unwrap();
    let (https, grpcs) = (server.addr(), server.server.grpc_addr().unwrap());
    let mut command = Command::new("timeout");
    command
        .arg("120")
        .arg(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_tls.py"))
        .env("VANE_HTTPS", https.to_string())
        .env("VANE_GRPCS", grpcs.to_string())
        .env("VANE_CA", pki.path("ca.pem"));
    if let Some(name) = client {
        command.env("VANE_CLIENT_CERT", pki.path(&format!("{name}.pem")));
        command.env("VANE_CLIENT_KEY", pki.path(&format!("{name}.key")));
    }
    let output = tokio::task::spawn_blocking(move || command.output().expect("python runs")).await.unwrap();
    let report = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "the TLS suite failed:\n{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_over_https_and_grpcs_and_a_rotated_certificate_is_served_without_a_restart() {
    let pki = Pki::new();
    pki.issue("server", "serverAuth");
    let server = serve_tls(&pki, false).await;
    let report = tritonclient_over_tls(&server, &pki, None).await;
    assert!(report.contains("Ran 2 tests") && report.contains("skipped"), "{report}");
    // Plain HTTP on the TLS port is not served.
    let plain = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let _ = stream.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(15), plain).await.expect("closed in time");
    assert!(!answer.starts_with(b"HTTP/1.1 200"), "plain HTTP must not be served on a TLS listener");

    // Rotate: a new certificate (another subject) written over the files, as cert-manager does.
    let before = pki.served_subject(server.addr());
    assert!(before.contains("CN = server"), "{before}");
    pki.issue("rotated", "serverAuth");
    let mut reloads = server.server.tls_reloads().expect("serving TLS");
    // The key first, then the certificate, as cert-manager writes them: in between, the pair does not match and the
    // old one keeps serving; the reload is signalled once the new pair loads.
    std::fs::copy(pki.path("rotated.key"), pki.path("server.key")).unwrap();
    std::fs::copy(pki.path("rotated.pem"), pki.path("server.pem")).unwrap();
    tokio::time::timeout(Duration::from_secs(20), reloads.wait_for(|n| *n >= 1))
        .await
        .expect("the rotated certificate is loaded within 20 s")
        .unwrap();
    let now = pki.served_subject(server.addr());
    assert!(now.contains("CN = rotated"), "{now}");
    assert!(pki.served_subject(server.server.grpc_addr().unwrap()).contains("CN = rotated"));
    // Clients still work against the new certificate, on the same process.
    tritonclient_over_tls(&server, &pki, None).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = Pki::new();
    pki.issue("server", "serverAuth");
    pki.issue("client", "clientAuth");
    let server = serve_tls(&pki, true).await;
    let report = tritonclient_over_tls(&server, &pki, Some("client")).await;
    assert!(report.contains("Ran 2 tests") && !report.contains("skipped"), "{report}");
    server.stop().await;
}
