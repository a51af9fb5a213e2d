//! Strict parsing of decoded [`Params`] into a [`Conversion`], under one source's
//! [`ParseRules`]. Checks run in a fixed order (tracking, amount, currency, status,
//! txid, goal, click time, template ids, pass-through) and the first failure is the
//! [`Reason`]. Nothing here trims, case-folds or re-encodes the tracking token.
//! The click time is optional data and never costs a conversion: what cannot be
//! read without a guess is kept as sent (see [`Unread`]).

use super::role::Role;
use std::borrow::Cow;
use std::str::FromStr;

use rust_decimal::Decimal;
use time::format_description::well_known::Rfc3339;
use time::format_description::FormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::postback::decode::Params;
use crate::postback::placeholders;
use crate::postback::reason::Reason;
use crate::postback::rules::{AmountFormat, AmountRules, Names, ParseRules, Status};

/// A tracking token (docs/http-api.md) holds at most this many bytes.
const MAX_TRACKING_BYTES: usize = 1024;
const MAX_TXID_BYTES: usize = 256;
const MAX_GOAL_BYTES: usize = 64;
/// Campaign, ad set, ad and placement ids share the pass-through value limit.
const MAX_TEMPLATE_ID_BYTES: usize = 1024;
const MAX_PASS_THROUGH: usize = 32;
const MAX_PASS_THROUGH_KEY_BYTES: usize = 64;
const MAX_PASS_THROUGH_VALUE_BYTES: usize = 1024;
/// No real payout has more integer digits than this; longer digit strings are
/// refused before `Decimal` parsing, which cannot hold more than ~28 digits.
const MAX_AMOUNT_INTEGER_DIGITS: usize = 20;
/// 9999-12-31T23:59:59Z: anything later is not a plausible click time, and a
/// millisecond timestamp (13 digits today) lands above it instead of in year 55000.
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;
/// A unix time of exactly this many digits is in milliseconds (Branch sends
/// them): 2001-09-09 to 2286-11-20, where no plausible time in seconds lies.
const UNIX_MILLIS_DIGITS: usize = 13;
/// Date and time without a zone, as CAKE's `#sourcetime#`
/// (`2013-11-12T13:04:27.5670000`), Affise's `{date}` (`2021-09-17 01:29:11`)
/// and AppsFlyer (`2021-09-17 01:29:11.653`) write them.
const ZONELESS_T: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]");
const ZONELESS_SPACE: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]");

/// Active ISO 4217 alphabetic codes (list one as of 2025), sorted for binary search.
/// Left out on purpose: withdrawn codes (HRK, ANG, SLL, ZWL, CUC, ...), `XTS` (reserved
/// for testing) and `XXX` ("no currency"), neither of which can price a conversion.
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN",
    "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUP", "CVE", "CZK",
    "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS",
    "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD",
    "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD",
    "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT",
    "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK",
    "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD",
    "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP",
    "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS",
    "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST",
    "XAF", "XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XCD", "XCG", "XDR", "XOF", "XPD", "XPF",
    "XPT", "XSU", "XUA", "YER", "ZAR", "ZMW", "ZWG",
];

/// One checked conversion, ready to become an event. Its text borrows from
/// the [`Params`] it was parsed from wherever the value is kept as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion<'p> {
    /// The click id exactly as sent (after one percent-decoding).
    pub token: Cow<'p, str>,
    /// The amount, exact; `None` when the source makes it optional and none was sent.
    pub amount: Option<Decimal>,
    /// The amount as written by the sender for AmountFormat::Decimal (same digits, e.g. "12.30", "-5.00"),
    /// with at least two decimals ("100" -> "100.00", "2.5" -> "2.50");
    /// for AmountFormat::Cents the decimal rendering with two decimals ("2995" -> "29.95", "5" -> "0.05").
    pub amount_text: Option<Cow<'p, str>>,
    /// Uppercase ISO 4217; the source's fixed currency when the postback names none.
    pub(crate) currency: Option<Cow<'p, str>>,
    pub(crate) txid: Option<Cow<'p, str>>,
    pub(crate) goal: Option<Cow<'p, str>>,
    /// Approved when absent.
    pub(crate) status: Status,
    /// The raw value as sent, when a status was sent, so consumers can tell `sale` from `rebill`.
    pub(crate) status_raw: Option<Cow<'p, str>>,
    /// Normalized to UTC.
    pub(crate) click_time: Option<OffsetDateTime>,
    pub(crate) campaign_id: Option<Cow<'p, str>>,
    pub(crate) adset_id: Option<Cow<'p, str>>,
    pub(crate) ad_id: Option<Cow<'p, str>>,
    pub(crate) placement: Option<Cow<'p, str>>,
    /// Pass-through, in arrival order; never a role's parameter, never the api
    /// key, except a role's value kept as sent because it could not be read
    /// (see [`Unread`]), last, under its own name.
    pub(crate) params: Vec<(Cow<'p, str>, Cow<'p, str>)>,
    /// Which roles' values were kept as sent instead of read.
    pub(crate) unread: Unread,
}

/// Roles whose value the source keeps as sent, in `params`, instead of
/// refusing the postback over it; each is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Unread {
    /// An amount outside the grammar, under `amount.unreadable = "keep"`.
    pub(crate) amount: bool,
    /// A click time that is not unix seconds or milliseconds, RFC 3339, or a
    /// zone-less time of a source that names its zone; or a placeholder
    /// (dropped, not kept).
    pub(crate) click_time: bool,
}

impl Conversion<'_> {
    /// The status as the dedup key sees it: the normalized status, or for a
    /// word outside the vocabulary ([`Status::Other`]) the word itself, so two
    /// different unknown words are two conversions.
    pub(crate) fn dedup_status(&self) -> &str {
        match (self.status, self.status_raw.as_deref()) {
            (Status::Other, Some(raw)) => raw,
            (status, _) => status.as_str(),
        }
    }

    /// The same conversion holding its own text, for keeping it past its [`Params`].
    pub fn into_owned(self) -> Conversion<'static> {
        fn own(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(c.into_owned())
        }
        Conversion {
            token: own(self.token),
            amount: self.amount,
            amount_text: self.amount_text.map(own),
            currency: self.currency.map(own),
            txid: self.txid.map(own),
            goal: self.goal.map(own),
            status: self.status,
            status_raw: self.status_raw.map(own),
            click_time: self.click_time,
            campaign_id: self.campaign_id.map(own),
            adset_id: self.adset_id.map(own),
            ad_id: self.ad_id.map(own),
            placement: self.placement.map(own),
            params: self
                .params
                .into_iter()
                .map(|(k, v)| (own(k), own(v)))
                .collect(),
            unread: self.unread,
        }
    }
}

/// The api key value, if any of the source's api key names is present and
/// non-empty (the caller authenticates before parse()).
pub(crate) fn api_key<'p>(params: &'p Params, rules: &ParseRules) -> Option<&'p str> {
    rules.names[Role::ApiKey]
        .iter()
        .filter_map(|name| params.get(name))
        .find(|value| !value.is_empty())
}

/// Checks `params` against `rules`; the first failing check decides the [`Reason`].
pub fn parse<'p>(params: &'p Params, rules: &ParseRules) -> Result<Conversion<'p>, Reason> {
    let names = &rules.names;
    let extra = &rules.extra_placeholders;
    let hits = Hits::of(params, names);
    let found = |role| hits.found(role);
    let filled = |role, unfilled| hits.filled(role, extra, unfilled);

    let (token_name, token) = found(Role::Tracking)?.ok_or(Reason::MissingTracking)?;
    check_tracking(token, token_name, extra)?;

    let mut unread = Unread::default();
    let mut kept_as_sent = Vec::new();
    let amount = match hits.filled_named(Role::Amount, extra, Reason::UnfilledAmount)? {
        Some((name, raw)) => match parse_amount(raw, &rules.amount) {
            Err(Reason::BadAmount) if rules.amount.keep_unreadable => {
                unread.amount = true;
                kept_as_sent.push((name, raw));
                None
            }
            amount => Some(amount?),
        },
        None if rules.amount.required => return Err(Reason::MissingAmount),
        None => None,
    };
    let (amount, amount_text) = match amount {
        Some((value, text)) => (Some(value), Some(text)),
        None => (None, None),
    };

    let currency = parse_currency(filled(Role::Currency, Reason::UnfilledCurrency)?, rules)?;

    let (status, status_raw) = match filled(Role::Status, Reason::UnfilledStatus)? {
        Some(raw) => (lookup_status(raw, params, rules)?, Some(Cow::Borrowed(raw))),
        None => (Status::Approved, None),
    };
    // A sender's own word for a reject, in a parameter the source does not
    // read as its status, never leaves the conversion approved.
    let declined = match status {
        Status::Approved => hits.declining_word(),
        _ => None,
    };
    let (status, status_raw) = match declined {
        Some(_) if status_raw.is_some() => return Err(Reason::ConflictingStatus),
        Some(word) => (Status::Declined, Some(Cow::Borrowed(word))),
        None => (status, status_raw),
    };

    let txid = bounded(filled(Role::Txid, Reason::UnfilledTxid)?, MAX_TXID_BYTES)?;
    let goal = bounded(filled(Role::Goal, Reason::UnfilledGoal)?, MAX_GOAL_BYTES)?;

    let click_time = match found(Role::ClickTime)? {
        None => None,
        Some((name, raw)) => {
            let time = if placeholders::is_unfilled(raw, name, extra) {
                None
            } else {
                read_click_time(raw, rules.click_time_zone).or_else(|| {
                    kept_as_sent.push((name, raw));
                    None
                })
            };
            unread.click_time = time.is_none();
            time
        }
    };

    let template_id = |role, unfilled| bounded(filled(role, unfilled)?, MAX_TEMPLATE_ID_BYTES);
    let campaign_id = template_id(Role::CampaignId, Reason::UnfilledCampaignId)?;
    let adset_id = template_id(Role::AdsetId, Reason::UnfilledAdsetId)?;
    let ad_id = template_id(Role::AdId, Reason::UnfilledAdId)?;
    let placement = template_id(Role::Placement, Reason::UnfilledPlacement)?;

    let mut params = hits.pass_through(rules)?;
    for (name, raw) in kept_as_sent {
        params.push((Cow::Owned(name.to_owned()), Cow::Borrowed(raw)));
    }

    Ok(Conversion {
        token: Cow::Borrowed(token),
        amount,
        amount_text,
        currency,
        txid,
        goal,
        status,
        status_raw,
        click_time,
        campaign_id,
        adset_id,
        ad_id,
        placement,
        params,
        unread,
    })
}

