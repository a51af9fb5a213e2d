//! The files in deploy/ against the binary they deploy: promtool accepts the
//! Prometheus rules and config, every metric the alerts and the dashboard name
//! is one a running gateway exports, every YAML file parses, and the container,
//! compose and Kubernetes files use the ports, paths and variables the binary uses.
use crate::common;
#[path = "deploy/promql.rs"]
mod promql;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde::Deserialize;
use serde_norway::Value;

/// The environment variables the binary reads (docs/configuration.md, plus the config path).
const ENV_VARS: &[&str] = &[
    "LISTEN_ADDR",
    "ADMIN_ADDR",
    "KAFKA_BROKERS",
    "KAFKA_TOPIC",
    "POSTBACK_API_KEY",
    "SPOOL_DIR",
    "RUST_LOG",
    "LOG_FORMAT",
    "POSTBACK_CONFIG",
    "POSTBACK_ADMIN_TOKEN",
];
const PUBLIC_PORT: u64 = 8080;
const ADMIN_PORT: u64 = 9090;
const SPOOL_DIR: &str = "/var/lib/postback-gateway/spool";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of a YAML file.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yml" | "yaml")) {
            out.push(p);
        }
    }
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}); scripts/test.sh installs it \
                 (Debian package `prometheus`)"
            )
        });
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules_the_config_and_the_rule_tests() {
    promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"]);
}

#[test]
fn every_yaml_file_in_deploy_parses() {
    let mut files = Vec::new();
    yaml_files(&root().join("deploy"), &mut files);
    assert!(files.len() >= 10, "{files:?}");
    for f in files {
        let rel = f.strip_prefix(root()).unwrap().to_str().unwrap().to_owned();
        assert!(!yaml_docs(&rel).is_empty(), "{rel} is empty");
    }
}

/// Every PromQL expression in the alert rules.
fn rule_exprs() -> Vec<(String, String)> {
    let doc = &yaml_docs("deploy/prometheus/alerts.yml")[0];
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().unwrap().to_owned();
            out.push((name, r["expr"].as_str().unwrap().to_owned()));
        }
    }
    out
}

fn json_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => json_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_exprs(v, out)),
        _ => {}
    }
}

/// Every PromQL expression of the dashboard (panel targets and variables).
fn dashboard_exprs() -> Vec<String> {
    let text = read("deploy/grafana/postback-gateway.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut ids = BTreeSet::new();
    let panels = dash["panels"].as_array().expect("panels");
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        if p["type"] != "row" {
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "{} has a query",
                p["title"]
            );
        }
    }
    let mut out = Vec::new();
    json_exprs(&dash, &mut out);
    assert!(out.len() >= panels.len(), "{out:?}");
    out
}

/// Metric names the gateway does not export itself, with who does.
const NOT_FROM_THE_GATEWAY: &[&str] = &["up"]; // Prometheus, per scrape target
/// Exported names this test's traffic does not produce, with the black-box
/// test that shows the binary exports them.
const SHOWN_ELSEWHERE: &[(&str, &str)] = &[("postback_config_reloads_total", "tests/it/reload.rs")];

fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_dashboard_name_is_exported() {
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for (alert, e) in rule_exprs() {
        for n in promql::metric_names(&e) {
            wanted.entry(n).or_insert_with(|| format!("alert {alert}"));
        }
    }
    for e in dashboard_exprs() {
        for n in promql::metric_names(&e) {
            wanted.entry(n).or_insert_with(|| format!("dashboard: {e}"));
        }
    }
    assert!(wanted.len() >= 20, "{wanted:?}");
    let declared = read("src/metrics.rs");
    for (name, shown_in) in SHOWN_ELSEWHERE {
        assert!(declared.contains(&format!("\"{name}\"")), "{name}");
        assert!(read(shown_in).contains(name), "{shown_in} checks {name}");
    }

    // Traffic that makes every series appear: accepted, duplicate, rejected,
    // a pixel; a tiny dedup map (evictions) and window (expiry); and one
    // produce the broker refuses, so that event goes through the spool.
    let kafka = MockCluster::new(1).expect("mock cluster");
    kafka.create_topic(TOPIC, 3, 1).expect("topic");
    let gw = Gateway::start(&kafka.bootstrap_servers(), |c| {
        c.dedup.max_keys = 3;
        c.dedup.window = Duration::from_secs(2);
    })
    .await;
    let client = reqwest::Client::new();
    let get = |path: String| {
        let c = client.clone();
        let url = gw.url(&path);
        async move { reply(c.get(url).send().await.unwrap()).await }
    };
    let (_, first) = get(query("metrics-a", "1.00")).await;
    let id = ok_id(&first);
    assert_eq!(
        get(query("metrics-a", "1.00")).await.1,
        format!("DUPLICATE {id}")
    );
    assert_eq!(
        get(query("metrics-bad", "1,00")).await,
        (400, "ERROR bad_amount".into())
    );
    for t in ["b", "c", "d", "e"] {
        let (status, body) = get(query(&format!("metrics-{t}"), "2.00")).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, pixel) = get(format!(
        "/pixel?api_key={PIXEL_KEY}&tracking=metrics-px&amount=1.00"
    ))
    .await;
    assert!(pixel.starts_with("OK "), "{pixel}");
    kafka.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let (status, body) = get(query("metrics-refused-once", "3.00")).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "ERROR unavailable"),
        "refused for good: answered 503"
    );

    let must_appear: BTreeSet<&str> = wanted
        .keys()
        .map(String::as_str)
        .filter(|n| !NOT_FROM_THE_GATEWAY.contains(n))
        .filter(|n| !SHOWN_ELSEWHERE.iter().any(|(s, _)| s == n))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let have = exported(&metrics_text(&gw).await);
        let missing: Vec<&str> = must_appear
            .iter()
            .copied()
            .filter(|n| !have.contains(*n))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let why: Vec<String> = missing
        .iter()
        .map(|n| format!("{n} (used by {})", wanted[*n]))
        .collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported by the gateway: {why:?}"
    );
    gw.stop().await;
}

/// The manifests of deploy/k8s by kind and name.
fn k8s() -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(root().join("deploy/k8s")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        for doc in yaml_docs(&format!("deploy/k8s/{name}")) {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            let n = doc["metadata"]["name"].as_str().unwrap().to_owned();
            assert!(out.insert((kind, n), doc).is_none(), "one of each");
        }
    }
    out
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn every_environment_variable_named_here_is_read_by_the_binary() {
    let src = read("src/config.rs") + &read("src/main.rs") + &read("src/cli/mod.rs");
    for v in ENV_VARS {
        assert!(src.contains(&format!("\"{v}\"")), "{v} is read in src/");
    }
}

