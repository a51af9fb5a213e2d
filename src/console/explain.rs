//! A refusal in words an operator understands: which parameter, what it
//! held, and what the source expects (`amount "12,34": comma decimals are not
//! accepted by this source; expected 0.00`). Worked out when the console is
//! read, from the kept request and the source's rules, never on the hot path.

use super::redact::decode;
use crate::postback::Reason;
use crate::postback::Role;
use crate::postback::{AmountFormat, AmountRules, Names, ParseRules};
use crate::rejection::Rejection;
use crate::source::Source;

/// The parameters of a kept request, decoded once, in order (repeats kept).
fn pairs(query: &str, body: &str) -> Vec<(String, String)> {
    let split = |text: &str| -> Vec<(String, String)> {
        text.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect()
    };
    let mut out = split(query);
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body) {
        Ok(map) => out.extend(map.into_iter().map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })),
        Err(_) => out.extend(split(body)),
    }
    out
}

/// The first value of `role` in the request, with the name it came under.
fn value_of<'a>(
    pairs: &'a [(String, String)],
    names: &Names,
    role: Role,
) -> Option<(&'a str, &'a str)> {
    role.names(names).iter().find_map(|n| {
        pairs
            .iter()
            .find(|(k, _)| k == n)
            .map(|(k, v)| (k.as_str(), v.as_str()))
    })
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "no parameter".to_owned()
    } else {
        names.join(" or ")
    }
}

/// The refusal of the request (`query`, `body`) to `source`, in words. The
/// matches here and in [`plain`] name every [`Rejection`] and every
/// [`Reason`]: a new way to refuse does not compile until it is explained.
pub(crate) fn explain(
    refusal: Rejection,
    query: &str,
    body: &str,
    source: Option<&Source>,
) -> String {
    use Rejection as R;
    match refusal {
        R::Invalid(reason) => match source {
            Some(source) => invalid(reason, &pairs(query, body), source),
            None => format!("{}: {}", reason.as_str(), plain(reason)),
        },
        R::NotFound => "no endpoint at this path".into(),
        R::Options => "a browser asking whether it may send (CORS preflight)".into(),
        R::MethodNotAllowed(_) => "a method this endpoint does not take (see Allow)".into(),
        R::LengthRequired => "a body without Content-Length".into(),
        R::UriTooLong => "the request line over its limit (limits.max_uri_bytes)".into(),
        R::HeadersTooLarge => "the headers over their limit (limits.max_header_bytes)".into(),
        R::BodyTooLarge => "the body over its limit (limits.max_body_bytes)".into(),
        R::RequestTimeout => "the request did not arrive in time".into(),
        R::UnsupportedContentType => "a body that is neither a form nor JSON".into(),
        R::UnknownSource => "no source has this name, key or host; see GET /sources".into(),
        R::NoPixels => "this source takes no pixels: a source with api keys takes them only \
                        with pixel_keys of its own (and pixels = true)"
            .into(),
        R::IpNotAllowed => "the client address is outside this source's allow_networks".into(),
        R::MissingApiKey => match source {
            Some(source) => format!(
                "no key: this source expects it in {}{}",
                list(&source.rules.names[Role::ApiKey]),
                if source.key_in_path {
                    " or as the first path segment"
                } else {
                    ""
                }
            ),
            None => "no key".into(),
        },
        R::BadApiKey => "the key sent is not one of this source's keys (a pixel needs a pixel \
                         key, S2S an api key)"
            .into(),
        R::PixelOnly => "this source has no api keys, so it takes pixels only \
                         (s2s_without_key = true opens S2S)"
            .into(),
        R::RateLimited => "over a rate limit (the source's, its pixels' or the client \
                           address's)"
            .into(),
        R::Unavailable | R::Overloaded => "the event could not be made durable in time (Kafka \
                                           and the spool); the sender should retry"
            .into(),
        R::NotReady => "the gateway is starting or stopping".into(),
    }
}

