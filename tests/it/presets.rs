//! One black-box test per platform preset: a postback as that platform sends
//! it becomes the right event in Kafka (read back from the mock cluster); a
//! wrong secret, an address outside the source's networks and a spoofed
//! `X-Forwarded-For` from an untrusted peer are refused and reach nothing.
//!
//! Clients connect from 127.0.0.2 (allowed), 127.0.0.3 (the trusted proxy)
//! and 127.0.0.4 (neither); the whole loopback /8 is local.
use std::time::Duration;

use crate::common::*;
use rdkafka::mocking::MockCluster;
use serde_json::{json, Value};

const KEY: &str = "preset-key-0123456789";
const WRONG: &str = "wrong-key-0123456789";

/// How one platform sends a postback.
struct Case {
    preset: &'static str,
    /// Path and query for a token and a secret.
    url: fn(token: &str, secret: &str) -> String,
    /// A form body for the token, for platforms that post their fields.
    body: Option<fn(token: &str) -> String>,
    tokens: [&'static str; 2],
    /// Fields the event of the first token must carry.
    expect: Value,
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    case: &Case,
    token: &str,
    secret: &str,
    xff: Option<&str>,
) -> (u16, String) {
    let url = format!("{base}{}", (case.url)(token, secret));
    let mut req = match case.body {
        Some(body) => client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body(token)),
        None => client.get(url),
    };
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    reply(req.send().await.expect("request")).await
}

async fn run(case: Case) {
    let kafka = MockCluster::new(1).expect("mock cluster");
    kafka.create_topic(TOPIC, 3, 1).unwrap();
    let toml = format!(
        "[sources.s]\npreset = \"{}\"\napi_keys = [\"{KEY}\"]\n\
         allow_networks = [\"127.0.0.2/32\", \"203.0.113.0/24\"]\n\
         trusted_proxies = [\"127.0.0.3\"]\n",
        case.preset
    );
    let sources = sources_from(&toml);
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| c.sources = sources).await;
    let base = format!("http://{}", gw.public);
    let (allowed, proxy, stranger) = (client_from(2), client_from(3), client_from(4));
    let [t1, t2] = case.tokens;

    let (status, body) = send(&allowed, &base, &case, t1, KEY, None).await;
    assert_eq!(status, 200, "{}: {body}", case.preset);
    let id = ok_id(&body);
    let (status, body) = send(
        &proxy,
        &base,
        &case,
        t2,
        KEY,
        Some("198.51.100.1, 203.0.113.7"),
    )
    .await;
    assert_eq!(status, 200, "{} via the proxy: {body}", case.preset);

    let refused = [
        (&allowed, WRONG, None, 403, "ERROR bad_api_key"),
        (&stranger, KEY, None, 403, "ERROR ip_not_allowed"),
        (
            &stranger,
            KEY,
            Some("127.0.0.2"),
            403,
            "ERROR ip_not_allowed",
        ),
        (
            &stranger,
            KEY,
            Some("203.0.113.7"),
            403,
            "ERROR ip_not_allowed",
        ),
    ];
    for (client, secret, xff, want_status, want_body) in refused {
        let (status, body) = send(client, &base, &case, "refused-token", secret, xff).await;
        assert_eq!(
            (status, body.trim()),
            (want_status, want_body),
            "{}: secret {secret}, xff {xff:?}",
            case.preset
        );
    }

    let records = read_topic(
        &kafka.bootstrap_servers(),
        TOPIC,
        2,
        Duration::from_millis(700),
    );
    assert_eq!(records.len(), 2, "{}: {records:#?}", case.preset);
    let first = with_token(&records, t1);
    let e = &first[0].value;
    assert_eq!(e["event_id"], id.as_str());
    assert_eq!(e["source"], "s");
    assert_eq!(first[0].headers["source"], "s");
    assert_eq!(e["client_ip"], "127.0.0.2");
    for (k, v) in case.expect.as_object().unwrap() {
        assert_eq!(&e[k], v, "{}: field {k} of {e}", case.preset);
    }
    let second = with_token(&records, t2);
    assert_eq!(
        second[0].value["client_ip"], "203.0.113.7",
        "the proxy's X-Forwarded-For is believed"
    );
    gw.stop().await;
}

macro_rules! preset_test {
    ($name:ident, $case:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            run($case).await;
        }
    };
}

preset_test!(
    reference_postback,
    Case {
        preset: "reference",
        url: |t, k| {
            format!("/postback/s?api_key={k}&tracking={t}&amount=12.34&txid=TX-1&goal=lead&status=Pending&currency=eur&sub1=x")
        },
        body: None,
        tokens: [
            "befwueicjfn93q4urcnq83xnfjemw8qz2jfq38jcrufn8j89xjqcmq3c3",
            "ref-second"
        ],
        expect: json!({"amount": "12.34", "txid": "TX-1", "goal": "lead", "status": "pending", "status_raw": "Pending", "currency": "EUR", "params": {"sub1": "x"}}),
    }
);

