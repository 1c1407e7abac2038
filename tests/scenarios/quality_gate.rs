// Quality gates end to end, run against every backend: the including file
// defines `async fn start(s: Setup) -> TestNode`. A delivery whose
// `evaluation` task is scored by the lighthouse from SLIs the Prometheus
// provider reads from a real Prometheus (started on loopback, loaded with known
// data), passing once and failing a relative criterion on a regression; the
// REST evaluation trigger; invalidation of a previous evaluation.

use keelson::client::ApiFailure;
use keelson_core::Timestamp;
use keelson_tests::prometheus::Prometheus;
use keelson_tests::{wait_for, Setup, TestNode};
use serde_json::{json, Value};
use std::time::Duration;

const SHIPYARD: &str = r#"apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: gated}
spec:
  stages:
    - name: staging
      sequences:
        - name: delivery
          tasks: [{name: deployment}, {name: test}, {name: evaluation}, {name: release}]
    - name: production
      sequences:
        - name: delivery
          triggeredOn: [{event: staging.delivery.finished}]
          tasks: [{name: deployment}, {name: release}]
"#;

const SLO: &str = r#"spec_version: "1.0"
comparison:
  compare_with: single_result
  include_result_with_score: pass
  number_of_comparison_results: 1
  aggregate_function: avg
objectives:
  - sli: response_time_p95
    displayName: Response time P95
    pass:
      - criteria: ["<=+10%", "<600"]
    warning:
      - criteria: ["<=+25%"]
  - sli: error_rate
    pass:
      - criteria: ["<=0.02"]
total_score:
  pass: "90%"
  warning: "75%"
"#;

const SLI: &str = r#"spec_version: "1.0"
indicators:
  response_time_p95: max_over_time(response_time_p95{service="$SERVICE",stage="$STAGE"}[$DURATION_SECONDS])
  error_rate: avg_over_time(error_rate{service="$SERVICE",stage="$STAGE"}[$DURATION_SECONDS])
"#;

/// Window A: p95 200 ms; window B (an hour later): p95 300 ms, a regression.
const GOOD: (&str, &str) = ("2026-11-01T10:00:00.000Z", "2026-11-01T10:05:00.000Z");
const BAD: (&str, &str) = ("2026-11-01T11:00:00.000Z", "2026-11-01T11:05:00.000Z");

fn secs(t: &str) -> i64 {
    Timestamp::parse(t).unwrap().millis() / 1000
}

/// OpenMetrics: a sample every 15 s through both windows.
fn metrics() -> String {
    let mut rt = String::from("# TYPE response_time_p95 gauge\n");
    let mut er = String::from("# TYPE error_rate gauge\n");
    for (window, p95) in [(GOOD, 200), (BAD, 300)] {
        let mut t = secs(window.0);
        while t <= secs(window.1) {
            rt.push_str(&format!(
                "response_time_p95{{service=\"carts\",stage=\"staging\"}} {p95} {t}\n"
            ));
            er.push_str(&format!(
                "error_rate{{service=\"carts\",stage=\"staging\"}} 0.01 {t}\n"
            ));
            t += 15;
        }
    }
    format!("{rt}{er}# EOF\n")
}

async fn gated_node() -> (TestNode, Prometheus) {
    let prom = Prometheus::start(&metrics()).expect("a real Prometheus on loopback");
    let n = start(Setup {
        prometheus_url: Some(prom.url.clone()),
        ..Setup::default()
    })
    .await;
    n.project("shop", Some(SHIPYARD), "carts").await.unwrap();
    for (uri, content) in [("slo.yaml", SLO), ("prometheus/sli.yaml", SLI)] {
        n.client
            .add_resource(
                "shop",
                Some("staging"),
                Some("carts"),
                uri,
                content.as_bytes(),
            )
            .await
            .unwrap();
    }
    n.client
        .send_event(
            &json!({"type": "sh.keptn.event.monitoring.configure", "source": "e2e",
            "data": {"project": "shop", "service": "carts", "type": "prometheus"}}),
        )
        .await
        .unwrap();
    (n, prom)
}

/// Runs deployment and a test over `window` in staging; returns the context.
async fn deliver_and_test(n: &TestNode, image: &str, window: (&str, &str)) -> String {
    let ctx = n
        .trigger("shop", "staging", "delivery", "carts", image)
        .await
        .unwrap();
    n.run_task("deployment", "shop", "staging", &ctx, "pass")
        .await
        .unwrap();
    let t = n.wait_open("test", "shop", "staging", &ctx).await.unwrap();
    n.started(&t, "tester").await.unwrap();
    n.client
        .send_event(
            &json!({"type": "sh.keptn.event.test.finished", "source": "tester",
            "shkeptncontext": ctx, "triggeredid": t["id"],
            "data": {"project": "shop", "stage": "staging", "service": "carts",
                     "status": "succeeded", "result": "pass",
                     "test": {"start": window.0, "end": window.1}}}),
        )
        .await
        .unwrap();
    ctx
}