/// What the parser's refusal `reason` means, without the request.
fn plain(reason: Reason) -> &'static str {
    use Reason as W;
    match reason {
        W::BadEncoding => "an invalid percent escape, or bytes that are not UTF-8",
        W::DuplicateParam => "a parameter, or two aliases of one role, sent twice",
        W::MissingTracking => "no click id",
        W::BadTracking => "a click id that is blank or holds control characters",
        W::ParamTooLong => "a parameter over its limit (names 64 bytes, values 1024)",
        W::UnfilledMacro => "a click id that is a macro the sender did not fill in",
        W::BadAmount => "a malformed amount",
        W::MissingAmount => "no amount, where the source requires one",
        W::AmountOutOfRange => "an amount above the source's maximum",
        W::BadStatus => "a status word the source does not know",
        W::BadCurrency => "a currency that is not an ISO 4217 code",
        W::CurrencyMismatch => "a currency other than the one the source is fixed to",
        W::TooManyParams => "more than 32 parameters besides the roles",
        W::BadBody => {
            "a body that is not a JSON object of the shape the source reads, or not \
                       a valid form"
        }
        W::UnfilledAmount
        | W::UnfilledCurrency
        | W::UnfilledStatus
        | W::UnfilledTxid
        | W::UnfilledGoal
        | W::UnfilledCampaignId
        | W::UnfilledAdsetId
        | W::UnfilledAdId
        | W::UnfilledPlacement => "a macro the sender did not fill in",
        W::ConflictingStatus => {
            "a parameter named like a status says declined while the \
                                 status says approved"
        }
    }
}

/// The role whose placeholder the refusal names (`unfilled_status`: the status).
fn unfilled_role(reason: Reason) -> Option<Role> {
    use Reason as W;
    Some(match reason {
        W::UnfilledAmount => Role::Amount,
        W::UnfilledCurrency => Role::Currency,
        W::UnfilledStatus => Role::Status,
        W::UnfilledTxid => Role::Txid,
        W::UnfilledGoal => Role::Goal,
        W::UnfilledCampaignId => Role::CampaignId,
        W::UnfilledAdsetId => Role::AdsetId,
        W::UnfilledAdId => Role::AdId,
        W::UnfilledPlacement => Role::Placement,
        _ => return None,
    })
}

/// The parser's refusal `reason` of the request's `pairs` to `source`, with
/// the parameter, what it held and what the source expects.
fn invalid(reason: Reason, pairs: &[(String, String)], source: &Source) -> String {
    use Reason as W;
    let rules = &source.rules;
    let names = &rules.names;
    let v = |role: Role| value_of(pairs, names, role);
    match reason {
        W::BadAmount => match v(Role::Amount) {
            Some((_, a)) => format!(
                "amount {a:?}: {}; expected {}",
                amount_fault(a, &rules.amount),
                expected(&rules.amount)
            ),
            None => format!(
                "the amount is malformed; expected {}",
                expected(&rules.amount)
            ),
        },
        W::AmountOutOfRange => format!(
            "amount {:?}: above this source's maximum of {} (amount.max)",
            v(Role::Amount).map_or("", |x| x.1),
            rules.amount.max
        ),
        W::MissingAmount => format!(
            "no amount: this source requires one, in {} (or amount.required = false)",
            list(&names[Role::Amount])
        ),
        W::MissingTracking => format!(
            "no click id: this source reads it from {}",
            list(&names[Role::Tracking])
        ),
        W::BadTracking => format!(
            "click id {:?}: blank or holding control characters",
            v(Role::Tracking).map_or("", |x| x.1)
        ),
        W::UnfilledMacro => format!(
            "click id {:?}: a macro the sender did not fill in; its own click-id macro belongs \
             there (postback-url --network prints it)",
            v(Role::Tracking).map_or("", |x| x.1)
        ),
        W::ConflictingStatus => format!(
            "{}: a parameter named like a status says the conversion was declined while this \
             source's status ({}) says approved",
            declining_param(pairs),
            list(&names[Role::Status])
        ),
        W::BadStatus => format!(
            "status {:?}: not a word this source knows ({}); add it to statuses, or set \
             unknown_status = \"accept\"",
            v(Role::Status).map_or("", |x| x.1),
            known_statuses(rules)
        ),
        W::BadCurrency => format!(
            "currency {:?}: not an ISO 4217 code",
            v(Role::Currency).map_or("", |x| x.1)
        ),
        W::CurrencyMismatch => format!(
            "currency {:?}: this source is fixed to {}",
            v(Role::Currency).map_or("", |x| x.1),
            rules.fixed_currency.as_deref().unwrap_or("?")
        ),
        W::DuplicateParam => duplicate(pairs, names),
        W::TooManyParams => format!(
            "more than 32 parameters besides the roles ({} in all); list the ones to keep in \
             pass_through",
            pairs.len()
        ),
        // The placeholders of the other roles name their role; what is left
        // needs nothing of the request ([`plain`] names every reason).
        _ => match unfilled_role(reason) {
            Some(role) => {
                let (name, value) = v(role).unwrap_or(("", ""));
                format!(
                    "{name} {value:?}: a macro the sender did not fill in; the network's own \
                     macro for the {} belongs there (postback-url --network prints it), or \
                     leave the parameter out",
                    role.as_str().replace('_', " ")
                )
            }
            None => plain(reason).to_owned(),
        },
    }
}

