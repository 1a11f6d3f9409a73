//! The pools and the one runner every operation goes through: r2d2 pools with
//! explicit timeouts, connections tuned as they open, and [`Database::run`], which
//! takes a closure to Tokio's blocking pool inside the caller's span and bounds it.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::r2d2::{
    ConnectionManager, CustomizeConnection, HandleError, ManageConnection, Pool, PoolError,
    PooledConnection,
};
use tracing::Span;
use webex_push_domain::StoreError;

use super::config::DatabaseConfig;
use super::error::{DbError, StoreSetupError};

pub(crate) type PgPool = Pool<PgManager>;
pub(crate) type SqlitePool = Pool<ConnectionManager<SqliteConnection>>;

/// Builds a fresh pool of the same database.
pub(crate) type FreshPool<P> = Arc<dyn Fn() -> Result<P, PoolError> + Send + Sync>;

/// One backend's pool and how long one operation on it may take; cheap to clone (r2d2
/// pools are shared handles).
pub(crate) struct Database<P> {
    /// Replaced as a whole when its connections are stuck (see
    /// [`Database::abandon_stuck_connections`]).
    pool: Arc<RwLock<P>>,
    /// Builds a fresh pool (`None` on SQLite, where nothing goes over a network).
    fresh_pool: Option<FreshPool<P>>,
    /// When the pool was last replaced: once per operation timeout is enough.
    replaced_at: Arc<Mutex<Option<Instant>>>,
    /// The longest one operation may take, checkout included; past it the caller gets
    /// `Unavailable` even if the blocking thread is still stuck in libpq.
    operation_timeout: Duration,
}

impl<P> Clone for Database<P> {
    fn clone(&self) -> Self {
        Self {
            pool: Arc::clone(&self.pool),
            fresh_pool: self.fresh_pool.clone(),
            replaced_at: Arc::clone(&self.replaced_at),
            operation_timeout: self.operation_timeout,
        }
    }
}

impl<P: Clone + Send + Sync + 'static> Database<P> {
    /// `pool`, with `fresh_pool` to replace it when its connections are stuck; one
    /// operation may take a checkout, a statement and a second more.
    pub(crate) fn new(pool: P, fresh_pool: Option<FreshPool<P>>, config: &DatabaseConfig) -> Self {
        Self {
            pool: Arc::new(RwLock::new(pool)),
            fresh_pool,
            replaced_at: Arc::default(),
            operation_timeout: config.checkout_timeout
                + config.statement_timeout
                + Duration::from_secs(1),
        }
    }

    /// The pool operations run on now.
    pub(crate) fn pool(&self) -> P {
        self.pool
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the Postgres pool after an operation outlived its timeout: its thread is
    /// stuck in libpq on a connection nothing answers (a network that drops packets
    /// silently), and so may the pool's other connections be. Until the kernel gives up
    /// such a socket (libpq's keepalives and `tcp_user_timeout` say when), it keeps its
    /// pool slot; a fresh pool opens fresh connections at once, and the old one closes
    /// its connections as their threads let go of them.
    fn abandon_stuck_connections(&self) {
        let Some(fresh_pool) = &self.fresh_pool else {
            return;
        };
        {
            let mut replaced_at = self
                .replaced_at
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if replaced_at.is_some_and(|at| at.elapsed() < self.operation_timeout) {
                return;
            }
            *replaced_at = Some(Instant::now());
        }
        match fresh_pool() {
            Ok(pool) => {
                *self
                    .pool
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = pool;
                tracing::warn!(
                    "a database operation outlived its timeout: its connections are \
                     abandoned and new ones opened"
                );
            }
            Err(error) => {
                tracing::warn!(error = %error, "a fresh database pool could not be built")
            }
        }
    }

    /// Runs `f` on the blocking pool inside the caller's span, bounded by the operation
    /// timeout, and sorts its error into the port's variants.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl Fn(&P) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = self.pool();
        let span = Span::current();
        let task = tokio::task::spawn_blocking(move || {
            span.in_scope(|| match f(&pool) {
                // The pooled connection was dead (Postgres restarted, or it was killed
                // while idle); it is dropped, and one fresh try is what a ping at
                // checkout would have bought. A statement failing this way was not
                // committed (but for a commit whose answer was lost in the same
                // instant, which a ping at checkout cannot prevent either), so trying
                // it again does not do it twice.
                Err(error) if error.is_connection_lost() => {
                    tracing::debug!(error = %error, "database connection lost; trying again");
                    f(&pool)
                }
                result => result,
            })
        });
        match tokio::time::timeout(self.operation_timeout, task).await {
            Ok(Ok(result)) => result.map_err(|error| {
                let error = error.into_port_error();
                if let StoreError::Unknown(source) = &error {
                    tracing::error!(error = %source, "registration store failed");
                }
                error
            }),
            Ok(Err(join_error)) => Err(StoreError::Unknown(Box::new(join_error))),
            Err(elapsed) => {
                tracing::warn!(
                    timeout_ms =
                        u64::try_from(self.operation_timeout.as_millis()).unwrap_or(u64::MAX),
                    "database operation timed out"
                );
                self.abandon_stuck_connections();
                Err(StoreError::Unavailable(Box::new(elapsed)))
            }
        }
    }

    /// Runs the set-up step `f` (migrations) on the blocking pool inside the caller's
    /// span, with no timeout: a migration takes what it takes.
    pub(crate) async fn run_setup<T: Send + 'static>(
        &self,
        f: impl FnOnce(&P) -> Result<T, StoreSetupError> + Send + 'static,
    ) -> Result<T, StoreSetupError> {
        let pool = self.pool();
        let span = Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&pool)))
            .await
            .map_err(StoreSetupError::Task)?
    }
}

