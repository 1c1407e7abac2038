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
//!   advisory lock of the context while they move its root, taken in
//!   ascending order before they change anything; deletions go a bounded
//!   number of contexts per transaction, since those locks share one table
//!   on the server.
//!
//! TLS follows the URL's `sslmode` and always verifies the server's
//! certificate ([`PostgresStore::connect_with`] says why and against what).
//!
//! Every connection carries server-side timeouts (statement, lock wait,
//! idle transaction) unless its URL sets them, and a request waits a few
//! seconds at most for a pooled connection.
//!
//! Errors are [`StoreError`]s; backend failures carry an [`Error`], transient
//! for lost connections, serialization failures, deadlocks, timeouts and an
//! exhausted pool.
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
mod tls;

pub use error::Error;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use keelson_core::ports::{StoreError, StoreResult};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::NoTls;

/// Version of the schema this build writes (the highest `keelson_schema.version`).
pub const SCHEMA_VERSION: i32 = 1;

/// Connections a store opens at most, unless told otherwise
/// ([`PostgresStore::connect_with_pool_size`], [`ConnectOptions::pool_size`]).
///
/// Every replica of every service holds its own pool, and Knative scales
/// replicas out on its own, so the connections a deployment may open add up
/// to `services × max replicas × pool size`. That must stay below the
/// server's `max_connections` minus what it keeps for superusers and what
/// migrations, backups and people at `psql` need; past it, new connections
/// fail with "too many connections" (transient, but a replica starting then
/// cannot serve). Four per replica is enough for one request at a time plus
/// the background sweeps; raise it only with the budget in view.
pub const DEFAULT_POOL_SIZE: usize = 4;
// PostgreSQL's default server (100 connections, 3 reserved) holds a
// dozen services at two replicas each.
const _: () = assert!(12 * 2 * DEFAULT_POOL_SIZE <= 100 - 3);

/// A request waits at most this long for a free connection, then fails as
/// transient (the pool is exhausted or the server unreachable). Well below
/// Knative's 30 s request timeout, so the caller gets our error (and a
/// retry) rather than the activator's.
const WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Opening one connection, when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Server-side limits set on every connection (unless the URL's `options`
/// set them), so that a stuck statement, a lock held by a stalled writer or
/// a transaction abandoned mid-way cannot hold a request (and a pooled
/// connection) beyond Knative's request timeout. The first two abort the
/// statement with a transient error; the last ends the session, whose
/// locks are then released.
const SESSION_LIMITS: [(&str, &str); 3] = [
    ("statement_timeout", "20s"),
    ("lock_timeout", "10s"),
    ("idle_in_transaction_session_timeout", "60s"),
];

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

/// How [`PostgresStore::connect_with`] connects, beyond what the URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Connections the pool opens at most (at least 1 is used); see
    /// [`DEFAULT_POOL_SIZE`] for the budget it must fit in.
    pub pool_size: usize,
    /// A PEM file of CA certificates trusted for the server's certificate,
    /// besides the platform's: a managed database's CA (e.g. Amazon RDS's
    /// bundle), or a private CA inside the cluster.
    pub ca_file: Option<PathBuf>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            pool_size: DEFAULT_POOL_SIZE,
            ca_file: None,
        }
    }
}

