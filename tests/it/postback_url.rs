//! `postback-gateway postback-url`: the exact URL printed for every preset
//! with its own network (or placeholders), then every preset with every
//! network: the printed URL is filled in as the network would fill it (its
//! documented sample values), fired at the gateway, and the event is read
//! back from Kafka. A pair the gateway would refuse must be refused by
//! `postback-url` itself, with the reason, and never printed.
use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;
use postback_gateway::postback::{AmountFormat, Status};
use postback_gateway::source::presets::{names, network_named, network_names, Role};
use postback_gateway::source::url::{encode, fields, placeholder, rounds, Field};
use postback_gateway::source::Source;

const KEY: &str = "url-key-0123456789ab";

/// What the binary prints on stdout for a source of `preset` named `s`, with
/// no `--network`: the preset's own network's macros, or placeholders.
fn golden(preset: &str) -> &'static str {
    match preset {
        "reference" => "BASE/postback/s?api_key=KEY&tracking=REPLACE_CLICK_ID&amount=REPLACE_AMOUNT&txid=REPLACE_CONVERSION_ID&status=REPLACE_STATUS\n\
                        BASE/pixel/s?api_key=PKEY&tracking=REPLACE_CLICK_ID&amount=REPLACE_AMOUNT&txid=REPLACE_CONVERSION_ID&status=REPLACE_STATUS\n",
        "cake" => "BASE/postback/s?api_key=KEY&r=#s2#&p=#price#&t=#leadid#&o=#oid#\n",
        "tune" => "BASE/postback/s?security_token=KEY&transaction_id={aff_click_id}&amount={payout}&offer_id={offer_id}&goal_id={goal_id}\n",
        "nats" => "BASE/postback/s?api_key=KEY\n",
        "everflow" => "BASE/postback/s?verification_token=KEY&transaction_id={sub1}&amount={payout_amount}&order_id={order_id}&event_id={event_id}\n",
        "voluum" => "BASE/postback/s?api_key=KEY&cid=REPLACE_CLICK_ID&payout=REPLACE_AMOUNT&txid=REPLACE_CONVERSION_ID\n\
                     BASE/pixel/s?api_key=PKEY&cid=REPLACE_CLICK_ID&payout=REPLACE_AMOUNT&txid=REPLACE_CONVERSION_ID\n",
        "binom" => "BASE/postback/s?api_key=KEY&cnv_id=REPLACE_CLICK_ID&payout=REPLACE_AMOUNT&cnv_status=REPLACE_STATUS\n",
        "keitaro" => "BASE/KEY/postback?subid=REPLACE_CLICK_ID&payout=REPLACE_AMOUNT&tid=REPLACE_CONVERSION_ID&status=REPLACE_STATUS\n",
        "kintura" => "BASE/postback/s?api_key=KEY&cid=REPLACE_CLICK_ID&payout=REPLACE_AMOUNT&txid=REPLACE_CONVERSION_ID&status=REPLACE_STATUS\n",
        "redtrack" => "BASE/postback/s?api_key=KEY&clickid=REPLACE_CLICK_ID&sum=REPLACE_AMOUNT&rdtk_event_id=REPLACE_CONVERSION_ID&status=REPLACE_STATUS\n",
        "affise" => "BASE/postback/s?secure=KEY&clickid={sub1}&sum={sum}&action_id={transactionid}&goal={goal}&status={status}\n",
        "bemob" | "peerclick" => "BASE/postback/s?api_key=KEY&cid=REPLACE_CLICK_ID&payout=REPLACE_AMOUNT&txid=REPLACE_CONVERSION_ID&status=REPLACE_STATUS\n",
        "trackier" => "BASE/postback/s?api_key=KEY&click_id=REPLACE_CLICK_ID&sale_amount=REPLACE_AMOUNT&txn_id=REPLACE_CONVERSION_ID&status=REPLACE_STATUS\n",
        "appsflyer" => "BASE/postback/s?api_key=KEY&af_sub1=REPLACE_CLICK_ID&event_revenue=REPLACE_AMOUNT\n",
        "impact" => "BASE/postback/s?api_key=KEY&action_id={ActionId}&payout={Payout}&action_tracker_id={ActionTrackerId}&status={Status}&currency={Currency}&campaign_id={CampaignId}\n",
        "post_affiliate_pro" => "BASE/postback/s?api_key=KEY&visitorId=REPLACE_CLICK_ID&TotalCost=REPLACE_AMOUNT&OrderID=REPLACE_CONVERSION_ID&PStatus=REPLACE_STATUS&CampaignID=REPLACE_CAMPAIGN_ID\n",
        other => panic!("no golden URL for {other}"),
    }
}

