//! The librdkafka properties of `[kafka.properties]`: where their values come
//! from (the file, a mounted secret file, the environment), which of them the
//! gateway's promises depend on, which are secrets, and the one producer
//! configuration every client of the gateway is built from.
//!
//! Precedence, lowest first: the gateway's defaults (compression, linger,
//! queue size), `[kafka.properties]`, `[kafka.property_files]`, then
//! `KAFKA_PROPERTY_*` variables; the settings the gateway's promises depend
//! on (acks, idempotence, the delivery timeout) are set last and may not be
//! changed: a config that tries is refused, never silently overridden.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rdkafka::config::ClientConfig;

use super::{Env, KafkaConfig};

/// Prefix of the environment variables that set a librdkafka property:
/// `KAFKA_PROPERTY_SASL_PASSWORD` sets `sasl.password`.
pub const ENV_PREFIX: &str = "KAFKA_PROPERTY_";

/// The property a `KAFKA_PROPERTY_*` variable sets: the rest of its name,
/// lower-cased, `_` read as `.` (no librdkafka property has an `_`).
pub fn property_of_variable(var: &str) -> Option<String> {
    let rest = var.strip_prefix(ENV_PREFIX)?;
    if rest.is_empty() {
        return None;
    }
    Some(rest.to_ascii_lowercase().replace('_', "."))
}

/// Whether a property's value is a secret: never logged, printed or shown.
pub fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password")
        || n.contains("secret")
        || n.ends_with(".key.pem")
        || n == "ssl_key"
        || n == "sasl.oauthbearer.config"
        || n == "sasl.oauthbearer.assertion.private.key.pem"
}

/// `value`, or a mask when `name` is a secret.
pub fn shown(name: &str, value: &str) -> String {
    if is_secret(name) {
        "[redacted]".into()
    } else {
        value.to_owned()
    }
}

/// A setting the gateway's promises depend on: a user may repeat the value
/// the gateway sets, never change it.
struct Fixed {
    names: &'static [&'static str],
    /// Values (lower-case) that mean what the gateway needs.
    allowed: &'static [&'static str],
    why: &'static str,
}

const FIXED: &[Fixed] = &[
    Fixed {
        names: &["acks", "request.required.acks"],
        allowed: &["all", "-1"],
        why: "a 200 promises the event is on every in-sync replica, so the gateway always \
              sends with acks=all",
    },
    Fixed {
        names: &["enable.idempotence"],
        allowed: &["true"],
        why: "retries inside the producer must never write an event twice, so the \
              producer is always idempotent",
    },
    Fixed {
        names: &["message.timeout.ms", "delivery.timeout.ms"],
        allowed: &[],
        why: "the producer gives up on an event when its request does: set \
              [kafka] delivery_wait_ms instead",
    },
    Fixed {
        names: &["linger.ms", "queue.buffering.max.ms"],
        allowed: &[],
        why: "set [kafka] linger_ms instead (one setting, not two that disagree)",
    },
    Fixed {
        names: &["transactional.id"],
        allowed: &[],
        why: "the gateway's producer is idempotent, not transactional",
    },
    Fixed {
        names: &["bootstrap.servers", "metadata.broker.list"],
        allowed: &[],
        why: "name the brokers with KAFKA_BROKERS or [kafka] brokers",
    },
];

/// Collects the properties of the file, the secret files and the
/// environment, and checks them against the settings the gateway fixes.
pub(super) fn resolve(
    k: &mut KafkaConfig,
    file_props: BTreeMap<String, String>,
    property_files: BTreeMap<String, PathBuf>,
    env: &dyn Env,
    errors: &mut Vec<String>,
) {
    let mut props = file_props;
    for (name, path) in property_files {
        if props.contains_key(&name) {
            errors.push(format!(
                "kafka property {name} is given both in [kafka.properties] and in \
                 [kafka.property_files]: keep one"
            ));
            continue;
        }
        match std::fs::read_to_string(&path) {
            // A secret file written by `echo` or a Kubernetes editor ends in a newline.
            Ok(v) => {
                props.insert(name, v.trim_end_matches(['\r', '\n']).to_owned());
            }
            Err(e) => errors.push(format!(
                "kafka.property_files: cannot read {} for {name}: {e}",
                path.display()
            )),
        }
    }
    for (var, value) in env.with_prefix(ENV_PREFIX) {
        match property_of_variable(&var) {
            Some(name) => {
                props.insert(name, value);
            }
            None => errors.push(format!("{var} names no property")),
        }
    }
    for (name, value) in &props {
        let lower = name.to_ascii_lowercase();
        if let Some(f) = FIXED.iter().find(|f| f.names.contains(&lower.as_str())) {
            if !f
                .allowed
                .contains(&value.trim().to_ascii_lowercase().as_str())
            {
                errors.push(format!(
                    "kafka property {name} = {} cannot be changed: {}",
                    shown(name, value),
                    f.why
                ));
            }
        }
    }
    k.properties = props;
}

