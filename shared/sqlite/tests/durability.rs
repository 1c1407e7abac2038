//! What only a file can show: data and queued deliveries survive re-opening,
//! the schema is versioned, and the two connections work side by side.

use keelson_core::event::KeptnEvent;
use keelson_core::ports::{
    EventBus, EventStore, ExecutionFilter, Integration, IntegrationStore, LaneCommit,
    OpenTriggerFilter, ProjectStore, Queue, ResourceStore, SequenceStore, StoreError, Subscription,
    TypeHit, Versioned,
};
use keelson_core::project::Project;
use keelson_core::query::{EventQuery, TypeQuery};
use keelson_core::resource::{Change, Scope, SHIPYARD_URI};
use keelson_core::sequence::{self, Config, Input, LaneKey, LaneState, TriggerSpec};
use keelson_core::shipyard::Task;
use keelson_core::timestamp::Timestamp;
use keelson_sqlite::{SqliteStore, SCHEMA_VERSION};
use serde_json::json;
use std::path::{Path, PathBuf};

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000 + ms)
}

fn ev(id: &str, ty: &str, ctx: &str, ms: i64) -> KeptnEvent {
    KeptnEvent::new(
        id.into(),
        "test",
        ty.into(),
        ctx,
        json!({"project": "p", "stage": "dev", "service": "carts"}),
        t(ms),
    )
}

fn project() -> Project {
    Project {
        name: "p".into(),
        creation_date: t(0),
        shipyard: "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\n".into(),
        shipyard_version: "spec.keptn.sh/0.2.4".into(),
        stages: vec!["dev".into()],
        services: vec![],
        git_remote_url: None,
        git_user: None,
    }
}

fn db(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("keelson.db")
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).expect("open")
}

