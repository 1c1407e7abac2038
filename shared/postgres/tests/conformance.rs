//! The store conformance suite against a real PostgreSQL server (one fresh
//! database per test; see `keelson_postgres::testing` for where the server
//! comes from), and what only a shared SQL database has to get right:
//! migrations run by several replicas, racing conditional writes, rows
//! written behind the store's back, and a store connected again.

use keelson_core::event::KeptnEvent;
use keelson_core::ports::{
    EventStore, LaneCommit, ProjectStore, ResourceStore, SequenceStore, StoreError,
};
use keelson_core::project::Project;
use keelson_core::query::{EventQuery, FilterTerm, TypeQuery};
use keelson_core::resource::{Change, Scope};
use keelson_core::sequence::{LaneKey, LaneState};
use keelson_core::timestamp::Timestamp;
use keelson_core::ErrorKind;
use keelson_postgres::testing::fresh_database;
use keelson_postgres::{PostgresStore, SCHEMA_VERSION};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

async fn store() -> PostgresStore {
    let url = fresh_database().await;
    PostgresStore::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

keelson_store_conformance::store_tests!(async store);

/// A plain connection, to look at (or damage) the tables directly.
async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

fn project(name: &str) -> Project {
    Project {
        name: name.into(),
        creation_date: Timestamp::from_millis(0),
        shipyard: "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\n".into(),
        shipyard_version: "spec.keptn.sh/0.2.4".into(),
        stages: vec!["dev".into()],
        services: vec![],
        git_remote_url: None,
        git_user: None,
    }
}

fn event(id: &str, ctx: &str, ms: i64) -> KeptnEvent {
    KeptnEvent::new(
        id.into(),
        "test",
        "sh.keptn.event.deployment.triggered".into(),
        ctx,
        json!({"project": "p", "stage": "dev", "service": "carts"}),
        Timestamp::from_millis(ms),
    )
}

fn commit<'a>(
    key: &'a LaneKey,
    expected_version: u64,
    state: &'a LaneState,
    cause_id: &'a str,
) -> LaneCommit<'a> {
    LaneCommit {
        key,
        expected_version,
        state,
        ended: &[],
        next_wakeup: None,
        consumer: "shipyard",
        cause_id,
        effects: &[],
        now: Timestamp::from_millis(1_000),
    }
}

