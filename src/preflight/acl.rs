//! What the cluster's authorizer lets this client do on a topic (KIP-430's
//! authorized operations), through librdkafka's DescribeTopics, which the
//! Rust binding does not wrap. One of the modules with unsafe code.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

/// `RD_KAFKA_ACL_OPERATION_ALL` and `_WRITE`, read as integers: an unknown
/// value from a newer broker must not become an invalid Rust enum.
const ALL: i32 = 2;
const WRITE: i32 = 4;

/// What the authorizer says of writing to a topic.
#[derive(Debug, PartialEq, Eq)]
pub enum Write {
    /// The operations include WRITE (or ALL).
    Allowed,
    /// The cluster listed the operations, and WRITE is not among them.
    Denied(Vec<i32>),
    /// The cluster lists no operations (no authorizer, or a broker that
    /// does not answer KIP-430's request).
    NotReported,
}

/// Asks the cluster which operations this client may perform on `topic`.
pub fn write_allowed<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Write, String> {
    let name = CString::new(topic).map_err(|_| "the topic name holds a NUL byte".to_owned())?;
    let rk = client.native_ptr();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: every handle made here is checked for null and destroyed
    // before returning; `rk` outlives the call (borrowed from `client`); the
    // result's topic descriptions are read before the event is destroyed.
    unsafe {
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
        );
        if options.is_null() {
            return Err("librdkafka has no DescribeTopics".into());
        }
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let e = rd::rd_kafka_AdminOptions_set_include_authorized_operations(options, 1);
        if !e.is_null() {
            rd::rd_kafka_error_destroy(e);
        }
        let mut names = [name.as_ptr()];
        let topics = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
        let queue = rd::rd_kafka_queue_new(rk);
        rd::rd_kafka_DescribeTopics(rk, topics, options, queue);
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(1000));
        let answer = read_answer(event);
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        rd::rd_kafka_TopicCollection_destroy(topics);
        rd::rd_kafka_AdminOptions_destroy(options);
        answer
    }
}

/// The answer in a DescribeTopics result event.
///
/// # Safety
/// `event` is null or a live event from `rd_kafka_DescribeTopics`.
unsafe fn read_answer(event: *mut rd::rd_kafka_event_t) -> Result<Write, String> {
    if event.is_null() {
        return Err("no answer in time".into());
    }
    if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(text(rd::rd_kafka_event_error_string(event)));
    }
    let result = rd::rd_kafka_event_DescribeTopics_result(event);
    if result.is_null() {
        return Err("an answer that is not DescribeTopics'".into());
    }
    let mut n = 0usize;
    let topics = rd::rd_kafka_DescribeTopics_result_topics(result, &mut n);
    if topics.is_null() || n == 0 {
        return Err("an empty answer".into());
    }
    let topic = *topics;
    let error = rd::rd_kafka_TopicDescription_error(topic);
    if !error.is_null()
        && rd::rd_kafka_error_code(error) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    {
        return Err(text(rd::rd_kafka_error_string(error)));
    }
    let mut count = 0usize;
    let ops = rd::rd_kafka_TopicDescription_authorized_operations(topic, &mut count);
    if ops.is_null() || count == 0 {
        return Ok(Write::NotReported);
    }
    let ops: Vec<i32> = std::slice::from_raw_parts(ops.cast::<i32>(), count).to_vec();
    Ok(if ops.iter().any(|&o| o == WRITE || o == ALL) {
        Write::Allowed
    } else {
        Write::Denied(ops)
    })
}

/// A C string from librdkafka, or a placeholder for null.
///
/// # Safety
/// `p` is null or a NUL-terminated string.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        "unknown error".into()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}
