//! The PostgreSQL store's errors and how they map to [`StoreError`].

use deadpool_postgres::{BuildError, PoolError};
use keelson_core::ports::StoreError;
use std::fmt;
use std::path::PathBuf;
use thiserror::Error;
use tokio_postgres::error::SqlState;

/// Everything that can go wrong in this crate. It reaches callers inside
/// [`StoreError::Backend`] (its `source`), with `transient` set by
/// [`Error::is_transient`].
#[derive(Debug, Error)]
pub enum Error {
    /// The connection URL does not parse.
    #[error("invalid PostgreSQL URL: {}", Chain(.0))]
    Url(#[source] tokio_postgres::Error),
    /// The pool could not be built.
    #[error("building the PostgreSQL connection pool")]
    Pool(#[source] BuildError),
    /// No connection could be had from the pool.
    #[error("no PostgreSQL connection: {}", Chain(.0))]
    Connection(#[source] PoolError),
    /// A statement failed.
    #[error("PostgreSQL: {}", Chain(.0))]
    Query(#[from] tokio_postgres::Error),
    /// The CA file given for TLS cannot be read as PEM.
    #[error("CA file {}: {source}", .path.display())]
    CaFile {
        /// The file, as given.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The CA file given for TLS holds no certificate.
    #[error("CA file {}: no PEM certificate in it", .path.display())]
    CaFileEmpty {
        /// The file, as given.
        path: PathBuf,
    },
    /// A CA certificate (or the TLS configuration) was refused by rustls.
    #[error("TLS configuration: {0}")]
    CaCertificate(#[source] rustls::Error),
    /// TLS was asked for but there is no CA certificate to verify the
    /// server with.
    #[error(
        "TLS: no CA certificates to verify the server with (the platform has none \
         and no CA file was given)"
    )]
    NoTrustedCertificates,
    /// The database was migrated by a newer build.
    #[error("the database has schema version {found}, newer than this build's {supported}")]
    SchemaTooNew {
        /// Version found in `keelson_schema`.
        found: i32,
        /// [`crate::SCHEMA_VERSION`].
        supported: i32,
    },
    /// A stored row does not decode (written by something else, or damaged).
    #[error("{row}: stored JSON does not decode: {source}")]
    Decode {
        /// Which row, e.g. `event "e1"`.
        row: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored row holds a value out of range.
    #[error("{row}: {problem}")]
    BadRow {
        /// Which row.
        row: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A value could not be encoded as JSON.
    #[error("encoding {what} as JSON: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Whether a retry may succeed: lost connections, a server starting or
    /// shutting down, the serialization failures and deadlocks that
    /// PostgreSQL resolves by aborting one of the transactions involved,
    /// statements stopped by the session's timeouts, and a pool with no free
    /// connection in time.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Query(e) => query_error_is_transient(e),
            Error::Connection(PoolError::Backend(e)) => query_error_is_transient(e),
            Error::Connection(PoolError::Timeout(_)) => true,
            Error::Connection(_) => false,
            Error::Url(_)
            | Error::Pool(_)
            | Error::CaFile { .. }
            | Error::CaFileEmpty { .. }
            | Error::CaCertificate(_)
            | Error::NoTrustedCertificates
            | Error::SchemaTooNew { .. }
            | Error::Decode { .. }
            | Error::BadRow { .. }
            | Error::Encode { .. } => false,
        }
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        let transient = e.is_transient();
        StoreError::backend(e, transient)
    }
}

fn query_error_is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => code_is_transient(code),
        // Not the server's answer: the connection broke (or was never made),
        // unless the client itself refused a value (encoding, column types).
        // A TLS handshake that rustls refused (an untrusted certificate)
        // is no passing fault, though it arrives as an I/O error.
        None => !crate::tls::rejected_by_rustls(e) && (e.is_closed() || io_error_in_chain(e)),
    }
}

/// SQLSTATEs a retry may get past.
pub(crate) fn code_is_transient(code: &SqlState) -> bool {
    let c = code.code();
    // 08: connection exceptions. 57P01-57P05: the server is shutting down,
    // crashed, is not accepting connections yet, or dropped an idle session.
    // 53300: too many connections (another replica will let go of one).
    // 57014 and 55P03: our statement_timeout or lock_timeout (or a cancel)
    // stopped a statement that waited on others; 25P03: the server ended a
    // session left idle in a transaction. A new attempt starts afresh.
    c.starts_with("08")
        || (c.starts_with("57P") && c != "57P04")
        || [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::QUERY_CANCELED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
        ]
        .contains(code)
}

fn io_error_in_chain(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<std::io::Error>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Displays an error with its causes: tokio-postgres' own message is only
/// "db error", the server's words are in its source.
struct Chain<'a>(&'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.0.to_string();
        let mut cur = self.0.source();
        while let Some(e) = cur {
            // Some wrappers (deadpool's) already print their source.
            let s = e.to_string();
            if !out.ends_with(&s) {
                out.push_str(": ");
                out.push_str(&s);
            }
            cur = e.source();
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_sqlstates_table() {
        let cases = [
            (SqlState::T_R_SERIALIZATION_FAILURE, true),
            (SqlState::T_R_DEADLOCK_DETECTED, true),
            (SqlState::CONNECTION_FAILURE, true),
            (SqlState::CONNECTION_EXCEPTION, true),
            (SqlState::ADMIN_SHUTDOWN, true),
            (SqlState::CRASH_SHUTDOWN, true),
            (SqlState::CANNOT_CONNECT_NOW, true),
            (SqlState::TOO_MANY_CONNECTIONS, true),
            (SqlState::QUERY_CANCELED, true),
            (SqlState::LOCK_NOT_AVAILABLE, true),
            (SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT, true),
            // 53200: out of shared memory (e.g. the lock table) is no
            // passing contention: the same statement fails the same way.
            (SqlState::OUT_OF_MEMORY, false),
            (SqlState::CHARACTER_NOT_IN_REPERTOIRE, false),
            // 57P04: the database was dropped; waiting will not bring it back.
            (SqlState::DATABASE_DROPPED, false),
            (SqlState::UNIQUE_VIOLATION, false),
            (SqlState::UNDEFINED_TABLE, false),
            (SqlState::INVALID_TEXT_REPRESENTATION, false),
            (SqlState::INVALID_PASSWORD, false),
        ];
        for (code, want) in cases {
            assert_eq!(code_is_transient(&code), want, "{}", code.code());
        }
    }

    #[test]
    fn decode_errors_name_the_row_and_are_fatal() {
        let source = serde_json::from_str::<u8>("x").unwrap_err();
        let e = Error::Decode {
            row: "event \"e1\"".into(),
            source,
        };
        assert!(!e.is_transient());
        let s = StoreError::from(e);
        assert_eq!(s.kind(), keelson_core::ErrorKind::Fatal);
        assert!(s.to_string().contains("event \"e1\""), "{s}");
    }
}
