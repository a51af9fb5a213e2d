//! Metric names in PromQL expressions, for checking alert rules and dashboards
//! against what the gateway exports. Not a parser: it drops strings, label
//! matchers, ranges, function calls, keywords and grouping-label lists, and
//! what is left standing as an identifier is a metric name.

use std::collections::BTreeSet;

const KEYWORDS: &[&str] = &["and", "or", "unless", "offset", "bool", "inf", "nan"];
/// Aggregations may put `by (...)` between their name and their parentheses.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Every metric name in `expr`. Grafana's `label_values(metric, label)` counts
/// its first argument only.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let expr = match expr.trim().strip_prefix("label_values(") {
        Some(rest) => rest.split([',', ')']).next().unwrap_or(""),
        None => expr,
    };
    let b = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_quoted(b, i),
            b'{' => i = skip_until(b, i, b'}'),
            b'[' => i = skip_until(b, i, b']'),
            b'#' => i = skip_until(b, i, b'\n'),
            // Grafana variables such as $__rate_interval or $instance.
            b'$' => {
                i += 1;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
            }
            // Numbers and durations (0.99, 5m, 1e3).
            b'0'..=b'9' => {
                while i < b.len() && (is_ident(b[i]) || b[i] == b'.') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let called = j < b.len() && b[j] == b'(';
                if LABEL_LISTS.contains(&word) {
                    if called {
                        i = skip_until(b, j, b')');
                    }
                } else if !called
                    && !AGGREGATIONS.contains(&word)
                    && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
                {
                    out.insert(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn skip_quoted(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() && b[i] != quote {
        if b[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// Skips to just past `end`, stepping over quoted strings on the way.
fn skip_until(b: &[u8], start: usize, end: u8) -> usize {
    let mut i = start + 1;
    while i < b.len() && b[i] != end {
        if b[i] == b'"' || b[i] == b'\'' {
            i = skip_quoted(b, i);
        } else {
            i += 1;
        }
    }
    i + 1
}

#[test]
fn names_are_found_and_everything_else_is_not() {
    let e = r#"histogram_quantile(0.99, sum by (instance, le) (rate(postback_x_bucket{a="b}", c=~"$i"}[5m])))
        > 3 * (sum without (reason) (rate(postback_y_total[6h] offset 10m)) or on (reason) up == 0)
        and ignoring(x) group_left(y) postback_z"#;
    let got: Vec<String> = metric_names(e).into_iter().collect();
    assert_eq!(
        got,
        ["postback_x_bucket", "postback_y_total", "postback_z", "up"]
    );
    let got: Vec<String> = metric_names("label_values(postback_build_info, instance)")
        .into_iter()
        .collect();
    assert_eq!(got, ["postback_build_info"]);
    assert!(metric_names("rate(postbak_typo[$__rate_interval])").contains("postbak_typo"));
}