/// Where the roles' parameters are among a postback's, from one pass over
/// the parameters' names (each looked up among the aliases once).
struct Hits<'p> {
    params: &'p Params,
    /// Per parameter, in order: the roles its name is an alias of.
    roles: Vec<u32>,
    /// Per role: the first parameter that is one of its aliases.
    first: [Option<usize>; Role::ALL.len()],
    /// The roles with more than one of their aliases present.
    twice: u32,
}

impl<'p> Hits<'p> {
    fn of(params: &'p Params, names: &Names) -> Hits<'p> {
        let mut hits = Hits {
            params,
            roles: Vec::with_capacity(params.iter().len()),
            first: [None; Role::ALL.len()],
            twice: 0,
        };
        for (i, (key, _)) in params.iter().enumerate() {
            let roles = names.roles_of(key);
            hits.roles.push(roles);
            let mut left = roles;
            while left != 0 {
                let role = left.trailing_zeros() as usize;
                left &= left - 1;
                match hits.first[role] {
                    None => hits.first[role] = Some(i),
                    Some(_) => hits.twice |= 1 << role,
                }
            }
        }
        hits
    }

    /// The value of `role`, with the alias it came under. Two aliases
    /// present at once is ambiguous (which one did the sender mean?), so it
    /// is `duplicate_param` rather than a silent pick (the same alias listed
    /// twice in config is one parameter). An empty value counts as absent.
    fn found(&self, role: Role) -> Result<Option<(&'p str, &'p str)>, Reason> {
        if self.twice & 1 << role as u32 != 0 {
            return Err(Reason::DuplicateParam);
        }
        Ok(self.first[role as usize]
            .map(|i| self.params.pair(i))
            .filter(|(_, value)| !value.is_empty()))
    }

    /// The value of a role whose value must not be a placeholder: one is
    /// refused as `unfilled`, the reason that names the role.
    fn filled(
        &self,
        role: Role,
        extra: &[String],
        unfilled: Reason,
    ) -> Result<Option<&'p str>, Reason> {
        Ok(self
            .filled_named(role, extra, unfilled)?
            .map(|(_, value)| value))
    }

    /// [`Hits::filled`], with the alias the value came under.
    fn filled_named(
        &self,
        role: Role,
        extra: &[String],
        unfilled: Reason,
    ) -> Result<Option<(&'p str, &'p str)>, Reason> {
        match self.found(role)? {
            Some((name, value)) if placeholders::is_unfilled(value, name, extra) => Err(unfilled),
            found => Ok(found),
        }
    }

    /// The parameters passed through: every one that names no role (the
    /// api key included: a secret must never ride along in `params`, and a
    /// role's value must not appear twice in the event) and is not dropped.
    fn pass_through(&self, rules: &ParseRules) -> Result<Pairs<'p>, Reason> {
        // Room for every parameter that names no role, in one allocation
        // (the kept pairs are only a few, and at most `MAX_PASS_THROUGH`).
        let unnamed = self.roles.iter().filter(|&&r| r == 0).count();
        let mut kept = Vec::with_capacity(unnamed.min(MAX_PASS_THROUGH + 1));
        for ((key, value), &roles) in self.params.iter().zip(&self.roles) {
            if roles != 0 || rules.dropped.iter().any(|d| d == key) {
                continue;
            }
            if let Some(keep) = &rules.pass_through {
                if !keep.iter().any(|k| k == key) {
                    continue;
                }
            }
            if kept.len() == MAX_PASS_THROUGH {
                return Err(Reason::TooManyParams);
            }
            if key.len() > MAX_PASS_THROUGH_KEY_BYTES || value.len() > MAX_PASS_THROUGH_VALUE_BYTES
            {
                return Err(Reason::ParamTooLong);
            }
            kept.push((Cow::Borrowed(key), Cow::Borrowed(value)));
        }
        Ok(kept)
    }

    /// The value of a parameter named like a status (see [`STATUS_LIKE`])
    /// that the source does not read as its status, when a word of it
    /// declines the conversion (see [`DECLINING`]).
    fn declining_word(&self) -> Option<&'p str> {
        let status = 1 << Role::Status as u32;
        self.params
            .iter()
            .zip(&self.roles)
            .find_map(|((key, value), &roles)| {
                let status_like = roles & status == 0
                    && STATUS_LIKE_LENGTHS & 1 << key.len().min(63) != 0
                    && STATUS_LIKE.iter().any(|s| key.eq_ignore_ascii_case(s));
                (status_like && declines(value)).then_some(value)
            })
    }
}

/// Parameters named like a status that a source without a status role (or
/// with another one) would pass through as plain data: `status=reject` sent
/// to a Voluum or TUNE format must never file an approved conversion.
const STATUS_LIKE: &[&str] = &[
    "status",
    "cnv_status",
    "conversion_status",
    "conv_status",
    "pstatus",
    "action_status",
];

/// Bit `n` set when a name of [`STATUS_LIKE`] is `n` bytes long (all are
/// shorter than 63): most parameter names are told apart by length alone.
const STATUS_LIKE_LENGTHS: u64 = {
    let mut bits = 0u64;
    let mut i = 0;
    while i < STATUS_LIKE.len() {
        assert!(STATUS_LIKE[i].len() < 63);
        bits |= 1 << STATUS_LIKE[i].len();
        i += 1;
    }
    bits
};

/// Words that take a conversion back or refuse it, whole or as one word of a
/// value (`Rejected`, `charge-back`, `REVERSED`), in any case.
const DECLINING: &[&str] = &[
    "reject",
    "rejected",
    "decline",
    "declined",
    "deny",
    "denied",
    "chargeback",
    "chargedback",
    "refund",
    "refunded",
    "reversed",
    "reversal",
    "void",
    "voided",
    "cancel",
    "canceled",
    "cancelled",
    "fraud",
];

/// Whether `value`, whole or one of its words, is one of [`DECLINING`]
/// (`-` and `_` inside a word ignored), in any case.
fn declines(value: &str) -> bool {
    value
        .split(|c: char| !c.is_ascii_alphanumeric())
        .chain(std::iter::once(value))
        .any(|w| {
            let w: String = w.chars().filter(|c| *c != '-' && *c != '_').collect();
            DECLINING.iter().any(|d| w.eq_ignore_ascii_case(d))
        })
}

fn check_tracking(token: &str, name: &str, extra_placeholders: &[String]) -> Result<(), Reason> {
    if token.len() > MAX_TRACKING_BYTES {
        return Err(Reason::ParamTooLong);
    }
    if token.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}') || placeholders::is_blank(token) {
        return Err(Reason::BadTracking);
    }
    if placeholders::is_unfilled(token, name, extra_placeholders) {
        return Err(Reason::UnfilledMacro);
    }
    Ok(())
}

/// Returns the exact value and its text for the event (see [`Conversion::amount_text`]).
fn parse_amount<'p>(raw: &'p str, rules: &AmountRules) -> Result<(Decimal, Cow<'p, str>), Reason> {
    let (negative, unsigned) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if negative && !rules.allow_negative {
        return Err(Reason::BadAmount);
    }
    let (value, text) = match rules.format {
        AmountFormat::Decimal {
            min_decimals,
            max_decimals,
        } => {
            let (int, frac) = match unsigned.split_once('.') {
                Some((_, "")) => return Err(Reason::BadAmount),
                Some(parts) => parts,
                None => (unsigned, ""),
            };
            let decimals = usize::from(min_decimals.min(2))..=usize::from(max_decimals.max(2));
            let frac_ok =
                decimals.contains(&frac.len()) && frac.bytes().all(|b| b.is_ascii_digit());
            if !is_canonical_integer(int) || !frac_ok {
                return Err(Reason::BadAmount);
            }
            if int.len() > MAX_AMOUNT_INTEGER_DIGITS {
                return Err(Reason::AmountOutOfRange);
            }
            // Only reachable with a configured scale beyond what Decimal holds.
            let value = Decimal::from_str_exact(raw).map_err(|_| Reason::AmountOutOfRange)?;
            (value, canonical_amount_text(raw, frac.len()))
        }
        AmountFormat::Cents => {
            if !is_canonical_integer(unsigned) {
                return Err(Reason::BadAmount);
            }
            if unsigned.len() > MAX_AMOUNT_INTEGER_DIGITS {
                return Err(Reason::AmountOutOfRange);
            }
            let cents = i128::from_str(unsigned).map_err(|_| Reason::AmountOutOfRange)?;
            let cents = if negative { -cents } else { cents };
            let value = Decimal::try_from_i128_with_scale(cents, 2)
                .map_err(|_| Reason::AmountOutOfRange)?;
            (value, Cow::Owned(value.to_string()))
        }
    };
    if value.abs() > rules.max {
        return Err(Reason::AmountOutOfRange);
    }
    Ok((value, text))
}

/// The amount's text in the event: the digits sent, with at least two
/// decimals (`100` is `100.00`, `2.5` is `2.50`, `12.3456` stays), so
/// consumers always parse one shape.
fn canonical_amount_text(raw: &str, decimals: usize) -> Cow<'_, str> {
    match decimals {
        0 => Cow::Owned(format!("{raw}.00")),
        1 => Cow::Owned(format!("{raw}0")),
        _ => Cow::Borrowed(raw),
    }
}

/// `0` or ASCII digits without a leading zero: `012` is more likely a mangled value
/// than a real amount, and refusing it keeps one spelling per number.
fn is_canonical_integer(digits: &str) -> bool {
    match digits.as_bytes() {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        bytes => bytes.iter().all(u8::is_ascii_digit),
    }
}

fn parse_currency<'p>(
    raw: Option<&'p str>,
    rules: &ParseRules,
) -> Result<Option<Cow<'p, str>>, Reason> {
    let fixed = rules.fixed_currency.as_deref();
    let Some(raw) = raw else {
        return Ok(fixed.map(|f| Cow::Owned(f.to_ascii_uppercase())));
    };
    if raw.len() != 3 || !raw.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(Reason::BadCurrency);
    }
    let code = if raw.bytes().all(|b| b.is_ascii_uppercase()) {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(raw.to_ascii_uppercase())
    };
    if ISO_4217.binary_search(&code.as_ref()).is_err() {
        return Err(Reason::BadCurrency);
    }
    match fixed {
        Some(fixed) if !fixed.eq_ignore_ascii_case(&code) => Err(Reason::CurrencyMismatch),
        _ => Ok(Some(code)),
    }
}

/// Whether `word` is one of the comma-separated words of `list`.
fn listed(list: &str, word: &str, case_insensitive: bool) -> bool {
    list.split(',').map(str::trim).any(|w| {
        if case_insensitive {
            w.eq_ignore_ascii_case(word)
                || (!w.is_ascii() && w.to_lowercase() == word.to_lowercase())
        } else {
            w == word
        }
    })
}