/// The format × network table of docs/sources.md: for each pair, `ok` or
/// the kind of mismatch `postback-url` reports instead of a URL.
fn documented_matrix() -> BTreeMap<(String, String), String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/sources.md")).unwrap();
    let mut lines = doc
        .lines()
        .skip_while(|l| !l.starts_with("| format \\ network |"));
    let header: Vec<String> = cells(lines.next().expect("the matrix in docs/sources.md"));
    let mut out = BTreeMap::new();
    for row in lines.skip(1).take_while(|l| l.starts_with('|')) {
        let row = cells(row);
        let format = row[0].trim_matches('`').to_owned();
        for (network, code) in header.iter().zip(&row).skip(1) {
            out.insert((format.clone(), network.clone()), code.clone());
        }
    }
    out
}

fn cells(line: &str) -> Vec<String> {
    line.trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_owned())
        .collect()
}

/// The kind of mismatch a refusal names.
fn kind(stderr: &str) -> &'static str {
    if stderr.contains("posts its own fields") {
        "fields"
    } else if stderr.contains("fills no amount") {
        "no amount"
    } else if stderr.contains("bad_amount") {
        "amount"
    } else if ["does not read", "bad_status", " means ", "has no word"]
        .iter()
        .any(|w| stderr.contains(w))
    {
        "status"
    } else {
        panic!("a refusal that names no mismatch: {stderr}")
    }
}

/// The config: one source per preset, named after it.
fn config() -> String {
    let mut toml = String::new();
    for p in names() {
        toml.push_str(&format!(
            "[sources.{p}]\npreset = \"{p}\"\napi_keys = [\"{KEY}-{p}\"]\n"
        ));
        if ["reference", "voluum"].contains(&p) {
            toml.push_str(&format!("pixel_keys = [\"{PIXEL_KEY}-{p}\"]\n"));
        }
    }
    toml
}

fn postback_url(path: &str, source: &str, network: Option<&str>, base: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_postback-gateway"));
    cmd.args(["postback-url", "--source", source, "--base-url", base])
        .args(["--config", path])
        .env_remove("POSTBACK_CONFIG");
    if let Some(n) = network {
        cmd.args(["--network", n]);
    }
    cmd.output().unwrap()
}

#[test]
fn without_a_network_each_preset_prints_its_own_network_or_placeholders() {
    for p in names() {
        let mut toml = format!("[sources.s]\npreset = \"{p}\"\napi_keys = [\"{KEY}\"]\n");
        if ["reference", "voluum"].contains(&p) {
            toml.push_str(&format!("pixel_keys = [\"{PIXEL_KEY}\"]\n"));
        }
        let (_dir, path) = process::config_file(&toml);
        let out = postback_url(&path, "s", None, "https://pb.example.com/");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{p}: {stderr}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let want = golden(p)
            .replace("BASE", "https://pb.example.com")
            .replace("PKEY", PIXEL_KEY)
            .replace("KEY", KEY);
        assert_eq!(stdout, want, "{p}");
        // Placeholders are named on stderr, with the way out.
        if stdout.contains("REPLACE_") {
            assert!(
                stderr.contains("Replace REPLACE_CLICK_ID") && stderr.contains("--network"),
                "{p}: {stderr}"
            );
        }
    }
}

/// The amount as the event carries it, for `sent` under the source's format.
fn canonical(source: &Source, sent: &str) -> String {
    if source.rules.amount.format == AmountFormat::Cents {
        let cents: i64 = sent.parse().unwrap();
        return format!("{}.{:02}", cents / 100, cents % 100);
    }
    match sent.split_once('.') {
        None => format!("{sent}.00"),
        Some((_, d)) if d.len() < 2 => format!("{sent}{}", "0".repeat(2 - d.len())),
        Some(_) => sent.to_owned(),
    }
}

/// One postback the test fires, and the event it must produce.
struct Fired {
    token: String,
    source: String,
    amount: Option<String>,
    status: Status,
    event_id: String,
}