/// The first parameter named like a status in the request, with its value.
fn declining_param(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .find(|(k, _)| k.to_ascii_lowercase().ends_with("status"))
        .map_or_else(String::new, |(k, v)| format!("{k} {v:?}"))
}

fn duplicate(pairs: &[(String, String)], names: &Names) -> String {
    for (i, (k, _)) in pairs.iter().enumerate() {
        if pairs[..i].iter().any(|(seen, _)| seen == k) {
            return format!("{k} appears twice");
        }
    }
    for role in Role::ALL {
        let present: Vec<&String> = role
            .names(names)
            .iter()
            .filter(|n| pairs.iter().any(|(k, _)| k == *n))
            .collect();
        if present.len() > 1 {
            return format!(
                "{} are aliases of one role ({}); send one",
                present
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" and "),
                role.as_str()
            );
        }
    }
    "a parameter appears twice".into()
}

fn known_statuses(rules: &ParseRules) -> String {
    let mut words: Vec<&str> = rules.statuses.keys().map(String::as_str).collect();
    words.sort_unstable();
    words.join(", ")
}

/// What the source's amount rules take, in one phrase.
fn expected(a: &AmountRules) -> String {
    let sign = if a.allow_negative {
        ", a leading - for chargebacks"
    } else {
        ""
    };
    match a.format {
        AmountFormat::Cents => format!("integer cents, like 2995{sign}"),
        AmountFormat::Decimal {
            min_decimals: 2,
            max_decimals: 2,
        } => format!("0.00{sign}"),
        AmountFormat::Decimal {
            min_decimals,
            max_decimals,
        } => format!(
            "digits with {min_decimals} to {max_decimals} decimals after a dot, like 100, 2.5 or 12.34{sign}"
        ),
    }
}

