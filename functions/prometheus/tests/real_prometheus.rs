//! The provider against a real Prometheus, loaded with data whose answers are
//! exact: a counter rising by 2/s in dev and 5/s in prod, and a gauge at 100
//! with one spike inside the evaluation window and larger ones just outside it.

use keelson_core::event::{task_type, KeptnEvent};
use keelson_core::ids;
use keelson_core::ports::{ManualClock, ProjectStore, Queue, ResourceStore, Subscription};
use keelson_core::project::Project;
use keelson_core::resource::{Change, Scope};
use keelson_core::Timestamp;
use keelson_memory::{MemoryBus, MemoryStore};
use keelson_prometheus::{Config, Outcome, Provider, SliValue, SOURCE};
use keelson_tests::prometheus::Prometheus;
use serde_json::json;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

/// 2026-01-01T00:00:00Z, the evaluation's start; data runs from T0−300s to T0+600s.
const T0: i64 = 1_767_225_600;

fn openmetrics() -> String {
    let mut om = String::from("# TYPE http_requests counter\n");
    for t in (T0 - 300..=T0 + 600).step_by(15) {
        let since = t - (T0 - 300);
        writeln!(
            om,
            "http_requests_total{{job=\"carts\",stage=\"dev\"}} {} {t}",
            1000 + 2 * since
        )
        .unwrap();
        writeln!(
            om,
            "http_requests_total{{job=\"carts\",stage=\"prod\"}} {} {t}",
            5 * since
        )
        .unwrap();
    }
    om.push_str("# TYPE response_time_p95 gauge\n");
    for t in (T0 - 300..=T0 + 600).step_by(15) {
        let v = match t - T0 {
            -15 => "500",   // before the window
            120 => "250.5", // inside it
            420 => "999",   // after it
            _ => "100",
        };
        writeln!(
            om,
            "response_time_p95{{job=\"carts\",stage=\"dev\"}} {v} {t}"
        )
        .unwrap();
    }
    om.push_str("# EOF\n");
    om
}

const PROJECT_SLI: &str = r#"spec_version: '1.0'
indicators:
  throughput: rate(http_requests_total{job="$SERVICE",stage="$STAGE"}[$DURATION_SECONDS])
  requests: increase(http_requests_total{job="$SERVICE",stage="$STAGE"}[$DURATION_SECONDS])
  response_time_p95: "this one is overridden at service level"
"#;

