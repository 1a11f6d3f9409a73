//! The Registration port on Diesel: Postgres in production, a SQLite file as the
//! embedded default, one repository type and one contract for both.
//!
//! Diesel is synchronous, so every query runs on Tokio's blocking pool inside the
//! caller's tracing span; the r2d2 pool lives here, with explicit timeouts, so an
//! unreachable database turns into [`RegistrationError::Unavailable`] in seconds.

// Before the modules: `pg_batches` uses it.
/// Session setting for the Postgres writes that are bookkeeping, not registrations:
/// commit without waiting for the WAL flush. `set_config(..., true)` lasts until the end
/// of the statement's own transaction, so registrations keep full durability.
///
/// The trade-off: after a Postgres crash (not a webex-push crash) the last fraction of
/// a second of such writes may be gone (at most three `wal_writer_delay`s, 600 ms by
/// default). For a seen-event key that means one re-delivered event could ring a
/// second time; for a recorded outcome, an older outcome is shown and an environment
/// pin is learnt again on the next push. Nothing is ever half-written, and no
/// registration is lost. What it saves is an fsync per webhook and per push.
macro_rules! async_commit {
    () => {
        "(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"
    };
}

mod batch;
mod check;
mod config;
mod pg_batches;
mod schema;

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound as _, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::r2d2::{
    ConnectionManager, CustomizeConnection, HandleError, ManageConnection, Pool, PooledConnection,
};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types;
use diesel::upsert::excluded;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::ExposeSecret as _;
use tracing::{Instrument as _, Span};
use webex_push_domain::{
    ApnsEnvironment, BoxError, Channel, Claim, Device, DeviceToken, EventClaim, EventKey, PersonId,
    Registration, RegistrationError, RegistrationPort, ReplicaId, TakeOver,
};

pub use check::{DatabaseCheck, check_database};
use config::Target;
pub use config::{
    DEFAULT_POSTGRES_POOL_SIZE, DEFAULT_SQLITE_PATH, DEFAULT_SQLITE_POOL_SIZE, DatabaseConfig,
    DatabaseUrlError, default_database_url,
};

const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");
const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

