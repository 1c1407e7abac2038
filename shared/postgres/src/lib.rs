//! `keelson-postgres`: every store port on one PostgreSQL database, shared by
//! several replicas (Knative mode).
//!
//! [`PostgresStore::connect`] builds a connection pool and migrates the
//! schema. The store behaves as the SQLite and memory stores do (the shared
//! conformance suite says how); what differs is that other processes write to
//! the same database at the same time, under PostgreSQL's default READ
//! COMMITTED isolation:
//!
//! - conditional writes are single statements whose row counts decide them
//!   (`UPDATE … WHERE version = $n`, `INSERT … ON CONFLICT DO NOTHING`): the
//!   second of two racing writers waits for the first's row lock, re-checks
//!   its condition against the committed row and changes nothing;
//! - a lane commit records its cause first, so of two writers applying the
//!   same cause the second waits and then finds it applied;
//! - writers of a context's events (insert, purge, project deletion) hold an
//!   advisory lock of the context while they move its root.
//!
//! Errors are [`StoreError`]s; backend failures carry an [`Error`], transient
//! for lost connections, serialization failures and deadlocks.
//!
//! With the `testing` feature, `testing::fresh_database` gives tests a new
//! database on a real server.

mod error;
mod events;
mod migrate;
mod projects;
mod sequence;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::Error;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use keelson_core::ports::{StoreError, StoreResult};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::time::Duration;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

/// Version of the schema this build writes (the highest `keelson_schema.version`).
pub const SCHEMA_VERSION: i32 = 1;

/// Connections a store opens at most, unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// A request waits at most this long for a free connection, then fails as
/// transient (the pool is exhausted or the server unreachable).
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Opening one connection, when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Every store port on one PostgreSQL database. Clones share the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("pool_size", &status.size)
            .field("pool_max_size", &status.max_size)
            .finish()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, or
    /// libpq's `key=value` form; no TLS) with a pool of at most
    /// [`DEFAULT_POOL_SIZE`] connections, and migrates the schema to
    /// [`SCHEMA_VERSION`]. Fails as transient when the server cannot be
    /// reached, and as fatal when the URL is bad or the database has a newer
    /// schema.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with_pool_size(url, DEFAULT_POOL_SIZE).await
    }

    /// [`Self::connect`] with a pool of at most `max_connections` (at least 1).
    pub async fn connect_with_pool_size(url: &str, max_connections: usize) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = url.parse().map_err(Error::Url).db()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("keelson");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .build()
            .map_err(Error::Pool)
            .db()?;
        let store = PostgresStore { pool };
        let mut client = store.client().await?;
        migrate::migrate(&mut client).await.db()?;
        Ok(store)
    }

    /// A connection from the pool.
    async fn client(&self) -> StoreResult<Object> {
        self.pool.get().await.map_err(Error::Connection).db()
    }
}

/// Boxed statement parameters, for statements built from optional filters.
#[derive(Default)]
struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Params {
    /// Adds a parameter; returns its placeholder (`$n`).
    fn bind(&mut self, v: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(v));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

fn to_json<T: Serialize + ?Sized>(what: &'static str, v: &T) -> Result<String, Error> {
    serde_json::to_string(v).map_err(|source| Error::Encode { what, source })
}

/// Decodes a stored document; `row` names the row in the error.
fn from_json<T: DeserializeOwned>(row: impl FnOnce() -> String, s: &str) -> Result<T, Error> {
    serde_json::from_str(s).map_err(|source| Error::Decode { row: row(), source })
}

/// A stored version (or count) as the port's `u64`.
fn stored_u64(row: impl FnOnce() -> String, v: i64) -> Result<u64, Error> {
    u64::try_from(v).map_err(|_| Error::BadRow {
        row: row(),
        problem: format!("negative version {v}"),
    })
}

/// `s` as PostgreSQL can store it: its text holds no NUL character, which
/// JSON can carry (`\u0000`) into an event's id, context or `data.project`.
/// Events are stored, and looked up, with U+FFFD in its place; the
/// document itself keeps the escape and reads back exactly.
fn pg_text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

/// [`pg_text`] of an optional value.
fn pg_opt_text(s: Option<&str>) -> Option<String> {
    s.map(pg_text)
}

/// A port's count or size as a statement parameter.
fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A version the port names (`u64`) as stored; one beyond `i64` cannot match.
fn version_param(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(-1)
}

/// Maps results of tokio-postgres (and of this crate) to [`StoreResult`]s.
trait Db<T> {
    fn db(self) -> StoreResult<T>;
}

impl<T> Db<T> for Result<T, tokio_postgres::Error> {
    fn db(self) -> StoreResult<T> {
        self.map_err(|e| Error::Query(e).into())
    }
}

impl<T> Db<T> for Result<T, Error> {
    fn db(self) -> StoreResult<T> {
        self.map_err(StoreError::from)
    }
}
