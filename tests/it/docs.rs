//! The documentation holds together: every relative link in README.md,
//! CHANGELOG.md and docs/ names a file that exists, and every `#anchor` a
//! heading in it.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

/// `(text, target)` of every inline link `[text](target)` outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut files = vec![root().join("README.md"), root().join("CHANGELOG.md")];
    for e in std::fs::read_dir(root().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    assert!(files.len() >= 5, "{files:?}");
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, frag) = link.split_once('#').unwrap_or((&link, ""));
            let target: PathBuf = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap_or(Path::new(".")).join(path)
            };
            assert!(
                target.exists(),
                "{}: the link {link} names no file",
                file.display()
            );
            if !frag.is_empty() {
                let t = std::fs::read_to_string(&target).unwrap();
                assert!(
                    anchors(&t).iter().any(|a| a == frag),
                    "{}: the link {link} names no heading in {}",
                    file.display(),
                    target.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} links");
}

/// The presets table of docs/sources.md names, for every preset, the
/// parameters the preset really reads: its token, amount and secret names.
/// Comments and docs point at what a maintainer can open: the repository's
/// own docs, never a section of a contract document it does not hold.
#[test]
fn nothing_cites_a_document_the_repository_does_not_hold() {
    // Built from parts so that this file does not match itself.
    let needle = ["SPEC", " §"].concat();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(name.as_str(), "target" | "out" | "corpus" | ".git") {
                    walk(&path, out);
                }
            } else if [".rs", ".md", ".toml", ".sh", ".yml", ".yaml"]
                .iter()
                .any(|e| name.ends_with(e))
            {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in [
        "src",
        "tests",
        "benches",
        "docs",
        "load-tests",
        "deploy",
        "scripts",
        "fuzz",
    ] {
        walk(&root().join(dir), &mut files);
    }
    files.push(root().join("README.md"));
    assert!(files.len() > 100, "{} files", files.len());
    let citing: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(&needle)))
        .map(|f| f.display().to_string())
        .collect();
    assert!(citing.is_empty(), "cite {needle}: {citing:?}");
}

