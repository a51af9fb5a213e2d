//! What the Kafka side says in the gateway's log. librdkafka's own log lines
//! and global errors arrive at the level an operator should read them at
//! (a partition's end is not an error; a broker that is down is a warning),
//! and every kind of line (a librdkafka facility, an error code, a delivery
//! failure's cause) is written at most once a minute: the first at once, the
//! repeats as one line with their count when the minute is over.

use crate::sync::LockAnyway;
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::Level;

/// How often one kind of line may be written.
const INTERVAL: Duration = Duration::from_secs(60);
/// Kinds remembered at most; the kinds come from code (facilities, error
/// codes, causes), never from requests, so this only guards against surprises.
const MAX_KINDS: usize = 512;

/// Lines of one process, throttled by kind.
pub(crate) static LOG: LazyLock<Throttled> = LazyLock::new(|| Throttled::new(INTERVAL));

struct Seen {
    /// When this kind was last written.
    written: Instant,
    /// Lines of this kind held back since then, and the latest of them.
    held: u64,
    latest: String,
    level: Level,
}

/// Writes each kind of line at most once per interval, and the held-back
/// repeats of it as one line with their count.
pub(crate) struct Throttled {
    interval: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

impl Throttled {
    pub fn new(interval: Duration) -> Throttled {
        Throttled {
            interval,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Writes `text` at `level` unless a line of `kind` was written within
    /// the interval; then holds it back and counts it. Returns whether it was written.
    pub fn say(&self, kind: &str, level: Level, text: impl FnOnce() -> String) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock_anyway();
        if let Some(s) = seen.get_mut(kind) {
            if now.duration_since(s.written) < self.interval {
                s.held += 1;
                s.latest = text();
                return false;
            }
            let text = text();
            emit(level, &text, s.held);
            *s = Seen {
                written: now,
                held: 0,
                latest: text,
                level,
            };
            return true;
        }
        if seen.len() >= MAX_KINDS {
            seen.retain(|_, s| now.duration_since(s.written) < self.interval);
        }
        let text = text();
        emit(level, &text, 0);
        seen.insert(
            kind.to_owned(),
            Seen {
                written: now,
                held: 0,
                latest: text,
                level,
            },
        );
        true
    }

    /// Writes the held-back repeats of every kind whose interval is over, as
    /// one line each with their count. Call it every few seconds.
    pub fn flush(&self) {
        let now = Instant::now();
        let mut seen = self.seen.lock_anyway();
        for s in seen.values_mut() {
            if s.held > 0 && now.duration_since(s.written) >= self.interval {
                emit(s.level, &s.latest, s.held);
                s.written = now;
                s.held = 0;
            }
        }
    }
}

fn emit(level: Level, text: &str, held: u64) {
    let text = text.escape_debug();
    match level {
        Level::ERROR => tracing::error!(repeats = held, "{text}"),
        Level::WARN => tracing::warn!(repeats = held, "{text}"),
        Level::INFO => tracing::info!(repeats = held, "{text}"),
        Level::DEBUG => tracing::debug!(repeats = held, "{text}"),
        Level::TRACE => tracing::trace!(repeats = held, "{text}"),
    }
}

/// A librdkafka log line, at the gateway's level for it. librdkafka's
/// "errors" here are connection troubles it recovers from by itself; what
/// loses data is reported through delivery failures, so nothing from here is
/// above WARN.
pub(crate) fn librdkafka_log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    let level = match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error
        | RDKafkaLogLevel::Warning => Level::WARN,
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => Level::INFO,
        RDKafkaLogLevel::Debug => Level::DEBUG,
    };
    // Debug lines are asked for (librdkafka's `debug` property) and read whole.
    if level == Level::DEBUG {
        emit(level, &format!("librdkafka {facility}: {message}"), 0);
        return;
    }
    LOG.say(&format!("librdkafka/{facility}"), level, || {
        format!("librdkafka {facility}: {message}")
    });
}