/// What is wrong with the amount text `a` under `rules`.
fn amount_fault(a: &str, rules: &AmountRules) -> String {
    let by_source = "not accepted by this source";
    let unsigned = a.strip_prefix('-').unwrap_or(a);
    if a.is_empty() {
        return "empty".into();
    }
    if a.trim() != a || a.contains(' ') {
        return format!("spaces are {by_source}");
    }
    if a.contains(',') {
        return format!("comma decimals are {by_source}");
    }
    if a.contains(['e', 'E']) && unsigned.bytes().any(|b| b.is_ascii_digit()) {
        return format!("an exponent is {by_source}");
    }
    if a.starts_with('+') {
        return format!("a plus sign is {by_source}");
    }
    if a.starts_with('-') && !rules.allow_negative {
        return "a negative amount; this source takes none (amount.allow_negative)".into();
    }
    if !unsigned.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return "characters other than digits and a dot (a currency sign or code?)".into();
    }
    if matches!(rules.format, AmountFormat::Cents) {
        if unsigned.contains('.') {
            return "a decimal point; this source takes integer cents".into();
        }
    } else if unsigned.starts_with('.') {
        return "no digit before the dot".into();
    } else if unsigned.ends_with('.') {
        return "no digit after the dot".into();
    }
    let int = unsigned.split('.').next().unwrap_or("");
    if int.len() > 1 && int.starts_with('0') {
        return format!("a leading zero is {by_source}");
    }
    if unsigned.matches('.').count() > 1 {
        return "more than one dot".into();
    }
    if let AmountFormat::Decimal {
        min_decimals,
        max_decimals,
    } = rules.format
    {
        let d = unsigned.split_once('.').map_or(0, |(_, f)| f.len());
        if d < usize::from(min_decimals.min(2)) || d > usize::from(max_decimals.max(2)) {
            return format!("{d} decimals are {by_source}");
        }
    }
    "not in this source's amount format".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postback::ParseRules;

    fn source() -> Source {
        Source::new("s", vec!["k".repeat(16)], ParseRules::reference())
    }

    /// A reason code back to its refusal, through the one list of reasons.
    fn refusal(code: &str) -> Rejection {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == code)
            .map(Rejection::Invalid)
            .unwrap_or_else(|| panic!("no reason {code}"))
    }

    #[test]
    fn amounts_are_explained_in_words() {
        let s = source();
        let e = |a: &str| {
            explain(
                Rejection::Invalid(Reason::BadAmount),
                &format!("tracking=t&amount={a}"),
                "",
                Some(&s),
            )
        };
        assert_eq!(
            e("12%2C34"),
            "amount \"12,34\": comma decimals are not accepted by this source; expected 0.00"
        );
        assert!(
            e("100").contains("0 decimals are not accepted"),
            "{}",
            e("100")
        );
        assert!(e("012.00").contains("leading zero"));
        assert!(e("1e3").contains("exponent"));
        assert!(e("-1.00").contains("negative"));
        assert!(e("%245.00").contains("currency sign"));
    }

    #[test]
    fn other_refusals_name_their_parameter() {
        let s = source();
        let x = |code: &str, q: &str| explain(refusal(code), q, "", Some(&s));
        assert!(x("bad_status", "tracking=t&amount=1.00&status=Hold").contains("\"Hold\""));
        assert!(x("bad_status", "status=Hold").contains("approved, declined, pending"));
        assert!(x("unfilled_macro", "tracking=%7Bclickid%7D").contains("\"{clickid}\""));
        assert_eq!(
            x("duplicate_param", "tracking=a&tracking=b"),
            "tracking appears twice"
        );
        assert!(x("missing_amount", "tracking=a").contains("in amount"));
        assert!(x("unfilled_status", "tracking=a&status=%7Bstatus%7D")
            .starts_with("status \"{status}\": a macro"));
        assert!(x("unfilled_amount", "tracking=a&amount=AMOUNT").contains("for the amount"));
        assert!(x("conflicting_status", "tracking=a&cnv_status=reject").contains("cnv_status"));
        assert!(explain(Rejection::UnknownSource, "", "", None).contains("/sources"));
    }

    /// Every reason the parser gives has words of its own, with a source
    /// and without one: none falls back to its code, and no two read the
    /// same (the unfilled roles name their role).
    #[test]
    fn every_reason_has_its_own_explanation() {
        let s = source();
        let mut seen = std::collections::HashMap::new();
        for reason in Reason::ALL {
            let with = explain(Rejection::Invalid(reason), "tracking=t", "", Some(&s));
            let without = explain(Rejection::Invalid(reason), "", "", None);
            for text in [&with, &without] {
                assert!(text.len() > reason.as_str().len() + 5, "{reason:?}: {text}");
                assert_ne!(text.as_str(), reason.as_str().replace('_', " "));
            }
            if let Some(other) = seen.insert(with.clone(), reason) {
                panic!("{reason:?} and {other:?} read the same: {with}");
            }
        }
    }
}
