//! The model repository extension over REST: the index (an empty body, as Triton's client sends it), unload and
//! load in model-directory mode (an unloaded model stays unloaded while the directory poller applies other
//! changes), and a refusal naming the repository in GitOps mode.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use crate::support::{model_repo, GitRemote, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_holds_across_polls_until_load() {
    let repo = model_repo(&[("breast_cancer", ""), ("digits", "")]);
    let server = TestServer::start_in(repo.path(), |c| c.poll_interval = Some(Duration::from_millis(20))).await;
    let index = server.post("/v2/repository/index", "").await;
    assert_eq!(index.status, StatusCode::OK, "{}", index.body);
    let rows: Vec<(String, String, String)> = index
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["version"].as_str().unwrap().into(),
                r["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("breast_cancer", "1"), ("breast_cancer", "2"), ("digits", "1")].map(|(n, v)| (
            n.into(),
            v.into(),
            "READY".into()
        ))
    );

    let unload = server.post("/v2/repository/models/digits/unload", "").await;
    assert_eq!((unload.status, &unload.body), (StatusCode::OK, &serde_json::Value::Null));
    server
        .post_json("/v2/models/digits/infer", &json!({"inputs": []}))
        .await
        .assert_error(StatusCode::NOT_FOUND, &["model 'digits' is not served"]);
    let index = server.post_json("/v2/repository/index", &json!({})).await.body;
    assert!(
        index
            .as_array()
            .unwrap()
            .contains(&json!({"name": "digits", "version": "", "state": "UNAVAILABLE", "reason": "unloaded"})),
        "{index}"
    );
    let ready_only = server.post_json("/v2/repository/index", &json!({"ready": true})).await.body;
    assert_eq!(ready_only.as_array().unwrap().len(), 2, "{ready_only}");

    // The poller applies a change elsewhere in the directory (breast_cancer loses version 2); digits stays out.
    let mut sync = server.server.sync_status();
    let applied = sync.borrow().applied;
    std::fs::remove_dir_all(repo.path().join("breast_cancer/2")).unwrap();
    tokio::time::timeout(Duration::from_secs(30), sync.wait_for(|s| s.applied > applied)).await.unwrap().unwrap();
    assert_eq!(server.get("/v2/models/breast_cancer").await.body["versions"], json!(["1"]));
    assert_eq!(server.get("/v2/models/digits/ready").await.status, StatusCode::NOT_FOUND);

    let load = server.post("/v2/repository/models/digits/load", "").await;
    assert_eq!(load.status, StatusCode::OK, "{}", load.body);
    assert_eq!(server.get("/v2/models/digits/ready").await.status, StatusCode::OK);
    server
        .post("/v2/repository/models/nope/load", "")
        .await
        .assert_error(StatusCode::NOT_FOUND, &["model 'nope' is not served"]);
    server.post("/v2/repository/models/nope/unload", "").await.assert_error(StatusCode::NOT_FOUND, &["model 'nope'"]);
    server
        .post("/v2/repository/index", "{not json")
        .await
        .assert_error(StatusCode::BAD_REQUEST, &["invalid JSON body"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_gitops_mode_git_is_the_only_way_to_change_what_is_served() {
    let remote = GitRemote::with_breast_cancer();
    let data = tempfile::tempdir().unwrap();
    let server = crate::gitops::serve(remote.bare.path().display().to_string(), &data).await;
    let url = remote.bare.path().display().to_string();
    for verb in ["load", "unload"] {
        let reply = server.post(&format!("/v2/repository/models/breast_cancer/{verb}"), "").await;
        reply.assert_error(
            StatusCode::CONFLICT,
            &[&format!("cannot {verb} model 'breast_cancer' by hand"), &url, "push"],
        );
    }
    assert_eq!(server.get("/v2/models/breast_cancer/ready").await.status, StatusCode::OK, "still served");
    let index = server.post("/v2/repository/index", "").await.body;
    assert_eq!(index.as_array().unwrap().len(), 2, "{index}");
    server.stop().await;
}
