//! TLS to PostgreSQL against a real TLS-enabled server (a throwaway CA and
//! certificate; see `keelson_postgres::testing::fresh_tls_database`): the
//! certificate is always verified, whatever `sslmode` asks for.

use keelson_core::event::KeptnEvent;
use keelson_core::ports::{EventStore, StoreError};
use keelson_core::query::EventQuery;
use keelson_core::timestamp::Timestamp;
use keelson_core::ErrorKind;
use keelson_postgres::testing::fresh_tls_database;
use keelson_postgres::{ConnectOptions, PostgresStore};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Bounds a connection attempt: a TLS failure must end in an error, never
/// in a hang.
const DEADLINE: Duration = Duration::from_secs(30);

fn with_ca(ca: PathBuf) -> ConnectOptions {
    ConnectOptions {
        ca_file: Some(ca),
        ..ConnectOptions::default()
    }
}

async fn connect(url: &str, options: &ConnectOptions) -> Result<PostgresStore, StoreError> {
    tokio::time::timeout(DEADLINE, PostgresStore::connect_with(url, options))
        .await
        .unwrap_or_else(|_| panic!("connecting to {url} took more than {DEADLINE:?}"))
}

/// Whether the store's own connection is encrypted, as the server sees it.
async fn connection_is_tls(url: &str, options: &ConnectOptions) -> bool {
    let store = connect(url, options).await.unwrap();
    store
        .connection_uses_tls()
        .await
        .unwrap_or_else(|e| panic!("asking pg_stat_ssl: {e}"))
}

fn event(id: &str) -> KeptnEvent {
    KeptnEvent::new(
        id.into(),
        "test",
        "sh.keptn.event.deployment.triggered".into(),
        "ctx-tls",
        json!({"project": "p", "stage": "dev", "service": "carts"}),
        Timestamp::from_millis(1),
    )
}

#[tokio::test]
async fn sslmode_require_with_the_ca_file_connects_over_tls_and_stores_events() {
    let (url, ca) = fresh_tls_database().await;
    let url = format!("{url}?sslmode=require");
    let options = with_ca(ca);
    let started = Instant::now();
    let store = connect(&url, &options).await.unwrap();
    eprintln!("TLS connect and migrate: {:?}", started.elapsed());
    assert!(store.connection_uses_tls().await.unwrap(), "not encrypted");

    assert_eq!(store.insert_events(&[event("tls-1")]).await.unwrap(), 1);
    let page = store
        .query_events(&EventQuery {
            keptn_context: Some("ctx-tls".into()),
            page_size: 10,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = page.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["tls-1"]);
}

#[tokio::test]
async fn the_host_name_localhost_is_verified_too() {
    let (url, ca) = fresh_tls_database().await;
    let url = format!(
        "{}?sslmode=require",
        url.replacen("127.0.0.1", "localhost", 1)
    );
    assert!(connection_is_tls(&url, &with_ca(ca)).await, "not encrypted");
}

#[tokio::test]
async fn sslmode_require_without_the_ca_fails_verification_as_fatal() {
    let (url, _ca) = fresh_tls_database().await;
    let url = format!("{url}?sslmode=require");
    let e = connect(&url, &ConnectOptions::default())
        .await
        .expect_err("a certificate from an unknown CA was accepted");
    let msg = e.to_string();
    eprintln!("{msg}");
    assert!(msg.contains("TLS"), "{msg}");
    assert!(
        msg.contains("UnknownIssuer") || msg.contains("no CA certificates"),
        "{msg}"
    );
    assert_eq!(e.kind(), ErrorKind::Fatal, "{msg}");
}

#[tokio::test]
async fn sslmode_prefer_verifies_the_certificate_too() {
    let (url, _ca) = fresh_tls_database().await;
    let url = format!("{url}?sslmode=prefer");
    let e = connect(&url, &ConnectOptions::default())
        .await
        .expect_err("prefer accepted a certificate from an unknown CA");
    assert!(e.to_string().contains("TLS"), "{e}");
}

#[tokio::test]
async fn a_missing_ca_file_is_a_fatal_error_naming_it() {
    let (url, _ca) = fresh_tls_database().await;
    let url = format!("{url}?sslmode=require");
    let missing = PathBuf::from("/nonexistent/keelson-ca.pem");
    let e = connect(&url, &with_ca(missing)).await.unwrap_err();
    eprintln!("{e}");
    assert!(e.to_string().contains("/nonexistent/keelson-ca.pem"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Fatal, "{e}");
}

#[tokio::test]
async fn a_ca_file_without_certificates_is_a_fatal_error_naming_it() {
    let (url, _ca) = fresh_tls_database().await;
    let dir = std::env::temp_dir().join(format!("keelson-ca-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let result = connect(&format!("{url}?sslmode=require"), &with_ca(empty.clone())).await;
    let _ = std::fs::remove_dir_all(&dir);
    let e = result.unwrap_err();
    assert!(e.to_string().contains(&*empty.to_string_lossy()), "{e}");
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
    assert_eq!(e.kind(), ErrorKind::Fatal, "{e}");
}

#[tokio::test]
async fn sslmode_disable_connects_in_plain_text_to_a_tls_server() {
    let (url, ca) = fresh_tls_database().await;
    let url = format!("{url}?sslmode=disable");
    assert!(!connection_is_tls(&url, &with_ca(ca)).await, "encrypted");
}
