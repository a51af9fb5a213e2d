//! The limits of docs/hardening.md through a real socket: slow clients, the connection
//! cap, rate limits per client and per source, request-smuggling shapes
//! (conflicting lengths are refused by hyper, any Transfer-Encoding by the
//! gateway), and POSTs refused before their body is waited for.
use crate::common;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `raw` on `s` and reads one reply head plus body (by Content-Length).
async fn exchange(s: &mut TcpStream, raw: &str) -> String {
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("reply in time")
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// Sends one header byte every 200 ms (never a complete head) for up to 8 s;
/// whether the server closed the connection meanwhile.
async fn trickled_until_cut(s: &mut TcpStream) -> bool {
    for _ in 0..40 {
        if s.write_all(b"X").await.is_err() {
            return true;
        }
        let mut b = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {} // a 408 before the close is fine
            Err(_) => {}
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_that_trickles_in_is_cut_at_the_header_read_timeout() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.limits.header_read_timeout = Duration::from_secs(1)
    })
    .await;
    let mut slow = TcpStream::connect(gw.public).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /postback?tracking=slow HTTP/1.1\r\n")
        .await
        .unwrap();
    assert!(
        trickled_until_cut(&mut slow).await,
        "the slow connection is closed"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "cut after {took:?}"
    );
    // Meanwhile, others are served.
    let r = reqwest::get(gw.url(&query("fast", "1.00"))).await.unwrap();
    assert_eq!(r.status(), 200);
    gw.stop().await;
}

/// Reads from `s` until the server closes it (or 5 s pass); true if closed.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 256];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// How many events the topic holds, once at least `expect` arrived.
fn events(brokers: &str, expect: usize) -> usize {
    read_topic(brokers, TOPIC, expect, Duration::from_millis(300)).len()
}

