// Alerts into remediation, run against every backend: the including file
// defines `async fn start(s: Setup) -> TestNode`. A real Alertmanager
// (started on loopback, alerts posted to its API) notifies Keelson with a
// bearer token; the firing alert starts one remediation however often it is
// notified, the sequence runs get-action → action → evaluation and loops to
// the second action on a failing evaluation, and the alert's resolution ends
// it. Maintenance windows silence alerts; the generic webhook does the same
// for tools that are not Alertmanager. (The evaluation is answered by the
// test, playing the lighthouse.)

use keelson::client::ApiFailure;
use keelson_tests::alertmanager::Alertmanager;
use keelson_tests::{wait_for, Setup, TestNode, TOKEN};
use serde_json::{json, Value};
use std::time::Duration;

const REMEDIATION: &str = r#"apiVersion: spec.keptn.sh/0.1.4
kind: Remediation
metadata: {name: carts-remediation}
spec:
  remediations:
    - problemType: Response time degradation
      actionsOnOpen:
        - {name: Scale up, action: scaling, value: "1"}
        - {name: Toggle promotion, action: featuretoggle, value: {EnablePromotion: "off"}}
    - problemType: default
      actionsOnOpen:
        - {name: Page, action: page}
"#;

async fn operated_node() -> TestNode {
    let n = start(Setup::without_lighthouse()).await;
    n.remediation_project(REMEDIATION).await.unwrap();
    n
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
    keelson_core::Timestamp::from_millis(d.as_millis() as i64).to_rfc3339()
}

/// The alerts recorded for a context, with their outcomes.
async fn outcomes(n: &TestNode, ctx: &str) -> Vec<String> {
    n.events(ctx)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e["type"] == json!("sh.keptn.event.alert.received"))
        .filter_map(|e| e["data"]["outcome"].as_str().map(str::to_string))
        .collect()
}

async fn open_action(n: &TestNode, name: &str) -> Value {
    wait_for(Duration::from_secs(60), || async {
        Ok(n.open("action", "shop")
            .await?
            .into_iter()
            .find(|t| t["data"]["action"]["name"] == json!(name)))
    })
    .await
    .unwrap_or_else(|e| panic!("no action.triggered for {name}: {e}"))
}