#[test]
fn the_presets_table_matches_the_presets() {
    use postback_gateway::source::presets::{names, preset, Role};
    let doc = std::fs::read_to_string(root().join("docs/sources.md")).unwrap();
    for name in names() {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}`")))
            .unwrap_or_else(|| panic!("docs/sources.md has no row for the preset {name}"));
        let p = preset(name).unwrap();
        for role in [Role::Tracking, Role::Amount, Role::Txid, Role::ApiKey] {
            for param in role.names(&p.rules.names) {
                assert!(
                    row.contains(&format!("`{param}`")),
                    "the {name} row does not name its {} parameter `{param}`: {row}",
                    role.as_str()
                );
            }
        }
        if p.key_in_path {
            assert!(row.contains("key in the path"), "{row}");
        }
    }
}

/// What docs/configuration.md says a setting is by default, next to what
/// the code makes of an empty config: `Config::default()`, and a config
/// loaded from nothing (the defaults computed from others, such as
/// `public_max_keys`, included). Either side changing alone fails here.
#[test]
fn the_documented_defaults_are_the_defaults() {
    use postback_gateway::config::Config;
    let doc = std::fs::read_to_string(root().join("docs/configuration.md")).unwrap();
    let loaded = Config::load(None, &std::collections::BTreeMap::new()).unwrap();
    for config in [Config::default(), loaded] {
        documented_variables_match(&doc, &config);
        documented_file_matches(&doc, &config);
    }
}

/// The variables' table: a row whose default is one `literal`.
fn documented_variables_match(doc: &str, c: &postback_gateway::config::Config) {
    let log_format = format!("{:?}", c.log_format).to_lowercase();
    let mut checked = 0;
    for row in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        let [name, _, default] = cells[..] else {
            continue;
        };
        let Some(default) = default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .filter(|d| !d.contains('`'))
        else {
            continue;
        };
        let actual = match name.trim_matches('`') {
            "LISTEN_ADDR" => c.listen_addr.to_string(),
            "ADMIN_ADDR" => c.admin_addr.to_string(),
            "KAFKA_TOPIC" => c.kafka.topic.clone(),
            "SPOOL_DIR" => c.spool_dir.display().to_string(),
            "RUST_LOG" => c.log_filter.clone(),
            "LOG_FORMAT" => log_format.clone(),
            other => {
                panic!("docs/configuration.md gives {other} a default this test does not know")
            }
        };
        assert_eq!(
            default, actual,
            "docs/configuration.md: the default of {name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 6, "the variables' table lost a default");
}

/// Settings of the file's example that are examples, not defaults (the
/// text above the example names them).
const EXAMPLES: &[&str] = &[
    "kafka.brokers",
    "kafka.properties",
    "kafka.property_files",
    "limits.client_rate_per_second",
    "limits.client_burst",
    "dedup.hash_key",
    "log.format",
    "admin",
];

/// The file's example: every value in it, but for [`EXAMPLES`], is the default.
fn documented_file_matches(doc: &str, c: &postback_gateway::config::Config) {
    let start = doc.find("```toml\n").expect("the config file's example") + "```toml\n".len();
    let example: toml::Table = toml::from_str(&doc[start..][..doc[start..].find("```").unwrap()])
        .expect("the example is TOML");
    let ms = |d: std::time::Duration| d.as_millis() as f64;
    let expected: Vec<(&str, toml::Value)> = vec![
        ("listen_addr", c.listen_addr.to_string().into()),
        ("admin_addr", c.admin_addr.to_string().into()),
        ("shutdown_grace_ms", ms(c.shutdown_grace).into()),
        ("kafka.topic", c.kafka.topic.clone().into()),
        ("kafka.linger_ms", c.kafka.linger_ms.into()),
        ("kafka.delivery_wait_ms", ms(c.kafka.delivery_wait).into()),
        (
            "kafka.topic_partitions",
            f64::from(c.kafka.topic_partitions).into(),
        ),
        (
            "limits.max_uri_bytes",
            (c.limits.max_uri_bytes as f64).into(),
        ),
        (
            "limits.max_header_bytes",
            (c.limits.max_header_bytes as f64).into(),
        ),
        (
            "limits.max_body_bytes",
            (c.limits.max_body_bytes as f64).into(),
        ),
        (
            "limits.header_read_timeout_ms",
            ms(c.limits.header_read_timeout).into(),
        ),
        (
            "limits.request_timeout_ms",
            ms(c.limits.request_timeout).into(),
        ),
        (
            "limits.max_connections",
            (c.limits.max_connections as f64).into(),
        ),
        (
            "limits.max_connections_per_client",
            (c.limits.max_connections_per_client as f64).into(),
        ),
        (
            "limits.ipv6_client_prefix",
            f64::from(c.limits.ipv6_client_prefix).into(),
        ),
        (
            "dedup.window_secs",
            (c.dedup.window.as_secs() as f64).into(),
        ),
        ("dedup.max_keys", (c.dedup.max_keys as f64).into()),
        (
            "dedup.public_max_keys",
            (c.dedup.public_max_keys as f64).into(),
        ),
        (
            "dedup.warmup_limit_secs",
            (c.dedup.warmup_limit.as_secs() as f64).into(),
        ),
        ("spool.max_bytes", (c.spool.max_bytes as f64).into()),
        ("spool.segment_bytes", (c.spool.segment_bytes as f64).into()),
        ("spool.append_timeout_ms", ms(c.spool.append_timeout).into()),
        (
            "console.recent_per_source",
            (c.console_recent as f64).into(),
        ),
        ("log.filter", c.log_filter.clone().into()),
    ];
    let mut documented = Vec::new();
    settings(&example, "", &mut documented);
    for (key, value) in documented {
        if EXAMPLES
            .iter()
            .any(|e| key == *e || key.starts_with(&format!("{e}.")))
        {
            continue;
        }
        let Some((_, want)) = expected.iter().find(|(k, _)| *k == key) else {
            panic!("docs/configuration.md's example sets {key}: add it to this test's defaults or to EXAMPLES");
        };
        // A number is a number, however written (`linger_ms = 1` is 1.0).
        let number = |v: &toml::Value| v.as_float().or(v.as_integer().map(|i| i as f64));
        let same = match (number(&value), number(want)) {
            (Some(a), Some(b)) => a == b,
            _ => value == *want,
        };
        assert!(
            same,
            "docs/configuration.md: {key} = {value}, but its default is {want}"
        );
    }
    for (key, _) in &expected {
        assert!(
            example_has(&example, key),
            "docs/configuration.md's example no longer shows {key}"
        );
    }
}

/// Every setting of `table` under `prefix`, as `section.key` and its value.
fn settings(table: &toml::Table, prefix: &str, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = format!("{prefix}{k}");
        match v {
            toml::Value::Table(t) => settings(t, &format!("{key}."), out),
            v => out.push((key, v.clone())),
        }
    }
}

fn example_has(table: &toml::Table, key: &str) -> bool {
    let mut t = table;
    let mut parts = key.split('.').peekable();
    while let Some(p) = parts.next() {
        match (t.get(p), parts.peek()) {
            (Some(toml::Value::Table(inner)), Some(_)) => t = inner,
            (Some(_), None) => return true,
            _ => return false,
        }
    }
    false
}