/// A connection for a set-up step.
pub(crate) fn setup_connection<M: ManageConnection>(
    pool: &Pool<M>,
    backend: &'static str,
) -> Result<PooledConnection<M>, StoreSetupError> {
    pool.get()
        .map_err(|source| StoreSetupError::Pool { backend, source })
}

/// A write transaction that takes the write lock up front: SQLite's default deferred
/// transaction would fail with "database is locked" instead of waiting its busy timeout
/// when it upgrades from reading to writing.
pub(crate) trait WriteTransaction: Sized {
    fn write_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, DbError>,
    ) -> Result<T, DbError>;
}

impl WriteTransaction for PgConnection {
    fn write_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.transaction(f)
    }
}

impl WriteTransaction for SqliteConnection {
    fn write_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.immediate_transaction(f)
    }
}

/// A pooled Postgres connection and whether it was found dead.
pub(crate) struct PgConn {
    pub(crate) conn: PgConnection,
    /// A statement failed because the connection is gone: r2d2 must drop it rather
    /// than hand it out again.
    lost: bool,
}

/// The Postgres connection manager. Connections are not pinged at checkout (that was
/// one more round trip before every statement, on the path of every webhook);
/// instead a connection a statement finds dead is dropped ([`PgConn::lost`]) and the
/// operation is tried once more on a fresh one (see [`Database::run`]).
pub(crate) struct PgManager(pub(crate) ConnectionManager<PgConnection>);

impl ManageConnection for PgManager {
    type Connection = PgConn;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<PgConn, diesel::r2d2::Error> {
        self.0.connect().map(|conn| PgConn { conn, lost: false })
    }

    fn is_valid(&self, conn: &mut PgConn) -> Result<(), diesel::r2d2::Error> {
        self.0.is_valid(&mut conn.conn)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.lost || self.0.has_broken(&mut conn.conn)
    }
}

/// Runs `f` on a connection from `pool`, marking the connection lost when `f` fails
/// because it is.
pub(crate) fn on_postgres<T>(
    pool: &PgPool,
    f: impl FnOnce(&mut PgConnection) -> Result<T, DbError>,
) -> Result<T, DbError> {
    let mut pooled: PooledConnection<PgManager> = pool.get()?;
    let result = f(&mut pooled.conn);
    if let Err(error) = &result {
        pooled.lost |= error.is_connection_lost();
    }
    result
}

/// Per-connection settings applied whenever r2d2 opens a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    pub(crate) statement_timeout: Duration,
}

impl CustomizeConnection<PgConn, diesel::r2d2::Error> for Tuning {
    fn on_acquire(&self, conn: &mut PgConn) -> Result<(), diesel::r2d2::Error> {
        // A stuck statement must not hold a pooled connection (and its caller) forever.
        // Generic plans: every statement here looks rows up by key (token, person and
        // channel, event key) or joins a few parameter rows to them, so one plan per
        // prepared statement serves every call. Postgres' default re-plans the batched
        // statements on each execution (their array parameters defeat its cost
        // comparison), which was most of its CPU per webhook.
        conn.conn
            .batch_execute(&format!(
                "SET statement_timeout = {}; SET lock_timeout = {}; \
                 SET plan_cache_mode = force_generic_plan;",
                self.statement_timeout.as_millis(),
                self.statement_timeout.as_millis()
            ))
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Tuning {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        self.tune_sqlite(conn)
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

impl Tuning {
    /// WAL lets readers run beside the one writer; busy_timeout makes a writer wait for
    /// the lock instead of failing at once; NORMAL sync is durable in WAL mode except
    /// for the last transactions before a power loss.
    pub(crate) fn tune_sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<()> {
        conn.batch_execute(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = {}; \
             PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
            self.statement_timeout.as_millis()
        ))
    }
}

/// Sends r2d2's connection errors to `tracing` (r2d2 itself logs through `log`).
#[derive(Debug)]
struct TracingErrorHandler;

impl HandleError<diesel::r2d2::Error> for TracingErrorHandler {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        tracing::warn!(error = %error, "database connection failed");
    }
}

pub(crate) fn build_pool<C>(
    manager: ConnectionManager<C>,
    size: u32,
    config: &DatabaseConfig,
    tuning: Tuning,
    backend: &'static str,
) -> Result<Pool<ConnectionManager<C>>, StoreSetupError>
where
    C: diesel::r2d2::R2D2Connection + 'static,
    Tuning: CustomizeConnection<C, diesel::r2d2::Error>,
{
    pool_builder(size, config, tuning)
        .build(manager)
        .map_err(|source| StoreSetupError::Pool { backend, source })
}

pub(crate) fn pool_builder<M>(
    size: u32,
    config: &DatabaseConfig,
    tuning: Tuning,
) -> diesel::r2d2::Builder<M>
where
    M: ManageConnection<Error = diesel::r2d2::Error>,
    Tuning: CustomizeConnection<M::Connection, diesel::r2d2::Error>,
{
    Pool::builder()
        .max_size(size)
        // Connections open on demand and stay idle for reuse (r2d2's idle timeout):
        // no background refill, because a refill still connecting when the process
        // exits races libpq's OpenSSL clean-up at exit and can crash the process.
        .min_idle(Some(0))
        .connection_timeout(config.checkout_timeout)
        // A connection the server dropped (restart, failover) is replaced, not handed
        // out (Postgres turns this off: see `PgManager`).
        .test_on_check_out(true)
        .connection_customizer(Box::new(tuning))
        .error_handler(Box::new(TracingErrorHandler))
}