#[tokio::test]
async fn alertmanager_starts_one_remediation_per_alert_that_loops_and_ends_when_resolved() {
    let n = operated_node().await;
    let am = Alertmanager::start(
        &format!("{}/v1/alerts/alertmanager", n.api_url()),
        TOKEN,
        "2s",
    )
    .await
    .unwrap();
    let starts = rfc3339(std::time::SystemTime::now() - Duration::from_secs(30));
    let alert = json!({
        "labels": {"alertname": "HighLatency", "keptn_project": "shop", "keptn_stage": "production",
                   "keptn_service": "carts", "severity": "page"},
        "annotations": {"summary": "p95 above 500 ms", "rootCause": "Response time degradation"},
        "startsAt": starts,
        "generatorURL": "http://prometheus.example/graph?g0.expr=p95"
    });
    am.post_alerts(&json!([alert])).await.unwrap();

    // Loop 1: the first action for the root cause.
    let first = open_action(&n, "Scale up").await;
    let ctx = first["shkeptncontext"].as_str().unwrap().to_string();
    assert_eq!(first["data"]["problem"]["problemTitle"], "HighLatency");
    assert_eq!(first["data"]["problem"]["annotations"]["summary"], "p95 above 500 ms");
    assert_eq!(first["data"]["labels"]["severity"], "page");
    n.started(&first, "scaler").await.unwrap();
    n.finished(&first, "scaler", "pass").await.unwrap();
    n.run_task("evaluation", "shop", "production", &ctx, "fail").await.unwrap();
    // Loop 2: the evaluation failed, so the next action.
    let second = open_action(&n, "Toggle promotion").await;
    assert_eq!(second["shkeptncontext"], json!(ctx));

    // Alertmanager repeats the firing notification (repeat interval 2 s):
    // recorded as duplicates, and still one remediation.
    wait_for(Duration::from_secs(60), || async {
        Ok(outcomes(&n, &ctx).await.iter().any(|o| o.starts_with("duplicate")).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("no repeated notification arrived: {e}\n{}", am.log()));
    let evs = n.events(&ctx).await.unwrap();
    let started: Vec<&Value> = evs
        .iter()
        .filter(|e| e["type"] == json!("sh.keptn.event.production.remediation.triggered") && e["source"] == json!("keelson-alerts"))
        .collect();
    assert_eq!(started.len(), 1, "{:?}", outcomes(&n, &ctx).await);

    // The alert resolves: Alertmanager sends `resolved`, the remediation is aborted.
    let mut resolved = alert.clone();
    resolved["endsAt"] = json!(rfc3339(std::time::SystemTime::now() - Duration::from_secs(1)));
    am.post_alerts(&json!([resolved])).await.unwrap();
    let st = match n.wait_state("shop", &ctx, "aborted").await {
        Ok(st) => st,
        Err(e) => panic!("{e}\noutcomes: {:?}\n{}", outcomes(&n, &ctx).await, am.log()),
    };
    assert_eq!(st["state"], "aborted");
    wait_for(Duration::from_secs(30), || async {
        Ok(outcomes(&n, &ctx).await.iter().any(|o| o == &format!("resolved: remediation {ctx} aborted")).then_some(()))
    })
    .await
    .unwrap();
    let v = n.client.get("/controlPlane/v1/project/shop/stage/production/service/carts").await.unwrap();
    assert_eq!(v["openRemediations"], json!([]), "{v:#}");
    // Nothing more was triggered after the abort.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let evs = n.events(&ctx).await.unwrap();
    assert_eq!(
        evs.iter().filter(|e| e["type"] == json!("sh.keptn.event.get-action.triggered")).count(),
        2
    );
}

async fn generic(n: &TestNode, alerts: Value) -> anyhow::Result<Vec<Value>> {
    let v = n.client.post("/v1/alerts/generic", &json!({"alerts": alerts})).await?;
    Ok(v["alerts"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn maintenance_windows_silence_alerts_and_the_generic_webhook_starts_and_ends_remediations() {
    let n = operated_node().await;
    let incident = |status: &str| {
        json!([{"id": "inc-7", "status": status, "title": "Disk full", "startsAt": "2026-12-02T10:00:00Z",
                "project": "shop", "stage": "production", "service": "carts", "labels": {"team": "data"}}])
    };
    let w = n
        .client
        .post("/v1/maintenance", &json!({"project": "shop", "stage": "production", "duration": "1h", "comment": "db upgrade"}))
        .await
        .unwrap();
    let id = w["id"].as_str().unwrap().to_string();
    let listed = n.client.get("/v1/maintenance?project=shop").await.unwrap();
    assert_eq!(listed["windows"][0]["id"], json!(id));

    // Inside the window: recorded, nothing started.
    let out = generic(&n, incident("firing")).await.unwrap();
    let ctx = out[0]["keptnContext"].as_str().unwrap().to_string();
    assert!(out[0]["outcome"].as_str().unwrap().starts_with(&format!("silenced by maintenance window {id}")), "{out:?}");
    let evs = n.events_with(&ctx, "sh.keptn.event.alert.received").await.unwrap();
    assert!(!evs.iter().any(|e| e["type"] == json!("sh.keptn.event.production.remediation.triggered")));

    // Window ended: the alert starts a remediation, once.
    n.client.call(reqwest::Method::DELETE, &format!("/v1/maintenance/shop/{id}"), None).await.unwrap();
    let out = generic(&n, incident("firing")).await.unwrap();
    assert_eq!(out[0]["outcome"], json!(format!("remediation {ctx} started")));
    let out = generic(&n, incident("firing")).await.unwrap();
    assert_eq!(out[0]["outcome"], json!(format!("duplicate: remediation {ctx} was started before")));
    // The default problem type answers: one action ("Page") is opened.
    let page = open_action(&n, "Page").await;
    assert_eq!(page["shkeptncontext"], json!(ctx));
    let out = generic(&n, incident("resolved")).await.unwrap();
    assert_eq!(out[0]["outcome"], json!(format!("resolved: remediation {ctx} aborted")));
    n.wait_state("shop", &ctx, "aborted").await.unwrap();
    let evs = n.events(&ctx).await.unwrap();
    assert_eq!(
        evs.iter().filter(|e| e["type"] == json!("sh.keptn.event.production.remediation.triggered")).count(),
        1
    );
}

#[tokio::test]
async fn alert_webhooks_check_credentials_payloads_and_mapping() {
    let n = operated_node().await;
    let url = format!("{}/v1/alerts/generic", n.api_url());
    let http = reqwest::Client::new();
    let body = json!({"alerts": [{"id": "x", "status": "firing", "title": "t", "project": "shop",
                                  "stage": "production", "service": "carts"}]});
    // Basic auth with the token as password, as Alertmanager's basic_auth sends it.
    let r = http.post(&url).basic_auth("alertmanager", Some(TOKEN)).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.post(&url).bearer_auth("wrong").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], 401);

    let bad = |path: &'static str, body: Value| {
        let c = n.client.clone();
        async move {
            c.post(path, &body).await.unwrap_err().downcast::<ApiFailure>().expect("an API error")
        }
    };
    let f = bad("/v1/alerts/alertmanager", json!({"version": "3", "alerts": []})).await;
    assert_eq!(f.code, 400);
    assert!(f.message.starts_with("version:"), "{}", f.message);
    let f = bad("/v1/alerts/alertmanager?stage=production&stageLabel=env", json!({"version": "4", "alerts": []})).await;
    assert_eq!(f.code, 400);
    assert!(f.message.contains("either stage or stageLabel"), "{}", f.message);
    let f = bad("/v1/maintenance", json!({"project": "shop"})).await;
    assert!(f.message.starts_with("end:"), "{}", f.message);
    let f = bad("/v1/maintenance", json!({"project": "nope", "duration": "1h"})).await;
    assert_eq!(f.code, 404);

    // Alerts that map to nothing are answered (so the sender does not retry
    // forever) and recorded, and start nothing.
    let out = generic(&n, json!([{"id": "y", "status": "firing", "title": "t"}])).await.unwrap();
    assert_eq!(out[0]["outcome"], "ignored: no project: the alert has none of the labels keptn_project, project");
    let out = generic(&n, json!([{"id": "z", "status": "firing", "title": "t", "project": "shop", "stage": "production", "service": "ghost"}])).await.unwrap();
    assert_eq!(out[0]["outcome"], "ignored: service ghost not found in project shop");
    let out = generic(&n, json!([{"id": "w", "status": "resolved", "title": "t", "project": "shop", "stage": "production", "service": "carts"}])).await.unwrap();
    assert_eq!(out[0]["outcome"], "resolved: no remediation was started for it");
}
