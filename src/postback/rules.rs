//! What a source tells the parser: parameter names per role, the status
//! vocabulary, amount and currency rules. Built by `source/` from config;
//! [`ParseRules::reference`] is the default format (docs/http-api.md).

use super::role::Role;
use std::collections::HashMap;

use rust_decimal::Decimal;
use time::UtcOffset;

/// Normalized conversion status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// A confirmed conversion (also when no status is sent).
    Approved,
    /// Not yet confirmed; an approval later is a new event.
    Pending,
    /// Rejected by the advertiser.
    Declined,
    /// A word outside the source's vocabulary, accepted because the source
    /// says so (`unknown_status = "accept"`); `status_raw` says which.
    Other,
}

impl Status {
    /// The word the event carries (`approved`, `pending`, `declined`, `other`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Approved => "approved",
            Status::Pending => "pending",
            Status::Declined => "declined",
            Status::Other => "other",
        }
    }

    /// The status named `word` as [`Status::as_str`] writes it.
    pub(crate) fn parse(word: &str) -> Option<Status> {
        [
            Status::Approved,
            Status::Pending,
            Status::Declined,
            Status::Other,
        ]
        .into_iter()
        .find(|s| s.as_str() == word)
    }
}

/// Parameter names for each role. Each role may have several aliases; the
/// first one present in a postback is used (two present at once is
/// `duplicate_param`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names([Vec<String>; Role::ALL.len()]);

impl std::ops::Index<Role> for Names {
    type Output = Vec<String>;
    fn index(&self, role: Role) -> &Vec<String> {
        &self.0[role as usize]
    }
}

impl std::ops::IndexMut<Role> for Names {
    fn index_mut(&mut self, role: Role) -> &mut Vec<String> {
        &mut self.0[role as usize]
    }
}

impl Default for Names {
    /// The reference format: each role of a postback under its own name
    /// (`tracking`, `amount`, ...); the tracking template's ids under none.
    fn default() -> Self {
        Names(Role::ALL.map(|r| {
            if Role::TEMPLATE_IDS.contains(&r) {
                Vec::new()
            } else {
                vec![r.as_str().to_owned()]
            }
        }))
    }
}

/// How the amount is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountFormat {
    /// One or more digits without a leading zero (except `0` itself), then
    /// between `min_decimals` (0..=2) and `max_decimals` (2..=6) decimals after
    /// a dot; with no decimals, no dot either (`100`, never `100.`). The
    /// reference format is 2..=2: exactly `0.00`.
    Decimal {
        /// Fewest decimals after the dot (0 allows no dot at all).
        min_decimals: u8,
        /// Most decimals after the dot.
        max_decimals: u8,
    },
    /// Integer minor units (`2995` = `29.95`), as NATS sends.
    Cents,
}

/// The amount rules of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmountRules {
    /// How the amount is written.
    pub format: AmountFormat,
    /// Chargebacks as negative amounts (`-12.34`).
    pub allow_negative: bool,
    /// Largest accepted absolute amount.
    pub(crate) max: Decimal,
    /// Whether a postback without an amount is `missing_amount`.
    pub required: bool,
    /// Whether an amount outside the grammar is kept as sent (in `params`,
    /// the event's amount `null`) instead of refused as `bad_amount`: TUNE
    /// records such a conversion with 0.00 rather than losing it.
    pub(crate) keep_unreadable: bool,
}

impl Default for AmountRules {
    fn default() -> Self {
        AmountRules {
            format: AmountFormat::Decimal {
                min_decimals: 2,
                max_decimals: 2,
            },
            allow_negative: false,
            max: Decimal::new(100_000_000, 2),
            required: true,
            keep_unreadable: false,
        }
    }
}

/// Everything the parser needs to know about a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseRules {
    /// The parameter names of each role.
    pub names: Names,
    /// Whether `+` in a query string means a space (the form rule) for this source.
    pub plus_as_space: bool,
    /// How the amount is written and what it may be.
    pub amount: AmountRules,
    /// Raw status value → normalized status. When `status_case_insensitive`,
    /// the keys are stored lowercase and looked up lowercase.
    pub statuses: HashMap<String, Status>,
    pub(crate) status_case_insensitive: bool,
    /// Whether a status word outside `statuses` is accepted as
    /// [`Status::Other`] instead of refused (`bad_status`).
    pub(crate) accept_unknown_status: bool,
    /// A currency the source fixes (uppercase ISO 4217); a postback naming
    /// another is `currency_mismatch`.
    pub fixed_currency: Option<String>,
    /// Parameters dropped before pass-through (the cache-buster `_`).
    pub(crate) dropped: Vec<String>,
    /// When set, the only parameters passed through; every other one is
    /// dropped unread (NATS posts ~90 member fields, passwords among them).
    pub(crate) pass_through: Option<Vec<String>>,
    /// The source's own placeholder words, refused as tracking tokens like
    /// the built-in ones (see [`super::placeholders`]), in any case.
    pub(crate) extra_placeholders: Vec<String>,
    /// Parameters whose value is a comma-separated list of the sender's own
    /// status words that mean this status for this postback (Keitaro's
    /// `sale_status=billed`, `lead_status=reg,topup`); they win over
    /// `statuses`.
    pub(crate) status_lists: Vec<(String, Status)>,
    /// A parameter whose value lists status words (`ignore_status=ping,test`):
    /// a postback with one of them is answered as a success and files nothing.
    pub(crate) ignore_list: Option<String>,
    /// Whether a JSON body's nested objects are read as dotted paths
    /// (`event_data.revenue`) and booleans as `true`/`false`, for senders
    /// that post nested bodies (Branch's webhooks, AppsFlyer's Push API);
    /// otherwise a JSON body is a flat object of strings and numbers.
    pub(crate) json_nested: bool,
    /// The zone of click times written without one (`2021-09-17 01:29:11`);
    /// without it such a time is kept as sent, never guessed.
    pub(crate) click_time_zone: Option<UtcOffset>,
}

impl ParseRules {
    /// The reference format (docs/http-api.md): `api_key`, `tracking`, `amount`, ...
    /// with the statuses `approved`, `pending`, `declined` in any case.
    pub fn reference() -> Self {
        let statuses = [
            ("approved", Status::Approved),
            ("pending", Status::Pending),
            ("declined", Status::Declined),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        ParseRules {
            names: Names::default(),
            plus_as_space: false,
            amount: AmountRules::default(),
            statuses,
            status_case_insensitive: true,
            accept_unknown_status: false,
            fixed_currency: None,
            dropped: vec!["_".to_owned()],
            pass_through: None,
            extra_placeholders: Vec::new(),
            status_lists: Vec::new(),
            ignore_list: None,
            json_nested: false,
            click_time_zone: None,
        }
    }
}
