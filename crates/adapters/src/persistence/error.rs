//! What can go wrong: at start-up ([`StoreSetupError`]), and inside one blocking
//! operation ([`DbError`]), sorted into the port's `Unavailable` / `Unknown`.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use webex_push_domain::{BoxError, StoreError};

use super::config::DatabaseUrlError;

/// Why the store could not be built (start-up) or migrated. Carries the database's own
/// error, never the URL.
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    #[error(transparent)]
    Url(#[from] DatabaseUrlError),
    #[error("cannot connect to the {backend} database: {source}")]
    Connect {
        backend: &'static str,
        #[source]
        source: diesel::ConnectionError,
    },
    #[error("cannot create the SQLite database {}: {source}", path.display())]
    CreateSqlite {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the SQLite database {}: {source}", path.display())]
    OpenSqlite {
        path: std::path::PathBuf,
        #[source]
        source: diesel::ConnectionError,
    },
    #[error("cannot prepare the {backend} connection: {source}")]
    Prepare {
        backend: &'static str,
        #[source]
        source: DieselError,
    },
    #[error("cannot build the {backend} connection pool: {source}")]
    Pool {
        backend: &'static str,
        #[source]
        source: diesel::r2d2::PoolError,
    },
    #[error("{backend} migrations failed: {source}")]
    Migrations {
        backend: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("database set-up task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// What went wrong inside one blocking database operation, before it is sorted into
/// the port's `Unavailable` / `Unknown`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error("no database connection available")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error(transparent)]
    Query(#[from] DieselError),
    #[error("stored row is invalid: {0}")]
    Corrupt(&'static str),
}

impl DbError {
    pub(crate) fn into_port_error(self) -> StoreError {
        if self.is_transient() {
            StoreError::Unavailable(Box::new(self))
        } else {
            StoreError::Unknown(Box::new(self))
        }
    }

    /// Whether the connection itself is gone (server restarted, connection killed):
    /// nothing more can be done on it, and a fresh one may well work at once.
    pub(crate) fn is_connection_lost(&self) -> bool {
        const LOST: [&str; 5] = [
            "terminating connection",
            "server closed the connection",
            "no connection to the server",
            "could not receive data",
            "could not send data",
        ];
        match self {
            DbError::Query(DieselError::DatabaseError(kind, info)) => {
                matches!(
                    kind,
                    DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand
                ) || {
                    let message = info.message().to_ascii_lowercase();
                    LOST.iter().any(|needle| message.contains(needle))
                }
            }
            DbError::Pool(_) | DbError::Query(_) | DbError::Corrupt(_) => false,
        }
    }

    /// Whether waiting can fix it: the database is unreachable, restarting, overloaded
    /// or locked. Diesel does not expose SQLSTATE, so besides the connection kinds the
    /// server's message decides.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            DbError::Pool(_) => true,
            DbError::Query(DieselError::DatabaseError(kind, info)) => {
                matches!(
                    kind,
                    DatabaseErrorKind::ClosedConnection
                        | DatabaseErrorKind::UnableToSendCommand
                        | DatabaseErrorKind::SerializationFailure
                ) || is_transient_message(info.message())
            }
            DbError::Query(_) | DbError::Corrupt(_) => false,
        }
    }
}

fn is_transient_message(message: &str) -> bool {
    const TRANSIENT: [&str; 14] = [
        "database is locked",
        "database table is locked",
        "terminating connection",
        "server closed the connection",
        "no connection to the server",
        "could not connect",
        "connection refused",
        "could not receive data",
        "could not send data",
        "the database system is",
        "canceling statement due to statement timeout",
        "canceling statement due to lock timeout",
        "deadlock detected",
        "too many connections",
    ];
    let message = message.to_ascii_lowercase();
    TRANSIENT.iter().any(|needle| message.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_loss_and_locks_are_unavailable_but_other_failures_are_not() {
        assert!(is_transient_message(
            "terminating connection due to administrator command"
        ));
        assert!(is_transient_message("database is locked"));
        assert!(is_transient_message(
            "canceling statement due to statement timeout"
        ));
        assert!(!is_transient_message(
            "new row for relation \"devices\" violates check constraint"
        ));
        assert!(matches!(
            DbError::Corrupt("x").into_port_error(),
            StoreError::Unknown(_)
        ));
        assert!(matches!(
            DbError::Query(DieselError::NotFound).into_port_error(),
            StoreError::Unknown(_)
        ));
    }
}
