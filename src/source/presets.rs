//! Platform presets: the parameter names, status vocabulary, amount shapes and
//! secret parameter each platform uses, and the macros it fills in, for the
//! postback URL generator. A source starts from its preset and may override
//! any field. Each preset cites the public page its facts come from; what the
//! pages do not say is marked "not documented" and keeps the reference rule.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::Deserialize;

use super::url::UrlTemplate;
use crate::postback::{ParseRules, Status};

pub use crate::postback::Role;

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
    /// Which fields besides the token make a conversion distinct, when the
    /// platform's own lifecycle says (a source's `dedup_fields` wins).
    pub(crate) dedup_fields: Option<super::DedupFields>,
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
            assert!(!p.rules.names[Role::Tracking].is_empty(), "{name}");
            assert_eq!(
                p.key_in_path,
                p.rules.names[Role::ApiKey].is_empty(),
                "{name}"
            );
        }
        assert!(preset("nope").is_none());
        assert_eq!(preset("HasOffers").unwrap().name, "tune");
    }

    #[test]
    fn a_presets_macros_are_its_own_networks() {
        let impact = preset("impact").unwrap();
        let (network, macros) = impact.url.preset_macros.clone().unwrap();
        assert_eq!(network, "impact");
        assert_eq!(macros, [(Role::Tracking, "{ActionId}".to_owned())]);
        assert!(impact.url.macros.is_empty());
        let bad = DATA.replace(
            "[presets.binom]\n",
            "[presets.binom]\nmacros = { tracking = \"{x}\" }\n",
        );
        let problems = load(&bad).err().unwrap();
        assert!(
            problems.iter().any(|p| p.contains("preset binom: macros")),
            "{problems:#?}"
        );
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
