//! `postback-gateway postback-url`, per preset: the exact URLs printed, then
//! a round trip: the platform's macros are filled with sample values as the
//! platform would, the URL is called, and the right event is read from Kafka.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use postback_gateway::postback::Status;
use postback_gateway::source::presets::Role;
use postback_gateway::source::Source;
use rdkafka::mocking::MockCluster;

const KEY: &str = "url-key-0123456789ab";

/// What the binary prints on stdout for `preset`, with `BASE` for the base URL.
fn golden(preset: &str) -> &'static str {
    match preset {
        "reference" => "BASE/postback?api_key=KEY&tracking={tracking}&amount={amount}&txid={txid}\n\
                        BASE/pixel?api_key=PKEY&tracking={tracking}&amount={amount}&txid={txid}\n",
        "cake" => "BASE/postback/s?api_key=KEY&r=#s2#&p=#price#&t=#leadid#&o=#oid#\n",
        "tune" => "BASE/postback/s?security_token=KEY&transaction_id={aff_sub}&amount={payout}&offer_id={offer_id}&goal_id={goal_id}\n",
        "nats" => "BASE/postback/s?api_key=KEY\n",
        "everflow" => "BASE/postback/s?verification_token=KEY&transaction_id={sub1}&amount={payout_amount}&order_id={order_id}&event_id={event_id}&currency={currency}\n",
        "voluum" => "BASE/postback/s?api_key=KEY&cid=REPLACE&payout=OPTIONAL&txid=OPTIONAL\n\
                     BASE/pixel/s?api_key=PKEY&cid=REPLACE&payout=OPTIONAL&txid=OPTIONAL\n",
        "binom" => "BASE/postback/s?api_key=KEY&cnv_id={clickid}&payout={payout}&cnv_status={status}\n",
        "keitaro" => "BASE/KEY/postback?subid={subid}&status={status}&payout={payout}\n",
        "kintura" => "BASE/postback/s?api_key=KEY&cid={cid}&payout={payout}&txid={txid}\n",
        "redtrack" => "BASE/postback/s?api_key=KEY&clickid={clickid}&sum={sum}&type={type}&status={status}\n",
        "affise" => "BASE/postback/s?secure=KEY&clickid={sub1}&sum={sum}&action_id={transactionid}&goal={goal}&status={status}\n",
        other => panic!("no golden URL for {other}"),
    }
}

/// The value a platform would put in place of the macro of `role`.
fn sample(source: &Source, role: Role, token: &str) -> String {
    match role {
        Role::Tracking => token.to_owned(),
        Role::Amount if source.url.body_fields => "1234".into(),
        Role::Amount => "12.34".into(),
        Role::Txid => "TX-7".into(),
        Role::Goal => "G-7".into(),
        Role::Status => approved_word(source).unwrap_or_else(|| "approved".into()),
        Role::Currency => "usd".into(),
        Role::ClickTime => "1700000000".into(),
        Role::CampaignId => "C-1".into(),
        Role::AdsetId => "AS-1".into(),
        Role::AdId => "AD-1".into(),
        Role::Placement => "PL-1".into(),
        Role::ApiKey => KEY.into(),
    }
}

/// The first raw status word (in sorted order) that the source maps to approved.
fn approved_word(source: &Source) -> Option<String> {
    let mut words: Vec<&String> = source
        .rules
        .statuses
        .iter()
        .filter(|(_, s)| **s == Status::Approved)
        .map(|(w, _)| w)
        .collect();
    words.sort();
    words.first().map(|w| (*w).clone())
}

fn role_of(source: &Source, param: &str) -> Option<Role> {
    Role::ALL
        .into_iter()
        .find(|r| r.names(&source.rules.names).iter().any(|n| n == param))
}