/// The stored event of a type in a context, once it is there.
async fn stored(n: &TestNode, ctx: &str, ty: &str) -> Value {
    wait_for(Duration::from_secs(30), || async {
        Ok(n.events(ctx)
            .await?
            .into_iter()
            .find(|e| e["type"] == json!(ty)))
    })
    .await
    .unwrap()
}

async fn evaluation_finished(n: &TestNode, ctx: &str) -> Value {
    stored(n, ctx, "sh.keptn.event.evaluation.finished").await
}

fn indicator<'a>(ev: &'a Value, metric: &str) -> &'a Value {
    ev["data"]["evaluation"]["indicatorResults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["value"]["metric"] == json!(metric))
        .unwrap()
}

#[tokio::test]
async fn a_delivery_passes_its_quality_gate_then_a_regression_fails_it_and_stops_the_promotion() {
    let (n, _prom) = gated_node().await;

    // First delivery: no previous evaluation, absolute criteria met: pass.
    let ctx1 = deliver_and_test(&n, "carts:1", GOOD).await;
    let first = evaluation_finished(&n, &ctx1).await;
    assert_eq!(first["source"], "lighthouse-service");
    assert_eq!(first["data"]["result"], "pass", "{first:#}");
    assert_eq!(first["data"]["evaluation"]["score"], json!(100));
    assert_eq!(first["data"]["evaluation"]["timeStart"], GOOD.0);
    assert_eq!(first["data"]["evaluation"]["timeEnd"], GOOD.1);
    let rt = indicator(&first, "response_time_p95");
    assert_eq!(rt["value"]["value"], json!(200));
    assert_eq!(rt["value"]["success"], json!(true));
    assert_eq!(rt["status"], "pass");
    assert_eq!(
        indicator(&first, "error_rate")["value"]["value"],
        json!(0.01)
    );
    assert!(first["data"]["evaluation"].get("comparedEvents").is_none());
    // The evaluation answered the shipyard's trigger, so the sequence went on.
    n.run_task("release", "shop", "staging", &ctx1, "pass")
        .await
        .unwrap();
    n.run_task("deployment", "shop", "production", &ctx1, "pass")
        .await
        .unwrap();
    n.run_task("release", "shop", "production", &ctx1, "pass")
        .await
        .unwrap();
    let st = n.wait_state("shop", &ctx1, "finished").await.unwrap();
    assert_eq!(st["stages"][1]["name"], "production");

    // Second delivery: p95 300 against 200 before breaks "<=+10%" (220) and "<=+25%" (250).
    let ctx2 = deliver_and_test(&n, "carts:2", BAD).await;
    let second = evaluation_finished(&n, &ctx2).await;
    assert_eq!(second["data"]["result"], "fail", "{second:#}");
    assert_eq!(second["data"]["evaluation"]["score"], json!(50));
    assert_eq!(
        second["data"]["message"],
        "Evaluation failed since the calculated score of 50 is below the warning value of 75"
    );
    assert_eq!(
        second["data"]["evaluation"]["comparedEvents"],
        json!([first["id"]])
    );
    let rt = indicator(&second, "response_time_p95");
    assert_eq!(rt["value"]["value"], json!(300));
    assert_eq!(rt["value"]["comparedValue"], json!(200));
    assert_eq!(rt["status"], "fail");
    assert_eq!(
        rt["passTargets"],
        json!([{"criteria": "<=+10%", "targetValue": 220, "violated": true},
               {"criteria": "<600", "targetValue": 600, "violated": false}])
    );
    assert_eq!(
        rt["warningTargets"],
        json!([{"criteria": "<=+25%", "targetValue": 250, "violated": true}])
    );
    // A failed gate ends the stage's sequence: no release, no production.
    let st = n.wait_state("shop", &ctx2, "finished").await.unwrap();
    assert_eq!(st["stages"].as_array().unwrap().len(), 1, "{st:#}");
    // As in Keptn, the stage state is the finished event's status; the failure is its result.
    assert_eq!(st["stages"][0]["state"], "succeeded", "{st:#}");
    assert_eq!(
        st["stages"][0]["latestEvaluation"],
        json!({"result": "fail", "score": 50})
    );
    let done = stored(&n, &ctx2, "sh.keptn.event.staging.delivery.finished").await;
    assert_eq!(done["data"]["result"], "fail", "{done:#}");
    assert_eq!(st["stages"][0]["latestFailedEvent"]["id"], done["id"]);
    let events = n.events(&ctx2).await.unwrap();
    for ty in [
        "sh.keptn.event.release.triggered",
        "sh.keptn.event.production.delivery.triggered",
    ] {
        assert!(
            !events.iter().any(|e| e["type"] == json!(ty)),
            "{ty} must not happen after a failed quality gate"
        );
    }
}

