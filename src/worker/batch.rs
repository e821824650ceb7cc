//! Groups the ledger writes of concurrent deliveries: each caller hands
//! one item and waits for its own answer, and a single task writes
//! whatever has queued up meanwhile in one statement.
//!
//! Nothing waits to fill a batch: an item that arrives on an idle queue is
//! written at once, alone; under load, the items that arrive while a
//! statement runs make up the next one. A busy worker thus pays one
//! transaction for many claims (or outcomes) instead of one each, which is
//! what bounds its throughput on a small Postgres.
//!
//! Hand-written (about forty lines) rather than taken from a crate: the
//! batching crates found batch by size or by a fixed delay, and both add
//! latency to an idle queue.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

type Request<I, O> = (I, oneshot::Sender<Result<O, String>>);

/// A handle to a batching task; cheap to clone.
pub(super) struct Batcher<I, O> {
    requests: mpsc::UnboundedSender<Request<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the task that calls `write` with up to `max` queued items at
    /// a time. `write` returns one answer per item, in order. The task
    /// ends when the last handle is dropped.
    pub(super) fn spawn<F, Fut>(max: usize, write: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<Vec<O>>> + Send,
    {
        let (requests, mut queue) = mpsc::unbounded_channel::<Request<I, O>>();
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut batch = vec![first];
                while batch.len() < max {
                    match queue.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                let (items, answers): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
                let n = items.len();
                match write(items).await {
                    Ok(outs) if outs.len() == n => {
                        for (answer, out) in answers.into_iter().zip(outs) {
                            let _ = answer.send(Ok(out));
                        }
                    }
                    Ok(outs) => {
                        let message = format!("a batch of {n} gave {} answers", outs.len());
                        for answer in answers {
                            let _ = answer.send(Err(message.clone()));
                        }
                    }
                    Err(e) => {
                        let message = format!("{e:#}");
                        for answer in answers {
                            let _ = answer.send(Err(message.clone()));
                        }
                    }
                }
            }
        });
        Self { requests }
    }

    /// Queues `item` and waits for its answer.
    pub(super) async fn call(&self, item: I) -> anyhow::Result<O> {
        let (answer, answered) = oneshot::channel();
        self.requests
            .send((item, answer))
            .map_err(|_| anyhow::anyhow!("the batch writer has stopped"))?;
        answered
            .await
            .map_err(|_| anyhow::anyhow!("the batch writer dropped the request"))?
            .map_err(|message| anyhow::anyhow!(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_calls_share_a_batch_and_get_their_own_answers() {
        let sizes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::spawn(64, move |items: Vec<u32>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(items.len());
                tokio::task::yield_now().await;
                Ok(items.into_iter().map(|i| i * 10).collect())
            }
        });
        let calls: Vec<_> = (0..20u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.call(i).await.unwrap()) })
            })
            .collect();
        for call in calls {
            let (i, out) = call.await.unwrap();
            assert_eq!(out, i * 10);
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert!(sizes.len() < 20, "no batching happened: {sizes:?}");
    }

    #[tokio::test]
    async fn a_failed_write_fails_every_caller_of_the_batch() {
        let batcher = Batcher::spawn(8, |_: Vec<u32>| async {
            Err::<Vec<u32>, _>(anyhow::anyhow!("database down"))
        });
        let e = batcher.call(1).await.unwrap_err();
        assert!(e.to_string().contains("database down"), "{e}");
    }
}
