//! `check-config --connect`: the checks an operator runs before a rollout,
//! against the cluster the config names. Each check prints one line; any
//! failed check makes the command exit non-zero. Nothing is written to the
//! topic: the write permission is read from the cluster's authorizer.

mod acl;

use crate::sync::LockAnyway;
use std::net::ToSocketAddrs;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer as _, ProducerContext};

use crate::config::kafka::client_config;
use crate::config::KafkaConfig;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// As it should be.
    Ok,
    /// Works, but not as a production deployment should be.
    Warn,
    /// The gateway cannot work like this.
    Fail,
}

/// One check's line.
#[derive(Debug)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it came out.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = match self.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        write!(f, "{mark} {}: {}", self.name, self.detail)
    }
}

/// Keeps what librdkafka reports while the checks run: a failed handshake
/// or authentication is said there, not in the failed request's error.
#[derive(Default)]
struct Recorder {
    said: Mutex<Vec<String>>,
}

impl Recorder {
    fn note(&self, what: String) {
        let mut said = self.said.lock_anyway();
        if said.len() < 32 {
            said.push(what);
        }
    }

    /// The cause: a refused handshake or login before the "all brokers
    /// down" that follows it.
    fn cause(&self) -> Option<String> {
        let said = self.said.lock_anyway();
        said.iter()
            .find(|s| s.contains("SSL") || s.contains("SASL") || s.contains("uthentication"))
            .or(said.first())
            .cloned()
    }
}

impl ClientContext for Recorder {
    fn log(&self, level: RDKafkaLogLevel, _fac: &str, message: &str) {
        use RDKafkaLogLevel as L;
        if matches!(level, L::Emerg | L::Alert | L::Critical | L::Error) {
            self.note(message.to_owned());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note(format!("{error}: {reason}"));
    }
}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Runs every check against `brokers`, in order; a check whose premise
/// failed is not run.
pub async fn run(cfg: &KafkaConfig, brokers: &str, timeout: Duration) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut check = |name, verdict, detail: String| {
        checks.push(Check {
            name,
            verdict,
            detail,
        })
    };
    let unresolved: Vec<String> = brokers
        .split(',')
        .map(str::trim)
        .filter(|b| !b.to_socket_addrs().is_ok_and(|mut a| a.next().is_some()))
        .map(str::to_owned)
        .collect();
    if unresolved.is_empty() {
        check("resolve", Verdict::Ok, brokers.to_owned());
    } else {
        check(
            "resolve",
            Verdict::Fail,
            format!("cannot resolve {}", unresolved.join(", ")),
        );
        return checks;
    }

    // A producer's handle, not an admin client's: librdkafka hands a failed
    // handshake or login to the context only when the handle is polled.
    let client: BaseProducer<Recorder> =
        match client_config(cfg, Some(brokers)).create_with_context(Recorder::default()) {
            Ok(c) => c,
            Err(e) => {
                check("connect", Verdict::Fail, e.to_string());
                return checks;
            }
        };
    let protocol = cfg
        .properties
        .get("security.protocol")
        .map_or("PLAINTEXT", String::as_str)
        .to_ascii_uppercase();
    let mechanism = cfg
        .properties
        .get("sasl.mechanism")
        .or_else(|| cfg.properties.get("sasl.mechanisms"))
        .map_or("GSSAPI", String::as_str);
    let topic = cfg.topic.clone();
    let md = client.client().fetch_metadata(Some(&topic), timeout);
    let md = match md {
        Ok(md) => md,
        Err(e) => {
            for _ in 0..5 {
                client.poll(Duration::from_millis(100));
            }
            let said = client.context().cause();
            check(
                "connect and authenticate",
                Verdict::Fail,
                match said {
                    Some(s) => format!("{e}; librdkafka: {s}"),
                    None => e.to_string(),
                },
            );
            return checks;
        }
    };
    let how = if protocol.starts_with("SASL") {
        format!("{protocol}, {mechanism}")
    } else {
        protocol
    };
    check(
        "connect and authenticate",
        Verdict::Ok,
        format!("{} broker(s) over {how}", md.brokers().len()),
    );

    let Some(t) = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    else {
        let (replication, min_insync) =
            crate::sink::kafka::replication_for(cfg, md.brokers().len());
        check(
            "topic",
            Verdict::Warn,
            format!(
                "{topic} does not exist: the gateway creates it at start ({} partitions, \
                 replication {replication}, min.insync.replicas {}) if this principal may \
                 create topics",
                cfg.topic_partitions,
                min_insync.map_or("the broker's default".into(), |m| m.to_string())
            ),
        );
        return checks;
    };
    let partitions = t.partitions().len();
    let replication = t
        .partitions()
        .iter()
        .map(|p| p.replicas().len())
        .min()
        .unwrap_or(0);
    check(
        "topic",
        Verdict::Ok,
        format!("{topic}: {partitions} partition(s)"),
    );
    check(
        "replication",
        if replication >= 3 {
            Verdict::Ok
        } else {
            Verdict::Warn
        },
        if replication >= 3 {
            format!("{replication} replicas")
        } else {
            format!("{replication} replica(s): an acknowledged event is on {replication} broker(s) only")
        },
    );

    let admin: AdminClient<DefaultClientContext> = match client_config(cfg, Some(brokers)).create()
    {
        Ok(a) => a,
        Err(e) => {
            check("min.insync.replicas", Verdict::Warn, e.to_string());
            return checks;
        }
    };
    let resource = ResourceSpecifier::Topic(&topic);
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let min_insync = match admin.describe_configs([&resource], &opts).await {
        Ok(results) => results
            .into_iter()
            .next()
            .and_then(Result::ok)
            .and_then(|r| {
                r.get("min.insync.replicas")
                    .and_then(|e| e.value.as_deref()?.parse::<usize>().ok())
            }),
        Err(_) => None,
    };
    match min_insync {
        None => check(
            "min.insync.replicas",
            Verdict::Warn,
            "the cluster did not say (DescribeConfigs)".into(),
        ),
        Some(m) if m > replication => check(
            "min.insync.replicas",
            Verdict::Fail,
            format!("{m}, above the topic's {replication} replica(s): no write can succeed"),
        ),
        Some(m) if replication >= 3 && m < 2 => check(
            "min.insync.replicas",
            Verdict::Warn,
            format!("{m}: acks=all is satisfied by a single broker; set 2"),
        ),
        Some(m) => check("min.insync.replicas", Verdict::Ok, m.to_string()),
    }

    match acl::write_allowed(client.client(), &topic, timeout) {
        Ok(acl::Write::Allowed) => check(
            "write",
            Verdict::Ok,
            "the authorizer lets this principal write".into(),
        ),
        Ok(acl::Write::Denied(ops)) => check(
            "write",
            Verdict::Fail,
            format!(
                "the authorizer does not let this principal write to {topic} (operations {ops:?})"
            ),
        ),
        Ok(acl::Write::NotReported) => check(
            "write",
            Verdict::Warn,
            "the cluster reports no authorized operations (no authorizer, or a broker \
             without KIP-430): not checked"
                .into(),
        ),
        Err(e) => check(
            "write",
            Verdict::Warn,
            format!("cannot ask the authorizer: {e}"),
        ),
    }
    checks
}
