use super::*;
use keelson_core::ports::{ManualClock, ProjectStore, Queue};
use keelson_core::project::Project;
use keelson_core::resource::Change;
use keelson_memory::{MemoryBus, MemoryStore};
use std::sync::Arc;

const T0: i64 = 1_767_225_600_000;

fn bus() -> MemoryBus {
    MemoryBus::new(vec![Subscription::new("probe", &["sh.keptn.event.>"])])
}

async fn published(bus: &MemoryBus) -> Vec<KeptnEvent> {
    bus.receive("probe", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event)
        .collect()
}

async fn project(store: &MemoryStore, name: &str) -> String {
    store
        .create_project(
            &Project {
                name: name.into(),
                creation_date: Timestamp::from_millis(T0),
                shipyard: String::new(),
                shipyard_version: "spec.keptn.sh/0.2.4".into(),
                stages: vec!["dev".into()],
                services: vec![],
                git_remote_url: None,
                git_user: None,
            },
            Timestamp::from_millis(T0),
        )
        .await
        .unwrap()
}

async fn write(store: &MemoryStore, scope: Scope, uri: &str, content: &str) -> String {
    store
        .write_resources(
            "sockshop",
            &scope,
            &[Change {
                uri: uri.into(),
                content: Some(content.as_bytes().to_vec()),
            }],
            Timestamp::from_millis(T0),
        )
        .await
        .unwrap()
}

fn service_scope() -> Scope {
    Scope {
        stage: Some("dev".into()),
        service: Some("carts".into()),
    }
}

fn trigger(indicators: &[&str], commit: Option<&str>) -> KeptnEvent {
    let mut ev = KeptnEvent::new(
        "trigger-1".into(),
        "lighthouse",
        task_type("get-sli", "triggered"),
        "ctx-1",
        json!({"project": "sockshop", "stage": "dev", "service": "carts",
               "labels": {"buildId": "42"}, "deployment": "direct",
               "get-sli": {"sliProvider": "prometheus", "start": "2026-01-01T00:00:00.000Z",
                           "end": "2026-01-01T00:05:00.000Z", "indicators": indicators,
                           "customFilters": null}}),
        Timestamp::from_millis(T0),
    );
    ev.gitcommitid = commit.map(str::to_string);
    ev
}

fn provider(
    store: &MemoryStore,
    bus: &MemoryBus,
    default_url: Option<String>,
) -> Provider<MemoryStore, MemoryBus, Arc<ManualClock>> {
    Provider::new(
        store.clone(),
        bus.clone(),
        Arc::new(ManualClock::at(Timestamp::from_millis(T0 + 400_000))),
        Config {
            default_url,
            timeout: Duration::from_secs(5),
        },
    )
}

/// A loopback URL nothing listens on.
fn closed_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn finished(outcome: Outcome) -> KeptnEvent {
    match outcome {
        Outcome::Answered(f) => *f,
        Outcome::Ignored => panic!("the trigger was ignored"),
    }
}

#[test]
fn subscription_takes_only_get_sli_triggers() {
    let s = subscription();
    assert_eq!(s.consumer, CONSUMER);
    assert!(s.matches("sh.keptn.event.get-sli.triggered"));
    assert!(!s.matches("sh.keptn.event.get-sli.finished"));
    assert!(!s.matches("sh.keptn.event.evaluation.triggered"));
}

#[test]
fn config_from_vars_names_every_bad_variable() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    assert_eq!(Config::from_vars(vars(&[])).unwrap(), Config::default());
    assert_eq!(
        Config::from_vars(vars(&[
            (ENV_URL, " http://prom:9090 "),
            (ENV_TIMEOUT, "1m30s")
        ]))
        .unwrap(),
        Config {
            default_url: Some("http://prom:9090".into()),
            timeout: Duration::from_secs(90),
        }
    );
    assert_eq!(
        Config::from_vars(vars(&[(ENV_URL, "")]))
            .unwrap()
            .default_url,
        None
    );
    let err =
        Config::from_vars(vars(&[(ENV_URL, "prom:9090"), (ENV_TIMEOUT, "soon")])).unwrap_err();
    assert_eq!(err.problems.len(), 2, "{err}");
    assert!(err.problems[0].starts_with(ENV_URL), "{err}");
    assert!(err.problems[1].starts_with(ENV_TIMEOUT), "{err}");
    let err = Config::from_vars(vars(&[(ENV_TIMEOUT, "0s")])).unwrap_err();
    assert_eq!(
        err.problems,
        vec![format!("{ENV_TIMEOUT}: must be more than 0")]
    );
}

#[test]
fn verdict_follows_prometheus_service() {
    let ok = || SliValue::ok("a", 1.0);
    let bad = || SliValue::failed("b", "x".into());
    let cases = [
        (vec![], "pass", ""),
        (vec![ok(), ok()], "pass", ""),
        (vec![ok(), bad()], "warning", ""),
        (vec![bad(), bad()], "fail", "unable to retrieve metrics"),
    ];
    for (values, result, message) in cases {
        let a = Answer::of(values);
        assert_eq!(
            (a.status, a.result, a.message.as_str()),
            ("succeeded", result, message)
        );
    }
}

