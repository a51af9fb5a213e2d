//! Platform presets: the parameter names, status vocabulary, amount format and
//! secret parameter each platform uses (from `postback-conventions.md`), and the
//! macros it fills in, for the postback URL generator. A source starts from its
//! preset and may override any field.

use std::collections::HashMap;

use crate::postback::{AmountFormat, Names, ParseRules, Status};

/// A parameter role of SPEC §3, as named in config (`[sources.x.params]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    ApiKey,
    Tracking,
    Amount,
    Txid,
    Goal,
    Status,
    Currency,
    ClickTime,
    CampaignId,
    AdsetId,
    AdId,
    Placement,
}

impl Role {
    pub const ALL: [Role; 12] = [
        Role::ApiKey,
        Role::Tracking,
        Role::Amount,
        Role::Txid,
        Role::Goal,
        Role::Status,
        Role::Currency,
        Role::ClickTime,
        Role::CampaignId,
        Role::AdsetId,
        Role::AdId,
        Role::Placement,
    ];

    /// The four ids a tracking template must carry.
    pub const TEMPLATE_IDS: [Role; 4] =
        [Role::CampaignId, Role::AdsetId, Role::AdId, Role::Placement];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ApiKey => "api_key",
            Role::Tracking => "tracking",
            Role::Amount => "amount",
            Role::Txid => "txid",
            Role::Goal => "goal",
            Role::Status => "status",
            Role::Currency => "currency",
            Role::ClickTime => "click_time",
            Role::CampaignId => "campaign_id",
            Role::AdsetId => "adset_id",
            Role::AdId => "ad_id",
            Role::Placement => "placement",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn names(self, n: &Names) -> &Vec<String> {
        match self {
            Role::ApiKey => &n.api_key,
            Role::Tracking => &n.tracking,
            Role::Amount => &n.amount,
            Role::Txid => &n.txid,
            Role::Goal => &n.goal,
            Role::Status => &n.status,
            Role::Currency => &n.currency,
            Role::ClickTime => &n.click_time,
            Role::CampaignId => &n.campaign_id,
            Role::AdsetId => &n.adset_id,
            Role::AdId => &n.ad_id,
            Role::Placement => &n.placement,
        }
    }

    pub fn names_mut(self, n: &mut Names) -> &mut Vec<String> {
        match self {
            Role::ApiKey => &mut n.api_key,
            Role::Tracking => &mut n.tracking,
            Role::Amount => &mut n.amount,
            Role::Txid => &mut n.txid,
            Role::Goal => &mut n.goal,
            Role::Status => &mut n.status,
            Role::Currency => &mut n.currency,
            Role::ClickTime => &mut n.click_time,
            Role::CampaignId => &mut n.campaign_id,
            Role::AdsetId => &mut n.adset_id,
            Role::AdId => &mut n.ad_id,
            Role::Placement => &mut n.placement,
        }
    }
}

/// How a platform writes a macro, for roles its preset does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacroStyle {
    /// `{name}`
    Braces,
    /// `#name#` (CAKE)
    Hashes,
}

impl MacroStyle {
    pub fn wrap(self, name: &str) -> String {
        match self {
            MacroStyle::Braces => format!("{{{name}}}"),
            MacroStyle::Hashes => format!("#{name}#"),
        }
    }
}

/// What a platform preset fills in.
#[derive(Debug, Clone)]
pub struct Preset {
    pub name: &'static str,
    pub rules: ParseRules,
    /// The secret travels as the first path segment (`/{key}/postback`).
    pub key_in_path: bool,
    /// Whether sources of this platform take browser pixels.
    pub pixels: bool,
    /// The platform posts its fields as a form body instead of filling a URL.
    pub body_fields: bool,
    /// Roles in the order the postback URL lists them, with the platform's macro.
    pub macros: Vec<(Role, String)>,
    pub style: MacroStyle,
}

/// Every preset name, for errors and docs.
pub const NAMES: [&str; 11] = [
    "reference",
    "cake",
    "tune",
    "nats",
    "everflow",
    "voluum",
    "binom",
    "keitaro",
    "kintura",
    "redtrack",
    "affise",
];

