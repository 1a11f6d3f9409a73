//! The bounded in-process push queue: webhooks enqueue events and answer at once;
//! worker tasks relay them through the IncomingCall port (APNs takes its time).
//!
//! Bounded so a flood cannot eat the memory: a full queue answers 503 + `Retry-After`
//! and Webex delivers again later. On shutdown the workers drain what is queued
//! within a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;
use webex_push_domain::{
    CallEnded, Deadlines, DeliveryReport, IncomingCall, IncomingCallPort, NewMessage, NotifyError,
};

use crate::error::Chain;
use crate::metrics::{Metrics, WEBHOOK_RECEIVED};

/// One accepted event waiting for a worker.
#[derive(Debug, Clone)]
pub enum Job {
    Ring(IncomingCall),
    CallEnded(CallEnded),
    Message(NewMessage),
}

impl Job {
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Ring(_) => "ring",
            Job::CallEnded(_) => "call_ended",
            Job::Message(_) => "message",
        }
    }

    /// How long after the webhook arrived the event is still worth relaying.
    fn deadline(&self, deadlines: &Deadlines) -> Duration {
        match self {
            Job::Ring(_) => deadlines.ring,
            Job::CallEnded(_) => deadlines.call_ended,
            Job::Message(_) => deadlines.message,
        }
    }
}

struct Queued {
    job: Job,
    /// When the webhook arrived: the ring latency starts here.
    received: Instant,
    /// The webhook request's id, so the push work logs under it too.
    request_id: Option<Arc<str>>,
}

/// Why an event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    #[error("the push queue is full")]
    Full,
    #[error("the push queue is closed")]
    Closed,
}

/// The sending side, cloned into every HTTP worker.
#[derive(Clone)]
pub struct PushQueue {
    sender: mpsc::Sender<Queued>,
    /// Set once the server is stopping: an event accepted then might not be pushed
    /// before the process exits, so it is refused and Webex delivers it elsewhere.
    closed: Arc<AtomicBool>,
}

impl PushQueue {
    /// Queues `job` without waiting: a full queue is the caller's answer, not a delay.
    /// `request_id` is the webhook request's, logged again by the worker.
    pub fn enqueue(&self, job: Job, request_id: Option<Arc<str>>) -> Result<(), EnqueueError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(EnqueueError::Closed);
        }
        let queued = Queued {
            job,
            received: Instant::now(),
            request_id,
        };
        self.sender.try_send(queued).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => EnqueueError::Full,
            mpsc::error::TrySendError::Closed(_) => EnqueueError::Closed,
        })
    }

    /// Events waiting for a worker (logs and `push_queue_depth`).
    pub fn depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}

/// The workers, and the switch that tells them to drain and stop.
pub struct PushWorkers {
    workers: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    receiver: Arc<Mutex<mpsc::Receiver<Queued>>>,
    closed: Arc<AtomicBool>,
}

/// Starts `workers` tasks relaying events through `notifier`, behind a queue of
/// `capacity` events. An event the store could not serve is retried until its
/// deadline (counted from the webhook's arrival) passes. Must be called inside a Tokio
/// runtime.
pub fn start(
    capacity: usize,
    workers: usize,
    deadlines: Deadlines,
    notifier: Arc<dyn IncomingCallPort>,
    metrics: Arc<Metrics>,
) -> (PushQueue, PushWorkers) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let receiver = Arc::new(Mutex::new(receiver));
    let (stop, stopping) = watch::channel(false);
    let closed = Arc::new(AtomicBool::new(false));
    let handles = (0..workers.max(1))
        .map(|id| {
            let span = tracing::info_span!("push_worker", worker = id);
            tokio::spawn(
                work(
                    Arc::clone(&receiver),
                    Arc::clone(&notifier),
                    deadlines,
                    stopping.clone(),
                    Arc::clone(&metrics),
                )
                .instrument(span),
            )
        })
        .collect();
    (
        PushQueue {
            sender,
            closed: Arc::clone(&closed),
        },
        PushWorkers {
            workers: handles,
            stop,
            receiver,
            closed,
        },
    )
}

