//! docs/conversion.v1.schema.json describes the events the gateway really
//! writes: the binary, against Tansu, takes varied postbacks (S2S and pixels,
//! GET, form and JSON, with every optional field and with none, an optional
//! amount left out, a status outside the vocabulary, template ids, extra
//! params), and every event read back from the topic passes the schema.
//! The schema also refuses events that are plainly wrong, so the check can fail.
use std::time::Duration;

use crate::common::process::{config_file, GatewayProcess, Tansu};
use crate::common::*;
use serde_json::{json, Value};

const KEY: &str = "schema-key-0123456789";
const PIXEL: &str = "schema-pixel-key-0123456789";

const CONFIG: &str = r#"
[sources.reference]
api_keys = ["schema-key-0123456789"]
pixel_keys = ["schema-pixel-key-0123456789"]
conversion_time = "click"
[sources.binom]
preset = "binom"
api_keys = ["schema-key-0123456789"]
[sources.cake]
preset = "cake"
api_keys = ["schema-key-0123456789"]
"#;

fn schema() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/conversion.v1.schema.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("the schema is JSON")
}

fn validator() -> jsonschema::Validator {
    let schema = schema();
    assert!(
        jsonschema::meta::is_valid(&schema),
        "the schema is a valid draft 2020-12 schema"
    );
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

/// Every way the event fails the schema, one line each.
fn problems(v: &jsonschema::Validator, event: &Value) -> Vec<String> {
    v.iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_written_to_kafka_passes_the_schema() {
    let tansu = Tansu::start();
    let (_dir, path) = config_file(CONFIG);
    let gw = GatewayProcess::start(Some(&tansu.brokers), &[("POSTBACK_CONFIG", &path)]).await;
    let client = reqwest::Client::new();
    let get = |path: String| client.get(gw.url(&path));
    let form = |path: String, body: &'static str| {
        client
            .post(gw.url(&path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let special = "AbC+dE/f==|пример";
    let cases = [
        // S2S GET with the required fields only.
        (
            "schema-min",
            get(format!(
                "/postback/reference?api_key={KEY}&tracking=schema-min&amount=0.00"
            )),
        ),
        // S2S GET with every optional field, a click time that becomes the
        // conversion time, extra params and the cache-buster.
        (
            special,
            get(format!(
                "/postback/reference?api_key={KEY}&tracking={}&amount=1234.56&txid=ORD-1\
                 &goal=sale&status=pending&currency=eur&click_time=2026-11-20T08:30:00Z\
                 &sub1=x&sub2=%D0%BF&_=99",
                enc(special)
            ))
            .header("user-agent", "Mozilla/5.0 (schema test)"),
        ),
        // A form POST and a JSON POST.
        (
            "schema-form",
            form(
                format!("/postback/reference?api_key={KEY}"),
                "tracking=schema-form&amount=5.00&status=declined&click_time=1700000000",
            ),
        ),
        (
            "schema-json",
            client
                .post(gw.url(&format!("/postback/reference?api_key={KEY}")))
                .json(&json!({"tracking": "schema-json", "amount": "7.25", "note": 42})),
        ),
        // An image pixel and a beacon.
        (
            "schema-pixel",
            get(format!(
                "/pixel/reference?api_key={PIXEL}&tracking=schema-pixel&amount=3.10"
            )),
        ),
        (
            "schema-beacon",
            form(
                format!("/pixel/reference?api_key={PIXEL}"),
                "tracking=schema-beacon&amount=0.99",
            ),
        ),
        // Presets: an optional amount left out, a word outside the
        // vocabulary (`other`), a currency; a campaign id from a template.
        (
            "schema-binom",
            get(format!(
                "/postback/binom?api_key={KEY}&cnv_id=schema-binom&cnv_status=signup&cnv_currency=EUR"
            )),
        ),
        (
            "schema-cake",
            get(format!(
                "/postback/cake?api_key={KEY}&r=schema-cake&p=12.50&t=LEAD-1&o=231"
            )),
        ),
    ];
    let mut tokens = Vec::new();
    for (token, request) in cases {
        let (_, result) = reply(request.send().await.unwrap()).await;
        assert!(result.starts_with("OK "), "{token}: {result}");
        tokens.push(token);
    }

    let records = read_topic(&tansu.brokers, TOPIC, tokens.len(), Duration::from_secs(1));
    assert_eq!(records.len(), tokens.len(), "{records:?}");
    let v = validator();
    for token in &tokens {
        let found = with_token(&records, token);
        assert_eq!(found.len(), 1, "{token}");
        let event = &found[0].value;
        assert_eq!(problems(&v, event), Vec::<String>::new(), "{event}");
    }
    // The cases meant to reach the schema's corners did.
    let event = |t: &str| with_token(&records, t)[0].value.clone();
    assert_eq!(event("schema-binom")["amount"], Value::Null);
    assert_eq!(event("schema-binom")["status"], "other");
    assert_eq!(event("schema-cake")["campaign_id"], "231");
    assert_eq!(event("schema-pixel")["kind"], "pixel");
    assert_eq!(event("schema-min")["params"], json!({}));
    assert_eq!(event("schema-min")["user_agent"], Value::Null);
    assert_eq!(
        event(special)["conversion_time"],
        "2026-11-20T08:30:00.000Z"
    );
}

/// An event as the gateway writes it, with every optional field null.
fn plain_event() -> Value {
    json!({"schema":"conversion.v1","event_id":"01a1fe20-7eea-7350-90c3-8f8c7adf4587",
        "dedup_key":"653831566bbe670cfbd61ace06e9a04b","source":"default","kind":"s2s",
        "token":"abc","amount":"12.34","currency":null,"txid":null,"goal":null,
        "status":"approved","status_raw":null,"received_at":"2026-11-21T12:41:44.938Z",
        "conversion_time":"2026-11-21T12:41:44.938Z","click_time":null,"campaign_id":null,
        "adset_id":null,"ad_id":null,"placement":null,"client_ip":"127.0.0.1",
        "user_agent":null,"params":{}})
}

/// A change that makes an event wrong.
type Spoil = fn(&mut Value);

#[test]
fn the_schema_refuses_events_that_are_plainly_wrong() {
    let v = validator();
    assert_eq!(problems(&v, &plain_event()), Vec::<String>::new());
    let wrong: [(&str, Spoil); 14] = [
        ("amount with one decimal", |e| e["amount"] = json!("12.3")),
        ("amount as a number", |e| e["amount"] = json!(12.34)),
        ("amount with a comma", |e| e["amount"] = json!("12,34")),
        ("no token", |e| {
            e.as_object_mut().unwrap().remove("token");
        }),
        ("an empty token", |e| e["token"] = json!("")),
        ("a token with a newline", |e| e["token"] = json!("a\nb")),
        ("an unknown kind", |e| e["kind"] = json!("email")),
        ("an unknown status", |e| e["status"] = json!("refunded")),
        ("a field the schema does not have", |e| {
            e["api_key"] = json!("secret")
        }),
        ("an event id that is not a UUIDv7", |e| {
            e["event_id"] = json!("01a1fe20-7eea-4350-90c3-8f8c7adf4587")
        }),
        ("a short dedup key", |e| e["dedup_key"] = json!("6538")),
        ("a lowercase currency", |e| e["currency"] = json!("usd")),
        ("a time without milliseconds", |e| {
            e["received_at"] = json!("2026-11-21T12:41:44Z")
        }),
        ("a param that is not a string", |e| {
            e["params"] = json!({"sub1": 1})
        }),
    ];
    for (what, spoil) in wrong {
        let mut event = plain_event();
        spoil(&mut event);
        assert!(!v.is_valid(&event), "the schema accepts {what}: {event}");
    }
    let mut event = plain_event();
    event["client_ip"] = json!("not an address");
    assert!(!v.is_valid(&event), "formats are checked");
}
