//! Logs and secrets, end to end with the binary on its embedded cluster: api
//! keys never appear in logs, events, metrics or replies; request bytes never
//! reach the log raw; refusals are logged at debug level only.
use crate::common;
use std::time::Duration;

use crate::common::process::GatewayProcess;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_and_control_characters_never_reach_the_log() {
    let dir = common::tempdir().unwrap();
    let log = dir.path().join("gateway.log");
    let gw = GatewayProcess::start_logging_to(None, &[("RUST_LOG", "debug")], &log).await;
    let client = reqwest::Client::new();
    let wrong_key = "wrong-key-SECRET-5f1c9e";

    let mut replies = Vec::new();
    for path in [
        query("ok-token", "1.00"),
        format!("/postback?api_key={wrong_key}&tracking=t&amount=1.00"),
        format!("/postback?api_key={API_KEY}&tracking=a%01b%1B%5B31mred&amount=1.00"),
        format!("/postback?api_key={API_KEY}&tracking=%0D%0Aforged%20line&amount=1.00"),
        format!("/postback?api_key={API_KEY}&tracking=t&amount=1.00&note=%1B%5D0%3Bx%07"),
        format!("/postback/%0Aevil?api_key={API_KEY}&tracking=t&amount=1.00"),
        format!("/pixel.gif?api_key={wrong_key}&tracking=t&amount=1.00"),
    ] {
        let r = client
            .get(gw.url(&path))
            .header("user-agent", "agent\twith tab")
            .send()
            .await
            .unwrap();
        replies.push(reply(r).await.1);
    }
    let metrics = client
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // The embedded cluster's address is in the log; read the event back.
    wait_until("the log has the start and the refusals", async || {
        let text = std::fs::read_to_string(&log).unwrap();
        text.contains("bootstrap ") && text.contains("Refused a postback")
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let bootstrap = text
        .split("bootstrap ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("the embedded bootstrap address is printed")
        .to_owned();
    let records = read_topic(&bootstrap, TOPIC, 2, Duration::from_millis(700));

    for secret in [API_KEY, wrong_key] {
        assert!(!text.contains(secret), "a key is in the log");
        assert!(!metrics.contains(secret), "a key is in the metrics");
        for r in &replies {
            assert!(!r.contains(secret), "a key is in a reply: {r}");
        }
        for rec in &records {
            assert!(
                !rec.value.to_string().contains(secret),
                "a key is in an event"
            );
        }
    }
    for (i, b) in text.bytes().enumerate() {
        assert!(
            b == b'\n' || b == b'\t' || !(b < 0x20 || b == 0x7f),
            "raw control byte {b:#x} at {i} in the log"
        );
    }
    assert!(
        !text.contains("forged line"),
        "request text does not reach the log"
    );
    let refusals: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Refused a postback"))
        .collect();
    assert!(!refusals.is_empty(), "refusals are logged at debug level");
    assert!(refusals.iter().all(|l| l.contains("DEBUG")), "{refusals:?}");
    assert!(replies[1].starts_with("ERROR bad_api_key"), "{replies:?}");
    assert!(replies[2].starts_with("ERROR bad_tracking"), "{replies:?}");
    assert!(records.iter().any(|r| r.value["token"] == "ok-token"));
}

/// `LOG_FORMAT=json`: every line the gateway logs, from its start through
/// accepted and refused postbacks to its shutdown, is one JSON object with
/// a timestamp, a level, a target, a message and the event's fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let kafka = mock_cluster();
    let dir = common::tempdir().unwrap();
    let (log, errors) = (dir.path().join("log.json"), dir.path().join("stderr"));
    let env = [
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "debug,librdkafka=info,rdkafka=info"),
    ];
    let gw =
        GatewayProcess::start_logging_apart(Some(&kafka.bootstrap_servers()), &env, &log, &errors)
            .await;
    for path in [
        query("json-log-token", "1.00"),
        format!("/postback?api_key={API_KEY}&tracking=%0D%0Aforged&amount=1.00"),
        "/postback?api_key=wrong-key-0123456789&tracking=t&amount=1.00".to_owned(),
    ] {
        reqwest::get(gw.url(&path)).await.unwrap();
    }
    common::process::signal(gw.child.id(), "TERM");
    let status = gw.exit_status().await;
    assert!(status.success(), "{status}");

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{text}");
    let mut messages = Vec::new();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        let o = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(o[key].is_string(), "no {key}: {line}");
        }
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&o["level"].as_str().unwrap()),
            "{line}"
        );
        time::OffsetDateTime::parse(
            o["timestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|e| panic!("timestamp ({e}): {line}"));
        messages.push(o.clone());
    }
    // The fields sit beside the message (here: the listener's addresses).
    let listening = messages
        .iter()
        .find(|o| o["message"] == "Listening.")
        .unwrap_or_else(|| panic!("no start line: {text}"));
    for key in ["public", "admin"] {
        let addr = listening[key].as_str().unwrap_or_default();
        assert!(
            addr.parse::<std::net::SocketAddr>().is_ok(),
            "{listening:?}"
        );
    }
    let refused: Vec<_> = messages
        .iter()
        .filter(|o| o["message"] == "Refused a postback.")
        .collect();
    assert!(refused.len() >= 2, "{text}");
    assert!(
        refused.iter().all(|o| o["reason"].is_string()),
        "{refused:?}"
    );
    assert!(
        !text.contains(API_KEY) && !text.contains("forged"),
        "{text}"
    );
    let stderr = std::fs::read_to_string(&errors).unwrap();
    assert!(stderr.trim().is_empty(), "nothing beside the log: {stderr}");
}
