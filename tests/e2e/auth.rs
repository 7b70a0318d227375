//! Who may change state: repository load/unload, sync, rollback and feedback need their token; with no token
//! configured they are taken only on a loopback listener, and refused elsewhere with a message naming the variable.

use bytes::Bytes;
use gateway::auth::Secret;
use http_body_util::Full;
use hyper::{Request, StatusCode};

use crate::support::{model_repo, TestServer};

async fn post_with_token(server: &TestServer, path: &str, body: &str, token: Option<&str>) -> crate::support::Reply {
    let mut request = Request::post(format!("{}{path}", server.base())).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    server.raw(request.body(Full::new(Bytes::from(body.to_owned()))).unwrap()).await
}

const LABEL: &str = r#"{"model":"breast_cancer","id":"nope","label":1}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_reachable_from_the_network_takes_no_anonymous_state_change() {
    let repo = model_repo(&[("breast_cancer", ""), ("digits", "")]);
    // Listening on every address: not loopback, and no token configured.
    let server = TestServer::start_in(repo.path(), |c| c.listen = "0.0.0.0:0".parse().unwrap()).await;
    for path in ["/v2/repository/models/digits/unload", "/v2/repository/models/digits/load", "/api/v1/sync"] {
        post_with_token(&server, path, "", None).await.assert_error(StatusCode::FORBIDDEN, &["set VANE_ADMIN_TOKEN"]);
    }
    post_with_token(&server, "/api/v1/rollback", r#"{"commit":"abc"}"#, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, &["VANE_ADMIN_TOKEN"]);
    post_with_token(&server, "/api/v1/feedback", LABEL, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, &["set VANE_FEEDBACK_TOKEN (or VANE_ADMIN_TOKEN)"]);
    // Nothing changed: digits is still served.
    assert_eq!(server.get("/v2/models/digits/ready").await.status, StatusCode::OK);
    // Reading stays open.
    assert_eq!(server.post("/v2/repository/index", "").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_load_unload_and_feedback_and_bodies_are_read() {
    let repo = model_repo(&[("breast_cancer", ""), ("digits", "")]);
    let server = TestServer::start_in(repo.path(), |c| {
        c.admin_token = Secret::new("admin-secret");
        c.feedback_token = Secret::new("labels-secret");
    })
    .await;
    let unload = "/v2/repository/models/digits/unload";
    post_with_token(&server, unload, "", None).await.assert_error(StatusCode::UNAUTHORIZED, &["token missing"]);
    post_with_token(&server, unload, "", Some("labels-secret"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, &["wrong token"]);
    assert_eq!(server.get("/v2/models/digits/ready").await.status, StatusCode::OK);
    let reply =
        post_with_token(&server, unload, r#"{"parameters":{"unload_dependents":false}}"#, Some("admin-secret")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(server.get("/v2/models/digits/ready").await.status, StatusCode::NOT_FOUND);
    // Triton's load parameters are refused by name, not ignored.
    let load = "/v2/repository/models/digits/load";
    post_with_token(&server, load, r#"{"parameters":{"config":"{}"}}"#, Some("admin-secret"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, &["repository parameter 'config'", "not supported"]);
    let reply = post_with_token(&server, load, "{}", Some("admin-secret")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(server.get("/v2/models/digits/ready").await.status, StatusCode::OK);

    // Feedback: its own token or the admin's. No prediction waits for this id, so the label is taken and reported
    // as unknown.
    post_with_token(&server, "/api/v1/feedback", LABEL, None).await.assert_error(StatusCode::UNAUTHORIZED, &["token"]);
    for token in ["labels-secret", "admin-secret"] {
        let reply = post_with_token(&server, "/api/v1/feedback", LABEL, Some(token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["unknown"], serde_json::json!(["nope"]), "{}", reply.body);
    }
    // The status page and metrics never show a token.
    let status = server.get("/api/v1/status").await.body.to_string();
    let metrics = server.get("/metrics").await.body.to_string();
    for secret in ["admin-secret", "labels-secret"] {
        assert!(!status.contains(secret) && !metrics.contains(secret));
    }
}
