//! A producer instance with a handle on its topic, for the send of every
//! postback. rdkafka's `BaseProducer::send` names the topic on each send: a
//! C string made per message, which librdkafka then looks up in its topic
//! list under a lock. Sending by handle takes the topic's reference count
//! instead. One of the modules with unsafe code: the handle and the send by
//! handle have no safe binding.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::ops::Deref;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use rdkafka::bindings as rd;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, Producer as _, ProducerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::IntoOpaque;

/// librdkafka's `RD_KAFKA_PARTITION_UA`: the partitioner picks the partition.
const UNASSIGNED: i32 = -1;

/// A producer and its handle on the topic. The handle is released before the
/// producer can be: it holds a reference to it.
pub(crate) struct Instance<C: ProducerContext + 'static> {
    topic: NonNull<rd::rd_kafka_topic_t>,
    producer: Arc<BaseProducer<C>>,
}

// SAFETY: a topic handle is reference-counted and thread-safe inside
// librdkafka (any thread may produce through it); the producer is Send and
// Sync itself.
unsafe impl<C: ProducerContext + 'static> Send for Instance<C> {}
unsafe impl<C: ProducerContext + 'static> Sync for Instance<C> {}

impl<C: ProducerContext + 'static> Instance<C> {
    /// `producer` with a handle on `topic`, created with the producer's
    /// topic settings (as a send that names the topic would create it).
    pub(crate) fn new(producer: Arc<BaseProducer<C>>, topic: &str) -> anyhow::Result<Instance<C>> {
        let name = CString::new(topic)?;
        // SAFETY: the producer is alive (held in the struct); librdkafka
        // copies the name; a null configuration means the producer's default
        // topic configuration. The handle is released in `drop`.
        let handle = unsafe {
            rd::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                ptr::null_mut(),
            )
        };
        let topic = NonNull::new(handle)
            .ok_or_else(|| anyhow::anyhow!("librdkafka gave no handle on the topic {topic}"))?;
        Ok(Instance { topic, producer })
    }

    /// Queues a message with `key`, `payload` (both copied) and `headers`
    /// (name, value) for the topic, at a partition of librdkafka's
    /// partitioner. The verdict comes to the context's delivery callback
    /// with `opaque`; when the message is not queued, the error and `opaque`
    /// come back.
    pub(crate) fn send(
        &self,
        key: &[u8],
        payload: &[u8],
        headers: &[(&str, &[u8])],
        opaque: C::DeliveryOpaque,
    ) -> Result<(), (RDKafkaErrorCode, C::DeliveryOpaque)> {
        // SAFETY: `rd_kafka_headers_new` returns an owned list (it aborts on
        // allocation failure); each name and value is copied by
        // `rd_kafka_header_add`, their lengths given.
        let list = unsafe {
            let list = rd::rd_kafka_headers_new(headers.len());
            for (name, value) in headers {
                rd::rd_kafka_header_add(
                    list,
                    name.as_ptr().cast(),
                    name.len() as isize,
                    value.as_ptr().cast(),
                    value.len() as isize,
                );
            }
            list
        };
        let opaque = opaque.into_ptr();
        // SAFETY: the producer and the topic handle are alive (held by
        // `self`); with F_COPY librdkafka copies the key and the payload
        // before it returns. Each argument has the C type its tag announces:
        // a topic handle, an int32 partition, an int flag, a pointer and a
        // size_t length, an opaque pointer, a headers list; the list ends with
        // END. On success librdkafka owns the headers and will hand `opaque`
        // to the delivery callback; on failure it took neither.
        let err: RDKafkaRespErr = unsafe {
            use rd::rd_kafka_vtype_t::*;
            rd::rd_kafka_producev(
                self.producer.client().native_ptr(),
                RD_KAFKA_VTYPE_RKT,
                self.topic.as_ptr(),
                RD_KAFKA_VTYPE_PARTITION,
                UNASSIGNED,
                RD_KAFKA_VTYPE_MSGFLAGS,
                rd::RD_KAFKA_MSG_F_COPY,
                RD_KAFKA_VTYPE_VALUE,
                payload.as_ptr(),
                payload.len(),
                RD_KAFKA_VTYPE_KEY,
                key.as_ptr(),
                key.len(),
                RD_KAFKA_VTYPE_OPAQUE,
                opaque,
                RD_KAFKA_VTYPE_HEADERS,
                list,
                RD_KAFKA_VTYPE_END,
            )
        };
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Ok(());
        }
        // SAFETY: not queued: the list is still ours to free, and `opaque`
        // is the pointer `into_ptr` made above, taken back once.
        unsafe {
            rd::rd_kafka_headers_destroy(list);
            Err((
                RDKafkaErrorCode::from(err),
                C::DeliveryOpaque::from_ptr(opaque),
            ))
        }
    }
}

impl<C: ProducerContext + 'static> Deref for Instance<C> {
    type Target = BaseProducer<C>;

    fn deref(&self) -> &BaseProducer<C> {
        &self.producer
    }
}

impl<C: ProducerContext + 'static> Drop for Instance<C> {
    fn drop(&mut self) {
        // SAFETY: the handle was made in `new` and is released once, while
        // the producer it belongs to is still held (the field drops after).
        unsafe { rd::rd_kafka_topic_destroy(self.topic.as_ptr()) }
    }
}
