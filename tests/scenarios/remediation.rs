// Remediation end to end, run against every backend: the including file
// defines `async fn start(s: Setup) -> TestNode`. A problem starts a
// remediation sequence; the remediation function picks the first action of
// the service's remediation.yaml; the evaluation after it fails, so the
// sequence loops and the second action is taken; the evaluation then passes
// and the loop ends. The service view lists the remediation while it runs.
// (The evaluation is answered by the test, playing the lighthouse.)

use keelson_tests::{wait_for, Setup, TestNode};
use serde_json::{json, Value};
use std::time::Duration;

const REMEDIATION: &str = r#"apiVersion: spec.keptn.sh/0.1.4
kind: Remediation
metadata: {name: carts-remediation}
spec:
  remediations:
    - problemType: Response time degradation
      actionsOnOpen:
        - {name: Scale up, action: scaling, description: one more replica, value: "1"}
        - {name: Toggle promotion, action: featuretoggle, value: {EnablePromotion: "off"}}
"#;

async fn remediation_node() -> TestNode {
    let n = start(Setup::without_lighthouse()).await;
    n.remediation_project(REMEDIATION).await.unwrap();
    n
}

async fn open_remediations(n: &TestNode) -> Vec<Value> {
    let v = n
        .client
        .get("/controlPlane/v1/project/shop/stage/production/service/carts")
        .await
        .unwrap();
    v["openRemediations"].as_array().cloned().unwrap_or_default()
}

/// The open `action.triggered` of the context whose action is `name`.
async fn action_named(n: &TestNode, ctx: &str, name: &str) -> Value {
    wait_for(Duration::from_secs(30), || async {
        Ok(n.open("action", "shop").await?.into_iter().find(|t| {
            t["shkeptncontext"] == json!(ctx) && t["data"]["action"]["name"] == json!(name)
        }))
    })
    .await
    .unwrap_or_else(|e| panic!("no action.triggered for {name}: {e}"))
}

#[tokio::test]
async fn a_failing_evaluation_loops_to_the_next_action_until_one_works() {
    let n = remediation_node().await;
    let ctx = n
        .client
        .send_event(&json!({"type": "sh.keptn.event.production.remediation.triggered", "source": "e2e",
            "data": {"project": "shop", "stage": "production", "service": "carts",
                     "problem": {"problemTitle": "Response time degradation", "rootCause": "Response time degradation",
                                 "ProblemID": "P-17", "State": "OPEN"}}}))
        .await
        .unwrap();

    // Loop 1: the first action.
    let first = action_named(&n, &ctx, "Scale up").await;
    assert_eq!(first["data"]["action"]["action"], "scaling");
    assert_eq!(first["data"]["action"]["value"], "1");
    assert_eq!(first["data"]["get-action"]["actionIndex"], 1);
    assert_eq!(first["data"]["problem"]["ProblemID"], "P-17");
    let open = open_remediations(&n).await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["keptnContext"], json!(ctx));
    assert_eq!(open[0]["action"], "scaling");
    n.started(&first, "scaler").await.unwrap();
    n.finished(&first, "scaler", "pass").await.unwrap();
    n.run_task("evaluation", "shop", "production", &ctx, "fail").await.unwrap();

    // Loop 2, in the same context: the next action.
    let second = action_named(&n, &ctx, "Toggle promotion").await;
    assert_eq!(second["data"]["action"]["value"], json!({"EnablePromotion": "off"}));
    assert_eq!(second["data"]["get-action"]["actionIndex"], 2);
    n.started(&second, "toggler").await.unwrap();
    n.finished(&second, "toggler", "pass").await.unwrap();
    let eval = n.wait_open("evaluation", "shop", "production", &ctx).await.unwrap();
    assert_ne!(eval["id"], first["id"]);
    n.started(&eval, "e2e").await.unwrap();
    n.finished(&eval, "e2e", "pass").await.unwrap();

    // The evaluation passed: no third loop, nothing open.
    let events = n
        .events_with(&ctx, "sh.keptn.event.production.remediation.finished")
        .await
        .unwrap();
    wait_for(Duration::from_secs(20), || async {
        let evs = n.events(&ctx).await?;
        let finished: Vec<&Value> = evs
            .iter()
            .filter(|e| e["type"] == json!("sh.keptn.event.production.remediation.finished"))
            .collect();
        Ok((finished.len() == 2).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("two remediation loops should finish: {e}; {events:?}"));
    let evs = n.events(&ctx).await.unwrap();
    let results: Vec<&Value> = evs
        .iter()
        .filter(|e| e["type"] == json!("sh.keptn.event.production.remediation.finished"))
        .map(|e| &e["data"]["result"])
        .collect();
    assert_eq!(results, vec![&json!("fail"), &json!("pass")]);
    let get_actions = evs
        .iter()
        .filter(|e| e["type"] == json!("sh.keptn.event.get-action.triggered"))
        .count();
    assert_eq!(get_actions, 2);
    wait_for(Duration::from_secs(20), || async {
        Ok(open_remediations(&n).await.is_empty().then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn when_the_actions_run_out_the_remediation_ends_with_keptns_message() {
    let n = remediation_node().await;
    let ctx = n
        .client
        .send_event(&json!({"type": "sh.keptn.event.production.remediation.triggered", "source": "e2e",
            "data": {"project": "shop", "stage": "production", "service": "carts",
                     "problem": {"problemTitle": "Disk full"}}}))
        .await
        .unwrap();
    let evs = n
        .events_with(&ctx, "sh.keptn.event.production.remediation.finished")
        .await
        .unwrap();
    let answer = evs
        .iter()
        .find(|e| e["type"] == json!("sh.keptn.event.get-action.finished"))
        .unwrap();
    assert_eq!(answer["source"], "remediation-service");
    assert_eq!(answer["data"]["result"], "fail");
    assert_eq!(answer["data"]["message"], "unable to find action for problem title Disk full");
    let done = evs
        .iter()
        .find(|e| e["type"] == json!("sh.keptn.event.production.remediation.finished"))
        .unwrap();
    assert_eq!(done["data"]["result"], "fail");
    assert!(!evs.iter().any(|e| e["type"] == json!("sh.keptn.event.action.triggered")));
}