/// A form POST's head for `body`, with the test key in the query.
fn form_head(token: &str, body: &str) -> String {
    format!(
        "POST /postback?api_key={API_KEY}&tracking={token} HTTP/1.1\r\nHost: t\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_read_timeout_spares_a_request_in_flight_and_closes_an_idle_connection_after_it()
{
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.limits.header_read_timeout = Duration::from_secs(1)
    })
    .await;
    let mut s = TcpStream::connect(gw.public).await.unwrap();
    // A body that takes twice the header read timeout: its own limit is the
    // request timeout (10 s), so it is answered.
    let body = "amount=12.50";
    s.write_all(form_head("slow-body", body).as_bytes())
        .await
        .unwrap();
    for byte in body.as_bytes().chunks(3) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.write_all(byte).await.unwrap();
    }
    let r = exchange(&mut s, "").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\r\n\r\nOK "), "{r}");
    // Then idle on a keep-alive connection: closed a header read timeout
    // after the reply.
    let replied = Instant::now();
    assert!(
        closed_by_server(&mut s).await,
        "the idle connection is closed"
    );
    let idle = replied.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_millis(2500),
        "closed after {idle:?} of idleness"
    );
    // The second head of a keep-alive connection has the same deadline.
    let mut s = TcpStream::connect(gw.public).await.unwrap();
    let r = exchange(&mut s, &get(&query("first-of-two", "1.00"))).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let replied = Instant::now();
    s.write_all(b"GET /postback?tracking=second HTTP/1.1\r\n")
        .await
        .unwrap();
    let cut = trickled_until_cut(&mut s).await;
    let took = replied.elapsed();
    assert!(cut, "the trickling second head is cut");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "cut after {took:?}"
    );
    assert_eq!(
        events(&kafka.bootstrap_servers(), 2),
        2,
        "every OK in Kafka once"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_closes_idle_connections_at_once_and_answers_the_request_in_flight_first() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    // Two idle keep-alive connections, each after one postback.
    let mut idle = Vec::new();
    for i in 0..2 {
        let mut s = TcpStream::connect(gw.public).await.unwrap();
        let r = exchange(&mut s, &get(&query(&format!("idle-{i}"), "1.00"))).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        idle.push(s);
    }
    // One request in flight: its head is in, its body not yet.
    let body = "amount=3.00";
    let mut busy = TcpStream::connect(gw.public).await.unwrap();
    busy.write_all(form_head("in-flight", body).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let stopping = tokio::spawn(gw.stop());
    for s in &mut idle {
        assert!(closed_by_server(s).await, "an idle connection is closed");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "idle connections closed after {:?} (the grace period is 5 s)",
        started.elapsed()
    );
    let r = exchange(&mut busy, body).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("\r\n\r\nOK "), "{r}");
    assert!(closed_by_server(&mut busy).await, "closed after its reply");
    stopping.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stopped after {:?}",
        started.elapsed()
    );
    assert_eq!(
        events(&kafka.bootstrap_servers(), 3),
        3,
        "every OK in Kafka once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_connections_get_503_and_open_ones_keep_working() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| c.limits.max_connections = 3).await;
    let mut open = Vec::new();
    for i in 0..3 {
        let mut s = TcpStream::connect(gw.public).await.unwrap();
        let r = exchange(&mut s, &get(&query(&format!("cap-{i}"), "1.00"))).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        open.push(s);
    }
    let mut extra = TcpStream::connect(gw.public).await.unwrap();
    let r = exchange(&mut extra, &get(&query("cap-extra", "1.00"))).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after: 1"), "{r}");
    assert!(r.ends_with("ERROR unavailable"), "{r}");
    // The open connections are unaffected.
    let r = exchange(&mut open[0], &get(&query("cap-again", "1.00"))).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(series(&gw, "postback_connections_refused_total").await, 1.0);
    // A slot frees once the gateway sees the connection close.
    drop(open.pop());
    wait_until("a new connection is served", async || {
        let mut next = TcpStream::connect(gw.public).await.unwrap();
        let r = exchange(&mut next, &get(&query("cap-next", "1.00"))).await;
        r.starts_with("HTTP/1.1 200")
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_address_has_its_own_rate_limit() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.limits.client_rate = Some(postback_gateway::ratelimit::Rate {
            per_second: 0.5,
            burst: 2.0,
        })
    })
    .await;
    let a = client_from(1);
    let b = client_from(2);
    for i in 0..2 {
        let (status, body) = reply(
            a.get(gw.url(&query(&format!("rl-a{i}"), "1.00")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, &body[..3]), (200, "OK "), "{body}");
    }
    let r = a.get(gw.url(&query("rl-a2", "1.00"))).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.text().await.unwrap(), "ERROR rate_limited");
    // Another address is not affected.
    let (status, _) = reply(b.get(gw.url(&query("rl-b0", "1.00"))).send().await.unwrap()).await;
    assert_eq!(status, 200);
    // A limited pixel is still the GIF.
    let r = a
        .get(gw.url(&format!(
            "/pixel.gif?api_key={PIXEL_KEY}&tracking=rl-px&amount=1.00"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-postback-result"], "ERROR rate_limited");
    let records = read_topic(
        &kafka.bootstrap_servers(),
        TOPIC,
        3,
        Duration::from_millis(700),
    );
    assert_eq!(records.len(), 3, "limited postbacks do not reach Kafka");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_has_its_own_rate_limit() {
    let kafka = mock_cluster();
    let sources = sources_from(
        r#"
        [sources.default]
        api_keys = ["test-key-0123456789"]
        [sources.limited]
        api_keys = ["limited-key-0123456789"]
        rate_limit = { per_second = 0.5, burst = 3 }
        "#,
    );
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| c.sources = sources).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let url = gw.url(&format!(
            "/postback/limited?api_key=limited-key-0123456789&tracking=src-{i}&amount=1.00"
        ));
        statuses.push(client.get(url).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    // Another source is not limited by it.
    let r = client
        .get(gw.url(&query("other-source", "1.00")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_shapes_cannot_slip_a_second_request_through() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    let body = "tracking=framed&amount=1.00";
    let hidden = format!(
        "GET /postback?api_key={API_KEY}&tracking=smuggled&amount=1.00 HTTP/1.1\r\nHost: t\r\n\r\n"
    );

    // Two different Content-Lengths: refused (by hyper), and the connection closed.
    let mut s = TcpStream::connect(gw.public).await.unwrap();
    let raw = format!(
        "POST /postback?api_key={API_KEY} HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nContent-Length: 4\r\n\r\n{body}{hidden}",
        body.len()
    );
    let r = exchange(&mut s, &raw).await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    let mut rest = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing more is answered on that connection");

    // Content-Length with Transfer-Encoding, and a plain chunked body: refused
    // with 411, and nothing behind them is read as a request.
    let with_length = format!(
        "POST /postback?api_key={API_KEY} HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n{hidden}",
        body.len()
    );
    let chunked = format!(
        "POST /postback?api_key={API_KEY} HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n{hidden}",
        body.len()
    );
    for raw in [with_length, chunked] {
        let mut s = TcpStream::connect(gw.public).await.unwrap();
        let r = exchange(&mut s, &raw).await;
        assert!(r.starts_with("HTTP/1.1 411"), "{r}");
        assert!(r.ends_with("ERROR length_required"), "{r}");
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut rest))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the hidden request is not answered");
    }

    // Two equal Content-Lengths are one length (RFC 9110 §8.6; hyper folds them):
    // the framing is not ambiguous, so the request is served.
    let mut s = TcpStream::connect(gw.public).await.unwrap();
    let raw = format!(
        "POST /postback?api_key={API_KEY} HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {n}\r\nContent-Length: {n}\r\n\r\n{body}",
        n = body.len()
    );
    let r = exchange(&mut s, &raw).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");

    let records = read_topic(
        &kafka.bootstrap_servers(),
        TOPIC,
        1,
        Duration::from_millis(700),
    );
    assert!(
        with_token(&records, "smuggled").is_empty(),
        "a smuggled request never reaches Kafka"
    );
    assert_eq!(
        records.len(),
        1,
        "only the well-framed postback: {records:?}"
    );
    gw.stop().await;
}

/// One client address cannot hold every connection slot: past
/// `max_connections_per_client` its new connections get 503 and close, while
/// other addresses are served and its open connections keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.limits.max_connections_per_client = 2
    })
    .await;
    let from = |last: u8| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))
            .unwrap();
        socket.connect(gw.public).await.unwrap()
    };
    let mut open = Vec::new();
    for i in 0..2 {
        let mut s = from(5).await;
        let r = exchange(&mut s, &get(&query(&format!("per-client-{i}"), "1.00"))).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        open.push(s);
    }
    let mut third = from(5).await;
    let r = exchange(&mut third, &get(&query("per-client-third", "1.00"))).await;
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    let mut other = from(6).await;
    let r = exchange(&mut other, &get(&query("per-client-other", "1.00"))).await;
    assert!(
        r.starts_with("HTTP/1.1 200"),
        "another address is served: {r}"
    );
    let r = exchange(&mut open[1], &get(&query("per-client-again", "1.00"))).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    drop(open.pop());
    wait_until("a closed connection frees its count", async || {
        let mut next = from(5).await;
        let r = exchange(&mut next, &get(&query("per-client-next", "1.00"))).await;
        r.starts_with("HTTP/1.1 200")
    })
    .await;
    gw.stop().await;
}

