//! The store conformance suite against DynamoDB on an emulator: one fresh,
//! uniquely named table per test. The emulator's endpoint is
//! `KEELSON_TEST_AWS_ENDPOINT` (default `http://127.0.0.1:4566`).

use keelson_aws::dynamo::{create_table, DynamoStore};
use keelson_aws::Settings;

async fn store() -> DynamoStore {
    let endpoint = std::env::var("KEELSON_TEST_AWS_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:4566".to_string());
    let cfg = keelson_aws::load(&Settings::emulator(&endpoint)).await;
    let client = aws_sdk_dynamodb::Client::new(&cfg);
    let table = format!("keelson-test-{}", uuid::Uuid::new_v4().simple());
    create_table(&client, &table)
        .await
        .unwrap_or_else(|e| panic!("creating table {table} on {endpoint}: {e:?}"));
    DynamoStore::new(client, &table)
}

keelson_store_conformance::store_tests!(async store);

// Beyond the suite: DynamoDB's own limits and untrusted items.

use aws_sdk_dynamodb::types::AttributeValue;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{ProjectStore, ResourceStore, SequenceStore, StoreError};
use keelson_core::project::Project;
use keelson_core::resource::{Change, Scope};
use keelson_core::timestamp::Timestamp;

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

#[tokio::test]
async fn contents_beyond_the_item_limit_are_chunked_and_read_back_whole() {
    let s = store().await;
    s.create_project(&project("p"), Timestamp::from_millis(0))
        .await
        .unwrap();
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    let medium = vec![7u8; 100_000];
    let c1 = s
        .write_resources(
            "p",
            &Scope::project(),
            &[
                Change {
                    uri: "helm/chart.tgz".into(),
                    content: Some(big.clone()),
                },
                Change {
                    uri: "medium.bin".into(),
                    content: Some(medium.clone()),
                },
            ],
            Timestamp::from_millis(1),
        )
        .await
        .unwrap();
    let r = s
        .read_resource("p", &Scope::project(), "helm/chart.tgz", None)
        .await
        .unwrap()
        .expect("the chart");
    assert_eq!(
        (r.content.len(), r.version.as_str()),
        (big.len(), c1.as_str())
    );
    assert!(r.content == big);
    let m = s
        .read_resource("p", &Scope::project(), "medium.bin", Some(&c1))
        .await
        .unwrap()
        .expect("medium.bin");
    assert!(m.content == medium);
}

