//! Where accepted events go. The [`Sink`] trait is the seam between the
//! request path and Kafka; `sink/` knows events, never requests.
#![warn(missing_docs)]

pub(crate) mod durable;
pub mod embedded;
pub mod faults;
pub(crate) mod kafka;
pub(crate) mod logs;
mod produce;
mod reports;
pub mod spool;
mod stats;
pub(crate) mod warmup;

use std::future::Future;
use std::pin::Pin;

use crate::event::Event;

/// A boxed future, as the object-safe [`Sink`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an event was not made durable. Each `cause()` is a metric label.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The producer queue is full: backpressure, answered at once.
    #[error("the producer queue is full")]
    QueueFull,
    /// The broker did not acknowledge within the delivery wait.
    #[error("no acknowledgement within the delivery wait")]
    Timeout,
    /// The broker refused the message or the producer failed.
    #[error("kafka refused the event: {0}")]
    Kafka(String),
    /// The broker refused the message for good (too large for the topic, not
    /// authorized, invalid): sending it again cannot succeed.
    #[error("kafka refused the event for good: {0}")]
    Refused(String),
    /// The sink is shutting down.
    #[error("the sink is closed")]
    Closed,
    /// Kafka could not take the event and the spool is full.
    #[error("the spool is full")]
    SpoolFull,
    /// Kafka could not take the event and the spool could not be written.
    #[error("{0}")]
    Spool(String),
    /// The spool did not confirm the write in time (a stalled disk).
    #[error("the spool did not confirm the write in time")]
    SpoolTimeout,
}

impl SinkError {
    /// The metric label of this error (`postback_kafka_delivery_failures_total{cause}`).
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            SinkError::QueueFull => "queue_full",
            SinkError::Timeout => "timeout",
            SinkError::Kafka(_) => "kafka_error",
            SinkError::Refused(_) => "refused",
            SinkError::Closed => "closed",
            SinkError::SpoolFull => "spool_full",
            SinkError::Spool(_) => "spool_error",
            SinkError::SpoolTimeout => "spool_timeout",
        }
    }
}

/// Makes events durable. `deliver` resolves only when the event is durable
/// (acknowledged by the broker) or definitely not.
pub trait Sink: Send + Sync + 'static {
    /// Makes `event` durable, or says why not.
    fn deliver<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Whether events can be made durable now (for `/readyz`).
    fn ready(&self) -> bool {
        self.problem().is_none()
    }

    /// Why events cannot be made durable now, or why the instance must not
    /// take traffic (`/readyz` says it).
    fn problem(&self) -> Option<String>;

    /// Waits until everything enqueued is acknowledged or `timeout` passes.
    fn flush(&self, timeout: std::time::Duration) -> BoxFuture<'_, ()>;
}