fn v(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn statuses(pairs: &[(&str, Status)]) -> HashMap<String, Status> {
    pairs.iter().map(|(k, s)| ((*k).to_owned(), *s)).collect()
}

/// Names with only the api key and the tracking token set; presets add the rest.
fn bare(api_key: &[&str], tracking: &[&str]) -> Names {
    Names {
        api_key: v(api_key),
        tracking: v(tracking),
        amount: Vec::new(),
        txid: Vec::new(),
        goal: Vec::new(),
        status: Vec::new(),
        currency: Vec::new(),
        click_time: Vec::new(),
        ..Names::default()
    }
}

fn macros(list: &[(Role, &str)]) -> Vec<(Role, String)> {
    list.iter().map(|(r, m)| (*r, (*m).to_owned())).collect()
}

/// The preset called `name` (lowercase; `hasoffers` is `tune`).
pub fn preset(name: &str) -> Option<Preset> {
    use Role::{Amount, CampaignId, Currency, Goal, Tracking, Txid};
    use Status::{Approved, Declined, Pending};
    let status = Role::Status;
    let mut p = Preset {
        name: "reference",
        rules: ParseRules::reference(),
        key_in_path: false,
        pixels: false,
        body_fields: false,
        macros: Vec::new(),
        style: MacroStyle::Braces,
    };
    let r = &mut p.rules;
    match name {
        "reference" => {
            p.pixels = true;
            p.macros = macros(&[
                (Tracking, "{tracking}"),
                (Amount, "{amount}"),
                (Txid, "{txid}"),
            ]);
        }
        "cake" => {
            p.name = "cake";
            r.names = bare(&["api_key"], &["r"]);
            r.names.amount = v(&["p"]);
            r.names.txid = v(&["t"]);
            r.names.goal = v(&["e"]);
            r.names.campaign_id = v(&["o"]);
            p.style = MacroStyle::Hashes;
            p.macros = macros(&[
                (Tracking, "#s1#"),
                (Amount, "#price#"),
                (Txid, "#tid#"),
                (CampaignId, "#offer_id#"),
                (Goal, "#event_id#"),
            ]);
        }
        "tune" | "hasoffers" => {
            p.name = "tune";
            r.names = bare(&["security_token"], &["transaction_id"]);
            r.names.amount = v(&["amount"]);
            r.names.goal = v(&["goal_id"]);
            r.names.campaign_id = v(&["offer_id"]);
            p.macros = macros(&[
                (Tracking, "{aff_sub}"),
                (Amount, "{payout}"),
                (CampaignId, "{offer_id}"),
                (Goal, "{goal_id}"),
            ]);
        }
        "nats" => {
            p.name = "nats";
            r.names = bare(&["api_key"], &["transaction[passthrough1]", "passthrough1"]);
            r.names.amount = v(&["transaction[amount]", "amount"]);
            r.names.txid = v(&["transaction[transaction_id]", "transaction_id"]);
            r.names.status = v(&["transaction[event]", "event"]);
            r.names.currency = v(&["transaction[currency]", "currency"]);
            r.amount.format = AmountFormat::Cents;
            r.amount.allow_negative = true;
            r.statuses = statuses(&[
                ("approval", Approved),
                ("rebill", Approved),
                ("chargeback", Declined),
                ("void", Declined),
                ("credit", Declined),
            ]);
            p.body_fields = true;
        }
        "everflow" => {
            p.name = "everflow";
            r.names = bare(&["verification_token"], &["transaction_id"]);
            r.names.amount = v(&["amount"]);
            r.names.txid = v(&["order_id"]);
            r.names.goal = v(&["event_id"]);
            r.names.currency = v(&["currency"]);
            p.macros = macros(&[
                (Tracking, "{sub1}"),
                (Amount, "{payout_amount}"),
                (Txid, "{order_id}"),
                (Goal, "{event_id}"),
                (Currency, "{currency}"),
            ]);
        }
        "voluum" => {
            p.name = "voluum";
            r.names = bare(&["api_key"], &["cid"]);
            r.names.amount = v(&["payout"]);
            r.names.txid = v(&["txid"]);
            r.names.goal = v(&["et"]);
            r.names.currency = v(&["currency"]);
            p.pixels = true;
            p.macros = macros(&[
                (Tracking, "REPLACE"),
                (Amount, "OPTIONAL"),
                (Txid, "OPTIONAL"),
            ]);
        }
        "binom" => {
            p.name = "binom";
            r.names = bare(&["api_key"], &["cnv_id"]);
            r.names.amount = v(&["payout"]);
            r.names.status = v(&["cnv_status"]);
            r.names.currency = v(&["cnv_currency"]);
            r.statuses = statuses(&[
                ("approved", Approved),
                ("sale", Approved),
                ("pending", Pending),
                ("lead", Pending),
                ("hold", Pending),
                ("declined", Declined),
                ("rejected", Declined),
            ]);
            p.macros = macros(&[
                (Tracking, "{clickid}"),
                (Amount, "{payout}"),
                (status, "{status}"),
            ]);
        }
        "keitaro" => {
            p.name = "keitaro";
            r.names = bare(&[], &["subid"]);
            r.names.amount = v(&["payout", "revenue"]);
            r.names.txid = v(&["tid"]);
            r.names.status = v(&["status"]);
            r.names.currency = v(&["currency"]);
            r.statuses = statuses(&[
                ("sale", Approved),
                ("rebill", Approved),
                ("lead", Pending),
                ("rejected", Declined),
            ]);
            p.key_in_path = true;
            p.macros = macros(&[
                (Tracking, "{subid}"),
                (status, "{status}"),
                (Amount, "{payout}"),
            ]);
        }
        "kintura" => {
            p.name = "kintura";
            r.names = bare(&["api_key"], &["cid"]);
            r.names.amount = v(&["payout", "amount"]);
            r.names.txid = v(&["txid"]);
            p.macros = macros(&[(Tracking, "{cid}"), (Amount, "{payout}"), (Txid, "{txid}")]);
        }
        "redtrack" => {
            p.name = "redtrack";
            r.names = bare(&["api_key"], &["clickid"]);
            r.names.amount = v(&["sum"]);
            r.names.txid = v(&["rdtk_event_id"]);
            r.names.goal = v(&["type"]);
            r.names.status = v(&["status"]);
            r.statuses = statuses(&[
                ("approved", Approved),
                ("pending", Pending),
                ("other", Pending),
                ("declined", Declined),
            ]);
            p.macros = macros(&[
                (Tracking, "{clickid}"),
                (Amount, "{sum}"),
                (Goal, "{type}"),
                (status, "{status}"),
            ]);
        }
        "affise" => {
            p.name = "affise";
            r.names = bare(&["secure"], &["clickid", "click_id"]);
            r.names.amount = v(&["sum"]);
            r.names.txid = v(&["action_id"]);
            r.names.goal = v(&["goal"]);
            r.names.status = v(&["status"]);
            r.statuses = statuses(&[
                ("1", Approved),
                ("2", Pending),
                ("3", Declined),
                ("5", Pending),
            ]);
            p.macros = macros(&[
                (Tracking, "{clickid}"),
                (Amount, "{sum}"),
                (Txid, "{action_id}"),
                (Goal, "{goal}"),
                (status, "{status}"),
            ]);
        }
        _ => return None,
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_preset_exists_and_keeps_its_roles_apart() {
        for name in NAMES {
            let p = preset(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(p.name, name);
            let mut seen = std::collections::HashSet::new();
            for role in Role::ALL {
                for n in role.names(&p.rules.names) {
                    assert!(seen.insert(n.clone()), "{name}: {n} in two roles");
                }
            }
            assert!(!p.rules.names.tracking.is_empty(), "{name}");
            for (role, _) in &p.macros {
                assert!(!role.names(&p.rules.names).is_empty(), "{name}: {role:?}");
            }
            assert_eq!(p.key_in_path, p.rules.names.api_key.is_empty(), "{name}");
        }
        assert!(preset("nope").is_none());
        assert_eq!(preset("hasoffers").unwrap().name, "tune");
    }
}
