//! The Lambda binaries as Lambda runs them: each bootstrap is started against
//! a stub of the Lambda Runtime API on loopback, takes an invocation, and
//! answers it, with its state and events on the emulator.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use keelson_aws::names::Names;
use keelson_aws::provision::{provision, Template, TEMPLATE};
use keelson_aws::sqs::queue_url;
use keelson_aws::{clients, emulator, Settings};
use keelson_core::ports::EventStore;
use keelson_core::query::EventQuery;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Clone)]
struct Stub {
    next: Arc<Mutex<Vec<Value>>>,
    answers: mpsc::UnboundedSender<(String, Value)>,
}

async fn next(State(s): State<Stub>) -> (HeaderMap, Json<Value>) {
    loop {
        let ev = s.next.lock().unwrap().pop();
        if let Some(ev) = ev {
            let mut h = HeaderMap::new();
            h.insert("lambda-runtime-aws-request-id", "req-1".parse().unwrap());
            h.insert(
                "lambda-runtime-deadline-ms",
                "9999999999999".parse().unwrap(),
            );
            h.insert(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:f"
                    .parse()
                    .unwrap(),
            );
            return (h, Json(ev));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn answer(State(s): State<Stub>, Path((id, kind)): Path<(String, String)>, body: String) {
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let _ = s.answers.send((format!("{id}/{kind}"), v));
}

async fn init_error(State(s): State<Stub>, body: String) {
    let _ = s.answers.send(("init/error".into(), Value::String(body)));
}

/// Runs `bin` for one invocation with `event`; returns what it answered.
async fn invoke(
    bin: &str,
    stack: &str,
    endpoint: &str,
    env: &[(&str, String)],
    event: Value,
) -> (String, Value) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stub = Stub {
        next: Arc::new(Mutex::new(vec![event])),
        answers: tx,
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(answer))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(stub);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let names = Names::new(stack);
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "f")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "s")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "g")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("KEELSON_TABLE", names.table())
        .env("KEELSON_BUS", names.bus())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
    let _ = child.kill();
    let _ = child.wait();
    got.expect("an answer within 30 s").expect("an answer")
}

fn envelope(id: &str) -> String {
    json!({"version": "0", "id": "x", "detail-type": "sh.keptn.event.deployment.finished", "source": "keelson",
        "detail": {"specversion": "1.0", "id": id, "source": "test", "type": "sh.keptn.event.deployment.finished",
            "shkeptncontext": "5b8bb7ac-6c5e-4a4e-8a8e-1d2b9d6a4c11", "time": "2026-12-01T10:00:00.000Z",
            "data": {"project": "p", "stage": "dev", "service": "s"}}})
    .to_string()
}

