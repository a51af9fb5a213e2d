//! Platform presets: the parameter names, status vocabulary, amount shapes and
//! secret parameter each platform uses, and the macros it fills in, for the
//! postback URL generator. A source starts from its preset and may override
//! any field. Each preset cites the public page its facts come from; what the
//! pages do not say is marked "not documented" and keeps the reference rule.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;

use super::url::UrlTemplate;
use crate::postback::{Names, ParseRules, Status};

/// A parameter role (docs/http-api.md, "Parameters and parsing"), as named in config (`[sources.x.params]`).
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

    pub(crate) fn names_mut(self, n: &mut Names) -> &mut Vec<String> {
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

/// The platform presets and networks, as data: `presets.toml`, embedded.
const DATA: &str = include_str!("presets.toml");

/// `presets.toml`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFile {
    aliases: BTreeMap<String, String>,
    presets: BTreeMap<String, toml::Value>,
    samples: BTreeMap<String, Vec<String>>,
    networks: BTreeMap<String, NetworkFile>,
}

/// One `[networks.NAME]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    /// How its macros are written (`braces`, the default, or `hashes`), for
    /// the record: its URLs use `macros` as written.
    style: Option<String>,
    #[serde(default)]
    macros: Vec<(String, String)>,
    #[serde(default)]
    samples: BTreeMap<String, Vec<String>>,
    /// The status words the network sends and what each means.
    #[serde(default)]
    statuses: BTreeMap<String, String>,
    posts_fields_of: Option<String>,
    /// What the operator must know about this network's macros.
    note: Option<String>,
}

/// A platform preset: the format a source of that platform accepts, built
/// from its `[presets.NAME]` table exactly as a `[sources.NAME]` table is.
#[derive(Debug, Clone)]
pub struct Preset {
    pub(crate) name: String,
    /// How a source of this platform parses its postbacks.
    pub rules: ParseRules,
    /// The secret travels as the first path segment (`/{key}/postback`).
    pub key_in_path: bool,
    /// Whether sources of this platform take browser pixels.
    pub(crate) pixels: bool,
    /// How postback URLs for this format are written, and for which network.
    pub(crate) url: UrlTemplate,
}

/// A sender: the macros it fills into a postback URL and what it fills in.
#[derive(Debug, Clone)]
pub struct Network {
    pub(crate) name: String,
    /// Roles in the order its URLs list them, with its macro for each.
    pub(crate) macros: Vec<(Role, String)>,
    /// What it fills in per role, in the shapes its documentation shows.
    pub(crate) samples: HashMap<Role, Vec<String>>,
    /// The status words it sends, with what each means.
    pub(crate) statuses: Vec<(String, Status)>,
    /// It fills no URL but posts the fields of this preset as a form body.
    pub(crate) posts_fields_of: Option<String>,
    /// What the operator must know about its macros (one that is not on the
    /// network's own pages, say), printed with every URL for it.
    pub(crate) note: Option<String>,
}

impl Network {
    /// The values this network puts in place of `role`'s macro.
    pub(crate) fn samples(&self, role: Role) -> &[String] {
        self.samples.get(&role).map_or(&[], Vec::as_slice)
    }
}

/// Every preset and network, read once from the embedded data.
struct Catalog {
    presets: BTreeMap<String, Preset>,
    aliases: BTreeMap<String, String>,
    networks: BTreeMap<String, Network>,
    /// `[samples]`: what a sender fills in when its network says nothing.
    samples: BTreeMap<String, Vec<String>>,
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        load(DATA)
            .unwrap_or_else(|problems| panic!("presets.toml is invalid:\n{}", problems.join("\n")))
    })
}

/// Reads `presets.toml`; every problem of every table is reported.
fn load(text: &str) -> Result<Catalog, Vec<String>> {
    let mut file: DataFile = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    let mut presets = BTreeMap::new();
    for (name, table) in file.presets {
        if let Some(p) = super::config::build_preset(&name, table, &mut errors) {
            presets.insert(name, p);
        }
    }
    let mut networks = BTreeMap::new();
    for (name, n) in std::mem::take(&mut file.networks) {
        networks.insert(name.clone(), network(&name, n, &file.samples, &mut errors));
    }
    for (alias, target) in &file.aliases {
        if !presets.contains_key(target) || presets.contains_key(alias) {
            errors.push(format!(
                "alias {alias} = {target:?}: no such preset, or a preset of its own"
            ));
        }
    }
    for p in presets.values() {
        if let Some(n) = &p.url.network {
            if !networks.contains_key(n) {
                errors.push(format!("preset {}: no network {n:?}", p.name));
            }
        }
    }
    for n in networks.values() {
        if let Some(p) = &n.posts_fields_of {
            if !presets.contains_key(p) {
                errors.push(format!("network {}: no preset {p:?}", n.name));
            }
        }
    }
    if errors.is_empty() {
        Ok(Catalog {
            presets,
            aliases: file.aliases,
            networks,
            samples: file.samples,
        })
    } else {
        Err(errors)
    }
}

