//! What a source tells the parser: parameter names per role, the status
//! vocabulary, amount and currency rules. Built by `source/` from config;
//! [`ParseRules::reference`] is the default format (docs/http-api.md).

use super::role::Role;
use std::collections::HashMap;
use std::sync::OnceLock;

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
#[derive(Clone)]
pub struct Names {
    lists: [Vec<String>; Role::ALL.len()],
    /// Every alias by its length (the last entry holds the longer ones),
    /// with the roles it names: made on first use, dropped by any change to
    /// the lists, so that a postback's parameter names are each looked up
    /// once instead of every alias being looked for among them.
    by_length: OnceLock<Box<[Aliases]>>,
}

/// Aliases of one length, each with the roles it names (bit `role as usize`).
type Aliases = Vec<(Box<str>, u32)>;

/// Lengths [`Names::by_length`] tells apart; longer aliases share its last entry.
const LENGTHS: usize = 64;

impl Names {
    fn from_lists(lists: [Vec<String>; Role::ALL.len()]) -> Names {
        Names {
            lists,
            by_length: OnceLock::new(),
        }
    }

    /// The roles the parameter `name` is an alias of: bit `role as usize` for each.
    pub(crate) fn roles_of(&self, name: &str) -> u32 {
        let by_length = self.by_length.get_or_init(|| {
            let mut by_length = vec![Vec::new(); LENGTHS + 1];
            for role in Role::ALL {
                for alias in &self.lists[role as usize] {
                    let entry: &mut Aliases = &mut by_length[alias.len().min(LENGTHS)];
                    match entry.iter_mut().find(|(a, _)| **a == **alias) {
                        Some((_, roles)) => *roles |= 1 << role as u32,
                        None => entry.push((alias.as_str().into(), 1 << role as u32)),
                    }
                }
            }
            by_length.into_boxed_slice()
        });
        by_length[name.len().min(LENGTHS)]
            .iter()
            .find(|(alias, _)| **alias == *name)
            .map_or(0, |&(_, roles)| roles)
    }
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Names").field(&self.lists).finish()
    }
}

/// Names are equal when their lists are (whether a lookup was made yet does not count).
impl PartialEq for Names {
    fn eq(&self, other: &Names) -> bool {
        self.lists == other.lists
    }
}

impl Eq for Names {}

impl std::ops::Index<Role> for Names {
    type Output = Vec<String>;
    fn index(&self, role: Role) -> &Vec<String> {
        &self.lists[role as usize]
    }
}

impl std::ops::IndexMut<Role> for Names {
    /// The list of `role`, to change: the lookup made of the lists is dropped.
    fn index_mut(&mut self, role: Role) -> &mut Vec<String> {
        self.by_length = OnceLock::new();
        &mut self.lists[role as usize]
    }
}

impl Default for Names {
    /// The reference format: each role of a postback under its own name
    /// (`tracking`, `amount`, ...); the tracking template's ids under none.
    fn default() -> Self {
        Names::from_lists(Role::ALL.map(|r| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_looked_up_among_the_aliases_of_every_role_and_changes_are_seen() {
        let mut names = Names::default();
        let long = "x".repeat(70);
        names[Role::Tracking] = vec!["clickid".into(), "sub1".into(), long.clone()];
        names[Role::CampaignId] = vec!["sub1".into()];
        let bit = |r: Role| 1u32 << r as u32;
        assert_eq!(names.roles_of("clickid"), bit(Role::Tracking));
        assert_eq!(
            names.roles_of("sub1"),
            bit(Role::Tracking) | bit(Role::CampaignId)
        );
        assert_eq!(names.roles_of("amount"), bit(Role::Amount));
        assert_eq!(names.roles_of(&long), bit(Role::Tracking));
        assert_eq!(names.roles_of(&"x".repeat(71)), 0);
        assert_eq!(names.roles_of("ClickId"), 0, "names are exact");
        assert_eq!(names.roles_of(""), 0);
        // A change after a lookup is seen by the next one.
        let before = names.clone();
        names[Role::Tracking].push("cid".into());
        assert_eq!(names.roles_of("cid"), bit(Role::Tracking));
        assert_ne!(names, before);
        names[Role::Tracking].pop();
        assert_eq!(names.roles_of("cid"), 0);
        assert_eq!(names, before, "the lookup made does not count in equality");
    }
}
