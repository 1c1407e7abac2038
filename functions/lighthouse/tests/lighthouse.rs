//! The lighthouse function against the memory adapters: what it publishes for
//! `evaluation.triggered`, `get-sli.finished` and `monitoring.configure`, with
//! the datastore's part (storing every event that crosses the bus) played by
//! `EventStore::insert_events`.

use keelson_core::event::{task_type, KeptnEvent};
use keelson_core::ids;
use keelson_core::lighthouse::get_sli_id;
use keelson_core::ports::{
    Clock, EventStore, ManualClock, ProjectStore, Queue, ResourceStore, Subscription,
};
use keelson_core::project::{Project, Service};
use keelson_core::resource::{Change, Scope};
use keelson_core::{ErrorKind, Timestamp};
use keelson_lighthouse::{Config, Lighthouse, Outcome, CONFIG_URI, SLO_URI};
use keelson_memory::{MemoryBus, MemoryStore};
use serde_json::{json, Value};
use std::sync::Arc;

const CARTS_SLO: &str = include_str!("../../../events-fixtures/slo/carts.slo.yaml");
const RELATIVE_SLO: &str = include_str!("../../../events-fixtures/slo/relative.slo.yaml");
const BROKEN_SLO: &str = include_str!("../../../events-fixtures/slo/broken.slo.yaml");
const CARTS_GET_SLI_FINISHED: &str =
    include_str!("../../../events-fixtures/slo/carts.get-sli.finished.json");
const CARTS_VALUES: &str = include_str!("../../../events-fixtures/slo/carts.values.json");
const RELATIVE_VALUES: &str = include_str!("../../../events-fixtures/slo/relative.values.json");
const PREVIOUS: &str = include_str!("../../../events-fixtures/slo/previous.json");

const PROJECT: &str = "sockshop";
const STAGE: &str = "staging";
const SERVICE: &str = "carts";
/// The context of `carts.get-sli.finished.json`.
const CONTEXT: &str = "0f4b4e4a-8d53-4e3c-9a62-1d2f7f0e6a10";
const START: &str = "2026-01-01T11:50:00.000Z";
const END: &str = "2026-01-01T11:55:00.000Z";
const PROBE: &str = "probe";
const GRACE_MS: i64 = 60_000;

fn t0() -> Timestamp {
    Timestamp::parse("2026-01-01T12:00:00Z").unwrap()
}

fn minutes_before_t0(m: i64) -> Timestamp {
    Timestamp::from_millis(t0().millis() - m * 60_000)
}

/// The lighthouse, its store and bus, a probe consumer reading everything it
/// publishes, and a clock the test moves.
struct World {
    store: MemoryStore,
    bus: MemoryBus,
    clock: Arc<ManualClock>,
    lighthouse: Lighthouse<MemoryStore, MemoryBus, Arc<ManualClock>>,
}

impl World {
    /// Project `sockshop` (dev, staging, production; carts, orders).
    async fn new(default_sli_provider: Option<&str>) -> World {
        let store = MemoryStore::new();
        let bus = MemoryBus::new(vec![Subscription::new(PROBE, &["sh.keptn.event.>"])]);
        let clock = Arc::new(ManualClock::at(t0()));
        let service = |name: &str| Service {
            name: name.into(),
            creation_date: t0(),
        };
        store
            .create_project(
                &Project {
                    name: PROJECT.into(),
                    creation_date: t0(),
                    shipyard: String::new(),
                    shipyard_version: "spec.keptn.sh/0.2.4".into(),
                    stages: vec!["dev".into(), STAGE.into(), "production".into()],
                    services: vec![service(SERVICE), service("orders")],
                    git_remote_url: None,
                    git_user: None,
                },
                t0(),
            )
            .await
            .unwrap();
        let lighthouse = Lighthouse::new(
            store.clone(),
            bus.clone(),
            clock.clone(),
            Config {
                default_sli_provider: default_sli_provider.map(String::from),
            },
        );
        World {
            store,
            bus,
            clock,
            lighthouse,
        }
    }

    /// Writes a resource of `sockshop`; returns the commit id.
    async fn write(&self, scope: Scope, uri: &str, content: &str) -> String {
        self.store
            .write_resources(
                PROJECT,
                &scope,
                &[Change {
                    uri: uri.into(),
                    content: Some(content.as_bytes().to_vec()),
                }],
                self.clock.now(),
            )
            .await
            .unwrap()
    }

    async fn write_slo(&self, content: &str) -> String {
        self.write(service_scope(STAGE, SERVICE), SLO_URI, content)
            .await
    }

    /// What the datastore does with every event on the bus.
    async fn store(&self, events: &[KeptnEvent]) {
        self.store.insert_events(events).await.unwrap();
    }

    /// Everything published since the last call.
    async fn published(&self) -> Vec<KeptnEvent> {
        let deliveries = self.bus.receive(PROBE, 100).await.unwrap();
        let receipts: Vec<u64> = deliveries.iter().map(|d| d.receipt).collect();
        self.bus.ack(PROBE, &receipts).await.unwrap();
        deliveries.into_iter().map(|d| d.event).collect()
    }

