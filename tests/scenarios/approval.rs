// Approvals end to end, run against every backend. The including file defines
// `async fn start(s: Setup) -> TestNode` and the person at the keyboard:
// `async fn person(n: &TestNode, verb: &str, args: &[&str]) -> Result<String, String>`
// running `keelson <verb> <args…>` (approve, decline, get approvals) and
// returning its output or its error message.
//
// A production delivery waits on a manual approval until someone approves
// it; a decline ends it with no deployment and no release; an approval cannot
// be answered twice; an automatic strategy needs nobody.

use keelson::client::ApiFailure;
use keelson_tests::{wait_for, Setup, TestNode};
use serde_json::{json, Value};
use std::time::Duration;

const SHIPYARD: &str = r#"apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: approved}
spec:
  stages:
    - name: staging
      sequences:
        - name: delivery
          tasks:
            - name: deployment
            - name: approval
              properties: {pass: automatic, warning: manual}
    - name: production
      sequences:
        - name: delivery
          triggeredOn: [{event: staging.delivery.finished}]
          tasks:
            - name: approval
              properties: {pass: manual, warning: manual}
            - name: deployment
            - name: release
"#;

async fn approval_node() -> TestNode {
    let n = start(Setup::default()).await;
    n.project("shop", Some(SHIPYARD), "carts").await.unwrap();
    n
}

/// Delivers to staging (deployment passes, the automatic approval lets it
/// through) and waits for the production approval; returns the context and
/// the open approval.
async fn to_the_production_approval(n: &TestNode, image: &str) -> (String, Value) {
    let ctx = n
        .trigger("shop", "staging", "delivery", "carts", image)
        .await
        .unwrap();
    n.run_task("deployment", "shop", "staging", &ctx, "pass")
        .await
        .unwrap();
    let approval = n
        .wait_open("approval", "shop", "production", &ctx)
        .await
        .unwrap();
    (ctx, approval)
}

fn types_in(events: &[Value], stage: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["data"]["stage"] == json!(stage))
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect()
}

