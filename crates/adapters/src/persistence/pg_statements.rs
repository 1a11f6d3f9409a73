//! The one Postgres statement every webhook and every push runs, over arrays (`unnest`)
//! so that one statement serves many events and answers each caller exactly what the
//! statement for its write alone would: claiming events (de-duplication, the device
//! lookup and the record another replica would relay it from), recording push
//! outcomes, and finishing relayed events. [`pg_batches`](super::pg_batches) gathers
//! the callers.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, Text, Timestamptz, Untyped, Uuid as SqlUuid};
use uuid::Uuid;
use webex_push_domain::Claim;

use super::error::StoreError;
use super::schema::pg::ClaimRow;

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

/// The hot path in one statement, over twelve arrays, so that the writes that follow a
/// push ride along with the next claim instead of costing a statement, a blocking hop
/// and a Postgres wake-up of their own. Three parts, each empty when its arrays are:
///
/// - [`RegistrationPort::claim`](webex_push_domain::RegistrationPort::claim) for many
///   events, over seven arrays: each event's key (`''` for an event without one: it is
///   never recorded and always fresh), when it was seen, its person, its job, the event
///   as stored, its deadline and its holder. A key is recorded only when its person has
///   devices (on either channel: which of them the event goes to is the domain's choice,
///   by the app that registered each); every device row says which event it answers
///   (`n`, from 1) and whether that event's key is this job's (`fresh`): recorded now,
///   or by the same job before. The upsert touches only a row of the same job and is
///   checked against the latest committed row, so a retry whose first try is still
///   committing waits for it, then finds it its own. One snapshot for the device part;
///   the unique key decides between replicas racing on one event. The keys of one
///   batch must differ.
/// - [`RegistrationPort::record_outcome`](webex_push_domain::RegistrationPort::record_outcome)
///   for many tokens, over four arrays: tokens (distinct), outcomes, times, and
///   environments to pin (`''` keeps the stored one). The rows are locked in token order
///   first, as a registration locks its two, so the two cannot deadlock. The device rows
///   the claims answer are read from the statement's snapshot, before these updates.
/// - [`RegistrationPort::finish_event`](webex_push_domain::RegistrationPort::finish_event)
///   for many keys: the records of relayed events are dropped, so no replica takes them
///   over.
///
/// Every part commits without waiting for the WAL flush (see `async_commit!`): a replica
/// crash loses nothing, a Postgres crash may lose the last fraction of a second of
/// them. Postgres runs every data-modifying part whether or not the final `SELECT`
/// reads it.
///
/// The text around the twelve array parameters, which [`HotWrites`] puts in place.
const HOT_WRITES: [&str; 13] = [
    "WITH input AS (SELECT * FROM unnest(",
    "::text[], ",
    "::timestamptz[], ",
    "::uuid[], ",
    "::uuid[], ",
    "::text[], ",
    "::timestamptz[], ",
    concat!(
        "::uuid[]) WITH ORDINALITY",
        " AS input (key, seen_at, person_uuid, job, event, deliver_by, holder, n)), ",
        "claimed AS (INSERT INTO seen_events (key, seen_at, job, event, deliver_by, holder)",
        " SELECT input.key, input.seen_at, input.job, input.event, input.deliver_by,",
        " input.holder FROM input, ",
        async_commit!(),
        " WHERE input.key <> '' AND EXISTS (SELECT 1 FROM devices",
        " WHERE devices.person_uuid = input.person_uuid)",
        " ON CONFLICT (key) DO UPDATE SET seen_at = seen_events.seen_at",
        " WHERE seen_events.job = excluded.job RETURNING key), ",
        "outcome AS (SELECT * FROM unnest(",
    ),
    "::text[], ",
    "::text[], ",
    "::timestamptz[], ",
    concat!(
        "::text[]) AS outcome (token, outcome, at, environment)), ",
        "locked AS (SELECT devices.token FROM devices",
        " WHERE devices.token IN (SELECT token FROM outcome) ORDER BY devices.token FOR UPDATE), ",
        "recorded AS (UPDATE devices SET last_outcome = outcome.outcome, last_outcome_at = outcome.at,",
        " updated_at = outcome.at, environment = COALESCE(NULLIF(outcome.environment, ''),",
        " devices.environment) FROM outcome, locked, ",
        async_commit!(),
        " WHERE devices.token = outcome.token AND locked.token = outcome.token RETURNING 1), ",
        "finished AS (UPDATE seen_events SET event = NULL, holder = NULL FROM ",
        async_commit!(),
        " WHERE seen_events.event IS NOT NULL AND seen_events.key = ANY(",
    ),
    concat!(
        "::text[]) RETURNING 1) ",
        "SELECT input.n, devices.token, devices.channel, devices.person_uuid, devices.person_id,",
        " devices.environment, devices.bundle_id, devices.flavour, devices.provider, devices.registered_at,",
        " devices.last_outcome, devices.last_outcome_at,",
        " (input.key = '' OR input.key IN (SELECT key FROM claimed)) AS fresh",
        " FROM input JOIN devices ON devices.person_uuid = input.person_uuid"
    ),
];