#[test]
fn times_are_rfc3339_or_unix_seconds() {
    assert_eq!(
        parse_time(Some("2026-01-01T00:05:00.000Z")).unwrap(),
        Timestamp::from_millis(T0 + 300_000)
    );
    assert_eq!(
        parse_time(Some("1767225600")).unwrap(),
        Timestamp::from_millis(T0)
    );
    assert!(parse_time(Some("yesterday")).is_err());
    assert!(parse_time(None).is_err());
}

#[tokio::test]
async fn other_providers_and_other_events_are_ignored() {
    let store = MemoryStore::new();
    let bus = bus();
    let p = provider(&store, &bus, Some(closed_url()));
    let mut dynatrace = trigger(&["x"], None);
    dynatrace.data["get-sli"]["sliProvider"] = json!("dynatrace");
    let mut finished_ev = trigger(&["x"], None);
    finished_ev.ty = task_type("get-sli", "finished");
    let mut no_data = trigger(&[], None);
    no_data.data = Value::Null;
    for ev in [dynatrace, finished_ev, no_data] {
        assert_eq!(p.process(&ev).await.unwrap(), Outcome::Ignored);
    }
    assert!(published(&bus).await.is_empty());
}

#[tokio::test]
async fn without_a_prometheus_url_the_answer_is_errored() {
    let store = MemoryStore::new();
    project(&store, "sockshop").await;
    let bus = bus();
    let p = provider(&store, &bus, None);
    let f = finished(p.process(&trigger(&["a"], None)).await.unwrap());
    assert_eq!(f.data["status"], json!("errored"));
    assert_eq!(f.data["result"], json!("fail"));
    assert_eq!(
        f.data["message"],
        json!("failed to get Prometheus API URL: none is configured: set url in prometheus/config.yaml of project sockshop, or KEELSON_PROMETHEUS_URL")
    );
    assert_eq!(f.data["get-sli"]["indicatorValues"], json!([]));
    let evs = published(&bus).await;
    assert_eq!(
        evs.iter().map(|e| e.ty.as_str()).collect::<Vec<_>>(),
        vec![
            "sh.keptn.event.get-sli.started",
            "sh.keptn.event.get-sli.finished"
        ]
    );
    assert_eq!(evs[0].data["status"], json!("succeeded"));
}

#[tokio::test]
async fn a_missing_sli_file_is_reported_with_the_levels_searched() {
    let store = MemoryStore::new();
    project(&store, "sockshop").await;
    let bus = bus();
    let p = provider(&store, &bus, Some(closed_url()));
    let f = finished(p.process(&trigger(&["a"], None)).await.unwrap());
    assert_eq!(f.data["status"], json!("errored"));
    assert_eq!(
        f.data["message"],
        json!("unable to retrieve custom queries for project sockshop: no prometheus/sli.yaml found (looked at project sockshop, stage dev, service carts in stage dev)")
    );
    // No indicators asked for: nothing to look up, nothing missing.
    let f = finished(p.process(&trigger(&[], None)).await.unwrap());
    assert_eq!(
        (&f.data["status"], &f.data["result"]),
        (&json!("succeeded"), &json!("pass"))
    );
}

#[tokio::test]
async fn an_unparseable_sli_file_is_reported_naming_the_file() {
    let store = MemoryStore::new();
    project(&store, "sockshop").await;
    write(&store, Scope::project(), SLI_URI, "indicators: {a: up}").await;
    let commit = write(&store, service_scope(), SLI_URI, "indicators: [").await;
    let bus = bus();
    let p = provider(&store, &bus, Some(closed_url()));
    let f = finished(p.process(&trigger(&["a"], Some(&commit))).await.unwrap());
    assert_eq!(f.data["status"], json!("errored"));
    let msg = f.data["message"].as_str().unwrap();
    assert!(
        msg.starts_with("unable to retrieve custom queries for project sockshop: prometheus/sli.yaml of service carts in stage dev: "),
        "{msg}"
    );
}

#[tokio::test]
async fn an_unknown_commit_is_reported_not_retried() {
    let store = MemoryStore::new();
    project(&store, "sockshop").await;
    let bus = bus();
    let p = provider(&store, &bus, Some(closed_url()));
    let f = finished(p.process(&trigger(&["a"], Some("nope"))).await.unwrap());
    assert_eq!(f.data["status"], json!("errored"));
    assert_eq!(
        f.data["message"],
        json!("failed to get Prometheus API URL: commit nope of project sockshop not found")
    );
}

#[tokio::test]
async fn the_project_config_url_wins_over_the_default() {
    let store = MemoryStore::new();
    project(&store, "sockshop").await;
    write(&store, Scope::project(), SLI_URI, "indicators: {a: up}").await;
    let unreachable = closed_url();
    let commit = write(
        &store,
        Scope::project(),
        CONFIG_URI,
        &format!("url: {unreachable}/prefix/"),
    )
    .await;
    let bus = bus();
    // The default is not a URL at all: were it used, the message would differ.
    let p = provider(&store, &bus, Some("http://default.invalid:1".into()));
    let f = finished(p.process(&trigger(&["a"], Some(&commit))).await.unwrap());
    let msg = f.data["get-sli"]["indicatorValues"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.starts_with(&format!(
            "unable to query prometheus api: error sending request for url ({unreachable}/prefix/api/v1/query)"
        )),
        "{msg}"
    );
}

