//! The bounded in-process push queue: a webhook's event is claimed (recorded, so it
//! survives this replica) and queued before the webhook is answered; worker tasks relay
//! it through the IncomingCall port, which owns the retries and the deadline.
//!
//! Bounded so a flood cannot eat the memory: a full queue makes the webhook wait a
//! little for room ([`QueueSettings::wait`](crate::config::QueueSettings)), turning a
//! burst into latency, and only then answers 503 + `Retry-After`. On shutdown the
//! workers drain what is queued within a deadline; what they cannot finish stays on
//! record for another replica to take over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;
use webex_push_domain::{
    AppFlavour, CallId, CalleeField, Claim, Deadlines, DeliveryReport, Event, EventSource,
    IncomingCallPort, Job, NotifyError,
};

use crate::error::Chain;
use crate::metrics::{Metrics, WEBHOOK_RECEIVED};

/// How long the webhook waits for its event's first claim before answering anyway,
/// with the event held in memory only (the worker then claims it as the same job).
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a replica says it is alive and looks for jobs of replicas that stopped.
/// Well within [`webex_push_domain::services::HOLDER_TIMEOUT`].
pub const TAKE_OVER_INTERVAL: Duration = Duration::from_secs(2);

/// At most this many jobs are taken over per round (and never more than the queue has
/// room for).
const TAKE_OVER_BATCH: usize = 64;

/// One accepted event waiting for a worker.
struct Queued {
    job: Job,
    /// What the claim made before the webhook was answered said; `None` when it could
    /// not be made (store unavailable), or for a job taken over: the worker claims.
    claim: Option<Claim>,
    /// When the webhook arrived (or the job was taken over): the ring latency and the
    /// queue wait start here.
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

/// What became of a webhook's event at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Claimed and queued: it survives this replica.
    Recorded,
    /// Queued, but the store could not record it in time: held in memory only until a
    /// worker claims it.
    InMemory,
}

/// The accepting side, cloned into every HTTP worker.
#[derive(Clone)]
pub struct PushQueue {
    sender: mpsc::Sender<Queued>,
    notifier: Arc<dyn IncomingCallPort>,
    deadlines: Deadlines,
    /// How long a webhook may wait for room in a full queue.
    wait: Duration,
    /// Set once the server is stopping: an event accepted then might not be pushed
    /// before the process exits, so it is refused and Webex delivers it elsewhere.
    closed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

impl PushQueue {
    /// Claims `event` as a new job and queues it, waiting at most the queue's `wait`
    /// for room. `request_id` is the webhook request's, logged again by the worker.
    ///
    /// The claim comes first so that an event answered 2xx is on record before the
    /// answer: should this replica stop, another one relays it. A store that cannot
    /// answer within [`ACCEPT_TIMEOUT`] does not hold the webhook up: the event is
    /// queued unclaimed, and the worker claims it as the same job (a claim that did
    /// land meanwhile is recognised as its own).
    pub async fn accept(
        &self,
        event: Event,
        request_id: Option<Arc<str>>,
    ) -> Result<Accepted, EnqueueError> {
        let received = Instant::now();
        let job = Job::received(event, Utc::now(), &self.deadlines);
        let slot = self.reserve().await?;
        let (claim, accepted) =
            match tokio::time::timeout(ACCEPT_TIMEOUT, self.notifier.accept(&job)).await {
                Ok(Ok(claim)) => (Some(claim), Accepted::Recorded),
                Ok(Err(error)) => {
                    tracing::warn!(
                        error = %Chain(&error),
                        "event accepted without a record: it is lost if this replica stops \
                         before the store is back"
                    );
                    (None, Accepted::InMemory)
                }
                Err(_) => {
                    tracing::warn!(
                        timeout_ms = ACCEPT_TIMEOUT.as_millis() as u64,
                        "the store did not record the event in time: accepted in memory only"
                    );
                    (None, Accepted::InMemory)
                }
            };
        if accepted == Accepted::InMemory {
            self.metrics.count_unrecorded();
        }
        slot.send(Queued {
            job,
            claim,
            received,
            request_id,
        });
        Ok(accepted)
    }

