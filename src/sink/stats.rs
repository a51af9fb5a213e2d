//! librdkafka's own statistics (`statistics.interval.ms`, every 5 s by
//! default) as a few gauges: the producer queue and, per broker of the
//! cluster, its state, round trip and requests in flight. Labels are bounded
//! by the cluster's size: brokers are named by node id, and the bootstrap and
//! internal pseudo-brokers (no node id) are left out.

use rdkafka::statistics::{Broker, Statistics};

use crate::metrics as m;

/// Sets the gauges from one statistics report of the producer.
pub(crate) fn record(stats: &Statistics, metrics: &m::Metrics) {
    for (gauge, value) in [
        (m::KAFKA_QUEUE_MESSAGES, stats.msg_cnt),
        (m::KAFKA_QUEUE_BYTES, stats.msg_size),
        (m::KAFKA_QUEUE_MAX_MESSAGES, stats.msg_max),
        (m::KAFKA_QUEUE_MAX_BYTES, stats.msg_size_max),
    ] {
        metrics.gauge(gauge).set(value as f64);
    }
    for b in stats.brokers.values().filter(|b| b.nodeid >= 0) {
        broker(b, metrics);
    }
}

fn broker(b: &Broker, metrics: &m::Metrics) {
    let id = b.nodeid.to_string();
    let broker = [("broker", id.as_str())];
    metrics
        .gauge_with(m::KAFKA_BROKER_UP, &broker)
        .set(up(&b.state));
    metrics
        .gauge_with(m::KAFKA_BROKER_IN_FLIGHT, &broker)
        .set(b.waitresp_cnt as f64);
    metrics
        .gauge_with(m::KAFKA_BROKER_QUEUED, &broker)
        .set(b.outbuf_cnt as f64);
    // Without a request in the window there is no round trip to show: the
    // last one stays.
    if let Some(rtt) = b.rtt.as_ref().filter(|w| w.cnt > 0) {
        for (quantile, micros) in [("0.5", rtt.p50), ("0.99", rtt.p99)] {
            metrics
                .gauge_with(
                    m::KAFKA_BROKER_RTT,
                    &[("broker", &id), ("quantile", quantile)],
                )
                .set(micros as f64 / 1e6);
        }
    }
}

/// 1 for a broker the producer is connected to (`UP`), 0 otherwise
/// (`DOWN`, `CONNECT`, `AUTH`, ... and `INIT` before the first connection).
fn up(state: &str) -> f64 {
    if state == "UP" {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as librdkafka writes it, trimmed to what is read here.
    const REPORT: &str = r#"{"name":"rdkafka#producer-1","client_id":"rdkafka","type":"producer",
        "ts":1,"time":1,"age":1,"replyq":0,"msg_cnt":7,"msg_size":2048,"msg_max":200000,
        "msg_size_max":1073741824,"tx":0,"tx_bytes":0,"rx":0,"rx_bytes":0,"txmsgs":0,
        "txmsg_bytes":0,"rxmsgs":0,"rxmsg_bytes":0,"simple_cnt":0,"metadata_cache_cnt":1,
        "brokers":{},"topics":{}}"#;

    #[test]
    fn only_up_counts_as_up() {
        assert_eq!(up("UP"), 1.0);
        for s in [
            "DOWN",
            "INIT",
            "CONNECT",
            "AUTH",
            "APIVERSION_QUERY",
            "TRY_CONNECT",
        ] {
            assert_eq!(up(s), 0.0, "{s}");
        }
    }

    #[test]
    fn a_report_parses_and_records_without_brokers() {
        let stats: Statistics = serde_json::from_str(REPORT).unwrap();
        assert_eq!((stats.msg_cnt, stats.msg_size), (7, 2048));
        let metrics = m::Metrics::new();
        record(&stats, &metrics);
        let text = metrics.render();
        assert!(
            text.lines()
                .any(|l| l == "postback_kafka_producer_queue_messages 7"),
            "{text}"
        );
    }
}
