//! The command line through the binary: help and version exit 0, a flag
//! given to the wrong subcommand (or two subcommands) is a usage error (exit
//! 64), completions are printed, and the flags' environment fallbacks work.

use std::process::{Command, Output};

const SUBCOMMANDS: [&str; 5] = [
    "check-config",
    "postback-url",
    "test-fire",
    "events",
    "completions",
];

fn gateway(args: &[&str], vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_postback-gateway"))
        .args(args)
        .env_clear()
        // A port nobody listens on: a run that wrongly started would fail fast.
        .env("LISTEN_ADDR", "127.0.0.1:1")
        .envs(vars.iter().copied())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn help_exits_0_for_the_gateway_and_every_subcommand() {
    let out = gateway(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for sub in SUBCOMMANDS {
        assert!(stdout.contains(sub), "{sub} is listed: {stdout}");
    }
    assert!(stdout.contains("[env: POSTBACK_CONFIG="), "{stdout}");
    for sub in SUBCOMMANDS {
        for args in [[sub, "--help"], ["help", sub]] {
            let out = gateway(&args, &[]);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("Usage: postback-gateway"),
                "{args:?}: {}",
                text(&out)
            );
        }
    }
    let out = gateway(&["test-fire", "--help"], &[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[env: KAFKA_BROKERS="),
        "{}",
        text(&out)
    );
}

#[test]
fn version_names_the_commit_and_librdkafka() {
    for flag in ["--version", "-V"] {
        let out = gateway(&[flag], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let first = stdout.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!(
                "postback-gateway {} (commit ",
                env!("CARGO_PKG_VERSION")
            )),
            "{stdout}"
        );
        let commit = first
            .split("(commit ")
            .nth(1)
            .and_then(|c| c.strip_suffix(')'))
            .unwrap_or_default();
        assert!(
            commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{first}"
        );
        let rdkafka = stdout.lines().nth(1).unwrap_or_default();
        assert!(rdkafka.starts_with("librdkafka 2."), "{stdout}");
        // The features this build relies on: TLS, SASL SCRAM, OIDC, zstd.
        for feature in ["ssl", "sasl_scram", "sasl_oauthbearer", "zstd", "lz4"] {
            assert!(
                rdkafka
                    .split(['(', ')', ' ', ','])
                    .any(|word| word == feature),
                "{feature}: {rdkafka}"
            );
        }
    }
}

#[test]
fn a_flag_of_another_subcommand_is_a_usage_error() {
    for args in [
        &["--no-such-flag"][..],
        &["--follow"],
        &["check-config", "--follow"],
        &["check-config", "--source", "s"],
        &["check-config", "events"],
        &[
            "postback-url",
            "--source",
            "s",
            "--base-url",
            "https://x",
            "--connect",
        ],
        &["postback-url", "--source", "s"],
        &[
            "test-fire",
            "--source",
            "s",
            "--target",
            "http://127.0.0.1:9",
            "--follow",
        ],
        &["test-fire", "--target", "http://127.0.0.1:9"],
        &["events", "--base-url", "https://x"],
        &["events", "--count", "many"],
        &["completions", "--connect", "bash"],
        &["completions", "tcsh-9"],
    ] {
        let out = gateway(args, &[("KAFKA_BROKERS", "embedded")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", text(&out));
        assert!(
            stderr.starts_with("error: ") && stderr.contains("--help"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out));
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = gateway(&["completions", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("postback-gateway") && script.contains("check-config"),
            "{shell}: {script}"
        );
    }
}

/// `--config` falls back to `POSTBACK_CONFIG`, before or after the
/// subcommand; `--brokers` to `KAFKA_BROKERS`, where `embedded` names none.
#[test]
fn the_flags_fall_back_to_their_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "[sources.a]\napi_keys = [\"cli-key-0123456789\"]\n").unwrap();
    let path = path.to_str().unwrap();
    let embedded = ("KAFKA_BROKERS", "embedded");
    for (args, vars) in [
        (
            &["check-config"][..],
            &[("POSTBACK_CONFIG", path), embedded][..],
        ),
        (&["check-config", "--config", path], &[embedded]),
        (&["--config", path, "check-config"], &[embedded]),
    ] {
        let out = gateway(args, vars);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("1 source(s): a."),
            "{args:?}: {}",
            text(&out)
        );
    }
    let out = gateway(&["events", "--config", path], &[embedded]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("name the cluster with --brokers"),
        "{}",
        text(&out)
    );
}
