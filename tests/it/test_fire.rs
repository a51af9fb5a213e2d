//! `postback-gateway test-fire` against the binary with a real broker
//! (Tansu), for every preset: the test conversion its network would send (or
//! the preset's placeholders filled with generic samples) is accepted, and
//! the event read back from Kafka carries its click id, `+`, `/` and `=`
//! and all. And over HTTPS, through a TLS terminator in front of the
//! gateway, as a network fires at the URL it was given.
use std::process::Command;

use crate::common::process::{config_file, GatewayProcess, Tansu};
use crate::common::secure::TlsFront;
use postback_gateway::source::presets::names;

const KEY: &str = "test-fire-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_fire_is_accepted_and_read_back_for_every_preset() {
    let mut toml = String::new();
    for p in names() {
        toml.push_str(&format!(
            "[sources.{p}]\npreset = \"{p}\"\napi_keys = [\"{KEY}-{p}\"]\n"
        ));
    }
    let (_dir, config) = config_file(&toml);
    let tansu = Tansu::start();
    let gw = GatewayProcess::start(Some(&tansu.brokers), &[("POSTBACK_CONFIG", &config)]).await;
    let target = format!("http://{}", gw.public);
    for p in names() {
        let out = tokio::task::spawn_blocking({
            let (config, target, brokers) = (config.clone(), target.clone(), tansu.brokers.clone());
            move || {
                Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
                    .args(["test-fire", "--source", p, "--target", &target])
                    .args(["--brokers", &brokers, "--config", &config])
                    .env_remove("POSTBACK_CONFIG")
                    .env_remove("KAFKA_BROKERS")
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{p}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply = stdout.lines().find(|l| l.starts_with("reply: ")).unwrap();
        assert!(reply.starts_with("reply: 200 OK "), "{p}: {reply}");
        let event: serde_json::Value = serde_json::from_str(
            stdout
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_else(|| panic!("{p}: no event in {stdout}")),
        )
        .unwrap();
        assert_eq!(event["source"], p);
        assert_eq!(
            event["event_id"].as_str(),
            reply.strip_prefix("reply: 200 OK "),
            "{p}"
        );
        let token = event["token"].as_str().unwrap();
        assert!(
            token.starts_with("test-fire-") && token.ends_with("+a/b=="),
            "{p}: {token}"
        );
        // The amount in the network's shape, canonical in the event.
        if let Some(a) = event["amount"].as_str() {
            assert!(
                a.split_once('.').is_some_and(|(_, d)| d.len() >= 2),
                "{p}: {a}"
            );
        }
    }
}

#[test]
fn test_fire_refuses_a_network_the_source_cannot_take() {
    let (_dir, config) = config_file(&format!(
        "[sources.s]\npreset = \"tune\"\napi_keys = [\"{KEY}\"]\n"
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
        .args(["test-fire", "--source", "s", "--network", "affise"])
        .args(["--target", "http://127.0.0.1:9", "--config", &config])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not read"));
}

/// `test-fire` at an `https://` URL, through stunnel terminating TLS in front
/// of the gateway (as an ingress does): trusted through `--ca-file` (or
/// `SSL_CERT_FILE`), accepted, and read back; a certificate from a CA it was
/// not told to trust, or none given, is a failed handshake and no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_fire_goes_through_tls_to_the_gateway() {
    let (_dir, config) = config_file(&format!(
        "[sources.acme]\npreset = \"tune\"\napi_keys = [\"{KEY}\"]\n"
    ));
    let tansu = Tansu::start();
    let gw = GatewayProcess::start(Some(&tansu.brokers), &[("POSTBACK_CONFIG", &config)]).await;
    let front = TlsFront::start(gw.public.port());
    let fire = |target: String, ca: Option<(&'static str, String)>| {
        let (config, brokers) = (config.clone(), tansu.brokers.clone());
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_postback-gateway"));
            cmd.args(["test-fire", "--source", "acme", "--network", "cake"])
                .args([
                    "--target",
                    &target,
                    "--brokers",
                    &brokers,
                    "--config",
                    &config,
                ])
                .env_remove("POSTBACK_CONFIG")
                .env_remove("KAFKA_BROKERS")
                .env_remove("SSL_CERT_FILE");
            match ca {
                Some(("--ca-file", path)) => {
                    cmd.args(["--ca-file", &path]);
                }
                Some((var, path)) => {
                    cmd.env(var, path);
                }
                None => {}
            }
            cmd.output().unwrap()
        })
    };
    let ca = front.ca_pem().to_str().unwrap().to_owned();
    for (host, ca) in [
        ("127.0.0.1", ("--ca-file", ca.clone())),
        ("localhost", ("SSL_CERT_FILE", ca.clone())),
    ] {
        let target = format!("https://{host}:{}", front.port);
        let out = fire(target.clone(), Some(ca)).await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{target}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with(&format!("GET {target}/")), "{stdout}");
        let reply = stdout.lines().find(|l| l.starts_with("reply: ")).unwrap();
        let id = reply
            .strip_prefix("reply: 200 OK ")
            .unwrap_or_else(|| panic!("{stdout}"));
        let event = stdout
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap();
        let event: serde_json::Value = serde_json::from_str(event).unwrap();
        assert_eq!(
            (event["event_id"].as_str(), event["source"].as_str()),
            (Some(id), Some("acme"))
        );
    }
    let other = front.other_ca_pem().to_str().unwrap().to_owned();
    for ca in [None, Some(("--ca-file", other))] {
        let out = fire(format!("https://127.0.0.1:{}", front.port), ca)
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        let no_reply = stdout
            .lines()
            .find(|l| l.starts_with("no reply: "))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(no_reply.contains("certificate"), "{no_reply}");
        assert!(
            !no_reply.contains(KEY),
            "the query is not printed: {no_reply}"
        );
    }
}