preset_test!(
    cake_postback,
    Case {
        preset: "cake",
        url: |t, k| format!("/postback/s?api_key={k}&o=1234&e=7&t=TX-9&r={t}&p=4.50&s2=aff"),
        body: None,
        tokens: ["cake-req-8f7e6d", "cake-req-2"],
        expect: json!({"amount": "4.50", "txid": "TX-9", "goal": "7", "campaign_id": "1234", "status": "approved", "params": {"s2": "aff"}}),
    }
);

preset_test!(
    tune_postback,
    Case {
        preset: "tune",
        url: |t, k| {
            format!("/postback/s?transaction_id={t}&offer_id=15&goal_id=3&amount=2.00&adv_sub=cust-77&security_token={k}")
        },
        body: None,
        tokens: [
            "102a3b4c5d6e7f8091a2b3c4d5e6f7",
            "102ffffffffffffffffffffffffff0"
        ],
        expect: json!({"amount": "2.00", "campaign_id": "15", "goal": "3", "params": {"adv_sub": "cust-77"}}),
    }
);

preset_test!(
    nats_postback,
    Case {
        preset: "nats",
        url: |_, k| format!("/postback/s?api_key={k}"),
        body: Some(|t| {
            format!("passthrough1={t}&transaction%5Bamount%5D=2995&transaction%5Bbiller_amount%5D=2995&transaction%5Bbiller_currency%5D=USD&transaction%5Btransaction_id%5D=9001&post_type=rebillpost&natscode=MC4wLjEuMS4wLjAuMC4wLjA")
        }),
        tokens: ["nats-click-1", "nats-click-2"],
        expect: json!({"amount": "29.95", "currency": "USD", "txid": "9001", "status": "approved", "status_raw": "rebillpost", "params": {"natscode": "MC4wLjEuMS4wLjAuMC4wLjA", "transaction[amount]": "2995"}}),
    }
);

preset_test!(
    everflow_postback,
    Case {
        preset: "everflow",
        url: |t, k| {
            format!("/postback/s?transaction_id={t}&amount=10.00&order_id=ORD-1&currency=usd&event_id=5&adv1=x&verification_token={k}")
        },
        body: None,
        tokens: ["c4e8a1b2d3f44e5f9a0b1c2d3e4f5a6b", "ef-second"],
        expect: json!({"amount": "10.00", "txid": "ORD-1", "currency": "USD", "goal": "5", "params": {"adv1": "x"}}),
    }
);

preset_test!(
    voluum_postback,
    Case {
        preset: "voluum",
        url: |t, k| format!(
            "/postback/s?cid={t}&payout=1.50&txid=abc&et=Lead&currency=EUR&param1=x&api_key={k}"
        ),
        body: None,
        tokens: ["AbC+dE/f==", "vlm-second"],
        expect: json!({"token": "AbC+dE/f==", "amount": "1.50", "txid": "abc", "goal": "Lead", "currency": "EUR", "params": {"param1": "x"}}),
    }
);

preset_test!(
    binom_postback,
    Case {
        preset: "binom",
        url: |t, k| {
            format!("/postback/s?cnv_id={t}&payout=0.75&cnv_status=Sale&cnv_currency=usd&cnv_status2=up&api_key={k}")
        },
        body: None,
        tokens: ["1a2b3c4d5e6f7", "binom-second"],
        expect: json!({"amount": "0.75", "status": "approved", "status_raw": "Sale", "currency": "USD", "params": {"cnv_status2": "up"}}),
    }
);

preset_test!(
    keitaro_postback,
    Case {
        preset: "keitaro",
        url: |t, k| format!(
            "/{k}/postback?subid={t}&status=lead&payout=3.00&tid=TX-3&currency=usd&sub_id_1=x"
        ),
        body: None,
        tokens: ["3f4gk2l1m0n9", "keitaro-second"],
        expect: json!({"amount": "3.00", "status": "pending", "status_raw": "lead", "txid": "TX-3", "currency": "USD", "params": {"sub_id_1": "x"}}),
    }
);

preset_test!(
    kintura_postback,
    Case {
        preset: "kintura",
        url: |t, k| format!("/postback/s?cid={t}&payout=2.50&txid=TX-4&api_key={k}"),
        body: None,
        tokens: ["kin-0001", "kin-0002"],
        expect: json!({"amount": "2.50", "txid": "TX-4", "status": "approved"}),
    }
);

preset_test!(
    redtrack_postback,
    Case {
        preset: "redtrack",
        url: |t, k| {
            format!("/postback/s?clickid={t}&sum=5.00&type=Purchase&status=declined&rdtk_event_id=E1&api_key={k}")
        },
        body: None,
        tokens: ["65a1b2c3d4e5f6a7b8c9d0e1", "rt-second"],
        expect: json!({"amount": "5.00", "goal": "Purchase", "status": "declined", "txid": "E1"}),
    }
);

preset_test!(
    affise_postback,
    Case {
        preset: "affise",
        url: |t, k| {
            format!("/postback/s?clickid={t}&sum=9.99&action_id=A1&goal=1&status=2&custom_field1=x&secure={k}")
        },
        body: None,
        tokens: ["5f1e2d3c4b5a69788796a5b4", "5f1e2d3c4b5a69788796a5b5"],
        expect: json!({"amount": "9.99", "txid": "A1", "goal": "1", "status": "pending", "status_raw": "2", "params": {"custom_field1": "x"}}),
    }
);
