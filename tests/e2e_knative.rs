//! Knative mode end to end: every function as its HTTP CloudEvents service
//! on loopback, each with its own pool to a fresh database on a real
//! PostgreSQL, behind a broker harness that delivers as Knative's does, with
//! the Triggers of `infra/knative/`. The delivery, approval, remediation and
//! quality-gate scenarios are the same as the other backends'.

use keelson_tests::{types, wait_for, Setup, TestNode};
use serde_json::json;
use std::time::Duration;

async fn start(s: Setup) -> TestNode {
    TestNode::start_with(Setup { knative: true, ..s })
        .await
        .unwrap()
}

include!("scenarios/delivery.rs");

mod quality_gate {
    //! The quality-gate scenarios, with the lighthouse and the Prometheus
    //! provider behind their Triggers.
    use super::start;
    include!("scenarios/quality_gate.rs");
}

mod approval {
    //! The approval scenarios; the person answers through the library the
    //! `keelson` verbs use.
    use super::start;
    use keelson_tests::person;
    include!("scenarios/approval.rs");
}

mod remediation {
    //! The remediation scenarios.
    use super::start;
    include!("scenarios/remediation.rs");
}

mod broker {
    //! What the broker does around the functions: replies, retries, dead letters.

    use super::start;
    use keelson::FunctionSet;
    use keelson_tests::{wait_for, Setup, TestNode, ONE_STAGE};
    use serde_json::json;
    use std::time::Duration;

    const APPROVAL_ONLY: &str = r#"apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: dlq}
spec:
  stages:
    - name: dev
      sequences:
        - name: delivery
          tasks: [{name: approval, properties: {pass: manual, warning: manual}}]
"#;

    fn stack(n: &TestNode) -> &keelson_tests::knative::KnativeStack {
        n.knative.as_ref().expect("the Knative backend")
    }

