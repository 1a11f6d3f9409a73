//! The Postgres statements every webhook and every push runs, each over arrays
//! (`unnest`) so that one statement serves many events and answers each caller exactly
//! what the statement for its event alone would: claiming events (de-duplication, the
//! device lookup and the record another replica would relay it from), recording push
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

use super::error::DbError;
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

/// [`RegistrationPort::claim`](webex_push_domain::RegistrationPort::claim) for many
/// events in one statement, over seven arrays: each event's key (`''` for an event
/// without one: it is never recorded and always fresh), when it was seen, its person,
/// its job, the event as stored, its deadline and its holder. A key is recorded only
/// when its person has devices (on either channel: which of them the event goes to is
/// the domain's choice, by the app that registered each); every device row says
/// which event it answers (`n`, from 1) and whether that event's key is this job's
/// (`fresh`): recorded now, or by the same job before. The upsert touches only a row
/// of the same job and is checked against the latest committed row, so a retry whose
/// first try is still committing waits for it, then finds it its own. One snapshot for
/// the device part; the unique key decides between replicas racing on one event. The
/// keys of one batch must differ. Committed without waiting for the WAL flush (see
/// `async_commit!`): a replica crash loses nothing, a Postgres crash may lose the last
/// fraction of a second of records.
///
/// The text around the seven array parameters, which [`ClaimEvents`] puts in place.
const CLAIM_EVENTS: [&str; 8] = [
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
        " WHERE seen_events.job = excluded.job RETURNING key) ",
        "SELECT input.n, devices.token, devices.channel, devices.person_uuid, devices.person_id,",
        " devices.environment, devices.bundle_id, devices.flavour, devices.provider, devices.registered_at,",
        " devices.last_outcome, devices.last_outcome_at,",
        " (input.key = '' OR input.key IN (SELECT key FROM claimed)) AS fresh",
        " FROM input JOIN devices ON devices.person_uuid = input.person_uuid"
    ),
];

