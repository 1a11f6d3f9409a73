//! The two Postgres statements every webhook and every push runs, batched across
//! concurrent callers ([`Batcher`]): claiming an event (de-duplication and the device
//! lookup) and recording a push's outcome.
//!
//! Each batch is one statement over arrays (`unnest`), so it costs one blocking hop,
//! one checkout and one round trip however many events it carries, and answers each
//! caller exactly what the single-event statement would. A batch the database refuses
//! for a reason other than being unreachable is run again one item at a time, so one
//! bad item cannot fail the others.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{Array, HasSqlType, Text, Timestamptz, Untyped, Uuid as SqlUuid};
use futures::future::join_all;
use uuid::Uuid;
use webex_push_domain::{BoxError, Claim, RegistrationError};

use super::batch::{Batch, Batcher};
use super::schema::pg::ClaimRow;
use super::{Database, Pools, StoreError, on_postgres};

/// Batches run side by side on their own connections: a second one starts while the
/// first is in the database, so a lone request never waits for another's round trip.
const CLAIM_SLOTS: usize = 2;
const CLAIMS_PER_BATCH: usize = 256;
/// Outcomes are written one batch at a time: two batches updating overlapping tokens
/// would only wait for each other.
const OUTCOME_SLOTS: usize = 1;
const OUTCOMES_PER_BATCH: usize = 512;

/// [`RegistrationPort::claim_event_devices`](webex_push_domain::RegistrationPort::claim_event_devices)
/// for many events in one statement, over four arrays: each event's key (`''` for an
/// event without one: it is never recorded and always fresh), when it was seen, its
/// person and its channel. A key is inserted only when its person has devices on the
/// channel; every device row says which event it answers (`n`, from 1) and whether this
/// statement recorded that event's key (`fresh`). One snapshot for both parts; the
/// unique key decides between replicas racing on one event. The keys of one batch must
/// differ. The insert commits without waiting for the WAL flush (see `async_commit!`).
///
/// The text around the four array parameters, which [`Statement`] puts in place.
const CLAIM_EVENTS: [&str; 5] = [
    "WITH input AS (SELECT * FROM unnest(",
    "::text[], ",
    "::timestamptz[], ",
    "::uuid[], ",
    concat!(
        "::text[]) WITH ORDINALITY AS input (key, seen_at, person_uuid, channel, n)), ",
        "claimed AS (INSERT INTO seen_events (key, seen_at) SELECT input.key, input.seen_at",
        " FROM input, ",
        async_commit!(),
        " WHERE input.key <> '' AND EXISTS (SELECT 1 FROM devices",
        " WHERE devices.person_uuid = input.person_uuid AND devices.channel = input.channel)",
        " ON CONFLICT (key) DO NOTHING RETURNING key) ",
        "SELECT input.n, devices.token, devices.channel, devices.person_uuid, devices.person_id,",
        " devices.environment, devices.bundle_id, devices.registered_at, devices.last_outcome,",
        " devices.last_outcome_at,",
        " (input.key = '' OR input.key IN (SELECT key FROM claimed)) AS fresh",
        " FROM input JOIN devices",
        " ON devices.person_uuid = input.person_uuid AND devices.channel = input.channel"
    ),
];

/// [`RegistrationPort::record_outcome`](webex_push_domain::RegistrationPort::record_outcome)
/// for many tokens in one statement, over four arrays: tokens (distinct), outcomes,
/// times, and environments to pin (`''` keeps the stored one). The rows are locked in
/// token order first, as a registration locks its two, so the two cannot deadlock.
/// Committed without waiting for the WAL flush.
///
/// The text around the four array parameters.
const RECORD_OUTCOMES: [&str; 5] = [
    "WITH outcome AS (SELECT * FROM unnest(",
    "::text[], ",
    "::text[], ",
    "::timestamptz[], ",
    concat!(
        "::text[]) AS outcome (token, outcome, at, environment)), ",
        "locked AS (SELECT devices.token FROM devices",
        " WHERE devices.token IN (SELECT token FROM outcome) ORDER BY devices.token FOR UPDATE) ",
        "UPDATE devices SET last_outcome = outcome.outcome, last_outcome_at = outcome.at,",
        " updated_at = outcome.at, environment = COALESCE(NULLIF(outcome.environment, ''),",
        " devices.environment) FROM outcome, locked, ",
        async_commit!(),
        " WHERE devices.token = outcome.token AND locked.token = outcome.token"
    ),
];

