//! Mangled tokens through the whole gateway: every placeholder shape a
//! sender's template leaves behind, in the query (raw where a URL can carry
//! it, and percent-encoded), in a form body, in a JSON body and as a pixel,
//! is refused with its reason and counted under it, and nothing of it reaches
//! Kafka; the same shapes inside a real token are accepted byte for byte.
//! Also: `/postback/` and `/pixel/` with a trailing slash are the same endpoints.
use std::time::Duration;

use crate::common::*;

/// (decoded token, reason)
const REFUSED: &[(&str, &str)] = &[
    ("{clickid}", "unfilled_macro"),
    ("{{ click_id }}", "unfilled_macro"),
    ("${SUBID}", "unfilled_macro"),
    ("${click_id}", "unfilled_macro"),
    ("#{clickid}", "unfilled_macro"),
    ("[subid]", "unfilled_macro"),
    ("[object Object]", "unfilled_macro"),
    ("%s%", "unfilled_macro"),
    ("#s2#", "unfilled_macro"),
    ("REPLACE", "unfilled_macro"),
    ("OPTIONAL", "unfilled_macro"),
    ("null", "unfilled_macro"),
    ("undefined", "unfilled_macro"),
    ("None", "unfilled_macro"),
    ("(null)", "unfilled_macro"),
    ("nil", "unfilled_macro"),
    ("NaN", "unfilled_macro"),
    (" ", "bad_tracking"),
    ("    ", "bad_tracking"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholders_are_refused_everywhere_and_never_reach_kafka() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    let client = reqwest::Client::new();
    let mut expected = std::collections::HashMap::<&str, f64>::new();
    for (value, reason) in REFUSED {
        let encoded = enc(value);
        let mut replies = Vec::new();
        // Percent-encoded in the query, and raw where a URL can carry the shape.
        let mut queries = vec![format!("tracking={encoded}&amount=1.00")];
        if !value.contains(['#', ' ', '%']) {
            queries.push(format!("tracking={value}&amount=1.00"));
        }
        for q in &queries {
            let r = client
                .get(gw.url(&format!("/postback?api_key={API_KEY}&{q}")))
                .send()
                .await
                .unwrap();
            replies.push(("query", reply(r).await));
        }
        let r = client
            .post(gw.url(&format!("/postback?api_key={API_KEY}")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("tracking={encoded}&amount=1.00"))
            .send()
            .await
            .unwrap();
        replies.push(("form", reply(r).await));
        let r = client
            .post(gw.url(&format!("/postback?api_key={API_KEY}")))
            .header("content-type", "application/json")
            .body(serde_json::json!({"tracking": value, "amount": "1.00"}).to_string())
            .send()
            .await
            .unwrap();
        replies.push(("json", reply(r).await));
        for (how, (status, body)) in replies {
            assert_eq!(status, 400, "{value:?} in the {how}: {body}");
            assert_eq!(body, format!("ERROR {reason}"), "{value:?} in the {how}");
            *expected.entry(reason).or_default() += 1.0;
        }
        let r = client
            .get(gw.url(&format!(
                "/pixel.gif?api_key={PIXEL_KEY}&tracking={encoded}&amount=1.00"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "a pixel is always an image");
        assert_eq!(
            r.headers()["x-postback-result"],
            format!("ERROR {reason}").as_str(),
            "{value:?} as a pixel"
        );
        *expected.entry(reason).or_default() += 1.0;
    }
    for (reason, n) in &expected {
        assert_eq!(
            series(
                &gw,
                &format!("postback_rejections_total{{reason=\"{reason}\"}}")
            )
            .await,
            *n,
            "refusals counted under {reason}"
        );
    }

    // The shapes as parts of a real token are tokens; through a trailing-slash URL too.
    let real = ["abc${x}", "a{b}c", "abc#{x}", "None1", " abc "];
    let mut accepted = Vec::new();
    for (i, token) in real.iter().enumerate() {
        let path = if i % 2 == 0 {
            "/postback/"
        } else {
            "/postback"
        };
        let r = client
            .get(gw.url(&format!(
                "{path}?api_key={API_KEY}&tracking={}&amount=1.00",
                enc(token)
            )))
            .send()
            .await
            .unwrap();
        let (status, body) = reply(r).await;
        assert_eq!(status, 200, "{token:?}: {body}");
        accepted.push((*token, ok_id(&body)));
    }
    let r = client
        .get(gw.url(&format!(
            "/pixel/?api_key={PIXEL_KEY}&tracking=slash-pixel&amount=1.00"
        )))
        .send()
        .await
        .unwrap();
    let result = r.headers()["x-postback-result"]
        .to_str()
        .unwrap()
        .to_owned();
    accepted.push(("slash-pixel", ok_id(&result)));

    let records = read_topic(
        &kafka.bootstrap_servers(),
        TOPIC,
        accepted.len(),
        Duration::from_secs(2),
    );
    assert_eq!(
        records.len(),
        accepted.len(),
        "only the real tokens reached Kafka: {:?}",
        records
            .iter()
            .map(|r| &r.value["token"])
            .collect::<Vec<_>>()
    );
    for (token, id) in &accepted {
        let found = with_token(&records, token);
        assert_eq!(found.len(), 1, "{token:?}");
        assert_eq!(found[0].value["event_id"], id.as_str());
    }
    gw.stop().await;
}
