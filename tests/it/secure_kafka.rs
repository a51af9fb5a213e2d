//! The gateway binary against brokers that require TLS and SCRAM, or a client
//! certificate (Tansu behind stunnel, `common/secure.rs`): postbacks are
//! acknowledged and read back, the password comes from the environment or a
//! secret file and is never printed, and a wrong password, an untrusted
//! certificate or a missing client certificate is named in one log line and
//! in `/readyz`. `check-config --connect` says the same before a rollout.
use crate::common;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::process::{config_file, GatewayProcess};
use crate::common::secure::{read_topic_with, SecureKafka};
use crate::common::*;

const SETTLE: Duration = Duration::from_millis(500);

/// A config file with the broker's TLS and SCRAM settings but no password;
/// the broker's certificate is checked against `ca`.
fn sasl_config(ca: &Path, extra: &str) -> (tempfile::TempDir, String) {
    config_file(&format!(
        "[kafka.properties]\n\
         \"security.protocol\" = \"SASL_SSL\"\n\
         \"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
         \"sasl.username\" = \"{}\"\n\
         \"ssl.ca.location\" = {:?}\n{extra}",
        SecureKafka::USER,
        ca.display().to_string(),
    ))
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("request");
    (r.status().as_u16(), r.text().await.unwrap())
}

/// What the topic of `kafka` holds, read as a client with its credentials.
fn read_back(kafka: &SecureKafka, expect: usize) -> Vec<Record> {
    read_topic_with(
        &kafka.bootstrap(),
        &kafka.client_properties(),
        TOPIC,
        expect,
        SETTLE,
    )
}

/// `/readyz`'s status and body.
async fn readyz(gw: &GatewayProcess) -> (u16, String) {
    get(&gw.admin_url("/readyz")).await
}

/// Lines of the log that hold `needle`.
fn lines_with(log: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postbacks_over_sasl_ssl_are_acknowledged_and_read_back_once() {
    let kafka = SecureKafka::start_sasl_ssl();
    let (_dir, config) = sasl_config(&kafka.ca_pem(), "");
    let logs = common::tempdir().unwrap();
    let log = logs.path().join("gateway.log");
    let gw = GatewayProcess::start_logging_to(
        Some(&kafka.bootstrap()),
        &[
            ("POSTBACK_CONFIG", &config),
            ("KAFKA_PROPERTY_SASL_PASSWORD", SecureKafka::PASSWORD),
            ("RUST_LOG", "info"),
        ],
        &log,
    )
    .await;

    let (status, body) = get(&gw.url(&query("tls-scram-1", "12.34"))).await;
    assert_eq!(status, 200, "{body}");
    let id = ok_id(&body);
    let (_, dup) = get(&gw.url(&query("tls-scram-1", "12.34"))).await;
    assert_eq!(dup, format!("DUPLICATE {id}"));
    let (status, body) = get(&gw.url(&query("tls-scram-2", "0.50"))).await;
    assert_eq!(status, 200, "{body}");

    let records = read_back(&kafka, 2);
    assert_eq!(records.len(), 2, "{records:?}");
    let first = with_token(&records, "tls-scram-1");
    assert_eq!(first.len(), 1);
    assert_event(first[0], &id, "tls-scram-1", "12.34", "s2s");

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("sasl.password=[redacted]"),
        "the effective settings are logged: {text}"
    );
    assert!(
        !text.contains(SecureKafka::PASSWORD),
        "the password is never logged"
    );
    let metrics = reqwest::get(gw.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains(SecureKafka::PASSWORD));
    assert!(metrics.contains("postback_kafka_embedded 0"), "{metrics}");
}

/// The password from a mounted secret file (`[kafka.property_files]`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_can_come_from_a_secret_file() {
    let kafka = SecureKafka::start_sasl_ssl();
    let secrets = common::tempdir().unwrap();
    let password = secrets.path().join("password");
    std::fs::write(&password, format!("{}\n", SecureKafka::PASSWORD)).unwrap();
    let (_dir, config) = sasl_config(
        &kafka.ca_pem(),
        &format!(
            "[kafka.property_files]\n\"sasl.password\" = {:?}\n",
            password.display().to_string()
        ),
    );
    let gw = GatewayProcess::start(Some(&kafka.bootstrap()), &[("POSTBACK_CONFIG", &config)]).await;
    let (status, body) = get(&gw.url(&query("from-secret-file", "3.00"))).await;
    assert_eq!(status, 200, "{body}");
    let records = read_back(&kafka, 1);
    assert_eq!(with_token(&records, "from-secret-file").len(), 1);
}