/// The approval function's `approval.started` for a trigger, once stored.
async fn approval_started(n: &TestNode, ctx: &str, trigger: &Value) -> Value {
    wait_for(Duration::from_secs(20), || async {
        Ok(n.events(ctx).await?.into_iter().find(|e| {
            e["type"] == json!("sh.keptn.event.approval.started")
                && e["triggeredid"] == trigger["id"]
        }))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_production_delivery_waits_for_a_person_to_approve_it() {
    let n = approval_node().await;
    let (ctx, approval) = to_the_production_approval(&n, "carts:1").await;

    // Production waits: started by the approval function, nothing after it.
    let started = approval_started(&n, &ctx, &approval).await;
    assert_eq!(started["source"], "approval-service");
    assert_eq!(
        started["data"]["message"],
        "Approval strategy for result 'pass': manual"
    );
    // Staging's automatic approval went through without anybody.
    let staging = types_in(&n.events(&ctx).await.unwrap(), "staging");
    assert!(
        staging.contains(&"sh.keptn.event.approval.finished".to_string()),
        "{staging:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = n.state("shop", &ctx).await.unwrap().unwrap();
    assert_eq!(st["state"], "started", "{st:#}");
    assert!(n.open("deployment", "shop").await.unwrap().iter().all(|t| t["data"]["stage"] != json!("production")));

    // The person lists the open approvals and approves the only one.
    let listed = person(&n, "get", &["approvals", "--project", "shop"]).await.unwrap();
    let id = approval["id"].as_str().unwrap();
    assert!(listed.contains(id) && listed.contains("production") && listed.contains("pass"), "{listed}");
    let out = person(&n, "approve", &["--project", "shop", "--stage", "production"]).await.unwrap();
    assert!(out.contains(&format!("Approved approval {id}")), "{out}");

    // The sequence goes on.
    n.run_task("deployment", "shop", "production", &ctx, "pass").await.unwrap();
    n.run_task("release", "shop", "production", &ctx, "pass").await.unwrap();
    let st = n.wait_state("shop", &ctx, "finished").await.unwrap();
    assert_eq!(st["stages"][1]["name"], "production");
    assert_eq!(st["stages"][1]["latestEvent"]["type"], "sh.keptn.event.production.delivery.finished");

    // The approval cannot be answered again: not through the CLI (it is no
    // longer open) and not through the API (409, it was answered).
    let err = person(&n, "decline", &["--project", "shop", "--id", id]).await.unwrap_err();
    assert!(err.contains(&format!("no open approval {id}")), "{err}");
    let again = n
        .client
        .send_event(&json!({"type": "sh.keptn.event.approval.finished", "source": "someone",
            "shkeptncontext": ctx, "triggeredid": id,
            "data": {"project": "shop", "stage": "production", "service": "carts",
                     "status": "succeeded", "result": "fail"}}))
        .await
        .unwrap_err();
    let failure = again.downcast_ref::<ApiFailure>().expect("an API error");
    assert_eq!(failure.code, 409, "{again:#}");
    assert!(
        failure.message.contains(&format!("approval {id} was answered already (approved by keelson-cli")),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn a_declined_approval_ends_the_delivery_without_a_release() {
    let n = approval_node().await;
    let (ctx, approval) = to_the_production_approval(&n, "carts:2").await;
    approval_started(&n, &ctx, &approval).await;
    let out = person(
        &n,
        "decline",
        &["--project", "shop", "--stage", "production", "--service", "carts", "--message", "not today"],
    )
    .await
    .unwrap();
    assert!(out.starts_with("Declined approval"), "{out}");

    let events = n
        .events_with(&ctx, "sh.keptn.event.production.delivery.finished")
        .await
        .unwrap();
    let finished = events
        .iter()
        .find(|e| e["type"] == json!("sh.keptn.event.production.delivery.finished"))
        .unwrap();
    assert_eq!(finished["data"]["result"], "fail", "{finished:#}");
    let answer = events
        .iter()
        .find(|e| e["type"] == json!("sh.keptn.event.approval.finished") && e["triggeredid"] == approval["id"])
        .unwrap();
    assert_eq!(answer["data"]["message"], "not today");
    assert_eq!(answer["source"], "keelson-cli");
    // Give a wrongly continuing sequence time to show itself.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let production = types_in(&n.events(&ctx).await.unwrap(), "production");
    for never in ["sh.keptn.event.deployment.triggered", "sh.keptn.event.release.triggered"] {
        assert!(!production.contains(&never.to_string()), "{never} after a decline: {production:?}");
    }
    let st = n.state("shop", &ctx).await.unwrap().unwrap();
    assert_eq!(st["state"], "finished", "{st:#}");
}

#[tokio::test]
async fn answering_needs_an_open_approval_and_a_verdict() {
    let n = approval_node().await;
    let err = person(&n, "approve", &["--project", "shop"]).await.unwrap_err();
    assert!(err.contains("no open approval in project shop"), "{err}");
    let (ctx, approval) = to_the_production_approval(&n, "carts:3").await;
    let bad = |data: Value, triggeredid: Value| {
        let c = n.client.clone();
        let ctx = ctx.clone();
        async move {
            c.send_event(&json!({"type": "sh.keptn.event.approval.finished", "source": "someone",
                "shkeptncontext": ctx, "triggeredid": triggeredid, "data": data}))
                .await
                .unwrap_err()
                .downcast::<ApiFailure>()
                .expect("an API error")
        }
    };
    let f = bad(json!({"project": "shop", "stage": "production", "service": "carts", "status": "succeeded", "result": "maybe"}), approval["id"].clone()).await;
    assert_eq!(f.code, 400);
    assert!(f.message.starts_with("data.result:"), "{}", f.message);
    let f = bad(json!({"project": "shop", "stage": "production", "service": "carts", "status": "succeeded", "result": "pass"}), json!("no-such-approval")).await;
    assert_eq!(f.code, 404);
    assert!(f.message.contains("no open approval no-such-approval"), "{}", f.message);
    // An answer naming another stage would never reach the approval's lane.
    let f = bad(
        json!({"project": "shop", "stage": "staging", "service": "carts", "status": "succeeded", "result": "pass"}),
        approval["id"].clone(),
    )
    .await;
    assert_eq!(f.code, 400);
    assert_eq!(
        f.message,
        format!("data.stage: approval {} is in stage production, not staging", approval["id"].as_str().unwrap())
    );
    // Still open after the refused answers.
    assert!(person(&n, "get", &["approvals", "--project", "shop"]).await.unwrap().contains(approval["id"].as_str().unwrap()));
}