#[tokio::test]
async fn a_commit_of_more_changes_than_a_transaction_holds_fails_and_writes_nothing() {
    let s = store().await;
    let c0 = s
        .create_project(&project("p"), Timestamp::from_millis(0))
        .await
        .unwrap();
    let changes: Vec<Change> = (0..99)
        .map(|i| Change {
            uri: format!("f{i}"),
            content: Some(b"x".to_vec()),
        })
        .collect();
    match s
        .write_resources("p", &Scope::project(), &changes, Timestamp::from_millis(1))
        .await
    {
        Err(e @ StoreError::Backend { .. }) => {
            assert_eq!(e.kind(), keelson_core::ErrorKind::Fatal);
            assert!(e.to_string().contains("store backend failed"), "{e}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert_eq!(s.latest_commit("p").await.unwrap(), Some(c0));
    assert!(s
        .read_resource("p", &Scope::project(), "f0", None)
        .await
        .unwrap()
        .is_none());
    s.write_resources(
        "p",
        &Scope::project(),
        &changes[..98],
        Timestamp::from_millis(2),
    )
    .await
    .expect("98 changes fit");
}

#[tokio::test]
async fn effects_beyond_the_item_limit_round_trip() {
    let s = store().await;
    let effects: Vec<KeptnEvent> = (0..8)
        .map(|i| {
            KeptnEvent::new(
                format!("e{i}"),
                "test",
                "sh.keptn.event.test.triggered".into(),
                "ctx",
                serde_json::json!({"project": "p", "blob": "y".repeat(100_000)}),
                Timestamp::from_millis(i),
            )
        })
        .collect();
    assert!(s
        .record_applied("c", "big", &effects, Timestamp::from_millis(1_000))
        .await
        .unwrap());
    assert!(!s
        .record_applied("c", "big", &[], Timestamp::from_millis(1_000))
        .await
        .unwrap());
    assert_eq!(
        s.applied_effects("c", "big").await.unwrap(),
        Some(effects.clone())
    );
    assert_eq!(s.recent_effects("c", 0).await.unwrap(), effects);
    assert_eq!(
        s.purge_applied(Timestamp::from_millis(2_000))
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.applied_effects("c", "big").await.unwrap(), None);
}

#[tokio::test]
async fn a_malformed_item_is_an_error_not_a_panic() {
    let s = store().await;
    let endpoint = std::env::var("KEELSON_TEST_AWS_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:4566".to_string());
    let cfg = keelson_aws::load(&Settings::emulator(&endpoint)).await;
    let client = aws_sdk_dynamodb::Client::new(&cfg);
    client
        .put_item()
        .table_name(s.table())
        .item("pk", AttributeValue::S("PROJECTS".into()))
        .item("sk", AttributeValue::S("P#broken".into()))
        .item("version", AttributeValue::S("not a number".into()))
        .item("json", AttributeValue::S("{".into()))
        .send()
        .await
        .unwrap();
    match s.get_project("broken").await {
        Err(e @ StoreError::Backend { .. }) => {
            assert_eq!(e.kind(), keelson_core::ErrorKind::Fatal);
            let source = std::error::Error::source(&e).expect("a source").to_string();
            assert!(source.contains("PROJECTS/P#broken"), "{source}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(s.list_projects().await.is_err());
}

// Regressions of the review: purges that stop part-way, stale chunks, limits.

use keelson_core::ports::{EventStore, LaneCommit};
use keelson_core::query::EventQuery;
use keelson_core::sequence::{LaneKey, LaneState};

async fn raw_client() -> aws_sdk_dynamodb::Client {
    let endpoint = std::env::var("KEELSON_TEST_AWS_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:4566".to_string());
    let cfg = keelson_aws::load(&Settings::emulator(&endpoint)).await;
    aws_sdk_dynamodb::Client::new(&cfg)
}

fn ev(id: &str, ctx: &str, ms: i64) -> KeptnEvent {
    KeptnEvent::new(
        id.into(),
        "test",
        "sh.keptn.event.dev.delivery.triggered".into(),
        ctx,
        serde_json::json!({"project": "p", "stage": "dev", "service": "s"}),
        Timestamp::from_millis(ms),
    )
}

fn roots_of(ctx: &str) -> EventQuery {
    EventQuery {
        keptn_context: Some(ctx.into()),
        root: true,
        ..EventQuery::default()
    }
}

/// Deletes an event item behind the store's back, as a purge that stopped
/// between deleting a root and re-electing it (or a hand-made delete) did.
async fn delete_behind(client: &aws_sdk_dynamodb::Client, table: &str, id: &str) {
    client
        .delete_item()
        .table_name(table)
        .key("pk", AttributeValue::S(format!("EV#{id}")))
        .key("sk", AttributeValue::S("EV".into()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_root_pointer_left_on_a_deleted_event_is_repaired() {
    let s = store().await;
    let client = raw_client().await;
    s.insert_events(&[
        ev("a1", "A", 1),
        ev("a2", "A", 10),
        ev("a3", "A", 20),
        ev("b1", "B", 1),
        ev("b2", "B", 10),
    ])
    .await
    .unwrap();
    delete_behind(&client, s.table(), "a1").await;
    delete_behind(&client, s.table(), "b1").await;

    // The next purge repairs the contexts it touches …
    assert_eq!(s.purge_events(Timestamp::from_millis(15)).await.unwrap(), 2);
    let ids =
        |p: keelson_core::query::EventPage| p.events.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(s.query_events(&roots_of("A")).await.unwrap()), ["a3"]);
    // … and a root read repairs a pointer whose event is gone.
    s.insert_events(&[ev("c1", "C", 1), ev("c2", "C", 10)])
        .await
        .unwrap();
    delete_behind(&client, s.table(), "c1").await;
    assert_eq!(ids(s.query_events(&roots_of("C")).await.unwrap()), ["c2"]);
    let all_roots = EventQuery {
        root: true,
        ..EventQuery::default()
    };
    let mut got = ids(s.query_events(&all_roots).await.unwrap());
    got.sort();
    assert_eq!(got, ["a3", "c2"]);
}

#[tokio::test]
async fn stale_effect_chunks_do_not_break_a_record_and_chunks_share_its_ttl() {
    let s = store()
        .await
        .with_applied_ttl(std::time::Duration::from_secs(3600));
    let client = raw_client().await;
    let effects: Vec<KeptnEvent> = (0..4)
        .map(|i| {
            KeptnEvent::new(
                format!("e{i}"),
                "test",
                "sh.keptn.event.test.triggered".into(),
                "ctx",
                serde_json::json!({"project": "p", "blob": "y".repeat(100_000)}),
                Timestamp::from_millis(i),
            )
        })
        .collect();
    assert!(s
        .record_applied("c", "x", &effects, Timestamp::from_millis(1_000_000))
        .await
        .unwrap());
    // A leftover chunk beyond the record's own (of an earlier, bigger record).
    client
        .put_item()
        .table_name(s.table())
        .item("pk", AttributeValue::S("APPLIED#c#x".into()))
        .item("sk", AttributeValue::S("EFFECTS#00009".into()))
        .item("data", AttributeValue::B(vec![b'!'; 10].into()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.applied_effects("c", "x").await.unwrap(),
        Some(effects.clone())
    );
    let chunk = client
        .get_item()
        .table_name(s.table())
        .key("pk", AttributeValue::S("APPLIED#c#x".into()))
        .key("sk", AttributeValue::S("EFFECTS#00000".into()))
        .send()
        .await
        .unwrap()
        .item
        .expect("a chunk");
    assert_eq!(
        chunk.get("expires_at"),
        Some(&AttributeValue::N((1_000 + 3600).to_string()))
    );
    // Purging removes the record with its chunks.
    assert_eq!(
        s.purge_applied(Timestamp::from_millis(2_000_000))
            .await
            .unwrap(),
        1
    );
    let left = client
        .query()
        .table_name(s.table())
        .key_condition_expression("pk = :p")
        .expression_attribute_values(":p", AttributeValue::S("APPLIED#c#x".into()))
        .send()
        .await
        .unwrap();
    let sks: Vec<_> = left
        .items()
        .iter()
        .filter_map(|it| it.get("sk")?.as_s().ok().cloned())
        .collect();
    assert_eq!(sks, ["EFFECTS#00009"]);
}

#[tokio::test]
async fn a_lane_commit_beyond_the_transaction_size_is_a_limit_error() {
    let s = store().await;
    let key = LaneKey::new("p", "dev", "s");
    // 14 chunks of 300 KiB: under 100 actions, over 4 MB.
    let effects: Vec<KeptnEvent> = (0..14)
        .map(|i| {
            KeptnEvent::new(
                format!("e{i}"),
                "test",
                "sh.keptn.event.test.triggered".into(),
                "ctx",
                serde_json::json!({"project": "p", "blob": "y".repeat(300_000)}),
                Timestamp::from_millis(i),
            )
        })
        .collect();
    let state = LaneState::default();
    let r = s
        .commit_lane(LaneCommit {
            key: &key,
            expected_version: 0,
            state: &state,
            ended: &[],
            next_wakeup: None,
            consumer: "c",
            cause_id: "big",
            effects: &effects,
            now: Timestamp::from_millis(1),
        })
        .await;
    match r {
        Err(e @ StoreError::Backend { .. }) => {
            assert_eq!(e.kind(), keelson_core::ErrorKind::Fatal);
            let source = std::error::Error::source(&e).expect("a source").to_string();
            assert!(source.contains("DynamoDB limit"), "{source}");
        }
        other => panic!("expected a limit error, got {other:?}"),
    }
    assert!(s.load_lane(&key).await.unwrap().is_none());
    assert_eq!(s.applied_effects("c", "big").await.unwrap(), None);
}