const SERVICE_SLI: &str = r#"spec_version: '1.0'
indicators:
  response_time_p95: max_over_time(response_time_p95{job="$SERVICE",stage="$STAGE"}[$DURATION_SECONDS])
  response_time_now: scalar(sum(response_time_p95{job="$SERVICE",stage="$STAGE"}))
  dev_to_prod: sum(rate(http_requests_total{job="$SERVICE"}[$DURATION_SECONDS])) / sum(rate(http_requests_total{job="$SERVICE",stage="$LABEL.compare"}[$DURATION_SECONDS]))
  nothing: http_requests_total{job="$SERVICE",stage="nowhere"}
  every_stage: http_requests_total{job="$SERVICE"}
  broken: rate(http_requests_total[
"#;

async fn setup(prom_url: &str) -> (MemoryStore, String) {
    let store = MemoryStore::new();
    let now = Timestamp::from_millis(T0 * 1000);
    store
        .create_project(
            &Project {
                name: "sockshop".into(),
                creation_date: now,
                shipyard: String::new(),
                shipyard_version: "spec.keptn.sh/0.2.4".into(),
                stages: vec!["dev".into()],
                services: vec![],
                git_remote_url: None,
                git_user: None,
            },
            now,
        )
        .await
        .unwrap();
    let put = |scope: Scope, uri: &str, content: String| {
        let store = store.clone();
        let uri = uri.to_string();
        async move {
            store
                .write_resources(
                    "sockshop",
                    &scope,
                    &[Change {
                        uri,
                        content: Some(content.into_bytes()),
                    }],
                    now,
                )
                .await
                .unwrap()
        }
    };
    put(
        Scope::project(),
        "prometheus/sli.yaml",
        PROJECT_SLI.to_string(),
    )
    .await;
    put(
        Scope {
            stage: Some("dev".into()),
            service: Some("carts".into()),
        },
        "prometheus/sli.yaml",
        SERVICE_SLI.to_string(),
    )
    .await;
    let commit = put(
        Scope::project(),
        "prometheus/config.yaml",
        format!("url: {prom_url}\n"),
    )
    .await;
    (store, commit)
}

fn trigger(commit: &str, indicators: &[&str]) -> KeptnEvent {
    let mut ev = KeptnEvent::new(
        "5e1c0000-0000-4000-8000-00000000a001".into(),
        "lighthouse-service",
        task_type("get-sli", "triggered"),
        "5e1c0000-0000-4000-8000-00000000c001",
        json!({"project": "sockshop", "stage": "dev", "service": "carts",
               "labels": {"compare": "prod"},
               "get-sli": {"sliProvider": "prometheus",
                           "start": "2026-01-01T00:00:00.000Z", "end": "2026-01-01T00:05:00.000Z",
                           "indicators": indicators, "customFilters": []}}),
        Timestamp::from_millis(T0 * 1000 + 301_000),
    );
    ev.gitcommitid = Some(commit.into());
    ev
}

fn provider(
    store: &MemoryStore,
    bus: &MemoryBus,
) -> Provider<MemoryStore, MemoryBus, Arc<ManualClock>> {
    Provider::new(
        store.clone(),
        bus.clone(),
        Arc::new(ManualClock::at(Timestamp::from_millis(T0 * 1000 + 302_000))),
        // No default: the URL must come from the project's prometheus/config.yaml.
        Config {
            default_url: None,
            timeout: Duration::from_secs(10),
        },
    )
}

#[tokio::test]
async fn indicators_get_exact_values_and_failing_queries_fail_alone() {
    let prom = Prometheus::start(&openmetrics()).unwrap();
    let (store, commit) = setup(&prom.url).await;
    let bus = MemoryBus::new(vec![Subscription::new("probe", &["sh.keptn.event.>"])]);
    let p = provider(&store, &bus);
    let indicators = [
        "throughput",
        "requests",
        "response_time_p95",
        "response_time_now",
        "dev_to_prod",
        "nothing",
        "every_stage",
        "broken",
        "undefined",
    ];
    let ev = trigger(&commit, &indicators);
    let Outcome::Answered(finished) = p.process(&ev).await.unwrap() else {
        panic!("ignored");
    };
    let values: Vec<SliValue> =
        serde_json::from_value(finished.data["get-sli"]["indicatorValues"].clone()).unwrap();
    let got: Vec<(&str, f64, bool, &str)> = values
        .iter()
        .map(|v| (v.metric.as_str(), v.value, v.success, v.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("throughput", 2.0, true, ""),
            ("requests", 600.0, true, ""),
            ("response_time_p95", 250.5, true, ""),
            ("response_time_now", 100.0, true, ""),
            ("dev_to_prod", 1.4, true, ""),
            ("nothing", 0.0, false, "query did not return any values"),
            ("every_stage", 0.0, false, "query did return multiple values"),
            (
                "broken",
                0.0,
                false,
                "unable to query prometheus api: bad_data: invalid parameter \"query\": 1:26: parse error: missing unit character in duration"
            ),
            (
                "undefined",
                0.0,
                false,
                "unable to get metric query: no query defined for SLI \"undefined\" in prometheus/sli.yaml"
            ),
        ],
        "Prometheus log:\n{}",
        prom.log()
    );
    // Some indicators without a value: prometheus-service's `warning`.
    assert_eq!(finished.data["status"], json!("succeeded"));
    assert_eq!(finished.data["result"], json!("warning"));
    assert_eq!(finished.data.get("message"), None);
    assert_eq!(finished.data["labels"], json!({"compare": "prod"}));
    assert_eq!(
        finished.data["get-sli"]["end"],
        json!("2026-01-01T00:05:00.000Z")
    );
    assert_eq!(finished.source, SOURCE);
    assert_eq!(finished.triggeredid.as_deref(), Some(ev.id.as_str()));
    assert_eq!(finished.gitcommitid.as_deref(), Some(commit.as_str()));

    let first: Vec<KeptnEvent> = bus
        .receive("probe", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event)
        .collect();
    assert_eq!(
        first.iter().map(|e| e.ty.as_str()).collect::<Vec<_>>(),
        vec![
            "sh.keptn.event.get-sli.started",
            "sh.keptn.event.get-sli.finished"
        ]
    );
    assert_eq!(first[0].id, ids::derive(&ev.id, "get-sli.started"));
    assert_eq!(first[1].id, ids::derive(&ev.id, "get-sli.finished"));
    assert_eq!(first[1], *finished);

    // Redelivered: the same ids again, so consumers dedupe, and the same answer.
    let Outcome::Answered(again) = p.process(&ev).await.unwrap() else {
        panic!("ignored");
    };
    let second: Vec<KeptnEvent> = bus
        .receive("probe", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event)
        .collect();
    assert_eq!(
        second.iter().map(|e| &e.id).collect::<Vec<_>>(),
        first.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
    assert_eq!(again.data, finished.data);
}

#[tokio::test]
async fn all_indicators_failing_is_a_failed_get_sli() {
    let prom = Prometheus::start(&openmetrics()).unwrap();
    let (store, commit) = setup(&prom.url).await;
    let bus = MemoryBus::new(vec![]);
    let p = provider(&store, &bus);
    let Outcome::Answered(f) = p
        .process(&trigger(&commit, &["nothing", "broken"]))
        .await
        .unwrap()
    else {
        panic!("ignored");
    };
    assert_eq!(f.data["status"], json!("succeeded"));
    assert_eq!(f.data["result"], json!("fail"));
    assert_eq!(f.data["message"], json!("unable to retrieve metrics"));
    let Outcome::Answered(f) = p.process(&trigger(&commit, &["throughput"])).await.unwrap() else {
        panic!("ignored");
    };
    assert_eq!(f.data["result"], json!("pass"));
    assert_eq!(
        f.data["get-sli"]["indicatorValues"],
        json!([{"metric": "throughput", "value": 2.0, "comparedValue": 0.0, "success": true}])
    );
}