/// The gates before the body come first: a POST that its route, its source,
/// the source's networks or the client's own rate refuses is answered as soon
/// as its head arrives, though the body it announces never comes, instead of
/// holding the connection for the request timeout (10 s) while the gateway
/// waits to read a body it will not use. A POST those gates let through still
/// waits for its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_refused_before_its_body_is_answered_without_waiting_for_it() {
    let kafka = mock_cluster();
    let sources = sources_from(&format!(
        r#"
        [sources.default]
        api_keys = ["{API_KEY}"]
        [sources.walled]
        api_keys = ["walled-key-0123456789"]
        allow_networks = ["10.0.0.0/8"]
        "#
    ));
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.sources = sources;
        c.limits.client_rate = Some(postback_gateway::ratelimit::Rate {
            per_second: 0.001,
            burst: 2.0,
        });
    })
    .await;
    let request_timeout = postback_gateway::config::Config::default()
        .limits
        .request_timeout;
    assert_eq!(request_timeout, Duration::from_secs(10));
    // A head announcing a 1000-byte form body that is never sent.
    let head = |target: &str| {
        format!(
            "POST {target} HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: 1000\r\n\r\n"
        )
    };
    // Answered within 2 s, a fifth of the request timeout: at once.
    let refused_at_once = async |target: &str, status: &str, text: &str| {
        let mut s = TcpStream::connect(gw.public).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), exchange(&mut s, &head(target)))
            .await
            .unwrap_or_else(|_| panic!("{target}: no answer within 2 s: it waited for the body"));
        assert!(
            r.starts_with(&format!("HTTP/1.1 {status}")),
            "{target}: {r}"
        );
        assert!(r.ends_with(text), "{target}: {r}");
    };

    // From 127.0.0.1, outside the source's networks.
    refused_at_once(
        "/postback/walled?api_key=walled-key-0123456789",
        "403",
        "ERROR ip_not_allowed",
    )
    .await;
    // No such source; no such endpoint.
    refused_at_once("/postback/nobody", "404", "ERROR unknown_source").await;
    refused_at_once("/nowhere", "404", "not found\n").await;

    // Let through: its body is waited for, and the request served once it comes.
    let body = "tracking=gated-body&amount=1.00";
    let mut s = TcpStream::connect(gw.public).await.unwrap();
    s.write_all(
        format!(
            "POST /postback?api_key={API_KEY} HTTP/1.1\r\nHost: t\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut early = [0u8; 256];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), s.read(&mut early))
            .await
            .is_err(),
        "a POST that passed the gates waits for its body"
    );
    let r = exchange(&mut s, body).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("OK "), "{r}");

    // That spent the first of the client's two requests; a GET spends the
    // second, and the next POST is over the client's rate.
    let (status, _) = reply(
        reqwest::get(gw.url(&query("gated-get", "1.00")))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    refused_at_once(
        &format!("/postback?api_key={API_KEY}"),
        "429",
        "ERROR rate_limited",
    )
    .await;

    // Counted as before: by reason, and by endpoint and outcome (the 404
    // for no endpoint is not a postback).
    for (series_name, n) in [
        ("postback_rejections_total{reason=\"ip_not_allowed\"}", 1.0),
        ("postback_rejections_total{reason=\"unknown_source\"}", 1.0),
        ("postback_rejections_total{reason=\"rate_limited\"}", 1.0),
        (
            "postback_requests_total{endpoint=\"s2s\",outcome=\"rejected\"}",
            2.0,
        ),
        (
            "postback_requests_total{endpoint=\"s2s\",outcome=\"unavailable\"}",
            1.0,
        ),
        (
            "postback_requests_total{endpoint=\"s2s\",outcome=\"accepted\"}",
            2.0,
        ),
    ] {
        assert_eq!(series(&gw, series_name).await, n, "{series_name}");
    }
    gw.stop().await;
}

