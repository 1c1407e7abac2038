//! The `<name>-http` binaries as Knative runs them: settings from the
//! environment, PostgreSQL on loopback, a delivery as the broker sends it
//! (the fixture request, byte for byte), publishing to `K_SINK`, health
//! endpoints, and a graceful stop on SIGTERM. Multi-threaded runtimes: the
//! test's own servers (the sink) must answer while a test waits.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DELIVERY: &str = include_str!("../../../events-fixtures/approval.triggered.binary.http");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A child killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &str, env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running(cmd.spawn().unwrap())
}

async fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("http://127.0.0.1:{port}/readyz");
    loop {
        if let Ok(r) = reqwest::get(&url).await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A broker ingress that records what it is sent.
async fn sink() -> (String, Arc<Mutex<Vec<Value>>>) {
    slow_sink(Duration::ZERO).await
}

/// Sends the fixture request as it is, with the length and `Connection: close`.
async fn send_raw(port: u16, request: &str) -> (u16, String, String) {
    let (head, body) = request.split_once("\n\n").unwrap();
    let body = body.trim_end_matches('\n');
    let raw = format!(
        "{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        head.replace('\n', "\r\n"),
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn sigterm(child: &Running) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

async fn wait_exit(child: &mut Running) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_bad_environment_is_refused_naming_every_problem() {
    let out = Command::new(env!("CARGO_BIN_EXE_shipyard-http"))
        .env_clear()
        .env("PORT", "eighty")
        .env("K_SINK", "broker-ingress")
        .env("KEELSON_TASK_STARTED_TIMEOUT", "soon")
        .env("KEELSON_DATABASE_CA_FILE", "/nonexistent/ca.pem")
        .env("KEELSON_DATABASE_POOL_SIZE", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for name in [
        "PORT",
        "KEELSON_DATABASE_URL",
        "K_SINK",
        "KEELSON_TASK_STARTED_TIMEOUT",
        "KEELSON_DATABASE_CA_FILE: /nonexistent/ca.pem",
        "KEELSON_DATABASE_POOL_SIZE",
    ] {
        assert!(err.contains(name), "{name} not named in: {err}");
    }
    let api = Command::new(env!("CARGO_BIN_EXE_api-http"))
        .env_clear()
        .env("KEELSON_DATABASE_URL", "mysql://db/keelson")
        .env("K_SINK", "http://broker")
        .output()
        .unwrap();
    assert_eq!(api.status.code(), Some(2));
    let err = String::from_utf8_lossy(&api.stderr);
    assert!(err.contains("KEELSON_API_TOKEN: not set"), "{err}");
    assert!(err.contains("must be a postgres://"), "{err}");
}

/// A broker ingress that records what it is sent, each answer `delay` late.
async fn slow_sink(delay: Duration) -> (String, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let app = axum::Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: Bytes| {
            let g = g.clone();
            async move {
                let ce = cloudevents::binding::http::to_event(&headers, body.to_vec()).unwrap();
                g.lock().unwrap().push(serde_json::to_value(&ce).unwrap());
                tokio::time::sleep(delay).await;
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_http_takes_the_brokers_delivery_and_publishes_to_k_sink_in_order() {
    let db = keelson_postgres::testing::fresh_database().await;
    let (sink_url, got) = sink().await;
    let port = free_port();
    let mut child = spawn(
        env!("CARGO_BIN_EXE_approval-http"),
        &[
            ("PORT", &port.to_string()),
            ("K_SINK", &sink_url),
            ("KEELSON_DATABASE_URL", &db),
        ],
    );
    wait_ready(port).await;
    let live = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(live.status().as_u16(), 200);

    let (status, head, body) = send_raw(port, DELIVERY).await;
    assert_eq!(status, 202, "{head}\n{body}");
    let sent = got.lock().unwrap().clone();
    let types: Vec<_> = sent.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "sh.keptn.event.approval.started",
            "sh.keptn.event.approval.finished"
        ]
    );
    let finished = &sent[1];
    assert_eq!(
        finished["triggeredid"],
        json!("6de83495-4f83-481c-8dbe-fcceb2e0243b")
    );
    assert_eq!(
        finished["shkeptncontext"],
        json!("08735340-6f9e-4b32-97ff-3b6c292bc50c")
    );
    assert_eq!(finished["data"]["result"], json!("pass"));
    assert!(finished.get("knativearrivaltime").is_none(), "{finished}");

    // A redelivery (the broker retries after a lost answer) publishes the
    // same events again, with the same ids, for consumers to dedupe.
    let (again, _, _) = send_raw(port, DELIVERY).await;
    assert_eq!(again, 202);
    let sent = got.lock().unwrap().clone();
    assert_eq!(sent.len(), 4);
    assert_eq!(
        (&sent[2]["id"], &sent[3]["id"]),
        (&sent[0]["id"], &sent[1]["id"])
    );

    sigterm(&child);
    let exit = wait_exit(&mut child).await;
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_delivery_in_flight_finish_before_the_process_exits() {
    let db = keelson_postgres::testing::fresh_database().await;
    // The broker takes a second to accept each event: the delivery is in
    // flight when SIGTERM arrives.
    let (sink_url, got) = slow_sink(Duration::from_secs(1)).await;
    let port = free_port();
    let mut child = spawn(
        env!("CARGO_BIN_EXE_approval-http"),
        &[
            ("PORT", &port.to_string()),
            ("K_SINK", &sink_url),
            ("KEELSON_DATABASE_URL", &db),
        ],
    );
    wait_ready(port).await;
    let delivery = tokio::spawn(send_raw(port, DELIVERY));
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the delivery never reached the sink"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sigterm(&child);
    let (status, head, body) = delivery.await.unwrap();
    assert_eq!(status, 202, "{head}\n{body}");
    assert_eq!(got.lock().unwrap().len(), 2, "both events were sent");
    let exit = wait_exit(&mut child).await;
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datastore_http_needs_no_sink_and_stores_a_structured_event() {
    use keelson_core::ports::EventStore;
    let db = keelson_postgres::testing::fresh_database().await;
    let port = free_port();
    let mut child = spawn(
        env!("CARGO_BIN_EXE_datastore-http"),
        &[("PORT", &port.to_string()), ("KEELSON_DATABASE_URL", &db)],
    );
    wait_ready(port).await;
    let ev = json!({"specversion": "1.0", "id": "ds-1", "source": "tests",
        "type": "sh.keptn.event.dev.delivery.triggered", "time": "2024-05-02T10:00:00Z",
        "shkeptncontext": "ctx-ds", "data": {"project": "p", "stage": "dev", "service": "s"}});
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/"))
        .header("content-type", "application/cloudevents+json")
        .body(ev.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let store = keelson_postgres::PostgresStore::connect(&db).await.unwrap();
    let page = store
        .query_events(&keelson_core::query::EventQuery {
            keptn_context: Some("ctx-ds".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = page.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["ds-1"]);
    sigterm(&child);
    assert!(wait_exit(&mut child).await.success());
}
