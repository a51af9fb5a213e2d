//! Kafka outages against the mock cluster: postbacks are answered 200 from the
//! durable spool, and every acknowledged event reaches Kafka exactly once when
//! the broker is back. A full spool is the only reason for a 503.
use crate::common;
use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_mid_stream_is_answered_from_the_spool_and_nothing_is_lost_or_doubled() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    let send = |token: String, pixel: bool| {
        let c = client.clone();
        let url = if pixel {
            gw.url(&format!(
                "/pixel.gif?api_key={PIXEL_KEY}&tracking={token}&amount=2.50"
            ))
        } else {
            gw.url(&query(&token, "2.50"))
        };
        async move {
            let r = c.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let text = if pixel {
                r.headers()["x-postback-result"]
                    .to_str()
                    .unwrap()
                    .to_owned()
            } else {
                r.text().await.unwrap()
            };
            (token, status, text)
        }
    };
    for i in 0..20 {
        accepted.push(send(format!("before-{i}"), i % 4 == 0).await);
    }
    kafka.broker_down(1).unwrap();
    // Concurrent senders during the outage, pixels among them.
    let mut during = Vec::new();
    for i in 0..60 {
        during.push(tokio::spawn(send(format!("during-{i}"), i % 3 == 0)));
    }
    for t in during {
        accepted.push(t.await.unwrap());
    }
    assert_eq!(
        status_of(&gw.admin_url("/readyz")).await,
        200,
        "the spool keeps the gateway ready"
    );
    assert!(
        metric(&gw, "postback_spool_events").await > 0.0,
        "events wait in the spool"
    );
    kafka.broker_up(1).unwrap();
    for i in 0..20 {
        accepted.push(send(format!("after-{i}"), false).await);
    }

    for (token, status, text) in &accepted {
        assert_eq!(*status, 200, "{token}: {text}");
        assert!(text.starts_with("OK "), "{token}: {text}");
    }
    wait_until("the spool is drained", async || {
        metric(&gw, "postback_spool_events").await == 0.0
    })
    .await;
    let records = read_topic(
        &kafka.bootstrap_servers(),
        TOPIC,
        accepted.len(),
        Duration::from_secs(2),
    );
    for (token, _, text) in &accepted {
        let found = with_token(&records, token);
        assert_eq!(found.len(), 1, "{token} is in Kafka exactly once");
        let kind = if found[0].value["kind"] == "pixel" {
            "pixel"
        } else {
            "s2s"
        };
        assert_event(found[0], &ok_id(text), token, "2.50", kind);
    }
    assert_eq!(
        records.len(),
        accepted.len(),
        "nothing else is in the topic"
    );
    // A retry of a spooled postback is a duplicate of it.
    let (token, _, text) = &accepted[30];
    let again = reqwest::get(gw.url(&query(token, "2.50"))).await.unwrap();
    let body = if token.starts_with("during-") && (30 - 20) % 3 == 0 {
        again.headers()["x-postback-result"]
            .to_str()
            .unwrap()
            .to_owned()
    } else {
        again.text().await.unwrap()
    };
    assert_eq!(body, format!("DUPLICATE {}", ok_id(text)));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_is_503_and_not_ready_until_it_drains() {
    let kafka = mock_cluster();
    // Room for a few events only.
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.spool.max_bytes = 64 * 1024 + 3000
    })
    .await;
    kafka.broker_down(1).unwrap();
    let mut ok = Vec::new();
    let mut refused = None;
    for i in 0..1000 {
        let r = reqwest::get(gw.url(&query(&format!("full-{i}"), "1.00")))
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => ok.push((format!("full-{i}"), ok_id(&r.text().await.unwrap()))),
            503 => {
                assert_eq!(r.headers()["retry-after"], "5");
                assert_eq!(r.text().await.unwrap(), "ERROR unavailable");
                refused = Some(format!("full-{i}"));
                break;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    let refused = refused.expect("the spool fills up");
    assert!(!ok.is_empty(), "some postbacks fit in the spool");
    wait_until("/readyz says not ready", async || {
        status_of(&gw.admin_url("/readyz")).await == 503
    })
    .await;

    kafka.broker_up(1).unwrap();
    wait_until("/readyz is ready again", async || {
        status_of(&gw.admin_url("/readyz")).await == 200
    })
    .await;
    wait_until("the spool is drained", async || {
        metric(&gw, "postback_spool_events").await == 0.0
    })
    .await;
    // The refused postback was not acknowledged: its retry is a new event.
    let r = reqwest::get(gw.url(&query(&refused, "1.00")))
        .await
        .unwrap();
    let retried = ok_id(&r.text().await.unwrap());
    ok.push((refused, retried));
    let records = read_topic(
        &kafka.bootstrap_servers(),
        TOPIC,
        ok.len(),
        Duration::from_secs(2),
    );
    assert_eq!(records.len(), ok.len());
    for (token, id) in &ok {
        let found = with_token(&records, token);
        assert_eq!(found.len(), 1, "{token}");
        assert_event(found[0], id, token, "1.00", "s2s");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_with_a_flipped_byte_and_a_torn_last_record_drains_every_other_record() {
    use postback_gateway::sink::spool::{Record, Spool};

    let kafka = mock_cluster();
    let dir = common::tempdir().unwrap();
    let event = |i: u32| {
        let id = uuid::Uuid::now_v7();
        let token = format!("torn-{i}");
        let payload = serde_json::json!({
            "schema": "conversion.v1", "event_id": id.to_string(),
            "dedup_key": format!("{:032x}", 1000 + i), "source": "default", "kind": "s2s",
            "token": token, "amount": "1.00",
        });
        Record {
            event_id: id,
            dedup_key: 1000 + u128::from(i),
            at: (postback_gateway::dedup::system_clock())(),
            source: "default".into(),
            key: token,
            payload: payload.to_string().into_bytes(),
        }
    };
    let records: Vec<Record> = (0..4).map(event).collect();
    {
        let (spool, _) = Spool::open(dir.path(), 1 << 20, 1 << 20).unwrap();
        for r in &records {
            spool.append(r).await.unwrap();
        }
        spool.close();
    }
    // A crash in the middle of writing the fourth record: cut it in half.
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .find(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false));
    let seg = seg.expect("a segment with records");
    let len = std::fs::metadata(&seg).unwrap().len();
    let last = records[3].payload.len() as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - last / 2)
        .unwrap();
    // And a bad sector in the middle: one byte of the second record's payload.
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(7)
        .position(|w| w == b"torn-1\"")
        .expect("the second record's token");
    bytes[at + 2] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();

    let spool_dir = dir.path().to_owned();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| c.spool_dir = spool_dir).await;
    wait_until("the spool is drained", async || {
        metric(&gw, "postback_spool_events").await == 0.0
    })
    .await;
    let got = read_topic(&kafka.bootstrap_servers(), TOPIC, 2, Duration::from_secs(1));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        with_token(&got, "torn-1").is_empty(),
        "the damaged record is lost, and only it"
    );
    assert_eq!(
        series(&gw, "postback_spool_corrupt_ranges_total").await,
        1.0
    );
    for r in [&records[0], &records[2]] {
        let found = with_token(&got, &r.key);
        assert_eq!(found.len(), 1, "{}", r.key);
        assert_eq!(found[0].value["event_id"], r.event_id.to_string());
    }
    assert!(
        with_token(&got, "torn-3").is_empty(),
        "the torn record was never acknowledged"
    );
    // The recovered events rebuilt the dedup window: their keys are known.
    assert!(metric(&gw, "postback_dedup_keys").await >= 2.0);
    gw.stop().await;
}

