//! The parameter roles: what each parameter of a postback means (the click
//! id, the amount, ...). Adding a role starts here: [`Names`] holds one list
//! of parameter names per role, indexed by it.

use super::rules::Names;

/// A parameter role (docs/http-api.md, "Parameters and parsing"), as named
/// in config (`[sources.x.params]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The credentials.
    ApiKey,
    /// The tracking token (click id).
    Tracking,
    /// The amount.
    Amount,
    /// The transaction id.
    Txid,
    /// The goal or event type.
    Goal,
    /// The conversion's status.
    Status,
    /// The currency.
    Currency,
    /// The click or visit time.
    ClickTime,
    /// The tracking template's campaign id.
    CampaignId,
    /// The tracking template's ad set id.
    AdsetId,
    /// The tracking template's ad id.
    AdId,
    /// The tracking template's placement.
    Placement,
}

impl Role {
    /// Every role, in the order docs/http-api.md lists them.
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
    pub(crate) const TEMPLATE_IDS: [Role; 4] =
        [Role::CampaignId, Role::AdsetId, Role::AdId, Role::Placement];

    /// The role's name in config and its default parameter name.
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

    pub(crate) fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The parameter names this role goes by in `n`.
    /// The parameter names of this role in `n`.
    pub fn names(self, n: &Names) -> &Vec<String> {
        &n[self]
    }

    /// The parameter names of this role in `n`, to change.
    pub(crate) fn names_mut(self, n: &mut Names) -> &mut Vec<String> {
        &mut n[self]
    }
}
