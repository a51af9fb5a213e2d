//! Properties of the strict parser and the event, over generated inputs:
//! parsing never panics on any bytes; an accepted token reaches the event byte
//! for byte; an accepted amount keeps its exact digits.
use std::sync::Arc;

use postback_gateway::event::{self, Context, Kind};
use postback_gateway::postback::{self, check, Params, ParseRules};
use proptest::prelude::*;

use crate::common::enc;

/// The fuzzer's committed corpus (`fuzz/corpus/parse`, the inputs that
/// reached new code) through the same property, in every suite run.
#[test]
fn the_fuzz_corpus_keeps_the_property() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        check::check_bytes(&data);
        inputs += 1;
    }
    assert!(inputs > 1000, "{inputs} inputs in {}", dir.display());
}

fn event_json(conv: &postback::Conversion) -> serde_json::Value {
    let ctx = Context {
        source: "default",
        kind: Kind::S2s,
        received_at: time::OffsetDateTime::now_utc(),
        conversion_at_click: false,
        client_ip: "127.0.0.1",
        user_agent: None,
    };
    let ev = event::encode(conv, &ctx, &Arc::from("default"), uuid::Uuid::now_v7(), 1);
    serde_json::from_slice(&ev.payload).expect("the event is JSON")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The parser's robustness property (`postback::check`, which the fuzz
    /// target runs too) on any bytes.
    #[test]
    fn parsing_never_panics_on_any_bytes(query in proptest::collection::vec(any::<u8>(), 0..600),
                                         body in proptest::collection::vec(any::<u8>(), 0..600)) {
        for i in 0..check::RULE_SETS {
            for how in check::Body::ALL {
                check::check(&check::rules(i), &query, &body, how);
                // The body alone: most random queries are refused first.
                check::check(&check::rules(i), b"", &body, how);
            }
        }
    }

    /// The same property on queries made of the names the parser reads and
    /// values full of what placeholders and escapes are made of.
    #[test]
    fn structured_garbage_never_panics(pairs in proptest::collection::vec(
        ("(tracking|amount|currency|status|txid|goal|click_time|api_key|_|[a-z%+]{0,6})",
         "[ -~\u{80}-\u{10FFFF}%{}\\[\\]#+]{0,40}"), 0..12)) {
        let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let q = q.join("&");
        for i in 0..check::RULE_SETS {
            check::check(&check::rules(i), q.as_bytes(), b"", check::Body::Form);
        }
    }

    #[test]
    fn an_accepted_token_reaches_the_event_byte_for_byte(token in "[^\u{0}-\u{1f}\u{7f}]{1,200}") {
        let q = format!("tracking={}&amount=1.00", enc(&token));
        let mut p = Params::new();
        p.add_query(q.as_bytes(), false).unwrap();
        match postback::parse(&p, &ParseRules::reference()) {
            Ok(conv) => {
                prop_assert_eq!(&conv.token, &token);
                let ev = event_json(&conv);
                prop_assert_eq!(ev["token"].as_str(), Some(token.as_str()));
            }
            // The only refusals for a printable token of this length: a
            // placeholder, or a token of nothing but spaces.
            Err(postback::Reason::BadTracking) => {
                prop_assert!(token.bytes().all(|b| b == b' '), "token {:?}", token)
            }
            Err(r) => prop_assert_eq!(r, postback::Reason::UnfilledMacro, "token {:?}", token),
        }
    }

    #[test]
    fn an_accepted_amount_keeps_its_exact_digits(amount in "-?(0|[1-9][0-9]{0,5})\\.[0-9]{2,6}") {
        // The lenient source takes every one of these; the reference format
        // only the positive ones with exactly two decimals.
        let two_decimals = amount.split_once('.').is_some_and(|(_, d)| d.len() == 2);
        let reference_takes = !amount.starts_with('-') && two_decimals;
        for (rules, takes) in [(ParseRules::reference(), reference_takes), (check::rules(1), true)] {
            let q = format!("tracking=t&amount={amount}");
            let mut p = Params::new();
            p.add_query(q.as_bytes(), false).unwrap();
            match postback::parse(&p, &rules) {
                Ok(conv) => {
                    prop_assert!(takes, "{:?} was accepted", amount);
                    prop_assert_eq!(conv.amount_text.as_deref(), Some(amount.as_str()));
                    prop_assert_eq!(conv.amount, Some(amount.parse::<rust_decimal::Decimal>().unwrap()));
                    let ev = event_json(&conv);
                    prop_assert_eq!(ev["amount"].as_str(), Some(amount.as_str()));
                }
                Err(r) => {
                    prop_assert!(!takes, "{:?} was refused: {}", amount, r);
                    prop_assert_eq!(r, postback::Reason::BadAmount, "amount {:?}", amount);
                }
            }
        }
    }

    #[test]
    fn a_reference_amount_is_accepted_exactly_when_it_has_the_0_00_shape(amount in "[-+0-9.,e $]{1,10}") {
        let q = format!("tracking=t&amount={}", enc(&amount));
        let mut p = Params::new();
        p.add_query(q.as_bytes(), false).unwrap();
        let shape = regex_lite_match(&amount);
        match postback::parse(&p, &ParseRules::reference()) {
            Ok(conv) => {
                prop_assert!(shape, "{:?} was accepted", amount);
                prop_assert_eq!(conv.amount_text.as_deref(), Some(amount.as_str()));
            }
            Err(postback::Reason::BadAmount) => prop_assert!(!shape, "{:?} was refused", amount),
            Err(r) => prop_assert!(false, "{:?}: unexpected {}", amount, r),
        }
    }
}

/// `^(0|[1-9][0-9]*)\.[0-9]{2}$`, written out.
fn regex_lite_match(s: &str) -> bool {
    let Some((int, frac)) = s.split_once('.') else {
        return false;
    };
    let int_ok = int == "0"
        || (!int.is_empty() && !int.starts_with('0') && int.bytes().all(|b| b.is_ascii_digit()));
    int_ok && frac.len() == 2 && frac.bytes().all(|b| b.is_ascii_digit())
}
