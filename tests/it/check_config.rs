//! `check-config` and start-up on a bad config, through the binary: every
//! problem printed at once, exit 64, and no server. (The validations one by one
//! are unit tests in `src/source/config_tests.rs`.)

use std::path::Path;
use std::process::{Command, Output};

const KEY: &str = "check-key-0123456789";

fn gateway(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
        .args(args)
        .env_clear()
        .env("POSTBACK_CONFIG", config)
        .env("KAFKA_BROKERS", "embedded")
        // A port nobody listens on: the run must end before binding anything.
        .env("LISTEN_ADDR", "127.0.0.1:1")
        .output()
        .unwrap()
}

/// The binary with `args`, the config file `config` and only the variables `vars`.
fn gateway_with(args: &[&str], config: &Path, vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
        .args(args)
        .env_clear()
        .env("POSTBACK_CONFIG", config)
        .env("LISTEN_ADDR", "127.0.0.1:1")
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

fn config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

const BROKEN: &str = r#"
[sources.a]
preset = "cakes"
api_keys = ["check-key-0123456789"]

[sources.b]
api_keys = ["check-key-0123456789"]
tracking_template = true
allow_networks = ["10.0.0.0/33"]
[sources.b.params]
txid = "tracking"
campaign_id = "cmp"

[sources.c]
preset = "keitaro"
api_keys = []
"#;

#[test]
fn check_config_prints_every_problem_and_exits_64() {
    let (_dir, path) = config(BROKEN);
    let out = gateway(&["check-config"], &path);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    let expected = [
        "The config has 7 problem(s):",
        "source a: unknown preset \"cakes\"",
        "source b: parameter \"tracking\" is both tracking and txid",
        "source b: declares a tracking template but maps no parameter for adset_id",
        "source b: declares a tracking template but maps no parameter for ad_id",
        "source b: declares a tracking template but maps no parameter for placement",
        "source b: allow_networks: \"10.0.0.0/33\"",
        "source c: key_in_path needs at least one api key",
    ];
    for e in expected {
        assert!(err.contains(e), "missing {e:?} in:\n{err}");
    }
    assert!(
        !err.contains("campaign_id (add"),
        "campaign_id is mapped:\n{err}"
    );
}

#[test]
fn the_server_refuses_to_start_on_a_bad_config() {
    let (_dir, path) = config(BROKEN);
    let out = gateway(&[], &path);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("The config has 7 problem(s):"), "{err}");
    assert!(!err.contains("EMBEDDED KAFKA"), "nothing started:\n{err}");
}

#[test]
fn a_good_config_checks_clean_and_lists_its_sources() {
    let (_dir, path) = config(&format!(
        "[sources.a]\npreset = \"cake\"\napi_keys = [\"{KEY}\"]\n[sources.b]\napi_keys = []\n"
    ));
    let out = gateway(&["check-config"], &path);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("The config is valid: 2 source(s): a, b.\nKafka: the embedded"),
        "{stdout}"
    );
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/sources.example.toml");
    let out = gateway(&["check-config"], &sample);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn unknown_top_level_keys_are_errors() {
    let (_dir, path) = config("[source.a]\napi_keys = []\n");
    let out = gateway(&["check-config"], &path);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8(out.stderr).unwrap().contains("source"));
}