    /// A place in the queue, waiting at most `wait` for one.
    async fn reserve(&self) -> Result<mpsc::OwnedPermit<Queued>, EnqueueError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(EnqueueError::Closed);
        }
        match self.sender.clone().try_reserve_owned() {
            Ok(permit) => return Ok(permit),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(EnqueueError::Closed),
            Err(mpsc::error::TrySendError::Full(_)) => {}
        }
        match tokio::time::timeout(self.wait, self.sender.clone().reserve_owned()).await {
            Ok(Ok(permit)) if !self.closed.load(Ordering::Acquire) => Ok(permit),
            Ok(_) => Err(EnqueueError::Closed),
            Err(_) => Err(EnqueueError::Full),
        }
    }

    /// Events waiting for a worker (logs and `webex_push_push_queue_depth`).
    pub fn depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// Says this replica is alive and takes over as many jobs of stopped replicas as the
    /// queue has room for (at most [`TAKE_OVER_BATCH`]). Returns how many were queued.
    pub async fn take_over(&self) -> usize {
        if self.closed.load(Ordering::Acquire) {
            return 0;
        }
        let mut slots = Vec::new();
        while slots.len() < TAKE_OVER_BATCH {
            match self.sender.clone().try_reserve_owned() {
                Ok(permit) => slots.push(permit),
                Err(_) => break,
            }
        }
        match self.notifier.take_over(slots.len()).await {
            Ok((jobs, expired)) => {
                self.metrics.count_expired(expired);
                let taken = jobs.len();
                for (job, slot) in jobs.into_iter().zip(slots) {
                    tracing::info!(job = %job.id, kind = job.event.kind().as_str(), "job taken over");
                    self.metrics.count_taken_over();
                    slot.send(Queued {
                        job,
                        claim: None,
                        received: Instant::now(),
                        request_id: None,
                    });
                }
                taken
            }
            Err(error) => {
                tracing::warn!(error = %Chain(&error), "could not look for jobs to take over");
                0
            }
        }
    }
}

/// The workers, and the switch that tells them to drain and stop.
pub struct PushWorkers {
    workers: Vec<JoinHandle<()>>,
    taking_over: JoinHandle<()>,
    stop: watch::Sender<bool>,
    receiver: Arc<Mutex<mpsc::Receiver<Queued>>>,
    closed: Arc<AtomicBool>,
}

/// How the queue is sized and how long a webhook may wait for room.
#[derive(Debug, Clone, Copy)]
pub struct Sizing {
    pub capacity: usize,
    pub workers: usize,
    pub wait: Duration,
}

/// Starts `sizing.workers` tasks relaying events through `notifier`, behind a queue of
/// `sizing.capacity` events, and the task that takes over the jobs of replicas that
/// stopped every [`TAKE_OVER_INTERVAL`]. Must be called inside a Tokio runtime.
pub fn start(
    sizing: Sizing,
    deadlines: Deadlines,
    notifier: Arc<dyn IncomingCallPort>,
    metrics: Arc<Metrics>,
) -> (PushQueue, PushWorkers) {
    let (sender, receiver) = mpsc::channel(sizing.capacity.max(1));
    let receiver = Arc::new(Mutex::new(receiver));
    let (stop, stopping) = watch::channel(false);
    let closed = Arc::new(AtomicBool::new(false));
    let handles = (0..sizing.workers.max(1))
        .map(|id| {
            let span = tracing::info_span!("push_worker", worker = id);
            tokio::spawn(
                work(
                    Arc::clone(&receiver),
                    Arc::clone(&notifier),
                    stopping.clone(),
                    Arc::clone(&metrics),
                )
                .instrument(span),
            )
        })
        .collect();
    let queue = PushQueue {
        sender,
        notifier,
        deadlines,
        wait: sizing.wait,
        closed: Arc::clone(&closed),
        metrics,
    };
    let taking_over = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TAKE_OVER_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                queue.take_over().await;
            }
        })
    };
    (
        queue,
        PushWorkers {
            workers: handles,
            taking_over,
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
    /// after `deadline` are left to the replica that takes them over (when they were
    /// recorded), with a warning. Call once no more events can come (the HTTP server
    /// has stopped).
    pub async fn drain(self, deadline: Duration) {
        // Stop first: an idle worker holds the receiver's lock while it waits, and only
        // lets go once told to stop (or once every sender is gone).
        self.close_queue();
        self.taking_over.abort();
        let _ = self.stop.send(true);
        let waiting = self.receiver.try_lock().map(|r| r.len()).ok();
        tracing::info!(
            waiting,
            deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            "draining the push queue"
        );
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
                dropped,
                "shutdown deadline passed: events in progress or queued were not pushed \
                 here; those on record are taken over by another replica"
            );
        } else {
            tracing::info!("push queue drained");
        }
    }
}