/// [`RegistrationPort::finish_event`](webex_push_domain::RegistrationPort::finish_event)
/// for many keys in one statement: the records of relayed events are dropped, so no
/// replica takes them over. Committed without waiting for the WAL flush.
const FINISH_EVENTS: [&str; 2] = [
    concat!(
        "UPDATE seen_events SET event = NULL, holder = NULL FROM ",
        async_commit!(),
        " WHERE seen_events.event IS NOT NULL AND seen_events.key = ANY("
    ),
    "::text[])",
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

/// Declares a fixed statement over array parameters: a struct holding the binds, and
/// the text around them (`text`, one part more than binds).
///
/// Unlike `diesel::sql_query`, which Diesel never prepares for reuse, such a statement
/// is prepared once per connection (its text is fixed and its type names it in
/// Diesel's statement cache) and then only bound and executed: Postgres parses and
/// plans it once, not on every batch.
macro_rules! prepared {
    ($(#[$doc:meta])* $name:ident = $text:expr; $($field:ident: $rust:ty => $sql:ty),+ $(,)?) => {
        $(#[$doc])*
        struct $name<'a> {
            $($field: &'a $rust),+
        }

        impl QueryFragment<Pg> for $name<'_> {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
                let mut text = $text.iter();
                $(
                    out.push_sql(text.next().copied().unwrap_or_default());
                    out.push_bind_param::<$sql, _>(self.$field)?;
                )+
                out.push_sql(text.next().copied().unwrap_or_default());
                Ok(())
            }
        }

        impl QueryId for $name<'_> {
            type QueryId = $name<'static>;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl Query for $name<'_> {
            type SqlType = Untyped;
        }

        impl RunQueryDsl<PgConnection> for $name<'_> {}
    };
}

prepared! {
    /// [`CLAIM_EVENTS`] with its parameters.
    ClaimEvents = CLAIM_EVENTS;
    keys: [&'a str] => Array<Text>,
    seen_at: [DateTime<Utc>] => Array<Timestamptz>,
    persons: [Uuid] => Array<SqlUuid>,
    jobs: [Uuid] => Array<SqlUuid>,
    events: [&'a str] => Array<Text>,
    deliver_by: [DateTime<Utc>] => Array<Timestamptz>,
    holders: [Uuid] => Array<SqlUuid>,
}

prepared! {
    /// [`RECORD_OUTCOMES`] with its parameters.
    RecordOutcomes = RECORD_OUTCOMES;
    tokens: [&'a str] => Array<Text>,
    outcomes: [&'a str] => Array<Text>,
    at: [DateTime<Utc>] => Array<Timestamptz>,
    environments: [&'a str] => Array<Text>,
}

prepared! {
    /// [`FINISH_EVENTS`] with its parameter.
    FinishEvents = FINISH_EVENTS;
    keys: [&'a str] => Array<Text>,
}

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

/// Claims `requests` in one statement; the outer error is the statement's, an inner
/// one a stored row that does not parse. A key that appears twice is claimed once: the
/// first request gets what the database says, the later ones `Duplicate`.
pub(crate) fn claim_statement(
    conn: &mut PgConnection,
    requests: &[ClaimRequest],
) -> Result<Vec<Result<Claim, DbError>>, DbError> {
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
    let jobs: Vec<Uuid> = sent.iter().map(|&index| requests[index].job).collect();
    let events: Vec<&str> = sent
        .iter()
        .map(|&index| requests[index].event.as_str())
        .collect();
    let deliver_by: Vec<DateTime<Utc>> = sent
        .iter()
        .map(|&index| requests[index].deliver_by)
        .collect();
    let holders: Vec<Uuid> = sent.iter().map(|&index| requests[index].holder).collect();
    let statement = ClaimEvents {
        keys: &keys,
        seen_at: &seen_at,
        persons: &persons,
        jobs: &jobs,
        events: &events,
        deliver_by: &deliver_by,
        holders: &holders,
    };
    let rows: Vec<ClaimRow> = statement.load(conn)?;

    // Per event sent: its devices (or the first row that did not parse) and whether
    // its key was recorded now. An event without rows has no devices: fresh, nothing
    // recorded.
    let mut answers: Vec<(Result<Vec<_>, DbError>, bool)> =
        sent.iter().map(|_| (Ok(Vec::new()), true)).collect();
    for row in rows {
        let answer = usize::try_from(row.n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|position| answers.get_mut(position))
            .ok_or(DbError::Corrupt("claim row for an event not asked"))?;
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
                Err(_) => return Err(DbError::Corrupt("a stored device row is invalid")),
            };
            // A repeat of a key earlier in the batch was not recorded by this request,
            // unless it is the same job's.
            let first = sent[position];
            let fresh = *fresh && (first == index || requests[first].job == requests[index].job);
            Ok(Claim::new(devices, fresh))
        })
        .collect())
}

pub(crate) fn record_statement(
    conn: &mut PgConnection,
    outcomes: &[Outcome],
) -> Result<(), DbError> {
    let tokens: Vec<&str> = outcomes.iter().map(|o| o.token.as_str()).collect();
    let results: Vec<&str> = outcomes.iter().map(|o| o.outcome.as_str()).collect();
    let at: Vec<DateTime<Utc>> = outcomes.iter().map(|o| o.at).collect();
    let environments: Vec<&str> = outcomes
        .iter()
        .map(|o| o.environment.unwrap_or(""))
        .collect();
    // A token removed meanwhile updates nothing, which is what the port asks.
    let statement = RecordOutcomes {
        tokens: &tokens,
        outcomes: &results,
        at: &at,
        environments: &environments,
    };
    statement.execute(conn)?;
    Ok(())
}

/// Finishes the events of `keys` in one statement. None of them can fail alone: a key
/// that is unknown or already finished updates nothing.
pub(crate) fn finish_statement(conn: &mut PgConnection, keys: &[String]) -> Result<(), DbError> {
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    FinishEvents { keys: &keys }.execute(conn)?;
    Ok(())
}
