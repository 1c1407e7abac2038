//! `keelson serve --backend aws` as a process: it provisions a fresh stack on
//! the emulator and runs a delivery end to end, then stops on SIGTERM.

const KEELSON: &str = env!("CARGO_BIN_EXE_keelson");

use keelson::client::Client;
use keelson_tests::{free_port, wait_for, ONE_STAGE};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_with_the_aws_backend_runs_a_delivery_on_the_emulator() {
    let endpoint = keelson_aws::emulator::test_endpoint();
    keelson_aws::emulator::ensure(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        &endpoint,
    );
    let stack = format!("cli{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let port = free_port();
    let mut child = Killed(
        Command::new(KEELSON)
            .args([
                "serve",
                "--backend",
                "aws",
                "--provision",
                "--stack",
                &stack,
            ])
            .args(["--aws-endpoint", &endpoint, "--port", &port.to_string()])
            .env("KEELSON_API_TOKEN", "aws-token")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let c = Client::new(&format!("http://127.0.0.1:{port}/api"), "aws-token");
    wait_for(Duration::from_secs(30), || async {
        Ok(c.get("/v1/metadata").await.ok())
    })
    .await
    .unwrap();
    c.create_project("shop", ONE_STAGE).await.unwrap();
    c.create_service("shop", "cart").await.unwrap();
    let ctx = c
        .send_event(
            &json!({"type": "sh.keptn.event.dev.delivery.triggered", "source": "cli-test",
            "data": {"project": "shop", "stage": "dev", "service": "cart"}}),
        )
        .await
        .unwrap();
    for task in ["deployment", "test", "release"] {
        let path = format!(
            "/controlPlane/v1/event/triggered/sh.keptn.event.{task}.triggered?project=shop"
        );
        let trigger: Value = wait_for(Duration::from_secs(20), || async {
            let v = c.get(&path).await?;
            Ok(v["events"].as_array().and_then(|a| {
                a.iter()
                    .find(|e| e["shkeptncontext"] == json!(ctx))
                    .cloned()
            }))
        })
        .await
        .unwrap();
        for kind in ["started", "finished"] {
            c.send_event(&json!({"type": format!("sh.keptn.event.{task}.{kind}"), "source": "cli-test",
                "shkeptncontext": ctx, "triggeredid": trigger["id"],
                "data": {"project": "shop", "stage": "dev", "service": "cart", "status": "succeeded", "result": "pass"}}))
                .await
                .unwrap();
        }
    }
    let seq = wait_for(Duration::from_secs(20), || async {
        let s = c.sequences("shop", Some(&ctx)).await?;
        Ok(s.into_iter().find(|s| s["state"] == json!("finished")))
    })
    .await
    .unwrap();
    assert_eq!(seq["stages"][0]["state"], json!("succeeded"));
    // Stored by the datastore function through its own queue.
    let stored = wait_for(Duration::from_secs(20), || async {
        let v = c
            .get(&format!("/mongodb-datastore/event?keptnContext={ctx}&type=sh.keptn.event.dev.delivery.finished"))
            .await?;
        Ok((v["totalCount"] == json!(1)).then_some(v))
    })
    .await
    .unwrap();
    assert_eq!(stored["events"][0]["data"]["result"], json!("pass"));

    let pid = child.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut out = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(out.contains(&format!("stack {stack}")), "{out}");
    assert!(out.contains("Stopping."), "{out}");
}