#[test]
fn the_kubernetes_manifests_agree_with_the_binary() {
    let m = k8s();
    let get = |kind: &str, name: &str| {
        m.get(&(kind.to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let sts = get("StatefulSet", "postback-gateway");
    let pod = &sts["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(sts["spec"]["selector"]["matchLabels"], *labels);
    let c = &pod["spec"]["containers"][0];

    let ports: BTreeMap<&str, u64> = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        BTreeMap::from([("http", PUBLIC_PORT), ("admin", ADMIN_PORT)])
    );

    // The admin port is reached only from the monitoring namespace, the
    // public one only from the ingress controller.
    let policy = get("NetworkPolicy", "postback-gateway");
    assert_eq!(policy["spec"]["podSelector"]["matchLabels"], *labels);
    let admitted: Vec<&str> = policy["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|rule| rule["ports"][0]["port"].as_str().unwrap())
        .collect();
    assert_eq!(admitted, ["http", "admin"]);
    let public = get("Service", "postback-gateway");
    for p in public["spec"]["ports"].as_sequence().unwrap() {
        assert_ne!(
            p["targetPort"], "admin",
            "the public Service has no admin port"
        );
    }

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for e in c["env"].as_sequence().unwrap() {
        env.insert(
            e["name"].as_str().unwrap().into(),
            e["value"].as_str().unwrap_or("").into(),
        );
    }
    for from in c["envFrom"].as_sequence().unwrap() {
        let cm = get("ConfigMap", from["configMapRef"]["name"].as_str().unwrap());
        for (k, v) in cm["data"].as_mapping().unwrap() {
            env.insert(k.as_str().unwrap().into(), v.as_str().unwrap().into());
        }
    }
    for k in env.keys() {
        assert!(
            ENV_VARS.contains(&k.as_str()),
            "{k} is not read by the binary"
        );
    }
    assert_eq!(port_of(&env["LISTEN_ADDR"]), PUBLIC_PORT);
    assert_eq!(env["ADMIN_ADDR"], format!("0.0.0.0:{ADMIN_PORT}"));
    assert!(
        env.contains_key("KAFKA_BROKERS"),
        "no embedded cluster in production"
    );

    let probe = |which: &str| {
        let p = &c[which]["httpGet"];
        (p["path"].as_str().unwrap(), p["port"].as_str().unwrap())
    };
    assert_eq!(probe("livenessProbe"), ("/healthz", "admin"));
    assert_eq!(probe("readinessProbe"), ("/readyz", "admin"));
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(
        ann["prometheus.io/port"],
        Value::from(ADMIN_PORT.to_string())
    );
    assert_eq!(ann["prometheus.io/path"], Value::from("/metrics"));

    // The spool is on the pod's own claim, in a directory the gateway makes
    // (fsGroup opens the claim's root to the group).
    let mounts: BTreeMap<&str, &str> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["mountPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(env["SPOOL_DIR"], format!("{SPOOL_DIR}/data"));
    assert_eq!(mounts["spool"], SPOOL_DIR);
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "spool"
    );

    // The config file comes from the Secret, at POSTBACK_CONFIG.
    let config_path = Path::new(&env["POSTBACK_CONFIG"]);
    assert_eq!(Path::new(mounts["config"]), config_path.parent().unwrap());
    let secret_name = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap()["secret"]["secretName"]
        .as_str()
        .unwrap();
    let file = config_path.file_name().unwrap().to_str().unwrap();
    let toml = get("Secret", secret_name)["stringData"][file]
        .as_str()
        .unwrap();

    // Grace: the preStop sleep and the shutdown grace (which the producer's
    // flush shares), with a margin of 10 s.
    let grace_ms: u64 = toml
        .lines()
        .find_map(|l| l.strip_prefix("shutdown_grace_ms = "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(20_000);
    let pre_stop: u64 = c["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let termination = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        termination * 1000 > pre_stop * 1000 + grace_ms + 10_000,
        "terminationGracePeriodSeconds {termination} is too short"
    );

    // Services point at the named ports; the public one carries no admin port.
    let public = get("Service", "postback-gateway");
    assert_eq!(public["spec"]["selector"], *labels);
    for p in public["spec"]["ports"].as_sequence().unwrap() {
        assert_eq!(p["targetPort"], "http");
    }
    let headless = get("Service", sts["spec"]["serviceName"].as_str().unwrap());
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let ingress = get("Ingress", "postback-gateway");
    assert_eq!(
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/upstream-hash-by"],
        "$arg_tracking"
    );
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"], "postback-gateway");
    // TLS at the ingress, for the host senders are given, with its Secret here.
    let host = &ingress["spec"]["rules"][0]["host"];
    let tls = &ingress["spec"]["tls"][0];
    assert!(
        tls["hosts"].as_sequence().unwrap().contains(host),
        "the tls block covers {host:?}"
    );
    let cert = get("Secret", tls["secretName"].as_str().unwrap());
    assert_eq!(cert["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key"] {
        assert!(cert["stringData"][key].is_string(), "{key}");
    }
    assert_eq!(
        env["LOG_FORMAT"], "json",
        "logs for the cluster's collector"
    );
    let hpa = get("HorizontalPodAutoscaler", "postback-gateway");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "StatefulSet");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "postback-gateway");
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    let pdb = get("PodDisruptionBudget", "postback-gateway");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *labels);
    let pm = get("PodMonitor", "postback-gateway");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "admin");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["path"], "/metrics");
}

#[test]
fn the_config_in_the_kubernetes_secret_passes_check_config() {
    let m = k8s();
    let secret = &m[&("Secret".to_owned(), "postback-gateway-config".to_owned())];
    let dir = common::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        secret["stringData"]["gateway.toml"].as_str().unwrap(),
    )
    .unwrap();
    let env = &m[&("ConfigMap".to_owned(), "postback-gateway-env".to_owned())]["data"];
    let brokers = env["KAFKA_BROKERS"].as_str().unwrap();
    let check = |brokers: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_postback-gateway"));
        cmd.arg("check-config")
            .arg("--config")
            .arg(&path)
            .env_clear();
        if let Some(b) = brokers {
            cmd.env("KAFKA_BROKERS", b);
        }
        cmd.output().unwrap()
    };
    let out = check(Some(brokers));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 source(s): default, landers, tune-acme"),
        "{stdout}"
    );
    // Without the ConfigMap's KAFKA_BROKERS (a typo in its key), the pod
    // refuses to start instead of running on an in-memory cluster.
    let out = check(None);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Kafka brokers named"));
}