/// [`HOT_WRITES`] with its parameters.
///
/// Unlike `diesel::sql_query`, which Diesel never prepares for reuse, this statement is
/// prepared once per connection (its text is fixed and its type names it in Diesel's
/// statement cache) and then only bound and executed: Postgres parses and plans it
/// once, not on every batch.
struct HotWrites<'a> {
    keys: &'a [&'a str],
    seen_at: &'a [DateTime<Utc>],
    persons: &'a [Uuid],
    jobs: &'a [Uuid],
    events: &'a [&'a str],
    deliver_by: &'a [DateTime<Utc>],
    holders: &'a [Uuid],
    tokens: &'a [&'a str],
    outcomes: &'a [&'a str],
    outcome_at: &'a [DateTime<Utc>],
    environments: &'a [&'a str],
    finished: &'a [&'a str],
}

impl QueryFragment<Pg> for HotWrites<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let [t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12] = HOT_WRITES;
        out.push_sql(t0);
        out.push_bind_param::<Array<Text>, _>(self.keys)?;
        out.push_sql(t1);
        out.push_bind_param::<Array<Timestamptz>, _>(self.seen_at)?;
        out.push_sql(t2);
        out.push_bind_param::<Array<SqlUuid>, _>(self.persons)?;
        out.push_sql(t3);
        out.push_bind_param::<Array<SqlUuid>, _>(self.jobs)?;
        out.push_sql(t4);
        out.push_bind_param::<Array<Text>, _>(self.events)?;
        out.push_sql(t5);
        out.push_bind_param::<Array<Timestamptz>, _>(self.deliver_by)?;
        out.push_sql(t6);
        out.push_bind_param::<Array<SqlUuid>, _>(self.holders)?;
        out.push_sql(t7);
        out.push_bind_param::<Array<Text>, _>(self.tokens)?;
        out.push_sql(t8);
        out.push_bind_param::<Array<Text>, _>(self.outcomes)?;
        out.push_sql(t9);
        out.push_bind_param::<Array<Timestamptz>, _>(self.outcome_at)?;
        out.push_sql(t10);
        out.push_bind_param::<Array<Text>, _>(self.environments)?;
        out.push_sql(t11);
        out.push_bind_param::<Array<Text>, _>(self.finished)?;
        out.push_sql(t12);
        Ok(())
    }
}

impl QueryId for HotWrites<'_> {
    type QueryId = HotWrites<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for HotWrites<'_> {
    type SqlType = Untyped;
}

impl RunQueryDsl<PgConnection> for HotWrites<'_> {}

/// One event to claim.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRequest {
    pub(crate) key: Option<String>,
    pub(crate) at: DateTime<Utc>,
    pub(crate) person: Uuid,
    pub(crate) job: Uuid,
    pub(crate) event: String,
    pub(crate) deliver_by: DateTime<Utc>,
    pub(crate) holder: Uuid,
}

/// One push outcome to record.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) token: String,
    pub(crate) outcome: String,
    pub(crate) environment: Option<&'static str>,
    pub(crate) at: DateTime<Utc>,
}

/// One write of the hot path.
#[derive(Debug, Clone)]
pub(crate) enum HotWrite {
    Claim(ClaimRequest),
    Outcome(Outcome),
    /// The key of a relayed event.
    Finish(String),
}

