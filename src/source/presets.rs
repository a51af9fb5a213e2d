//! Platform presets: the parameter names, status vocabulary, amount shapes and
//! secret parameter each platform uses, and the macros it fills in, for the
//! postback URL generator. A source starts from its preset and may override
//! any field. Each preset cites the public page its facts come from; what the
//! pages do not say is marked "not documented" and keeps the reference rule.

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

/// Integers and one decimal as well as two or more (`5`, `2.5`, `12.34`), up
/// to `max` decimals; the event still carries at least two.
fn loose_amounts(max: u8) -> AmountFormat {
    AmountFormat::Decimal {
        min_decimals: 0,
        max_decimals: max,
    }
}

fn macros(list: &[(Role, &str)]) -> Vec<(Role, String)> {
    list.iter().map(|(r, m)| (*r, (*m).to_owned())).collect()
}

/// The preset called `name` (lowercase; `hasoffers` is `tune`).
pub fn preset(name: &str) -> Option<Preset> {
    use Role::{Amount, CampaignId, Currency, Goal, Tracking, Txid};
    use Status::{Approved, Declined, Other, Pending};
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
            // https://support.getcake.com/en/support/solutions/articles/5000546096
            // ("#s2# is the most common parameter and token to pass a click
            // ID"), https://support.getcake.com/support/solutions/articles/5000545788
            // (#s1# "is reserved for passing sub affiliate IDs"; #leadid# the
            // conversion id CAKE assigns; #oid# the offer; #price#; #tid#).
            p.name = "cake";
            r.names = bare(&["api_key"], &["r"]);
            r.names.amount = v(&["p"]);
            r.names.txid = v(&["t"]);
            r.names.goal = v(&["e"]);
            r.names.campaign_id = v(&["o"]);
            p.style = MacroStyle::Hashes;
            p.macros = macros(&[
                (Tracking, "#s2#"),
                (Amount, "#price#"),
                (Txid, "#leadid#"),
                (CampaignId, "#oid#"),
            ]);
        }
        "tune" | "hasoffers" => {
            // https://support.tune.com/hc/en-us/articles/1500008231622-Transaction-IDs
            // ("Transaction IDs are identifiers that TUNE uses to identify which
            // conversions are connected to which clicks": TUNE's own click id,
            // NOT a conversion or order id), https://support.tune.com/hc/en-us/
            // articles/1500005137081 (`aff_lsr?offer_id=..&transaction_id=..&amount=..`).
            // This format is TUNE's conversion endpoint: `transaction_id` is
            // the tracking token. {payout}/{goal_id} macros: not on the pages read.
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
            // https://tmmwiki.com/index.php/NATS4_Post_URLs (the example post:
            // passthrough1..5, transaction[amount] = 2995, biller_amount,
            // biller_currency, post_type = approvalpost),
            // https://tmmwiki.com/index.php?diff=11614&oldid=11577&title=NATS4_Post_URLs
            // (post_type per post URL), https://docs.toomuchmedia.com/nats-admin/
            // sites/further-reading/postbacks-and-post-urls/affiliate-postback
            // (affiliate postbacks: the same events, POSTed).
            p.name = "nats";
            r.names = bare(&["api_key"], &["passthrough1", "transaction[passthrough1]"]);
            // The amount and the currency that belong together: what the biller
            // charged, in the biller's currency. transaction[amount] is NATS's
            // conversion of it (exchange_rate) and passes through in params.
            // Integer cents: inferred from the example (2995 for a $29.95
            // join); the pages do not say so in words.
            r.names.amount = v(&["transaction[biller_amount]"]);
            r.names.txid = v(&["transaction[transaction_id]"]);
            // post_type is the event; `status` is the member's status, not the event's.
            r.names.status = v(&["post_type"]);
            r.names.currency = v(&["transaction[biller_currency]"]);
            r.amount.format = AmountFormat::Cents;
            r.amount.allow_negative = true;
            // Site posts end in `post`; affiliate postbacks name the same
            // events without it (the plain forms are not documented word for
            // word). Chargebacks, voids and credits take money back; an expiry
            // or a failed rebill (insufficient funds) brings none: never approved.
            r.statuses = statuses(&[
                ("approvalpost", Approved),
                ("approval", Approved),
                ("upgradepost", Approved),
                ("upgrade", Approved),
                ("rebillpost", Approved),
                ("rebill", Approved),
                ("pending_rebillpost", Pending),
                ("chargebackpost", Declined),
                ("chargeback", Declined),
                ("voidpost", Declined),
                ("void", Declined),
                ("creditpost", Declined),
                ("credit", Declined),
                ("expirepost", Declined),
                ("expire", Declined),
                ("insufficient_fundpost", Declined),
                ("insufficient_fund", Declined),
            ]);
            p.body_fields = true;
        }
        "everflow" => {
            // https://helpdesk.everflow.io/en/articles/3673712-offer-revenue-payout
            // (`transaction_id=TRANSACTION_ID&amount=AMOUNT`: Everflow's
            // transaction_id is its click id), https://helpdesk.everflow.io/en/
            // articles/3597723-getting-started-advertiser-postbacks (a $100
            // sale). Integer amounts: the example amounts are whole dollars.
            p.name = "everflow";
            r.names = bare(&["verification_token"], &["transaction_id"]);
            r.amount.format = loose_amounts(2);
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
            // https://doc.voluum.com/en/submitting_postback_url.html ("cid: This
            // is a mandatory parameter"; "payout: This is an optional
            // parameter"; txid optional), https://doc.voluum.com/en/
            // custom_conversions.html (`et`), https://doc.voluum.com/en/upselling.html
            // (cid + txid counted once). Integer payouts (`payout=5`): as
            // trackers forward them; Voluum's own examples have two decimals.
            p.name = "voluum";
            r.names = bare(&["api_key"], &["cid"]);
            r.names.amount = v(&["payout"]);
            r.amount.format = loose_amounts(4);
            r.amount.required = false;
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
            // https://docs.binom.org/postback-url.php (cnv_id, payout,
            // cnv_status "signup, checkout, approve, reject etc", cnv_currency;
            // the conversion pixel sends payout=OPTIONAL),
            // https://docs.binom.org/payout-tracking-v2.php (`payout=5`,
            // `cnv_status=Hold`). cnv_status is free text in Binom: words
            // outside the map are accepted as `other`, raw word kept.
            p.name = "binom";
            r.names = bare(&["api_key"], &["cnv_id"]);
            r.names.amount = v(&["payout"]);
            r.names.status = v(&["cnv_status"]);
            r.names.currency = v(&["cnv_currency"]);
            r.amount.format = loose_amounts(4);
            r.amount.required = false;
            r.accept_unknown_status = true;
            r.statuses = statuses(&[
                ("approve", Approved),
                ("approved", Approved),
                ("sale", Approved),
                ("pending", Pending),
                ("lead", Pending),
                ("hold", Pending),
                ("reject", Declined),
                ("rejected", Declined),
                ("declined", Declined),
            ]);
            p.macros = macros(&[
                (Tracking, "{clickid}"),
                (Amount, "{payout}"),
                (status, "{status}"),
            ]);
        }
        "keitaro" => {
            // https://docs.keitaro.io/en/conversions/postback.html (subid
            // required; payout or revenue; tid; "status (default is sale)":
            // lead, sale, rejected, rebill; currency; example
            // `/key/postback?status=lead&payout=10&currency=EUR`),
            // https://v9.help.keitaro.io/en/conversions-and-postback/postback.html
            // (tid numbers the target actions: tid=2 is a second deposit).
            p.name = "keitaro";
            r.names = bare(&[], &["subid"]);
            r.names.amount = v(&["payout", "revenue"]);
            r.amount.format = loose_amounts(4);
            r.amount.required = false;
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
            // https://kintura.com/docs/presets/pairings/clickadu/clickbooth
            // (`/conversion?cid={subid2}&payout={payout}&txid={transid}`),
            // https://kintura.com/docs/offers ("If you pass payout= or amount=
            // ... it will always be recorded": optional). A status parameter
            // is not documented.
            p.name = "kintura";
            r.names = bare(&["api_key"], &["cid"]);
            r.names.amount = v(&["payout", "amount"]);
            r.amount.format = loose_amounts(4);
            r.amount.required = false;
            // Not on the pages read; senders pass `status=lead`, which must
            // never become an approved sale. Other words: `other`, raw kept.
            r.names.status = v(&["status"]);
            r.accept_unknown_status = true;
            r.statuses = statuses(&[
                ("approved", Approved),
                ("sale", Approved),
                ("lead", Pending),
                ("pending", Pending),
                ("declined", Declined),
                ("rejected", Declined),
            ]);
            r.names.txid = v(&["txid"]);
            p.macros = macros(&[(Tracking, "{cid}"), (Amount, "{payout}"), (Txid, "{txid}")]);
        }
        "redtrack" => {
            // https://docs.redtrack.io/knowledgebase/tracking-event-types/ ("4:
            // Other, Approved, Pending, Declined"; without a status RedTrack
            // records "other"; `type` is case-sensitive), https://redtrack.zendesk.com/
            // hc/en-us/articles/207082019 (`sum={replace_or_remove}`: optional).
            // Other is kept as RedTrack's own bucket, pending until it is decided.
            p.name = "redtrack";
            r.names = bare(&["api_key"], &["clickid"]);
            r.names.amount = v(&["sum"]);
            r.amount.format = loose_amounts(4);
            r.amount.required = false;
            r.names.txid = v(&["rdtk_event_id"]);
            r.names.goal = v(&["type"]);
            r.names.status = v(&["status"]);
            r.statuses = statuses(&[
                ("approved", Approved),
                ("pending", Pending),
                ("other", Other),
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
            // https://help-center.affise.com/en/articles/6483741-affiliate-postback-url-macros
            // ("1 - Approved; 2 - Pending; 3 - Declined; 5 - approved and put
            // on Hold"; {sum} the payout; no {clickid} in affiliate postbacks:
            // {sub1}..{sub8}; {transactionid} the advertiser's conversion id).
            p.name = "affise";
            r.names = bare(&["secure"], &["clickid", "click_id"]);
            r.names.amount = v(&["sum"]);
            r.names.txid = v(&["action_id"]);
            r.names.goal = v(&["goal"]);
            r.names.status = v(&["status"]);
            // 5 is approved but held: not paid yet, so pending.
            r.statuses = statuses(&[
                ("1", Approved),
                ("2", Pending),
                ("3", Declined),
                ("5", Pending),
            ]);
            p.macros = macros(&[
                (Tracking, "{sub1}"),
                (Amount, "{sum}"),
                (Txid, "{transactionid}"),
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