/// A fixed statement over four array parameters, `A` to `D`, of SQL types `SA` to `SD`.
///
/// Unlike `diesel::sql_query`, which Diesel never prepares for reuse, this one is
/// prepared once per connection (its text is fixed, `M` names it in Diesel's statement
/// cache) and then only bound and executed: Postgres parses and plans it once, not on
/// every batch.
struct Statement<'a, M, SA, SB, SC, SD, A: ?Sized, B: ?Sized, C: ?Sized, D: ?Sized> {
    text: &'static [&'static str; 5],
    binds: (&'a A, &'a B, &'a C, &'a D),
    types: std::marker::PhantomData<(M, SA, SB, SC, SD)>,
}

impl<M, SA, SB, SC, SD, A, B, C, D> QueryFragment<Pg>
    for Statement<'_, M, SA, SB, SC, SD, A, B, C, D>
where
    Pg: HasSqlType<SA> + HasSqlType<SB> + HasSqlType<SC> + HasSqlType<SD>,
    A: ToSql<SA, Pg> + ?Sized,
    B: ToSql<SB, Pg> + ?Sized,
    C: ToSql<SC, Pg> + ?Sized,
    D: ToSql<SD, Pg> + ?Sized,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let [first, second, third, fourth, rest] = self.text;
        out.push_sql(first);
        out.push_bind_param::<SA, _>(self.binds.0)?;
        out.push_sql(second);
        out.push_bind_param::<SB, _>(self.binds.1)?;
        out.push_sql(third);
        out.push_bind_param::<SC, _>(self.binds.2)?;
        out.push_sql(fourth);
        out.push_bind_param::<SD, _>(self.binds.3)?;
        out.push_sql(rest);
        Ok(())
    }
}

