//! The single-table DynamoDB store. See `docs/aws-dynamodb.md`.
//!
//! Table: `pk` / `sk` (strings), three overloaded GSIs `gsi1` … `gsi3`
//! (`gsiNpk` / `gsiNsk`, strings, projection ALL), TTL on `expires_at`
//! (epoch seconds), on-demand billing.

mod events;
mod io;
mod item;
mod keys;
mod projects;
mod sequence;

pub use item::DynamoError;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use keelson_core::ports::StoreError;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The DynamoDB store.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: Arc<str>,
    /// Event types this process has registered (saves a write per batch).
    known_types: Arc<Mutex<HashSet<String>>>,
    /// Lifetime of applied records, if DynamoDB's TTL should remove them.
    applied_ttl: Option<Duration>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table)
            .field("applied_ttl", &self.applied_ttl)
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    /// A store on an existing table.
    pub fn new(client: Client, table: &str) -> Self {
        DynamoStore {
            client,
            table: table.into(),
            known_types: Arc::default(),
            applied_ttl: None,
        }
    }

    /// Lets DynamoDB's TTL remove applied records `ttl` after they were applied,
    /// as a backstop to `purge_applied`. It must exceed the dedupe window (and
    /// the window `recent_effects` is asked for): TTL deletion is lazy and
    /// can come at any time after `expires_at`.
    pub fn with_applied_ttl(mut self, ttl: Duration) -> Self {
        self.applied_ttl = Some(ttl);
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

/// How long [`create_table`] waits for the table to become active.
const CREATE_DEADLINE: Duration = Duration::from_secs(120);

/// Creates the store's table (the schema of the SAM template), waits until it
/// and its indexes are active, and enables TTL on `expires_at`.
pub async fn create_table(client: &Client, name: &str) -> Result<(), StoreError> {
    use crate::error::store_error;
    use item::build_err;
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(build_err)
    };
    let schema = |pk: &str, sk: &str| -> Result<Vec<KeySchemaElement>, StoreError> {
        Ok(vec![
            KeySchemaElement::builder()
                .attribute_name(pk)
                .key_type(KeyType::Hash)
                .build()
                .map_err(build_err)?,
            KeySchemaElement::builder()
                .attribute_name(sk)
                .key_type(KeyType::Range)
                .build()
                .map_err(build_err)?,
        ])
    };
    let mut req = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(schema("pk", "sk")?));
    for a in [
        "pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk", "gsi3pk", "gsi3sk",
    ] {
        req = req.attribute_definitions(attr(a)?);
    }
    for g in ["gsi1", "gsi2", "gsi3"] {
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(g)
                .set_key_schema(Some(schema(&format!("{g}pk"), &format!("{g}sk"))?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .map_err(build_err)?,
        );
    }
    req.send().await.map_err(store_error)?;

    let deadline = Instant::now() + CREATE_DEADLINE;
    loop {
        let out = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(store_error)?;
        let ready = out.table.as_ref().is_some_and(|t| {
            t.table_status == Some(TableStatus::Active)
                && t.global_secondary_indexes().iter().all(|g| {
                    g.index_status
                        .as_ref()
                        .is_none_or(|s| *s == IndexStatus::Active)
                })
        });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err(DynamoError::NotActive(name.to_string()).into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name("expires_at")
                .enabled(true)
                .build()
                .map_err(build_err)?,
        )
        .send()
        .await
        .map_err(store_error)?;
    Ok(())
}