    #[tokio::test]
    async fn the_shipyard_publishes_through_the_broker_and_the_broker_stamps_only_its_copy() {
        let n = start(Setup::default()).await;
        n.project("sink", Some(ONE_STAGE), "svc").await.unwrap();
        let ctx = n
            .trigger("sink", "dev", "delivery", "svc", "img:1")
            .await
            .unwrap();
        let evs = n
            .events_with(&ctx, "sh.keptn.event.deployment.triggered")
            .await
            .unwrap();
        let stored = evs
            .iter()
            .find(|e| e["type"] == json!("sh.keptn.event.deployment.triggered"))
            .unwrap();
        assert!(
            stored.get("knativearrivaltime").is_none(),
            "the broker's own attributes are not stored: {stored}"
        );
        let broker = &stack(&n).broker;
        // The API's trigger, then the shipyard's task trigger, each through
        // the ingress once; the shipyard took its delivery with a 202.
        let order: Vec<_> = broker
            .ingested()
            .into_iter()
            .filter(|e| e["shkeptncontext"] == json!(ctx))
            .map(|e| e["type"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            order,
            [
                "sh.keptn.event.dev.delivery.triggered",
                "sh.keptn.event.deployment.triggered"
            ]
        );
        let taken = wait_for(Duration::from_secs(10), || async {
            Ok(broker.attempts().into_iter().find(|a| {
                a.subscriber == "keelson-shipyard"
                    && a.event_type == "sh.keptn.event.dev.delivery.triggered"
            }))
        })
        .await
        .unwrap();
        assert_eq!((taken.status, taken.reply), (202, None));
        assert!(
            broker.dead_letters().is_empty(),
            "{:?}",
            broker.dead_letters()
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_cannot_be_reached_is_retried_then_dead_lettered_and_stored() {
        // No approval service (a crashing pod: nothing answers its Trigger's
        // deliveries) and no datastore: only the dead-letter sink can store
        // what the broker gives up on.
        let n = start(Setup {
            functions: Some(FunctionSet {
                approval: false,
                datastore: false,
                ..FunctionSet::all()
            }),
            ..Setup::default()
        })
        .await;
        n.project("dlq", Some(APPROVAL_ONLY), "svc").await.unwrap();
        let ctx = n
            .trigger("dlq", "dev", "delivery", "svc", "img:1")
            .await
            .unwrap();
        let broker = &stack(&n).broker;
        let approval_triggers: Vec<String> = broker
            .triggers()
            .iter()
            .filter(|t| t.subscriber == "keelson-approval")
            .map(|t| t.name.clone())
            .collect();
        let dead = wait_for(Duration::from_secs(20), || async {
            Ok(broker.dead_letters().into_iter().find(|d| {
                d.event["shkeptncontext"] == json!(ctx) && approval_triggers.contains(&d.trigger)
            }))
        })
        .await
        .unwrap();
        let trigger = broker
            .triggers()
            .iter()
            .find(|t| t.name == dead.trigger)
            .unwrap()
            .clone();
        assert_eq!(trigger.subscriber, "keelson-approval");
        let tries = broker
            .attempts()
            .into_iter()
            .filter(|a| a.trigger == dead.trigger && a.event_id == dead.event["id"])
            .count();
        assert_eq!(tries as u32, trigger.delivery.retry + 1);
        assert!(trigger.delivery.retry >= 1, "the manifests retry");
        // The dead-letter sink took it and stored it (there is no datastore).
        assert_eq!(dead.sink_status, Some(202), "{dead:?}");
        let evs = n
            .events_with(&ctx, "sh.keptn.event.approval.triggered")
            .await
            .unwrap();
        let stored = evs
            .iter()
            .filter(|e| e["type"] == json!("sh.keptn.event.approval.triggered"))
            .count();
        assert_eq!(stored, 1, "stored once: {evs:?}");
        assert!(
            evs.iter().all(|e| e.get("knativeerrordest").is_none()),
            "stored without the broker's attributes: {evs:?}"
        );
    }

    #[tokio::test]
    async fn every_event_delivered_twice_at_once_still_runs_one_delivery_and_emits_each_event_once()
    {
        let n = start(Setup::default()).await;
        stack(&n).broker.duplicate_deliveries();
        n.project("twice", None, "svc").await.unwrap();
        let ctx = n
            .trigger("twice", "dev", "delivery", "svc", "img:2")
            .await
            .unwrap();
        for (stage, tasks) in keelson_tests::SHIPYARD_DELIVERY {
            for task in tasks {
                n.run_task(task, "twice", stage, &ctx, "pass")
                    .await
                    .unwrap();
            }
        }
        n.wait_state("twice", &ctx, "finished").await.unwrap();
        let evs = n
            .events_with(&ctx, "sh.keptn.event.production.delivery.finished")
            .await
            .unwrap();
        let count = |ty: &str| evs.iter().filter(|e| e["type"] == json!(ty)).count();
        // Each emitted event once (same ids on every re-emission), whatever
        // the two concurrent copies of every delivery did.
        assert_eq!(count("sh.keptn.event.deployment.triggered"), 3, "{evs:?}");
        assert_eq!(count("sh.keptn.event.release.triggered"), 3);
        assert_eq!(count("sh.keptn.event.hardening.delivery.triggered"), 1);
        assert_eq!(count("sh.keptn.event.production.delivery.finished"), 1);
        // And the broker really did deliver twice (or more, had one copy
        // been retried).
        let twice = stack(&n)
            .broker
            .attempts()
            .iter()
            .filter(|a| {
                a.subscriber == "keelson-shipyard"
                    && a.event_type == "sh.keptn.event.dev.delivery.triggered"
            })
            .count();
        assert!(twice >= 2, "{twice}");
    }

    #[tokio::test]
    async fn every_service_is_live_and_ready_and_refuses_what_is_no_cloudevent() {
        let n = start(Setup::default()).await;
        let http = reqwest::Client::new();
        for (name, url) in &stack(&n).services {
            for path in ["/healthz", "/readyz"] {
                let r = http.get(format!("{url}{path}")).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 200, "{name}{path}");
            }
            if name == "keelson-api" {
                continue;
            }
            let r = http
                .post(url.clone())
                .header("content-type", "application/json")
                .body("{\"hello\": 1}")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 400, "{name}");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["code"], json!(400), "{name}: {body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("not a CloudEvent"),
                "{name}: {body}"
            );
        }
    }
}