type PgPool = Pool<PgManager>;
type SqlitePool = Pool<ConnectionManager<SqliteConnection>>;

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
pub(crate) enum StoreError {
    #[error("no database connection available")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error(transparent)]
    Query(#[from] DieselError),
    #[error("stored row is invalid: {0}")]
    Corrupt(&'static str),
}

impl StoreError {
    fn into_port_error(self) -> RegistrationError {
        if self.is_transient() {
            RegistrationError::Unavailable(Box::new(self))
        } else {
            RegistrationError::Unknown(Box::new(self))
        }
    }

    /// Whether the connection itself is gone (server restarted, connection killed):
    /// nothing more can be done on it, and a fresh one may well work at once.
    fn is_connection_lost(&self) -> bool {
        const LOST: [&str; 5] = [
            "terminating connection",
            "server closed the connection",
            "no connection to the server",
            "could not receive data",
            "could not send data",
        ];
        match self {
            StoreError::Query(DieselError::DatabaseError(kind, info)) => {
                matches!(
                    kind,
                    DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand
                ) || {
                    let message = info.message().to_ascii_lowercase();
                    LOST.iter().any(|needle| message.contains(needle))
                }
            }
            StoreError::Pool(_) | StoreError::Query(_) | StoreError::Corrupt(_) => false,
        }
    }

    /// Whether waiting can fix it: the database is unreachable, restarting, overloaded
    /// or locked. Diesel does not expose SQLSTATE, so besides the connection kinds the
    /// server's message decides.
    fn is_transient(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Query(DieselError::DatabaseError(kind, info)) => {
                matches!(
                    kind,
                    DatabaseErrorKind::ClosedConnection
                        | DatabaseErrorKind::UnableToSendCommand
                        | DatabaseErrorKind::SerializationFailure
                ) || is_transient_message(info.message())
            }
            StoreError::Query(_) | StoreError::Corrupt(_) => false,
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

/// The pools, one per backend; cheap to clone (r2d2 pools are shared handles).
#[derive(Clone)]
enum Pools {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// The Registration port on Postgres or SQLite, chosen by the database URL.
///
/// One type for both backends: each statement is written once (the `on_backend!`
/// macro) and runs against whichever schema module the backend uses. On Postgres the
/// two statements of the hot path (claiming an event, recording a push's outcome) are
/// batched across concurrent callers ([`pg_batches`]).
#[derive(Clone)]
pub struct DieselRegistrationStore {
    db: Database,
    /// `Some` on Postgres.
    batches: Option<Arc<pg_batches::PgBatches>>,
}

/// The pools and how long one operation on them may take.
#[derive(Clone)]
struct Database {
    /// Replaced as a whole when its connections are stuck (see
    /// [`Database::abandon_stuck_connections`]).
    pools: Arc<RwLock<Pools>>,
    /// Builds a fresh Postgres pool (`None` on SQLite, where nothing goes over a
    /// network).
    fresh_pool: Option<Arc<dyn Fn() -> Result<PgPool, diesel::r2d2::PoolError> + Send + Sync>>,
    /// When the pool was last replaced: once per operation timeout is enough.
    replaced_at: Arc<Mutex<Option<std::time::Instant>>>,
    /// The longest one operation may take, checkout included; past it the caller gets
    /// `Unavailable` even if the blocking thread is still stuck in libpq.
    operation_timeout: Duration,
}

/// Runs `$body` with `$conn` checked out of the backend's pool and the backend's
/// schema (`devices`, `seen_events`, `DeviceRow`, `person_key`) in scope.
macro_rules! on_backend {
    ($pools:expr, |$conn:ident| $body:expr) => {
        match $pools {
            Pools::Postgres(pool) => {
                #[allow(unused_imports)]
                use schema::pg::{DeviceRow, devices, person_key, seen_events};
                on_postgres(pool, |$conn: &mut PgConnection| -> Result<_, StoreError> {
                    $body
                })
            }
            Pools::Sqlite(pool) => {
                #[allow(unused_imports)]
                use schema::sqlite::{DeviceRow, devices, person_key, seen_events};
                let $conn: &mut SqliteConnection = &mut *pool.get()?;
                $body
            }
        }
    };
}

/// A write transaction that takes the write lock up front: SQLite's default deferred
/// transaction would fail with "database is locked" instead of waiting its busy timeout
/// when it upgrades from reading to writing.
trait WriteTransaction: Sized {
    fn write_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;
}

impl WriteTransaction for PgConnection {
    fn write_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction(f)
    }
}

impl WriteTransaction for SqliteConnection {
    fn write_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.immediate_transaction(f)
    }
}

/// A pooled Postgres connection and whether it was found dead.
struct PgConn {
    conn: PgConnection,
    /// A statement failed because the connection is gone: r2d2 must drop it rather
    /// than hand it out again.
    lost: bool,
}

/// The Postgres connection manager. Connections are not pinged at checkout (that was
/// one more round trip before every statement, on the path of every webhook);
/// instead a connection a statement finds dead is dropped ([`PgConn::lost`]) and the
/// operation is tried once more on a fresh one (see [`DieselRegistrationStore::run`]).
struct PgManager(ConnectionManager<PgConnection>);

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
fn on_postgres<T>(
    pool: &PgPool,
    f: impl FnOnce(&mut PgConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut pooled: PooledConnection<PgManager> = pool.get()?;
    let result = f(&mut pooled.conn);
    if let Err(error) = &result {
        pooled.lost |= error.is_connection_lost();
    }
    result
}

/// Per-connection settings applied whenever r2d2 opens a connection.
#[derive(Debug, Clone, Copy)]
struct Tuning {
    statement_timeout: Duration,
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
    fn tune_sqlite(&self, conn: &mut SqliteConnection) -> QueryResult<()> {
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

impl DieselRegistrationStore {
    /// Connects to the database `config` names, applies pending migrations when
    /// `config.run_migrations` is set, and builds the pool.
    ///
    /// Fails with the database's own error (unreachable host, bad password, unknown
    /// database, unwritable file) so start-up says what is wrong.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreSetupError> {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Self::connect_blocking(&config))
            .instrument(Span::current())
            .await
            .map_err(StoreSetupError::Task)?
    }

    fn connect_blocking(config: &DatabaseConfig) -> Result<Self, StoreSetupError> {
        let target = Target::parse(config.url.as_ref(), config.connect_timeout)?;
        if config.url.is_none() {
            tracing::info!(
                path = DEFAULT_SQLITE_PATH,
                "DATABASE_URL is not set: using the SQLite file in the working directory"
            );
        }
        let backend = target.backend_name();
        let tuning = Tuning {
            statement_timeout: config.statement_timeout,
        };
        let mut fresh_pool = None;
        let pools = match &target {
            Target::Postgres(url) => {
                let url = url.expose_secret();
                // One direct connection first: it fails at once with libpq's message,
                // where the pool would retry until its timeout.
                let mut conn = PgConnection::establish(url)
                    .map_err(|source| StoreSetupError::Connect { backend, source })?;
                if config.run_migrations {
                    apply_postgres_migrations(&mut conn)?;
                }
                drop(conn);
                let size = config
                    .pool_size
                    .unwrap_or(DEFAULT_POSTGRES_POOL_SIZE)
                    .max(1);
                tracing::info!(backend, pool_size = size, "using the Postgres database");
                let (config, url) = (config.clone(), url.to_owned());
                let build = move || {
                    pool_builder(size, &config, tuning)
                        .test_on_check_out(false)
                        .build(PgManager(ConnectionManager::new(url.clone())))
                };
                let pool = build().map_err(|source| StoreSetupError::Pool { backend, source })?;
                fresh_pool = Some(Arc::new(build) as Arc<_>);
                Pools::Postgres(pool)
            }
            Target::Sqlite(path) => {
                create_private(path)?;
                let path_text = sqlite_path_text(path);
                let mut conn = SqliteConnection::establish(&path_text).map_err(|source| {
                    StoreSetupError::OpenSqlite {
                        path: path.clone(),
                        source,
                    }
                })?;
                // WAL must be on before the first pooled connection runs, and a file
                // that is not a database must fail here, not on the first request.
                tuning
                    .tune_sqlite(&mut conn)
                    .map_err(|source| StoreSetupError::Prepare { backend, source })?;
                if config.run_migrations {
                    apply_migrations(&mut conn, SQLITE_MIGRATIONS, backend)?;
                }
                drop(conn);
                let size = config.pool_size.unwrap_or(DEFAULT_SQLITE_POOL_SIZE).max(1);
                tracing::info!(
                    backend,
                    path = %path.display(),
                    pool_size = size,
                    "using the SQLite database file"
                );
                Pools::Sqlite(build_pool(
                    ConnectionManager::new(path_text),
                    size,
                    config,
                    tuning,
                    backend,
                )?)
            }
        };
        let batches = matches!(pools, Pools::Postgres(_));
        let db = Database {
            pools: Arc::new(RwLock::new(pools)),
            fresh_pool,
            replaced_at: Arc::default(),
            operation_timeout: config.checkout_timeout
                + config.statement_timeout
                + Duration::from_secs(1),
        };
        let batches = batches.then(|| Arc::new(pg_batches::PgBatches::new(&db)));
        Ok(Self { db, batches })
    }

    /// `"postgres"` or `"sqlite"`, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        match self.db.pools() {
            Pools::Postgres(_) => "postgres",
            Pools::Sqlite(_) => "sqlite",
        }
    }

    /// Connections `(in_use, idle)` right now, for metrics.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = match &self.db.pools() {
            Pools::Postgres(pool) => pool.state(),
            Pools::Sqlite(pool) => pool.state(),
        };
        (
            state.connections.saturating_sub(state.idle_connections),
            state.idle_connections,
        )
    }

    /// Applies every pending migration (`webex-push migrate`); returns the versions applied.
    pub async fn run_migrations(&self) -> Result<Vec<String>, StoreSetupError> {
        let backend = self.backend_name();
        self.migration_task(move |pools| match pools {
            Pools::Postgres(pool) => {
                let mut conn = pool
                    .get()
                    .map_err(|source| StoreSetupError::Pool { backend, source })?;
                apply_postgres_migrations(&mut conn.conn)
            }
            Pools::Sqlite(pool) => {
                let mut conn = pool
                    .get()
                    .map_err(|source| StoreSetupError::Pool { backend, source })?;
                apply_migrations(&mut *conn, SQLITE_MIGRATIONS, backend)
            }
        })
        .await
    }

    /// Reverts every applied migration, newest first, leaving an empty schema (tests,
    /// and operators leaving webex-push); returns the versions reverted.
    pub async fn revert_all_migrations(&self) -> Result<Vec<String>, StoreSetupError> {
        let backend = self.backend_name();
        let migration_error =
            move |source: BoxError| StoreSetupError::Migrations { backend, source };
        self.migration_task(move |pools| {
            let versions = match pools {
                Pools::Postgres(pool) => {
                    let mut conn = pool
                        .get()
                        .map_err(|source| StoreSetupError::Pool { backend, source })?;
                    conn.conn
                        .revert_all_migrations(POSTGRES_MIGRATIONS)
                        .map_err(migration_error)?
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                }
                Pools::Sqlite(pool) => {
                    let mut conn = pool
                        .get()
                        .map_err(|source| StoreSetupError::Pool { backend, source })?;
                    conn.revert_all_migrations(SQLITE_MIGRATIONS)
                        .map_err(migration_error)?
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                }
            };
            Ok(versions)
        })
        .await
    }

    /// Reverts the newest applied migration (tests, and operators rolling back one
    /// release); returns its version.
    pub async fn revert_last_migration(&self) -> Result<String, StoreSetupError> {
        let backend = self.backend_name();
        let migration_error =
            move |source: BoxError| StoreSetupError::Migrations { backend, source };
        self.migration_task(move |pools| {
            let version = match pools {
                Pools::Postgres(pool) => pool
                    .get()
                    .map_err(|source| StoreSetupError::Pool { backend, source })?
                    .conn
                    .revert_last_migration(POSTGRES_MIGRATIONS)
                    .map_err(migration_error)?
                    .to_string(),
                Pools::Sqlite(pool) => pool
                    .get()
                    .map_err(|source| StoreSetupError::Pool { backend, source })?
                    .revert_last_migration(SQLITE_MIGRATIONS)
                    .map_err(migration_error)?
                    .to_string(),
            };
            Ok(version)
        })
        .await
    }

    async fn migration_task<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Pools) -> Result<T, StoreSetupError> + Send + 'static,
    ) -> Result<T, StoreSetupError> {
        let pools = self.db.pools();
        let span = Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&pools)))
            .await
            .map_err(StoreSetupError::Task)?
    }

    /// Runs `f` on the blocking pool inside the caller's span (see [`Database::run`]).
    async fn run<T: Send + 'static>(
        &self,
        f: impl Fn(&Pools) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, RegistrationError> {
        self.db.run(f).await
    }
}