/// The image names a config file that names no brokers: a container started
/// without KAFKA_BROKERS exits 64 and never acknowledges into memory.
#[test]
fn the_image_without_kafka_brokers_refuses_to_start() {
    let text = read("deploy/Dockerfile");
    assert!(text.contains("COPY deploy/gateway.toml /etc/postback-gateway/gateway.toml"));
    assert!(text.contains("POSTBACK_CONFIG=/etc/postback-gateway/gateway.toml"));
    let out = Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
        .env_clear()
        .env("POSTBACK_CONFIG", root().join("deploy/gateway.toml"))
        .env("LISTEN_ADDR", "127.0.0.1:1")
        .env("POSTBACK_API_KEY", "image-key-0123456789")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("no Kafka brokers named"), "{stderr}");
    assert!(!stderr.contains("EMBEDDED KAFKA"), "{stderr}");
}

#[test]
fn the_dockerfile_agrees_with_the_binary() {
    // Join continued lines, then read each instruction.
    let text = read("deploy/Dockerfile").replace("\\\n", " ");
    let runtime = text.rsplit("\nFROM ").next().unwrap();
    assert!(runtime.starts_with("debian:bookworm-slim"), "{runtime}");
    let mut env = BTreeMap::new();
    let mut expose = BTreeSet::new();
    let mut user = None;
    let mut volume = String::new();
    let mut healthcheck = String::new();
    for line in runtime.lines().map(str::trim) {
        let (instr, rest) = line.split_once(' ').unwrap_or((line, ""));
        match instr {
            "ENV" => {
                for kv in rest.split_whitespace() {
                    let (k, v) = kv.split_once('=').unwrap();
                    env.insert(k.to_owned(), v.to_owned());
                }
            }
            "EXPOSE" => expose.extend(rest.split_whitespace().map(|p| p.parse::<u64>().unwrap())),
            "USER" => user = Some(rest.to_owned()),
            "VOLUME" => volume = rest.to_owned(),
            "HEALTHCHECK" => healthcheck = rest.to_owned(),
            _ => {}
        }
    }
    for k in env.keys() {
        assert!(
            ENV_VARS.contains(&k.as_str()),
            "{k} is not read by the binary"
        );
    }
    assert_eq!(expose, BTreeSet::from([PUBLIC_PORT, ADMIN_PORT]));
    assert_eq!(port_of(&env["LISTEN_ADDR"]), PUBLIC_PORT);
    assert_eq!(env["ADMIN_ADDR"], format!("0.0.0.0:{ADMIN_PORT}"));
    assert_eq!(env["SPOOL_DIR"], SPOOL_DIR);
    assert!(
        volume.contains(SPOOL_DIR),
        "the spool is a volume: {volume}"
    );
    let user = user.expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "{user}"
    );
    assert!(
        healthcheck.contains(&format!("/{ADMIN_PORT}")) && healthcheck.contains("/healthz"),
        "{healthcheck}"
    );
}