impl PostgresStore {
    /// Connects to `url` with the default [`ConnectOptions`]; see
    /// [`Self::connect_with`].
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, &ConnectOptions::default()).await
    }

    /// [`Self::connect`] with a pool of at most `max_connections` (at least 1).
    pub async fn connect_with_pool_size(url: &str, max_connections: usize) -> StoreResult<Self> {
        let options = ConnectOptions {
            pool_size: max_connections,
            ..ConnectOptions::default()
        };
        Self::connect_with(url, &options).await
    }

    /// Connects to `url` (`postgres://user:password@host:port/database`, or
    /// libpq's `key=value` form) with a pool of at most
    /// `options.pool_size` connections, and migrates the schema to
    /// [`SCHEMA_VERSION`]. Fails as transient when the server cannot be
    /// reached, and as fatal when the URL is bad, the CA file unusable, the
    /// server's certificate untrusted or the database has a newer schema.
    ///
    /// TLS follows the URL's `sslmode`: `disable` connects in plain text;
    /// `prefer` (tokio-postgres' default when the URL names none) and
    /// `require` use TLS (rustls) whenever the server offers it, and
    /// `require` fails when it does not. Unlike libpq, whose `require`
    /// encrypts without checking whom it talks to, the server's certificate
    /// is **always verified** — against the platform's CA certificates plus
    /// `options.ca_file` — and must name the URL's host (a DNS name or an IP
    /// address). An unverified TLS connection is open to a man in the
    /// middle, who would read the database password and every event; a
    /// server with a private CA needs its CA in `ca_file` (or
    /// `sslmode=disable` on a network trusted for it). With `prefer`, a
    /// server offering TLS with a certificate that fails verification is an
    /// error, not a fallback to plain text.
    pub async fn connect_with(url: &str, options: &ConnectOptions) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = url.parse().map_err(Error::Url).db()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("keelson");
        }
        let session = with_session_limits(config.get_options().unwrap_or(""));
        config.options(session);
        // Read even when TLS is off: a CA file given but unusable is a
        // configuration mistake to report at start, not when TLS is turned on.
        let extra_roots = match &options.ca_file {
            Some(path) => tls::read_ca_file(path).db()?,
            None => Vec::new(),
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match config.get_ssl_mode() {
            SslMode::Disable => Manager::from_config(config, NoTls, manager_config),
            // prefer, require and whatever tokio-postgres adds later: TLS.
            _ => {
                let tls = tls::connector(extra_roots).db()?;
                Manager::from_config(config, tls, manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
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

/// `options` (the startup packet's command-line options, `-c name=value`
/// and `--name=value`) with [`SESSION_LIMITS`] added for the settings it
/// does not name.
fn with_session_limits(options: &str) -> String {
    let mut named = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(w) = words.next() {
        let setting = match w {
            "-c" => words.next(),
            w => w.strip_prefix("-c").or_else(|| w.strip_prefix("--")),
        };
        if let Some(setting) = setting {
            let name = setting.split('=').next().unwrap_or("");
            named.push(name.replace('-', "_").to_ascii_lowercase());
        }
    }
    let mut out = options.trim().to_string();
    for (name, value) in SESSION_LIMITS {
        if !named.iter().any(|n| n == name) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&format!("-c {name}={value}"));
        }
    }
    out
}

/// A statement parameter whose PostgreSQL type is known without asking the
/// server: statements built per call run unnamed (`query_typed`), in one
/// round trip and without filling the connection's statement cache.
trait Param: ToSql + Sync + Send + 'static {
    const TYPE: Type;
}

impl Param for String {
    const TYPE: Type = Type::TEXT;
}

impl Param for i64 {
    const TYPE: Type = Type::INT8;
}

impl Param for Vec<String> {
    const TYPE: Type = Type::TEXT_ARRAY;
}

/// Boxed statement parameters, for statements built from optional filters.
#[derive(Default)]
struct Params(Vec<(Box<dyn ToSql + Sync + Send>, Type)>);

impl Params {
    /// Adds a parameter; returns its placeholder (`$n`).
    fn bind<P: Param>(&mut self, v: P) -> String {
        self.0.push((Box::new(v), P::TYPE));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|(p, _)| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }

    /// The parameters with their types, for `query_typed`.
    fn typed(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.0
            .iter()
            .map(|(p, t)| (p.as_ref() as &(dyn ToSql + Sync), t.clone()))
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
/// document itself keeps the escape and reads back exactly. Every value
/// compared with such a column goes through here too, so a lookup with NUL
/// finds what SQLite would rather than failing (SQLSTATE 22021).
///
/// The price: a NUL and a U+FFFD at the same place are one key here (an
/// event whose id differs from a stored one only so is taken as that
/// duplicate). Keptn ids and contexts are UUIDs, so we accept it rather
/// than refuse NUL outright.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_limits_are_added_unless_the_url_sets_them() {
        let all = "-c statement_timeout=20s -c lock_timeout=10s \
                   -c idle_in_transaction_session_timeout=60s";
        let cases = [
            ("", all.to_string()),
            ("-c search_path=app", format!("-c search_path=app {all}")),
            (
                "-c lock_timeout=1s",
                "-c lock_timeout=1s -c statement_timeout=20s \
                 -c idle_in_transaction_session_timeout=60s"
                    .into(),
            ),
            (
                "-cstatement_timeout=0 --idle-in-transaction-session-timeout=0",
                "-cstatement_timeout=0 --idle-in-transaction-session-timeout=0 \
                 -c lock_timeout=10s"
                    .into(),
            ),
        ];
        for (options, want) in cases {
            assert_eq!(with_session_limits(options), want, "{options:?}");
        }
    }
}