async fn work(
    receiver: Arc<Mutex<mpsc::Receiver<Queued>>>,
    notifier: Arc<dyn IncomingCallPort>,
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
        let kind = queued.job.event.kind();
        let span = tracing::info_span!(
            "push_job",
            request_id = queued.request_id.as_deref(),
            kind = kind.as_str(),
            call_id = queued.job.event.call_id().map(CallId::as_str),
        );
        let received = queued.received;
        let outcome = WEBHOOK_RECEIVED
            .scope(received, relay(notifier.as_ref(), &metrics, queued))
            .instrument(span)
            .await;
        metrics.count_event(kind, outcome);
    }
}

/// Relays one queued job and logs what became of it; the outcome label.
async fn relay(notifier: &dyn IncomingCallPort, metrics: &Metrics, queued: Queued) -> &'static str {
    let Queued {
        job,
        claim,
        received,
        ..
    } = queued;
    // Which field named a `telephony_push`'s callee: Webex does not say, so a wrong
    // guess must show (in the log, and as a count of pushes for nobody registered).
    let callee_field = match &job.event {
        Event::Ring(call) if call.source == EventSource::TelephonyPush => call.callee_field,
        _ => None,
    };
    // Counted once per event: a `telephony_push` is two jobs (one per flavour of app,
    // see `Event::split`) reading the same devices.
    let telephony_push = matches!(
        &job.event,
        Event::Ring(call) if call.source == EventSource::TelephonyPush
            && call.audience != Some(AppFlavour::KitchenSink)
    );
    let result: Result<DeliveryReport, NotifyError> = match claim {
        Some(Claim::Duplicate(devices)) => Ok(DeliveryReport {
            duplicate: true,
            registered: devices.len(),
            devices: devices.len(),
            ..DeliveryReport::default()
        }),
        Some(Claim::Devices(devices)) => notifier.relay(job, Some(devices)).await,
        None => notifier.relay(job, None).await,
    };
    let elapsed_ms = u64::try_from(received.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(report) => {
            if telephony_push && report.registered == 0 {
                metrics.count_telephony_push_unmatched();
            }
            tracing::info!(
                duplicate = report.duplicate,
                registered = report.registered,
                devices = report.devices,
                callee_field = callee_field.map(CalleeField::as_str),
                delivered = report.delivered,
                removed = report.removed,
                rejected = report.rejected,
                gave_up = report.gave_up,
                attempts = report.attempts,
                elapsed_ms,
                "event relayed"
            );
            if report.duplicate {
                "duplicate"
            } else {
                "relayed"
            }
        }
        // The webhook was already answered: Webex will not deliver again. Said loudly.
        Err(NotifyError::Late { attempts }) => {
            tracing::warn!(
                attempts,
                elapsed_ms,
                why = "its deadline passed before it could be relayed",
                "event dropped late"
            );
            "late"
        }
        Err(error) => {
            tracing::warn!(elapsed_ms, error = %Chain(&error), "event not relayed");
            "failed"
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use webex_push_domain::{CallId, Caller, Device, EventSource, IncomingCall, PersonId};

    use super::*;

    /// Counts relays; `accept` answers `Unavailable` when `store_down`, and `relay`
    /// answers `Late` when `late`.
    #[derive(Default)]
    struct Counting {
        accepted: AtomicUsize,
        relayed: AtomicUsize,
        unclaimed: AtomicUsize,
        store_down: bool,
        late: bool,
        notify: tokio::sync::Notify,
    }

    #[async_trait]
    impl IncomingCallPort for Counting {
        async fn accept(&self, _: &Job) -> Result<Claim, NotifyError> {
            self.accepted.fetch_add(1, Ordering::SeqCst);
            if self.store_down {
                return Err(NotifyError::Unavailable("database down".into()));
            }
            Ok(Claim::Devices(Vec::new()))
        }
        async fn relay(
            &self,
            _: Job,
            claimed: Option<Vec<Device>>,
        ) -> Result<DeliveryReport, NotifyError> {
            if claimed.is_none() {
                self.unclaimed.fetch_add(1, Ordering::SeqCst);
            }
            self.relayed.fetch_add(1, Ordering::SeqCst);
            self.notify.notify_waiters();
            if self.late {
                return Err(NotifyError::Late { attempts: 3 });
            }
            Ok(DeliveryReport::default())
        }
        async fn take_over(&self, _: usize) -> Result<(Vec<Job>, u64), NotifyError> {
            Ok((Vec::new(), 0))
        }
    }

    fn ring(n: usize) -> Event {
        Event::Ring(IncomingCall {
            call_id: CallId::parse(&format!("call-{n}")).unwrap(),
            callee: PersonId::from_uuid(uuid::Uuid::new_v4()),
            caller: Caller::default(),
            occurred_at: Utc::now(),
            source: EventSource::CallMemberships,
            sdk_payload: None,
            fcm_payload: None,
            webhook: None,
            callee_field: None,
            audience: None,
        })
    }

    fn sizing(capacity: usize, workers: usize, wait: Duration) -> Sizing {
        Sizing {
            capacity,
            workers,
            wait,
        }
    }

    #[tokio::test]
    async fn drain_relays_everything_queued_even_while_senders_are_alive() {
        let counting = Arc::new(Counting::default());
        let (queue, workers) = start(
            sizing(8, 3, Duration::ZERO),
            Deadlines::default(),
            Arc::clone(&counting) as Arc<dyn IncomingCallPort>,
            Arc::new(Metrics::new()),
        );
        for n in 0..5 {
            queue.accept(ring(n), None).await.unwrap();
        }
        tokio::time::timeout(
            Duration::from_secs(10),
            workers.drain(Duration::from_secs(5)),
        )
        .await
        .expect("drain returns although `queue` still holds a sender");
        assert_eq!(counting.relayed.load(Ordering::SeqCst), 5);
        drop(queue);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_waits_for_room_then_refuses_and_a_drained_one_is_closed() {
        let counting = Arc::new(Counting::default());
        let wait = Duration::from_secs(2);
        let (queue, mut workers) = start(
            sizing(1, 1, wait),
            Deadlines::default(),
            Arc::clone(&counting) as Arc<dyn IncomingCallPort>,
            Arc::new(Metrics::new()),
        );
        // Workers that have stopped take nothing, so the single slot stays taken.
        let _ = workers.stop.send(true);
        for worker in workers.workers.drain(..) {
            worker.await.unwrap();
        }
        queue.accept(ring(0), None).await.unwrap();
        assert_eq!(queue.depth(), 1);
        let began = Instant::now();
        assert_eq!(queue.accept(ring(1), None).await, Err(EnqueueError::Full));
        assert_eq!(began.elapsed(), wait, "waited for room before refusing");
        workers.drain(Duration::from_secs(1)).await;
        assert_eq!(queue.accept(ring(2), None).await, Err(EnqueueError::Closed));
    }

    #[tokio::test]
    async fn an_event_waiting_for_room_is_queued_as_soon_as_a_worker_takes_one() {
        let counting = Arc::new(Counting::default());
        let (queue, workers) = start(
            sizing(1, 1, Duration::from_secs(10)),
            Deadlines::default(),
            Arc::clone(&counting) as Arc<dyn IncomingCallPort>,
            Arc::new(Metrics::new()),
        );
        let accepted = join_all((0..4).map(|n| queue.accept(ring(n), None))).await;
        assert!(accepted.iter().all(Result::is_ok), "{accepted:?}");
        workers.drain(Duration::from_secs(5)).await;
        assert_eq!(counting.relayed.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_store_that_cannot_record_the_event_still_gets_it_accepted_and_claimed_later() {
        let counting = Arc::new(Counting {
            store_down: true,
            ..Counting::default()
        });
        let metrics = Arc::new(Metrics::new());
        let (queue, workers) = start(
            sizing(8, 1, Duration::ZERO),
            Deadlines::default(),
            Arc::clone(&counting) as Arc<dyn IncomingCallPort>,
            Arc::clone(&metrics),
        );
        assert_eq!(queue.accept(ring(0), None).await, Ok(Accepted::InMemory));
        workers.drain(Duration::from_secs(5)).await;
        assert_eq!(counting.unclaimed.load(Ordering::SeqCst), 1);
        assert!(
            metrics
                .render()
                .unwrap()
                .contains("webex_push_events_unrecorded_total 1")
        );
    }

    #[tokio::test]
    async fn an_event_dropped_late_is_counted_as_late() {
        let counting = Arc::new(Counting {
            late: true,
            ..Counting::default()
        });
        let metrics = Arc::new(Metrics::new());
        let (queue, workers) = start(
            sizing(8, 1, Duration::ZERO),
            Deadlines::default(),
            Arc::clone(&counting) as Arc<dyn IncomingCallPort>,
            Arc::clone(&metrics),
        );
        queue.accept(ring(0), None).await.unwrap();
        workers.drain(Duration::from_secs(5)).await;
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"webex_push_events_total{kind="ring",outcome="late"} 1"#),
            "{text}"
        );
    }
}