/// The gateway's defaults that a user's property replaces.
fn defaults(k: &KafkaConfig) -> [(&'static str, String); 4] {
    [
        ("compression.type", "lz4".into()),
        // The producer's own figures (per broker, the queue) for /metrics;
        // 0 turns them off.
        ("statistics.interval.ms", "5000".into()),
        ("queue.buffering.max.messages", "200000".into()),
        (
            "request.timeout.ms",
            k.delivery_wait.as_millis().to_string(),
        ),
    ]
}

/// What every client of the gateway connects with: the brokers and the
/// user's properties (TLS, SASL, client id, ...).
pub fn client_config(k: &KafkaConfig, brokers: Option<&str>) -> ClientConfig {
    let mut c = ClientConfig::new();
    if let Some(b) = brokers {
        c.set("bootstrap.servers", b);
    }
    for (name, value) in &k.properties {
        c.set(name, value);
    }
    c
}

/// The producer's configuration: the gateway's defaults, the user's
/// properties over them, and the fixed settings last.
pub fn producer_config(k: &KafkaConfig, brokers: Option<&str>) -> ClientConfig {
    let mut c = ClientConfig::new();
    if let Some(b) = brokers {
        c.set("bootstrap.servers", b);
    }
    for (name, value) in defaults(k) {
        c.set(name, value);
    }
    for (name, value) in &k.properties {
        c.set(name, value);
    }
    let wait_ms = k.delivery_wait.as_millis().to_string();
    c.set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", wait_ms)
        .set("linger.ms", k.linger_ms.to_string());
    c
}

/// The producer's settings that differ from librdkafka's defaults, secrets
/// masked, as one `name=value, ...` line for the start-up log.
pub fn effective(k: &KafkaConfig) -> String {
    let c = producer_config(k, None);
    c.config_map()
        .into_iter()
        .map(|(n, v)| format!("{n}={}", shown(n, v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds a librdkafka producer from the configuration without naming any
/// broker, so nothing connects: a misspelt property, a value librdkafka
/// refuses, a SASL mechanism or protocol this build does not have, or a
/// certificate file that cannot be read is an error naming it.
pub fn check_client(k: &KafkaConfig) -> Result<(), String> {
    use rdkafka::producer::BaseProducer;
    let c = producer_config(k, None);
    let created: Result<BaseProducer, _> = c.create();
    match created {
        Ok(_producer) => Ok(()),
        Err(e) => Err(match e {
            rdkafka::error::KafkaError::ClientCreation(why) => {
                format!("librdkafka refuses the [kafka] settings: {why}")
            }
            other => format!("librdkafka refuses the [kafka] settings: {other}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::env;
    use crate::config::Config;

    const BROKERS: (&str, &str) = ("KAFKA_BROKERS", "k:9092");

    #[test]
    fn variables_name_properties() {
        assert_eq!(
            property_of_variable("KAFKA_PROPERTY_SASL_PASSWORD").as_deref(),
            Some("sasl.password")
        );
        assert_eq!(
            property_of_variable("KAFKA_PROPERTY_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL").as_deref(),
            Some("sasl.oauthbearer.token.endpoint.url")
        );
        assert_eq!(property_of_variable("KAFKA_PROPERTY_"), None);
        assert_eq!(property_of_variable("KAFKA_BROKERS"), None);
    }

    #[test]
    fn the_environment_wins_over_the_secret_file_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, "from-the-secret-file\n").unwrap();
        let toml = format!(
            "[kafka.properties]\n\"sasl.username\" = \"u\"\n\"client.id\" = \"file\"\n\
             [kafka.property_files]\n\"sasl.password\" = {:?}\n",
            secret.display().to_string()
        );
        let c = Config::from_toml(&toml, &env(&[BROKERS])).unwrap();
        assert_eq!(c.kafka.properties["sasl.password"], "from-the-secret-file");
        assert_eq!(c.kafka.properties["client.id"], "file");

        let c = Config::from_toml(
            &toml,
            &env(&[
                BROKERS,
                ("KAFKA_PROPERTY_SASL_PASSWORD", "from-env"),
                ("KAFKA_PROPERTY_CLIENT_ID", "env"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.properties["sasl.password"], "from-env");
        assert_eq!(c.kafka.properties["client.id"], "env");
        assert_eq!(c.kafka.properties["sasl.username"], "u");
    }

    #[test]
    fn an_unreadable_secret_file_is_named() {
        let toml = "[kafka.property_files]\n\"sasl.password\" = \"/nonexistent/pw\"\n";
        let err = Config::from_toml(toml, &env(&[BROKERS])).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read /nonexistent/pw for sasl.password"),
            "{err}"
        );
    }

    #[test]
    fn settings_the_promises_rest_on_are_refused_with_the_reason() {
        for (name, value, says) in [
            ("acks", "1", "acks=all"),
            ("request.required.acks", "0", "acks=all"),
            ("enable.idempotence", "false", "idempotent"),
            ("message.timeout.ms", "60000", "delivery_wait_ms"),
            ("delivery.timeout.ms", "60000", "delivery_wait_ms"),
            ("linger.ms", "50", "linger_ms"),
            ("transactional.id", "x", "transactional"),
            ("bootstrap.servers", "x:1", "KAFKA_BROKERS"),
        ] {
            let toml = format!("[kafka.properties]\n{name:?} = {value:?}\n");
            let err = Config::from_toml(&toml, &env(&[BROKERS])).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!(
                    "kafka property {name} = {value} cannot be changed"
                )) && text.contains(says),
                "{name}: {text}"
            );
        }
        // Repeating what the gateway sets is fine.
        let toml = "[kafka.properties]\nacks = \"all\"\n\"enable.idempotence\" = \"true\"\n";
        Config::from_toml(toml, &env(&[BROKERS])).unwrap();
    }

    #[test]
    fn the_users_settings_replace_the_defaults_and_the_fixed_ones_stay() {
        let toml = "[kafka]\nlinger_ms = 5\n[kafka.properties]\n\"compression.type\" = \"zstd\"\n\
                    \"batch.size\" = \"262144\"\n\"client.id\" = \"gw-1\"\n";
        let c = Config::from_toml(toml, &env(&[BROKERS])).unwrap();
        let p = producer_config(&c.kafka, Some("k:9092"));
        assert_eq!(p.get("compression.type"), Some("zstd"));
        assert_eq!(p.get("batch.size"), Some("262144"));
        assert_eq!(p.get("client.id"), Some("gw-1"));
        assert_eq!(p.get("linger.ms"), Some("5"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("message.timeout.ms"), Some("2000"));
        check_client(&c.kafka).unwrap();
    }

    #[test]
    fn secrets_are_masked_in_the_effective_settings() {
        let toml = "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
                    \"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"gw\"\n";
        let c = Config::from_toml(
            toml,
            &env(&[BROKERS, ("KAFKA_PROPERTY_SASL_PASSWORD", "hunter2-secret")]),
        )
        .unwrap();
        let line = effective(&c.kafka);
        assert!(line.contains("sasl.password=[redacted]"), "{line}");
        assert!(line.contains("sasl.username=gw"), "{line}");
        assert!(!line.contains("hunter2"), "{line}");
        for name in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
        ] {
            assert!(is_secret(name), "{name}");
        }
        assert!(!is_secret("sasl.username"));
        assert!(!is_secret("ssl.certificate.location"));
    }

    #[test]
    fn every_mechanism_a_managed_cluster_uses_is_built_in() {
        for props in [
            vec![("security.protocol", "SSL")],
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ],
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-256"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ],
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ],
            // OAUTHBEARER with librdkafka's own OIDC client-credentials flow.
            vec![
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "OAUTHBEARER"),
                ("sasl.oauthbearer.method", "oidc"),
                ("sasl.oauthbearer.client.id", "gateway"),
                ("sasl.oauthbearer.client.secret", "s"),
                (
                    "sasl.oauthbearer.token.endpoint.url",
                    "https://idp.invalid/oauth2/token",
                ),
                ("sasl.oauthbearer.scope", "kafka"),
            ],
        ] {
            let mut toml = String::from("[kafka.properties]\n");
            for (k, v) in &props {
                toml.push_str(&format!("{k:?} = {v:?}\n"));
            }
            let c = Config::from_toml(&toml, &env(&[BROKERS])).unwrap();
            check_client(&c.kafka).unwrap_or_else(|e| panic!("{props:?}: {e}"));
        }
    }

    #[test]
    fn librdkafka_names_what_it_refuses() {
        for (props, says) in [
            (
                vec![("sasl.mechansim", "PLAIN")],
                "No such configuration property: \"sasl.mechansim\"",
            ),
            (
                vec![
                    ("security.protocol", "SASL_SSL"),
                    ("sasl.mechanism", "GSSAPI"),
                ],
                "GSSAPI",
            ),
            (
                vec![
                    ("security.protocol", "SSL"),
                    ("ssl.ca.location", "/nonexistent/ca.pem"),
                ],
                "ssl.ca.location",
            ),
        ] {
            let mut toml = String::from("[kafka.properties]\n");
            for (k, v) in &props {
                toml.push_str(&format!("{k:?} = {v:?}\n"));
            }
            let c = Config::from_toml(&toml, &env(&[BROKERS])).unwrap();
            let err = check_client(&c.kafka).unwrap_err();
            assert!(err.contains(says), "{props:?}: {err}");
        }
    }
}
