//! The first README command as a newcomer meets it: no config, no brokers, no
//! keys. The gateway prints what to try (a postback and a pixel, each with a
//! generated key of its own, and the console with its token), and each of
//! those works as printed.
use crate::common;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::process::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_run_prints_a_postback_a_pixel_and_the_console_to_try_and_each_works() {
    let spool = common::tempdir().unwrap();
    let public: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut child = Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LISTEN_ADDR", public.to_string())
        .env("ADMIN_ADDR", admin.to_string())
        .env("SPOOL_DIR", spool.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Reads stderr until the last thing printed before serving (the blank
    // line after the keys), then lets the rest drain.
    let stderr = child.stderr.take().unwrap();
    let printed = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        let mut printed = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            let done = line.is_empty() && printed.iter().any(|l: &String| l.contains("pixel key"));
            printed.push(line);
            if done {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        printed
    })
    .await
    .unwrap();
    let text = printed.join("\n");
    let tried: Vec<&str> = printed
        .iter()
        .filter_map(|l| l.trim().strip_prefix("try: curl "))
        .map(|c| c.trim_start_matches("-i ").trim_matches('\''))
        .collect();
    assert_eq!(tried.len(), 2, "a postback and a pixel to try: {text}");
    let console = printed
        .iter()
        .find_map(|l| l.split_once("admin console").map(|(_, r)| r))
        .and_then(|r| r.split_whitespace().last())
        .unwrap_or_else(|| panic!("no console URL: {text}"));
    let token = console.split_once("#token=").unwrap().1;

    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .map_or(true, |r| r.status() != 200)
    {
        assert!(Instant::now() < deadline, "not ready: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = client.get(tried[0]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.starts_with("OK "), "{}: {body}", tried[0]);
    let r = client.get(tried[1]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/gif");
    let result = r.headers()["x-postback-result"].to_str().unwrap();
    assert!(result.starts_with("OK "), "{}: {result}", tried[1]);
    // The two keys differ: the pixel key is the public one.
    let key_of = |url: &str| {
        url.split("api_key=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_ne!(key_of(tried[0]), key_of(tried[1]));
    // The console, with the printed token, shows both.
    let r = client
        .get(format!("http://{admin}/sources/default/recent"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let recent = r.text().await.unwrap();
    assert!(
        recent.contains("tracking=test-1") && recent.contains("tracking=test-2"),
        "{recent}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
