//! The store: [`DieselRegistrationStore`] and its `RegistrationPort` implementation,
//! each statement written once for both backends where their schemas allow.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound as _, Utc};
use diesel::prelude::*;
use diesel::sql_types;
use diesel::upsert::excluded;
use tracing::{Instrument as _, Span};
use webex_push_domain::{
    ApnsEnvironment, Channel, Claim, Device, DeviceToken, EventClaim, EventKey, PersonId,
    Registration, RegistrationPort, ReplicaId, StoreError, TakeOver,
};

use super::backend::Backend;
use super::config::DatabaseConfig;
use super::database::{WriteTransaction as _, on_postgres, setup_connection};
use super::error::{DbError, StoreSetupError};
use super::migrations::{
    POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, apply_migrations, apply_postgres_migrations,
    revert_all, revert_last,
};
use super::pg_statements::{ClaimRequest, Outcome};
use super::schema;
use super::sql::{
    PG_EXPIRE_ORPHANS, PG_PRUNE_SEEN_EVENTS, PG_REPLICA_ALIVE, PG_TAKE_OVER, PG_TRIM_DEVICES,
    SQLITE_CLAIM_EVENT, SQLITE_EXPIRE_ORPHANS, SQLITE_PRUNE_SEEN_EVENTS, SQLITE_REPLICA_ALIVE,
    SQLITE_TAKE_OVER, SQLITE_TRIM_DEVICES, TrimmedRow,
};

/// The Registration port on Postgres or SQLite, chosen by the database URL.
///
/// One type for both backends: each statement is written once (the `on_backend!`
/// macro) and runs against whichever schema module the backend uses. On Postgres the
/// statements of the hot path (claiming an event, recording a push's outcome,
/// finishing an event) are batched across concurrent callers
/// (`pg_batches.rs`).
#[derive(Clone)]
pub struct DieselRegistrationStore {
    backend: Backend,
}

/// Runs `$body` on the blocking pool with `$conn` checked out of the backend's pool and
/// the backend's schema (`devices`, `seen_events`, `DeviceRow`, `person_key`) in scope.
macro_rules! on_backend {
    ($backend:expr, |$conn:ident| $body:expr) => {
        match $backend {
            Backend::Postgres { db, .. } => {
                #[allow(unused_imports)]
                use schema::pg::{DeviceRow, devices, person_key, seen_events};
                db.run(move |pool| {
                    on_postgres(pool, |$conn: &mut PgConnection| -> Result<_, DbError> {
                        $body
                    })
                })
                .await
            }
            Backend::Sqlite(db) => {
                #[allow(unused_imports)]
                use schema::sqlite::{DeviceRow, devices, person_key, seen_events};
                db.run(move |pool| {
                    let $conn: &mut SqliteConnection = &mut *pool.get()?;
                    $body
                })
                .await
            }
        }
    };
}

impl DieselRegistrationStore {
    /// Connects to the database `config` names, applies pending migrations when
    /// `config.run_migrations` is set, and builds the pool.
    ///
    /// Fails with the database's own error (unreachable host, bad password, unknown
    /// database, unwritable file) so start-up says what is wrong.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreSetupError> {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Backend::open(&config))
            .instrument(Span::current())
            .await
            .map_err(StoreSetupError::Task)?
            .map(|backend| Self { backend })
    }

    /// `"postgres"` or `"sqlite"`, for logs and metrics.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Connections `(in_use, idle)` right now, for metrics.
    pub fn pool_state(&self) -> (u32, u32) {
        self.backend.pool_state()
    }

    /// Applies every pending migration (`webex-push migrate`); returns the versions applied.
    pub async fn run_migrations(&self) -> Result<Vec<String>, StoreSetupError> {
        self.migrate(apply_postgres_migrations, |conn| {
            apply_migrations(conn, SQLITE_MIGRATIONS, "sqlite")
        })
        .await
    }

    /// Reverts every applied migration, newest first, leaving an empty schema (tests,
    /// and operators leaving webex-push); returns the versions reverted.
    pub async fn revert_all_migrations(&self) -> Result<Vec<String>, StoreSetupError> {
        self.migrate(
            |conn| revert_all(conn, POSTGRES_MIGRATIONS, "postgres"),
            |conn| revert_all(conn, SQLITE_MIGRATIONS, "sqlite"),
        )
        .await
    }

    /// Reverts the newest applied migration (tests, and operators rolling back one
    /// release); returns its version.
    pub async fn revert_last_migration(&self) -> Result<String, StoreSetupError> {
        self.migrate(
            |conn| revert_last(conn, POSTGRES_MIGRATIONS, "postgres"),
            |conn| revert_last(conn, SQLITE_MIGRATIONS, "sqlite"),
        )
        .await
    }

    /// Runs one migration step, `postgres` or `sqlite` as the backend is, on a
    /// connection of its pool.
    async fn migrate<T: Send + 'static>(
        &self,
        postgres: fn(&mut PgConnection) -> Result<T, StoreSetupError>,
        sqlite: fn(&mut SqliteConnection) -> Result<T, StoreSetupError>,
    ) -> Result<T, StoreSetupError> {
        match &self.backend {
            Backend::Postgres { db, .. } => {
                db.run_setup(move |pool| postgres(&mut setup_connection(pool, "postgres")?.conn))
                    .await
            }
            Backend::Sqlite(db) => {
                db.run_setup(move |pool| sqlite(&mut *setup_connection(pool, "sqlite")?))
                    .await
            }
        }
    }
}