/// Whether the postback asks to be ignored: its status is one of the words
/// its source's `ignore_list` parameter lists (`ignore_status=ping,test`).
/// Such a postback is answered as a success and files nothing.
pub fn ignored(params: &Params, rules: &ParseRules) -> bool {
    let Some(list) = rules.ignore_list.as_deref().and_then(|p| params.get(p)) else {
        return false;
    };
    let status = rules.names[Role::Status].iter().find_map(|n| params.get(n));
    status.is_some_and(|s| !s.is_empty() && listed(list, s, rules.status_case_insensitive))
}

fn lookup_status(raw: &str, params: &Params, rules: &ParseRules) -> Result<Status, Reason> {
    // The sender's own words, translated for this postback (Keitaro's
    // `sale_status=billed`), win over the source's map.
    for (param, status) in &rules.status_lists {
        if let Some(list) = params.get(param) {
            if listed(list, raw, rules.status_case_insensitive) {
                return Ok(*status);
            }
        }
    }
    let key = if rules.status_case_insensitive {
        Cow::Owned(raw.to_lowercase())
    } else {
        Cow::Borrowed(raw)
    };
    match rules.statuses.get(key.as_ref()) {
        Some(status) => Ok(*status),
        None if rules.accept_unknown_status => Ok(Status::Other),
        None => Err(Reason::BadStatus),
    }
}

fn bounded(value: Option<&str>, max_bytes: usize) -> Result<Option<Cow<'_, str>>, Reason> {
    match value {
        Some(v) if v.len() > max_bytes => Err(Reason::ParamTooLong),
        v => Ok(v.map(Cow::Borrowed)),
    }
}

/// A click time, when it can be read without a guess: unix seconds (digits
/// only, up to year 9999), unix milliseconds (exactly 13 digits), RFC 3339, or
/// a date and time without a zone when the source names its zone. In UTC.
fn read_click_time(raw: &str, zone: Option<UtcOffset>) -> Option<OffsetDateTime> {
    let time = if raw.bytes().all(|b| b.is_ascii_digit()) {
        let n = i64::from_str(raw).ok()?;
        if raw.len() == UNIX_MILLIS_DIGITS {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(n) * 1_000_000).ok()?
        } else if n <= MAX_UNIX_SECONDS {
            OffsetDateTime::from_unix_timestamp(n).ok()?
        } else {
            return None;
        }
    } else if let Ok(time) = OffsetDateTime::parse(raw, &Rfc3339) {
        time
    } else {
        let local = PrimitiveDateTime::parse(raw, ZONELESS_T)
            .or_else(|_| PrimitiveDateTime::parse(raw, ZONELESS_SPACE))
            .ok()?;
        local.assume_offset(zone?)
    };
    Some(time.to_offset(UtcOffset::UTC))
}