    /// Processes one event that must succeed; returns what it published.
    async fn run(&self, ev: &KeptnEvent) -> Vec<KeptnEvent> {
        let outcome = self
            .lighthouse
            .process(ev)
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", ev.ty, ev.id));
        let published = self.published().await;
        assert_eq!(outcome, Outcome::Published(published.len()), "{}", ev.ty);
        published
    }

    /// An `evaluation.triggered` as it flows: stored, processed, its answers stored.
    async fn trigger(&self, ev: &KeptnEvent) -> Vec<KeptnEvent> {
        self.store(std::slice::from_ref(ev)).await;
        let out = self.run(ev).await;
        self.store(&out).await;
        out
    }

    /// The SLI provider answers `trigger` with `values`: the `get-sli.finished`
    /// is stored and processed; returns the `evaluation.finished` (not stored).
    async fn answer(&self, trigger: &KeptnEvent, values: Value) -> KeptnEvent {
        let ev = get_sli_finished(trigger, values, self.clock.now());
        self.answer_with(&ev).await
    }

    async fn answer_with(&self, get_sli_finished: &KeptnEvent) -> KeptnEvent {
        self.store(std::slice::from_ref(get_sli_finished)).await;
        let mut out = self.run(get_sli_finished).await;
        assert_eq!(out.len(), 1, "{out:?}");
        let finished = out.remove(0);
        assert_eq!(finished.ty, task_type("evaluation", "finished"));
        finished
    }

    /// A whole evaluation: trigger, provider answer; the `evaluation.finished`.
    async fn evaluate(&self, trigger: &KeptnEvent, values: Value) -> KeptnEvent {
        let out = self.trigger(trigger).await;
        assert_eq!(types(&out)[1], task_type("get-sli", "triggered"), "{out:?}");
        self.answer(trigger, values).await
    }
}

fn service_scope(stage: &str, service: &str) -> Scope {
    Scope {
        stage: Some(stage.into()),
        service: Some(service.into()),
    }
}

fn types(events: &[KeptnEvent]) -> Vec<String> {
    events.iter().map(|e| e.ty.clone()).collect()
}

/// An `evaluation.triggered` for sockshop/staging/carts with a test window,
/// as the shipyard controller sends it.
fn evaluation_triggered(id: &str, gitcommitid: Option<&str>) -> KeptnEvent {
    let mut ev = KeptnEvent::new(
        id.into(),
        "shipyard-controller",
        task_type("evaluation", "triggered"),
        CONTEXT,
        json!({"project": PROJECT, "stage": STAGE, "service": SERVICE,
               "labels": {"build": "7"},
               "test": {"start": START, "end": END},
               "deployment": {"deploymentNames": ["canary", "primary"]}}),
        t0(),
    );
    ev.gitcommitid = gitcommitid.map(String::from);
    ev
}

/// The provider's answer to the `get-sli.triggered` the lighthouse sent for `trigger`.
fn get_sli_finished(trigger: &KeptnEvent, values: Value, time: Timestamp) -> KeptnEvent {
    let mut ev = KeptnEvent::new(
        format!("{}.get-sli.finished", trigger.id),
        "prometheus-service",
        task_type("get-sli", "finished"),
        &trigger.shkeptncontext,
        json!({"project": trigger.data["project"], "stage": trigger.data["stage"],
               "service": trigger.data["service"], "labels": {"build": "7"},
               "status": "succeeded", "result": "pass",
               "get-sli": {"start": START, "end": END, "indicatorValues": values}}),
        time,
    );
    ev.triggeredid = Some(get_sli_id(&trigger.id));
    ev.gitcommitid = trigger.gitcommitid.clone();
    ev
}

fn rt(value: f64) -> Value {
    json!([{"metric": "response_time_p95", "value": value, "success": true}])
}

/// An earlier `evaluation.finished` of its own context, as stored by the datastore.
fn previous(
    id: &str,
    stage: &str,
    service: &str,
    result: &str,
    rt: f64,
    age_min: i64,
) -> KeptnEvent {
    let mut ev = KeptnEvent::new(
        id.into(),
        "lighthouse-service",
        task_type("evaluation", "finished"),
        &format!("ctx-{id}"),
        json!({"project": PROJECT, "stage": stage, "service": service,
               "status": "succeeded", "result": result,
               "evaluation": {"timeStart": START, "timeEnd": END, "result": result,
                              "score": 100, "sloFileContent": "",
                              "indicatorResults": [{
                                  "score": 1, "status": result, "displayName": "",
                                  "keySli": false, "passTargets": null, "warningTargets": null,
                                  "value": {"metric": "response_time_p95", "value": rt,
                                            "success": true}}]}}),
        minutes_before_t0(age_min),
    );
    ev.triggeredid = Some(format!("{id}.triggered"));
    ev
}

/// Keptn's invalidation of an evaluation: names the evaluation's trigger.
fn invalidated(evaluation: &KeptnEvent) -> KeptnEvent {
    let mut ev = KeptnEvent::new(
        format!("{}.invalidated", evaluation.id),
        "api",
        task_type("evaluation", "invalidated"),
        &evaluation.shkeptncontext,
        json!({"project": evaluation.data["project"], "stage": evaluation.data["stage"],
               "service": evaluation.data["service"]}),
        t0(),
    );
    ev.triggeredid = evaluation.triggeredid.clone();
    ev
}

