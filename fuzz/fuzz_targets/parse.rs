//! Coverage-guided fuzzing of the strict parser: any bytes as a query, a form
//! body or a JSON body, under the reference rules and lenient ones. Beyond
//! "no panic", what is accepted must be what was sent: the token equals the
//! tracking value, and a decimal amount keeps its exact text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postback_gateway::postback::{self, AmountFormat, Params, ParseRules, Status};

fn lenient() -> ParseRules {
    let mut r = ParseRules::reference();
    r.amount.format = AmountFormat::Decimal {
        min_decimals: 0,
        max_decimals: 6,
    };
    r.amount.allow_negative = true;
    r.amount.required = false;
    r.plus_as_space = true;
    r.fixed_currency = Some("EUR".into());
    r.statuses.insert("1".into(), Status::Approved);
    r
}

fn cents() -> ParseRules {
    let mut r = ParseRules::reference();
    r.amount.format = AmountFormat::Cents;
    r
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Split the rest into a query and a body at the first NUL, if any.
    let (query, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let rules = match mode % 3 {
        0 => ParseRules::reference(),
        1 => lenient(),
        _ => cents(),
    };
    let mut p = Params::new();
    if p.add_query(query, rules.plus_as_space).is_err() {
        return;
    }
    let body_ok = match (mode / 3) % 3 {
        0 => true,
        1 => p.add_form(body).is_ok(),
        _ => p.add_json(body).is_ok(),
    };
    if !body_ok {
        return;
    }
    if let Ok(conv) = postback::parse(&p, &rules) {
        assert_eq!(Some(conv.token.as_ref()), p.get("tracking"));
        // An empty value counts as absent.
        if let (AmountFormat::Decimal { .. }, Some(sent)) = (rules.amount.format, p.get("amount")) {
            let expected = (!sent.is_empty()).then_some(sent);
            assert_eq!(conv.amount_text.as_deref(), expected);
        }
    }
});
