//! The `[sources.NAME]` tables of the config file, turned into [`Source`]s.
//! Each source starts from its platform preset; every field may override it.
//! Every problem of every source is collected, each one a sentence naming the
//! source, so `check-config` reports them all in one pass.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;

use super::net::{Cidr, Networks};
use super::presets::{self, Preset, Role};
use super::url::UrlTemplate;
use super::{Source, Sources};
use crate::postback::{AmountFormat, ParseRules, Status};

/// A role's parameter name, or several aliases.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ConversionTime {
    Click,
    Postback,
}

/// One `[sources.NAME]` table. Unknown keys are errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    preset: Option<String>,
    platform: Option<String>,
    api_keys: Option<Vec<String>>,
    /// Keys for pixels only (public by nature, never valid for S2S).
    #[serde(default)]
    pixel_keys: Vec<String>,
    /// Lets a source without api keys take S2S postbacks (anyone could send them).
    #[serde(default)]
    s2s_without_key: bool,
    /// Dedup keys held for this source in a pool of its own.
    dedup_max_keys: Option<usize>,
    key_in_path: Option<bool>,
    pixels: Option<bool>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    allow_networks: Vec<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    conversion_time: Option<ConversionTime>,
    /// The fields besides the token that make a conversion distinct.
    dedup_fields: Option<Vec<String>>,
    /// `"flat"` (the default) or `"nested"`: a JSON body's nested objects read
    /// as dotted paths, booleans as true/false.
    json: Option<String>,
    /// The zone of click times sent without one: `"UTC"` or `"+02:00"`.
    click_time_zone: Option<String>,
    plus_as_space: Option<bool>,
    #[serde(default)]
    extra_placeholders: Vec<String>,
    /// The only parameters passed through into `params`; others are dropped.
    pass_through: Option<Vec<String>>,
    currency: Option<String>,
    #[serde(default)]
    tracking_template: bool,
    #[serde(default)]
    params: BTreeMap<String, OneOrMany>,
    statuses: Option<BTreeMap<String, String>>,
    /// Parameter → status: its value lists the sender's words for that status.
    status_lists: Option<BTreeMap<String, String>>,
    /// The parameter whose value lists the status words to ignore.
    ignore_list: Option<String>,
    status_case_insensitive: Option<bool>,
    /// `"refuse"` (`bad_status`) or `"accept"` (as `other`) a word outside `statuses`.
    unknown_status: Option<String>,
    #[serde(default)]
    amount: AmountFile,
    #[serde(default)]
    macros: BTreeMap<String, String>,
    /// The network that fires into this source: whose macros `postback-url` writes.
    network: Option<String>,
    rate_limit: Option<RateFile>,
    /// The pixels' own bucket; pixel keys are public, so pixels never spend
    /// what the source's S2S postbacks need.
    pixel_rate_limit: Option<RateFile>,
}

/// `rate_limit = { per_second = 500, burst = 1000 }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateFile {
    per_second: f64,
    burst: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmountFile {
    format: Option<String>,
    max_decimals: Option<u8>,
    /// Fewer decimals than two that the sender may write (`100`, `2.5`).
    min_decimals: Option<u8>,
    allow_negative: Option<bool>,
    /// A string, so `"5000.00"` stays exact.
    max: Option<String>,
    required: Option<bool>,
    /// `"refuse"` (`bad_amount`) or `"keep"` an amount outside the grammar.
    unreadable: Option<String>,
}