#[tokio::test]
async fn rest_evaluation_trigger_scores_a_window_and_invalidated_evaluations_are_not_compared() {
    let (n, _prom) = gated_node().await;
    let path = "/controlPlane/v1/project/shop/stage/staging/service/carts/evaluation";

    let refused = |e: anyhow::Error| {
        let f = e.downcast::<ApiFailure>().expect("an API error");
        (f.code, f.message)
    };
    let bad = n
        .client
        .post(
            path,
            &json!({"start": GOOD.0, "timeframe": "5m", "end": GOOD.1}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused(bad),
        (
            400,
            "evaluation: 'end' and 'timeframe' are mutually exclusive".to_string()
        )
    );
    let unknown = n
        .client
        .post(
            "/controlPlane/v1/project/shop/stage/staging/service/nope/evaluation",
            &json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused(unknown),
        (400, "service nope not found in project shop".to_string())
    );

    let ctx1 = n
        .client
        .post(
            path,
            &json!({"start": GOOD.0, "end": GOOD.1, "labels": {"run": "1"}}),
        )
        .await
        .unwrap()["keptnContext"]
        .as_str()
        .unwrap()
        .to_string();
    let first = evaluation_finished(&n, &ctx1).await;
    assert_eq!(first["data"]["result"], "pass", "{first:#}");
    assert_eq!(first["data"]["labels"], json!({"run": "1"}));
    n.wait_state("shop", &ctx1, "finished").await.unwrap();

    // Invalidate it: the next evaluation has nothing to compare with.
    n.client
        .send_event(
            &json!({"type": "sh.keptn.event.evaluation.invalidated", "source": "e2e",
            "shkeptncontext": ctx1, "triggeredid": first["triggeredid"],
            "data": {"project": "shop", "stage": "staging", "service": "carts"}}),
        )
        .await
        .unwrap();
    stored(&n, &ctx1, "sh.keptn.event.evaluation.invalidated").await;
    let ctx2 = n
        .client
        .post(path, &json!({"start": BAD.0, "end": BAD.1}))
        .await
        .unwrap()["keptnContext"]
        .as_str()
        .unwrap()
        .to_string();
    let second = evaluation_finished(&n, &ctx2).await;
    assert!(
        second["data"]["evaluation"].get("comparedEvents").is_none(),
        "{second:#}"
    );
    assert_eq!(
        second["data"]["result"], "pass",
        "without a previous result the relative criteria are met"
    );
    assert_eq!(
        indicator(&second, "response_time_p95")["value"]["value"],
        json!(300)
    );
}

#[tokio::test]
async fn a_remote_sli_provider_polls_its_requests_and_answers_through_the_api() {
    let n = start(Setup {
        sli_provider: Some("remote-sli".into()),
        ..Setup::default()
    })
    .await;
    n.project("shop", Some(SHIPYARD), "carts").await.unwrap();
    n.client
        .add_resource("shop", Some("staging"), Some("carts"), "slo.yaml", SLO.as_bytes())
        .await
        .unwrap();
    let ctx = n
        .client
        .post(
            "/controlPlane/v1/project/shop/stage/staging/service/carts/evaluation",
            &json!({"start": GOOD.0, "end": GOOD.1}),
        )
        .await
        .unwrap()["keptnContext"]
        .as_str()
        .unwrap()
        .to_string();
    // The provider's view: the open get-sli requests, as a Keptn distributor polls them.
    let poll = "/controlPlane/v1/event/triggered/sh.keptn.event.get-sli.triggered?project=shop";
    let request = wait_for(Duration::from_secs(30), || async {
        let v = n.client.get(poll).await?;
        Ok(v["events"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e["shkeptncontext"] == json!(ctx)).cloned()))
    })
    .await
    .unwrap();
    assert_eq!(request["source"], "lighthouse-service");
    assert_eq!(request["data"]["get-sli"]["sliProvider"], "remote-sli");
    assert_eq!(
        request["data"]["get-sli"]["indicators"],
        json!(["response_time_p95", "error_rate"])
    );
    for (kind, extra) in [
        ("started", json!({})),
        (
            "finished",
            json!({"result": "pass", "get-sli": {"start": GOOD.0, "end": GOOD.1, "indicatorValues": [
                {"metric": "response_time_p95", "value": 180, "success": true},
                {"metric": "error_rate", "value": 0.5, "success": true}]}}),
        ),
    ] {
        let mut data = json!({"project": "shop", "stage": "staging", "service": "carts", "status": "succeeded"});
        data.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        n.client
            .send_event(&json!({"type": format!("sh.keptn.event.get-sli.{kind}"), "source": "remote-sli",
                "shkeptncontext": ctx, "triggeredid": request["id"], "data": data}))
            .await
            .unwrap();
    }
    let done = evaluation_finished(&n, &ctx).await;
    assert_eq!(done["data"]["result"], "fail", "{done:#}");
    assert_eq!(
        indicator(&done, "error_rate")["status"],
        "fail",
        "0.5 breaks <=0.02"
    );
    assert_eq!(indicator(&done, "response_time_p95")["status"], "pass");
    // Answered: no longer open.
    wait_for(Duration::from_secs(30), || async {
        let v = n.client.get(poll).await?;
        Ok((!v["events"]
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["id"] == request["id"])))
        .then_some(()))
    })
    .await
    .unwrap();
}