/// The Debian bookworm package (the runtime image's release) of each shared
/// library the binary may link; the base image has those marked `None`.
const PACKAGES: &[(&str, Option<&str>)] = &[
    ("libc.so.6", None),
    ("libm.so.6", None),
    ("libgcc_s.so.1", None),
    ("libz.so.1", None),
    ("ld-linux-x86-64.so.2", None),
    ("ld-linux-aarch64.so.1", None),
    ("libssl.so.3", Some("libssl3")),
    ("libcrypto.so.3", Some("libssl3")),
    ("libcurl.so.4", Some("libcurl4")),
];

/// The builder builds the dependencies in a layer of their own (cargo-chef's
/// recipe, from the manifests alone) before it copies the source, and the
/// runtime installs the package of every shared library the binary links,
/// and the CA certificates.
#[test]
fn the_image_caches_its_dependencies_and_has_what_the_binary_links() {
    let text = read("deploy/Dockerfile").replace("\\\n", " ");
    let stages: Vec<&str> = text.split("\nFROM ").skip(1).collect();
    let stage = |name: &str| {
        *stages
            .iter()
            .find(|s| s.lines().next().unwrap().ends_with(&format!(" AS {name}")))
            .unwrap_or_else(|| panic!("no stage {name}"))
    };
    assert!(stage("plan").contains("cargo chef prepare --recipe-path recipe.json"));
    let build = stage("build");
    let at = |what: &str| {
        build
            .find(what)
            .unwrap_or_else(|| panic!("the build stage lacks {what:?}"))
    };
    assert!(
        build.lines().next().unwrap().starts_with("chef AS"),
        "{build}"
    );
    assert!(at("COPY --from=plan /src/recipe.json") < at("cargo chef cook --release --locked"));
    assert!(
        at("cargo chef cook --release --locked") < at("COPY . ."),
        "the dependencies are built before the source is copied"
    );
    assert!(at("COPY . .") < at("cargo build --release --locked --bin postback-gateway"));
    assert!(at("ARG POSTBACK_GIT_COMMIT") < at("cargo build --release"));

    let runtime = stages.last().unwrap();
    let installed: BTreeSet<&str> = runtime
        .lines()
        .filter(|l| l.contains("apt-get install"))
        .flat_map(|l| l.split_whitespace())
        .filter(|w| !w.starts_with('-') && !w.contains('=') && *w != "&&")
        .collect();
    assert!(installed.contains("ca-certificates"), "{installed:?}");
    let out = Command::new("readelf")
        .args(["-d", env!("CARGO_BIN_EXE_postback-gateway")])
        .output()
        .expect("readelf (binutils, installed with gcc)");
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(needed.contains(&"libssl.so.3"), "{dynamic}");
    for lib in needed {
        let package = PACKAGES
            .iter()
            .find(|(l, _)| *l == lib)
            .unwrap_or_else(|| {
                panic!("the binary links {lib}: add its package to deploy/Dockerfile and PACKAGES")
            })
            .1;
        if let Some(p) = package {
            assert!(installed.contains(p), "{lib} needs {p}: {installed:?}");
        }
    }
}