async fn schema_versions(url: &str) -> Vec<i32> {
    sql(url)
        .await
        .query("SELECT version FROM keelson_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_migrate_the_schema_once() {
    let url = fresh_database().await;
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::connect(&url).await })
        })
        .collect();
    for s in starts {
        s.await.unwrap().expect("every replica starts");
    }
    let once: Vec<i32> = (1..=SCHEMA_VERSION).collect();
    assert_eq!(schema_versions(&url).await, once);

    // And again later: nothing to do, the data kept.
    let s = PostgresStore::connect(&url).await.unwrap();
    s.create_project(&project("p"), Timestamp::from_millis(0))
        .await
        .unwrap();
    PostgresStore::connect(&url).await.unwrap();
    assert_eq!(schema_versions(&url).await, once);
    assert!(s.get_project("p").await.unwrap().is_some());
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_build_is_refused() {
    let url = fresh_database().await;
    PostgresStore::connect(&url).await.unwrap();
    sql(&url)
        .await
        .execute(
            "INSERT INTO keelson_schema (version, description) VALUES ($1, 'from the future')",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    let err = PostgresStore::connect(&url).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fatal, "{err}");
    assert!(err.to_string().contains("newer than this build"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_error_and_a_bad_url_a_fatal_one() {
    // Port 1 on loopback: nothing listens there.
    let err = PostgresStore::connect("postgres://keelson@127.0.0.1:1/keelson")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    let err = PostgresStore::connect("postgres://h:notaport/db")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fatal, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commits_of_one_lane_version_let_exactly_one_win() {
    let s = store().await;
    let key = LaneKey::new("p", "dev", "carts");
    let state = LaneState::default();
    for expected in [0, 1] {
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let (s, key, state) = (s.clone(), key.clone(), state.clone());
                tokio::spawn(async move {
                    let cause = format!("cause-{expected}-{i}");
                    s.commit_lane(commit(&key, expected, &state, &cause)).await
                })
            })
            .collect();
        let mut won = Vec::new();
        for (i, r) in racers.into_iter().enumerate() {
            match r.await.unwrap() {
                Ok(()) => won.push(i),
                Err(StoreError::Conflict) => {}
                Err(e) => panic!("racer {i} at version {expected}: {e}"),
            }
        }
        assert_eq!(won.len(), 1, "exactly one winner at version {expected}");
        let lane = s.load_lane(&key).await.unwrap().unwrap();
        assert_eq!(lane.version, expected + 1);
        // The losers' applied records were rolled back with their commits.
        for i in 0..8 {
            let applied = s
                .applied_effects("shipyard", &format!("cause-{expected}-{i}"))
                .await
                .unwrap();
            assert_eq!(applied.is_some(), won == [i], "racer {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commits_of_one_cause_apply_it_once() {
    let s = store().await;
    let state = LaneState::default();
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let (s, state) = (s.clone(), state.clone());
            tokio::spawn(async move {
                // Different lanes: only the applied record is contended.
                let key = LaneKey::new("p", "dev", &format!("svc-{i}"));
                s.commit_lane(commit(&key, 0, &state, "the-cause")).await
            })
        })
        .collect();
    let (mut ok, mut already) = (0, 0);
    for r in racers {
        match r.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::AlreadyApplied) => already += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, already), (1, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_inserts_into_one_context_leave_one_root_the_earliest() {
    let s = store().await;
    let writers: Vec<_> = (0..8i64)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                // Later writers bring earlier events: the root keeps moving.
                let evs: Vec<KeptnEvent> = (0..5)
                    .map(|j| event(&format!("e{i}-{j}"), "ctx", 10_000 - i * 10 - j))
                    .collect();
                s.insert_events(&evs).await
            })
        })
        .collect();
    for w in writers {
        assert_eq!(w.await.unwrap().unwrap(), 5);
    }
    let roots = s
        .query_events(&EventQuery {
            root: true,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = roots.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["e7-4"]);
}

#[tokio::test]
async fn rows_that_do_not_decode_are_errors_naming_the_row() {
    let url = fresh_database().await;
    let s = PostgresStore::connect(&url).await.unwrap();
    s.insert_events(&[event("good", "c", 1)]).await.unwrap();
    let db = sql(&url).await;
    db.batch_execute(
        "INSERT INTO events (id, time_ms, type, shkeptncontext, source, is_root, doc) \
             VALUES ('junk-event', 2, 't', 'c2', 's', TRUE, '{\"id\": 42}'); \
         INSERT INTO lanes (project, stage, service, version, state) \
             VALUES ('p', 'dev', 'carts', 1, '[\"not\", \"a lane\"]'), \
                    ('p', 'dev', 'minus', -3, '{}'); \
         INSERT INTO projects (name, version, doc) VALUES ('junk-project', 1, 'null')",
    )
    .await
    .unwrap();

    let expect = |r: Result<String, StoreError>, row: &str| match r {
        Err(e @ StoreError::Backend { .. }) => {
            assert_eq!(e.kind(), ErrorKind::Fatal, "{e}");
            assert!(e.to_string().contains(row), "{e} names {row}");
        }
        other => panic!("expected a backend error naming {row}, got {other:?}"),
    };
    expect(
        s.query_events(&EventQuery::default())
            .await
            .map(|p| format!("{p:?}")),
        "junk-event",
    );
    expect(
        s.load_lane(&LaneKey::new("p", "dev", "carts"))
            .await
            .map(|l| format!("{l:?}")),
        "carts",
    );
    expect(
        s.load_lane(&LaneKey::new("p", "dev", "minus"))
            .await
            .map(|l| format!("{l:?}")),
        "minus",
    );
    expect(
        s.get_project("junk-project")
            .await
            .map(|p| format!("{p:?}")),
        "junk-project",
    );
    expect(
        s.list_projects().await.map(|p| format!("{p:?}")),
        "junk-project",
    );
    // The good rows are still served where the junk is not asked for.
    let page = s
        .query_events(&EventQuery {
            keptn_context: Some("c".into()),
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
}

#[tokio::test]
async fn a_store_connected_again_sees_the_same_data() {
    let url = fresh_database().await;
    let key = LaneKey::new("p", "dev", "carts");
    let (commit_id, lane) = {
        let s = PostgresStore::connect(&url).await.unwrap();
        s.create_project(&project("p"), Timestamp::from_millis(0))
            .await
            .unwrap();
        let c = s
            .write_resources(
                "p",
                &Scope::project(),
                &[Change {
                    uri: "a.txt".into(),
                    content: Some(b"hello".to_vec()),
                }],
                Timestamp::from_millis(1),
            )
            .await
            .unwrap();
        s.insert_events(&[event("e1", "ctx", 5)]).await.unwrap();
        let state = LaneState::default();
        s.commit_lane(commit(&key, 0, &state, "cause"))
            .await
            .unwrap();
        (c, s.load_lane(&key).await.unwrap())
    };
    let s = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(s.latest_commit("p").await.unwrap(), Some(commit_id.clone()));
    let r = s
        .read_resource("p", &Scope::project(), "a.txt", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.content.as_slice(), r.version),
        (&b"hello"[..], commit_id)
    );
    assert_eq!(s.load_lane(&key).await.unwrap(), lane);
    assert_eq!(
        s.applied_effects("shipyard", "cause").await.unwrap(),
        Some(vec![])
    );
    let page = s.query_events(&EventQuery::default()).await.unwrap();
    assert_eq!(page.events, vec![event("e1", "ctx", 5)]);
}

#[tokio::test]
async fn events_carrying_nul_characters_are_stored_and_do_not_break_type_queries() {
    let s = store().await;
    let mut odd = event("odd\0id", "ctx\0", 2);
    odd.data["stage"] = json!("d\0v");
    odd.data["message"] = json!("a\0b");
    odd.data["result"] = json!("pass");
    let mut plain = event("plain", "ctx", 1);
    plain.data["result"] = json!("pass");
    assert_eq!(
        s.insert_events(&[odd.clone(), plain.clone()])
            .await
            .unwrap(),
        2
    );
    let by = |q: EventQuery| {
        let s = s.clone();
        async move { s.query_events(&q).await.unwrap().events }
    };
    assert_eq!(
        by(EventQuery {
            event_id: Some("odd\0id".into()),
            ..EventQuery::default()
        })
        .await,
        vec![odd.clone()],
        "read back exactly"
    );
    assert_eq!(
        by(EventQuery {
            stage: Some("d\0v".into()),
            keptn_context: Some("ctx\0".into()),
            root: true,
            ..EventQuery::default()
        })
        .await,
        vec![odd.clone()]
    );
    let type_query = |filter: &[(&str, &str)]| TypeQuery {
        ty: odd.ty.clone(),
        filter: filter
            .iter()
            .map(|(k, v)| FilterTerm {
                key: k.to_string(),
                values: vec![v.to_string()],
            })
            .collect(),
        exclude_invalidated: true,
        from_time: None,
        limit: 10,
    };
    let ids = |evs: Vec<KeptnEvent>| evs.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s
            .query_by_type(&type_query(&[
                ("data.project", "p"),
                ("data.result", "pass")
            ]))
            .await
            .unwrap()),
        ["odd\0id", "plain"]
    );
    assert_eq!(
        ids(s
            .query_by_type(&type_query(&[
                ("data.project", "p"),
                ("data.message", "a\0b")
            ]))
            .await
            .unwrap()),
        ["odd\0id"]
    );
}