/// What a broker that fences the idempotent producer does (Tansu answers
/// every produce request with `PRODUCER_FENCED` after librdkafka bumped its
/// epoch because messages timed out in flight): that producer instance never
/// delivers again, without any fatal error. The gateway replaces it; the
/// refused postback is answered from the spool and drains, and later ones go
/// to Kafka directly again, without a restart. (`tests/it/chaos.rs` shows the
/// same against Tansu itself, after real stalls.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_producer_is_replaced_and_delivery_resumes() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    let client = reqwest::Client::new();
    let send = |token: String| {
        let (c, url) = (client.clone(), gw.url(&query(&token, "3.30")));
        async move {
            let r = c.get(url).send().await.unwrap();
            (token, r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let mut accepted = vec![send("before".into()).await];
    assert_eq!(
        series(&gw, "postback_kafka_producer_restarts_total").await,
        0.0
    );

    kafka.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    accepted.push(send("fenced".into()).await);
    assert_eq!(
        series(&gw, "postback_spooled_total").await,
        1.0,
        "the refused postback went to the spool"
    );
    wait_until("the fenced producer is replaced", async || {
        series(&gw, "postback_kafka_producer_restarts_total").await == 1.0
    })
    .await;
    wait_until("the spool is drained", async || {
        series(&gw, "postback_spool_events").await == 0.0
    })
    .await;

    // Delivery goes straight to Kafka again: nothing more is spooled.
    for i in 0..10 {
        accepted.push(send(format!("after-{i}")).await);
    }
    assert_eq!(series(&gw, "postback_spooled_total").await, 1.0);
    assert_eq!(
        series(&gw, "postback_kafka_producer_restarts_total").await,
        1.0
    );

    let records = read_topic(
        &kafka.bootstrap_servers(),
        TOPIC,
        accepted.len(),
        Duration::from_secs(2),
    );
    for (token, status, text) in &accepted {
        assert_eq!(*status, 200, "{token}: {text}");
        let found = with_token(&records, token);
        assert_eq!(found.len(), 1, "{token} is in Kafka exactly once");
        assert_event(found[0], &ok_id(text), token, "3.30", "s2s");
    }
    assert_eq!(
        records.len(),
        accepted.len(),
        "nothing else is in the topic"
    );
    gw.stop().await;
}

/// A postback Kafka refuses for good on the direct path (here: larger than
/// the producer may send) is answered 503, not 200 and a dead letter later:
/// nothing is spooled, the refusal is counted, and the sender's retry is
/// taken once Kafka would take it (its dedup key was released).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postback_refused_for_good_is_answered_503_and_its_retry_is_taken() {
    let kafka = mock_cluster();
    let spool_dir = common::tempdir().unwrap();
    let dir = spool_dir.path().to_owned();
    let gw = gateway_sending_3000_bytes(&kafka.bootstrap_servers(), &dir, |_| {}).await;
    let padding: String = (1..=5)
        .map(|i| format!("&sub{i}={}", "x".repeat(900)))
        .collect();
    let big_query = format!("{}{padding}", query("refused-big", "1.00"));
    let (status, small) = reply(
        reqwest::get(gw.url(&query("refused-small", "1.00")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{small}");
    let (status, big) = reply(reqwest::get(gw.url(&big_query)).await.unwrap()).await;
    assert_eq!((status, big.as_str()), (503, "ERROR unavailable"));
    assert_eq!(
        series(
            &gw,
            "postback_kafka_delivery_failures_total{cause=\"refused\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        series(&gw, "postback_spooled_total").await,
        0.0,
        "nothing spooled"
    );
    assert_eq!(series(&gw, "postback_spool_events").await, 0.0);
    gw.stop().await;
    assert!(!dir.join("dead-letter.log").exists(), "no dead letter");

    // The sender retries once the producer may send it: taken, once.
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| c.spool_dir = dir.clone()).await;
    let (status, retried) = reply(reqwest::get(gw.url(&big_query)).await.unwrap()).await;
    assert_eq!(status, 200, "{retried}");
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 2, Duration::from_secs(1));
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(with_token(&records, "refused-big").len(), 1);
    assert_eq!(
        with_token(&records, "refused-big")[0].value["event_id"],
        ok_id(&retried).as_str()
    );
    gw.stop().await;
}

/// A gateway on `kafka` and the spool `dir` whose producer may send 3000
/// bytes at most, with `tweak` applied.
async fn gateway_sending_3000_bytes(
    kafka: &str,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut postback_gateway::Config),
) -> Gateway {
    Gateway::start(kafka, |c| {
        c.spool_dir = dir.to_owned();
        c.kafka
            .properties
            .insert("message.max.bytes".into(), "3000".into());
        tweak(c);
    })
    .await
}

/// Spooled records for the dead-letter tests: one too large for a producer
/// limited to 3000 bytes, and a small one.
async fn spool_a_big_and_a_small_record(
    dir: &std::path::Path,
) -> Vec<postback_gateway::sink::spool::Record> {
    use postback_gateway::sink::spool::{Record, Spool};
    let record = |i: u32, token: &str, filler: usize| {
        let id = uuid::Uuid::now_v7();
        let payload = serde_json::json!({
            "schema": "conversion.v1", "event_id": id.to_string(),
            "dedup_key": format!("{:032x}", 7000 + i), "source": "default", "kind": "s2s",
            "token": token, "amount": "1.00", "params": { "filler": "x".repeat(filler) },
        });
        Record {
            event_id: id,
            dedup_key: 7000 + u128::from(i),
            at: (postback_gateway::dedup::system_clock())(),
            source: "default".into(),
            key: token.into(),
            payload: payload.to_string().into_bytes(),
        }
    };
    let records = vec![record(1, "dl-big", 5000), record(2, "dl-small", 10)];
    let (spool, _) = Spool::open(dir, 1 << 20, 1 << 20).unwrap();
    for r in &records {
        spool.append(r).await.unwrap();
    }
    spool.close();
    records
}

/// A spooled record Kafka refuses for good (an event accepted during an
/// outage, say) must not hold up the spool: it goes to the dead-letter file,
/// is counted, and the records behind it drain. Renamed to a segment name,
/// the dead-letter file drains at the next start (the replay step of
/// docs/durability.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_record_refused_for_good_goes_to_the_dead_letter_file_and_the_rest_drains() {
    let kafka = mock_cluster();
    let spool_dir = common::tempdir().unwrap();
    let dir = spool_dir.path().to_owned();
    let spooled = spool_a_big_and_a_small_record(&dir).await;
    let gw = gateway_sending_3000_bytes(&kafka.bootstrap_servers(), &dir, |_| {}).await;
    wait_until("the refused record is dead-lettered", async || {
        series(&gw, "postback_spool_dead_letters_total").await == 1.0
    })
    .await;
    wait_until("the spool is drained", async || {
        series(&gw, "postback_spool_events").await == 0.0
    })
    .await;
    let dead = std::fs::read(dir.join("dead-letter.log")).unwrap();
    assert!(
        dead.windows(6).any(|w| w == b"dl-big"),
        "the dead-letter file holds the refused event"
    );
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 1, Duration::from_secs(1));
    assert_eq!(records.len(), 1, "only the small one reached Kafka");
    assert_eq!(with_token(&records, "dl-small").len(), 1);
    gw.stop().await;

    // Replay: the dead-letter file renamed to a segment name drains at the
    // next start, here with a producer allowed to send it.
    std::fs::rename(dir.join("dead-letter.log"), dir.join("seg-999999.log")).unwrap();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| c.spool_dir = dir.clone()).await;
    wait_until("the replayed record drains", async || {
        series(&gw, "postback_spool_events").await == 0.0
    })
    .await;
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 2, Duration::from_secs(1));
    let found = with_token(&records, "dl-big");
    assert_eq!(found.len(), 1, "replayed once");
    assert_eq!(
        found[0].value["event_id"],
        spooled[0].event_id.to_string().as_str()
    );
    gw.stop().await;
}

