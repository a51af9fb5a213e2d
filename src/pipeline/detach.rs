//! A future that finishes even when its caller stops waiting for it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Runs `F` in place, in the task that awaits it; if that task drops it
/// before it is done (hyper drops a request's future, the pipeline's with
/// it, when the client hangs up), the rest of `F` moves to a task of its own
/// and still finishes.
///
/// This is what spawning `F` and awaiting its handle gives, without a task,
/// a wake-up and a poll more for every request that runs to its end.
pub struct Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    inner: Option<Pin<Box<F>>>,
}

impl<F> Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    pub fn new(f: F) -> Self {
        Detachable {
            inner: Some(Box::pin(f)),
        }
    }
}

impl<F> Future for Detachable<F>
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

impl<F> Drop for Detachable<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(rest) = self.inner.take() {
            // Without a runtime (it is being torn down) no task could run it.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test]
    async fn runs_in_place_to_its_end() {
        let (tx, rx) = oneshot::channel();
        let out = Detachable::new(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(7);
            "out"
        })
        .await;
        assert_eq!(out, "out");
        assert_eq!(rx.await, Ok(7));
    }

    #[tokio::test]
    async fn finishes_after_the_caller_gave_up() {
        let (go, wait) = oneshot::channel::<()>();
        let (done, finished) = oneshot::channel();
        let work = Detachable::new(async move {
            let _ = wait.await;
            let _ = done.send("finished");
        });
        // The caller stops waiting while the work is half-way.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), work).await;
        assert!(gave_up.is_err());
        go.send(()).unwrap();
        assert_eq!(finished.await, Ok("finished"));
    }
}