type Pairs<'p> = Vec<(Cow<'p, str>, Cow<'p, str>)>;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use time::macros::datetime;

    use super::*;

    /// A request body, for rows that go through `add_form` / `add_json`.
    #[derive(Clone, Copy)]
    enum Body {
        None,
        Form(&'static str),
        Json(&'static str),
    }

    fn run_with(
        query: &str,
        body: Body,
        rules: &ParseRules,
    ) -> Result<Conversion<'static>, Reason> {
        let mut params = Params::new();
        params.add_query(query.as_bytes(), rules.plus_as_space)?;
        match body {
            Body::None => {}
            Body::Form(raw) => params.add_form(raw.as_bytes())?,
            Body::Json(raw) => params.add_json(raw.as_bytes())?,
        }
        parse(&params, rules).map(Conversion::into_owned)
    }

    fn run(query: &str, rules: &ParseRules) -> Result<Conversion<'static>, Reason> {
        run_with(query, Body::None, rules)
    }

    fn reference() -> ParseRules {
        ParseRules::reference()
    }

    fn plus_as_space() -> ParseRules {
        ParseRules {
            plus_as_space: true,
            ..ParseRules::reference()
        }
    }

    fn with_amount(format: AmountFormat, allow_negative: bool, required: bool) -> ParseRules {
        let mut rules = ParseRules::reference();
        rules.amount = AmountRules {
            format,
            allow_negative,
            required,
            ..AmountRules::default()
        };
        rules
    }

    fn six_decimals() -> ParseRules {
        with_amount(
            AmountFormat::Decimal {
                min_decimals: 2,
                max_decimals: 6,
            },
            false,
            true,
        )
    }

    fn negatives() -> ParseRules {
        with_amount(
            AmountFormat::Decimal {
                min_decimals: 2,
                max_decimals: 2,
            },
            true,
            true,
        )
    }

    fn cents() -> ParseRules {
        with_amount(AmountFormat::Cents, false, true)
    }

    fn cents_negative() -> ParseRules {
        with_amount(AmountFormat::Cents, true, true)
    }

    /// A preset's documented shapes: integers and one decimal too, up to four.
    fn loose() -> ParseRules {
        with_amount(
            AmountFormat::Decimal {
                min_decimals: 0,
                max_decimals: 4,
            },
            false,
            true,
        )
    }

    fn loose_negative() -> ParseRules {
        with_amount(
            AmountFormat::Decimal {
                min_decimals: 0,
                max_decimals: 4,
            },
            true,
            true,
        )
    }

    fn amount_optional() -> ParseRules {
        with_amount(
            AmountFormat::Decimal {
                min_decimals: 2,
                max_decimals: 2,
            },
            false,
            false,
        )
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Voluum-like names (`cid`, `payout`), as in conventions #1 and #5.
    fn voluum() -> ParseRules {
        let mut rules = ParseRules::reference();
        rules.names[Role::Tracking] = names(&["cid"]);
        rules.names[Role::Amount] = names(&["payout"]);
        rules
    }

    /// NATS-like: integer cents under a PHP bracket key.
    fn nats() -> ParseRules {
        let mut rules = cents();
        rules.names[Role::Amount] = names(&["transaction[amount]"]);
        rules
    }

    /// Affise-like: two aliases for the click id, a second api key name.
    fn aliases() -> ParseRules {
        let mut rules = ParseRules::reference();
        rules.names[Role::Tracking] = names(&["clickid", "click_id", "clickid"]);
        rules.names[Role::ApiKey] = names(&["api_key", "secure"]);
        rules
    }

    fn fixed_eur() -> ParseRules {
        ParseRules {
            fixed_currency: Some("EUR".to_owned()),
            ..ParseRules::reference()
        }
    }

    fn vocabulary(case_insensitive: bool, words: &[(&str, Status)]) -> ParseRules {
        ParseRules {
            statuses: words.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            status_case_insensitive: case_insensitive,
            ..ParseRules::reference()
        }
    }

    fn affise() -> ParseRules {
        use Status::*;
        vocabulary(
            false,
            &[
                ("1", Approved),
                ("2", Pending),
                ("3", Declined),
                ("5", Pending),
            ],
        )
    }

    fn post_affiliate_pro() -> ParseRules {
        use Status::*;
        vocabulary(false, &[("A", Approved), ("P", Pending), ("D", Declined)])
    }

    fn keitaro() -> ParseRules {
        use Status::*;
        let words = [
            ("lead", Pending),
            ("sale", Approved),
            ("rejected", Declined),
            ("rebill", Approved),
        ];
        vocabulary(true, &words)
    }

    /// Click times without a zone are at +02:00.
    fn zoned() -> ParseRules {
        ParseRules {
            click_time_zone: Some(time::macros::offset!(+2)),
            ..ParseRules::reference()
        }
    }

    fn template_ids() -> ParseRules {
        let mut rules = ParseRules::reference();
        rules.names[Role::CampaignId] = names(&["campaign_id", "cmp"]);
        rules.names[Role::AdsetId] = names(&["adset_id"]);
        rules.names[Role::AdId] = names(&["ad_id"]);
        rules.names[Role::Placement] = names(&["placement"]);
        rules
    }

    /// Percent-encodes every byte that is not an ASCII letter or digit.
    fn encode_all(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => char::from(b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// A case-sensitive token of `len` bytes from a fixed pattern.
    fn long_token(len: usize) -> String {
        "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
            .chars()
            .cycle()
            .take(len)
            .collect()
    }

    const SEED_TOKEN: &str = "befwueicjfn93q4urcnq83xnfjemw8qz2jfq38jcrufn8j89xjqcmq3c3";
    const PRINTABLE_SPECIALS: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ ";

    // ---- tables: (what, rules, query, body, expected) ----

    type TokenRow = (
        &'static str,
        fn() -> ParseRules,
        String,
        Body,
        Result<String, Reason>,
    );

    #[rustfmt::skip]
    fn token_rows() -> Vec<TokenRow> {
        let q = |t: &str| format!("api_key=k&tracking={t}&amount=1.00");
        let ok = |t: &str| Ok(t.to_owned());
        let r = reference as fn() -> ParseRules;
        let none = Body::None;
        vec![
            ("seed token", r, q(SEED_TOKEN), none, ok(SEED_TOKEN)),
            ("14 lowercase", r, q("k3j9x0qz7m2p4a"), none, ok("k3j9x0qz7m2p4a")),
            ("22 mixed", r, q("AbC9dEfG1hIjK2lMnO3pQr"), none, ok("AbC9dEfG1hIjK2lMnO3pQr")),
            ("26 mixed", r, q("AbC9dEfG1hIjK2lMnO3pQr4sTu"), none, ok("AbC9dEfG1hIjK2lMnO3pQr4sTu")),
            ("32 hex", r, q("0123456789abcdef0123456789ABCDEF"), none, ok("0123456789abcdef0123456789ABCDEF")),
            ("numeric", r, q("1234567890123"), none, ok("1234567890123")),
            ("leading zeros", r, q("000123"), none, ok("000123")),
            ("120 chars", r, q(&long_token(120)), none, Ok(long_token(120))),
            ("500 chars", r, q(&long_token(500)), none, Ok(long_token(500))),
            ("1024 bytes", r, q(&long_token(1024)), none, Ok(long_token(1024))),
            ("1025 bytes", r, q(&long_token(1025)), none, Err(Reason::ParamTooLong)),
            ("512 two-byte chars", r, q(&"%D0%B0".repeat(512)), none, Ok("а".repeat(512))),
            ("513 two-byte chars", r, q(&"%D0%B0".repeat(513)), none, Err(Reason::ParamTooLong)),
            // Conventions #11: a Cyrillic 'а' (U+0430) inside a Latin-looking id.
            ("cyrillic a", r, q("p%D0%B0ypal77"), none, ok("p\u{430}ypal77")),
            ("non-ascii letters", r, q("%C3%BCber-%E6%97%A5%E6%9C%AC"), none, ok("über-日本")),
            // Every printable special, percent-encoded, comes back byte for byte.
            ("all specials", r, q(&encode_all(&format!("a{PRINTABLE_SPECIALS}z"))), none, Ok(format!("a{PRINTABLE_SPECIALS}z"))),
            ("specials unencoded", r, q("a-._~!$'()*,;:@/?z"), none, ok("a-._~!$'()*,;:@/?z")),
            ("spaces kept", r, q("%20ab%20c%20"), none, ok(" ab c ")),
            ("case kept", r, q("AbC"), none, ok("AbC")),
            // Conventions #3: '+' in base64-like tokens.
            ("plus in query", r, q("AbC+dE/f=="), none, ok("AbC+dE/f==")),
            ("plus_as_space query", plus_as_space, q("AbC+dE/f=="), none, ok("AbC dE/f==")),
            ("plus in form", r, "api_key=k".into(), Body::Form("tracking=AbC+dE/f==&amount=1.00"), ok("AbC dE/f==")),
            ("encoded plus in form", r, "api_key=k".into(), Body::Form("tracking=AbC%2BdE%2Ff%3D%3D&amount=1.00"), ok("AbC+dE/f==")),
            // Conventions #4: decoded exactly once.
            ("double encoding", r, q("abc%252Fdef"), none, ok("abc%2Fdef")),
            // Conventions #2: unfilled macros.
            ("{clickid}", r, q("{clickid}"), none, Err(Reason::UnfilledMacro)),
            ("%7Bclickid%7D", r, q("%7Bclickid%7D"), none, Err(Reason::UnfilledMacro)),
            ("[subid]", r, q("[subid]"), none, Err(Reason::UnfilledMacro)),
            ("{x}", r, q("{x}"), none, Err(Reason::UnfilledMacro)),
            ("REPLACE", r, q("REPLACE"), none, Err(Reason::UnfilledMacro)),
            ("replace", r, q("replace"), none, Err(Reason::UnfilledMacro)),
            ("OPTIONAL", r, q("OPTIONAL"), none, Err(Reason::UnfilledMacro)),
            ("Optional", r, q("Optional"), none, Err(Reason::UnfilledMacro)),
            ("NULL", r, q("NULL"), none, Err(Reason::UnfilledMacro)),
            ("null", r, q("null"), none, Err(Reason::UnfilledMacro)),
            ("undefined", r, q("undefined"), none, Err(Reason::UnfilledMacro)),
            ("UNDEFINED", r, q("UNDEFINED"), none, Err(Reason::UnfilledMacro)),
            ("%TRANSACTION_ID% is a bad escape first", r, q("%TRANSACTION_ID%"), none, Err(Reason::BadEncoding)),
            ("%25TRANSACTION_ID%25", r, q("%25TRANSACTION_ID%25"), none, Err(Reason::UnfilledMacro)),
            ("#s2# reaching us", r, q("#s2#"), none, Err(Reason::UnfilledMacro)),
            ("%23s2%23", r, q("%23s2%23"), none, Err(Reason::UnfilledMacro)),
            // `#s2#` as a browser sends it: the fragment is cut, the value is empty.
            ("#s2# cut by the browser", r, q(""), none, Err(Reason::MissingTracking)),
            // Near-misses are real tokens.
            ("{} empty braces", r, q("{}"), none, ok("{}")),
            ("%25%25", r, q("%25%25"), none, ok("%%")),
            ("open brace only", r, q("{clickid"), none, ok("{clickid")),
            ("macro inside", r, q("a{b}c"), none, ok("a{b}c")),
            ("mismatched", r, q("{b]"), none, ok("{b]")),
            ("nullable", r, q("nullable"), none, ok("nullable")),
            ("REPLACE_ME", r, q("REPLACE_ME"), none, ok("REPLACE_ME")),
            // Missing.
            ("absent", r, "api_key=k&amount=1.00".into(), none, Err(Reason::MissingTracking)),
            ("no '='", r, "tracking&amount=1.00".into(), none, Err(Reason::MissingTracking)),
            ("other case is another key", r, "TRACKING=abc&amount=1.00".into(), none, Err(Reason::MissingTracking)),
            // Control characters.
            ("NUL", r, q("ab%00c"), none, Err(Reason::BadTracking)),
            ("tab", r, q("ab%09c"), none, Err(Reason::BadTracking)),
            ("LF", r, q("abc%0A"), none, Err(Reason::BadTracking)),
            ("CR", r, q("%0Dabc"), none, Err(Reason::BadTracking)),
            ("US", r, q("ab%1Fc"), none, Err(Reason::BadTracking)),
            ("DEL", r, q("ab%7Fc"), none, Err(Reason::BadTracking)),
            ("control in json", r, "api_key=k".into(), Body::Json(r#"{"tracking":"a\u0007b","amount":"1.00"}"#), Err(Reason::BadTracking)),
            // The rules name U+0000..U+001F and U+007F only (docs/http-api.md); C1 controls are not in it.
            ("C1 NEL", r, q("ab%C2%85c"), none, ok("ab\u{85}c")),
            // Decoding failures.
            ("invalid utf-8", r, q("ab%FFc"), none, Err(Reason::BadEncoding)),
            ("lone percent", r, q("ab%"), none, Err(Reason::BadEncoding)),
            ("%4 at the end", r, q("ab%4"), none, Err(Reason::BadEncoding)),
            // Conventions #5: '%' typed instead of '&'.
            ("cid=XYZ%payout=1", voluum, "cid=XYZ%payout=1".into(), none, Err(Reason::BadEncoding)),
            ("cid=XYZ&payout=1.00", voluum, "cid=XYZ&payout=1.00".into(), none, ok("XYZ")),
            // Conventions #9.
            ("cid=a&cid=b", voluum, "cid=a&cid=b&payout=1.00".into(), none, Err(Reason::DuplicateParam)),
            ("two aliases", aliases, "clickid=a&click_id=a&amount=1.00".into(), none, Err(Reason::DuplicateParam)),
            ("alias present but empty", aliases, "clickid=&click_id=a&amount=1.00".into(), none, Err(Reason::DuplicateParam)),
            ("second alias", aliases, "click_id=a&amount=1.00".into(), none, ok("a")),
            ("alias listed twice in config", aliases, "clickid=a&amount=1.00".into(), none, ok("a")),
        ]
    }

    #[test]
    fn tracking_tokens() {
        for (what, rules, query, body, want) in token_rows() {
            let got = run_with(&query, body, &rules()).map(|c| c.token.into_owned());
            assert_eq!(got, want, "{what}: {query}");
        }
    }

    /// Every placeholder shape of `placeholders`, as a sender's template
    /// leaves it, in every place a token arrives: raw in the query (where the
    /// shape survives a URL), percent-encoded in the query, in a form body and
    /// in a JSON body.
    #[test]
    fn placeholders_are_refused_wherever_they_arrive() {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let refused: &[(&str, Reason)] = &[
            ("{clickid}", Reason::UnfilledMacro),
            ("{{ click_id }}", Reason::UnfilledMacro),
            ("${SUBID}", Reason::UnfilledMacro),
            ("${click_id}", Reason::UnfilledMacro),
            ("#{clickid}", Reason::UnfilledMacro),
            ("[subid]", Reason::UnfilledMacro),
            ("[object Object]", Reason::UnfilledMacro),
            ("%s%", Reason::UnfilledMacro),
            ("#s2#", Reason::UnfilledMacro),
            ("REPLACE", Reason::UnfilledMacro),
            ("OPTIONAL", Reason::UnfilledMacro),
            ("null", Reason::UnfilledMacro),
            ("undefined", Reason::UnfilledMacro),
            ("None", Reason::UnfilledMacro),
            ("none", Reason::UnfilledMacro),
            ("(null)", Reason::UnfilledMacro),
            ("nil", Reason::UnfilledMacro),
            ("NIL", Reason::UnfilledMacro),
            ("NaN", Reason::UnfilledMacro),
            (" ", Reason::BadTracking),
            ("   ", Reason::BadTracking),
        ];
        for (value, want) in refused {
            let encoded = encode_all(value);
            let json = serde_json::json!({ "tracking": value, "amount": "1.00" }).to_string();
            let mut ways = vec![
                (
                    "encoded query",
                    format!("tracking={encoded}&amount=1.00"),
                    Body::None,
                ),
                (
                    "form",
                    "api_key=k".into(),
                    Body::Form(leak(format!("tracking={encoded}&amount=1.00"))),
                ),
                ("json", "api_key=k".into(), Body::Json(leak(json))),
            ];
            // '#' starts a fragment and a space ends a request line: those
            // shapes reach a server only encoded.
            if !value.contains(['#', ' ', '%']) {
                ways.push((
                    "raw query",
                    format!("tracking={value}&amount=1.00"),
                    Body::None,
                ));
            }
            for (how, query, body) in ways {
                let got = run_with(&query, body, &reference()).map(|c| c.token.into_owned());
                assert_eq!(got, Err(*want), "{value:?} in the {how}");
            }
        }
        // The same shapes as parts of a real token are a token, kept byte for byte.
        for value in [
            "abc${x}", "${x}abc", "a{b}c", "abc#{x}", "x[1]", "None1", "nil-7", " abc ", "NaN0",
        ] {
            let got = run_with(
                &format!("tracking={}&amount=1.00", encode_all(value)),
                Body::None,
                &reference(),
            )
            .map(|c| c.token.into_owned());
            assert_eq!(got, Ok(value.to_owned()), "{value:?}");
        }
    }

    #[test]
    fn a_source_refuses_placeholders_of_its_own() {
        let mut rules = ParseRules::reference();
        rules.extra_placeholders = vec!["-".into(), "no_click".into()];
        assert_eq!(
            run("tracking=-&amount=1.00", &rules).map(|_| ()),
            Err(Reason::UnfilledMacro)
        );
        assert_eq!(
            run("tracking=NO_CLICK&amount=1.00", &rules).map(|_| ()),
            Err(Reason::UnfilledMacro)
        );
        assert!(run("tracking=-&amount=1.00", &reference()).is_ok());
    }

    #[test]
    fn a_source_may_accept_status_words_outside_its_vocabulary() {
        let mut rules = ParseRules::reference();
        rules.accept_unknown_status = true;
        let hold = run("tracking=t&amount=1.00&status=Hold", &rules).unwrap();
        assert_eq!(hold.status, Status::Other);
        assert_eq!(hold.status.as_str(), "other");
        assert_eq!(hold.status_raw.as_deref(), Some("Hold"));
        // Two different words are two conversions; a known word keeps its
        // normalized place in the dedup key.
        let review = run("tracking=t&amount=1.00&status=review", &rules).unwrap();
        assert_eq!(hold.dedup_status(), "Hold");
        assert_eq!(review.dedup_status(), "review");
        let approved = run("tracking=t&amount=1.00&status=APPROVED", &rules).unwrap();
        assert_eq!(approved.status, Status::Approved);
        assert_eq!(approved.dedup_status(), "approved");
        // The reference refuses them.
        assert_eq!(
            run("tracking=t&amount=1.00&status=Hold", &reference()).map(|_| ()),
            Err(Reason::BadStatus)
        );
    }

    #[test]
    fn cyrillic_token_is_not_its_latin_lookalike() {
        let c = run("tracking=p%D0%B0ypal77&amount=1.00", &reference()).expect("parses");
        assert_ne!(c.token, "paypal77");
        assert_eq!(c.token.as_bytes(), b"p\xd0\xb0ypal77");
    }

    /// (what, rules, raw amount value or None for absent, expected amount_text)
    type AmountRow = (
        &'static str,
        fn() -> ParseRules,
        Option<String>,
        Result<Option<&'static str>, Reason>,
    );

    #[rustfmt::skip]
    fn amount_rows() -> Vec<AmountRow> {
        let r = reference as fn() -> ParseRules;
        let a = |s: &str| Some(s.to_owned());
        let bad = Err(Reason::BadAmount);
        let out = Err(Reason::AmountOutOfRange);
        vec![
            // What the parsing rules accept (docs/http-api.md).
            ("12.34", r, a("12.34"), Ok(Some("12.34"))),
            ("0.50", r, a("0.50"), Ok(Some("0.50"))),
            ("0.00", r, a("0.00"), Ok(Some("0.00"))),
            ("12.30 keeps its zero", r, a("12.30"), Ok(Some("12.30"))),
            ("10.00", r, a("10.00"), Ok(Some("10.00"))),
            ("the maximum", r, a("1000000.00"), Ok(Some("1000000.00"))),
            // A source that takes integers and one decimal: one canonical text.
            ("loose 100", loose, a("100"), Ok(Some("100.00"))),
            ("loose 5", loose, a("5"), Ok(Some("5.00"))),
            ("loose 0", loose, a("0"), Ok(Some("0.00"))),
            ("loose 2.5", loose, a("2.5"), Ok(Some("2.50"))),
            ("loose 21.0", loose, a("21.0"), Ok(Some("21.00"))),
            ("loose 12.34", loose, a("12.34"), Ok(Some("12.34"))),
            ("loose 12.3456", loose, a("12.3456"), Ok(Some("12.3456"))),
            ("loose 12.34567", loose, a("12.34567"), bad),
            ("loose 012", loose, a("012"), bad),
            ("loose 00", loose, a("00"), bad),
            ("loose 100.", loose, a("100."), bad),
            ("loose .5", loose, a(".5"), bad),
            ("loose 12,34", loose, a("12,34"), bad),
            ("loose 1,234", loose, a("1,234"), bad),
            ("loose 1e3", loose, a("1e3"), bad),
            ("loose +5", loose, a("+5"), bad),
            ("loose space 5", loose, a(" 5"), bad),
            ("loose 5USD", loose, a("5USD"), bad),
            ("loose -5 without negatives", loose, a("-5"), bad),
            ("loose -5", loose_negative, a("-5"), Ok(Some("-5.00"))),
            ("loose -2.5", loose_negative, a("-2.5"), Ok(Some("-2.50"))),
            ("loose too large", loose, a("1000001"), out),
            // What they refuse.
            ("000", r, a("000"), bad),
            ("100 in the reference format", r, a("100"), bad),
            ("1.5 in the reference format", r, a("1.5"), bad),
            ("012.00 in the reference format", r, a("012.00"), bad),
            ("12", r, a("12"), bad),
            ("0,00", r, a("0,00"), bad),
            ("12,34", r, a("12,34"), bad),
            ("1,234.56", r, a("1,234.56"), bad),
            (".5", r, a(".5"), bad),
            ("1.", r, a("1."), bad),
            ("1e3", r, a("1e3"), bad),
            ("+5.00 (literal plus)", r, a("+5.00"), bad),
            ("+5.00 (encoded plus)", r, a("%2B5.00"), bad),
            (" 5.00", r, a("%205.00"), bad),
            ("5.00USD", r, a("5.00USD"), bad),
            ("$5.00", r, a("%245.00"), bad),
            ("012.00", r, a("012.00"), bad),
            ("12.345", r, a("12.345"), bad),
            // Conventions #6.
            ("10", r, a("10"), bad),
            ("1.234,56", r, a("1.234,56"), bad),
            ("-10.00 with negatives off", r, a("-10.00"), bad),
            ("$5", r, a("$5"), bad),
            ("5USD", r, a("5USD"), bad),
            ("2995 as decimal", r, a("2995"), bad),
            ("1.234567 with 2 decimals", r, a("1.234567"), bad),
            // More shapes.
            ("5.00 trailing space", r, a("5.00%20"), bad),
            ("1.2", r, a("1.2"), bad),
            ("1..00", r, a("1..00"), bad),
            ("1.00.00", r, a("1.00.00"), bad),
            ("-", r, a("-"), bad),
            ("--1.00", r, a("--1.00"), bad),
            ("-.50", r, a("-.50"), bad),
            ("00.50", r, a("00.50"), bad),
            ("1.0a", r, a("1.0a"), bad),
            ("arabic-indic digits", r, a("%D9%A1%D9%A2.%D9%A3%D9%A4"), bad),
            ("fullwidth digit", r, a("12.3%EF%BC%94"), bad),
            ("NaN", r, a("NaN"), Err(Reason::UnfilledAmount)),
            ("macro", r, a("{payout}"), Err(Reason::UnfilledAmount)),
            ("its own name", r, a("AMOUNT"), Err(Reason::UnfilledAmount)),
            // Range.
            ("just above the maximum", r, a("1000000.01"), out),
            ("20 integer digits", r, a("99999999999999999999.00"), out),
            ("21 integer digits", r, a("100000000000000000000.00"), out),
            ("5000 integer digits", r, Some(format!("{}.00", "9".repeat(5000))), out),
            // Missing.
            ("absent", r, None, Err(Reason::MissingAmount)),
            ("empty", r, a(""), Err(Reason::MissingAmount)),
            ("absent, optional", amount_optional, None, Ok(None)),
            ("empty, optional", amount_optional, a(""), Ok(None)),
            ("present, optional", amount_optional, a("3.50"), Ok(Some("3.50"))),
            ("bad, optional", amount_optional, a("3.5"), bad),
            // Up to six decimals.
            ("1.234567 with 6", six_decimals, a("1.234567"), Ok(Some("1.234567"))),
            ("1.23 with 6", six_decimals, a("1.23"), Ok(Some("1.23"))),
            ("1.2 with 6", six_decimals, a("1.2"), bad),
            ("1.2345678 with 6", six_decimals, a("1.2345678"), bad),
            // Negatives (chargebacks).
            ("-10.00", negatives, a("-10.00"), Ok(Some("-10.00"))),
            ("-12.34", negatives, a("-12.34"), Ok(Some("-12.34"))),
            ("-0.00", negatives, a("-0.00"), Ok(Some("-0.00"))),
            ("-1000000.00", negatives, a("-1000000.00"), Ok(Some("-1000000.00"))),
            ("-1000000.01", negatives, a("-1000000.01"), out),
            ("-012.00", negatives, a("-012.00"), bad),
            ("--1.00 with negatives", negatives, a("--1.00"), bad),
            ("-5 with negatives", negatives, a("-5"), bad),
            // Integer cents (NATS).
            ("2995 cents", cents, a("2995"), Ok(Some("29.95"))),
            ("5 cents", cents, a("5"), Ok(Some("0.05"))),
            ("0 cents", cents, a("0"), Ok(Some("0.00"))),
            ("100 cents", cents, a("100"), Ok(Some("1.00"))),
            ("max in cents", cents, a("100000000"), Ok(Some("1000000.00"))),
            ("above max in cents", cents, a("100000001"), out),
            ("21 digits of cents", cents, a("123456789012345678901"), out),
            ("29.95 as cents", cents, a("29.95"), bad),
            ("02995 cents", cents, a("02995"), bad),
            ("-2995 cents, negatives off", cents, a("-2995"), bad),
            ("-2995 cents", cents_negative, a("-2995"), Ok(Some("-29.95"))),
            ("1e3 cents", cents, a("1e3"), bad),
            ("bracket key, cents", nats, a("2995"), Ok(Some("29.95"))),
            // Conventions #1: `&currency=` mangled into `¤cy=` by an HTML entity.
            ("10¤cy=EUR", voluum, a("10%C2%A4cy=EUR"), bad),
            ("10.00¤cy=EUR", voluum, a("10.00%C2%A4cy=EUR"), bad),
            ("payout 10.00", voluum, a("10.00"), Ok(Some("10.00"))),
        ]
    }

    #[test]
    fn amounts() {
        for (what, rules, raw, want) in amount_rows() {
            let rules = rules();
            let tracking = &rules.names[Role::Tracking][0];
            let query = match &raw {
                Some(raw) => format!("{tracking}=t&{}={raw}", rules.names[Role::Amount][0]),
                None => format!("{tracking}=t"),
            };
            let got = run(&query, &rules);
            match (&want, &got) {
                (Ok(text), Ok(c)) => {
                    assert_eq!(c.amount_text.as_deref(), *text, "{what}");
                    let exact = text.map(|t| Decimal::from_str_exact(t).expect("test text"));
                    assert_eq!(c.amount, exact, "{what}");
                }
                _ => assert_eq!(
                    got.map(|c| c.amount_text.map(Cow::into_owned)),
                    want.map(|w| w.map(str::to_owned)),
                    "{what}"
                ),
            }
        }
    }

    #[test]
    fn amount_is_exact_not_float() {
        let c = run("tracking=t&amount=0.10", &reference()).expect("parses");
        let sum = (0..3).fold(Decimal::ZERO, |acc, _| acc + c.amount.expect("amount"));
        assert_eq!(sum.to_string(), "0.30");
        let c = run("tracking=t&amount=-0.00", &negatives()).expect("parses");
        assert_eq!(c.amount, Some(Decimal::ZERO));
    }

    /// (what, rules, query (after tracking and amount), body, expected)
    type FieldRow = (
        &'static str,
        fn() -> ParseRules,
        String,
        Body,
        Result<Option<String>, Reason>,
    );

    /// A named optional field of a conversion, rendered as text for table comparison.
    fn field(c: &Conversion, name: &str) -> Option<String> {
        match name {
            "currency" => c.currency.as_deref().map(str::to_owned),
            "status" => Some(format!(
                "{}/{}",
                c.status.as_str(),
                c.status_raw.as_deref().unwrap_or("-")
            )),
            "txid" => c.txid.as_deref().map(str::to_owned),
            "goal" => c.goal.as_deref().map(str::to_owned),
            "click_time" => c.click_time.map(|t| t.format(&Rfc3339).expect("formats")),
            "campaign_id" => c.campaign_id.as_deref().map(str::to_owned),
            "adset_id" => c.adset_id.as_deref().map(str::to_owned),
            "ad_id" => c.ad_id.as_deref().map(str::to_owned),
            "placement" => c.placement.as_deref().map(str::to_owned),
            other => panic!("no field {other}"),
        }
    }

    #[rustfmt::skip]
    fn field_rows() -> Vec<(&'static str, Vec<FieldRow>)> {
        let r = reference as fn() -> ParseRules;
        let n = Body::None;
        let q = |s: &str| s.to_owned();
        let some = |s: &str| Ok(Some(s.to_owned()));
        vec![
            ("currency", vec![
                // Conventions #7.
                ("EUR", r, q("currency=EUR"), n, some("EUR")),
                ("eur", r, q("currency=eur"), n, some("EUR")),
                ("Eur", r, q("currency=Eur"), n, some("EUR")),
                ("encoded", r, q("currency=%45ur"), n, some("EUR")),
                ("jpy", r, q("currency=jpy"), n, some("JPY")),
                ("absent", r, q(""), n, Ok(None)),
                ("empty", r, q("currency="), n, Ok(None)),
                ("EURO", r, q("currency=EURO"), n, Err(Reason::BadCurrency)),
                ("EU", r, q("currency=EU"), n, Err(Reason::BadCurrency)),
                ("E1R", r, q("currency=E1R"), n, Err(Reason::BadCurrency)),
                (" EUR", r, q("currency=%20EUR"), n, Err(Reason::BadCurrency)),
                ("euro sign", r, q("currency=%E2%82%AC"), n, Err(Reason::BadCurrency)),
                ("three non-ascii letters", r, q("currency=%C3%A9%C3%A9%C3%A9"), n, Err(Reason::BadCurrency)),
                ("unknown code", r, q("currency=XYZ"), n, Err(Reason::BadCurrency)),
                ("withdrawn code", r, q("currency=HRK"), n, Err(Reason::BadCurrency)),
                ("testing code", r, q("currency=XTS"), n, Err(Reason::BadCurrency)),
                ("fixed, absent", fixed_eur, q(""), n, some("EUR")),
                ("fixed, same", fixed_eur, q("currency=eur"), n, some("EUR")),
                ("fixed, other", fixed_eur, q("currency=USD"), n, Err(Reason::CurrencyMismatch)),
                ("fixed, invalid", fixed_eur, q("currency=XYZ"), n, Err(Reason::BadCurrency)),
                ("macro", r, q("currency=%7Bcurrency%7D"), n, Err(Reason::UnfilledCurrency)),
            ]),
            ("status", vec![
                ("absent", r, q(""), n, some("approved/-")),
                ("empty", r, q("status="), n, some("approved/-")),
                ("approved", r, q("status=approved"), n, some("approved/approved")),
                ("PENDING", r, q("status=PENDING"), n, some("pending/PENDING")),
                ("Declined", r, q("status=Declined"), n, some("declined/Declined")),
                ("rejected unknown", r, q("status=rejected"), n, Err(Reason::BadStatus)),
                ("Hold unknown", r, q("status=Hold"), n, Err(Reason::BadStatus)),
                ("padded", r, q("status=%20approved"), n, Err(Reason::BadStatus)),
                // Conventions #8: Affise 1/2/3/5.
                ("affise 1", affise, q("status=1"), n, some("approved/1")),
                ("affise 2", affise, q("status=2"), n, some("pending/2")),
                ("affise 3", affise, q("status=3"), n, some("declined/3")),
                ("affise 5 hold", affise, q("status=5"), n, some("pending/5")),
                ("affise 4", affise, q("status=4"), n, Err(Reason::BadStatus)),
                ("affise word", affise, q("status=approved"), n, Err(Reason::BadStatus)),
                // Post Affiliate Pro A/P/D, case-sensitive.
                ("pap A", post_affiliate_pro, q("status=A"), n, some("approved/A")),
                ("pap P", post_affiliate_pro, q("status=P"), n, some("pending/P")),
                ("pap D", post_affiliate_pro, q("status=D"), n, some("declined/D")),
                ("pap a", post_affiliate_pro, q("status=a"), n, Err(Reason::BadStatus)),
                // Keitaro lead/sale/rejected/rebill, any case.
                ("keitaro lead", keitaro, q("status=lead"), n, some("pending/lead")),
                ("keitaro Sale", keitaro, q("status=Sale"), n, some("approved/Sale")),
                ("keitaro rejected", keitaro, q("status=rejected"), n, some("declined/rejected")),
                ("keitaro rebill", keitaro, q("status=rebill"), n, some("approved/rebill")),
                ("keitaro Hold", keitaro, q("status=Hold"), n, Err(Reason::BadStatus)),
                ("macro", r, q("status=%7Bstatus%7D"), n, Err(Reason::UnfilledStatus)),
                ("Voluum's OPTIONAL", r, q("status=OPTIONAL"), n, Err(Reason::UnfilledStatus)),
                // A reject in another parameter named like a status.
                ("cnv_status reject", r, q("cnv_status=reject"), n, some("declined/reject")),
                ("approved and reject", r, q("status=approved&cnv_status=reject"), n, Err(Reason::ConflictingStatus)),
            ]),
            ("txid", vec![
                ("absent", r, q(""), n, Ok(None)),
                ("empty", r, q("txid="), n, Ok(None)),
                ("one byte", r, q("txid=1"), n, some("1")),
                ("256 bytes", r, format!("txid={}", "x".repeat(256)), n, Ok(Some("x".repeat(256)))),
                ("257 bytes", r, format!("txid={}", "x".repeat(257)), n, Err(Reason::ParamTooLong)),
                ("spaces kept", r, q("txid=%20a%20"), n, some(" a ")),
                ("macro", r, q("txid=%7Btransactionid%7D"), n, Err(Reason::UnfilledTxid)),
                ("part of a value", r, q("txid=A-%7Bx%7D"), n, some("A-{x}")),
            ]),
            ("goal", vec![
                ("absent", r, q(""), n, Ok(None)),
                ("goal", r, q("goal=deposit"), n, some("deposit")),
                ("64 bytes", r, format!("goal={}", "g".repeat(64)), n, Ok(Some("g".repeat(64)))),
                ("65 bytes", r, format!("goal={}", "g".repeat(65)), n, Err(Reason::ParamTooLong)),
                ("macro", r, q("goal=%5Bgoal%5D"), n, Err(Reason::UnfilledGoal)),
            ]),
            ("click_time", vec![
                ("absent", r, q(""), n, Ok(None)),
                ("empty", r, q("click_time="), n, Ok(None)),
                ("unix seconds", r, q("click_time=1699999999"), n, some("2023-11-14T22:13:19Z")),
                ("epoch", r, q("click_time=0"), n, some("1970-01-01T00:00:00Z")),
                ("last plausible second", r, q("click_time=253402300799"), n, some("9999-12-31T23:59:59Z")),
                // What cannot be read is kept as sent, never refused (below).
                ("one past", r, q("click_time=253402300800"), n, Ok(None)),
                // Branch's milliseconds, recognised by their 13 digits.
                ("milliseconds", r, q("click_time=1699999999999"), n, some("2023-11-14T22:13:19.999Z")),
                ("14 digits", r, q("click_time=16999999999990"), n, Ok(None)),
                ("huge", r, q("click_time=99999999999999999999999999"), n, Ok(None)),
                ("negative", r, q("click_time=-1"), n, Ok(None)),
                ("fraction", r, q("click_time=1699999999.5"), n, Ok(None)),
                ("rfc3339 Z", r, q("click_time=2024-01-02T03:04:05Z"), n, some("2024-01-02T03:04:05Z")),
                // A literal '+' in a query is the offset sign, so it survives.
                ("rfc3339 offset", r, q("click_time=2024-01-02T03:04:05.123+02:00"), n, some("2024-01-02T01:04:05.123Z")),
                ("rfc3339 encoded offset", r, q("click_time=2024-01-02T03:04:05%2B02:00"), n, some("2024-01-02T01:04:05Z")),
                ("form turns '+' into a space", r, q(""), Body::Form("click_time=2024-01-02T03:04:05+02:00"), Ok(None)),
                // Without a zone, only a source that names its zone reads it.
                ("no offset", r, q("click_time=2024-01-02T03:04:05"), n, Ok(None)),
                ("cake's #sourcetime#, no zone", r, q("click_time=2013-11-12T13:04:27.5670000"), n, Ok(None)),
                ("cake's #sourcetime#, zone +02:00", zoned, q("click_time=2013-11-12T13:04:27.5670000"), n, some("2013-11-12T11:04:27.567Z")),
                ("affise's {date}, zone +02:00", zoned, q("click_time=2021-09-17%2001:29:11"), n, some("2021-09-16T23:29:11Z")),
                ("appsflyer's, zone +02:00", zoned, q("click_time=2021-09-17%2001:29:11.653"), n, some("2021-09-16T23:29:11.653Z")),
                ("an offset wins over the zone", zoned, q("click_time=2024-01-02T03:04:05Z"), n, some("2024-01-02T03:04:05Z")),
                ("date only", r, q("click_time=2024-01-02"), n, Ok(None)),
                ("date only, zoned", zoned, q("click_time=2024-01-02"), n, Ok(None)),
                ("placeholder", r, q("click_time=%7Bclick_time%7D"), n, Ok(None)),
                // RFC 3339 §5.6 lets a space stand for the 'T'.
                ("space separator", r, q("click_time=2024-01-02%2003:04:05Z"), n, some("2024-01-02T03:04:05Z")),
                ("month 13", r, q("click_time=2024-13-02T03:04:05Z"), n, Ok(None)),
                ("words", r, q("click_time=yesterday"), n, Ok(None)),
                ("json number", r, q(""), Body::Json(r#"{"click_time":1699999999}"#), some("2023-11-14T22:13:19Z")),
            ]),
            ("campaign_id", vec![
                ("not configured: passed through", r, q("campaign_id=c1"), n, Ok(None)),
                ("configured", template_ids, q("campaign_id=c1"), n, some("c1")),
                ("second alias", template_ids, q("cmp=c2"), n, some("c2")),
                ("both aliases", template_ids, q("campaign_id=c1&cmp=c2"), n, Err(Reason::DuplicateParam)),
                ("1024 bytes", template_ids, format!("campaign_id={}", "c".repeat(1024)), n, Ok(Some("c".repeat(1024)))),
                ("1025 bytes", template_ids, format!("campaign_id={}", "c".repeat(1025)), n, Err(Reason::ParamTooLong)),
                ("macro", template_ids, q("cmp=%7Bcampaign_id%7D"), n, Err(Reason::UnfilledCampaignId)),
            ]),
            ("adset_id", vec![
                ("configured", template_ids, q("adset_id=s1"), n, some("s1")),
                ("1025 bytes", template_ids, format!("adset_id={}", "s".repeat(1025)), n, Err(Reason::ParamTooLong)),
                ("its own name", template_ids, q("adset_id=ADSET_ID"), n, Err(Reason::UnfilledAdsetId)),
            ]),
            ("ad_id", vec![
                ("configured", template_ids, q("ad_id=a1"), n, some("a1")),
                ("1025 bytes", template_ids, format!("ad_id={}", "a".repeat(1025)), n, Err(Reason::ParamTooLong)),
                ("macro", template_ids, q("ad_id=%24%7Bad_id%7D"), n, Err(Reason::UnfilledAdId)),
            ]),
            ("placement", vec![
                ("configured", template_ids, q("placement=feed"), n, some("feed")),
                ("absent", template_ids, q(""), n, Ok(None)),
                ("1025 bytes", template_ids, format!("placement={}", "p".repeat(1025)), n, Err(Reason::ParamTooLong)),
                ("undefined", template_ids, q("placement=undefined"), n, Err(Reason::UnfilledPlacement)),
            ]),
        ]
    }

    #[test]
    fn optional_fields() {
        for (name, rows) in field_rows() {
            for (what, rules, extra, body, want) in rows {
                let query = format!("tracking=t&amount=1.00&{extra}");
                let got = run_with(&query, body, &rules()).map(|c| field(&c, name));
                assert_eq!(got, want, "{name}: {what}");
            }
        }
    }

    /// (what, rules, query, body, expected pass-through params)
    type ParamsRow = (
        &'static str,
        fn() -> ParseRules,
        String,
        Body,
        Result<Vec<(String, String)>, Reason>,
    );

    #[rustfmt::skip]
    fn params_rows() -> Vec<ParamsRow> {
        let r = reference as fn() -> ParseRules;
        let n = Body::None;
        let base = "api_key=k&tracking=t&amount=1.00";
        let q = |extra: &str| format!("{base}&{extra}");
        let kv = |pairs: &[(&str, &str)]| -> Result<Vec<(String, String)>, Reason> {
            Ok(pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect())
        };
        let subs = |count: usize| -> String {
            (1..=count)
                .map(|i| format!("sub{i}=v{i}"))
                .collect::<Vec<_>>()
                .join("&")
        };
        vec![
            ("none", r, base.to_owned(), n, kv(&[])),
            ("in arrival order", r, q("sub2=b&sub1=a"), n, kv(&[("sub2", "b"), ("sub1", "a")])),
            ("interleaved with roles", r, format!("sub1=a&{base}&sub2=b"), n, kv(&[("sub1", "a"), ("sub2", "b")])),
            ("empty value kept", r, q("sub1="), n, kv(&[("sub1", "")])),
            // No role parameter, api key included, ever rides along.
            ("roles stay out", r, q("txid=x&goal=g&status=pending&currency=usd&click_time=0&s=1"), n, kv(&[("s", "1")])),
            ("aliases stay out", aliases, "secure=k2&click_id=c&amount=1.00&s=1".into(), n, kv(&[("s", "1")])),
            // Conventions #10.
            ("cache-buster dropped", r, q("_=1699999999999&s=1"), n, kv(&[("s", "1")])),
            ("bracket key", r, q("transaction[amount]=2995"), n, kv(&[("transaction[amount]", "2995")])),
            ("bracket key encoded", r, q("transaction%5Bamount%5D=2995"), n, kv(&[("transaction[amount]", "2995")])),
            ("bracket key in a form", r, base.into(), Body::Form("transaction%5Bamount%5D=2995"), kv(&[("transaction[amount]", "2995")])),
            ("json values", r, base.into(), Body::Json(r#"{"sub1":"a","sub2":5,"sub3":null}"#), kv(&[("sub1", "a"), ("sub2", "5")])),
            ("32 extras", r, q(&subs(32)), n, Ok((1..=32).map(|i| (format!("sub{i}"), format!("v{i}"))).collect())),
            ("33 extras", r, q(&subs(33)), n, Err(Reason::TooManyParams)),
            ("32 extras and a cache-buster", r, q(&format!("{}&_=1", subs(32))), n, Ok((1..=32).map(|i| (format!("sub{i}"), format!("v{i}"))).collect())),
            ("key of 64 bytes", r, q(&format!("{}=v", "k".repeat(64))), n, kv(&[(&"k".repeat(64), "v")])),
            ("key of 65 bytes", r, q(&format!("{}=v", "k".repeat(65))), n, Err(Reason::ParamTooLong)),
            ("value of 1024 bytes", r, q(&format!("s={}", "v".repeat(1024))), n, kv(&[("s", &"v".repeat(1024))])),
            ("value of 1025 bytes", r, q(&format!("s={}", "v".repeat(1025))), n, Err(Reason::ParamTooLong)),
        ]
    }

    #[test]
    fn pass_through_params() {
        for (what, rules, query, body, want) in params_rows() {
            let got = run_with(&query, body, &rules()).map(|c| {
                c.params
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn nats_cents_under_a_bracket_key() {
        let body = Body::Form("tracking=abc&transaction%5Bamount%5D=2995&transaction%5Bid%5D=9");
        let c = run_with("api_key=k", body, &nats()).expect("parses");
        assert_eq!(c.amount_text.as_deref(), Some("29.95"));
        assert_eq!(c.amount, Some(Decimal::new(2995, 2)));
        assert_eq!(c.params, vec![("transaction[id]".into(), "9".into())]);
    }

    /// (what, rules, query, body, expected (token, amount_text))
    type BodyRow = (
        &'static str,
        &'static str,
        Body,
        Result<(&'static str, &'static str), Reason>,
    );

    #[rustfmt::skip]
    fn body_rows() -> Vec<BodyRow> {
        use Body::{Form, Json};
        vec![
            ("form", "api_key=k", Form("tracking=abc&amount=12.30"), Ok(("abc", "12.30"))),
            ("json strings", "api_key=k", Json(r#"{"tracking":"abc","amount":"12.30"}"#), Ok(("abc", "12.30"))),
            ("json number keeps its digits", "api_key=k", Json(r#"{"tracking":"abc","amount":12.30}"#), Ok(("abc", "12.30"))),
            ("json string not decoded", "", Json(r#"{"tracking":"abc%252F+x","amount":1.00}"#), Ok(("abc%252F+x", "1.00"))),
            ("json 12.3", "", Json(r#"{"tracking":"abc","amount":12.3}"#), Err(Reason::BadAmount)),
            ("json 1e3", "", Json(r#"{"tracking":"abc","amount":1e3}"#), Err(Reason::BadAmount)),
            ("json integer", "", Json(r#"{"tracking":"abc","amount":12}"#), Err(Reason::BadAmount)),
            ("json null amount", "", Json(r#"{"tracking":"abc","amount":null}"#), Err(Reason::MissingAmount)),
            ("json null tracking", "", Json(r#"{"tracking":null,"amount":"1.00"}"#), Err(Reason::MissingTracking)),
            ("json numeric tracking", "", Json(r#"{"tracking":123456,"amount":"1.00"}"#), Ok(("123456", "1.00"))),
            ("json bool", "", Json(r#"{"tracking":"abc","amount":"1.00","test":true}"#), Err(Reason::BadBody)),
            ("json nested", "", Json(r#"{"tracking":"abc","amount":"1.00","sub":{"a":1}}"#), Err(Reason::BadBody)),
            ("json array", "", Json(r#"{"tracking":["abc"],"amount":"1.00"}"#), Err(Reason::BadBody)),
            ("json top-level array", "", Json(r#"[{"tracking":"abc","amount":"1.00"}]"#), Err(Reason::BadBody)),
            ("json trailing garbage", "", Json(r#"{"tracking":"abc","amount":"1.00"}x"#), Err(Reason::BadBody)),
            ("json duplicate key", "", Json(r#"{"tracking":"a","tracking":"b","amount":"1.00"}"#), Err(Reason::DuplicateParam)),
            ("query and json share a key", "tracking=a", Json(r#"{"tracking":"a","amount":"1.00"}"#), Err(Reason::DuplicateParam)),
            ("query and form share a key", "amount=1.00", Form("tracking=a&amount=1.00"), Err(Reason::DuplicateParam)),
            ("query and body split", "tracking=a", Form("amount=1.00"), Ok(("a", "1.00"))),
        ]
    }

    #[test]
    fn bodies() {
        for (what, query, body, want) in body_rows() {
            let got = run_with(query, body, &reference());
            let got = got.map(|c| {
                (
                    c.token.into_owned(),
                    c.amount_text.unwrap_or_default().into_owned(),
                )
            });
            let want = want.map(|(t, a)| (t.to_owned(), a.to_owned()));
            assert_eq!(got, want, "{what}");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn order_of_checks() {
        let long_goal = format!("goal={}", "g".repeat(65));
        let subs: String = (1..=33).map(|i| format!("&s{i}=v")).collect();
        let rows: Vec<(&str, String, Reason)> = vec![
            ("tracking before amount", "tracking=&amount=x".into(), Reason::MissingTracking),
            ("tracking before everything", "tracking={x}&amount=x&currency=x&status=x".into(), Reason::UnfilledMacro),
            ("amount before currency", "tracking=t&amount=1&currency=XYZ".into(), Reason::BadAmount),
            ("missing amount before currency", "tracking=t&currency=XYZ".into(), Reason::MissingAmount),
            ("currency before status", "tracking=t&amount=1.00&currency=XYZ&status=x".into(), Reason::BadCurrency),
            ("status before txid", format!("tracking=t&amount=1.00&status=x&txid={}", "x".repeat(300)), Reason::BadStatus),
            ("goal before click_time", format!("tracking=t&amount=1.00&{long_goal}&click_time=x"), Reason::ParamTooLong),
            ("an unreadable click_time refuses nothing", format!("tracking=t&amount=1.00&click_time=x{subs}"), Reason::TooManyParams),
            ("params last", format!("tracking=t&amount=1.00{subs}"), Reason::TooManyParams),
            ("decoding before everything", "tracking=&amount=%zz".into(), Reason::BadEncoding),
            ("duplicates before everything", "tracking=&tracking=".into(), Reason::DuplicateParam),
        ];
        for (what, query, want) in rows {
            assert_eq!(run(&query, &reference()), Err(want), "{what}");
        }
    }

    #[test]
    fn conversion_in_full() {
        let query = "api_key=secret&tracking=AbC+dE/f==&amount=12.30&currency=eur&status=Pending\
            &txid=tx-1&goal=deposit&click_time=1699999999&campaign_id=c&adset_id=s&ad_id=a\
            &placement=feed&sub1=x&_=1699999999999&sub2=y";
        let got = run(query, &template_ids()).expect("parses");
        let want = Conversion {
            token: "AbC+dE/f==".into(),
            amount: Some(Decimal::new(1230, 2)),
            amount_text: Some("12.30".into()),
            currency: Some("EUR".into()),
            txid: Some("tx-1".into()),
            goal: Some("deposit".into()),
            status: Status::Pending,
            status_raw: Some("Pending".into()),
            click_time: Some(datetime!(2023-11-14 22:13:19 UTC)),
            campaign_id: Some("c".into()),
            adset_id: Some("s".into()),
            ad_id: Some("a".into()),
            placement: Some("feed".into()),
            params: vec![("sub1".into(), "x".into()), ("sub2".into(), "y".into())],
            unread: Unread::default(),
        };
        assert_eq!(got, want);

        let minimal = run("tracking=t&amount=0.00", &reference()).expect("parses");
        assert_eq!(minimal.status, Status::Approved);
        assert_eq!(
            (minimal.status_raw, minimal.currency, minimal.txid),
            (None, None, None)
        );
        assert_eq!(
            (minimal.goal, minimal.click_time, minimal.campaign_id),
            (None, None, None)
        );
        assert!(minimal.params.is_empty());
    }

    type KeyRow = (fn() -> ParseRules, &'static str, Option<&'static str>);

    #[rustfmt::skip]
    #[test]
    fn api_key_lookup() {
        let rows: &[KeyRow] = &[
            (reference, "api_key=K1&tracking=t", Some("K1")),
            (reference, "api_key=&tracking=t", None),
            (reference, "tracking=t", None),
            (reference, "API_KEY=K1", None),
            (aliases, "secure=K2", Some("K2")),
            (aliases, "api_key=&secure=K2", Some("K2")),
            (aliases, "secure=K2&api_key=K1", Some("K1")),
        ];
        for (rules, query, want) in rows {
            let rules = rules();
            let mut params = Params::new();
            params.add_query(query.as_bytes(), false).expect("decodes");
            assert_eq!(api_key(&params, &rules), *want, "{query}");
            if let Ok(c) = parse(&params, &rules) {
                assert!(
                    c.params
                        .iter()
                        .all(|(k, _)| k != "api_key" && k != "secure"),
                    "{query}"
                );
            }
        }
    }

    #[test]
    fn currency_list_is_sorted_and_well_formed() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
        assert!(ISO_4217
            .iter()
            .all(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())));
        for code in [
            "USD", "EUR", "GBP", "JPY", "BRL", "RUB", "INR", "XCG", "ZWG", "VES", "SLE",
        ] {
            assert!(ISO_4217.binary_search(&code).is_ok(), "{code}");
        }
    }

    #[test]
    fn every_parse_reason_has_a_row() {
        let mut seen: HashSet<Reason> = HashSet::new();
        seen.extend(token_rows().into_iter().filter_map(|row| row.4.err()));
        seen.extend(amount_rows().into_iter().filter_map(|row| row.3.err()));
        seen.extend(
            field_rows()
                .into_iter()
                .flat_map(|(_, rows)| rows)
                .filter_map(|row| row.4.err()),
        );
        seen.extend(params_rows().into_iter().filter_map(|row| row.4.err()));
        seen.extend(body_rows().into_iter().filter_map(|row| row.3.err()));
        for reason in Reason::ALL {
            assert!(seen.contains(&reason), "no table row expects {reason}");
        }
    }

    /// Every role but the click time (never worth a conversion) refuses a
    /// placeholder with a reason that names it: `cnv_status={status}` is
    /// never filed as the status "{status}".
    #[test]
    fn a_placeholder_in_any_role_is_refused_with_that_role() {
        let rules = template_ids();
        let base = "tracking=t&amount=1.00";
        for (param, value, want) in [
            ("amount", "AMOUNT", Reason::UnfilledAmount),
            ("amount", "%5B%5Bpayout%5D%5D", Reason::UnfilledAmount),
            ("amount", "%23price%23", Reason::UnfilledAmount),
            ("currency", "%7Bcurrency%7D", Reason::UnfilledCurrency),
            ("status", "%7Bstatus%7D", Reason::UnfilledStatus),
            ("status", "OPTIONAL", Reason::UnfilledStatus),
            ("status", "REPLACE", Reason::UnfilledStatus),
            ("txid", "%7Btransactionid%7D", Reason::UnfilledTxid),
            ("goal", "%5Bgoal%5D", Reason::UnfilledGoal),
            ("cmp", "%7Bcampaign_id%7D", Reason::UnfilledCampaignId),
            ("adset_id", "ADSET_ID", Reason::UnfilledAdsetId),
            ("ad_id", "%24%7Bad%7D", Reason::UnfilledAdId),
            ("placement", "undefined", Reason::UnfilledPlacement),
        ] {
            let query = if param == "amount" {
                format!("tracking=t&amount={value}")
            } else {
                format!("{base}&{param}={value}")
            };
            assert_eq!(run(&query, &rules).err(), Some(want), "{query}");
        }
        // The token's own name is a placeholder for it too (Everflow's template).
        let mut everflow = reference();
        everflow.names[Role::Tracking] = names(&["transaction_id"]);
        assert_eq!(
            run("transaction_id=TRANSACTION_ID&amount=1.00", &everflow).err(),
            Some(Reason::UnfilledMacro)
        );
        // An optional amount left as Voluum's OPTIONAL is refused, not dropped.
        let mut optional = voluum();
        optional.amount.required = false;
        assert_eq!(
            run("cid=c&payout=OPTIONAL", &optional).err(),
            Some(Reason::UnfilledAmount)
        );
        // Parts of a value are still a value.
        let ok = run(
            &format!("{base}&txid=ORDER-%7Bx%7D&status=approved"),
            &rules,
        )
        .unwrap();
        assert_eq!(ok.txid.as_deref(), Some("ORDER-{x}"));
    }

    /// A sender's reject in a parameter named like a status, which the
    /// source does not read as its status, is never an approved conversion.
    #[test]
    fn a_declining_word_in_a_status_like_parameter_is_never_approved() {
        let mut rules = voluum();
        rules.names[Role::Status].clear();
        for value in [
            "reject",
            "Rejected",
            "DECLINED",
            "chargeback",
            "charge-back",
            "refund",
            "Refunded",
            "REVERSED",
            "void",
            "cancelled",
        ] {
            for key in ["status", "Status", "cnv_status", "conversion_status"] {
                let c = run(&format!("cid=c&payout=1.00&{key}={value}"), &rules).unwrap();
                assert_eq!(c.status, Status::Declined, "{key}={value}");
                assert_eq!(c.status_raw.as_deref(), Some(value), "{key}={value}");
                assert_eq!(c.params.len(), 1, "the word still passes through");
            }
        }
        for value in [
            "approved",
            "lead",
            "1",
            "sale",
            "rejection_reason_none",
            "unrejected",
        ] {
            let c = run(&format!("cid=c&payout=1.00&status={value}"), &rules).unwrap();
            assert_eq!(c.status, Status::Approved, "{value}");
            assert_eq!(c.status_raw, None, "{value}");
        }
        // Not a status name: a sub id that happens to hold a word.
        let c = run("cid=c&payout=1.00&sub1=reject&statusx=reject", &rules).unwrap();
        assert_eq!(c.status, Status::Approved);
        // The source's own status says approved while another says reject.
        let mut binom = reference();
        binom.names[Role::Status] = names(&["cnv_status"]);
        assert_eq!(
            run(
                "tracking=t&amount=1.00&cnv_status=approved&status=reject",
                &binom
            )
            .err(),
            Some(Reason::ConflictingStatus)
        );
        // Its own status word already says declined or pending: kept.
        let c = run(
            "tracking=t&amount=1.00&cnv_status=pending&status=reject",
            &binom,
        )
        .unwrap();
        assert_eq!(c.status, Status::Pending);
        // The source's own status parameter is read by its map, not by the words.
        assert_eq!(
            run("tracking=t&amount=1.00&status=reject", &reference()).err(),
            Some(Reason::BadStatus)
        );
    }

    /// A click time is optional data: what cannot be read without a guess
    /// is kept as sent in `params` and marked unread, never refused; a
    /// placeholder is dropped (never data), marked unread too.
    #[test]
    fn an_unreadable_click_time_is_kept_as_sent_and_never_refused() {
        for (raw, kept) in [
            ("2013-11-12T13:04:27.5670000", true),
            ("yesterday", true),
            ("1699999999.5", true),
            ("%7Bclick_time%7D", false),
            ("REPLACE", false),
        ] {
            let c = run(
                &format!("tracking=t&amount=1.00&click_time={raw}"),
                &reference(),
            )
            .unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(c.click_time, None, "{raw}");
            assert!(c.unread.click_time, "{raw}");
            let want: Vec<(Cow<'_, str>, Cow<'_, str>)> = if kept {
                let decoded = raw.replace("%7B", "{").replace("%7D", "}");
                vec![("click_time".into(), decoded.into())]
            } else {
                Vec::new()
            };
            assert_eq!(c.params, want, "{raw}");
        }
        let read = run("tracking=t&amount=1.00&click_time=1700000000", &reference()).unwrap();
        assert!(!read.unread.click_time && read.params.is_empty());
    }

    /// Keitaro's per-postback status words: lists that translate the
    /// sender's words, and one that asks for the postback to be ignored.
    #[test]
    fn status_lists_translate_and_ignore_per_postback() {
        let mut rules = keitaro();
        rules.status_lists = vec![
            ("sale_status".into(), Status::Approved),
            ("lead_status".into(), Status::Pending),
            ("rejected_status".into(), Status::Declined),
        ];
        rules.ignore_list = Some("ignore_status".into());
        let status =
            |q: &str| run(&format!("tracking=t&amount=1.00&{q}"), &rules).map(|c| c.status);
        assert_eq!(
            status("status=billed&sale_status=billed"),
            Ok(Status::Approved)
        );
        assert_eq!(
            status("status=TopUp&lead_status=reg,%20topup"),
            Ok(Status::Pending)
        );
        assert_eq!(
            status("status=fake&rejected_status=canceled,fake"),
            Ok(Status::Declined)
        );
        // The list wins over the source's map for this postback.
        assert_eq!(
            status("status=sale&rejected_status=sale"),
            Ok(Status::Declined)
        );
        assert_eq!(
            status("status=billed&sale_status=bill"),
            Err(Reason::BadStatus)
        );
        assert_eq!(status("status=lead"), Ok(Status::Pending));
        let ignored = |q: &str| {
            let mut params = Params::new();
            params.add_query(q.as_bytes(), false).unwrap();
            ignored(&params, &rules)
        };
        assert!(ignored("status=ping&ignore_status=ping,test"));
        assert!(ignored("status=TEST&ignore_status=ping,%20test"));
        assert!(!ignored("status=sale&ignore_status=ping,test"));
        assert!(!ignored("status=&ignore_status=ping,test,"));
        assert!(!ignored("status=ping"));
        assert!(!ignored("ignore_status=ping"));
    }
}
