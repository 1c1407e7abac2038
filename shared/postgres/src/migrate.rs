//! Schema migrations, applied by [`crate::PostgresStore::connect`].
//!
//! Every replica runs them at start-up. They run in one transaction that
//! first takes a transaction-level advisory lock, so replicas starting
//! together queue up: the first applies what is missing, the others then find
//! nothing to do (PostgreSQL's DDL is transactional, so a replica that dies
//! half-way leaves nothing behind).

use crate::error::Error;
use tokio_postgres::Client;

/// Versioned migrations, in order. A released entry is never edited: later
/// changes are new entries.
pub(crate) const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "events, projects, resources, lanes, applied records, executions, open triggers, pauses, integrations",
    include_str!("schema_v1.sql"),
)];

/// Key (two-int form, whose key space is apart from the single-bigint one
/// that the event writers' per-context locks use) of the migration lock.
const LOCK_CLASS: i32 = 0x6b65_656c; // "keel"
const LOCK_ID: i32 = 1;

/// Applies the missing migrations; returns the schema version.
pub(crate) async fn migrate(client: &mut Client) -> Result<i32, Error> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &LOCK_ID],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS keelson_schema (
             version     INTEGER PRIMARY KEY,
             description TEXT NOT NULL,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM keelson_schema", &[])
        .await?
        .try_get(0)?;
    if current > latest {
        return Err(Error::SchemaTooNew {
            found: current,
            supported: latest,
        });
    }
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO keelson_schema (version, description) VALUES ($1, $2)",
            &[version, description],
        )
        .await?;
        tracing::info!(
            version,
            description,
            "applied a PostgreSQL schema migration"
        );
    }
    tx.commit().await?;
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.0, i as i32 + 1, "{}", m.1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(crate::SCHEMA_VERSION));
    }
}