/// `KAFKA_BROKERS=""` (a templating mistake) would otherwise start the
/// embedded, memory-only cluster and lose every event at the next restart.
#[test]
fn kafka_brokers_set_but_empty_is_refused() {
    let (_dir, path) = config("");
    for args in [&["check-config"][..], &[][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
            .args(args)
            .env_clear()
            .env("POSTBACK_CONFIG", &path)
            .env("KAFKA_BROKERS", "")
            .env("LISTEN_ADDR", "127.0.0.1:1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains("KAFKA_BROKERS is set but empty"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("EMBEDDED"),
            "no embedded cluster: {stderr}"
        );
    }
}

/// No problem report ever quotes a secret: an api key of the wrong type, a
/// password in `[kafka.properties]`, a broken line holding a key, a hash key
/// that is not hex. (Errors say where and what, never the value.)
#[test]
fn problems_never_quote_a_secret() {
    let secrets = [
        "SeCrEt-api-key-0123456789",
        "98765432109876",
        "HaShKeY-not-hex-0123456789abcdef",
        "PaSsWoRd-unterminated-0123",
    ];
    let cases = [
        format!("[sources.a]\napi_keys = \"{}\"\n", secrets[0]),
        format!("[kafka.properties]\n\"sasl.password\" = {}\n", secrets[1]),
        format!("[dedup]\nhash_key = \"{}\"\n", secrets[2]),
        format!(
            "[kafka.properties]\n\"ssl.key.password\" = \"{}\n",
            secrets[3]
        ),
        format!(
            "[sources.b]\napi_keys = [\"{}\"]\nrate_limit = {{ per_second = inf }}\n",
            secrets[0]
        ),
    ];
    for text in &cases {
        let (_dir, path) = config(text);
        let out = gateway(&["check-config"], &path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text}\n{stderr}");
        for s in secrets {
            assert!(!stderr.contains(s), "{text}\nprinted a secret: {stderr}");
        }
    }
}

/// Rates that would break the limiter (infinite, zero, not a number, tiny)
/// are refused by check-config.
#[test]
fn rates_must_be_finite_and_sane() {
    for rate in ["inf", "0", "nan", "-5", "1e-30", "1e300"] {
        for text in [
            format!("[limits]\nclient_rate_per_second = {rate}\n"),
            format!(
                "[sources.a]\napi_keys = [\"{KEY}\"]\nrate_limit = {{ per_second = {rate} }}\n"
            ),
        ] {
            let (_dir, path) = config(&text);
            let out = gateway(&["check-config"], &path);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{text}\n{stderr}");
            assert!(
                stderr.contains("per_second must be a number"),
                "{text}\n{stderr}"
            );
        }
    }
    let (_dir, path) = config("[limits]\nclient_rate_per_second = 50\nclient_burst = 0.5\n");
    let stderr = String::from_utf8_lossy(&gateway(&["check-config"], &path).stderr).into_owned();
    assert!(stderr.contains("burst must be a number from 1"), "{stderr}");
}

/// A deployment (a config file) that names no brokers never acknowledges
/// into the memory of an embedded cluster: check-config and the server both
/// refuse it, naming both ways out.
#[test]
fn a_config_file_without_brokers_is_refused() {
    let (_dir, path) = config(&format!("[sources.a]\napi_keys = [\"{KEY}\"]\n"));
    for args in [&["check-config"][..], &[][..]] {
        let out = gateway_with(args, &path, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no Kafka brokers named: set KAFKA_BROKERS or [kafka] brokers")
                && stderr.contains("KAFKA_BROKERS=embedded"),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("EMBEDDED KAFKA"),
            "nothing started: {stderr}"
        );
    }
    // Asked for by name, the embedded cluster is fine.
    let out = gateway_with(&["check-config"], &path, &[("KAFKA_BROKERS", "embedded")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// check-config builds librdkafka's configuration (without connecting): a
/// misspelt property or a mechanism this build lacks is exit 64 with its name.
#[test]
fn check_config_builds_the_kafka_client_without_connecting() {
    let brokers = [("KAFKA_BROKERS", "127.0.0.1:1")];
    for (props, says) in [
        (
            "\"sasl.mechansim\" = \"PLAIN\"",
            "No such configuration property: \"sasl.mechansim\"",
        ),
        (
            "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"GSSAPI\"",
            "GSSAPI",
        ),
        ("\"compression.type\" = \"brotli\"", "compression.type"),
        ("acks = \"1\"", "kafka property acks = 1 cannot be changed"),
    ] {
        let (_dir, path) = config(&format!("[kafka.properties]\n{props}\n"));
        let out = gateway_with(&["check-config"], &path, &brokers);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{props}: {stderr}");
        assert!(stderr.contains(says), "{props}: {stderr}");
    }
    // The server refuses the same at start.
    let (_dir, path) = config("[kafka.properties]\n\"enable.idempotence\" = \"false\"\n");
    let out = gateway_with(&[], &path, &brokers);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("enable.idempotence"), "{stderr}");
}

/// The password comes from the environment or a secret file, check-config
/// shows the effective settings, and never the secret.
#[test]
fn check_config_shows_the_settings_but_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("ssl-key-password");
    std::fs::write(&secret, "FiLe-SeCrEt-7781\n").unwrap();
    let (_dir, path) = config(&format!(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\n[kafka.properties]\n\
         \"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
         \"sasl.username\" = \"gateway\"\n\"compression.type\" = \"zstd\"\n\
         [kafka.property_files]\n\"ssl.key.password\" = {:?}\n",
        secret.display().to_string()
    ));
    let out = gateway_with(
        &["check-config"],
        &path,
        &[("KAFKA_PROPERTY_SASL_PASSWORD", "EnV-SeCrEt-4412")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    for shown in [
        "sasl.password=[redacted]",
        "ssl.key.password=[redacted]",
        "sasl.username=gateway",
        "compression.type=zstd",
        "acks=all",
        "enable.idempotence=true",
    ] {
        assert!(stdout.contains(shown), "{shown}: {stdout}");
    }
    for secret in ["EnV-SeCrEt-4412", "FiLe-SeCrEt-7781"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}{stderr}"
        );
    }
}

/// The default source's keys follow the rules of every source's keys, and
/// only the embedded first run makes one up: a deployment without one
/// refuses to start instead of printing a generated key into its logs.
#[test]
fn the_default_sources_keys_follow_the_rules_and_a_deployment_chooses_its_own() {
    let (_dir, path) = config("");
    let brokers = ("KAFKA_BROKERS", "127.0.0.1:1");
    for (var, value) in [
        ("POSTBACK_API_KEY", "short"),
        ("POSTBACK_API_KEY", "has space in it 0123456789"),
        ("POSTBACK_PIXEL_KEY", "tiny"),
    ] {
        let out = gateway_with(&["check-config"], &path, &[brokers, (var, value)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("{var} (or "))
                && stderr.contains("must be 16 to 256 characters"),
            "{stderr}"
        );
        assert!(!stderr.contains(value), "the value is not quoted: {stderr}");
    }
    let out = gateway_with(&[], &path, &[brokers]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("no sources are configured and POSTBACK_API_KEY is not set"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("api key of the default source"),
        "{stderr}"
    );
}