fn network(
    name: &str,
    n: NetworkFile,
    defaults: &BTreeMap<String, Vec<String>>,
    errors: &mut Vec<String>,
) -> Network {
    let mut err = |msg: String| errors.push(format!("network {name}: {msg}"));
    if let Some(other) = n
        .style
        .as_deref()
        .filter(|s| !matches!(*s, "braces" | "hashes"))
    {
        err(format!("style {other:?} is \"braces\" or \"hashes\""));
    }
    let role = |r: &str, err: &mut dyn FnMut(String)| {
        let role = Role::parse(r);
        if role.is_none() {
            err(format!("{r} is not a role"));
        }
        role
    };
    let mut macros = Vec::new();
    for (r, m) in n.macros {
        if let Some(r) = role(&r, &mut err) {
            macros.push((r, m));
        }
    }
    let mut samples = HashMap::new();
    for (r, list) in defaults.iter().chain(&n.samples) {
        if let Some(r) = role(r, &mut err) {
            if list.is_empty() {
                err(format!("samples.{} is empty", r.as_str()));
            }
            samples.insert(r, list.clone());
        }
    }
    let mut statuses = Vec::new();
    for (word, meaning) in n.statuses {
        match Status::parse(&meaning) {
            Some(s) => statuses.push((word, s)),
            None => err(format!("statuses.{word}: {meaning:?} is not a status")),
        }
    }
    if !statuses.is_empty() {
        samples.insert(
            Role::Status,
            statuses.iter().map(|(w, _)| w.clone()).collect(),
        );
    }
    Network {
        name: name.to_owned(),
        macros,
        samples,
        statuses,
        posts_fields_of: n.posts_fields_of,
        note: n.note,
    }
}

/// `name` in lowercase, or the name it is an alias of.
fn resolve(c: &Catalog, name: &str) -> String {
    let name = name.to_ascii_lowercase();
    c.aliases.get(&name).cloned().unwrap_or(name)
}

/// The preset called `name` (any case; an alias such as `hasoffers` is its preset).
pub fn preset(name: &str) -> Option<&'static Preset> {
    let c = catalog();
    c.presets.get(&resolve(c, name))
}

/// Every preset name, in order.
pub fn names() -> Vec<&'static str> {
    catalog().presets.keys().map(String::as_str).collect()
}

/// The network called `name` (any case; aliases as for presets).
pub fn network_named(name: &str) -> Option<&'static Network> {
    let c = catalog();
    c.networks.get(&resolve(c, name))
}

/// What a sender fills in for `role` when no network says (`[samples]`).
pub(crate) fn default_sample(role: Role) -> Option<&'static str> {
    catalog()
        .samples
        .get(role.as_str())
        .and_then(|v| v.first())
        .map(String::as_str)
}

/// Every network name, in order.
pub fn network_names() -> Vec<&'static str> {
    catalog().networks.keys().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_file_loads_and_every_preset_keeps_its_roles_apart() {
        let c = load(DATA).unwrap_or_else(|e| panic!("{e:#?}"));
        assert!(c.presets.len() >= 11 && c.networks.len() >= 5);
        for name in names() {
            let p = preset(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(p.name, name);
            let mut seen = std::collections::HashSet::new();
            for role in Role::ALL {
                for n in role.names(&p.rules.names) {
                    assert!(seen.insert(n.clone()), "{name}: {n} in two roles");
                }
            }
            assert!(!p.rules.names.tracking.is_empty(), "{name}");
            assert_eq!(p.key_in_path, p.rules.names.api_key.is_empty(), "{name}");
        }
        assert!(preset("nope").is_none());
        assert_eq!(preset("HasOffers").unwrap().name, "tune");
    }

    #[test]
    fn a_bad_table_is_reported_with_its_name() {
        let bad = DATA.replace(
            "[presets.binom]\n",
            "[presets.binom]\napi_keys = [\"x\"]\nfoo = 1\n",
        );
        let problems = load(&bad).err().unwrap();
        assert!(
            problems.iter().any(|p| p.contains("preset binom")),
            "{problems:#?}"
        );
    }
}
