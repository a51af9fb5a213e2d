//! A future that finishes even when its caller stops waiting for it, the
//! rest of it then a task of the crate's task owner.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::tasks::Tasks;

/// Runs `F` in place, in the task that awaits it; if that task drops it
/// before it is done (hyper drops a request's future, the pipeline's with
/// it, when the client hangs up), the rest of `F` moves to a task of `tasks`
/// and still finishes: under its name, a panic in it logged and counted, and
/// waited for at shutdown. Its output is then dropped.
///
/// This is what spawning `F` and awaiting its handle gives, without a task,
/// a wake-up and a poll more for every request that runs to its end.
pub(super) struct Detachable<'t, F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    inner: Option<Pin<Box<F>>>,
    /// Who runs the rest when the caller lets go.
    tasks: &'t Tasks,
    /// The name of that task.
    name: &'static str,
}

impl<'t, F> Detachable<'t, F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    /// `f`, whose rest runs as the task `name` of `tasks` if it is dropped
    /// before it is done.
    pub(super) fn new(tasks: &'t Tasks, name: &'static str, f: F) -> Self {
        Detachable {
            inner: Some(Box::pin(f)),
            tasks,
            name,
        }
    }
}

impl<F> Future for Detachable<'_, F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    /// Polling again after the output was returned is a caller's bug: it panics.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let inner = self
            .inner
            .as_mut()
            .expect("Detachable polled after it returned");
        let done = inner.as_mut().poll(cx);
        if done.is_ready() {
            self.inner = None;
        }
        done
    }
}

impl<F> Drop for Detachable<'_, F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(rest) = self.inner.take() {
            // Without a runtime (it is being torn down) no task could run it.
            if tokio::runtime::Handle::try_current().is_ok() {
                self.tasks.spawn(self.name, async move {
                    rest.await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;
    use tokio::time::Instant;

    use super::*;
    use crate::tasks::DETACHED_DELIVERY;

    #[tokio::test]
    async fn runs_in_place_to_its_end() {
        let tasks = Tasks::new();
        let (tx, rx) = oneshot::channel();
        let out = Detachable::new(&tasks, DETACHED_DELIVERY, async move {
            tokio::task::yield_now().await;
            let _ = tx.send(7);
            "out"
        })
        .await;
        assert_eq!(out, "out");
        assert_eq!(rx.await, Ok(7));
    }

    #[tokio::test]
    async fn finishes_after_the_caller_gave_up_as_a_task_of_the_owner() {
        let tasks = Tasks::new();
        let (go, wait) = oneshot::channel::<()>();
        let (done, mut finished) = oneshot::channel();
        let work = Detachable::new(&tasks, DETACHED_DELIVERY, async move {
            let _ = wait.await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = done.send("finished");
        });
        // The caller stops waiting while the work is half-way.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), work).await;
        assert!(gave_up.is_err());
        go.send(()).unwrap();
        // The rest is a task of the owner: its shutdown waits for it. (A panic
        // in it is caught, logged and counted there: see src/tasks.rs.)
        let all_ended = tasks
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await;
        assert!(all_ended);
        assert_eq!(finished.try_recv(), Ok("finished"));
    }
}