/// `url` for logging in as `user` with `password`.
fn as_user(url: &str, user: &str, password: &str) -> String {
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            let host = match rest[..authority_end].rfind('@') {
                Some(at) => &rest[at + 1..],
                None => rest,
            };
            return format!("{scheme}{user}:{password}@{host}");
        }
    }
    format!("{url} user={user} password={password}")
}

/// Copies of the event `seed` (inserted through the store), written with
/// SQL: `per_context` events in each of `contexts` contexts `c<n>`, at
/// times 1, 2, … within a context, the first of each its root.
async fn events_in_many_contexts(
    s: &PostgresStore,
    url: &str,
    project: &str,
    contexts: i64,
    per_context: i64,
) {
    let mut seed = event("seed", "seed", 0);
    seed.data["project"] = json!(project);
    s.insert_events(&[seed]).await.unwrap();
    sql(url)
        .await
        .execute(
            "INSERT INTO events (id, time_ms, type, project, shkeptncontext, source, is_root, doc) \
             SELECT 'e-' || c || '-' || t, t, type, project, 'c' || c, source, t = 1, doc \
             FROM events, generate_series(1, $1::bigint) AS c, generate_series(1, $2::bigint) AS t \
             WHERE id = 'seed'",
            &[&contexts, &per_context],
        )
        .await
        .unwrap();
}