/// One objective on `response_time_p95` that may grow 10 % over the aggregate.
fn relative_slo(compare_with: &str, include: &str, n: usize) -> String {
    format!(
        "spec_version: \"1.0\"\n\
         comparison:\n  compare_with: \"{compare_with}\"\n  include_result_with_score: \"{include}\"\n  \
         number_of_comparison_results: {n}\n  aggregate_function: \"avg\"\n\
         objectives:\n  - sli: \"response_time_p95\"\n    pass:\n      - criteria: [\"<=+10%\"]\n\
         total_score:\n  pass: \"90%\"\n"
    )
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn compared_events(finished: &KeptnEvent) -> Vec<String> {
    finished.data["evaluation"]["comparedEvents"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn first_indicator(finished: &KeptnEvent) -> &Value {
    &finished.data["evaluation"]["indicatorResults"][0]
}

// ------------------------------------------------------------------ happy path

#[tokio::test]
async fn an_evaluation_asks_the_configured_provider_and_scores_its_answer() {
    let w = World::new(None).await;
    w.write(Scope::project(), CONFIG_URI, "sli-provider: prometheus\n")
        .await;
    let commit = w.write_slo(CARTS_SLO).await;
    let trigger = evaluation_triggered("eval-1", Some(&commit));

    let out = w.trigger(&trigger).await;
    assert_eq!(
        types(&out),
        [
            "sh.keptn.event.evaluation.started",
            "sh.keptn.event.get-sli.triggered"
        ]
    );
    let (started, get_sli) = (&out[0], &out[1]);
    assert_eq!(started.triggeredid.as_deref(), Some("eval-1"));
    assert_eq!(started.shkeptncontext, CONTEXT);
    assert_eq!(started.source, "lighthouse-service");
    assert_eq!(
        started.data,
        json!({"project": PROJECT, "stage": STAGE, "service": SERVICE,
               "labels": {"build": "7"}, "status": "succeeded"})
    );
    assert_eq!(get_sli.id, get_sli_id("eval-1"));
    assert_eq!(get_sli.triggeredid, None, "a task trigger names no trigger");
    assert_eq!(get_sli.shkeptncontext, CONTEXT);
    assert_eq!(get_sli.gitcommitid.as_deref(), Some(commit.as_str()));
    assert_eq!(
        get_sli.data,
        json!({"project": PROJECT, "stage": STAGE, "service": SERVICE,
               "labels": {"build": "7"}, "deployment": "canary",
               "get-sli": {"sliProvider": "prometheus", "start": START, "end": END,
                           "indicators": ["response_time_p95", "throughput", "error_rate"],
                           "customFilters": [{"key": "handler",
                                              "value": "ItemsController.addToCart"}]}})
    );

    // The provider's answer as it arrives on the bus (fixture), naming the
    // get-sli.triggered it answers and the commit it was asked about.
    let mut answer = KeptnEvent::parse_untrusted(CARTS_GET_SLI_FINISHED.as_bytes()).unwrap();
    assert_eq!(answer.shkeptncontext, CONTEXT);
    answer.triggeredid = Some(get_sli.id.clone());
    answer.gitcommitid = get_sli.gitcommitid.clone();
    w.clock.advance_ms(90_000);
    let finished = w.answer_with(&answer).await;

    assert_eq!(
        finished.id,
        ids::derive("eval-1", "evaluation.finished"),
        "derived from the trigger, so a redelivery re-emits the same id"
    );
    assert_eq!(finished.triggeredid.as_deref(), Some("eval-1"));
    assert_eq!(finished.shkeptncontext, CONTEXT);
    assert_eq!(finished.source, "lighthouse-service");
    assert_eq!(finished.gitcommitid.as_deref(), Some(commit.as_str()));
    assert_eq!(finished.time, w.clock.now());
    assert_eq!(
        finished.data,
        json!({
            "project": PROJECT, "stage": STAGE, "service": SERVICE,
            "labels": {"build": "7"}, "status": "succeeded", "result": "pass",
            "evaluation": {
                "timeStart": START, "timeEnd": END, "result": "pass", "score": 87.5,
                "sloFileContent": base64(CARTS_SLO.as_bytes()),
                "indicatorResults": [
                    {"score": 0.5, "status": "warning", "displayName": "Response time P95",
                     "keySli": false,
                     "value": {"metric": "response_time_p95", "value": 700,
                               "comparedValue": 0, "success": true},
                     "passTargets": [{"criteria": "<=+10%", "targetValue": 0, "violated": false},
                                     {"criteria": "<600", "targetValue": 600, "violated": true}],
                     "warningTargets": [{"criteria": "<=800", "targetValue": 800,
                                         "violated": false}]},
                    {"score": 0, "status": "info", "displayName": "", "keySli": false,
                     "value": {"metric": "throughput", "value": 42, "comparedValue": 0,
                               "success": true},
                     "passTargets": [], "warningTargets": []},
                    {"score": 3, "status": "pass", "displayName": "Error rate", "keySli": true,
                     "value": {"metric": "error_rate", "value": 0.5, "comparedValue": 0,
                               "success": true},
                     "passTargets": [{"criteria": "<=1", "targetValue": 1, "violated": false}],
                     "warningTargets": null}
                ]
            }
        })
    );
}

#[tokio::test]
async fn the_slo_is_read_at_the_commit_the_events_name_not_the_latest() {
    let w = World::new(Some("prometheus")).await;
    let first = w.write_slo(&relative_slo("single_result", "all", 1)).await;
    let trigger = evaluation_triggered("eval-1", Some(&first));
    let out = w.trigger(&trigger).await;
    // A later commit changes the objectives; the running evaluation keeps its own.
    w.write_slo(CARTS_SLO).await;
    assert_eq!(
        out[1].data["get-sli"]["indicators"],
        json!(["response_time_p95"])
    );
    let finished = w.answer(&trigger, rt(320.0)).await;
    assert_eq!(finished.gitcommitid.as_deref(), Some(first.as_str()));
    assert_eq!(
        finished.data["evaluation"]["sloFileContent"],
        base64(relative_slo("single_result", "all", 1).as_bytes())
    );
    assert_eq!(finished.data["evaluation"]["score"], 100);

    // Without a commit id the latest slo.yaml is read.
    let latest = evaluation_triggered("eval-2", None);
    let out = w.trigger(&latest).await;
    assert_eq!(
        out[1].data["get-sli"]["indicators"],
        json!(["response_time_p95", "throughput", "error_rate"])
    );
    let finished = w.answer(&latest, rt(320.0)).await;
    assert_eq!(
        finished.data["evaluation"]["sloFileContent"],
        base64(CARTS_SLO.as_bytes())
    );
}

// -------------------------------------------------------------- SLI provider

#[tokio::test]
async fn the_project_config_names_the_sli_provider_else_the_default_does() {
    let cases: [(Option<&str>, Option<&str>, Option<&str>); 4] = [
        (None, None, None),
        (Some("prometheus"), None, Some("prometheus")),
        (Some("prometheus"), Some("dynatrace"), Some("dynatrace")),
        (None, Some("dynatrace"), Some("dynatrace")),
    ];
    for (default, configured, want) in cases {
        let w = World::new(default).await;
        if let Some(p) = configured {
            let outcome = w
                .lighthouse
                .process(&monitoring_configure(PROJECT, p))
                .await;
            assert_eq!(outcome.unwrap(), Outcome::Configured);
        }
        let commit = w.write_slo(CARTS_SLO).await;
        let out = w
            .trigger(&evaluation_triggered("eval-1", Some(&commit)))
            .await;
        let case = format!("default {default:?}, configured {configured:?}");
        assert_eq!(out.len(), 2, "{case}");
        match want {
            Some(provider) => {
                assert_eq!(out[1].ty, task_type("get-sli", "triggered"), "{case}");
                assert_eq!(out[1].data["get-sli"]["sliProvider"], provider, "{case}");
            }
            None => {
                let f = &out[1];
                assert_eq!(f.ty, task_type("evaluation", "finished"), "{case}");
                assert_eq!(f.triggeredid.as_deref(), Some("eval-1"));
                assert_eq!(
                    (&f.data["status"], &f.data["result"], &f.data["message"]),
                    (
                        &json!("succeeded"),
                        &json!("pass"),
                        &json!("no evaluation performed by lighthouse because no SLI-provider configured for project sockshop")
                    ),
                    "{case}"
                );
                assert_eq!(f.data["evaluation"]["result"], "pass", "{case}");
                assert_eq!(f.data["evaluation"]["score"], 0, "{case}");
            }
        }
    }
}

fn monitoring_configure(project: &str, provider: &str) -> KeptnEvent {
    KeptnEvent::new(
        format!("configure-{project}-{provider}"),
        "keelson-cli",
        "sh.keptn.event.monitoring.configure".into(),
        "configure-ctx",
        json!({"project": project, "service": SERVICE, "type": provider}),
        t0(),
    )
}

#[tokio::test]
async fn monitoring_configure_writes_the_project_config_once_and_is_idempotent_on_redelivery() {
    let w = World::new(Some("default-provider")).await;
    let configure = monitoring_configure(PROJECT, "prometheus");
    let config = |w: &World| {
        let store = w.store.clone();
        async move {
            store
                .read_resource(PROJECT, &Scope::project(), CONFIG_URI, None)
                .await
                .unwrap()
                .map(|r| String::from_utf8(r.content).unwrap())
        }
    };
    assert_eq!(config(&w).await, None);

    assert_eq!(
        w.lighthouse.process(&configure).await.unwrap(),
        Outcome::Configured
    );
    assert_eq!(
        config(&w).await.as_deref(),
        Some("sli-provider: \"prometheus\"\n")
    );
    assert_eq!(
        w.lighthouse.sli_provider(PROJECT).await.unwrap().as_deref(),
        Some("prometheus")
    );
    let commit = w.store.latest_commit(PROJECT).await.unwrap();

    assert_eq!(
        w.lighthouse.process(&configure).await.unwrap(),
        Outcome::Configured,
        "redelivered"
    );
    assert_eq!(
        w.store.latest_commit(PROJECT).await.unwrap(),
        commit,
        "a redelivery writes no new commit"
    );
    assert!(
        w.published().await.is_empty(),
        "configuring publishes nothing"
    );

    w.lighthouse
        .process(&monitoring_configure(PROJECT, "dynatrace"))
        .await
        .unwrap();
    assert_ne!(w.store.latest_commit(PROJECT).await.unwrap(), commit);
    assert_eq!(
        config(&w).await.as_deref(),
        Some("sli-provider: \"dynatrace\"\n")
    );
    assert_eq!(
        w.lighthouse.sli_provider(PROJECT).await.unwrap().as_deref(),
        Some("dynatrace")
    );

    let unknown = w
        .lighthouse
        .process(&monitoring_configure("nope", "prometheus"))
        .await
        .unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::Invalid, "{unknown}");
    let mut no_type = configure.clone();
    no_type.data = json!({"project": PROJECT});
    let err = w.lighthouse.process(&no_type).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
}

// ------------------------------------------------------------ SLO problems

#[tokio::test]
async fn an_unknown_project_stage_service_or_commit_is_named_in_the_errored_evaluation() {
    let w = World::new(Some("prometheus")).await;
    let commit = w.write_slo(CARTS_SLO).await;
    let cases = [
        ("project", "nope", "project nope not found"),
        ("stage", "nope", "stage nope not found"),
        ("service", "nope", "service nope not found"),
        (
            "gitcommitid",
            "deadbeef",
            "commit deadbeef of project sockshop not found",
        ),
    ];
    for (field, value, problem) in cases {
        let mut trigger = evaluation_triggered(&format!("eval-{field}"), Some(&commit));
        if field == "gitcommitid" {
            trigger.gitcommitid = Some(value.into());
        } else {
            trigger.data[field] = json!(value);
        }
        let out = w.trigger(&trigger).await;
        assert_eq!(
            types(&out),
            [
                "sh.keptn.event.evaluation.started",
                "sh.keptn.event.evaluation.finished"
            ],
            "{field}"
        );
        let f = &out[1];
        assert_eq!(f.triggeredid, Some(trigger.id.clone()), "{field}");
        assert_eq!(f.data["status"], "errored", "{field}");
        assert_eq!(f.data["result"], "fail", "{field}");
        assert_eq!(f.data["evaluation"]["result"], "fail", "{field}");
        assert_eq!(
            f.data["message"],
            format!("error retrieving SLO file: {problem}"),
            "{field}"
        );
        assert_eq!(f.data["evaluation"]["timeStart"], START, "{field}");
        assert_eq!(f.data["evaluation"]["timeEnd"], END, "{field}");
    }
}

#[tokio::test]
async fn an_slo_that_does_not_parse_errors_the_evaluation_without_asking_for_slis() {
    let w = World::new(Some("prometheus")).await;
    let commit = w.write_slo(BROKEN_SLO).await;
    let out = w
        .trigger(&evaluation_triggered("eval-1", Some(&commit)))
        .await;
    assert_eq!(out[1].ty, task_type("evaluation", "finished"));
    assert_eq!(out[1].data["status"], "errored");
    let message = out[1].data["message"].as_str().unwrap();
    assert!(
        message.starts_with("error retrieving SLO file: slo.yaml is not a valid SLO file:"),
        "{message}"
    );
}

#[tokio::test]
async fn without_an_slo_no_indicators_are_asked_for_and_nothing_is_evaluated() {
    let w = World::new(Some("prometheus")).await;
    let commit = w.store.latest_commit(PROJECT).await.unwrap().unwrap();
    let trigger = evaluation_triggered("eval-1", Some(&commit));
    let out = w.trigger(&trigger).await;
    assert_eq!(out[1].ty, task_type("get-sli", "triggered"));
    assert_eq!(out[1].data["get-sli"]["indicators"], json!([]));
    assert_eq!(out[1].data["get-sli"]["customFilters"], json!([]));

    let finished = w.answer(&trigger, json!([])).await;
    assert_eq!(finished.triggeredid.as_deref(), Some("eval-1"));
    assert_eq!(finished.gitcommitid.as_deref(), Some(commit.as_str()));
    assert_eq!(
        finished.data,
        json!({
            "project": PROJECT, "stage": STAGE, "service": SERVICE,
            "labels": {"build": "7"}, "status": "succeeded", "result": "pass",
            "message": "no evaluation performed by lighthouse because no SLO file configured for project sockshop",
            "evaluation": {"timeStart": START, "timeEnd": END, "result": "pass", "score": 0,
                           "sloFileContent": "", "indicatorResults": null}
        })
    );
}

// ----------------------------------------------------- previous evaluations

/// Stored, newest first. Only a, b, c, d and e belong to sockshop/staging/carts.
async fn store_history(w: &World) -> Vec<KeptnEvent> {
    let mut other_project = previous("other-project", STAGE, SERVICE, "pass", 9000.0, 5);
    other_project.data["project"] = json!("other");
    let history = vec![
        other_project,
        previous("other-stage", "production", SERVICE, "pass", 9000.0, 10),
        previous("other-service", STAGE, "orders", "pass", 9000.0, 20),
        previous("a", STAGE, SERVICE, "fail", 400.0, 30),
        previous("b", STAGE, SERVICE, "pass", 300.0, 40),
        previous("c", STAGE, SERVICE, "pass", 200.0, 50),
        previous("d", STAGE, SERVICE, "warning", 100.0, 60),
        previous("e", STAGE, SERVICE, "pass", 700.0, 70),
    ];
    w.store(&history).await;
    history
}

#[tokio::test]
async fn previous_evaluations_are_chosen_by_the_slo_comparison_settings() {
    // The current value 320 passes `<=+10%` when the aggregate is at least 291.
    // (compare_with include_result_with_score number_of_comparison_results,
    //  compared events, aggregate, target of `<=+10%`, result)
    let cases = [
        ("single_result all 3", "a", 400.0, 440.0, "pass"),
        ("single_result pass 3", "b", 300.0, 330.0, "pass"),
        ("several_results all 3", "a b c", 300.0, 330.0, "pass"),
        ("several_results pass 3", "b c e", 400.0, 440.0, "pass"),
        ("several_results pass 2", "b c", 250.0, 275.0, "fail"),
        (
            "several_results pass_or_warn 4",
            "b c d e",
            325.0,
            357.5,
            "pass",
        ),
        ("several_results all 5", "a b c d e", 340.0, 374.0, "pass"),
        // Keptn: any other compare_with compares with 3, whatever the number says.
        ("latest all 1", "a b c", 300.0, 330.0, "pass"),
    ];
    for (case, compared, aggregate, target, result) in cases {
        let settings: Vec<&str> = case.split(' ').collect();
        let (compare_with, include, n) = (settings[0], settings[1], settings[2].parse().unwrap());
        let compared: Vec<&str> = compared.split(' ').collect();
        let w = World::new(Some("prometheus")).await;
        let commit = w.write_slo(&relative_slo(compare_with, include, n)).await;
        store_history(&w).await;
        let finished = w
            .evaluate(&evaluation_triggered("eval-1", Some(&commit)), rt(320.0))
            .await;
        assert_eq!(compared_events(&finished), compared, "{case}");
        let indicator = first_indicator(&finished);
        assert_eq!(
            indicator["value"]["comparedValue"].as_f64(),
            Some(aggregate),
            "{case}"
        );
        assert_eq!(
            indicator["passTargets"][0]["targetValue"].as_f64(),
            Some(target),
            "{case}"
        );
        assert_eq!(finished.data["result"], result, "{case}");
        assert_eq!(
            finished.data["evaluation"]["score"],
            if result == "pass" { 100 } else { 0 },
            "{case}"
        );
    }
}

#[tokio::test]
async fn invalidated_evaluations_are_never_compared_with() {
    // b (pass, 300) is invalidated; without that each case would compare with it.
    let cases = [
        ("single_result pass 1", "c", 200.0),
        ("several_results all 2", "a c", 300.0),
        ("several_results pass 3", "c e", 450.0),
    ];
    for (case, compared, aggregate) in cases {
        let settings: Vec<&str> = case.split(' ').collect();
        let (compare_with, include, n) = (settings[0], settings[1], settings[2].parse().unwrap());
        let compared: Vec<&str> = compared.split(' ').collect();
        let w = World::new(Some("prometheus")).await;
        let commit = w.write_slo(&relative_slo(compare_with, include, n)).await;
        let history = store_history(&w).await;
        let b = history.iter().find(|e| e.id == "b").unwrap();
        w.store(&[invalidated(b)]).await;
        let finished = w
            .evaluate(&evaluation_triggered("eval-1", Some(&commit)), rt(320.0))
            .await;
        assert_eq!(compared_events(&finished), compared, "{case}");
        assert_eq!(
            first_indicator(&finished)["value"]["comparedValue"].as_f64(),
            Some(aggregate),
            "{case}"
        );
    }
}

/// The lighthouse keeps the previous evaluations it decoded; one invalidated
/// after it was compared with is still left out of the next comparison, and
/// the others are compared with as before.
#[tokio::test]
async fn an_evaluation_invalidated_after_it_was_compared_with_is_left_out_of_the_next() {
    let w = World::new(Some("prometheus")).await;
    let commit = w
        .write_slo(&relative_slo("several_results", "all", 3))
        .await;
    let history = store_history(&w).await;
    let first = w
        .evaluate(&evaluation_triggered("eval-1", Some(&commit)), rt(320.0))
        .await;
    assert_eq!(compared_events(&first), ["a", "b", "c"]);
    let b = history.iter().find(|e| e.id == "b").unwrap();
    w.store(&[invalidated(b)]).await;
    let second = w
        .evaluate(&evaluation_triggered("eval-2", Some(&commit)), rt(320.0))
        .await;
    assert_eq!(compared_events(&second), ["a", "c", "d"]);
    assert_eq!(
        first_indicator(&second)["value"]["comparedValue"].as_f64(),
        Some(700.0 / 3.0)
    );
}

#[tokio::test]
async fn evaluations_of_other_projects_stages_and_services_are_never_compared_with() {
    let w = World::new(Some("prometheus")).await;
    let commit = w
        .write_slo(&relative_slo("several_results", "all", 50))
        .await;
    store_history(&w).await;
    let finished = w
        .evaluate(&evaluation_triggered("eval-1", Some(&commit)), rt(320.0))
        .await;
    assert_eq!(compared_events(&finished), ["a", "b", "c", "d", "e"]);
    assert_eq!(
        first_indicator(&finished)["value"]["comparedValue"].as_f64(),
        Some(340.0),
        "the 9000s of other stages, services and projects are not in the average"
    );
}

#[tokio::test]
async fn stored_previous_evaluations_compare_as_keelson_evaluate_compares_the_same_files() {
    // tests/cli_evaluate.rs evaluates these fixtures offline with --previous;
    // stored in the datastore, the lighthouse must reach the same verdict.
    let w = World::new(Some("prometheus")).await;
    let commit = w.write_slo(RELATIVE_SLO).await;
    let history: Vec<KeptnEvent> = serde_json::from_str::<Vec<Value>>(PREVIOUS)
        .unwrap()
        .into_iter()
        .map(|v| KeptnEvent::from_untrusted_value(v).unwrap())
        .collect();
    w.store(&history).await;
    let values: Value = serde_json::from_str(RELATIVE_VALUES).unwrap();
    let finished = w
        .evaluate(&evaluation_triggered("eval-1", Some(&commit)), values)
        .await;
    assert_eq!(
        compared_events(&finished),
        ["prev-a", "prev-c", "prev-d"],
        "the failed prev-b is left out"
    );
    assert_eq!(finished.data["result"], "fail");
    assert_eq!(finished.data["evaluation"]["score"], 50);
    assert_eq!(
        finished.data["message"],
        "Evaluation failed since the calculated score of 50 is below the warning value of 75"
    );
    let indicator = first_indicator(&finished);
    assert_eq!(indicator["value"]["comparedValue"], 300);
    assert_eq!(
        indicator["passTargets"],
        json!([{"criteria": "<=+10%", "targetValue": 330, "violated": true}])
    );
}

#[tokio::test]
async fn a_redelivered_get_sli_finished_never_compares_the_evaluation_with_itself() {
    let w = World::new(Some("prometheus")).await;
    let commit = w.write_slo(&relative_slo("single_result", "all", 1)).await;
    w.store(&[previous("a", STAGE, SERVICE, "pass", 400.0, 30)])
        .await;
    let trigger = evaluation_triggered("eval-1", Some(&commit));
    w.trigger(&trigger).await;
    let answer = get_sli_finished(&trigger, rt(320.0), w.clock.now());
    let first = w.answer_with(&answer).await;
    assert_eq!(compared_events(&first), ["a"]);
    // The datastore stores the answer; then the queue redelivers the
    // get-sli.finished (the ack was lost).
    w.store(std::slice::from_ref(&first)).await;
    w.clock.advance_ms(30_000);
    let again = w.answer_with(&answer).await;
    assert_eq!(again.id, first.id);
    assert_eq!(again.triggeredid, first.triggeredid);
    assert_eq!(again.data, first.data);
    assert_eq!(compared_events(&again), ["a"]);
}

// ----------------------------------------------------------- finding the trigger

#[tokio::test]
async fn a_get_sli_finished_whose_trigger_is_not_stored_yet_is_retried_then_answered_as_an_orphan()
{
    let w = World::new(Some("prometheus")).await;
    let trigger = evaluation_triggered("eval-1", None);
    let answer = get_sli_finished(&trigger, rt(320.0), w.clock.now());
    w.store(std::slice::from_ref(&answer)).await;

    assert_eq!(answer.time, w.clock.now());
    let mut age = 0;
    for age_ms in [0, 1, GRACE_MS - 1] {
        w.clock.advance_ms(age_ms - age);
        age = age_ms;
        let err = w.lighthouse.process(&answer).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient, "{age_ms} ms: {err}");
        assert!(w.published().await.is_empty(), "{age_ms} ms");
    }

    w.clock.advance_ms(1);
    let out = w.run(&answer).await;
    assert_eq!(out.len(), 1);
    let orphan = &out[0];
    assert_eq!(orphan.ty, task_type("evaluation", "finished"));
    assert_eq!(
        orphan.id,
        ids::derive(&answer.id, "evaluation.finished"),
        "derived from the answer: a redelivery re-emits it"
    );
    assert_eq!(orphan.triggeredid, None, "there is no trigger to name");
    assert_eq!(orphan.shkeptncontext, CONTEXT);
    assert_eq!(
        orphan.data,
        json!({"project": PROJECT, "stage": STAGE, "service": SERVICE,
               "labels": {"build": "7"}, "status": "errored", "result": "fail",
               "message": "could not find the evaluation.triggered event of this get-sli.finished event"})
    );
    assert_eq!(w.run(&answer).await, out, "redelivered");
}

#[tokio::test]
async fn a_get_sli_finished_is_answered_once_the_datastore_has_caught_up() {
    let w = World::new(Some("prometheus")).await;
    let commit = w.write_slo(CARTS_SLO).await;
    let trigger = evaluation_triggered("eval-1", Some(&commit));
    let answer = get_sli_finished(&trigger, serde_json::from_str(CARTS_VALUES).unwrap(), t0());
    let err = w.lighthouse.process(&answer).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");

    w.trigger(&trigger).await;
    w.clock.advance_ms(10_000);
    let finished = w.answer_with(&answer).await;
    assert_eq!(finished.triggeredid.as_deref(), Some("eval-1"));
    assert_eq!(finished.data["result"], "pass");
    assert_eq!(finished.data["evaluation"]["score"], 87.5);
}

/// The lighthouse that sent a `get-sli.triggered` finds its trigger without
/// the store; another (a restarted process, another Lambda) finds the same
/// one in the store: the evaluations are identical. The trigger it remembers
/// is not taken for an answer from another context.
#[tokio::test]
async fn a_remembered_trigger_evaluates_as_the_stored_one_and_only_in_its_context() {
    let w = World::new(Some("prometheus")).await;
    let commit = w.write_slo(CARTS_SLO).await;
    let trigger = evaluation_triggered("eval-1", Some(&commit));
    w.trigger(&trigger).await;
    let answer = get_sli_finished(&trigger, serde_json::from_str(CARTS_VALUES).unwrap(), t0());
    w.store(std::slice::from_ref(&answer)).await;

    let other = Lighthouse::new(
        w.store.clone(),
        w.bus.clone(),
        w.clock.clone(),
        Config {
            default_sli_provider: Some("prometheus".into()),
        },
    );
    other.process(&answer).await.unwrap();
    let from_store = w.published().await;
    let remembered = w.run(&answer).await;
    assert_eq!(remembered.len(), 1);
    assert_eq!(remembered, from_store);
    assert_eq!(remembered[0].triggeredid.as_deref(), Some("eval-1"));
    assert_eq!(remembered[0].data["evaluation"]["score"], 87.5);

    // Same request id, another context: no trigger there (not stored yet).
    let mut elsewhere = answer.clone();
    elsewhere.id = "elsewhere".into();
    elsewhere.shkeptncontext = "9d1f8a2c-0000-4000-8000-000000000001".into();
    let err = w.lighthouse.process(&elsewhere).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
}

#[tokio::test]
async fn a_get_sli_finished_finds_its_own_evaluation_when_a_context_has_two() {
    let w = World::new(Some("prometheus")).await;
    let commit = w.write_slo(&relative_slo("single_result", "all", 1)).await;
    let older = evaluation_triggered("eval-older", Some(&commit));
    let mut newer = evaluation_triggered("eval-newer", Some(&commit));
    newer.time = Timestamp::from_millis(t0().millis() + 60_000);
    w.trigger(&older).await;
    w.trigger(&newer).await;

    let cases = [
        (Some(get_sli_id("eval-older")), "eval-older"),
        (Some(get_sli_id("eval-newer")), "eval-newer"),
        // A provider answering a request Keelson did not send: the newest.
        (Some("someone-elses-request".to_string()), "eval-newer"),
        (None, "eval-newer"),
    ];
    for (i, (named, want)) in cases.into_iter().enumerate() {
        let mut answer = get_sli_finished(&older, rt(320.0), w.clock.now());
        answer.id = format!("answer-{i}");
        answer.triggeredid = named.clone();
        let finished = w.answer_with(&answer).await;
        assert_eq!(finished.triggeredid.as_deref(), Some(want), "{named:?}");
        assert_eq!(
            finished.id,
            ids::derive(want, "evaluation.finished"),
            "{named:?}"
        );
    }
}

#[tokio::test]
async fn a_redelivered_evaluation_triggered_re_emits_identical_events() {
    let w = World::new(Some("prometheus")).await;
    let commit = w.write_slo(CARTS_SLO).await;
    let trigger = evaluation_triggered("eval-1", Some(&commit));
    let first = w.trigger(&trigger).await;
    assert_eq!(first.len(), 2);
    assert_eq!(w.run(&trigger).await, first, "redelivered at once");

    w.clock.advance_ms(120_000);
    let later = w.run(&trigger).await;
    let key = |e: &KeptnEvent| {
        (
            e.id.clone(),
            e.ty.clone(),
            e.triggeredid.clone(),
            e.gitcommitid.clone(),
            e.data.clone(),
        )
    };
    assert_eq!(
        later.iter().map(key).collect::<Vec<_>>(),
        first.iter().map(key).collect::<Vec<_>>(),
        "redelivered later: same ids and payloads, so consumers dedupe them"
    );
}

/// The lighthouse keeps each evaluation it produces as it produced it and
/// compares the next ones with that; others come back from their stored
/// JSON. Both must be the same numbers, so every float must read back from
/// JSON exactly as serde_json wrote it (its `float_roundtrip` feature; the
/// default parser is off by one bit for some of these).
#[test]
fn every_float_reads_back_from_json_exactly_as_written() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut checked = 0;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x);
        if !f.is_finite() {
            continue;
        }
        let text = serde_json::to_string(&json!(f)).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back.as_f64().map(f64::to_bits), Some(f.to_bits()), "{text}");
        checked += 1;
    }
    assert!(checked > 150_000, "{checked} floats checked");
}