/// Builds every source of `tables`; `None` when there are none (the binary
/// then runs the single `default` source). Problems go to `errors`; what is
/// allowed but risky goes to `warnings`.
pub(crate) fn build(
    tables: BTreeMap<String, toml::Value>,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Arc<Sources>> {
    if tables.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for (name, value) in tables {
        let before = errors.len();
        if !valid_name(&name) {
            errors.push(format!(
                "source {name:?}: a source name is 1 to 64 characters of a-z, 0-9, '_' and '-'"
            ));
        }
        match value.try_into::<SourceFile>() {
            Ok(file) => {
                let source = build_one(&name, file, errors, warnings);
                if errors.len() == before {
                    list.push(source);
                }
            }
            Err(e) => errors.push(format!(
                "source {name}: {}",
                redact_values(e.message().trim())
            )),
        }
    }
    check_across(&list, errors);
    Some(Arc::new(Sources::from_list(list)))
}

/// The part of a source that says what it accepts, built first from its
/// preset's table and then from its own, by the same steps.
struct Format {
    rules: ParseRules,
    key_in_path: bool,
    pixels: bool,
    url: UrlTemplate,
}

impl Format {
    /// What a preset's table starts from: the reference rules with no
    /// parameter names.
    fn empty() -> Format {
        let mut rules = ParseRules::reference();
        for role in Role::ALL {
            role.names_mut(&mut rules.names).clear();
        }
        Format {
            rules,
            key_in_path: false,
            pixels: false,
            url: UrlTemplate::default(),
        }
    }

    fn of(p: &Preset) -> Format {
        Format {
            rules: p.rules.clone(),
            key_in_path: p.key_in_path,
            pixels: p.pixels,
            url: p.url.clone(),
        }
    }
}

/// Builds the preset `name` from its `[presets.NAME]` table of presets.toml,
/// read and checked exactly as a `[sources.NAME]` table is.
pub(super) fn build_preset(
    name: &str,
    table: toml::Value,
    errors: &mut Vec<String>,
) -> Option<Preset> {
    let before = errors.len();
    let mut err = |msg: String| errors.push(format!("preset {name}: {msg}"));
    let mut f = match table.try_into::<SourceFile>() {
        Ok(f) => f,
        Err(e) => {
            err(e.message().trim().to_owned());
            return None;
        }
    };
    let owned_by_sources = [
        ("preset", f.preset.is_some()),
        ("platform", f.platform.is_some()),
        ("api_keys", f.api_keys.is_some()),
        ("pixel_keys", !f.pixel_keys.is_empty()),
        ("s2s_without_key", f.s2s_without_key),
        ("dedup_max_keys", f.dedup_max_keys.is_some()),
        ("hosts", !f.hosts.is_empty()),
        ("allow_networks", !f.allow_networks.is_empty()),
        ("trusted_proxies", !f.trusted_proxies.is_empty()),
        ("rate_limit", f.rate_limit.is_some()),
        ("pixel_rate_limit", f.pixel_rate_limit.is_some()),
        ("tracking_template", f.tracking_template),
    ];
    for (field, set) in owned_by_sources {
        if set {
            err(format!("{field} belongs to a source, not to a preset"));
        }
    }
    let mut fmt = Format::empty();
    fmt.pixels = f.pixels.take().unwrap_or(false);
    apply_format(&mut fmt, &mut f, &mut err);
    check_format(&fmt, false, &mut err);
    // A preset's macros are its own network's: they are written only when
    // that network fills the URL.
    let macros = std::mem::take(&mut fmt.url.macros);
    match &fmt.url.network {
        Some(n) if !macros.is_empty() => fmt.url.preset_macros = Some((n.clone(), macros)),
        None if !macros.is_empty() => {
            err("macros in a preset are its network's: set network".into())
        }
        _ => {}
    }
    let dedup_fields = match f.dedup_fields.take().map(|n| super::DedupFields::named(&n)) {
        None => None,
        Some(Ok(fields)) => Some(fields),
        Some(Err(other)) => {
            err(format!("dedup_fields: {other:?} is not a field"));
            None
        }
    };
    (errors.len() == before).then(|| Preset {
        name: name.to_owned(),
        rules: fmt.rules,
        key_in_path: fmt.key_in_path,
        pixels: fmt.pixels,
        url: fmt.url,
        dedup_fields,
    })
}

fn build_one(
    name: &str,
    mut f: SourceFile,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Source {
    let mut err = |msg: String| errors.push(format!("source {name}: {msg}"));
    let preset_name = f.preset.take().unwrap_or_else(|| "reference".to_owned());
    let p = presets::preset(&preset_name).unwrap_or_else(|| {
        err(format!(
            "unknown preset {preset_name:?}; the presets are {}",
            presets::names().join(", ")
        ));
        presets::preset("reference").expect("the reference preset exists")
    });
    let mut fmt = Format::of(p);
    apply_format(&mut fmt, &mut f, &mut err);
    if let Some(n) = &fmt.url.network {
        if presets::network_named(n).is_none() {
            err(format!(
                "unknown network {n:?}; the networks are {}",
                presets::network_names().join(", ")
            ));
        }
    }
    check_format(&fmt, f.tracking_template, &mut err);

    let keys = api_keys(f.api_keys.take(), &mut err);
    let pixel_keys = std::mem::take(&mut f.pixel_keys);
    check_pixel_keys(&keys, &pixel_keys, &fmt.rules, &mut err);
    let keyed = !keys.is_empty();
    let pixels = match f.pixels {
        Some(true) if keyed && pixel_keys.is_empty() => {
            err(
                "pixels = true on a source with api keys needs pixel_keys of its own: a pixel URL \
                 sits in a public page, and an api key in it would let anyone send S2S postbacks"
                    .into(),
            );
            false
        }
        Some(b) => b,
        None => fmt.pixels && (!keyed || !pixel_keys.is_empty()),
    };
    if keyed && f.s2s_without_key {
        err("s2s_without_key is for sources without api keys".into());
    }
    if !keyed && f.s2s_without_key {
        warnings.push(format!(
            "source {name} takes S2S postbacks without a key (s2s_without_key = true): anyone who \
             knows its URL can create conversions; give it api_keys unless that is intended"
        ));
    }
    if fmt.key_in_path && keys.is_empty() {
        err("key_in_path needs at least one api key".into());
    }
    if !keys.is_empty() && !fmt.key_in_path && fmt.rules.names[Role::ApiKey].is_empty() {
        err(
            "has api keys but no parameter to carry them (params.api_key) and key_in_path is off"
                .into(),
        );
    }
    if f.dedup_max_keys == Some(0) {
        err("dedup_max_keys must be above 0".into());
    }

    let mut s = Source::new(name, keys, fmt.rules);
    s.platform = Arc::from(f.platform.take().unwrap_or_else(|| p.name.clone()));
    if let Some(fields) = p.dedup_fields {
        s.dedup_fields = fields;
    }
    s.conversion_at_click = matches!(f.conversion_time, Some(ConversionTime::Click));
    if let Some(names) = f.dedup_fields.take() {
        match super::DedupFields::named(&names) {
            Ok(fields) => s.dedup_fields = fields,
            Err(other) => err(format!(
                "dedup_fields: {other:?} is not one of {}",
                super::DedupFields::NAMES.join(", ")
            )),
        }
    }
    s.key_in_path = fmt.key_in_path;
    s.pixels = pixels;
    s.set_pixel_keys(pixel_keys);
    s.s2s_without_key = f.s2s_without_key;
    s.dedup_max_keys = f.dedup_max_keys;
    s.hosts = host_names(&f.hosts, &mut err);
    s.allow = networks("allow_networks", &f.allow_networks, &mut err);
    s.trusted_proxies = networks("trusted_proxies", &f.trusted_proxies, &mut err);
    s.url = fmt.url;
    let source_rate = f.rate_limit.take().and_then(|r| {
        crate::ratelimit::Rate::checked(r.per_second, r.burst)
            .map_err(|e| err(format!("rate_limit: {e}")))
            .ok()
    });
    s.rate = source_rate.map(crate::ratelimit::Limiter::new);
    let pixel_rate = match f.pixel_rate_limit.take() {
        Some(r) => crate::ratelimit::Rate::checked(r.per_second, r.burst)
            .map_err(|e| err(format!("pixel_rate_limit: {e}")))
            .ok(),
        // A tenth of the source's rate, in a bucket of its own.
        None => source_rate.and_then(|r| {
            crate::ratelimit::Rate::checked(
                (r.per_second / 10.0).max(0.0001),
                Some((r.burst / 10.0).max(1.0)),
            )
            .ok()
        }),
    };
    s.pixel_rate = pixel_rate.map(crate::ratelimit::Limiter::new);
    s
}

/// Applies what one table says about the format (names, statuses, amounts,
/// the URL) on top of `fmt`: a preset's table over the empty base, then a
/// source's over its preset.
fn apply_format(fmt: &mut Format, f: &mut SourceFile, err: &mut impl FnMut(String)) {
    let rules = &mut fmt.rules;
    apply_params(rules, std::mem::take(&mut f.params), err);
    if let Some(ci) = f.status_case_insensitive {
        rules.status_case_insensitive = ci;
    }
    match f.unknown_status.as_deref() {
        None => {}
        Some("refuse") => rules.accept_unknown_status = false,
        Some("accept") => rules.accept_unknown_status = true,
        Some(other) => err(format!(
            "unknown_status = {other:?}: it is \"refuse\" (bad_status) or \"accept\" (status \"other\")"
        )),
    }
    if let Some(map) = f.statuses.take() {
        apply_statuses(rules, map, err);
    }
    if let Some(lists) = f.status_lists.take() {
        rules.status_lists.clear();
        for (param, word) in lists {
            match Status::parse(&word) {
                Some(status) if !param.is_empty() && param.len() <= 64 => {
                    rules.status_lists.push((param, status))
                }
                _ => err(format!(
                    "status_lists.{param:?} = {word:?}: a parameter name of 1 to 64 bytes, mapped to approved, pending, declined or other"
                )),
            }
        }
    }
    if let Some(param) = f.ignore_list.take() {
        if param.is_empty() || param.len() > 64 {
            err("ignore_list names one parameter of 1 to 64 bytes".into());
        }
        rules.ignore_list = Some(param);
    }
    if let Some(c) = f.currency.take() {
        if c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()) {
            rules.fixed_currency = Some(c.to_ascii_uppercase());
        } else {
            err(format!(
                "currency = {c:?} is not a three-letter ISO 4217 code"
            ));
        }
    }
    if let Some(b) = f.plus_as_space {
        rules.plus_as_space = b;
    }
    match f.json.take().as_deref() {
        None => {}
        Some("flat") => rules.json_nested = false,
        Some("nested") => rules.json_nested = true,
        Some(other) => err(format!(
            "json = {other:?}: it is \"flat\" (an object of strings and numbers) or \"nested\" (objects read as dotted paths: event_data.revenue)"
        )),
    }
    if let Some(zone) = f.click_time_zone.take() {
        match utc_offset(&zone) {
            Some(offset) => rules.click_time_zone = Some(offset),
            None => err(format!(
                "click_time_zone = {zone:?}: it is \"UTC\" or an offset from UTC like \"+02:00\" or \"-05:00\""
            )),
        }
    }
    for word in std::mem::take(&mut f.extra_placeholders) {
        if word.is_empty() || word.len() > 1024 {
            err("extra_placeholders entries must be 1 to 1024 bytes".into());
        } else {
            rules.extra_placeholders.push(word);
        }
    }
    if let Some(keep) = f.pass_through.take() {
        if keep.len() > 32 || keep.iter().any(|k| k.is_empty() || k.len() > 64) {
            err("pass_through lists at most 32 parameter names of 1 to 64 bytes".into());
        }
        rules.pass_through = Some(keep);
    }
    amount_rules(&mut rules.amount, std::mem::take(&mut f.amount), err);
    if let Some(k) = f.key_in_path {
        fmt.key_in_path = k;
    }
    if let Some(n) = f.network.take() {
        fmt.url.network = Some(n.to_ascii_lowercase());
    }
    for (role_name, text) in std::mem::take(&mut f.macros) {
        match Role::parse(&role_name) {
            Some(role) if !text.is_empty() => {
                fmt.url.macros.retain(|(r, _)| *r != role);
                fmt.url.macros.push((role, text));
            }
            Some(_) => err(format!("macros.{role_name} is empty")),
            None => err(format!("macros.{role_name} is not a role")),
        }
    }
}

/// `"UTC"`, `"Z"` or `"+HH:MM"` / `"-HH:MM"`.
fn utc_offset(text: &str) -> Option<time::UtcOffset> {
    if text.eq_ignore_ascii_case("utc") || text == "Z" {
        return Some(time::UtcOffset::UTC);
    }
    let format = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
    time::UtcOffset::parse(text, &format).ok()
}

fn apply_params(
    rules: &mut ParseRules,
    params: BTreeMap<String, OneOrMany>,
    err: &mut impl FnMut(String),
) {
    for (role_name, value) in params {
        let Some(role) = Role::parse(&role_name) else {
            err(format!(
                "params.{role_name} is not a role; the roles are {}",
                Role::ALL.map(Role::as_str).join(", ")
            ));
            continue;
        };
        let list = match value {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        if list.iter().any(|s| s.is_empty() || s.len() > 64) {
            err(format!(
                "params.{role_name}: a parameter name is 1 to 64 bytes"
            ));
        }
        *role.names_mut(&mut rules.names) = list;
    }
}

/// `statuses` replaces the whole map.
fn apply_statuses(
    rules: &mut ParseRules,
    map: BTreeMap<String, String>,
    err: &mut impl FnMut(String),
) {
    rules.statuses.clear();
    for (raw, word) in map {
        let Some(status) = Status::parse(&word) else {
            err(format!(
                "statuses.{raw:?} = {word:?}: a status maps to approved, pending, declined or other"
            ));
            continue;
        };
        let key = if rules.status_case_insensitive {
            raw.to_lowercase()
        } else {
            raw.clone()
        };
        if key.is_empty() || rules.statuses.insert(key, status).is_some() {
            err(format!("statuses.{raw:?} is empty or listed twice"));
        }
    }
}

/// What must hold of the format once every table is applied.
fn check_format(fmt: &Format, tracking_template: bool, err: &mut impl FnMut(String)) {
    let names = &fmt.rules.names;
    let mut seen: HashMap<&str, Role> = HashMap::new();
    for role in Role::ALL {
        for n in role.names(names) {
            match seen.get(n.as_str()) {
                Some(other) if *other != role => err(format!(
                    "parameter {n:?} is both {} and {}; a name can have one role only",
                    other.as_str(),
                    role.as_str()
                )),
                _ => {
                    seen.insert(n, role);
                }
            }
        }
    }
    if names[Role::Tracking].is_empty() {
        err("no parameter names the tracking token (params.tracking)".into());
    }
    if fmt.rules.amount.required && names[Role::Amount].is_empty() {
        err("the amount is required but no parameter names it (params.amount)".into());
    }
    if tracking_template {
        for role in Role::TEMPLATE_IDS {
            if role.names(names).is_empty() {
                err(format!(
                    "declares a tracking template but maps no parameter for {} \
                     (add params.{} = \"...\")",
                    role.as_str(),
                    role.as_str()
                ));
            }
        }
    }
}

fn api_keys(keys: Option<Vec<String>>, err: &mut impl FnMut(String)) -> Vec<String> {
    let Some(keys) = keys else {
        err(
            "api_keys is missing; list the keys, or write api_keys = [] for a source \
             that takes no key"
                .into(),
        );
        return Vec::new();
    };
    for (i, k) in keys.iter().enumerate() {
        if !valid_key(k) {
            err(format!("api key #{} must be {}", i + 1, super::KEY_RULE));
        } else if keys[..i].contains(k) {
            err(format!("api key #{} is listed twice", i + 1));
        }
    }
    keys
}

fn check_pixel_keys(
    keys: &[String],
    pixel_keys: &[String],
    rules: &ParseRules,
    err: &mut impl FnMut(String),
) {
    for (i, k) in pixel_keys.iter().enumerate() {
        if !valid_key(k) {
            err(format!("pixel key #{} must be {}", i + 1, super::KEY_RULE));
        } else if keys.contains(k) {
            err(format!(
                "pixel key #{} is also an api key: a pixel key sits in public pages, so it must \
                 never open the S2S endpoint",
                i + 1
            ));
        }
    }
    if !pixel_keys.is_empty() && rules.names[Role::ApiKey].is_empty() {
        err("has pixel keys but no parameter to carry them (params.api_key)".into());
    }
}

fn host_names(list: &[String], err: &mut impl FnMut(String)) -> Vec<String> {
    let mut hosts = Vec::new();
    for h in list {
        let lower = h.to_ascii_lowercase();
        let ok = !lower.is_empty()
            && lower.len() <= 253
            && lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if ok {
            hosts.push(lower);
        } else {
            err(format!(
                "hosts: {h:?} is not a host name (no scheme, no port)"
            ));
        }
    }
    hosts
}

fn amount_rules(a: &mut crate::postback::AmountRules, f: AmountFile, err: &mut impl FnMut(String)) {
    match f.format.as_deref() {
        None => {}
        Some("decimal") => {
            a.format = AmountFormat::Decimal {
                min_decimals: 2,
                max_decimals: 2,
            }
        }
        Some("cents") => a.format = AmountFormat::Cents,
        Some(other) => err(format!(
            "amount.format = {other:?}: the formats are \"decimal\" (12.34) and \"cents\" (1234)"
        )),
    }
    if let Some(d) = f.max_decimals {
        match &mut a.format {
            AmountFormat::Decimal { max_decimals, .. } if (2..=6).contains(&d) => *max_decimals = d,
            AmountFormat::Decimal { .. } => {
                err(format!("amount.max_decimals = {d} must be within 2..=6"))
            }
            AmountFormat::Cents => err("amount.max_decimals does not apply to cents".into()),
        }
    }
    if let Some(d) = f.min_decimals {
        match &mut a.format {
            AmountFormat::Decimal { min_decimals, .. } if d <= 2 => *min_decimals = d,
            AmountFormat::Decimal { .. } => {
                err(format!("amount.min_decimals = {d} must be within 0..=2"))
            }
            AmountFormat::Cents => err("amount.min_decimals does not apply to cents".into()),
        }
    }
    if let Some(n) = f.allow_negative {
        a.allow_negative = n;
    }
    match f.unreadable.as_deref() {
        None => {}
        Some("refuse") => a.keep_unreadable = false,
        Some("keep") => a.keep_unreadable = true,
        Some(other) => err(format!(
            "amount.unreadable = {other:?}: it is \"refuse\" (bad_amount) or \"keep\" (kept as sent in params, the amount null)"
        )),
    }
    if let Some(r) = f.required {
        a.required = r;
    }
    if let Some(m) = f.max {
        match Decimal::from_str(&m) {
            Ok(d) if d > Decimal::ZERO => a.max = d,
            _ => err(format!(
                "amount.max = {m:?} must be a positive decimal written as a string, like \"5000.00\""
            )),
        }
    }
}

fn networks(what: &str, list: &[String], err: &mut impl FnMut(String)) -> Networks {
    let mut out = Vec::new();
    for n in list {
        match n.parse::<Cidr>() {
            Ok(c) => out.push(c),
            Err(e) => err(format!("{what}: {e}")),
        }
    }
    Networks(out)
}

/// Host names and path keys must each select one source.
fn check_across(list: &[Source], errors: &mut Vec<String>) {
    let mut hosts: HashMap<&str, &str> = HashMap::new();
    for s in list {
        for h in &s.hosts {
            if let Some(other) = hosts.insert(h, &s.name) {
                errors.push(format!(
                    "host {h:?} selects both source {other} and source {}",
                    s.name
                ));
            }
        }
    }
    let keyed: Vec<&Source> = list.iter().filter(|s| s.key_in_path).collect();
    for (i, a) in keyed.iter().enumerate() {
        for b in &keyed[i + 1..] {
            if a.keys.iter().any(|k| b.keys.contains(k)) {
                errors.push(format!(
                    "sources {} and {} share an api key and both take it in the path",
                    a.name, b.name
                ));
            }
        }
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Keys go into URLs as they are, so they hold only unreserved characters
/// ([`super::KEY_RULE`]).
pub(crate) fn valid_key(k: &str) -> bool {
    (16..=256).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

/// `invalid type: string "s3cr3t", expected ...` -> `invalid type: a string,
/// expected ...`; likewise integers and floats (`integer \`5\``). Field names
/// (`unknown field \`x\``) stay: they are not secrets, and they say what to fix.
pub(crate) fn redact_values(message: &str) -> String {
    let mut out = message.to_owned();
    for (opener, close, plain) in [
        ("string \"", '"', "a string"),
        ("integer `", '`', "an integer"),
        ("floating point `", '`', "a number"),
    ] {
        let mut redacted = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(opener) {
            redacted.push_str(&rest[..i]);
            redacted.push_str(plain);
            let after = &rest[i + opener.len()..];
            rest = after.find(close).map_or("", |end| &after[end + 1..]);
        }
        redacted.push_str(rest);
        out = redacted;
    }
    out
}
