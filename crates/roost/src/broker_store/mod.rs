//! The broker's state in the database: the [`Persistence`] the broker records its changes to,
//! the writer that commits them in groups, and the restore at start.
//!
//! Architecture: like `ingest`, this knows neither SQL (that is `store`) nor MQTT bytes; it
//! turns the broker's [`StateChange`]s into rows and back.

mod net;
mod restore;
mod rows;

pub use restore::restore;

use crate::broker::{NotStored, Persistence, Receipt, StateChange};
use crate::health::CommitHealth;
use crate::store::Store;
use net::NetChanges;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Most changes in one transaction.
const MAX_BATCH: usize = 50_000;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

enum Op {
    Change(StateChange),
    /// Resolved once every change sent before it is committed.
    Barrier(Barrier),
}

/// The broker's [`Persistence`]: changes go, in order, to [`run_state_writer`]. Never waits:
/// how much can be in the queue is bounded by what waits on it (publishers wait for their
/// acknowledgements, subscribers for their in-flight windows).
#[derive(Clone)]
pub struct BrokerStore {
    ops: mpsc::UnboundedSender<Op>,
}

/// The receiving end, for [`run_state_writer`].
pub struct StateQueue(mpsc::UnboundedReceiver<Op>);

impl BrokerStore {
    pub fn new() -> (Self, StateQueue) {
        let (ops, queue) = mpsc::unbounded_channel();
        (Self { ops }, StateQueue(queue))
    }
}

impl Persistence for BrokerStore {
    fn record(&self, change: StateChange) {
        if self.ops.send(Op::Change(change)).is_err() {
            // Only after the writer stopped (shutdown): nothing waits for it any more.
            debug!("broker state change after the state writer stopped; not stored");
        }
    }

    fn committed(&self) -> Option<Receipt> {
        let (tx, rx) = oneshot::channel();
        // If the writer is gone, the dropped sender fails the receipt: not acknowledged.
        let _ = self.ops.send(Op::Barrier(tx));
        Some(rx)
    }
}

/// Commits broker state changes until `stop` is cancelled, then commits what is still queued
/// and returns. A failed commit is retried with backoff, holding its batch (the
/// acknowledgements waiting on it wait too); one the database refuses is logged and its
/// waiters fail (those clients are disconnected without an acknowledgement and resend).
/// `health` says whether commits fail, for `/healthz` and `/metrics`.
pub async fn run_state_writer(store: Arc<Store>, StateQueue(mut queue): StateQueue, health: Arc<CommitHealth>, stop: CancellationToken) {
    let writer = StateWriter { store: &store, health: &health };
    loop {
        let first = tokio::select! {
            op = queue.recv() => op,
            _ = stop.cancelled() => break,
        };
        let Some(first) = first else { break };
        let (changes, barriers) = take_batch(first, &mut queue);
        if !writer.commit(changes, barriers, Some(&stop)).await {
            break;
        }
    }
    // Shutting down: the sessions are closed; what they recorded last is written now.
    while let Ok(first) = queue.try_recv() {
        let (changes, barriers) = take_batch(first, &mut queue);
        if !writer.commit(changes, barriers, None).await {
            break;
        }
    }
    info!("broker state writer stopped");
}

fn take_batch(first: Op, queue: &mut mpsc::UnboundedReceiver<Op>) -> (NetChanges, Vec<Barrier>) {
    let mut changes = NetChanges::default();
    let mut barriers = Vec::new();
    let mut next = Some(first);
    while let Some(op) = next {
        match op {
            Op::Change(change) => changes.add(change),
            Op::Barrier(barrier) => barriers.push(barrier),
        }
        next = if changes.len() < MAX_BATCH { queue.try_recv().ok() } else { None };
    }
    (changes, barriers)
}

/// Whom to tell once a batch is committed.
type Barrier = oneshot::Sender<Result<(), NotStored>>;

/// Commits batches of broker state and reports how that goes.
struct StateWriter<'a> {
    store: &'a Store,
    health: &'a CommitHealth,
}

impl StateWriter<'_> {
    /// Commits one batch, retrying transient failures (until `stop`, if given: at shutdown the
    /// last batch gets a few attempts). Returns false if it gave up.
    async fn commit(&self, changes: NetChanges, barriers: Vec<Barrier>, stop: Option<&CancellationToken>) -> bool {
        let taken = tokio::time::Instant::now();
        self.health.writing(taken);
        let done = self.commit_with_retries(changes, barriers, stop).await;
        self.health.settled(taken);
        done
    }

    async fn commit_with_retries(&self, changes: NetChanges, barriers: Vec<Barrier>, stop: Option<&CancellationToken>) -> bool {
        let count = changes.len();
        let batch = changes.into_batch();
        let mut delay = FIRST_RETRY;
        loop {
            let error = if batch.is_empty() { None } else { self.store.write_broker_state(&batch).await.err() };
            let Some(error) = error else {
                if let Some(failing_for) = self.health.committed() {
                    info!(after = ?failing_for, "broker state: commits succeed again");
                }
                for barrier in barriers {
                    let _ = barrier.send(Ok(()));
                }
                return true;
            };
            let failure = error.failure();
            if !failure.is_transient() {
                error!(error = %error, changes = count, "broker state: the database refused a batch; its acknowledgements are withheld");
                for barrier in barriers {
                    let _ = barrier.send(Err(NotStored::Refused(error.to_string())));
                }
                return true;
            }
            if self.health.commit_failed(failure, error.to_string()) {
                error!(problem = %failure, error = %error, changes = count,
                "broker state: commits are failing; holding the acknowledgements that wait on them and retrying");
            } else {
                debug!(error = %error, retry_in = ?delay, "broker state commit failed again");
            }
            match stop {
                Some(stop) => {
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => {
                            warn!(changes = count, "giving up on uncommitted broker state at shutdown; it was not acknowledged");
                            return false;
                        }
                    }
                }
                None if delay >= MAX_RETRY => {
                    warn!(changes = count, "giving up on uncommitted broker state at shutdown; it was not acknowledged");
                    return false;
                }
                None => tokio::time::sleep(delay).await,
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
    }
}