/// Fills the printed URL as the network would, round `i` of its samples;
/// returns the request's URL and form body (for a network that posts fields).
fn fill(url: &str, fields: &[Field], token: &str, i: usize) -> (String, Option<String>) {
    let value = |f: &Field| -> Option<String> {
        if f.role == Role::Tracking {
            return Some(token.to_owned());
        }
        (!f.samples.is_empty()).then(|| f.samples[i % f.samples.len()].0.clone())
    };
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap();
        match fields.iter().find(|f| encode(&f.param) == k) {
            // The macro as printed is the one the network fills in.
            Some(f) if v == f.macro_text => {
                if let Some(x) = value(f) {
                    pairs.push(format!("{k}={}", encode(&x)));
                }
            }
            Some(f) => panic!("{url}: {k}={v} is not the field's macro {}", f.macro_text),
            // The key.
            None => pairs.push(pair.to_owned()),
        }
    }
    let body: Vec<String> = fields
        .iter()
        .filter(|f| f.in_body)
        .filter_map(|f| value(f).map(|x| format!("{}={}", encode(&f.param), encode(&x))))
        .collect();
    (
        format!("{path}?{}", pairs.join("&")),
        (!body.is_empty()).then(|| body.join("&")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_preset_with_every_network_is_accepted_exactly_or_refused_by_postback_url() {
    let toml = config();
    let (_dir, path) = process::config_file(&toml);
    let kafka = mock_cluster();
    let sources = sources_from(&toml).unwrap();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.sources = Some(sources.clone())
    })
    .await;
    let base = format!("http://{}", gw.public);
    let client = reqwest::Client::new();
    let documented = documented_matrix();
    let mut seen = BTreeMap::new();
    let mut fired = Vec::new();
    for p in names() {
        let source = sources.get(p).unwrap();
        for n in network_names() {
            let out = postback_url(&path, p, Some(n), &base);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if out.status.code() == Some(65) {
                assert!(out.stdout.is_empty(), "{p} x {n}: no URL with a refusal");
                // The refusal says how to fix it.
                assert!(
                    stderr.contains("[sources.")
                        || stderr.contains("params.status")
                        || stderr.contains("preset ="),
                    "{p} x {n}: {stderr}"
                );
                seen.insert((p.to_owned(), n.to_owned()), kind(&stderr).to_owned());
                continue;
            }
            assert!(out.status.success(), "{p} x {n}: {stderr}");
            seen.insert((p.to_owned(), n.to_owned()), "ok".to_owned());
            let network = network_named(n).unwrap();
            let fields = fields(source, Some(network)).unwrap();
            let stdout = String::from_utf8(out.stdout).unwrap();
            let rounds = rounds(&fields);
            for (line, url) in stdout.lines().enumerate() {
                for i in 0..rounds {
                    let token = format!("{p}.{n}.{line}.{i}+a/b==");
                    let (url, body) = fill(url, &fields, &token, i);
                    let req = match &body {
                        Some(b) => client
                            .post(&url)
                            .header("content-type", "application/x-www-form-urlencoded")
                            .body(b.clone()),
                        None => client.get(&url),
                    };
                    let (status, reply_body) = reply(req.send().await.unwrap()).await;
                    assert_eq!(status, 200, "{p} x {n}: {url} {body:?}: {reply_body}");
                    let sample = |role: Role| {
                        fields
                            .iter()
                            .find(|f| f.role == role)
                            .filter(|f| !f.samples.is_empty())
                            .map(|f| f.samples[i % f.samples.len()].clone())
                    };
                    fired.push(Fired {
                        token,
                        source: p.to_owned(),
                        amount: sample(Role::Amount).map(|(a, _)| canonical(source, &a)),
                        status: sample(Role::Status)
                            .and_then(|(_, m)| m)
                            .unwrap_or(Status::Approved),
                        event_id: ok_id(&reply_body),
                    });
                }
            }
        }
    }
    assert_eq!(seen, documented, "docs/sources.md's format x network table");
    assert!(fired.len() > 60, "{}", fired.len());

    let records = read_topic(
        &kafka.bootstrap_servers(),
        TOPIC,
        fired.len(),
        Duration::from_millis(700),
    );
    assert_eq!(records.len(), fired.len());
    for f in &fired {
        let got = with_token(&records, &f.token);
        assert_eq!(got.len(), 1, "{}", f.token);
        let e = &got[0].value;
        assert_eq!(e["event_id"], f.event_id.as_str(), "{}", f.token);
        assert_eq!(e["source"], f.source.as_str());
        assert_eq!(
            e["amount"].as_str(),
            f.amount.as_deref(),
            "{}: {e}",
            f.token
        );
        assert_eq!(e["status"], f.status.as_str(), "{}: {e}", f.token);
    }
    gw.stop().await;
}

/// A URL pasted with its placeholders left in fails loudly: each of them
/// is refused as an unfilled macro, never taken as a click id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholders_left_in_a_url_are_refused() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    for role in Role::ALL {
        let url = gw.url(&format!(
            "/postback?api_key={API_KEY}&tracking={}&amount=1.00",
            placeholder(role)
        ));
        let (status, body) = reply(reqwest::get(&url).await.unwrap()).await;
        assert_eq!(
            (status, body.trim()),
            (400, "ERROR unfilled_macro"),
            "{role:?}"
        );
    }
    gw.stop().await;
}

#[test]
fn postback_url_refuses_unknown_sources_networks_and_bad_base_urls() {
    let (_dir, path) = process::config_file(&format!("[sources.s]\napi_keys = [\"{KEY}\"]\n"));
    for (source, network, base) in [
        ("nope", None, "https://pb.example.com"),
        ("s", None, "pb.example.com"),
        ("s", Some("nope"), "https://pb.example.com"),
    ] {
        let out = postback_url(&path, source, network, base);
        assert_eq!(out.status.code(), Some(64), "{source} {network:?} {base}");
        assert!(out.stdout.is_empty());
    }
}
