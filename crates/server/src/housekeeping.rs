//! Background upkeep of shared state: forgetting de-duplication keys past their
//! retention, so `seen_events` stays the size of the retention window.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use webex_push_domain::RegistrationPort;

/// How often old keys are pruned. Every replica prunes; the DELETE is idempotent, so
/// replicas racing each other only repeat a cheap statement.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Prunes keys older than `retention` now and then every `interval`, until aborted.
/// A failure (database down) is logged and tried again at the next interval.
pub fn spawn_seen_events_pruner(
    store: Arc<dyn RegistrationPort>,
    retention: Duration,
    interval: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            prune_once(store.as_ref(), retention).await;
        }
    })
}

async fn prune_once(store: &dyn RegistrationPort, retention: Duration) {
    let Ok(retention) = chrono::Duration::from_std(retention) else {
        tracing::error!(
            retention_secs = retention.as_secs(),
            "seen-events retention out of range; not pruning"
        );
        return;
    };
    let before = Utc::now() - retention;
    // Bounded batches until caught up: no statement deletes a day of webhooks at once.
    let mut pruned = 0;
    loop {
        match store.prune_seen_events(before, PRUNE_BATCH).await {
            Ok(batch) => {
                pruned += batch;
                if batch < u64::from(PRUNE_BATCH) {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, pruned, "pruning seen webhook events failed");
                return;
            }
        }
    }
    if pruned == 0 {
        tracing::debug!("no seen webhook events to prune");
    } else {
        tracing::info!(pruned, "pruned seen webhook events");
    }
}

/// Keys forgotten per statement.
pub const PRUNE_BATCH: u32 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use webex_push_domain::ports::MockRegistrationPort;

    #[tokio::test(start_paused = true)]
    async fn keys_older_than_the_retention_are_pruned_at_once_and_then_every_interval() {
        let mut store = MockRegistrationPort::new();
        let retention = Duration::from_secs(3600);
        store
            .expect_prune_seen_events()
            .times(3)
            .withf(move |before, limit| {
                let age = Utc::now() - *before;
                *limit == PRUNE_BATCH
                    && age >= chrono::Duration::seconds(3599)
                    && age <= chrono::Duration::seconds(3601)
            })
            .returning(|_, _| Ok(2));
        let task = spawn_seen_events_pruner(Arc::new(store), retention, PRUNE_INTERVAL);
        tokio::time::sleep(PRUNE_INTERVAL * 2 + Duration::from_secs(1)).await;
        task.abort();
        // The mock's `times(3)` is checked when it drops with the aborted task.
        assert!(task.await.unwrap_err().is_cancelled());
    }

    #[tokio::test]
    async fn a_backlog_is_pruned_in_bounded_batches_until_caught_up() {
        let mut store = MockRegistrationPort::new();
        let mut left: u64 = 25_000;
        store
            .expect_prune_seen_events()
            .times(3)
            .returning(move |_, limit| {
                let batch = left.min(u64::from(limit));
                left -= batch;
                Ok(batch)
            });
        prune_once(&store, Duration::from_secs(60)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_store_is_tried_again_at_the_next_interval() {
        let mut store = MockRegistrationPort::new();
        let mut calls = 0;
        store
            .expect_prune_seen_events()
            .times(2)
            .returning(move |_, _| {
                calls += 1;
                if calls == 1 {
                    Err(webex_push_domain::StoreError::Unavailable("down".into()))
                } else {
                    Ok(0)
                }
            });
        let task =
            spawn_seen_events_pruner(Arc::new(store), Duration::from_secs(60), PRUNE_INTERVAL);
        tokio::time::sleep(PRUNE_INTERVAL + Duration::from_secs(1)).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }
}
