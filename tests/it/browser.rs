//! The browser as a sender: a landing page served by the test, loaded in a
//! real headless Chromium, fires an `<img>` pixel and a `navigator.sendBeacon`
//! conversion at the gateway. Each arrives in Kafka exactly once; loading the
//! page again (same browser profile, so with its HTTP cache) fires a new pixel
//! request instead of showing a cached image; and the page loads whole, its
//! image a 1x1 GIF, whatever the gateway answers.
use crate::common;
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `page` to every request on a loopback port, until the test ends.
async fn serve_page(page: String) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let page = page.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                     cache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_landing_page_in_chromium_fires_its_pixel_and_beacon_once_each() {
    let kafka = mock_cluster();
    let gw = Gateway::start(&kafka.bootstrap_servers(), |_| {}).await;
    let g = gw.public;
    let page = format!(
        r#"<!doctype html><html><head><title>Thank you</title></head><body>
<h1 id="state">loading</h1>
<img id="px" width="1" height="1" alt=""
     src="http://{g}/pixel.gif?api_key={PIXEL_KEY}&tracking=browser-img&amount=1.00">
<script>
  navigator.sendBeacon("http://{g}/pixel",
    "api_key={PIXEL_KEY}&tracking=browser-beacon&amount=2.00");
  window.addEventListener("load", function () {{
    var px = document.getElementById("px");
    document.getElementById("state").textContent =
      "loaded " + px.naturalWidth + "x" + px.naturalHeight;
  }});
</script>
</body></html>"#
    );
    let site = serve_page(page).await;
    let profile = common::tempdir().unwrap();
    let url = format!("http://{site}/thank-you");

    let url1 = url.clone();
    let p = profile.path().to_owned();
    let dom =
        tokio::task::spawn_blocking(move || common::browser::chromium(&url1, &p, &["--dump-dom"]))
            .await
            .unwrap();
    assert!(
        dom.contains("loaded 1x1"),
        "the page loaded whole, with its 1x1 image: {dom}"
    );

    // The same browser profile loads the page again.
    let p = profile.path().to_owned();
    let dom =
        tokio::task::spawn_blocking(move || common::browser::chromium(&url, &p, &["--dump-dom"]))
            .await
            .unwrap();
    assert!(dom.contains("loaded 1x1"), "{dom}");

    // The second load reached the gateway (no cached image): a duplicate.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dup = series(
            &gw,
            "postback_requests_total{endpoint=\"pixel\",outcome=\"duplicate\"}",
        )
        .await;
        if dup >= 2.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second load's pixel and beacon must reach the gateway as duplicates ({dup})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = read_topic(&kafka.bootstrap_servers(), TOPIC, 2, Duration::from_secs(1));
    assert_eq!(records.len(), 2, "{records:?}");
    let img = with_token(&records, "browser-img");
    assert_eq!(img.len(), 1);
    assert_eq!(img[0].value["kind"], "pixel");
    assert_eq!(img[0].value["amount"], "1.00");
    let beacon = with_token(&records, "browser-beacon");
    assert_eq!(beacon.len(), 1);
    assert_eq!(beacon[0].value["amount"], "2.00");
    assert!(
        img[0].value["user_agent"]
            .as_str()
            .unwrap_or_default()
            .contains("Chrome"),
        "{}",
        img[0].value
    );
    gw.stop().await;
}