#[tokio::test]
async fn failures_are_per_indicator_and_a_redelivered_trigger_gets_the_same_ids() {
    let store = MemoryStore::new();
    project(&store, "sockshop").await;
    write(
        &store,
        Scope::project(),
        SLI_URI,
        "spec_version: '1.0'\nindicators: {a: up, b: up}",
    )
    .await;
    let commit = write(&store, service_scope(), SLI_URI, "indicators: {b: ''}").await;
    let bus = bus();
    let p = provider(&store, &bus, Some(closed_url()));
    let ev = trigger(&["a", "b", "c"], Some(&commit));
    let f = finished(p.process(&ev).await.unwrap());
    assert_eq!(f.ty, "sh.keptn.event.get-sli.finished");
    assert_eq!(f.source, SOURCE);
    assert_eq!(f.triggeredid.as_deref(), Some("trigger-1"));
    assert_eq!(f.shkeptncontext, "ctx-1");
    assert_eq!(f.gitcommitid.as_deref(), Some(commit.as_str()));
    assert_eq!(f.id, ids::derive("trigger-1", "get-sli.finished"));
    assert_eq!(f.data["project"], json!("sockshop"));
    assert_eq!(f.data["labels"], json!({"buildId": "42"}));
    assert_eq!(f.data["status"], json!("succeeded"));
    assert_eq!(f.data["result"], json!("fail"));
    assert_eq!(f.data["message"], json!("unable to retrieve metrics"));
    let gs = &f.data["get-sli"];
    assert_eq!(gs["start"], json!("2026-01-01T00:00:00.000Z"));
    assert_eq!(gs["end"], json!("2026-01-01T00:05:00.000Z"));
    let values: Vec<SliValue> = serde_json::from_value(gs["indicatorValues"].clone()).unwrap();
    assert_eq!(
        values.iter().map(|v| v.metric.as_str()).collect::<Vec<_>>(),
        vec!["a", "b", "c"]
    );
    assert!(values.iter().all(|v| !v.success && v.value == 0.0));
    assert!(
        values[0]
            .message
            .starts_with("unable to query prometheus api: error sending request"),
        "{}",
        values[0].message
    );
    assert_eq!(
        values[1].message,
        "unable to get metric query: no query defined for SLI \"b\" in prometheus/sli.yaml"
    );
    assert_eq!(
        values[2].message,
        "unable to get metric query: no query defined for SLI \"c\" in prometheus/sli.yaml"
    );

    let first = published(&bus).await;
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].id, ids::derive("trigger-1", "get-sli.started"));
    assert_eq!(first[0].triggeredid.as_deref(), Some("trigger-1"));
    assert_eq!(first[0].gitcommitid.as_deref(), Some(commit.as_str()));
    p.process(&ev).await.unwrap();
    let again = published(&bus).await;
    assert_eq!(
        again.iter().map(|e| &e.id).collect::<Vec<_>>(),
        first.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn bad_times_fail_every_indicator_with_the_reason() {
    let store = MemoryStore::new();
    project(&store, "sockshop").await;
    write(&store, Scope::project(), SLI_URI, "indicators: {a: up}").await;
    let bus = bus();
    let p = provider(&store, &bus, Some(closed_url()));
    let mut ev = trigger(&["a"], None);
    ev.data["get-sli"]["start"] = json!("last tuesday");
    let f = finished(p.process(&ev).await.unwrap());
    assert_eq!(
        f.data["get-sli"]["indicatorValues"][0]["message"],
        json!("unable to parse start timestamp: \"last tuesday\" is neither an RFC 3339 time nor Unix seconds")
    );
}

#[tokio::test]
async fn a_trigger_that_does_not_decode_is_answered_errored() {
    let store = MemoryStore::new();
    let bus = bus();
    let p = provider(&store, &bus, Some(closed_url()));
    let mut ev = trigger(&[], None);
    ev.data["get-sli"]["indicators"] = json!("a,b");
    let f = finished(p.process(&ev).await.unwrap());
    assert_eq!(f.data["status"], json!("errored"));
    let msg = f.data["message"].as_str().unwrap();
    assert!(
        msg.starts_with("failed to decode get-sli.triggered event: "),
        "{msg}"
    );
}

#[tokio::test]
async fn queries_run_concurrently_and_keep_their_order() {
    let started = std::time::Instant::now();
    let futs = [300u64, 200, 100]
        .into_iter()
        .enumerate()
        .map(|(i, ms)| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            i
        });
    assert_eq!(join_ordered(futs.collect()).await, vec![0, 1, 2]);
    assert!(started.elapsed() < Duration::from_millis(550));
}