/// Why the cluster refuses the gateway's connections, while it does: a
/// failed TLS handshake or SASL authentication is configuration (a password,
/// a CA), not an outage, and does not heal by waiting.
static REFUSAL: Mutex<Option<String>> = Mutex::new(None);

/// Why the cluster refuses the gateway's connections, if it does now.
pub(crate) fn refusal() -> Option<String> {
    REFUSAL.lock_anyway().clone()
}

/// The cluster took a request of the gateway's: any refusal is over.
pub(crate) fn accepted() {
    REFUSAL.lock_anyway().take();
}

/// A failed TLS handshake: its kind, and what to check.
const TLS_REFUSED: (&str, &str) = (
    "kafka-refusal/tls",
    "The TLS handshake with Kafka failed (check ssl.ca.location against the certificates \
     of the brokers, and ssl.certificate.location and ssl.key.location where the brokers \
     require a client certificate)",
);

/// The kind and the operator's words for a refusal of the connection
/// itself, with what to check. One kind per cause, whatever the error code
/// (a failed handshake arrives as `SSL` or as a transport error).
fn refusal_of(code: RDKafkaErrorCode, reason: &str) -> Option<(&'static str, String)> {
    let (kind, what) = match code {
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => (
            "kafka-refusal/login",
            "Kafka refuses the credentials (check sasl.mechanism, sasl.username, \
             sasl.password or the OAUTHBEARER settings)",
        ),
        RDKafkaErrorCode::SSL => TLS_REFUSED,
        // TLS 1.3 reports a refused client certificate on the first read, as
        // a transport error.
        RDKafkaErrorCode::BrokerTransportFailure if reason.contains("SSL") => TLS_REFUSED,
        _ => return None,
    };
    Some((kind, format!("{what}: {reason}")))
}

/// A global error of a librdkafka client, classified. Fatal errors are the
/// producer's watcher's to report (it replaces the producer); the end of a
/// partition is how a reader knows it caught up, not an error at all; a
/// refused handshake or login is an ERROR, and `/readyz` says it.
pub(crate) fn librdkafka_error(error: &KafkaError, reason: &str) {
    let code = error.rdkafka_error_code();
    if let Some((kind, refused)) = code.and_then(|c| refusal_of(c, reason)) {
        LOG.say(kind, Level::ERROR, || refused.clone());
        *REFUSAL.lock_anyway() = Some(refused);
        return;
    }
    let level = match code {
        Some(RDKafkaErrorCode::PartitionEOF) | Some(RDKafkaErrorCode::Fatal) => Level::DEBUG,
        _ => Level::WARN,
    };
    let kind = match code {
        Some(c) => format!("librdkafka-error/{c:?}"),
        None => "librdkafka-error/other".to_owned(),
    };
    LOG.say(&kind, level, || format!("Kafka client: {error}: {reason}"));
}

/// The context of the gateway's Kafka clients other than the producer
/// (readers, the admin client): their logs and errors go through [`LOG`].
#[derive(Clone, Copy, Default)]
pub(crate) struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        librdkafka_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        librdkafka_error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_written_once_per_interval_and_its_repeats_are_counted() {
        let t = Throttled::new(Duration::from_millis(200));
        assert!(t.say("a", Level::WARN, || "first".into()));
        assert!(!t.say("a", Level::WARN, || "second".into()));
        assert!(!t.say("a", Level::WARN, || "third".into()));
        assert!(t.say("b", Level::WARN, || "another kind".into()));
        {
            let seen = t.seen.lock().unwrap();
            assert_eq!(seen["a"].held, 2);
            assert_eq!(seen["a"].latest, "third");
        }
        // Not yet due: the repeats stay held.
        t.flush();
        assert_eq!(t.seen.lock().unwrap()["a"].held, 2);
        std::thread::sleep(Duration::from_millis(250));
        t.flush();
        assert_eq!(
            t.seen.lock().unwrap()["a"].held,
            0,
            "written with their count"
        );
        // The flush started a new interval for the kind.
        assert!(!t.say("a", Level::WARN, || "fourth".into()));
    }
}
