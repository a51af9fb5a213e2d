//! Delivery reports served on the runtime. One of the modules with unsafe code:
//! librdkafka's queue wake-up (`rd_kafka_queue_io_event_enable`) has no safe binding.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::producer::{BaseProducer, Producer as _, ProducerContext};

/// Polls at most this many report events before letting requests run.
const ROUND: usize = 4096;

/// Serves the producer's delivery reports on the runtime instead of on a
/// polling thread of its own: librdkafka writes a byte to a socket when its
/// report queue turns non-empty, and a task polls the queue empty. A verdict
/// then wakes its request on the same worker, without a thread hand-off.
pub(crate) struct Reports<C: ProducerContext> {
    queue: *mut rd::rd_kafka_queue_t,
    wake: tokio::net::UnixStream,
    /// The end librdkafka writes to; closed only after it stopped writing.
    _write: std::os::unix::net::UnixStream,
    /// Dropped after `drop` has unregistered the fd and released the queue.
    producer: Arc<BaseProducer<C>>,
}

// SAFETY: the queue handle is reference-counted and thread-safe inside
// librdkafka; the other fields are Send and Sync themselves.
unsafe impl<C: ProducerContext> Send for Reports<C> {}
unsafe impl<C: ProducerContext> Sync for Reports<C> {}

impl<C: ProducerContext + 'static> Reports<C> {
    pub fn new(producer: Arc<BaseProducer<C>>) -> std::io::Result<Reports<C>> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        // librdkafka ignores a failed write; a full socket just means a wake-up is pending.
        write.set_nonblocking(true)?;
        let wake = tokio::net::UnixStream::from_std(read)?;
        const BYTE: u8 = 1;
        // SAFETY: the producer is alive (held in the struct); the queue
        // reference taken here is released in `drop`, after the fd is
        // unregistered. librdkafka copies the payload byte.
        let queue = unsafe {
            let q = rd::rd_kafka_queue_get_main(producer.client().native_ptr());
            rd::rd_kafka_queue_io_event_enable(
                q,
                std::os::fd::AsRawFd::as_raw_fd(&write),
                std::ptr::from_ref(&BYTE).cast(),
                1,
            );
            q
        };
        Ok(Reports {
            queue,
            wake,
            _write: write,
            producer,
        })
    }

    fn pending(&self) -> usize {
        // SAFETY: the queue reference is held until `drop`.
        unsafe { rd::rd_kafka_queue_length(self.queue) }
    }

    /// Runs until the sink lets go of the producer, then destroys it.
    pub async fn serve(self) {
        let mut buf = [0u8; 64];
        loop {
            // Clear the wake-ups before polling: a report queued after the
            // queue is polled empty writes a new one.
            while matches!(self.wake.try_read(&mut buf), Ok(n) if n > 0) {}
            let mut served = 0;
            while self.pending() > 0 && served < ROUND {
                self.producer.poll(Duration::ZERO);
                served += 1;
            }
            if served == ROUND {
                // A long backlog: let requests run between rounds.
                tokio::task::yield_now().await;
                continue;
            }
            // Only this task holds the producer: the sink is gone, or replaced
            // it. Destroying a producer waits for its threads: off the
            // runtime, and within this task, so that its owner waits for it.
            if Arc::strong_count(&self.producer) == 1 {
                let _ = tokio::task::spawn_blocking(move || drop(self)).await;
                return;
            }
            // The timeout is a safety net; the socket normally answers first.
            let _ = tokio::time::timeout(Duration::from_millis(100), self.wake.readable()).await;
        }
    }
}

impl<C: ProducerContext> Drop for Reports<C> {
    fn drop(&mut self) {
        // SAFETY: unregister the fd before it closes, then release the queue;
        // the producer itself is dropped after this, with the fields.
        unsafe {
            rd::rd_kafka_queue_io_event_enable(self.queue, -1, std::ptr::null(), 0);
            rd::rd_kafka_queue_destroy(self.queue);
        }
    }
}
