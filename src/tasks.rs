//! Background tasks with an owner. Every task the gateway runs beside the
//! requests (the dedup sweeper, the Kafka watcher and delivery-report servers,
//! the spool's drainer, metrics upkeep, the SIGHUP listener, the listeners
//! themselves, a delivery that outlives a client who hung up) is spawned
//! through [`Tasks`]: it can watch one cancellation
//! token, `run` waits for it at shutdown within the grace period, and a panic
//! in it is logged at ERROR with the task's name and counted in
//! `postback_task_panics_total{task}`. A task that panicked is not restarted.
#![warn(missing_docs)]

use crate::sync::LockAnyway;
use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use crate::backoff::Backoff;
use crate::metrics as m;

/// The public listener's accept loop.
pub const PUBLIC_LISTENER: &str = "public-listener";
/// The admin listener's accept loop.
pub const ADMIN_LISTENER: &str = "admin-listener";
/// Expires dedup keys, prunes the per-client buckets, logs refusal summaries.
pub const DEDUP_SWEEPER: &str = "dedup-sweeper";
/// Reloads the sources on SIGHUP.
pub const RELOADER: &str = "reloader";
/// Folds histogram samples into their buckets once a second.
pub const METRICS_UPKEEP: &str = "metrics-upkeep";
/// Replaces a broken producer, probes the cluster, makes a missing topic.
pub const KAFKA_WATCHER: &str = "kafka-watcher";
/// Serves one producer instance's delivery reports.
pub const KAFKA_REPORTS: &str = "kafka-reports";
/// Moves spooled events to Kafka.
pub const SPOOL_DRAINER: &str = "spool-drainer";
/// One delivery of a spooled event, started by the drainer.
pub const DRAIN_DELIVERY: &str = "drain-delivery";
/// The spool's writer thread.
pub const SPOOL_WRITER: &str = "spool-writer";
/// The rest of a postback's delivery after its client hung up.
pub const DETACHED_DELIVERY: &str = "detached-delivery";

/// Every task name, for the metrics that exist from the start.
pub const NAMES: [&str; 11] = [
    PUBLIC_LISTENER,
    ADMIN_LISTENER,
    DEDUP_SWEEPER,
    RELOADER,
    METRICS_UPKEEP,
    KAFKA_WATCHER,
    KAFKA_REPORTS,
    SPOOL_DRAINER,
    DRAIN_DELIVERY,
    SPOOL_WRITER,
    DETACHED_DELIVERY,
];

/// Makes the task series exist from the start, at 0 (a panic counter that
/// appears only with the first panic cannot be alerted on by rate).
fn register_series(metrics: &m::Metrics) {
    for task in NAMES {
        metrics
            .counter_with(m::TASK_PANICS, &[("task", task)])
            .increment(0);
    }
    metrics
        .counter_with(m::TASK_RESTARTS, &[("task", SPOOL_DRAINER)])
        .increment(0);
}

impl Default for Tasks {
    fn default() -> Tasks {
        Tasks::with_metrics(m::Metrics::new())
    }
}

/// The owner of the gateway's background tasks: one cancellation token they
/// watch and one tracker that [`Tasks::shutdown`] waits on, and the
/// gateway's metrics they are counted in. Clones share all three.
#[derive(Clone)]
pub struct Tasks {
    metrics: m::Metrics,
    stop: CancellationToken,
    tracker: TaskTracker,
    /// Tasks running now, by name: the ones still running when the grace
    /// period ends are named in the warning.
    running: Arc<Mutex<BTreeMap<&'static str, usize>>>,
}

impl Tasks {
    /// An owner with no tasks yet, counting into metrics of its own.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// An owner with no tasks yet, counting into `metrics`, where its series
    /// exist from now on.
    pub fn with_metrics(metrics: m::Metrics) -> Tasks {
        register_series(&metrics);
        Tasks {
            metrics,
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            running: Default::default(),
        }
    }

    /// The metrics of the gateway these tasks belong to.
    pub fn metrics(&self) -> &m::Metrics {
        &self.metrics
    }

    /// The token every task watches; cancelled by [`Tasks::shutdown`]. A task
    /// that must stop earlier than the rest watches a child of it.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Spawns `task` under `name`. It runs until it returns; one that loops
    /// for ever watches [`Tasks::token`]. A panic in it is logged and counted.
    pub fn spawn<F>(&self, name: &'static str, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let running = self.running(name);
        let metrics = self.metrics.clone();
        self.tracker.spawn(async move {
            let _running = running;
            if let Err(panic) = (CatchUnwind(Box::pin(task))).await {
                report_panic(&metrics, name, panic.as_ref());
            }
        })
    }