/// The dead-letter file counts toward `[spool] max_bytes`: when it would
/// pass the bound, the refused record stays in the spool (counted, retried)
/// instead of growing a file outside the limit until the disk is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_file_is_bounded_by_the_spools_limit() {
    let kafka = mock_cluster();
    let spool_dir = common::tempdir().unwrap();
    let dir = spool_dir.path().to_owned();
    spool_a_big_and_a_small_record(&dir).await;
    let on_disk: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    // Room for what is spooled, not for a second copy of the big record.
    let gw = gateway_sending_3000_bytes(&kafka.bootstrap_servers(), &dir, |c| {
        c.spool.max_bytes = on_disk + 1000;
    })
    .await;
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 1, Duration::from_secs(3));
    assert_eq!(
        with_token(&records, "dl-small").len(),
        1,
        "the small one drains"
    );
    assert_eq!(series(&gw, "postback_spool_dead_letters_total").await, 0.0);
    assert!(
        series(&gw, "postback_spool_events").await >= 1.0,
        "the big one stays spooled"
    );
    assert!(
        !dir.join("dead-letter.log").exists()
            || std::fs::metadata(dir.join("dead-letter.log"))
                .unwrap()
                .len()
                == 0
    );
    gw.stop().await;
}

/// Two spooled events of one conversion (an append that timed out, its
/// sender answered 503, that landed after all; and the sender's retry) are
/// one event in Kafka, also when the gateway restarted in between and no
/// longer knows of the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_spooled_events_of_one_conversion_reach_kafka_once() {
    let kafka = mock_cluster();
    let dir = common::tempdir().unwrap();
    let ids = spool_records(
        dir.path(),
        &[("withdrawn", 9001), ("between", 9002), ("withdrawn", 9001)],
    )
    .await;
    let path = dir.path().to_owned();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| c.spool_dir = path).await;
    wait_until("the spool is drained", async || {
        series(&gw, "postback_spool_events").await == 0.0
    })
    .await;
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 2, Duration::from_secs(1));
    assert_eq!(records.len(), 2, "{records:?}");
    let found = with_token(&records, "withdrawn");
    assert_eq!(found.len(), 1, "{records:?}");
    assert_eq!(found[0].value["event_id"], ids[0].to_string().as_str());
    assert_eq!(series(&gw, "postback_spool_skipped_total").await, 1.0);
    gw.stop().await;
}