/// (type, data) of at least `n` events published to the stack's bus (read
/// from the datastore's queue, which receives every event), sorted by type.
async fn on_the_bus(sqs: &aws_sdk_sqs::Client, names: &Names, n: usize) -> Vec<(String, Value)> {
    let queue = queue_url(sqs, &names.queue("datastore")).await.unwrap();
    let mut seen: Vec<(String, Value)> = vec![];
    for _ in 0..10 {
        let got = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in got.messages() {
            let v: Value = serde_json::from_str(m.body().unwrap()).unwrap();
            seen.push((
                v["detail-type"].as_str().unwrap().to_string(),
                v["detail"]["data"].clone(),
            ));
        }
        if seen.len() >= n {
            break;
        }
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    seen
}

/// Runs the bootstrap `bin` (consumer `function`) on one SQS record carrying `event`.
async fn invoke_consumer(
    bin: &str,
    function: &str,
    event: Value,
) -> (Names, aws_sdk_sqs::Client, Value) {
    let (sdk, endpoint, stack) = fresh_stack().await;
    let names = Names::new(&stack);
    let sqs = clients::sqs(&sdk);
    let dlq = queue_url(&sqs, &names.dlq(function)).await.unwrap();
    let envelope = json!({"version": "0", "id": "x", "detail-type": event["type"], "source": "keelson", "detail": event});
    let batch = json!({"Records": [{"messageId": "m1", "receiptHandle": "r1", "body": envelope.to_string(), "attributes": {}}]});
    let (path, answer) = invoke(bin, &stack, &endpoint, &[("KEELSON_DLQ_URL", dlq)], batch).await;
    assert_eq!(path, "req-1/response");
    (names, sqs, answer)
}

#[tokio::test]
async fn the_approval_bootstrap_declines_after_a_failed_task() {
    let trigger = json!({"specversion": "1.0", "id": "appr-1", "source": "shipyard-controller", "type": "sh.keptn.event.approval.triggered",
        "shkeptncontext": "5b8bb7ac-6c5e-4a4e-8a8e-1d2b9d6a4c11", "time": "2026-12-01T10:00:00.000Z",
        "data": {"project": "p", "stage": "production", "service": "s", "result": "fail",
                 "approval": {"pass": "manual", "warning": "manual"}}});
    let (names, sqs, answer) =
        invoke_consumer(env!("CARGO_BIN_EXE_approval"), "approval", trigger).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let seen = on_the_bus(&sqs, &names, 2).await;
    assert_eq!(
        seen.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        vec![
            "sh.keptn.event.approval.finished",
            "sh.keptn.event.approval.started"
        ]
    );
    assert_eq!(seen[0].1["result"], "fail");
    assert_eq!(
        seen[1].1["message"],
        "Approval strategy for result 'fail': automatic"
    );
}

#[tokio::test]
async fn the_remediation_bootstrap_answers_a_get_action_trigger() {
    let trigger = json!({"specversion": "1.0", "id": "ga-1", "source": "shipyard-controller", "type": "sh.keptn.event.get-action.triggered",
        "shkeptncontext": "5b8bb7ac-6c5e-4a4e-8a8e-1d2b9d6a4c11", "time": "2026-12-01T10:00:00.000Z",
        "data": {"project": "nowhere", "stage": "production", "service": "s", "problem": {"problemTitle": "slow"}}});
    let (names, sqs, answer) =
        invoke_consumer(env!("CARGO_BIN_EXE_remediation"), "remediation", trigger).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    let seen = on_the_bus(&sqs, &names, 2).await;
    assert_eq!(
        seen.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        vec![
            "sh.keptn.event.get-action.finished",
            "sh.keptn.event.get-action.started"
        ]
    );
    assert_eq!(seen[0].1["status"], "errored");
    assert_eq!(
        seen[0].1["message"],
        "Could not get remediation.yaml file for services s in stage production."
    );
}

/// A stack provisioned from the template on the emulator: (SDK config, endpoint, stack).
async fn fresh_stack() -> (keelson_aws::config::SdkConfig, String, String) {
    let endpoint = emulator::test_endpoint();
    emulator::ensure(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
        &endpoint,
    );
    let sdk = keelson_aws::load(&Settings::emulator(&endpoint)).await;
    let stack = format!("rt{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    provision(&sdk, &Template::parse(TEMPLATE).unwrap(), &stack, None)
        .await
        .unwrap();
    (sdk, endpoint, stack)
}

#[tokio::test]
async fn the_datastore_bootstrap_stores_a_batch_and_dead_letters_its_bad_record() {
    let (sdk, endpoint, stack) = fresh_stack().await;
    let names = Names::new(&stack);
    let sqs = clients::sqs(&sdk);
    let dlq = queue_url(&sqs, &names.dlq("datastore")).await.unwrap();
    let batch = json!({"Records": [
        {"messageId": "m1", "receiptHandle": "r1", "body": envelope("ev-1"), "attributes": {"ApproximateReceiveCount": "1"}},
        {"messageId": "m2", "receiptHandle": "r2", "body": "{broken", "attributes": {}},
        {"messageId": "m3", "receiptHandle": "r3", "body": envelope("ev-3"), "attributes": {}}
    ]});
    let (path, answer) = invoke(
        env!("CARGO_BIN_EXE_datastore"),
        &stack,
        &endpoint,
        &[("KEELSON_DLQ_URL", dlq.clone())],
        batch,
    )
    .await;
    assert_eq!(path, "req-1/response");
    assert_eq!(
        answer,
        json!({"batchItemFailures": []}),
        "the bad record is dead-lettered, not failed"
    );
    let store = keelson_aws::dynamo::DynamoStore::new(clients::dynamodb(&sdk), &names.table());
    let page = store
        .query_events(&EventQuery {
            keptn_context: Some("5b8bb7ac-6c5e-4a4e-8a8e-1d2b9d6a4c11".into()),
            page_size: 20,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<&str> = page.events.iter().map(|e| e.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, vec!["ev-1", "ev-3"]);
    let dead = sqs
        .receive_message()
        .queue_url(&dlq)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert_eq!(dead.messages().len(), 1);
    assert_eq!(dead.messages()[0].body(), Some("{broken"));
}

#[tokio::test]
async fn the_shipyard_bootstrap_runs_its_sweep_on_a_scheduled_invocation() {
    let (sdk, endpoint, stack) = fresh_stack().await;
    let dlq = queue_url(&clients::sqs(&sdk), &Names::new(&stack).dlq("shipyard"))
        .await
        .unwrap();
    let scheduled = json!({"version": "0", "id": "s", "detail-type": "Scheduled Event", "source": "aws.events",
        "time": "2026-12-01T10:00:00Z", "resources": [], "detail": {}});
    let (path, answer) = invoke(
        env!("CARGO_BIN_EXE_shipyard"),
        &stack,
        &endpoint,
        &[("KEELSON_DLQ_URL", dlq)],
        scheduled,
    )
    .await;
    assert_eq!(path, "req-1/response");
    assert_eq!(answer, json!({"emitted": 0}));
}

#[tokio::test]
async fn the_lighthouse_bootstrap_answers_an_evaluation_trigger_on_the_bus() {
    let trigger = json!({"specversion": "1.0", "id": "eval-1", "source": "shipyard-controller", "type": "sh.keptn.event.evaluation.triggered",
        "shkeptncontext": "5b8bb7ac-6c5e-4a4e-8a8e-1d2b9d6a4c11", "time": "2026-12-01T10:00:00.000Z",
        "data": {"project": "nowhere", "stage": "dev", "service": "s",
                 "evaluation": {"start": "2026-12-01T09:00:00Z", "end": "2026-12-01T09:05:00Z"}}});
    let (names, sqs, answer) =
        invoke_consumer(env!("CARGO_BIN_EXE_lighthouse"), "lighthouse", trigger).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    // Its answers went to the bus: the datastore's rule delivers them to its queue.
    let seen = on_the_bus(&sqs, &names, 2).await;
    assert_eq!(
        seen.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        vec![
            "sh.keptn.event.evaluation.finished",
            "sh.keptn.event.evaluation.started"
        ]
    );
    assert_eq!(seen[0].1["status"], "errored");
    assert_eq!(
        seen[0].1["message"],
        "error retrieving SLO file: project nowhere not found"
    );
}
