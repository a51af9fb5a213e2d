//! Secrets out of what the console shows: the value of every parameter that
//! carries a key (the source's api key names, and any name like a key, token,
//! secret, password or signature), and any value that is one of the
//! configured keys wherever it appears. The tracking token stays: it is what
//! the operator came to see.

use crate::source::{Source, Sources};

/// What a redacted value reads as.
pub(crate) const REDACTED: &str = "[redacted]";

/// Parts of parameter names that say the value is a secret.
const SECRET_WORDS: &[&str] = &[
    "key", "token", "secret", "pass", "pwd", "auth", "sign", "sig", "hash", "secure",
];

/// Whether the parameter `name` (as sent, percent-decoded) carries a secret
/// for `source`.
fn secret_name(name: &str, source: Option<&Source>) -> bool {
    let lower = name.to_ascii_lowercase();
    if let Some(s) = source {
        if s.rules
            .names
            .api_key
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
        {
            return true;
        }
        // A role's own parameter (the tracking token `token`, say) is data.
        if crate::source::presets::Role::ALL.into_iter().any(|r| {
            r.names(&s.rules.names)
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
        }) {
            return false;
        }
    }
    lower == "api_key" || SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// A form-encoded text (`a=1&b=2`, a query or a form body) with every
/// secret value replaced; the rest as sent.
pub(crate) fn form(text: &str, source: Option<&Source>, sources: &Sources) -> String {
    text.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(k);
            if secret_name(&name, source) || sources.is_key(decode(v).as_bytes()) {
                format!("{k}={REDACTED}")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A JSON body with every secret value replaced; a body that is not a whole
/// JSON object is not shown at all (it may hold a secret where no name says so).
pub(crate) fn json(text: &str, source: Option<&Source>, sources: &Sources) -> String {
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return "(a body that is not a whole JSON object: not shown)".to_owned();
    };
    for (k, v) in map.iter_mut() {
        let is_key = v.as_str().is_some_and(|s| sources.is_key(s.as_bytes()));
        if secret_name(k, source) || is_key {
            *v = serde_json::Value::String(REDACTED.to_owned());
        }
    }
    serde_json::Value::Object(map).to_string()
}

/// Percent-decodes for comparison and display (`+` stays `+`); invalid
/// escapes stay as they are.
pub(crate) fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postback::ParseRules;

    #[test]
    fn keys_are_redacted_by_name_and_by_value_and_the_token_is_not() {
        let key = "k".repeat(20);
        let mut rules = ParseRules::reference();
        rules.names.api_key = vec!["secure".into()];
        rules.names.tracking = vec!["token".into()];
        let source = Source::new("s", vec![key.clone()], rules);
        let sources = Sources::from_list(vec![source]);
        let s = sources.get("s").unwrap();
        let q = format!(
            "secure={key}&token=abc&amount=1.00&sub1={key}&Password=hunter2&x%5Bsig%5D=zz&note=hi"
        );
        let out = form(&q, Some(s), &sources);
        assert!(
            !out.contains(&key) && !out.contains("hunter2") && !out.contains("zz"),
            "{out}"
        );
        assert!(
            out.contains("token=abc") && out.contains("note=hi"),
            "{out}"
        );
        let j = json(
            &format!(r#"{{"api_key":"{key}","token":"abc","k2":"{key}"}}"#),
            Some(s),
            &sources,
        );
        assert!(!j.contains(&key) && j.contains("abc"), "{j}");
        assert!(!json("{\"api_key\":\"x", Some(s), &sources).contains('x'));
    }
}