/// A gateway whose connection the broker refuses: one ERROR line naming what
/// to check within seconds, and `/readyz` 503 with the same words.
async fn refused(kafka: &SecureKafka, env: &[(&str, &str)], says: &str, librdkafka_says: &str) {
    let logs = common::tempdir().unwrap();
    let log = logs.path().join("gateway.log");
    let gw = GatewayProcess::spawn_logging_to(Some(&kafka.bootstrap()), env, &log).await;
    wait_within(
        "/readyz names the refusal",
        Duration::from_secs(10),
        async || {
            let (status, body) = readyz(&gw).await;
            status == 503 && body.contains(says)
        },
    )
    .await;
    let (_, body) = readyz(&gw).await;
    assert!(body.starts_with("not ready: "), "{body}");
    assert!(body.contains(librdkafka_says), "{body}");
    let errors = lines_with(&log, says);
    assert_eq!(errors.len(), 1, "one line, not one per retry: {errors:?}");
    assert!(errors[0].contains("ERROR"), "{errors:?}");
    // Still refused a few seconds later: no second line within the minute.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(readyz(&gw).await.0, 503);
    assert_eq!(lines_with(&log, says).len(), 1);
    assert!(!std::fs::read_to_string(&log)
        .unwrap()
        .contains(SecureKafka::PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_named_in_one_log_line_and_in_readyz() {
    let kafka = SecureKafka::start_sasl_ssl();
    let (_dir, config) = sasl_config(&kafka.ca_pem(), "");
    refused(
        &kafka,
        &[
            ("POSTBACK_CONFIG", &config),
            ("KAFKA_PROPERTY_SASL_PASSWORD", "not-the-password"),
        ],
        "Kafka refuses the credentials",
        "SASL SCRAM authentication failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_is_named_in_one_log_line_and_in_readyz() {
    let kafka = SecureKafka::start_sasl_ssl();
    let (_dir, config) = sasl_config(&kafka.other_ca_pem(), "");
    refused(
        &kafka,
        &[
            ("POSTBACK_CONFIG", &config),
            ("KAFKA_PROPERTY_SASL_PASSWORD", SecureKafka::PASSWORD),
        ],
        "The TLS handshake with Kafka failed",
        "certificate verify failed",
    )
    .await;
}

/// Mutual TLS: with the client certificate postbacks go through; without it
/// the broker's refusal is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let kafka = SecureKafka::start_mtls();
    let (_dir, config) = config_file(&format!(
        "[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\
         \"ssl.ca.location\" = {:?}\n\"ssl.certificate.location\" = {:?}\n\
         \"ssl.key.location\" = {:?}\n",
        kafka.ca_pem().display().to_string(),
        kafka.client_cert().display().to_string(),
        kafka.client_key().display().to_string(),
    ));
    let gw = GatewayProcess::start(Some(&kafka.bootstrap()), &[("POSTBACK_CONFIG", &config)]).await;
    let (status, body) = get(&gw.url(&query("mtls-1", "7.00"))).await;
    assert_eq!(status, 200, "{body}");
    let records = read_back(&kafka, 1);
    let found = with_token(&records, "mtls-1");
    assert_eq!(found.len(), 1, "{records:?}");
    assert_event(found[0], &ok_id(&body), "mtls-1", "7.00", "s2s");
    drop(gw);

    let (_dir2, without) = config_file(&format!(
        "[kafka.properties]\n\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = {:?}\n",
        kafka.ca_pem().display().to_string(),
    ));
    refused(
        &kafka,
        &[("POSTBACK_CONFIG", &without)],
        "The TLS handshake with Kafka failed",
        "certificate required",
    )
    .await;
}

fn check_connect(brokers: &str, config: &str, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
        .args(["check-config", "--connect"])
        .env_clear()
        .env("POSTBACK_CONFIG", config)
        .env("KAFKA_BROKERS", brokers)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The preflight before a rollout: green with the right password once the
/// topic exists, red (exit 69, with librdkafka's words) with a wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_is_green_with_the_right_password_and_red_with_a_wrong_one() {
    let kafka = SecureKafka::start_sasl_ssl();
    let (_dir, config) = sasl_config(&kafka.ca_pem(), "");
    let right = [("KAFKA_PROPERTY_SASL_PASSWORD", SecureKafka::PASSWORD)];

    // No topic yet: a warning (the gateway creates it), not a failure.
    let (code, text) = check_connect(&kafka.bootstrap(), &config, &right);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("ok   connect and authenticate: 1 broker(s) over SASL_SSL, SCRAM-SHA-512"),
        "{text}"
    );
    assert!(
        text.contains("warn topic: conversions does not exist"),
        "{text}"
    );

    let gw = GatewayProcess::start(
        Some(&kafka.bootstrap()),
        &[("POSTBACK_CONFIG", &config), right[0]],
    )
    .await;
    drop(gw);
    let (code, text) = check_connect(&kafka.bootstrap(), &config, &right);
    assert_eq!(code, 0, "{text}");
    for line in [
        "ok   resolve:",
        "ok   connect and authenticate:",
        "ok   topic: conversions: 3 partition(s)",
        // One broker: one replica, said as a warning.
        "warn replication: 1 replica(s)",
        "write:",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
    assert!(!text.contains(SecureKafka::PASSWORD), "{text}");

    let (code, text) = check_connect(
        &kafka.bootstrap(),
        &config,
        &[("KAFKA_PROPERTY_SASL_PASSWORD", "not-the-password")],
    );
    assert_eq!(code, 69, "{text}");
    assert!(text.contains("FAIL connect and authenticate:"), "{text}");
    assert!(text.contains("SASL SCRAM authentication failed"), "{text}");

    let (code, text) = check_connect("no-such-host.invalid:9092", &config, &right);
    assert_eq!(code, 69, "{text}");
    assert!(
        text.contains("FAIL resolve: cannot resolve no-such-host.invalid:9092"),
        "{text}"
    );
}