impl Database {
    /// The pools operations run on now.
    fn pools(&self) -> Pools {
        self.pools
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
            *replaced_at = Some(std::time::Instant::now());
        }
        match fresh_pool() {
            Ok(pool) => {
                *self
                    .pools
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Pools::Postgres(pool);
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
    async fn run<T: Send + 'static>(
        &self,
        f: impl Fn(&Pools) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, RegistrationError> {
        let pools = self.pools();
        let span = Span::current();
        let task = tokio::task::spawn_blocking(move || {
            span.in_scope(|| match f(&pools) {
                // The pooled connection was dead (Postgres restarted, or it was killed
                // while idle); it is dropped, and one fresh try is what a ping at
                // checkout would have bought. A statement failing this way was not
                // committed (but for a commit whose answer was lost in the same
                // instant, which a ping at checkout cannot prevent either), so trying
                // it again does not do it twice.
                Err(error) if error.is_connection_lost() => {
                    tracing::debug!(error = %error, "database connection lost; trying again");
                    f(&pools)
                }
                result => result,
            })
        });
        match tokio::time::timeout(self.operation_timeout, task).await {
            Ok(Ok(result)) => result.map_err(|error| {
                let error = error.into_port_error();
                if let RegistrationError::Unknown(source) = &error {
                    tracing::error!(error = %source, "registration store failed");
                }
                error
            }),
            Ok(Err(join_error)) => Err(RegistrationError::Unknown(Box::new(join_error))),
            Err(elapsed) => {
                tracing::warn!(
                    timeout_ms =
                        u64::try_from(self.operation_timeout.as_millis()).unwrap_or(u64::MAX),
                    "database operation timed out"
                );
                self.abandon_stuck_connections();
                Err(RegistrationError::Unavailable(Box::new(elapsed)))
            }
        }
    }
}

fn build_pool<C>(
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

fn pool_builder<M>(size: u32, config: &DatabaseConfig, tuning: Tuning) -> diesel::r2d2::Builder<M>
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

fn apply_migrations<C>(
    conn: &mut C,
    migrations: EmbeddedMigrations,
    backend: &'static str,
) -> Result<Vec<String>, StoreSetupError>
where
    C: MigrationHarness<C::Backend> + Connection,
{
    let applied = conn
        .run_pending_migrations(migrations)
        .map_err(|source| StoreSetupError::Migrations { backend, source })?;
    let applied: Vec<String> = applied.iter().map(ToString::to_string).collect();
    if !applied.is_empty() {
        tracing::info!(
            backend,
            migrations = %applied.join(","),
            "applied database migrations"
        );
    }
    Ok(applied)
}

/// Replicas starting together would race to create the same tables; a session-level
/// advisory lock lets one migrate while the others wait, then find nothing pending.
fn apply_postgres_migrations(conn: &mut PgConnection) -> Result<Vec<String>, StoreSetupError> {
    const MIGRATION_LOCK: i64 = 0x7765_6265_7870; // "webexp"
    let backend = "postgres";
    let lock_error = |source| StoreSetupError::Prepare { backend, source };
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .execute(conn)
        .map_err(lock_error)?;
    let applied = apply_migrations(conn, POSTGRES_MIGRATIONS, backend);
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .execute(conn)
        .map_err(lock_error)?;
    applied
}

/// Creates the SQLite file readable and writable by its owner only (`0600`) when it does
/// not exist yet: it holds every device token. SQLite gives its `-wal` and `-shm` files
/// the database file's permissions. An existing file keeps the permissions its
/// operator chose, with a warning when others may read it.
fn create_private(path: &Path) -> Result<(), StoreSetupError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Ok(metadata) = std::fs::metadata(path) {
                let mode = metadata.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format!("{mode:o}"),
                        "the SQLite database holds device tokens and is readable by other \
                         users: chmod 600 it"
                    );
                }
            }
            Ok(())
        }
        Err(source) => Err(StoreSetupError::CreateSqlite {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn sqlite_path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Times are stored to the microsecond (Postgres' precision), so what is read back
/// equals what was written on both backends.
fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// The event's key recorded for its job ([`RegistrationPort::claim`] on SQLite): one
/// row changed when it is new, or was recorded by the same job before.
const SQLITE_CLAIM_EVENT: &str = "INSERT INTO seen_events (key, seen_at, job, event, deliver_by, holder) \
     VALUES (?, ?, ?, ?, ?, ?) \
     ON CONFLICT (key) DO UPDATE SET seen_at = seen_events.seen_at \
     WHERE seen_events.job = excluded.job";

/// The devices of person `$1` on channel `$2` beyond the `$3` most recently registered
/// ([`RegistrationPort::trim_devices`]), removed.
const PG_TRIM_DEVICES: &str = "DELETE FROM devices WHERE token IN (\
     SELECT token FROM devices WHERE person_uuid = $1 AND channel = $2 \
     ORDER BY registered_at DESC, token DESC OFFSET $3) RETURNING token, provider";
const SQLITE_TRIM_DEVICES: &str = "DELETE FROM devices WHERE token IN (\
     SELECT token FROM devices WHERE person_uuid = ?1 AND channel = ?2 \
     ORDER BY registered_at DESC, token DESC LIMIT -1 OFFSET ?3) RETURNING token, provider";

/// A token [`RegistrationPort::trim_devices`] removed.
#[derive(QueryableByName)]
struct TrimmedRow {
    #[diesel(sql_type = sql_types::Text)]
    token: String,
    #[diesel(sql_type = sql_types::Text)]
    provider: String,
}

/// At most `$2` events seen before `$1` ([`RegistrationPort::prune_seen_events`]).
const PG_PRUNE_SEEN_EVENTS: &str = "DELETE FROM seen_events WHERE key IN (\
     SELECT key FROM seen_events WHERE seen_at < $1 LIMIT $2)";
const SQLITE_PRUNE_SEEN_EVENTS: &str = "DELETE FROM seen_events WHERE rowid IN (\
     SELECT rowid FROM seen_events WHERE seen_at < ? LIMIT ?)";

/// The caller says it is alive ([`RegistrationPort::take_over_events`]); replicas
/// silent for a day are forgotten.
const PG_REPLICA_ALIVE: &str = "WITH forgotten AS (DELETE FROM replicas \
     WHERE alive_at < $2 - interval '1 day') \
     INSERT INTO replicas (id, alive_at) VALUES ($1, $2) \
     ON CONFLICT (id) DO UPDATE SET alive_at = excluded.alive_at";
const SQLITE_REPLICA_ALIVE: &str = "INSERT INTO replicas (id, alive_at) VALUES (?, ?) \
     ON CONFLICT (id) DO UPDATE SET alive_at = excluded.alive_at";

/// Unfinished events past their deadline (`$1`) whose holder is not alive (has not
/// said so since `$2`): forgotten.
const PG_EXPIRE_ORPHANS: &str = "UPDATE seen_events SET event = NULL, holder = NULL \
     WHERE event IS NOT NULL AND deliver_by <= $1 \
     AND (holder IS NULL OR holder NOT IN (SELECT id FROM replicas WHERE alive_at >= $2))";
const SQLITE_EXPIRE_ORPHANS: &str = "UPDATE seen_events SET event = NULL, holder = NULL \
     WHERE event IS NOT NULL AND deliver_by <= ?1 \
     AND (holder IS NULL OR holder NOT IN (SELECT id FROM replicas WHERE alive_at >= ?2))";

/// At most `$4` unfinished events within their deadline (`$2`) whose holder is not
/// alive (since `$3`), soonest deadline first, made `$1`'s. `SKIP LOCKED`: two replicas
/// taking over at once split the events instead of waiting for each other.
const PG_TAKE_OVER: &str = "UPDATE seen_events SET holder = $1 WHERE key IN (\
     SELECT key FROM seen_events WHERE event IS NOT NULL AND deliver_by > $2 \
     AND (holder IS NULL OR holder NOT IN (SELECT id FROM replicas WHERE alive_at >= $3)) \
     ORDER BY deliver_by LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING job, event, deliver_by";
const SQLITE_TAKE_OVER: &str = "UPDATE seen_events SET holder = ?1 WHERE key IN (\
     SELECT key FROM seen_events WHERE event IS NOT NULL AND deliver_by > ?2 \
     AND (holder IS NULL OR holder NOT IN (SELECT id FROM replicas WHERE alive_at >= ?3)) \
     ORDER BY deliver_by LIMIT ?4) \
     RETURNING job, event, deliver_by";

#[async_trait]
impl RegistrationPort for DieselRegistrationStore {
    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), person = %registration.person))]
    async fn register(
        &self,
        registration: &Registration,
        at: DateTime<Utc>,
    ) -> Result<(), RegistrationError> {
        let at = stored_time(at);
        let person_uuid = registration.person.uuid();
        let person_id = registration.person.original().to_owned();
        let email = registration
            .email
            .as_ref()
            .map(|email| email.as_str().to_owned());
        let flavour = registration.flavour.as_str();
        let provider = registration.provider().as_str();
        let environment = registration.environment.map(ApnsEnvironment::as_str);
        let bundle_id = registration
            .bundle_id
            .as_ref()
            .map(|b| b.as_str().to_owned());
        let mut tokens: Vec<(String, &'static str)> = registration
            .tokens()
            .iter()
            .map(|(token, channel)| (token.as_str().to_owned(), channel.as_str()))
            .collect();
        // Always lock rows in the same order, so two registrations sharing both tokens
        // cannot deadlock each other.
        tokens.sort();
        self.run(move |pools| {
            on_backend!(pools, |conn| conn.write_transaction(|conn| {
                for (token, channel) in &tokens {
                    diesel::insert_into(devices::table)
                        .values((
                            devices::token.eq(token),
                            devices::channel.eq(channel),
                            devices::person_uuid.eq(person_key(person_uuid)),
                            devices::person_id.eq(&person_id),
                            devices::email.eq(&email),
                            devices::environment.eq(environment),
                            devices::bundle_id.eq(&bundle_id),
                            devices::flavour.eq(flavour),
                            devices::provider.eq(provider),
                            devices::registered_at.eq(at),
                            devices::updated_at.eq(at),
                        ))
                        .on_conflict(devices::token)
                        .do_update()
                        .set((
                            devices::channel.eq(excluded(devices::channel)),
                            devices::person_uuid.eq(excluded(devices::person_uuid)),
                            devices::person_id.eq(excluded(devices::person_id)),
                            devices::email.eq(excluded(devices::email)),
                            devices::environment.eq(excluded(devices::environment)),
                            devices::bundle_id.eq(excluded(devices::bundle_id)),
                            devices::flavour.eq(excluded(devices::flavour)),
                            devices::provider.eq(excluded(devices::provider)),
                            devices::registered_at.eq(excluded(devices::registered_at)),
                            devices::updated_at.eq(excluded(devices::updated_at)),
                        ))
                        .execute(conn)?;
                }
                Ok(())
            }))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), person = %person, channel = %channel))]
    async fn trim_devices(
        &self,
        person: &PersonId,
        channel: Channel,
        keep: usize,
    ) -> Result<Vec<DeviceToken>, RegistrationError> {
        let person = person.uuid();
        let channel = channel.as_str();
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let removed: Vec<TrimmedRow> = self
            .run(move |pools| match pools {
                Pools::Postgres(pool) => on_postgres(pool, |conn| {
                    Ok(diesel::sql_query(PG_TRIM_DEVICES)
                        .bind::<sql_types::Uuid, _>(person)
                        .bind::<sql_types::Text, _>(channel)
                        .bind::<sql_types::BigInt, _>(keep)
                        .load::<TrimmedRow>(conn)?)
                }),
                Pools::Sqlite(pool) => Ok(diesel::sql_query(SQLITE_TRIM_DEVICES)
                    .bind::<sql_types::Text, _>(person.hyphenated().to_string())
                    .bind::<sql_types::Text, _>(channel)
                    .bind::<sql_types::BigInt, _>(keep)
                    .load::<TrimmedRow>(&mut *pool.get()?)?),
            })
            .await?;
        removed
            .iter()
            .map(|row| {
                schema::stored_token(&row.token, &row.provider)
                    .map_err(|error| RegistrationError::Unknown(Box::new(error)))
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), token = %token))]
    async fn unregister(&self, token: &DeviceToken) -> Result<bool, RegistrationError> {
        let token = token.as_str().to_owned();
        self.run(move |pools| {
            on_backend!(pools, |conn| {
                let removed = diesel::delete(devices::table.filter(devices::token.eq(&token)))
                    .execute(conn)?;
                Ok(removed > 0)
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), person = %person, channel = %channel))]
    async fn devices_of(
        &self,
        person: &PersonId,
        channel: Channel,
    ) -> Result<Vec<Device>, RegistrationError> {
        let person_uuid = person.uuid();
        let channel = channel.as_str();
        self.run(move |pools| {
            on_backend!(pools, |conn| {
                devices::table
                    .filter(devices::person_uuid.eq(person_key(person_uuid)))
                    .filter(devices::channel.eq(channel))
                    .select(DeviceRow::as_select())
                    .load(conn)?
                    .into_iter()
                    .map(DeviceRow::into_device)
                    .collect()
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), person = %person))]
    async fn all_devices_of(&self, person: &PersonId) -> Result<Vec<Device>, RegistrationError> {
        let person_uuid = person.uuid();
        self.run(move |pools| {
            on_backend!(pools, |conn| {
                devices::table
                    .filter(devices::person_uuid.eq(person_key(person_uuid)))
                    .order((devices::channel, devices::registered_at))
                    .select(DeviceRow::as_select())
                    .load(conn)?
                    .into_iter()
                    .map(DeviceRow::into_device)
                    .collect()
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), token = %token))]
    async fn device(&self, token: &DeviceToken) -> Result<Option<Device>, RegistrationError> {
        let token = token.as_str().to_owned();
        self.run(move |pools| {
            on_backend!(pools, |conn| {
                devices::table
                    .filter(devices::token.eq(&token))
                    .select(DeviceRow::as_select())
                    .first(conn)
                    .optional()?
                    .map(DeviceRow::into_device)
                    .transpose()
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), token = %token))]
    async fn remove_unless_registered_since(
        &self,
        token: &DeviceToken,
        since: DateTime<Utc>,
    ) -> Result<bool, RegistrationError> {
        let token = token.as_str().to_owned();
        // Rounded down like stored times: a registration in the same microsecond as
        // `since` counts as "at or after" and survives.
        let since = stored_time(since);
        self.run(move |pools| {
            on_backend!(pools, |conn| {
                // One statement: a registration committed before it keeps the token, one
                // committed after it re-creates the row. No read-then-delete window.
                let removed = diesel::delete(
                    devices::table
                        .filter(devices::token.eq(&token))
                        .filter(devices::registered_at.lt(since)),
                )
                .execute(conn)?;
                Ok(removed > 0)
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), token = %token, outcome = outcome))]
    async fn record_outcome(
        &self,
        token: &DeviceToken,
        outcome: &str,
        environment: Option<ApnsEnvironment>,
        at: DateTime<Utc>,
    ) -> Result<(), RegistrationError> {
        let token = token.as_str().to_owned();
        let outcome = outcome.to_owned();
        let environment = environment.map(ApnsEnvironment::as_str);
        let at = stored_time(at);
        if let Some(batches) = &self.batches {
            return batches
                .record_outcome(pg_batches::Outcome {
                    token,
                    outcome,
                    environment,
                    at,
                })
                .await;
        }
        self.run(move |pools| {
            on_backend!(pools, |conn| {
                let target = devices::table.filter(devices::token.eq(&token));
                // A token removed meanwhile updates nothing, which is what the port asks.
                match environment {
                    Some(environment) => diesel::update(target)
                        .set((
                            devices::last_outcome.eq(&outcome),
                            devices::last_outcome_at.eq(at),
                            devices::environment.eq(environment),
                            devices::updated_at.eq(at),
                        ))
                        .execute(conn)?,
                    None => diesel::update(target)
                        .set((
                            devices::last_outcome.eq(&outcome),
                            devices::last_outcome_at.eq(at),
                            devices::updated_at.eq(at),
                        ))
                        .execute(conn)?,
                };
                Ok(())
            })
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), person = %claim.person))]
    async fn claim(&self, claim: &EventClaim) -> Result<Claim, RegistrationError> {
        let request = pg_batches::ClaimRequest {
            key: claim.key.as_ref().map(|key| key.as_str().to_owned()),
            at: stored_time(claim.at),
            person: claim.person.uuid(),
            job: claim.job.uuid(),
            event: claim.event.clone(),
            deliver_by: stored_time(claim.deliver_by),
            holder: claim.holder.uuid(),
        };
        // This runs for every webhook: on Postgres one statement claims the events of
        // every webhook waiting at that moment; on SQLite, one blocking hop.
        if let Some(batches) = &self.batches {
            return batches.claim(request).await;
        }
        self.run(move |pools| match pools {
            // Not reached (a Postgres store has its batches); the same statement, alone.
            Pools::Postgres(pool) => {
                on_postgres(pool, |conn| pg_batches::claim_alone(conn, &request))
            }
            Pools::Sqlite(pool) => {
                use schema::sqlite::{DeviceRow, devices, person_key};
                let conn: &mut SqliteConnection = &mut *pool.get()?;
                // Two statements on one connection, not one transaction: SQLite has one
                // writer, and an immediate transaction would take the write lock even
                // for the many people without devices. A registration landing between
                // the two is harmless: the event is claimed for the devices read.
                let rows = devices::table
                    .filter(devices::person_uuid.eq(person_key(request.person)))
                    .select(DeviceRow::as_select())
                    .load(conn)?;
                let fresh = match &request.key {
                    Some(key) if !rows.is_empty() => {
                        diesel::sql_query(SQLITE_CLAIM_EVENT)
                            .bind::<sql_types::Text, _>(key)
                            .bind::<sql_types::TimestamptzSqlite, _>(request.at)
                            .bind::<sql_types::Text, _>(request.job.hyphenated().to_string())
                            .bind::<sql_types::Text, _>(&request.event)
                            .bind::<sql_types::TimestamptzSqlite, _>(request.deliver_by)
                            .bind::<sql_types::Text, _>(request.holder.hyphenated().to_string())
                            .execute(conn)?
                            > 0
                    }
                    _ => true,
                };
                let devices = rows
                    .into_iter()
                    .map(DeviceRow::into_device)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Claim::new(devices, fresh))
            }
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name()))]
    async fn finish_event(&self, key: &EventKey) -> Result<(), RegistrationError> {
        let key = key.as_str().to_owned();
        if let Some(batches) = &self.batches {
            return batches.finish(key).await;
        }
        // Only SQLite gets here: a Postgres store has its batches.
        self.run(move |pools| match pools {
            Pools::Postgres(pool) => on_postgres(pool, |conn| pg_batches::finish_alone(conn, &key)),
            Pools::Sqlite(pool) => {
                use schema::sqlite::seen_events;
                diesel::update(
                    seen_events::table
                        .filter(seen_events::key.eq(&key))
                        .filter(seen_events::event.is_not_null()),
                )
                .set((
                    seen_events::event.eq(None::<String>),
                    seen_events::holder.eq(None::<String>),
                ))
                .execute(&mut *pool.get()?)?;
                Ok(())
            }
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), limit))]
    async fn take_over_events(
        &self,
        holder: ReplicaId,
        at: DateTime<Utc>,
        alive_since: DateTime<Utc>,
        limit: usize,
    ) -> Result<TakeOver, RegistrationError> {
        let at = stored_time(at);
        let alive_since = stored_time(alive_since);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let holder = holder.uuid();
        self.run(move |pools| match pools {
            Pools::Postgres(pool) => on_postgres(pool, |conn| {
                conn.write_transaction(|conn| {
                    use sql_types::{BigInt, Timestamptz, Uuid as SqlUuid};
                    diesel::sql_query(PG_REPLICA_ALIVE)
                        .bind::<SqlUuid, _>(holder)
                        .bind::<Timestamptz, _>(at)
                        .execute(conn)?;
                    let expired = diesel::sql_query(PG_EXPIRE_ORPHANS)
                        .bind::<Timestamptz, _>(at)
                        .bind::<Timestamptz, _>(alive_since)
                        .execute(conn)?;
                    let rows: Vec<schema::pg::TakenRow> = if limit > 0 {
                        diesel::sql_query(PG_TAKE_OVER)
                            .bind::<SqlUuid, _>(holder)
                            .bind::<Timestamptz, _>(at)
                            .bind::<Timestamptz, _>(alive_since)
                            .bind::<BigInt, _>(limit)
                            .load(conn)?
                    } else {
                        Vec::new()
                    };
                    Ok(TakeOver {
                        events: rows
                            .into_iter()
                            .filter_map(schema::pg::TakenRow::into_stored)
                            .collect(),
                        expired: expired as u64,
                    })
                })
            }),
            Pools::Sqlite(pool) => {
                use sql_types::{BigInt, Text, TimestamptzSqlite};
                let conn: &mut SqliteConnection = &mut *pool.get()?;
                let holder = holder.hyphenated().to_string();
                conn.write_transaction(|conn| {
                    diesel::sql_query(SQLITE_REPLICA_ALIVE)
                        .bind::<Text, _>(&holder)
                        .bind::<TimestamptzSqlite, _>(at)
                        .execute(conn)?;
                    let expired = diesel::sql_query(SQLITE_EXPIRE_ORPHANS)
                        .bind::<TimestamptzSqlite, _>(at)
                        .bind::<TimestamptzSqlite, _>(alive_since)
                        .execute(conn)?;
                    let rows: Vec<schema::sqlite::TakenRow> = if limit > 0 {
                        diesel::sql_query(SQLITE_TAKE_OVER)
                            .bind::<Text, _>(&holder)
                            .bind::<TimestamptzSqlite, _>(at)
                            .bind::<TimestamptzSqlite, _>(alive_since)
                            .bind::<BigInt, _>(limit)
                            .load(conn)?
                    } else {
                        Vec::new()
                    };
                    Ok(TakeOver {
                        events: rows
                            .into_iter()
                            .filter_map(schema::sqlite::TakenRow::into_stored)
                            .collect(),
                        expired: expired as u64,
                    })
                })
            }
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), limit))]
    async fn prune_seen_events(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, RegistrationError> {
        let before = stored_time(before);
        let limit = i64::from(limit);
        // One bounded batch: a long backlog is pruned by calling again, so no statement
        // holds its locks, or grows the WAL, for long.
        self.run(move |pools| {
            let pruned = match pools {
                Pools::Postgres(pool) => on_postgres(pool, |conn| {
                    Ok(diesel::sql_query(PG_PRUNE_SEEN_EVENTS)
                        .bind::<sql_types::Timestamptz, _>(before)
                        .bind::<sql_types::BigInt, _>(limit)
                        .execute(conn)?)
                })?,
                Pools::Sqlite(pool) => diesel::sql_query(SQLITE_PRUNE_SEEN_EVENTS)
                    .bind::<sql_types::TimestamptzSqlite, _>(before)
                    .bind::<sql_types::BigInt, _>(limit)
                    .execute(&mut *pool.get()?)?,
            };
            Ok(pruned as u64)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name()))]
    async fn ping(&self) -> Result<(), RegistrationError> {
        self.run(move |pools| {
            on_backend!(pools, |conn| {
                diesel::sql_query("SELECT 1").execute(conn)?;
                Ok(())
            })
        })
        .await
    }
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
            StoreError::Corrupt("x").into_port_error(),
            RegistrationError::Unknown(_)
        ));
        assert!(matches!(
            StoreError::Query(DieselError::NotFound).into_port_error(),
            RegistrationError::Unknown(_)
        ));
    }
}