impl PushWorkers {
    /// Refuses new events from now on (`EnqueueError::Closed`) while the workers keep
    /// relaying what is queued. Called when stopping starts: HTTP keep-alive
    /// connections may still bring webhooks until they close, and acknowledging those
    /// would grow the queue the drain must finish before the deadline.
    pub fn close_queue(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Lets the workers finish what is queued, then stops them. Events still queued
    /// after `deadline` are dropped with a warning. Call once no more events can come
    /// (the HTTP server has stopped).
    pub async fn drain(self, deadline: Duration) {
        // Stop first: an idle worker holds the receiver's lock while it waits, and only
        // lets go once told to stop (or once every sender is gone).
        self.close_queue();
        let _ = self.stop.send(true);
        let waiting = self.receiver.try_lock().map(|r| r.len()).ok();
        tracing::info!(?waiting, ?deadline, "draining the push queue");
        let aborts: Vec<_> = self.workers.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(deadline, join_all(self.workers))
            .await
            .is_err()
        {
            for abort in aborts {
                abort.abort();
            }
            let dropped = self.receiver.try_lock().map(|r| r.len()).ok();
            tracing::warn!(
                ?dropped,
                "shutdown deadline passed: events in progress or queued were not pushed"
            );
        } else {
            tracing::info!("push queue drained");
        }
    }
}

async fn work(
    receiver: Arc<Mutex<mpsc::Receiver<Queued>>>,
    notifier: Arc<dyn IncomingCallPort>,
    deadlines: Deadlines,
    mut stopping: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) {
    loop {
        let next = {
            let mut receiver = receiver.lock().await;
            if *stopping.borrow() {
                receiver.try_recv().ok()
            } else {
                tokio::select! {
                    biased;
                    next = receiver.recv() => next,
                    _ = stopping.changed() => receiver.try_recv().ok(),
                }
            }
        };
        let Some(queued) = next else {
            return;
        };
        metrics
            .queue_wait
            .observe(queued.received.elapsed().as_secs_f64());
        let span = tracing::info_span!(
            "push_job",
            request_id = queued.request_id.as_deref().unwrap_or("-"),
            kind = queued.job.kind(),
        );
        let received = queued.received;
        let outcome = WEBHOOK_RECEIVED
            .scope(
                received,
                relay(notifier.as_ref(), queued, &deadlines, &stopping),
            )
            .instrument(span)
            .await;
        metrics.count_event(outcome.0, outcome.1);
    }
}

/// The first wait before retrying an event the store could not serve; it doubles up
/// to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

async fn relay(
    notifier: &dyn IncomingCallPort,
    queued: Queued,
    deadlines: &Deadlines,
    stopping: &watch::Receiver<bool>,
) -> (&'static str, &'static str) {
    let kind = queued.job.kind();
    let deadline = queued.received + queued.job.deadline(deadlines);
    let mut backoff = FIRST_BACKOFF;
    let mut attempts: u32 = 0;
    loop {
        attempts += 1;
        let result: Result<DeliveryReport, NotifyError> = match queued.job.clone() {
            Job::Ring(call) => notifier.ring(call).await,
            Job::CallEnded(ended) => notifier.end_call(ended).await,
            Job::Message(message) => notifier.notify_message(message).await,
        };
        let elapsed_ms = u64::try_from(queued.received.elapsed().as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok(report) => {
                tracing::info!(
                    kind,
                    duplicate = report.duplicate,
                    devices = report.devices,
                    delivered = report.delivered,
                    removed = report.removed,
                    rejected = report.rejected,
                    gave_up = report.gave_up,
                    attempts,
                    elapsed_ms,
                    "event relayed"
                );
                return (
                    kind,
                    if report.duplicate {
                        "duplicate"
                    } else {
                        "relayed"
                    },
                );
            }
            // Nothing was sent (the port's contract), so trying again cannot ring twice;
            // a database fail-over takes seconds, a ring is worth 30 of them.
            Err(NotifyError::Unavailable(ref source))
                if !*stopping.borrow() && Instant::now() + backoff < deadline =>
            {
                tracing::warn!(
                    kind,
                    attempts,
                    retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                    error = %Chain(source.as_ref()),
                    "store unavailable; event will be retried"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            // The webhook was already answered: Webex will not deliver again, so the
            // event is lost. Said loudly, with the cause.
            Err(error) => {
                tracing::warn!(
                    kind,
                    attempts,
                    elapsed_ms,
                    error = %Chain(&error),
                    "event not relayed"
                );
                return (kind, "failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use chrono::Utc;
    use webex_push_domain::{CallId, Caller, EventSource, PersonId};

    use super::*;

    /// Counts calls; fails the first `unavailable` calls as the store being down, and
    /// every call with `Unknown` when `broken`.
    #[derive(Default)]
    struct Counting(AtomicUsize, AtomicUsize, bool, tokio::sync::Notify);

    #[async_trait]
    impl IncomingCallPort for Counting {
        async fn ring(&self, _: IncomingCall) -> Result<DeliveryReport, NotifyError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.3.notify_waiters();
            if self.2 {
                return Err(NotifyError::Unknown("bug".into()));
            }
            let left = self.1.load(Ordering::SeqCst);
            if left > 0 {
                self.1.store(left - 1, Ordering::SeqCst);
                return Err(NotifyError::Unavailable("database down".into()));
            }
            Ok(DeliveryReport::default())
        }
        async fn end_call(&self, _: CallEnded) -> Result<DeliveryReport, NotifyError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(DeliveryReport::default())
        }
        async fn notify_message(&self, _: NewMessage) -> Result<DeliveryReport, NotifyError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(DeliveryReport::default())
        }
    }

    fn ring(n: usize) -> Job {
        Job::Ring(IncomingCall {
            call_id: CallId::parse(&format!("call-{n}")).unwrap(),
            callee: PersonId::from_uuid(uuid::Uuid::new_v4()),
            caller: Caller::default(),
            occurred_at: Utc::now(),
            source: EventSource::CallMemberships,
            sdk_payload: None,
        })
    }

    #[tokio::test]
    async fn drain_relays_everything_queued_even_while_senders_are_alive() {
        let counting = Arc::new(Counting::default());
        let (queue, workers) = start(
            8,
            3,
            Deadlines::default(),
            Arc::clone(&counting) as Arc<dyn IncomingCallPort>,
            Arc::new(Metrics::new()),
        );
        for n in 0..5 {
            queue.enqueue(ring(n), None).unwrap();
        }
        tokio::time::timeout(
            Duration::from_secs(10),
            workers.drain(Duration::from_secs(5)),
        )
        .await
        .expect("drain returns although `queue` still holds a sender");
        assert_eq!(counting.0.load(Ordering::SeqCst), 5);
        drop(queue);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_drained_one_as_closed() {
        let counting = Arc::new(Counting::default());
        let (queue, mut workers) = start(
            1,
            1,
            Deadlines::default(),
            Arc::clone(&counting) as Arc<dyn IncomingCallPort>,
            Arc::new(Metrics::new()),
        );
        // Workers that have stopped take nothing, so the single slot stays taken.
        let _ = workers.stop.send(true);
        for worker in workers.workers.drain(..) {
            worker.await.unwrap();
        }
        queue.enqueue(ring(0), None).unwrap();
        assert_eq!(queue.depth(), 1);
        assert_eq!(queue.enqueue(ring(1), None), Err(EnqueueError::Full));
        workers.drain(Duration::from_secs(1)).await;
        assert_eq!(queue.enqueue(ring(2), None), Err(EnqueueError::Closed));
    }

    #[tokio::test]
    async fn an_event_the_store_could_not_serve_is_retried_and_a_bug_is_not() {
        let flaky = Arc::new(Counting {
            1: AtomicUsize::new(2),
            ..Counting::default()
        });
        let (queue, workers) = start(
            8,
            1,
            Deadlines::default(),
            Arc::clone(&flaky) as Arc<dyn IncomingCallPort>,
            Arc::new(Metrics::new()),
        );
        queue.enqueue(ring(0), None).unwrap();
        let relayed = async {
            loop {
                let called = flaky.3.notified();
                tokio::pin!(called);
                called.as_mut().enable();
                if flaky.0.load(Ordering::SeqCst) >= 3 {
                    return;
                }
                called.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), relayed)
            .await
            .expect("two failures, then success");
        workers.drain(Duration::from_secs(5)).await;
        assert_eq!(flaky.0.load(Ordering::SeqCst), 3);

        let broken = Arc::new(Counting {
            2: true,
            ..Counting::default()
        });
        let (queue, workers) = start(
            8,
            1,
            Deadlines::default(),
            Arc::clone(&broken) as Arc<dyn IncomingCallPort>,
            Arc::new(Metrics::new()),
        );
        queue.enqueue(ring(1), None).unwrap();
        workers.drain(Duration::from_secs(5)).await;
        assert_eq!(broken.0.load(Ordering::SeqCst), 1);
    }
}
