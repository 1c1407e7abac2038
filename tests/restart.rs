//! A restart of `keelson serve` (killed hard) in the middle of a sequence loses nothing.

/// The binary under test, built by cargo for this test target.
const KEELSON: &str = env!("CARGO_BIN_EXE_keelson");

use keelson::client::Client;
use keelson_tests::{free_port, wait_for, SHIPYARD};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the server when the test ends, even by a panic (an orphan would keep
/// the test's output pipe open and hang the test runner).
struct Server(Child);

impl Server {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(dir: &std::path::Path, port: u16) -> Server {
    serve_functions(dir, port, "api,shipyard,datastore")
}

fn serve_functions(dir: &std::path::Path, port: u16, functions: &str) -> Server {
    Server(
        Command::new(KEELSON)
            .args([
                "serve",
                "--data-dir",
                dir.to_str().unwrap(),
                "--port",
                &port.to_string(),
                "--functions",
                functions,
            ])
            .env("KEELSON_API_TOKEN", "restart-token")
            .env("KEELSON_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

async fn ready(c: &Client) {
    wait_for(Duration::from_secs(30), || async {
        Ok(c.get("/v1/metadata").await.ok())
    })
    .await
    .unwrap();
}

async fn open(c: &Client, task: &str, ctx: &str, stage: &str) -> Value {
    wait_for(Duration::from_secs(20), || async {
        let v = c
            .get(&format!(
                "/controlPlane/v1/event/triggered/sh.keptn.event.{task}.triggered?project=rs"
            ))
            .await?;
        Ok(v["events"].as_array().and_then(|a| {
            a.iter()
                .find(|e| e["shkeptncontext"] == json!(ctx) && e["data"]["stage"] == json!(stage))
                .cloned()
        }))
    })
    .await
    .unwrap()
}

async fn answer(c: &Client, t: &Value, kind: &str) {
    let task = t["type"]
        .as_str()
        .unwrap()
        .trim_start_matches("sh.keptn.event.")
        .trim_end_matches(".triggered");
    let mut data = json!({"project": "rs", "stage": t["data"]["stage"], "service": "svc"});
    if kind == "finished" {
        data["result"] = json!("pass");
        data["status"] = json!("succeeded");
    }
    c.send_event(&json!({"type": format!("sh.keptn.event.{task}.{kind}"), "source": "exec", "shkeptncontext": t["shkeptncontext"], "triggeredid": t["id"], "data": data}))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_hard_restart_in_the_middle_of_a_sequence_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let c = Client::new(&format!("http://127.0.0.1:{port}/api"), "restart-token");
    let mut child = serve(dir.path(), port);
    ready(&c).await;
    c.create_project("rs", SHIPYARD).await.unwrap();
    c.create_service("rs", "svc").await.unwrap();
    let ctx = c
        .send_event(&json!({"type": "sh.keptn.event.dev.delivery.triggered", "data": {"project": "rs", "stage": "dev", "service": "svc"}}))
        .await
        .unwrap();
    let dep = open(&c, "deployment", &ctx, "dev").await;
    answer(&c, &dep, "started").await;
    answer(&c, &dep, "finished").await;
    let test = open(&c, "test", &ctx, "dev").await;
    answer(&c, &test, "started").await;
    // Killed without warning (SIGKILL), in the middle of the test task.
    child.kill();

    let mut child = serve(dir.path(), port);
    ready(&c).await;
    let test_again = open(&c, "test", &ctx, "dev").await;
    assert_eq!(
        test_again["id"], test["id"],
        "the open task survived the restart"
    );
    answer(&c, &test_again, "finished").await;
    let rel = open(&c, "release", &ctx, "dev").await;
    answer(&c, &rel, "started").await;
    answer(&c, &rel, "finished").await;
    open(&c, "deployment", &ctx, "hardening").await;
    let evs = wait_for(Duration::from_secs(20), || async {
        let v = c
            .get(&format!(
                "/mongodb-datastore/event?keptnContext={ctx}&pageSize=100"
            ))
            .await?;
        let evs = v["events"].as_array().cloned().unwrap_or_default();
        Ok(evs
            .iter()
            .any(|e| {
                e["type"] == json!("sh.keptn.event.hardening.deployment.triggered")
                    || e["type"] == json!("sh.keptn.event.deployment.triggered")
                        && e["data"]["stage"] == json!("hardening")
            })
            .then_some(evs))
    })
    .await
    .unwrap();
    let types: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for t in [
        "sh.keptn.event.dev.delivery.triggered",
        "sh.keptn.event.deployment.started",
        "sh.keptn.event.deployment.finished",
        "sh.keptn.event.test.started",
        "sh.keptn.event.test.finished",
        "sh.keptn.event.release.finished",
        "sh.keptn.event.dev.delivery.finished",
        "sh.keptn.event.hardening.delivery.triggered",
    ] {
        assert!(types.contains(&t), "{t} lost across the restart: {types:?}");
    }
    child.kill();
}

#[tokio::test]
async fn functions_split_across_two_processes_share_one_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let c = Client::new(&format!("http://127.0.0.1:{port}/api"), "restart-token");
    let mut api = serve_functions(dir.path(), port, "api");
    ready(&c).await;
    let mut workers = serve_functions(dir.path(), 0, "shipyard,datastore");
    c.create_project("rs", SHIPYARD).await.unwrap();
    c.create_service("rs", "svc").await.unwrap();
    let ctx = c
        .send_event(&json!({"type": "sh.keptn.event.dev.delivery.triggered", "data": {"project": "rs", "stage": "dev", "service": "svc"}}))
        .await
        .unwrap();
    for task in ["deployment", "test", "release"] {
        let t = open(&c, task, &ctx, "dev").await;
        answer(&c, &t, "started").await;
        answer(&c, &t, "finished").await;
    }
    open(&c, "deployment", &ctx, "hardening").await;
    let stored = wait_for(Duration::from_secs(20), || async {
        let v = c.get(&format!("/mongodb-datastore/event?keptnContext={ctx}&type=sh.keptn.event.dev.delivery.finished")).await?;
        Ok((v["totalCount"] == json!(1)).then_some(v))
    })
    .await
    .unwrap();
    assert_eq!(stored["events"][0]["source"], json!("shipyard-controller"));
    api.kill();
    workers.kill();
}
