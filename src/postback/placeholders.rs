//! Placeholders: what a sender's template leaves in a URL when it fills
//! nothing in. A tracking token that is one of them is refused
//! (`unfilled_macro`): accepting it would file the conversion under a click
//! that does not exist, and every later one with the same junk would become a
//! `DUPLICATE` of the first, losing the real conversions behind them. Every
//! other role is checked the same way, and refused with a reason that names
//! the role (`unfilled_status` for `cnv_status={status}`): a placeholder is
//! never filed as a status, an amount or an order id.
//!
//! The rule: the whole value is the placeholder. `abc${x}` or `a{b}c` is a
//! token (a template that filled part of a value is still a value); `${x}` is
//! not. A value that is its own parameter's name (`amount=AMOUNT`,
//! `transaction_id=TRANSACTION_ID`, as TUNE's and Everflow's templates write
//! them) is one too.

/// Bracketed shapes: the whole value is `open`, at least one character, then
/// `close`. Each with where senders leave it.
const SHAPES: &[(&str, &str)] = &[
    // Most trackers' and networks' macros: {clickid}, {sub1}, and Twig, Jinja
    // or Liquid templates: {{ click_id }}.
    ("{", "}"),
    // PropellerAds and other ad networks write macros as ${SUBID}; so do
    // JavaScript template literals and shell-style templates.
    ("${", "}"),
    // Ruby string interpolation left in a template: #{clickid}.
    ("#{", "}"),
    // [subid]-style templates, and JavaScript's String(object): [object Object].
    ("[", "]"),
    // %TID%-style tokens of older trackers, and printf leftovers such as %s%.
    ("%", "%"),
    // CAKE's tokens: #s2#, #oid#.
    ("#", "#"),
];

/// Whole values, in any case, that mean nothing was filled in.
const WORDS: &[&str] = &[
    // Voluum's template placeholders for required and optional parameters.
    "REPLACE",
    "OPTIONAL",
    // SQL, PHP and JSON empties (`null`, `NULL`).
    "NULL",
    // JavaScript: an unset variable or property formatted into the URL.
    "undefined",
    // Python: str(None).
    "None",
    // C: printf("%s", NULL) in glibc.
    "(null)",
    // Ruby's and Go's nil formatted into a string.
    "nil",
    // JavaScript arithmetic on a missing number.
    "NaN",
];

/// The gateway's own: what `postback-url` writes where no network fills a
/// role (one per role of docs/http-api.md; `source::url::placeholder`).
pub(crate) const OWN: &[&str] = &[
    "REPLACE_CLICK_ID",
    "REPLACE_AMOUNT",
    "REPLACE_CONVERSION_ID",
    "REPLACE_GOAL",
    "REPLACE_STATUS",
    "REPLACE_CURRENCY",
    "REPLACE_CLICK_TIME",
    "REPLACE_CAMPAIGN_ID",
    "REPLACE_ADSET_ID",
    "REPLACE_AD_ID",
    "REPLACE_PLACEMENT",
    "REPLACE_API_KEY",
];

/// Whether `value` is a placeholder: one of the shapes, one of the words
/// (the gateway's own among them), or one of the source's own `extra` words
/// (any case).
pub(crate) fn is_placeholder(value: &str, extra: &[String]) -> bool {
    WORDS
        .iter()
        .copied()
        .chain(OWN.iter().copied())
        .chain(extra.iter().map(String::as_str))
        .any(|word| value.eq_ignore_ascii_case(word))
        || SHAPES.iter().any(|(open, close)| {
            value.len() > open.len() + close.len()
                && value.starts_with(open)
                && value.ends_with(close)
        })
}

/// Whether `value`, sent under the parameter `name`, is a placeholder: one of
/// [`is_placeholder`]'s, or the parameter's own name in any case
/// (`amount=AMOUNT`).
pub(crate) fn is_unfilled(value: &str, name: &str, extra: &[String]) -> bool {
    value.eq_ignore_ascii_case(name) || is_placeholder(value, extra)
}

/// Whether `value` holds nothing but ASCII white space (a macro filled with
/// a blank). Such a token is `bad_tracking`; any other token is kept byte for
/// byte, spaces included.
pub(crate) fn is_blank(value: &str) -> bool {
    value.bytes().all(|b| b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_values_of_each_shape_and_word_are_placeholders() {
        for v in [
            "{clickid}",
            "{{ click_id }}",
            "${SUBID}",
            "${click_id}",
            "#{clickid}",
            "[subid]",
            "[object Object]",
            "%s%",
            "%TRANSACTION_ID%",
            "#s2#",
            "REPLACE",
            "REPLACE_CLICK_ID",
            "optional",
            "null",
            "NULL",
            "undefined",
            "None",
            "NONE",
            "(null)",
            "(NULL)",
            "nil",
            "Nil",
            "NaN",
            "nan",
        ] {
            assert!(is_placeholder(v, &[]), "{v}");
        }
    }

    #[test]
    fn parts_of_a_token_and_near_misses_are_not() {
        for v in [
            "abc${x}",
            "a{b}c",
            "abc#{x}",
            "x[1]",
            "{}",
            "${}",
            "#{}",
            "[]",
            "%%",
            "##",
            "{clickid",
            "${x",
            "$x}",
            "{b]",
            "nullable",
            "nonexistent",
            "nile",
            "banana",
            "REPLACE_ME",
            "(null",
        ] {
            assert!(!is_placeholder(v, &[]), "{v}");
        }
    }

    #[test]
    fn a_source_adds_words_of_its_own() {
        let extra = vec!["-".to_owned(), "no_click".to_owned()];
        assert!(is_placeholder("-", &extra));
        assert!(is_placeholder("NO_CLICK", &extra));
        assert!(!is_placeholder("no_clicks", &extra));
        assert!(!is_placeholder("-", &[]));
    }

    #[test]
    fn a_value_that_is_its_own_parameter_name_is_unfilled() {
        assert!(is_unfilled("AMOUNT", "amount", &[]));
        assert!(is_unfilled("TRANSACTION_ID", "transaction_id", &[]));
        assert!(is_unfilled("[[payout]]", "payout", &[]));
        assert!(is_unfilled("{status}", "cnv_status", &[]));
        assert!(!is_unfilled("AMOUNT", "payout", &[]));
        assert!(!is_unfilled("12.34", "amount", &[]));
    }

    #[test]
    fn blank_means_ascii_white_space_only() {
        assert!(is_blank(" "));
        assert!(is_blank(" \t  "));
        assert!(!is_blank(" a "));
        assert!(!is_blank("\u{a0}"));
    }
}