    /// Spawns the task `make` builds under `name`, and builds and runs it
    /// again after a panic (logged and counted like any task's, and in
    /// `postback_task_restarts_total`), after a pause that doubles from one
    /// second to half a minute while it keeps panicking (jittered, see
    /// [`crate::backoff`]); until `stop` is
    /// cancelled or the task returns.
    pub(crate) fn spawn_restarting<F>(
        &self,
        name: &'static str,
        stop: CancellationToken,
        make: impl Fn() -> F + Send + 'static,
    ) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let running = self.running(name);
        let metrics = self.metrics.clone();
        self.tracker.spawn(async move {
            let _running = running;
            let mut pause = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
            loop {
                let started = tokio::time::Instant::now();
                match (CatchUnwind(Box::pin(make()))).await {
                    Ok(()) => return,
                    Err(panic) => report_panic(&metrics, name, panic.as_ref()),
                }
                if started.elapsed() > Duration::from_secs(60) {
                    pause.reset();
                }
                if stop
                    .run_until_cancelled(tokio::time::sleep(pause.next_pause()))
                    .await
                    .is_none()
                {
                    return;
                }
                metrics
                    .counter_with(m::TASK_RESTARTS, &[("task", name)])
                    .increment(1);
                tracing::warn!(task = name, "Restarted a background task after its panic.");
            }
        })
    }

    /// Counts a task (or a thread) as running under `name` until the guard drops.
    pub(crate) fn running(&self, name: &'static str) -> Running {
        *self.running.lock_anyway().entry(name).or_default() += 1;
        let gauge = self
            .metrics
            .gauge_with(m::BACKGROUND_TASKS, &[("task", name)]);
        gauge.increment(1.0);
        Running {
            name,
            running: self.running.clone(),
            gauge,
        }
    }

    /// Cancels the token and waits until every task has ended or `deadline`
    /// passes. Returns whether they all ended; if not, warns with the names
    /// of those still running (they end with the runtime).
    pub async fn shutdown(&self, deadline: Instant) -> bool {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_ok()
        {
            return true;
        }
        let left: Vec<&str> = self
            .running
            .lock_anyway()
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(name, _)| *name)
            .collect();
        warn!(
            tasks = %left.join(", "),
            "Background tasks did not stop within the grace period."
        );
        false
    }
}

/// One running task, uncounted when dropped (also when the runtime drops the
/// task without letting it finish).
pub(crate) struct Running {
    name: &'static str,
    running: Arc<Mutex<BTreeMap<&'static str, usize>>>,
    /// `postback_background_tasks{task}`.
    gauge: metrics::Gauge,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(n) = self.running.lock_anyway().get_mut(self.name) {
            *n = n.saturating_sub(1);
        }
        self.gauge.decrement(1.0);
    }
}

/// Logs a background task's panic at ERROR and counts it in `metrics`.
pub fn report_panic(metrics: &m::Metrics, task: &'static str, payload: &(dyn Any + Send)) {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    error!(
        task,
        panic = %what.escape_debug(),
        "A background task panicked and stopped; the gateway goes on without it. \
         Restart the instance."
    );
    metrics
        .counter_with(m::TASK_PANICS, &[("task", task)])
        .increment(1);
}

/// A future that turns a panic while it is polled into an `Err`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future<Output = ()>> Future for CatchUnwind<F> {
    type Output = Result<(), Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Unwind safe: after a panic the future is dropped, never polled or
        // looked at again.
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    fn running(tasks: &Tasks, name: &str) -> usize {
        tasks
            .running
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn shutdown_waits_for_a_task_that_takes_time_to_stop() {
        let tasks = Tasks::new();
        let stopped = Arc::new(AtomicBool::new(false));
        let (token, flag) = (tasks.token(), stopped.clone());
        tasks.spawn(DEDUP_SWEEPER, async move {
            token.cancelled().await;
            // Tidying up after the signal takes a while.
            tokio::time::sleep(Duration::from_millis(200)).await;
            flag.store(true, Ordering::SeqCst);
        });
        assert_eq!(running(&tasks, DEDUP_SWEEPER), 1);
        let all = tasks
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await;
        assert!(all);
        assert!(stopped.load(Ordering::SeqCst), "shutdown returned first");
        assert_eq!(running(&tasks, DEDUP_SWEEPER), 0);
    }

    #[tokio::test]
    async fn shutdown_gives_up_at_the_deadline() {
        let tasks = Tasks::new();
        tasks.spawn(KAFKA_WATCHER, std::future::pending());
        let started = Instant::now();
        let all = tasks
            .shutdown(Instant::now() + Duration::from_millis(100))
            .await;
        assert!(!all);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(running(&tasks, KAFKA_WATCHER), 1);
    }

    #[tokio::test]
    async fn a_panic_ends_the_task_and_not_the_owner() {
        let tasks = Tasks::new();
        let handle = tasks.spawn(SPOOL_DRAINER, async {
            tokio::task::yield_now().await;
            panic!("injected");
        });
        // The panic was caught inside the task: it ended normally.
        handle.await.expect("the task ends without a JoinError");
        assert_eq!(running(&tasks, SPOOL_DRAINER), 0);
        assert!(
            tasks
                .shutdown(Instant::now() + Duration::from_secs(1))
                .await
        );
    }
}