/// Replaces every macro value of `url` (everything but the secret) with a sample.
fn fill(source: &Source, url: &str, token: &str) -> String {
    let Some((path, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            let decoded_key = k.replace("%5B", "[").replace("%5D", "]");
            match role_of(source, &decoded_key) {
                Some(Role::ApiKey) | None => format!("{k}={v}"),
                Some(role) => format!("{k}={}", enc(&sample(source, role, token))),
            }
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

async fn round_trip(preset: &str) {
    let name = if preset == "reference" {
        "default"
    } else {
        "s"
    };
    // The platforms that fire browser pixels get a pixel key of their own.
    let pixel_keys = if ["reference", "voluum"].contains(&preset) {
        format!("pixel_keys = [\"{PIXEL_KEY}\"]\n")
    } else {
        String::new()
    };
    let toml =
        format!("[sources.{name}]\npreset = \"{preset}\"\napi_keys = [\"{KEY}\"]\n{pixel_keys}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, &toml).unwrap();
    let kafka = MockCluster::new(1).expect("mock cluster");
    kafka.create_topic(TOPIC, 3, 1).unwrap();
    let sources = sources_from(&toml);
    let source = sources.as_ref().unwrap().get(name).unwrap().clone();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| c.sources = sources).await;
    let base = format!("http://{}", gw.public);

    let out = Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
        .args([
            "postback-url",
            "--source",
            name,
            "--base-url",
            &format!("{base}/"),
        ])
        .arg("--config")
        .arg(&path)
        .env_remove("POSTBACK_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let want = golden(preset)
        .replace("BASE", &base)
        .replace("PKEY", PIXEL_KEY)
        .replace("KEY", KEY);
    for line in stdout.lines().filter(|l| l.contains("/pixel")) {
        assert!(!line.contains(KEY), "no api key in a pixel URL: {line}");
    }
    assert_eq!(stdout, want, "{preset}");

    let client = reqwest::Client::new();
    let mut expected = Vec::new();
    for (i, url) in stdout.lines().enumerate() {
        let token = format!("{preset}-click-{i}");
        let filled = fill(&source, url, &token);
        let req = if source.url.body_fields {
            let body: Vec<String> = [Role::Tracking, Role::Amount, Role::Txid, Role::Status]
                .into_iter()
                .map(|r| {
                    let param = &r.names(&source.rules.names)[0];
                    format!("{}={}", enc(param), enc(&sample(&source, r, &token)))
                })
                .collect();
            client
                .post(&filled)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.join("&"))
        } else {
            client.get(&filled)
        };
        let (status, body) = reply(req.send().await.unwrap()).await;
        assert_eq!(status, 200, "{preset}: {filled}: {body}");
        expected.push((ok_id(&body), token, url.contains("/pixel")));
    }

    let records = read_topic(
        &kafka.bootstrap_servers(),
        TOPIC,
        expected.len(),
        Duration::from_millis(700),
    );
    assert_eq!(records.len(), expected.len(), "{preset}: {records:#?}");
    for (id, token, pixel) in expected {
        let e = &with_token(&records, &token)[0].value;
        assert_eq!(e["event_id"], id.as_str());
        assert_eq!(e["source"], name);
        assert_eq!(e["kind"], if pixel { "pixel" } else { "s2s" });
        assert_eq!(e["amount"], "12.34", "{preset}: {e}");
        assert_eq!(e["status"], "approved", "{preset}: {e}");
        for (role, field) in [
            (Role::Txid, "txid"),
            (Role::Goal, "goal"),
            (Role::CampaignId, "campaign_id"),
            (Role::Currency, "currency"),
        ] {
            let listed = source.url.macros.iter().any(|(r, _)| *r == role);
            if listed && !source.url.body_fields {
                let want = sample(&source, role, &token).to_uppercase();
                assert_eq!(
                    e[field].as_str().map(str::to_uppercase),
                    Some(want),
                    "{preset}: {field}"
                );
            }
        }
    }
    gw.stop().await;
}

macro_rules! url_test {
    ($($name:ident => $preset:literal,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            round_trip($preset).await;
        }
    )*};
}

url_test! {
    reference_url_round_trips => "reference",
    cake_url_round_trips => "cake",
    tune_url_round_trips => "tune",
    nats_url_round_trips => "nats",
    everflow_url_round_trips => "everflow",
    voluum_url_round_trips => "voluum",
    binom_url_round_trips => "binom",
    keitaro_url_round_trips => "keitaro",
    kintura_url_round_trips => "kintura",
    redtrack_url_round_trips => "redtrack",
    affise_url_round_trips => "affise",
}

#[test]
fn postback_url_refuses_unknown_sources_and_bad_base_urls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, format!("[sources.s]\napi_keys = [\"{KEY}\"]\n")).unwrap();
    for args in [
        ["--source", "nope", "--base-url", "https://pb.example.com"],
        ["--source", "s", "--base-url", "pb.example.com"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
            .arg("postback-url")
            .args(args)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(out.stdout.is_empty());
    }
}