/// A key in the path is checked after the network: from outside every
/// path-keyed source's networks a valid key and a guess get the same
/// `ip_not_allowed`; from a network another path-keyed source admits, a
/// valid key of a walled source gets what a guess gets. The reply never
/// tells which keys exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_the_path_from_outside_the_network_is_not_confirmed() {
    let kafka = mock_cluster();
    let walled = r#"
        [sources.kt]
        preset = "keitaro"
        api_keys = ["walled-path-key-0123456789"]
        allow_networks = ["10.0.0.0/8"]
    "#;
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.sources = sources_from(walled)
    })
    .await;
    for key in ["walled-path-key-0123456789", "a-guess-0123456789abcdef"] {
        let (status, body) = reply(
            reqwest::get(gw.url(&format!("/{key}/postback?subid=s1&status=sale")))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (403, "ERROR ip_not_allowed"),
            "{key}"
        );
    }
    gw.stop().await;

    let open_too = format!(
        "{walled}\n[sources.kt2]\npreset = \"keitaro\"\napi_keys = [\"open-path-key-0123456789\"]\n"
    );
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.sources = sources_from(&open_too)
    })
    .await;
    let mut replies = Vec::new();
    for key in ["walled-path-key-0123456789", "a-guess-0123456789abcdef"] {
        replies.push(
            reply(
                reqwest::get(gw.url(&format!("/{key}/postback?subid=s2&status=sale")))
                    .await
                    .unwrap(),
            )
            .await,
        );
    }
    assert_eq!(
        replies[0], replies[1],
        "a valid walled key looks like a guess"
    );
    assert_eq!(replies[0].0, 403, "{replies:?}");
    gw.stop().await;
}

/// One IPv6 client holds a whole /64 (by default) and can walk through it:
/// the per-client rate counts it by that prefix, so 200 addresses of one
/// /64 (here as a trusted proxy reports them) share one bucket, while the
/// next /64 is another client; `ipv6_client_prefix` sets the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_addresses_of_one_ipv6_64_are_limited_as_one_client() {
    for (prefix, limited) in [(None, true), (Some(128), false)] {
        let toml = format!(
            "[limits]\nclient_rate_per_second = 0.01\nclient_burst = 3\n{}\n\
             [sources.shop]\napi_keys = [\"ipv6-shop-key-0123456789\"]\n\
             trusted_proxies = [\"127.0.0.1/32\"]\n",
            prefix.map_or(String::new(), |p| format!("ipv6_client_prefix = {p}"))
        );
        let (_dir, config) = common::process::config_file(&toml);
        let gw =
            common::process::GatewayProcess::start(None, &[("POSTBACK_CONFIG", &config)]).await;
        let client = reqwest::Client::new();
        let fire = |from: String, i: usize| {
            let url = gw.url(&format!(
                "/postback/shop?api_key=ipv6-shop-key-0123456789&tracking=v6-{i}&amount=1.00"
            ));
            let c = client.clone();
            async move {
                let r = c
                    .get(url)
                    .header("x-forwarded-for", from)
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            }
        };
        let mut answers = Vec::new();
        for i in 0..200 {
            answers.push(fire(format!("2001:db8:0:1::{:x}", i + 1), i).await);
        }
        let ok = answers.iter().filter(|s| **s == 200).count();
        if limited {
            assert_eq!(ok, 3, "one /64, one burst: {answers:?}");
            assert!(answers[3..].iter().all(|s| *s == 429), "{answers:?}");
        } else {
            assert_eq!(ok, 200, "/128: each address its own client");
        }
        assert_eq!(
            fire("2001:db8:0:2::1".into(), 1000).await,
            200,
            "another /64"
        );
    }
}