/// Runs `writes` in one statement ([`HOT_WRITES`]); one answer per write, in their
/// order: the claim's for a claim, `None` for the others. The outer error is the
/// statement's, an inner one a stored row that does not parse.
///
/// A key claimed twice is claimed once: the first request gets what the database says,
/// the later ones `Duplicate` (unless they are the same job's). Of several outcomes for
/// one token the last is recorded. None of the outcomes and finishes can fail alone: a
/// token removed meanwhile, or a key unknown or already finished, updates nothing,
/// which is what the port asks.
pub(crate) fn write_statement(
    conn: &mut PgConnection,
    writes: &[HotWrite],
) -> Result<Vec<Result<Option<Claim>, StoreError>>, StoreError> {
    let mut requests: Vec<&ClaimRequest> = Vec::new();
    let mut latest: HashMap<&str, &Outcome> = HashMap::new();
    let mut finished: Vec<&str> = Vec::new();
    for write in writes {
        match write {
            HotWrite::Claim(request) => requests.push(request),
            HotWrite::Outcome(outcome) => {
                latest.insert(&outcome.token, outcome);
            }
            HotWrite::Finish(key) => finished.push(key),
        }
    }
    let mut outcomes: Vec<&Outcome> = latest.into_values().collect();
    outcomes.sort_by(|a, b| a.token.cmp(&b.token));

    // Which claim first carries each key: only those go to the database.
    let mut first_with_key: HashMap<&str, usize> = HashMap::new();
    let mut sent_as: Vec<usize> = Vec::with_capacity(requests.len());
    let mut sent: Vec<&ClaimRequest> = Vec::with_capacity(requests.len());
    for &request in &requests {
        let position = match request.key.as_deref() {
            Some(key) => *first_with_key.entry(key).or_insert_with(|| {
                sent.push(request);
                sent.len() - 1
            }),
            None => {
                sent.push(request);
                sent.len() - 1
            }
        };
        sent_as.push(position);
    }
    let keys: Vec<&str> = sent
        .iter()
        .map(|r| r.key.as_deref().unwrap_or(""))
        .collect();
    let seen_at: Vec<DateTime<Utc>> = sent.iter().map(|r| r.at).collect();
    let persons: Vec<Uuid> = sent.iter().map(|r| r.person).collect();
    let jobs: Vec<Uuid> = sent.iter().map(|r| r.job).collect();
    let events: Vec<&str> = sent.iter().map(|r| r.event.as_str()).collect();
    let deliver_by: Vec<DateTime<Utc>> = sent.iter().map(|r| r.deliver_by).collect();
    let holders: Vec<Uuid> = sent.iter().map(|r| r.holder).collect();
    let tokens: Vec<&str> = outcomes.iter().map(|o| o.token.as_str()).collect();
    let results: Vec<&str> = outcomes.iter().map(|o| o.outcome.as_str()).collect();
    let outcome_at: Vec<DateTime<Utc>> = outcomes.iter().map(|o| o.at).collect();
    let environments: Vec<&str> = outcomes
        .iter()
        .map(|o| o.environment.unwrap_or(""))
        .collect();
    let statement = HotWrites {
        keys: &keys,
        seen_at: &seen_at,
        persons: &persons,
        jobs: &jobs,
        events: &events,
        deliver_by: &deliver_by,
        holders: &holders,
        tokens: &tokens,
        outcomes: &results,
        outcome_at: &outcome_at,
        environments: &environments,
        finished: &finished,
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
    let mut claims = requests.iter().zip(sent_as).map(|(request, position)| {
        let (devices, fresh) = &answers[position];
        let devices = match devices {
            Ok(devices) => devices.clone(),
            Err(_) => return Err(StoreError::Corrupt("a stored device row is invalid")),
        };
        // A repeat of a key earlier in the batch was not recorded by this request,
        // unless it is the same job's.
        let fresh = *fresh && sent[position].job == request.job;
        Ok(Some(Claim::new(devices, fresh)))
    });
    Ok(writes
        .iter()
        .map(|write| match write {
            HotWrite::Claim(_) => claims
                .next()
                .unwrap_or(Err(StoreError::Corrupt("a claim without an answer"))),
            HotWrite::Outcome(_) | HotWrite::Finish(_) => Ok(None),
        })
        .collect())
}
