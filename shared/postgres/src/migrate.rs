//! Schema migrations, applied by [`crate::PostgresStore::connect`].
//!
//! Every replica runs them at start-up, and nearly always finds the schema
//! current: two plain reads say so, and the replica goes on without taking a
//! lock or needing the `CREATE` privilege (so the service's role may be one
//! that cannot change the schema, once an admin or the first deploy has
//! migrated it). Otherwise they run in one transaction that first takes a
//! transaction-level advisory lock, so replicas starting together queue up:
//! the first applies what is missing, the others then find nothing to do
//! (PostgreSQL's DDL is transactional, so a replica that dies half-way
//! leaves nothing behind).

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

/// The schema version recorded in `keelson_schema`; 0 when the table does
/// not exist (a new database) or is empty.
async fn recorded_version(client: &impl tokio_postgres::GenericClient) -> Result<i32, Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('keelson_schema') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM keelson_schema", &[])
        .await?
        .try_get(0)?)
}

/// Refuses a schema that a newer build migrated. Its tables may mean more
/// than this build knows (a column it would not fill, a row it would not
/// maintain), so writing to them could break the invariants the newer build
/// relies on; a replica of an old revision (Knative keeps them around, and
/// may scale one up from zero) fails at start instead, visibly.
fn check_not_newer(current: i32, latest: i32) -> Result<(), Error> {
    if current > latest {
        return Err(Error::SchemaTooNew {
            found: current,
            supported: latest,
        });
    }
    Ok(())
}

/// Applies the missing migrations; returns the schema version.
pub(crate) async fn migrate(client: &mut Client) -> Result<i32, Error> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    let current = recorded_version(&*client).await?;
    check_not_newer(current, latest)?;
    if current == latest {
        return Ok(latest);
    }
    let tx = client.transaction().await?;
    // The migration may outlast the session's statement_timeout (an index
    // on a large table) and may wait for another replica's migration; but
    // its DDL must not queue for long behind other sessions' locks, since
    // every statement on those tables would then queue behind it.
    tx.batch_execute("SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '5min'")
        .await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &LOCK_ID],
    )
    .await?;
    tx.batch_execute(
        "SET LOCAL lock_timeout = '10s';
         CREATE TABLE IF NOT EXISTS keelson_schema (
             version     INTEGER PRIMARY KEY,
             description TEXT NOT NULL,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    // Again, under the lock: another replica may have migrated meanwhile.
    let current = recorded_version(&tx).await?;
    check_not_newer(current, latest)?;
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