mod python_sdk {
    //! Events sent by the Python `cloudevents` SDK (a client we did not
    //! write), in binary and in structured mode, straight to the shipyard's
    //! service as the broker would deliver them.

    use super::start;
    use keelson_tests::{Setup, ONE_STAGE};
    use serde_json::json;
    use std::process::Command;

    const SDK: &str = "cloudevents==1.11.0";

    fn python_with_sdk() -> String {
        let py = "python3".to_string();
        let has = |py: &str| {
            Command::new(py)
                .args(["-c", "import cloudevents.http, cloudevents.conversion"])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !has(&py) {
            let out = Command::new(&py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    SDK,
                ])
                .output()
                .expect("running pip");
            assert!(
                out.status.success(),
                "installing {SDK} from PyPI failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        py
    }

    const SEND: &str = r#"
import json, sys, urllib.request
from cloudevents.http import CloudEvent
from cloudevents.conversion import to_binary, to_structured

url, mode, project = sys.argv[1], sys.argv[2], sys.argv[3]
event = CloudEvent(
    {"type": "sh.keptn.event.dev.delivery.triggered", "source": "python-sdk",
     "shkeptncontext": sys.argv[4], "datacontenttype": "application/json"},
    {"project": project, "stage": "dev", "service": "svc",
     "configurationChange": {"values": {"image": "py:" + mode}}},
)
headers, body = (to_binary if mode == "binary" else to_structured)(event)
req = urllib.request.Request(url, data=body, headers=headers, method="POST")
with urllib.request.urlopen(req) as resp:
    print(resp.status, resp.headers.get("Content-Type", ""))
"#;

    #[tokio::test]
    async fn the_python_sdk_starts_sequences_in_binary_and_structured_mode() {
        let py = python_with_sdk();
        let n = start(Setup::default()).await;
        let shipyard = n
            .knative
            .as_ref()
            .and_then(|k| k.service("keelson-shipyard"))
            .unwrap()
            .to_string();
        for (mode, project, ctx) in [
            ("binary", "pybin", "0c7e8f0e-6d0b-4c38-9d36-9a1f3a1b0001"),
            (
                "structured",
                "pystruct",
                "0c7e8f0e-6d0b-4c38-9d36-9a1f3a1b0002",
            ),
        ] {
            n.project(project, Some(ONE_STAGE), "svc").await.unwrap();
            // Off the runtime's thread: the services answering it run on it.
            let (py, url) = (py.clone(), shipyard.clone());
            let out = tokio::task::spawn_blocking(move || {
                Command::new(py)
                    .args(["-c", SEND, &url, mode, project, ctx])
                    .output()
            })
            .await
            .unwrap()
            .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{mode}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Taken; what the shipyard emits goes to the broker, not back.
            assert!(stdout.starts_with("202"), "{mode}: {stdout}");
            let t = n
                .wait_open("deployment", project, "dev", ctx)
                .await
                .unwrap();
            assert_eq!(
                t["data"]["configurationChange"]["values"]["image"],
                json!(format!("py:{mode}"))
            );
            assert_eq!(
                n.state(project, ctx).await.unwrap().unwrap()["state"],
                json!("started")
            );
            // The shipyard's task trigger went out through the broker.
            n.events_with(ctx, "sh.keptn.event.deployment.triggered")
                .await
                .unwrap();
        }
    }
}