impl<M: 'static, SA, SB, SC, SD, A: ?Sized, B: ?Sized, C: ?Sized, D: ?Sized> QueryId
    for Statement<'_, M, SA, SB, SC, SD, A, B, C, D>
{
    type QueryId = M;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<M, SA, SB, SC, SD, A: ?Sized, B: ?Sized, C: ?Sized, D: ?Sized> Query
    for Statement<'_, M, SA, SB, SC, SD, A, B, C, D>
{
    type SqlType = Untyped;
}

impl<M, SA, SB, SC, SD, A: ?Sized, B: ?Sized, C: ?Sized, D: ?Sized> RunQueryDsl<PgConnection>
    for Statement<'_, M, SA, SB, SC, SD, A, B, C, D>
{
}

/// The names of the two statements in Diesel's statement cache.
struct ClaimEventsStatement;
struct RecordOutcomesStatement;

/// [`CLAIM_EVENTS`] with its parameters: keys, times, persons, channels.
type ClaimEvents<'a> = Statement<
    'a,
    ClaimEventsStatement,
    Array<Text>,
    Array<Timestamptz>,
    Array<SqlUuid>,
    Array<Text>,
    [&'a str],
    [DateTime<Utc>],
    [Uuid],
    [&'a str],
>;

/// [`RECORD_OUTCOMES`] with its parameters: tokens, outcomes, times, environments.
type RecordOutcomes<'a> = Statement<
    'a,
    RecordOutcomesStatement,
    Array<Text>,
    Array<Text>,
    Array<Timestamptz>,
    Array<Text>,
    [&'a str],
    [&'a str],
    [DateTime<Utc>],
    [&'a str],
>;

/// One event to claim.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRequest {
    pub(crate) key: Option<String>,
    pub(crate) at: DateTime<Utc>,
    pub(crate) person: Uuid,
    pub(crate) channel: &'static str,
}

/// One push outcome to record.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) token: String,
    pub(crate) outcome: String,
    pub(crate) environment: Option<&'static str>,
    pub(crate) at: DateTime<Utc>,
}

/// The batchers of one Postgres store.
pub(crate) struct PgBatches {
    claims: Batcher<Claims>,
    outcomes: Batcher<Outcomes>,
}

impl PgBatches {
    pub(crate) fn new(db: &Database) -> Self {
        Self {
            claims: Batcher::new(
                Claims(db.clone()),
                CLAIM_SLOTS,
                CLAIMS_PER_BATCH,
                "claim_event_devices",
            ),
            outcomes: Batcher::new(
                Outcomes(db.clone()),
                OUTCOME_SLOTS,
                OUTCOMES_PER_BATCH,
                "record_outcome",
            ),
        }
    }

    pub(crate) async fn claim(&self, request: ClaimRequest) -> Result<Claim, RegistrationError> {
        self.claims.submit(request).await
    }

    pub(crate) async fn record_outcome(&self, outcome: Outcome) -> Result<(), RegistrationError> {
        self.outcomes.submit(outcome).await
    }
}

/// Claims `requests` in one statement; the outer error is the statement's, an inner
/// one a stored row that does not parse. A key that appears twice is claimed once: the
/// first request gets what the database says, the later ones `Duplicate`.
fn claim_statement(
    conn: &mut PgConnection,
    requests: &[ClaimRequest],
) -> Result<Vec<Result<Claim, StoreError>>, StoreError> {
    // Which request first carries each key: only those go to the database.
    let mut first_with_key: HashMap<&str, usize> = HashMap::new();
    let mut sent_as: Vec<usize> = Vec::with_capacity(requests.len());
    let mut sent: Vec<usize> = Vec::with_capacity(requests.len());
    for (index, request) in requests.iter().enumerate() {
        let position = match request.key.as_deref() {
            Some(key) => *first_with_key.entry(key).or_insert_with(|| {
                sent.push(index);
                sent.len() - 1
            }),
            None => {
                sent.push(index);
                sent.len() - 1
            }
        };
        sent_as.push(position);
    }
    let keys: Vec<&str> = sent
        .iter()
        .map(|&index| requests[index].key.as_deref().unwrap_or(""))
        .collect();
    let seen_at: Vec<DateTime<Utc>> = sent.iter().map(|&index| requests[index].at).collect();
    let persons: Vec<Uuid> = sent.iter().map(|&index| requests[index].person).collect();
    let channels: Vec<&str> = sent.iter().map(|&index| requests[index].channel).collect();
    let statement = ClaimEvents {
        text: &CLAIM_EVENTS,
        binds: (
            keys.as_slice(),
            seen_at.as_slice(),
            persons.as_slice(),
            channels.as_slice(),
        ),
        types: std::marker::PhantomData,
    };
    let rows: Vec<ClaimRow> = statement.load(conn)?;

    // Per event sent: its devices (or the first row that did not parse) and whether
    // its key was recorded now. An event without rows has no devices: fresh, nothing
    // recorded.
    let mut answers: Vec<(Result<Vec<_>, StoreError>, bool)> =
        sent.iter().map(|_| (Ok(Vec::new()), true)).collect();
    for row in rows {
        let answer = usize::try_from(row.n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|position| answers.get_mut(position))
            .ok_or(StoreError::Corrupt("claim row for an event not asked"))?;
        answer.1 = row.fresh;
        if let Ok(devices) = &mut answer.0 {
            match row.device.into_device() {
                Ok(device) => devices.push(device),
                Err(error) => answer.0 = Err(error),
            }
        }
    }
    Ok(sent_as
        .iter()
        .enumerate()
        .map(|(index, &position)| {
            let (devices, fresh) = &answers[position];
            let devices = match devices {
                Ok(devices) => devices.clone(),
                Err(_) => return Err(StoreError::Corrupt("a stored device row is invalid")),
            };
            // A repeat of a key earlier in the batch was not recorded by this request.
            let fresh = *fresh && sent[position] == index;
            Ok(if fresh || devices.is_empty() {
                Claim::Devices(devices)
            } else {
                Claim::Duplicate(devices)
            })
        })
        .collect())
}

/// One claim in a statement of its own.
pub(crate) fn claim_alone(
    conn: &mut PgConnection,
    request: &ClaimRequest,
) -> Result<Claim, StoreError> {
    claim_statement(conn, std::slice::from_ref(request))?
        .pop()
        .unwrap_or(Err(StoreError::Corrupt("a claim without an answer")))
}

struct Claims(Database);

impl Batch for Claims {
    type Item = ClaimRequest;
    type Output = Claim;

    async fn run(&self, requests: Vec<ClaimRequest>) -> Vec<Result<Claim, RegistrationError>> {
        let requests = Arc::new(requests);
        let statement = {
            let requests = Arc::clone(&requests);
            self.0
                .run(move |pools| {
                    on_postgres(postgres(pools)?, |conn| claim_statement(conn, &requests))
                })
                .await
        };
        match statement {
            Ok(claims) => claims
                .into_iter()
                .map(|claim| claim.map_err(StoreError::into_port_error))
                .collect(),
            Err(error) if requests.len() > 1 && is_unknown(&error) => {
                tracing::warn!(
                    error = %error,
                    claims = requests.len(),
                    "a batch of claims failed; claiming each alone"
                );
                join_all(requests.iter().map(|request| {
                    let request = request.clone();
                    self.0.run(move |pools| {
                        on_postgres(postgres(pools)?, |conn| claim_alone(conn, &request))
                    })
                }))
                .await
            }
            Err(error) => share(error, requests.len()),
        }
    }
}

struct Outcomes(Database);

impl Batch for Outcomes {
    type Item = Outcome;
    type Output = ();

    async fn run(&self, outcomes: Vec<Outcome>) -> Vec<Result<(), RegistrationError>> {
        let count = outcomes.len();
        // The last outcome of a token is the one to keep (the order they came in).
        let mut latest: HashMap<&str, &Outcome> = HashMap::with_capacity(count);
        for outcome in &outcomes {
            latest.insert(&outcome.token, outcome);
        }
        let mut distinct: Vec<Outcome> = latest.into_values().cloned().collect();
        distinct.sort_by(|a, b| a.token.cmp(&b.token));
        let distinct = Arc::new(distinct);
        let statement = {
            let distinct = Arc::clone(&distinct);
            self.0
                .run(move |pools| {
                    on_postgres(postgres(pools)?, |conn| record_statement(conn, &distinct))
                })
                .await
        };
        match statement {
            Ok(()) => outcomes.iter().map(|_| Ok(())).collect(),
            Err(error) if distinct.len() > 1 && is_unknown(&error) => {
                tracing::warn!(
                    error = %error,
                    outcomes = distinct.len(),
                    "a batch of outcomes failed; recording each alone"
                );
                let alone: HashMap<&str, Result<(), RegistrationError>> =
                    join_all(distinct.iter().map(|outcome| async {
                        let one = outcome.clone();
                        let result = self
                            .0
                            .run(move |pools| {
                                on_postgres(postgres(pools)?, |conn| {
                                    record_statement(conn, std::slice::from_ref(&one))
                                })
                            })
                            .await;
                        (outcome.token.as_str(), result)
                    }))
                    .await
                    .into_iter()
                    .collect();
                outcomes
                    .iter()
                    .map(|outcome| match alone.get(outcome.token.as_str()) {
                        Some(Ok(())) => Ok(()),
                        _ => Err(RegistrationError::Unknown(
                            "the outcome could not be recorded".into(),
                        )),
                    })
                    .collect()
            }
            Err(error) => share(error, count),
        }
    }
}

fn record_statement(conn: &mut PgConnection, outcomes: &[Outcome]) -> Result<(), StoreError> {
    let tokens: Vec<&str> = outcomes.iter().map(|o| o.token.as_str()).collect();
    let results: Vec<&str> = outcomes.iter().map(|o| o.outcome.as_str()).collect();
    let at: Vec<DateTime<Utc>> = outcomes.iter().map(|o| o.at).collect();
    let environments: Vec<&str> = outcomes
        .iter()
        .map(|o| o.environment.unwrap_or(""))
        .collect();
    // A token removed meanwhile updates nothing, which is what the port asks.
    let statement = RecordOutcomes {
        text: &RECORD_OUTCOMES,
        binds: (
            tokens.as_slice(),
            results.as_slice(),
            at.as_slice(),
            environments.as_slice(),
        ),
        types: std::marker::PhantomData,
    };
    statement.execute(conn)?;
    Ok(())
}

/// The Postgres pool (batches exist only on Postgres stores).
fn postgres(pools: &Pools) -> Result<&super::PgPool, StoreError> {
    match pools {
        Pools::Postgres(pool) => Ok(pool),
        Pools::Sqlite(_) => Err(StoreError::Corrupt("a Postgres batch on a SQLite store")),
    }
}

fn is_unknown(error: &RegistrationError) -> bool {
    matches!(error, RegistrationError::Unknown(_))
}

/// The one failure of a batch, told to each of its `count` callers.
fn share<T>(error: RegistrationError, count: usize) -> Vec<Result<T, RegistrationError>> {
    let (unavailable, source) = match error {
        RegistrationError::Unavailable(source) => (true, source),
        RegistrationError::Unknown(source) => (false, source),
    };
    let source: Arc<dyn std::error::Error + Send + Sync> = Arc::from(source);
    (0..count)
        .map(|_| {
            let shared: BoxError = Box::new(SharedError(Arc::clone(&source)));
            Err(if unavailable {
                RegistrationError::Unavailable(shared)
            } else {
                RegistrationError::Unknown(shared)
            })
        })
        .collect()
}

/// One error reported to several callers.
#[derive(Debug)]
struct SharedError(Arc<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
