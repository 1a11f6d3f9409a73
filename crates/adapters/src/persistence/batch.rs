//! Group commit for the statements on the path of every webhook and every push.
//!
//! Requests that arrive while earlier batches are in the database wait and go together
//! in the next statement: under load one blocking hop, one connection checkout and one
//! round trip serve many events; when the server is quiet a request goes alone at once
//! (a free slot takes it without waiting for company). Only a batcher made
//! [`lingering`](Batcher::lingering), for writes off the ring's path, holds a batch open
//! a moment for company.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument as _;
use webex_push_domain::StoreError;

/// One kind of batched statement.
pub(crate) trait Batch: Send + Sync + 'static {
    type Item: Send + 'static;
    type Output: Send + 'static;

    /// Runs `items` together; one result per item, in the items' order.
    fn run(
        &self,
        items: Vec<Self::Item>,
    ) -> impl Future<Output = Vec<Result<Self::Output, StoreError>>> + Send;
}

type Reply<B> = oneshot::Sender<Result<<B as Batch>::Output, StoreError>>;
/// An item and where its result goes.
type Pending<B> = (<B as Batch>::Item, Reply<B>);

/// Collects items for a [`Batch`] and runs at most `slots` batches at a time, each of at
/// most `max_items`.
///
/// The collecting task starts on the first submission, on the caller's runtime, and is
/// started again should that runtime have gone (tests build one per test); it ends
/// when the batcher is dropped.
pub(crate) struct Batcher<B: Batch> {
    batch: Arc<B>,
    sender: Mutex<Option<mpsc::UnboundedSender<Pending<B>>>>,
    slots: usize,
    max_items: usize,
    linger: Duration,
    name: &'static str,
}

impl<B: Batch> Batcher<B> {
    pub(crate) fn new(batch: B, slots: usize, max_items: usize, name: &'static str) -> Self {
        Self {
            batch: Arc::new(batch),
            sender: Mutex::new(None),
            slots: slots.max(1),
            max_items: max_items.max(1),
            linger: Duration::ZERO,
            name,
        }
    }

    /// Holds each batch open for up to `linger` after its first item (or until it is
    /// full), so that items arriving a moment apart share one statement even when a
    /// slot is free. For writes nobody waits on for a ring; the first item's caller
    /// waits that much longer.
    pub(crate) fn lingering(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Runs `item` in the next batch and waits for its result. Must be called inside a
    /// Tokio runtime.
    pub(crate) async fn submit(&self, item: B::Item) -> Result<B::Output, StoreError> {
        let (reply, result) = oneshot::channel();
        let mut pending = (item, reply);
        {
            let mut sender = self
                .sender
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            loop {
                let open = match sender.as_ref() {
                    Some(open) if !open.is_closed() => open,
                    _ => sender.insert(self.start()),
                };
                match open.send(pending) {
                    Ok(()) => break,
                    // The collecting task's runtime is gone: start it on this one.
                    Err(mpsc::error::SendError(returned)) => {
                        pending = returned;
                        *sender = None;
                    }
                }
            }
        }
        result.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                format!("the {} batch was abandoned", self.name).into(),
            ))
        })
    }

    fn start(&self) -> mpsc::UnboundedSender<Pending<B>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let span = tracing::debug_span!("batcher", batch = self.name);
        tokio::spawn(
            collect(
                Arc::clone(&self.batch),
                receiver,
                self.slots,
                self.max_items,
                self.linger,
            )
            .instrument(span),
        );
        sender
    }
}

