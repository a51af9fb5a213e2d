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
