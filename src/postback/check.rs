//! The parser's one robustness property, shared by the property tests
//! (`tests/it/properties.rs`) and the fuzz target (`fuzz/fuzz_targets/parse.rs`)
//! so that both hold the parser to the same rules: any bytes, as a query and a
//! form, flat JSON or nested JSON body, under each of [`RULE_SETS`] sets of
//! rules, never panic; and what is accepted is what was sent (the token is the
//! tracking value, a decimal amount keeps the digits sent).
//!
//! It panics on a violation: its callers are a test and a fuzzer.

use super::{parse, AmountFormat, Params, ParseRules, Status};

/// How many sets of rules [`rules`] has.
pub const RULE_SETS: usize = 3;

/// How the body is read.
#[derive(Clone, Copy, Debug)]
pub enum Body {
    /// A form body (`a=1&b=2`).
    Form,
    /// A flat JSON object.
    Json,
    /// A JSON object whose nested objects are dotted paths.
    NestedJson,
}

impl Body {
    /// Every way of reading a body.
    pub const ALL: [Body; 3] = [Body::Form, Body::Json, Body::NestedJson];
}

/// The reference rules (0), a lenient source (1: up to six decimals, none
/// required, negatives, no amount required, `+` as a space, a fixed currency,
/// one more status word) and a source that sends cents (2); `i` is taken
/// modulo [`RULE_SETS`].
pub fn rules(i: usize) -> ParseRules {
    let mut r = ParseRules::reference();
    match i % RULE_SETS {
        0 => {}
        1 => {
            r.amount.format = AmountFormat::Decimal {
                min_decimals: 0,
                max_decimals: 6,
            };
            r.amount.allow_negative = true;
            r.amount.required = false;
            r.plus_as_space = true;
            r.fixed_currency = Some("EUR".into());
            r.statuses.insert("1".into(), Status::Approved);
        }
        _ => r.amount.format = AmountFormat::Cents,
    }
    r
}

/// Reads `query` and `body` (as `how`) under `rules` and parses them; checks
/// that an accepted conversion carries what was sent.
pub fn check(rules: &ParseRules, query: &[u8], body: &[u8], how: Body) {
    let mut p = Params::new();
    if p.add_query(query, rules.plus_as_space).is_err() {
        return;
    }
    let read = match how {
        Body::Form => p.add_form(body),
        Body::Json => p.add_json(body),
        Body::NestedJson => p.add_nested_json(body),
    };
    if read.is_err() {
        return;
    }
    let Ok(conv) = parse(&p, rules) else {
        return;
    };
    assert_eq!(
        Some(conv.token.as_ref()),
        p.get("tracking"),
        "the token is the tracking value"
    );
    // A decimal amount keeps the digits sent, with at least two decimals
    // (`2` is `2.00`, `2.5` is `2.50`); an empty value counts as absent.
    if let (AmountFormat::Decimal { .. }, Some(sent)) = (rules.amount.format, p.get("amount")) {
        let kept = conv.amount_text.as_deref();
        if sent.is_empty() {
            assert_eq!(kept, None, "an empty amount is absent");
        } else {
            let kept = kept.expect("a sent amount is kept");
            let padding = match sent.split_once('.') {
                None => ".00",
                Some((_, d)) if d.len() == 1 => "0",
                Some(_) => "",
            };
            assert_eq!(
                kept,
                format!("{sent}{padding}"),
                "a decimal amount keeps its digits"
            );
        }
    }
}

/// The fuzzer's reading of raw bytes: the first byte picks the rules and the
/// way the body is read; the rest is the query, then a NUL, then the body.
pub fn check_bytes(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let how = Body::ALL[usize::from(mode / RULE_SETS as u8) % Body::ALL.len()];
    check(&rules(usize::from(mode)), query, body, how);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The property can fail: a conversion is accepted under each set of
    /// rules and each body, so the checks above run.
    #[test]
    fn each_rule_set_accepts_a_plain_postback() {
        for i in 0..RULE_SETS {
            let r = rules(i);
            let amount: &[u8] = if matches!(r.amount.format, AmountFormat::Cents) {
                b"amount=1250"
            } else {
                b"amount=12.50"
            };
            let mut p = Params::new();
            p.add_query(b"tracking=t-1", false).unwrap();
            p.add_form(amount).unwrap();
            assert!(parse(&p, &r).is_ok(), "rule set {i}");
            check(&r, b"tracking=t-1", amount, Body::Form);
        }
    }
}