async fn collect<B: Batch>(
    batch: Arc<B>,
    mut receiver: mpsc::UnboundedReceiver<Pending<B>>,
    slots: usize,
    max_items: usize,
    linger: Duration,
) {
    let slots = Arc::new(Semaphore::new(slots));
    loop {
        // A slot first, then the items: while every slot is busy, items pile up in the
        // channel and the next free slot takes them all at once.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = receiver.recv().await else {
            return;
        };
        let mut pending = vec![first];
        if !linger.is_zero() {
            let until = tokio::time::Instant::now() + linger;
            while pending.len() < max_items {
                match tokio::time::timeout_at(until, receiver.recv()).await {
                    Ok(Some(next)) => pending.push(next),
                    // Closed (the batcher is gone) or the time is up: run what is here.
                    Ok(None) | Err(_) => break,
                }
            }
        }
        while pending.len() < max_items {
            match receiver.try_recv() {
                Ok(next) => pending.push(next),
                Err(_) => break,
            }
        }
        let batch = Arc::clone(&batch);
        tokio::spawn(
            async move {
                let (items, replies): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
                tracing::trace!(items = items.len(), "running a batch");
                let results = batch.run(items).await;
                drop(slot);
                // A caller that gave up waiting has dropped its receiver: nothing to do.
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            .in_current_span(),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Doubles each item; records the size of every batch; holds each batch until
    /// `release` lets it go.
    struct Doubling {
        sizes: Mutex<Vec<usize>>,
        release: tokio::sync::Notify,
        running: AtomicUsize,
    }

    impl Batch for Doubling {
        type Item = u32;
        type Output = u32;

        async fn run(&self, items: Vec<u32>) -> Vec<Result<u32, StoreError>> {
            self.sizes.lock().unwrap().push(items.len());
            self.running.fetch_add(1, Ordering::SeqCst);
            self.release.notified().await;
            items.into_iter().map(|item| Ok(item * 2)).collect()
        }
    }

    #[tokio::test]
    async fn items_arriving_while_the_slots_are_busy_go_together_in_the_next_batch() {
        let batcher = Arc::new(Batcher::new(
            Doubling {
                sizes: Mutex::new(Vec::new()),
                release: tokio::sync::Notify::new(),
                running: AtomicUsize::new(0),
            },
            1,
            64,
            "test",
        ));
        let first = tokio::spawn({
            let batcher = Arc::clone(&batcher);
            async move { batcher.submit(1).await.unwrap() }
        });
        while batcher.batch.running.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The only slot is busy: these wait, and then go as one batch.
        let rest: Vec<_> = (2..=11)
            .map(|n| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move { batcher.submit(n).await.unwrap() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        batcher.batch.release.notify_one();
        assert_eq!(first.await.unwrap(), 2);
        while batcher.batch.running.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        batcher.batch.release.notify_one();
        for (n, waiting) in (2..=11).zip(rest) {
            assert_eq!(waiting.await.unwrap(), n * 2);
        }
        assert_eq!(*batcher.batch.sizes.lock().unwrap(), vec![1, 10]);
    }

    /// Answers every item with its own value, at once.
    struct Echo;

    impl Batch for Echo {
        type Item = u32;
        type Output = u32;

        async fn run(&self, items: Vec<u32>) -> Vec<Result<u32, StoreError>> {
            items.into_iter().map(Ok).collect()
        }
    }

    /// Answers every item with its own value, at once, and records the batch sizes.
    #[derive(Default)]
    struct Sizes(Mutex<Vec<usize>>);

    impl Batch for Sizes {
        type Item = u32;
        type Output = u32;

        async fn run(&self, items: Vec<u32>) -> Vec<Result<u32, StoreError>> {
            self.0.lock().unwrap().push(items.len());
            items.into_iter().map(Ok).collect()
        }
    }

    #[tokio::test]
    async fn a_lingering_batch_waits_for_items_a_moment_apart_though_a_slot_is_free() {
        let batcher = Arc::new(
            Batcher::new(Sizes::default(), 2, 64, "test").lingering(Duration::from_millis(300)),
        );
        let mut waiting = Vec::new();
        for n in 0..3 {
            let batcher = Arc::clone(&batcher);
            waiting.push(tokio::spawn(
                async move { batcher.submit(n).await.unwrap() },
            ));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (n, waiting) in (0..3).zip(waiting) {
            assert_eq!(waiting.await.unwrap(), n);
        }
        assert_eq!(*batcher.batch.0.lock().unwrap(), vec![3]);

        // Without the linger, the same items go one by one.
        let eager = Arc::new(Batcher::new(Sizes::default(), 2, 64, "test"));
        for n in 0..3 {
            assert_eq!(eager.submit(n).await.unwrap(), n);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(*eager.batch.0.lock().unwrap(), vec![1, 1, 1]);
    }

    #[tokio::test]
    async fn a_lingering_batch_is_run_when_its_time_is_up_or_it_is_full() {
        let batcher = Arc::new(
            Batcher::new(Sizes::default(), 1, 4, "test").lingering(Duration::from_millis(50)),
        );
        // Alone: run once the linger is over.
        let started = std::time::Instant::now();
        assert_eq!(batcher.submit(7).await.unwrap(), 7);
        assert!(started.elapsed() >= Duration::from_millis(50));
        // Full before the time is up: run at once, the rest in the next batch.
        let waiting: Vec<_> = (0..6)
            .map(|n| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move { batcher.submit(n).await.unwrap() })
            })
            .collect();
        for (n, waiting) in (0..6).zip(waiting) {
            assert_eq!(waiting.await.unwrap(), n);
        }
        assert_eq!(*batcher.batch.0.lock().unwrap(), vec![1, 4, 2]);
    }

    #[test]
    fn a_batcher_outlives_the_runtime_it_started_on() {
        let batcher = Batcher::new(Echo, 2, 8, "test");
        for n in 0..3 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            assert_eq!(runtime.block_on(batcher.submit(n)).unwrap(), n);
        }
    }
}