/// Times are stored to the microsecond (Postgres' precision), so what is read back
/// equals what was written on both backends.
fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

#[async_trait]
impl RegistrationPort for DieselRegistrationStore {
    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), person = %registration.person))]
    async fn register(
        &self,
        registration: &Registration,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
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
        on_backend!(&self.backend, |conn| conn.write_transaction(|conn| {
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
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), person = %person, channel = %channel))]
    async fn trim_devices(
        &self,
        person: &PersonId,
        channel: Channel,
        keep: usize,
    ) -> Result<Vec<DeviceToken>, StoreError> {
        let person = person.uuid();
        let channel = channel.as_str();
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let removed: Vec<TrimmedRow> = match &self.backend {
            Backend::Postgres { db, .. } => {
                db.run(move |pool| {
                    on_postgres(pool, |conn| {
                        Ok(diesel::sql_query(PG_TRIM_DEVICES)
                            .bind::<sql_types::Uuid, _>(person)
                            .bind::<sql_types::Text, _>(channel)
                            .bind::<sql_types::BigInt, _>(keep)
                            .load::<TrimmedRow>(conn)?)
                    })
                })
                .await?
            }
            Backend::Sqlite(db) => {
                db.run(move |pool| {
                    Ok(diesel::sql_query(SQLITE_TRIM_DEVICES)
                        .bind::<sql_types::Text, _>(person.hyphenated().to_string())
                        .bind::<sql_types::Text, _>(channel)
                        .bind::<sql_types::BigInt, _>(keep)
                        .load::<TrimmedRow>(&mut *pool.get()?)?)
                })
                .await?
            }
        };
        removed
            .iter()
            .map(|row| {
                schema::stored_token(&row.token, &row.provider)
                    .map_err(|error| StoreError::Unknown(Box::new(error)))
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), token = %token))]
    async fn unregister(&self, token: &DeviceToken) -> Result<bool, StoreError> {
        let token = token.as_str().to_owned();
        on_backend!(&self.backend, |conn| {
            let removed =
                diesel::delete(devices::table.filter(devices::token.eq(&token))).execute(conn)?;
            Ok(removed > 0)
        })
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), person = %person, channel = %channel))]
    async fn devices_of(
        &self,
        person: &PersonId,
        channel: Channel,
    ) -> Result<Vec<Device>, StoreError> {
        let person_uuid = person.uuid();
        let channel = channel.as_str();
        on_backend!(&self.backend, |conn| {
            devices::table
                .filter(devices::person_uuid.eq(person_key(person_uuid)))
                .filter(devices::channel.eq(channel))
                .select(DeviceRow::as_select())
                .load(conn)?
                .into_iter()
                .map(DeviceRow::into_device)
                .collect()
        })
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), person = %person))]
    async fn all_devices_of(&self, person: &PersonId) -> Result<Vec<Device>, StoreError> {
        let person_uuid = person.uuid();
        on_backend!(&self.backend, |conn| {
            devices::table
                .filter(devices::person_uuid.eq(person_key(person_uuid)))
                .order((devices::channel, devices::registered_at))
                .select(DeviceRow::as_select())
                .load(conn)?
                .into_iter()
                .map(DeviceRow::into_device)
                .collect()
        })
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), token = %token))]
    async fn device(&self, token: &DeviceToken) -> Result<Option<Device>, StoreError> {
        let token = token.as_str().to_owned();
        on_backend!(&self.backend, |conn| {
            devices::table
                .filter(devices::token.eq(&token))
                .select(DeviceRow::as_select())
                .first(conn)
                .optional()?
                .map(DeviceRow::into_device)
                .transpose()
        })
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), token = %token))]
    async fn remove_unless_registered_since(
        &self,
        token: &DeviceToken,
        since: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let token = token.as_str().to_owned();
        // Rounded down like stored times: a registration in the same microsecond as
        // `since` counts as "at or after" and survives.
        let since = stored_time(since);
        on_backend!(&self.backend, |conn| {
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
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), token = %token, outcome = outcome))]
    async fn record_outcome(
        &self,
        token: &DeviceToken,
        outcome: &str,
        environment: Option<ApnsEnvironment>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let token = token.as_str().to_owned();
        let outcome = outcome.to_owned();
        let environment = environment.map(ApnsEnvironment::as_str);
        let at = stored_time(at);
        let db = match &self.backend {
            Backend::Postgres { batches, .. } => {
                return batches
                    .record_outcome(Outcome {
                        token,
                        outcome,
                        environment,
                        at,
                    })
                    .await;
            }
            Backend::Sqlite(db) => db,
        };
        db.run(move |pool| {
            use schema::sqlite::devices;
            let conn: &mut SqliteConnection = &mut *pool.get()?;
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
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), person = %claim.person))]
    async fn claim(&self, claim: &EventClaim) -> Result<Claim, StoreError> {
        let request = ClaimRequest {
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
        let db = match &self.backend {
            Backend::Postgres { batches, .. } => return batches.claim(request).await,
            Backend::Sqlite(db) => db,
        };
        db.run(move |pool| {
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
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name()))]
    async fn finish_event(&self, key: &EventKey) -> Result<(), StoreError> {
        let key = key.as_str().to_owned();
        let db = match &self.backend {
            Backend::Postgres { batches, .. } => return batches.finish(key).await,
            Backend::Sqlite(db) => db,
        };
        db.run(move |pool| {
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
    ) -> Result<TakeOver, StoreError> {
        let at = stored_time(at);
        let alive_since = stored_time(alive_since);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let holder = holder.uuid();
        match &self.backend {
            Backend::Postgres { db, .. } => {
                db.run(move |pool| {
                    on_postgres(pool, |conn| {
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
                    })
                })
                .await
            }
            Backend::Sqlite(db) => {
                db.run(move |pool| {
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
                })
                .await
            }
        }
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name(), limit))]
    async fn prune_seen_events(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64, StoreError> {
        let before = stored_time(before);
        let limit = i64::from(limit);
        // One bounded batch: a long backlog is pruned by calling again, so no statement
        // holds its locks, or grows the WAL, for long.
        let pruned = match &self.backend {
            Backend::Postgres { db, .. } => {
                db.run(move |pool| {
                    on_postgres(pool, |conn| {
                        Ok(diesel::sql_query(PG_PRUNE_SEEN_EVENTS)
                            .bind::<sql_types::Timestamptz, _>(before)
                            .bind::<sql_types::BigInt, _>(limit)
                            .execute(conn)?)
                    })
                })
                .await?
            }
            Backend::Sqlite(db) => {
                db.run(move |pool| {
                    Ok(diesel::sql_query(SQLITE_PRUNE_SEEN_EVENTS)
                        .bind::<sql_types::TimestamptzSqlite, _>(before)
                        .bind::<sql_types::BigInt, _>(limit)
                        .execute(&mut *pool.get()?)?)
                })
                .await?
            }
        };
        Ok(pruned as u64)
    }

    #[tracing::instrument(skip_all, fields(backend = self.backend_name()))]
    async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(&self.backend, |conn| {
            diesel::sql_query("SELECT 1").execute(conn)?;
            Ok(())
        })
    }
}
