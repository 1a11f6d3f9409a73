//! The Postgres statements every webhook and every push runs
//! ([`pg_statements`](super::pg_statements)), batched across concurrent callers
//! ([`Batcher`]): each batch is one statement, so it costs one blocking hop, one
//! checkout and one round trip however many events it carries. A batch the database
//! refuses for a reason other than being unreachable is run again one item at a time
//! ([`together_or_each`]), so one bad item cannot fail the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use diesel::PgConnection;
use futures::future::join_all;
use webex_push_domain::{BoxError, Claim, StoreError};

use super::batch::{Batch, Batcher};
use super::database::{Database, PgPool, on_postgres};
use super::error::DbError;
use super::pg_statements::{
    ClaimRequest, Outcome, claim_statement, finish_statement, record_statement,
};

/// Batches run side by side on their own connections: a second one starts while the
/// first is in the database, so a lone request never waits for another's round trip.
const CLAIM_SLOTS: usize = 2;
const CLAIMS_PER_BATCH: usize = 256;
/// Outcomes are written one batch at a time: two batches updating overlapping tokens
/// would only wait for each other.
const OUTCOME_SLOTS: usize = 1;
const OUTCOMES_PER_BATCH: usize = 512;
/// Finishing touches only rows of relayed events, each once: no two batches overlap.
const FINISH_SLOTS: usize = 1;
const FINISHES_PER_BATCH: usize = 512;
/// An outcome batch waits this long for company: at 1,000 webhooks/s about ten
/// outcomes share one statement instead of one each. Nothing rings later for it; the
/// push worker takes its next event that much later (256 workers leave room).
const OUTCOME_LINGER: Duration = Duration::from_millis(5);
/// A finish batch waits this long for company (the outcome batch ahead of it releases
/// its workers together, so their finishes arrive together). Kept short: an event
/// relayed but not yet marked finished is what a replica killed at that moment leaves
/// to be taken over and sent again.
const FINISH_LINGER: Duration = Duration::from_millis(2);

/// The batchers of one Postgres store.
pub(crate) struct PgBatches {
    claims: Batcher<Claims>,
    outcomes: Batcher<Outcomes>,
    finishes: Batcher<Finishes>,
}

impl PgBatches {
    pub(crate) fn new(db: &Database<PgPool>) -> Self {
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
            )
            .lingering(OUTCOME_LINGER),
            finishes: Batcher::new(
                Finishes(db.clone()),
                FINISH_SLOTS,
                FINISHES_PER_BATCH,
                "finish_event",
            )
            .lingering(FINISH_LINGER),
        }
    }

    pub(crate) async fn claim(&self, request: ClaimRequest) -> Result<Claim, StoreError> {
        self.claims.submit(request).await
    }

    pub(crate) async fn record_outcome(&self, outcome: Outcome) -> Result<(), StoreError> {
        self.outcomes.submit(outcome).await
    }

    pub(crate) async fn finish(&self, key: String) -> Result<(), StoreError> {
        self.finishes.submit(key).await
    }
}

/// A statement over many items: one answer per item, or the statement's own failure.
type BatchStatement<I, T> = fn(&mut PgConnection, &[I]) -> Result<Vec<Result<T, DbError>>, DbError>;

/// Runs `statement` over all `items` at once; when Postgres refuses it for a reason other
/// than being unreachable, runs it again on each item alone, side by side, so one bad
/// item cannot fail the others. One answer per item, in their order, or the one failure
/// of the whole batch (unreachable, or a batch of one), for the caller to share.
async fn together_or_each<I, T>(
    db: &Database<PgPool>,
    items: Vec<I>,
    statement: BatchStatement<I, T>,
    what: &'static str,
) -> Result<Vec<Result<T, StoreError>>, StoreError>
where
    I: Clone + Send + Sync + 'static,
    T: Send + 'static,
{
    let items = Arc::new(items);
    let together = {
        let items = Arc::clone(&items);
        db.run(move |pool| on_postgres(pool, |conn| statement(conn, &items)))
            .await
    };
    match together {
        Ok(answers) => Ok(answers
            .into_iter()
            .map(|answer| answer.map_err(DbError::into_port_error))
            .collect()),
        Err(error) if items.len() > 1 && is_unknown(&error) => {
            tracing::warn!(
                error = %error,
                items = items.len(),
                "a batch of {what} failed; running each alone"
            );
            Ok(join_all(items.iter().map(|item| {
                let item = item.clone();
                db.run(move |pool| {
                    on_postgres(pool, |conn| {
                        statement(conn, std::slice::from_ref(&item))?
                            .pop()
                            .unwrap_or(Err(DbError::Corrupt("a statement without an answer")))
                    })
                })
            }))
            .await)
        }
        Err(error) => Err(error),
    }
}

