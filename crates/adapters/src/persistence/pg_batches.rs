//! The Postgres statement every webhook and every push runs
//! ([`pg_statements`](super::pg_statements)), batched across concurrent callers
//! ([`Batcher`]): each batch is one statement, so it costs one blocking hop, one
//! checkout and one round trip however many claims, outcomes and finishes it carries,
//! and the outcomes and finishes wait a moment for a claim to go with. A batch the database
//! refuses for a reason other than being unreachable is run again one item at a time
//! ([`together_or_each`]), so one bad item cannot fail the others.

use std::sync::Arc;
use std::time::Duration;

use diesel::PgConnection;
use futures::future::join_all;
use webex_push_domain::{BoxError, Claim, RegistrationError};

use super::batch::{Batch, Batcher};
use super::database::{Database, PgPool, on_postgres};
use super::error::StoreError;
use super::pg_statements::{ClaimRequest, HotWrite, Outcome, write_statement};

/// Batches run side by side on their own connections: a second one starts while the
/// first is in the database, so a lone claim never waits for another's round trip.
const SLOTS: usize = 2;
const WRITES_PER_BATCH: usize = 512;
/// How long an outcome or a finish waits for a claim to ride along with (a batch holding
/// a claim goes at once): at 1,000 webhooks/s one comes about every millisecond, so
/// nearly every outcome and finish shares the claim's statement instead of costing one
/// of its own. Nothing rings later for it; the push worker takes its next event up to
/// that much later (256 workers leave room). Kept short for the finishes: an event
/// relayed but not yet marked finished is what a replica killed at that moment leaves
/// to be taken over and sent again.
const LINGER: Duration = Duration::from_millis(3);

/// The batcher of one Postgres store.
pub(crate) struct PgBatches {
    writes: Batcher<HotWrites>,
}

impl PgBatches {
    pub(crate) fn new(db: &Database<PgPool>) -> Self {
        Self {
            writes: Batcher::new(HotWrites(db.clone()), SLOTS, WRITES_PER_BATCH, "hot_writes")
                .lingering(LINGER),
        }
    }

    pub(crate) async fn claim(&self, request: ClaimRequest) -> Result<Claim, RegistrationError> {
        match self.writes.submit(HotWrite::Claim(request)).await? {
            Some(claim) => Ok(claim),
            None => Err(RegistrationError::Unknown(
                "a claim without an answer".into(),
            )),
        }
    }

    pub(crate) async fn record_outcome(&self, outcome: Outcome) -> Result<(), RegistrationError> {
        self.writes
            .submit(HotWrite::Outcome(outcome))
            .await
            .map(drop)
    }

    pub(crate) async fn finish(&self, key: String) -> Result<(), RegistrationError> {
        self.writes.submit(HotWrite::Finish(key)).await.map(drop)
    }
}

/// A statement over many items: one answer per item, or the statement's own failure.
type BatchStatement<I, T> =
    fn(&mut PgConnection, &[I]) -> Result<Vec<Result<T, StoreError>>, StoreError>;

/// Runs `statement` over all `items` at once; when Postgres refuses it for a reason other
/// than being unreachable, runs it again on each item alone, side by side, so one bad
/// item cannot fail the others. One answer per item, in their order, or the one failure
/// of the whole batch (unreachable, or a batch of one), for the caller to share.
async fn together_or_each<I, T>(
    db: &Database<PgPool>,
    items: Vec<I>,
    statement: BatchStatement<I, T>,
    what: &'static str,
) -> Result<Vec<Result<T, RegistrationError>>, RegistrationError>
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
            .map(|answer| answer.map_err(StoreError::into_port_error))
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
                            .unwrap_or(Err(StoreError::Corrupt("a statement without an answer")))
                    })
                })
            }))
            .await)
        }
        Err(error) => Err(error),
    }
}

struct HotWrites(Database<PgPool>);

impl Batch for HotWrites {
    type Item = HotWrite;
    type Output = Option<Claim>;

    /// A claim is on a ring's path; outcomes and finishes wait for one.
    fn urgent(write: &HotWrite) -> bool {
        matches!(write, HotWrite::Claim(_))
    }

    async fn run(&self, writes: Vec<HotWrite>) -> Vec<Result<Option<Claim>, RegistrationError>> {
        let count = writes.len();
        together_or_each(&self.0, writes, write_statement, "hot-path writes")
            .await
            .unwrap_or_else(|error| share(error, count))
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