/// The Kafka broker's data lands on the compose volume: the apache/kafka
/// image writes to log.dirs (its default is /tmp/kraft-combined-logs, in
/// the container's own layer), so the compose file sets it to the image's
/// data volume, which the image creates for its user.
#[test]
fn the_compose_kafka_volume_is_where_the_broker_writes() {
    let doc = &yaml_docs("deploy/docker-compose.yml")[0];
    let kafka = &doc["services"]["kafka"];
    let image = kafka["image"].as_str().unwrap();
    assert!(image.starts_with("apache/kafka:"), "{image}");
    let log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"].as_str().unwrap();
    // The image's VOLUME, owned by its `appuser`: a path of our own would be
    // created by root on the first start and refuse the broker's writes.
    assert_eq!(log_dirs, "/var/lib/kafka/data");
    let mounted: Vec<&str> = kafka["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let volume = mounted
        .iter()
        .find_map(|v| v.strip_suffix(&format!(":{log_dirs}")))
        .unwrap_or_else(|| panic!("no volume at {log_dirs}: {mounted:?}"));
    assert!(
        doc["volumes"][volume].is_mapping() || doc["volumes"][volume].is_null(),
        "{volume} is a named volume"
    );
    assert!(doc["volumes"].as_mapping().unwrap().contains_key(volume));
}

#[test]
fn the_compose_file_agrees_with_the_binary() {
    let doc = &yaml_docs("deploy/docker-compose.yml")[0];
    let gw = &doc["services"]["gateway"];
    assert_eq!(gw["build"]["dockerfile"], "deploy/Dockerfile");
    let env = gw["environment"].as_mapping().unwrap();
    for (k, _) in env {
        let k = k.as_str().unwrap();
        assert!(ENV_VARS.contains(&k), "{k} is not read by the binary");
    }
    assert_eq!(env["ADMIN_ADDR"], format!("0.0.0.0:{ADMIN_PORT}"));
    assert_eq!(env["SPOOL_DIR"], SPOOL_DIR);
    let brokers = env["KAFKA_BROKERS"].as_str().unwrap();
    assert!(doc["services"][brokers.split(':').next().unwrap()].is_mapping());
    let container_ports: BTreeSet<u64> = gw["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| port_of(p.as_str().unwrap()))
        .collect();
    assert_eq!(container_ports, BTreeSet::from([PUBLIC_PORT, ADMIN_PORT]));
    let spool = gw["volumes"][0].as_str().unwrap();
    assert!(spool.ends_with(&format!(":{SPOOL_DIR}")), "{spool}");
    let grace = gw["stop_grace_period"].as_str().unwrap();
    assert!(
        grace.trim_end_matches('s').parse::<u64>().unwrap() > 30,
        "{grace}"
    );

    // Prometheus scrapes the gateway service's admin port with the rules loaded.
    let prom = &yaml_docs("deploy/prometheus/prometheus.yml")[0];
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["job_name"], "postback-gateway");
    assert_eq!(job["metrics_path"], "/metrics");
    assert_eq!(
        job["static_configs"][0]["targets"][0],
        format!("gateway:{ADMIN_PORT}")
    );
    for service in ["prometheus", "grafana"] {
        for v in doc["services"][service]["volumes"].as_sequence().unwrap() {
            let host = v.as_str().unwrap().split(':').next().unwrap();
            assert!(root().join("deploy").join(host).exists(), "{host}");
        }
    }
}

#[test]
fn the_operations_doc_lists_every_metric_and_every_alert() {
    let readme = read("docs/operations.md");
    let declared = read("src/metrics.rs");
    let names: Vec<&str> = declared
        .lines()
        .filter_map(|l| {
            l.strip_prefix("pub const ")
                .or_else(|| l.strip_prefix("pub(crate) const "))
        })
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    assert!(names.len() >= 20, "{names:?}");
    for n in names {
        assert!(
            readme.contains(&format!("| `{n}")),
            "docs/operations.md's metrics table lacks {n}"
        );
    }
    for (alert, _) in rule_exprs() {
        assert!(
            readme.contains(&format!("`{alert}`")),
            "docs/operations.md lacks {alert}"
        );
    }
}