struct Claims(Database<PgPool>);

impl Batch for Claims {
    type Item = ClaimRequest;
    type Output = Claim;

    async fn run(&self, requests: Vec<ClaimRequest>) -> Vec<Result<Claim, StoreError>> {
        let count = requests.len();
        together_or_each(&self.0, requests, claim_statement, "claims")
            .await
            .unwrap_or_else(|error| share(error, count))
    }
}

struct Outcomes(Database<PgPool>);

impl Batch for Outcomes {
    type Item = Outcome;
    type Output = ();

    async fn run(&self, outcomes: Vec<Outcome>) -> Vec<Result<(), StoreError>> {
        let count = outcomes.len();
        // The last outcome of a token is the one to keep (the order they came in).
        let mut latest: HashMap<&str, &Outcome> = HashMap::with_capacity(count);
        for outcome in &outcomes {
            latest.insert(&outcome.token, outcome);
        }
        let mut distinct: Vec<Outcome> = latest.into_values().cloned().collect();
        distinct.sort_by(|a, b| a.token.cmp(&b.token));
        let tokens: Vec<String> = distinct
            .iter()
            .map(|outcome| outcome.token.clone())
            .collect();
        let recorded = together_or_each(
            &self.0,
            distinct,
            |conn, outcomes| {
                record_statement(conn, outcomes)?;
                Ok(outcomes.iter().map(|_| Ok(())).collect())
            },
            "outcomes",
        )
        .await;
        match recorded {
            Ok(recorded) => {
                // Each caller hears how its token's (latest) outcome went.
                let recorded: HashMap<&str, Result<(), StoreError>> =
                    tokens.iter().map(String::as_str).zip(recorded).collect();
                outcomes
                    .iter()
                    .map(|outcome| match recorded.get(outcome.token.as_str()) {
                        Some(Ok(())) => Ok(()),
                        _ => Err(StoreError::Unknown(
                            "the outcome could not be recorded".into(),
                        )),
                    })
                    .collect()
            }
            Err(error) => share(error, count),
        }
    }
}

struct Finishes(Database<PgPool>);

impl Batch for Finishes {
    type Item = String;
    type Output = ();

    async fn run(&self, keys: Vec<String>) -> Vec<Result<(), StoreError>> {
        let count = keys.len();
        // One statement however many keys, and none of them can fail alone.
        let result = self
            .0
            .run(move |pool| on_postgres(pool, |conn| finish_statement(conn, &keys)))
            .await;
        match result {
            Ok(()) => (0..count).map(|_| Ok(())).collect(),
            Err(error) => share(error, count),
        }
    }
}

fn is_unknown(error: &StoreError) -> bool {
    matches!(error, StoreError::Unknown(_))
}

/// The one failure of a batch, told to each of its `count` callers.
fn share<T>(error: StoreError, count: usize) -> Vec<Result<T, StoreError>> {
    let (unavailable, source) = match error {
        StoreError::Unavailable(source) => (true, source),
        StoreError::Unknown(source) => (false, source),
    };
    let source: Arc<dyn std::error::Error + Send + Sync> = Arc::from(source);
    (0..count)
        .map(|_| {
            let shared: BoxError = Box::new(SharedError(Arc::clone(&source)));
            Err(if unavailable {
                StoreError::Unavailable(shared)
            } else {
                StoreError::Unknown(shared)
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
