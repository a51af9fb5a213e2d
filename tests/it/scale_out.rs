//! Scaling out: the dedup window is per instance, so every repeat of a token
//! must reach the instance that saw it first. Two gateway processes on one
//! Kafka (Tansu) behind nginx with `hash $arg_tracking consistent;`: every
//! repeat is a DUPLICATE of the first event, both instances take traffic, and
//! Kafka holds each conversion once.
use crate::common;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::process::{free_port, signal, GatewayProcess, Tansu};
use crate::common::*;

const DISTINCT: usize = 40;

/// The nginx binary: `NGINX_BIN`, then `PATH`, then Debian's /usr/sbin.
fn nginx_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NGINX_BIN") {
        return p.into();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("nginx is not installed; scripts/test.sh installs it (apt-get install nginx)")
        })
}

/// The balancer config of the "Scaling out" section of docs/operations.md, with every
/// path inside `dir` so the test runs without touching the system's nginx.
fn nginx_conf(dir: &Path, listen: u16, upstreams: &[std::net::SocketAddr]) -> String {
    let d = dir.display();
    let servers: String = upstreams
        .iter()
        .map(|a| format!("        server {a} max_fails=0;\n"))
        .collect();
    format!(
        r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream postback_gateways {{
        # Every repeat of a token goes to the instance that holds its dedup key.
        hash $arg_tracking consistent;
{servers}        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://postback_gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # Senders retry; nginx must not send one request to two instances.
            proxy_next_upstream off;
        }}
    }}
}}
"#
    )
}

/// nginx as this test's own process, stopped (SIGTERM, then SIGKILL) on drop.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    fn start(upstreams: &[std::net::SocketAddr]) -> Nginx {
        let dir = common::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir.path(), port, upstreams)).unwrap();
        let child = Command::new(nginx_bin())
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", n.error_log());
            }
            assert!(Instant::now() < deadline, "nginx did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path_and_query)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM lets the master stop its workers; KILL would orphan them.
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `name{source="default"}` on an instance's /metrics.
async fn metric(gw: &GatewayProcess, name: &str) -> f64 {
    let text = reqwest::get(gw.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("{name}{{source=\"default\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_meet_the_instance_that_took_the_first_behind_a_token_hashing_balancer() {
    let tansu = Tansu::start();
    let a = GatewayProcess::start(Some(&tansu.brokers), &[]).await;
    let b = GatewayProcess::start(Some(&tansu.brokers), &[]).await;
    let nginx = Nginx::start(&[a.public, b.public]);
    let client = reqwest::Client::new();
    let run = std::process::id();

    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..DISTINCT {
        let token = format!("scale-{run}-{i}");
        let r = client
            .get(nginx.url(&query(&token, "4.20")))
            .send()
            .await
            .unwrap();
        let (status, body) = reply(r).await;
        assert_eq!(status, 200, "{token}: {body}\n{}", nginx.error_log());
        first.insert(token, ok_id(&body));
    }
    for (token, id) in &first {
        let r = client
            .get(nginx.url(&query(token, "4.20")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            reply(r).await,
            (200, format!("DUPLICATE {id}")),
            "the repeat of {token} met the instance that accepted it"
        );
    }

    // Both instances took some of the traffic, and between them all of it.
    let (acc_a, acc_b) = (
        metric(&a, "postback_accepted_total").await,
        metric(&b, "postback_accepted_total").await,
    );
    assert!(
        acc_a > 0.0 && acc_b > 0.0,
        "both take traffic: {acc_a} and {acc_b}"
    );
    assert_eq!(acc_a + acc_b, DISTINCT as f64);
    let dups = metric(&a, "postback_duplicates_total").await
        + metric(&b, "postback_duplicates_total").await;
    assert_eq!(dups, DISTINCT as f64);

    // Kafka holds each conversion exactly once, with the id of its first reply.
    let records = read_topic(&tansu.brokers, TOPIC, DISTINCT, Duration::from_secs(2));
    assert_eq!(records.len(), DISTINCT, "{records:?}");
    for (token, id) in &first {
        let found = with_token(&records, token);
        assert_eq!(found.len(), 1, "{token} is in Kafka once");
        assert_event(found[0], id, token, "4.20", "s2s");
    }
}