#[tokio::test]
async fn everything_committed_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = LaneKey::new("p", "dev", "carts");
    let trigger = ev(
        "seq-1",
        "sh.keptn.event.dev.delivery.triggered",
        "ctx-1",
        10,
    );
    let spec = TriggerSpec {
        tasks: vec![Task {
            name: "deployment".into(),
            triggered_after: None,
            properties: None,
        }],
        follow_ups: vec![],
        gitcommitid: None,
    };
    let d = sequence::handle(
        &LaneState::default(),
        Input::Trigger {
            event: &trigger,
            spec: Ok(spec),
            paused: false,
        },
        t(10),
        &Config::default(),
    );
    let wakeup = sequence::next_wakeup(&d.lane, &Config::default());
    let integration = Integration {
        id: "i1".into(),
        name: "jmeter-service".into(),
        body: json!({"name": "jmeter-service"}),
        last_seen: t(5),
    };

    let (first, second, updated) = {
        let s = open(&db(&dir));
        let first = s.create_project(&project(), t(0)).await.unwrap();
        let dev = Scope {
            stage: Some("dev".into()),
            service: None,
        };
        let commit = s
            .write_resources(
                "p",
                &dev,
                &[Change {
                    uri: "slo.yaml".into(),
                    content: Some(b"objectives: []".to_vec()),
                }],
                t(1),
            )
            .await
            .unwrap();
        let mut updated = project();
        updated.services.push(keelson_core::project::Service {
            name: "carts".into(),
            creation_date: t(2),
        });
        s.update_project(&updated, 1).await.unwrap();
        s.insert_events(&[
            trigger.clone(),
            ev("e2", "sh.keptn.event.deployment.triggered", "ctx-1", 20),
        ])
        .await
        .unwrap();
        s.commit_lane(LaneCommit {
            key: &key,
            expected_version: 0,
            state: &d.lane,
            ended: &d.ended,
            next_wakeup: wakeup,
            consumer: "shipyard",
            cause_id: "seq-1",
            effects: &d.emit,
            now: Timestamp::from_millis(1_000),
        })
        .await
        .unwrap();
        s.record_applied("datastore", "e2", &[], Timestamp::from_millis(1_000))
            .await
            .unwrap();
        s.set_paused("p", "ctx-9", Some("dev"), true).await.unwrap();
        s.put_integration(&integration).await.unwrap();
        (first, commit, updated)
    };

    let s = open(&db(&dir));
    assert_eq!(
        s.get_project("p").await.unwrap(),
        Some(Versioned {
            version: 2,
            value: updated
        })
    );
    assert_eq!(s.latest_commit("p").await.unwrap(), Some(second.clone()));
    let dev = Scope {
        stage: Some("dev".into()),
        service: None,
    };
    let slo = s
        .read_resource("p", &dev, "slo.yaml", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (slo.content, slo.version),
        (b"objectives: []".to_vec(), second.clone())
    );
    let shipyard = s
        .read_resource("p", &Scope::project(), SHIPYARD_URI, Some(&first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shipyard.version, first);

    let page = s
        .query_events(&EventQuery {
            page_size: 10,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["e2", "seq-1"]
    );
    let roots = s
        .query_events(&EventQuery {
            root: true,
            page_size: 10,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(roots.events, vec![trigger.clone()]);
    assert_eq!(
        s.insert_events(&[trigger]).await.unwrap(),
        0,
        "ids stay known"
    );

    assert_eq!(
        s.load_lane(&key).await.unwrap(),
        Some(Versioned {
            version: 1,
            value: d.lane.clone()
        })
    );
    assert_eq!(
        s.applied_effects("shipyard", "seq-1").await.unwrap(),
        Some(d.emit.clone())
    );
    assert!(!s
        .record_applied("datastore", "e2", &[], Timestamp::from_millis(1_000))
        .await
        .unwrap());
    assert_eq!(
        s.due_lanes(wakeup.unwrap()).await.unwrap(),
        vec![key.clone()]
    );
    let execs = s
        .list_executions(&ExecutionFilter {
            project: "p".into(),
            active_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(execs, d.lane.executions);
    let open_triggers = s
        .open_triggers(&OpenTriggerFilter {
            ty: "sh.keptn.event.deployment.triggered".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(open_triggers.len(), 1);
    assert!(s.is_paused("p", "ctx-9", "dev").await.unwrap());
    assert_eq!(s.get_integration("i1").await.unwrap(), Some(integration));
}

#[tokio::test]
async fn unacknowledged_deliveries_are_handed_out_again_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let subs = || vec![Subscription::new("shipyard", &["sh.keptn.event.>"])];
    let events: Vec<KeptnEvent> = (1..=4)
        .map(|i| ev(&format!("e{i}"), "sh.keptn.event.test.finished", "ctx", i))
        .collect();

    let receipts = {
        let store = open(&db(&dir));
        let bus = store.bus(subs());
        bus.publish(&events).await.unwrap();
        let got = bus.receive("shipyard", 10).await.unwrap();
        assert_eq!(got.len(), 4);
        // Another bus of the same store does not hand them out again.
        assert!(store
            .bus(subs())
            .receive("shipyard", 10)
            .await
            .unwrap()
            .is_empty());
        bus.ack("shipyard", &[got[0].receipt]).await.unwrap();
        bus.dead_letter("shipyard", got[1].receipt, "poison")
            .await
            .unwrap();
        assert_eq!(bus.pending("shipyard").unwrap(), 2);
        got.iter().map(|d| d.receipt).collect::<Vec<_>>()
    };

    let store = open(&db(&dir));
    let bus = store.bus(subs());
    assert_eq!(bus.pending("shipyard").unwrap(), 2);
    let again = bus.receive("shipyard", 10).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|d| (d.receipt, d.event.clone()))
            .collect::<Vec<_>>(),
        vec![
            (receipts[2], events[2].clone()),
            (receipts[3], events[3].clone())
        ],
        "the unacknowledged deliveries, with their receipts"
    );
    assert!(bus.receive("shipyard", 10).await.unwrap().is_empty());
    assert_eq!(
        bus.dead_letters("shipyard").unwrap(),
        vec![(events[1].clone(), "poison".to_string())]
    );

    bus.ack("shipyard", &[receipts[2], receipts[3]])
        .await
        .unwrap();
    bus.publish(&[ev("e5", "sh.keptn.event.test.finished", "ctx", 5)])
        .await
        .unwrap();
    let fresh = bus.receive("shipyard", 10).await.unwrap();
    assert_eq!(fresh.len(), 1);
    assert!(fresh[0].receipt > receipts[3], "receipts are never reused");
    bus.ack("shipyard", &[fresh[0].receipt]).await.unwrap();
    drop((bus, store));

    let bus = open(&db(&dir)).bus(subs());
    assert!(
        bus.receive("shipyard", 10).await.unwrap().is_empty(),
        "acknowledged deliveries are gone for good"
    );
    assert_eq!(bus.pending("shipyard").unwrap(), 0);
}

#[tokio::test]
async fn the_file_is_versioned_and_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&db(&dir)));
    let conn = rusqlite::Connection::open(db(&dir)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(conn);

    // Re-opening an up-to-date file keeps its data and version.
    let s = open(&db(&dir));
    s.create_project(&project(), t(0)).await.unwrap();
    drop(s);
    assert!(open(&db(&dir)).get_project("p").await.unwrap().is_some());

    let conn = rusqlite::Connection::open(db(&dir)).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    match SqliteStore::open(db(&dir)) {
        Err(
            e @ StoreError::Backend {
                transient: false, ..
            },
        ) => {
            assert!(e.to_string().contains("schema version"), "{e}")
        }
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_readers_do_not_interfere() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    let bus = store.bus(vec![Subscription::new("datastore", &["sh.keptn.>"])]);
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (store, bus) = (store.clone(), bus.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let e = ev(
                    &format!("w{w}-{i}"),
                    "sh.keptn.event.test.finished",
                    &format!("ctx-{w}"),
                    i,
                );
                bus.publish(std::slice::from_ref(&e)).await.unwrap();
                store.insert_events(&[e]).await.unwrap();
            }
        }));
    }
    for r in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let q = EventQuery {
                    keptn_context: Some(format!("ctx-{r}")),
                    page_size: 100,
                    ..Default::default()
                };
                let page = store.query_events(&q).await.unwrap();
                assert_eq!(page.total_count, page.events.len());
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let page = store
        .query_events(&EventQuery {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total_count, 200);
    let mut delivered = 0;
    loop {
        let got = bus.receive("datastore", 64).await.unwrap();
        if got.is_empty() {
            break;
        }
        delivered += got.len();
        bus.ack(
            "datastore",
            &got.iter().map(|d| d.receipt).collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    }
    assert_eq!(delivered, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_are_group_committed_each_once_in_per_publisher_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = keelson_sqlite::SqliteStore::open(dir.path().join("k.db")).unwrap();
    let bus = store.bus(vec![keelson_core::ports::Subscription::new(
        "c",
        &["sh.keptn.>"],
    )]);
    let mut handles = vec![];
    for p in 0..16 {
        let bus = bus.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..25 {
                let e = keelson_core::KeptnEvent::new(
                    format!("p{p}-{i:02}"),
                    "t",
                    "sh.keptn.event.test.finished".into(),
                    "ctx",
                    serde_json::json!({}),
                    keelson_core::Timestamp::from_millis(1),
                );
                keelson_core::ports::EventBus::publish(&bus, &[e])
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let got = keelson_core::ports::Queue::receive(&bus, "c", 1000)
        .await
        .unwrap();
    assert_eq!(got.len(), 16 * 25);
    for p in 0..16 {
        let mine: Vec<&str> = got
            .iter()
            .map(|d| d.event.id.as_str())
            .filter(|id| id.starts_with(&format!("p{p}-")))
            .collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted, "publisher {p}'s events keep their order");
        assert_eq!(mine.len(), 25);
    }
}

/// Under a steady stream of writes (with queries in between) the write-ahead
/// log is rewound and stays bounded: passive checkpoints alone never caught
/// up, and the log grew with everything ever written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_ahead_log_stays_bounded_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    let wal = dir.path().join("keelson.db-wal");
    let filler = "x".repeat(6_000);
    let mut largest = 0u64;
    let mut written = 0usize;
    let mut n = 0;
    // About 48 MB of event text in batches, written for at least 2 seconds
    // (several checkpoint periods).
    let started = std::time::Instant::now();
    while written < 48_000_000 || started.elapsed() < std::time::Duration::from_secs(2) {
        let batch: Vec<KeptnEvent> = (0..40)
            .map(|_| {
                n += 1;
                let mut e = ev(
                    &format!("e{n}"),
                    "sh.keptn.event.test.finished",
                    &format!("c{}", n % 97),
                    n,
                );
                e.data["filler"] = json!(filler);
                e
            })
            .collect();
        written += batch.iter().map(|e| e.to_json().len()).sum::<usize>();
        store.insert_events(&batch).await.unwrap();
        store
            .query_events(&EventQuery {
                keptn_context: Some(format!("c{}", n % 97)),
                ..EventQuery::default()
            })
            .await
            .unwrap();
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    assert!(written >= 48_000_000);
    assert!(
        largest < 40_000_000,
        "the log reached {largest} bytes for {written} bytes of events"
    );
    let total = store
        .query_events(&EventQuery {
            page_size: 1,
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .total_count;
    assert_eq!(total, n as usize, "every event is stored");
}

/// A version-1 file (before the scoped type index and the `result` column)
/// is migrated in place on opening, keeping its events; a `data.result`
/// filter finds both the rows stored before (read from their JSON) and the
/// new ones (from the column), and compares non-string results as text.
#[tokio::test]
async fn a_version_1_file_is_migrated_keeping_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(db(&dir)).unwrap();
    conn.execute_batch(include_str!("../src/schema.sql"))
        .unwrap();
    let stored_before = |id: &str, result: serde_json::Value, ms: i64| {
        let mut e = ev(id, "sh.keptn.event.evaluation.finished", "c1", ms);
        e.data["result"] = result;
        conn.execute(
            "INSERT INTO events (id, time, type, project, stage, service, shkeptncontext, \
             source, is_root, json) VALUES (?1, ?2, ?3, 'p', 'dev', 'carts', 'c1', 'test', 0, ?4)",
            rusqlite::params![e.id, ms, e.ty, e.to_json()],
        )
        .unwrap();
    };
    stored_before("old-pass", json!("pass"), 1);
    stored_before("old-number", json!(3), 2);
    conn.pragma_update(None, "user_version", 1).unwrap();
    drop(conn);

    let s = open(&db(&dir));
    let page = s.query_events(&EventQuery::default()).await.unwrap();
    assert_eq!(page.events.len(), 2, "the events are kept");
    let mut new = ev("new-fail", "sh.keptn.event.evaluation.finished", "c1", 3);
    new.data["result"] = json!("fail");
    let mut new_pass = ev("new-pass", "sh.keptn.event.evaluation.finished", "c1", 4);
    new_pass.data["result"] = json!("pass");
    s.insert_events(&[new, new_pass]).await.unwrap();
    let with_result = |results: &'static str| {
        let s = s.clone();
        async move {
            let q = TypeQuery {
                ty: "sh.keptn.event.evaluation.finished".into(),
                filter: keelson_core::query::parse_filter(&format!(
                    "data.project:p AND data.stage:dev AND data.service:carts AND data.result:{results}"
                ))
                .unwrap(),
                exclude_invalidated: true,
                from_time: None,
                limit: 10,
            };
            let events = s.query_by_type(&q).await.unwrap();
            // The events a caller knew come back as their ids, in the same order.
            let known = |id: &str| id.starts_with("old-");
            let hits = s.query_by_type_skipping(&q, &known).await.unwrap();
            let expected: Vec<TypeHit> = events
                .iter()
                .map(|e| match e.id.starts_with("old-") {
                    true => TypeHit::Known(e.id.clone()),
                    false => TypeHit::Event(Box::new(e.clone())),
                })
                .collect();
            assert_eq!(hits, expected);
            events.into_iter().map(|e| e.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(with_result("pass").await, ["new-pass", "old-pass"]);
    assert_eq!(
        with_result("pass,fail").await,
        ["new-pass", "new-fail", "old-pass"]
    );
    assert_eq!(with_result("3").await, ["old-number"]);
    assert!(with_result("warning").await.is_empty());
    drop(s);

    let conn = rusqlite::Connection::open(db(&dir)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let columns = |index: &str| -> Vec<String> {
        conn.prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
            .unwrap()
            .query_map([index], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert!(
        columns("events_type_scope").is_empty(),
        "dropped in version 5"
    );
    assert_eq!(
        columns("events_evaluations"),
        ["project", "stage", "service", "time", "seq", "result"],
        "version 5"
    );
    assert_eq!(
        columns("events_triggeredid"),
        ["triggeredid", "type"],
        "version 4"
    );
}

/// A bus storing events for the datastore writes them in the publishing
/// transaction: queryable at once, stored once however often published,
/// nothing new queued for the datastore — and what was queued for it before
/// is still delivered.
#[tokio::test]
async fn a_bus_storing_events_for_the_datastore_stores_them_as_it_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    let subs = vec![
        Subscription::new("datastore", &["sh.keptn.event.>"]),
        Subscription::new("shipyard", &["sh.keptn.event.*.finished"]),
    ];
    // Queued by a version that let the datastore consumer store events.
    let plain = store.bus(subs.clone());
    plain
        .publish(&[ev("old", "sh.keptn.event.test.finished", "c0", 1)])
        .await
        .unwrap();
    let bus = store.bus(subs).storing_events_for("datastore");
    let first = ev("e1", "sh.keptn.event.test.finished", "c1", 2);
    let second = ev("e2", "sh.keptn.event.dev.delivery.triggered", "c1", 3);
    bus.publish(&[first.clone(), second.clone()]).await.unwrap();
    bus.publish(std::slice::from_ref(&first)).await.unwrap();

    let stored = store
        .query_events(&EventQuery {
            keptn_context: Some("c1".into()),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = stored.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e2", "e1"], "each event stored once, newest first");
    assert_eq!(stored.events[1], first);
    let root = store
        .query_events(&EventQuery {
            keptn_context: Some("c1".into()),
            root: true,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(root.events.len(), 1);
    assert_eq!(
        root.events[0].id, "e1",
        "the context's root is its first event"
    );

    let for_datastore = bus.receive("datastore", 10).await.unwrap();
    let ids: Vec<&str> = for_datastore.iter().map(|d| d.event.id.as_str()).collect();
    assert_eq!(ids, ["old"], "only what was queued before");
    let for_shipyard = bus.receive("shipyard", 10).await.unwrap();
    let ids: Vec<&str> = for_shipyard.iter().map(|d| d.event.id.as_str()).collect();
    assert_eq!(
        ids,
        ["old", "e1", "e1"],
        "other consumers get every publish"
    );
}

/// A store keeps the projects it decoded; what another process (another
/// store on the file) changes is still read: an update, and a project
/// deleted and created again (whose version starts at 1 again).
#[tokio::test]
async fn projects_changed_by_another_process_are_read_anew() {
    let dir = tempfile::tempdir().unwrap();
    let reader = open(&db(&dir));
    let other = open(&db(&dir));
    other.create_project(&project(), t(1)).await.unwrap();
    let first = reader.get_project("p").await.unwrap().unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(reader.get_project("p").await.unwrap().unwrap(), first);

    let mut updated = project();
    updated.stages.push("prod".into());
    other.update_project(&updated, 1).await.unwrap();
    let read = reader.get_project("p").await.unwrap().unwrap();
    assert_eq!((read.version, read.value), (2, updated));

    assert!(other.delete_project("p").await.unwrap());
    assert_eq!(reader.get_project("p").await.unwrap(), None);
    let mut again = project();
    again.stages = vec!["qa".into()];
    other.create_project(&again, t(2)).await.unwrap();
    let read = reader.get_project("p").await.unwrap().unwrap();
    assert_eq!((read.version, read.value), (1, again.clone()));

    // Deleted and created again with no read in between: same version, new content.
    assert!(other.delete_project("p").await.unwrap());
    let mut third = project();
    third.stages = vec!["staging".into()];
    other.create_project(&third, t(3)).await.unwrap();
    let read = reader.get_project("p").await.unwrap().unwrap();
    assert_eq!((read.version, read.value), (1, third));
}

/// The queue rows of an event the bus stores for the datastore name the
/// stored event instead of carrying a copy: they deliver it whole, a dead
/// letter gets its copy, retention keeps it until it is delivered, and the
/// deletion of its project takes its deliveries with it.
#[tokio::test]
async fn queue_rows_of_stored_events_deliver_them_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    store.create_project(&project(), t(0)).await.unwrap();
    let subs = vec![
        Subscription::new("datastore", &["sh.keptn.event.>"]),
        Subscription::new("shipyard", &["sh.keptn.event.>"]),
        Subscription::new("lighthouse", &["sh.keptn.event.>"]),
    ];
    let bus = store.bus(subs).storing_events_for("datastore");
    let mut e1 = ev("e1", "sh.keptn.event.test.finished", "c1", 1);
    e1.data["payload"] = json!({"text": "x".repeat(5000)});
    let e2 = ev("e2", "sh.keptn.event.test.finished", "c1", 2);
    bus.publish(&[e1.clone(), e2.clone()]).await.unwrap();

    let copies: i64 = rusqlite::Connection::open(db(&dir))
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM queue WHERE json != '' OR event IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(copies, 0, "no queue row copies an event");
    let delivered = bus.receive("shipyard", 10).await.unwrap();
    let events: Vec<KeptnEvent> = delivered.iter().map(|d| d.event.clone()).collect();
    assert_eq!(events, [e1.clone(), e2.clone()]);

    // Retention keeps what is still queued.
    assert_eq!(store.purge_events(t(100)).await.unwrap(), 0);
    bus.dead_letter("shipyard", delivered[0].receipt, "poison")
        .await
        .unwrap();
    bus.ack("shipyard", &[delivered[1].receipt]).await.unwrap();
    let dead = bus.dead_letters("shipyard").unwrap();
    assert_eq!(dead, [(e1.clone(), "poison".to_string())]);
    assert_eq!(
        store.purge_events(t(100)).await.unwrap(),
        0,
        "still queued for the lighthouse"
    );
    let to_lighthouse = bus.receive("lighthouse", 10).await.unwrap();
    assert_eq!(to_lighthouse.len(), 2);
    let receipts: Vec<u64> = to_lighthouse.iter().map(|d| d.receipt).collect();
    bus.ack("lighthouse", &receipts).await.unwrap();
    assert_eq!(
        store.purge_events(t(100)).await.unwrap(),
        2,
        "delivered to all"
    );
    assert_eq!(
        bus.dead_letters("shipyard").unwrap().len(),
        1,
        "the dead letter keeps its copy"
    );

    // A project's deletion takes the deliveries of its events.
    let e3 = ev("e3", "sh.keptn.event.test.finished", "c2", 3);
    bus.publish(&[e3]).await.unwrap();
    assert_eq!(bus.pending("shipyard").unwrap(), 1);
    assert!(store.delete_project("p").await.unwrap());
    assert!(bus.receive("shipyard", 10).await.unwrap().is_empty());
    assert_eq!(bus.pending("shipyard").unwrap(), 0);
    assert_eq!(bus.pending("lighthouse").unwrap(), 0);
}

/// A queue row whose stored event is gone (deleted by hand, say) delivers
/// nothing and leaves the queue; the rows around it are delivered.
#[tokio::test]
async fn a_queue_row_whose_event_is_gone_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    let subs = vec![
        Subscription::new("datastore", &["sh.keptn.event.>"]),
        Subscription::new("shipyard", &["sh.keptn.event.>"]),
    ];
    let bus = store.bus(subs).storing_events_for("datastore");
    let events = [
        ev("e1", "sh.keptn.event.test.finished", "c1", 1),
        ev("e2", "sh.keptn.event.test.finished", "c1", 2),
        ev("e3", "sh.keptn.event.test.finished", "c1", 3),
    ];
    bus.publish(&events).await.unwrap();
    rusqlite::Connection::open(db(&dir))
        .unwrap()
        .execute("DELETE FROM events WHERE id = 'e2'", [])
        .unwrap();
    let delivered = bus.receive("shipyard", 10).await.unwrap();
    let ids: Vec<&str> = delivered.iter().map(|d| d.event.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e3"]);
    assert_eq!(
        bus.pending("shipyard").unwrap(),
        2,
        "the empty row left the queue"
    );
}

/// An id stored before keeps its stored event; a later, different event
/// published with that id is still delivered as it was published.
#[tokio::test]
async fn an_event_reusing_a_stored_id_is_delivered_as_published() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&db(&dir));
    let subs = vec![
        Subscription::new("datastore", &["sh.keptn.event.>"]),
        Subscription::new("shipyard", &["sh.keptn.event.>"]),
    ];
    let bus = store.bus(subs).storing_events_for("datastore");
    let triggered = ev("same-id", "sh.keptn.event.deployment.triggered", "c1", 1);
    let mut finished = ev("same-id", "sh.keptn.event.deployment.finished", "c1", 2);
    finished.data["result"] = json!("pass");
    bus.publish(std::slice::from_ref(&triggered)).await.unwrap();
    bus.publish(std::slice::from_ref(&finished)).await.unwrap();

    let delivered: Vec<KeptnEvent> = bus
        .receive("shipyard", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event)
        .collect();
    assert_eq!(delivered, [triggered.clone(), finished]);
    let stored = store.query_events(&EventQuery::default()).await.unwrap();
    assert_eq!(stored.events, [triggered], "the first stays stored");
}