/// More contexts than the server's shared lock table has room for, were
/// each locked at once (it holds about `max_locks_per_transaction` locks
/// per possible session).
async fn more_contexts_than_the_lock_table_holds(url: &str) -> i64 {
    let db = sql(url).await;
    let setting = |name: &'static str| {
        let db = &db;
        async move {
            let v: String = db
                .query_one("SELECT current_setting($1)", &[&name])
                .await
                .unwrap()
                .get(0);
            v.parse::<i64>().unwrap()
        }
    };
    let per_session = setting("max_locks_per_transaction").await;
    let sessions = setting("max_connections").await + 50;
    per_session * sessions * 3 / 2
}

/// Contexts whose events do not have exactly one root, the earliest.
async fn contexts_with_a_wrong_root(url: &str) -> Vec<String> {
    sql(url)
        .await
        .query(
            "SELECT shkeptncontext FROM events e GROUP BY shkeptncontext \
             HAVING count(*) FILTER (WHERE is_root) <> 1 \
                 OR NOT bool_or(is_root AND NOT EXISTS ( \
                     SELECT 1 FROM events o WHERE o.shkeptncontext = e.shkeptncontext \
                     AND (o.time_ms, o.seq) < (e.time_ms, e.seq)))",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn count(url: &str, sql_text: &str) -> i64 {
    sql(url)
        .await
        .query_one(sql_text, &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_purge_through_more_contexts_than_the_lock_table_holds_completes() {
    let url = fresh_database().await;
    let s = PostgresStore::connect(&url).await.unwrap();
    let contexts = more_contexts_than_the_lock_table_holds(&url).await;
    // Times 1 and 2 in each: the purge takes every root.
    events_in_many_contexts(&s, &url, "p", contexts, 2).await;
    let purged = s.purge_events(Timestamp::from_millis(2)).await.unwrap();
    assert_eq!(purged, contexts as u64 + 1, "the roots and the seed");
    assert_eq!(
        count(&url, "SELECT count(*) FROM events").await,
        contexts,
        "one event left per context"
    );
    assert_eq!(contexts_with_a_wrong_root(&url).await, Vec::<String>::new());
}

#[tokio::test]
async fn deleting_a_project_with_more_contexts_than_the_lock_table_holds_completes() {
    let url = fresh_database().await;
    let s = PostgresStore::connect(&url).await.unwrap();
    s.create_project(&project("p"), Timestamp::from_millis(0))
        .await
        .unwrap();
    let contexts = more_contexts_than_the_lock_table_holds(&url).await;
    events_in_many_contexts(&s, &url, "p", contexts, 1).await;
    s.insert_events(&[{
        let mut other = event("other", "c1", 0);
        other.data["project"] = json!("q");
        other
    }])
    .await
    .unwrap();
    assert!(s.delete_project("p").await.unwrap());
    assert!(s.get_project("p").await.unwrap().is_none());
    assert!(!s.delete_project("p").await.unwrap());
    // Only the other project's event is left, the root of its context.
    let left = s.query_events(&EventQuery::default()).await.unwrap();
    assert_eq!(
        left.events
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["other"]
    );
    assert_eq!(contexts_with_a_wrong_root(&url).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purges_racing_inserts_of_earlier_events_keep_one_root_per_context_and_do_not_fail() {
    let url = fresh_database().await;
    let s = PostgresStore::connect_with_pool_size(&url, 8)
        .await
        .unwrap();
    for round in 0..10i64 {
        let base = 1_000_000 - round * 10_000;
        let seed: Vec<KeptnEvent> = (0..20)
            .map(|c| event(&format!("r{round}-seed-{c}"), &format!("k{c}"), base + c))
            .collect();
        s.insert_events(&seed).await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..6i64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                // Earlier events into many contexts at once, some of them
                // into the range the purge deletes.
                let evs: Vec<KeptnEvent> = (0..20)
                    .map(|c| {
                        let id = format!("r{round}-w{w}-{c}");
                        event(
                            &id,
                            &format!("k{}", (c * 7 + w) % 20),
                            base - 5_000 + w * 10 + c,
                        )
                    })
                    .collect();
                s.insert_events(&evs).await.map(|_| ())
            }));
        }
        for _ in 0..2 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.purge_events(Timestamp::from_millis(base - 4_970))
                    .await
                    .map(|_| ())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            contexts_with_a_wrong_root(&url).await,
            Vec::<String>::new(),
            "round {round}"
        );
    }
}

#[tokio::test]
async fn an_exhausted_pool_and_a_held_lock_fail_as_transient_before_a_request_times_out() {
    let url = fresh_database().await;
    let s = PostgresStore::connect_with_pool_size(&url, 1)
        .await
        .unwrap();
    let locker = sql(&url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let blocked = tokio::spawn({
        let s = s.clone();
        async move { s.query_events(&EventQuery::default()).await }
    });
    // Until the query waits for the lock, holding the pool's one connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(
        &url,
        "SELECT count(*) FROM pg_locks WHERE relation = 'events'::regclass AND NOT granted",
    )
    .await
        == 0
    {
        assert!(Instant::now() < deadline, "the query never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waited = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(20), s.get_project("p"))
        .await
        .expect("the pool's wait is bounded")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    let waited = waited.elapsed();
    assert!(
        (Duration::from_secs(3)..Duration::from_secs(8)).contains(&waited),
        "{waited:?}"
    );
    let err = tokio::time::timeout(Duration::from_secs(30), blocked)
        .await
        .expect("the lock wait is bounded")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("lock timeout"), "{err}");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    drop(locker);
}

#[tokio::test]
async fn a_lock_timeout_in_the_urls_options_is_kept() {
    let url = fresh_database().await;
    PostgresStore::connect(&url).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let s = PostgresStore::connect(&format!("{url}{sep}options=-c%20lock_timeout%3D200ms"))
        .await
        .unwrap();
    let locker = sql(&url).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE projects IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), s.get_project("p"))
        .await
        .expect("the lock wait is bounded")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_current_schema_is_used_without_the_migration_lock_or_the_create_privilege() {
    let url = fresh_database().await;
    PostgresStore::connect(&url).await.unwrap();
    let admin = sql(&url).await;
    let role = format!("keelson_app_{}", uuid::Uuid::new_v4().simple());
    // Needs CREATEROLE on a server named by KEELSON_TEST_DATABASE_URL; the
    // throwaway server's user is a superuser.
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pw'; \
             REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; \
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"
        ))
        .await
        .unwrap();
    // Another replica migrating, as far as the lock says.
    let migrating = sql(&url).await;
    migrating
        .execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&0x6b65_656c_i32, &1_i32],
        )
        .await
        .unwrap();
    let s = tokio::time::timeout(
        Duration::from_secs(5),
        PostgresStore::connect(&as_user(&url, &role, "pw")),
    )
    .await
    .expect("a current schema is not waited for")
    .expect("a role without CREATE connects");
    s.create_project(&project("p"), Timestamp::from_millis(0))
        .await
        .unwrap();
    drop(s);
    drop(migrating);
    let _ = admin
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await;
}

#[tokio::test]
async fn type_queries_with_nul_characters_find_nothing_rather_than_fail() {
    let s = store().await;
    s.insert_events(&[event("e1", "ctx", 1)]).await.unwrap();
    let q = |ty: &str, key: &str| TypeQuery {
        ty: ty.into(),
        filter: vec![FilterTerm {
            key: key.into(),
            values: vec!["x\0y".into()],
        }],
        exclude_invalidated: false,
        from_time: None,
        limit: 10,
    };
    for (ty, key) in [
        ("sh.keptn.event.deployment\0.triggered", "data.project"),
        ("sh.keptn.event.deployment.triggered", "data.a\0b"),
        ("sh.keptn.event.deployment.triggered", "data.stage"),
    ] {
        let found = s.query_by_type(&q(ty, key)).await;
        assert_eq!(found.unwrap(), vec![], "{ty:?} {key:?}");
    }
}
