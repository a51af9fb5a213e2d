//! The postback URL an operator hands to a sender: the source's path, its
//! secret, and each role's parameter with the sending network's macro in the
//! value position (`{aff_sub}`, `#price#`), for the network to fill in.
//!
//! Two things are kept apart: the source's format (its preset: which
//! parameter names, statuses and amount shapes it accepts) and the network
//! that fires into it (which macros it fills, and what it fills them with).
//! Before a URL is printed, it is filled with the network's documented sample
//! values and run through the real parser: a URL the gateway would refuse is
//! never handed out.

use super::presets::{network_named, network_names, preset, Network, Role};
use super::Source;
use crate::postback::{parse, Params, Status};

/// How a source's URLs are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlTemplate {
    /// The network that fires into the source when none is named.
    pub network: Option<String>,
    /// The source's own macros, per role, over the network's.
    pub(crate) macros: Vec<(Role, String)>,
    /// A preset's macros for its own network (named first), over that
    /// network's: written only when that network fills the URL (impact fills
    /// `{ActionId}` as the impact format's token, and `{SubId1}`, the
    /// partner's click id, into every other format).
    pub(crate) preset_macros: Option<(String, Vec<(Role, String)>)>,
}

/// What `postback-gateway postback-url` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUrls {
    /// The S2S postback URL.
    pub postback: String,
    /// When the source takes pixels.
    pub pixel: Option<String>,
    /// Something the operator must know about the URL, one sentence each.
    pub notes: Vec<String>,
    /// Values the operator must replace with the sender's macros.
    pub placeholders: Vec<String>,
}

/// Why no URL was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// The command line is wrong (the base URL, an unknown network).
    Usage(String),
    /// The network sends what the source refuses, or omits what it needs.
    Mismatch(String),
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlError::Usage(m) | UrlError::Mismatch(m) => f.write_str(m),
        }
    }
}

/// The placeholder written for `role` when no network fills it. The gateway
/// refuses each of them as an unfilled macro, should one be left in.
pub fn placeholder(role: Role) -> String {
    match role {
        Role::Tracking => "REPLACE_CLICK_ID".to_owned(),
        Role::Txid => "REPLACE_CONVERSION_ID".to_owned(),
        other => format!("REPLACE_{}", other.as_str().to_ascii_uppercase()),
    }
}

/// The roles a URL without a network lists, when the source maps them.
const PLAIN_ROLES: [Role; 4] = [Role::Tracking, Role::Amount, Role::Txid, Role::Status];

/// The URLs for `source` under `base` (`https://pb.example.com`, no query),
/// with the macros of `network`, or of the source's own network when none is
/// named.
pub fn source_urls(
    source: &Source,
    base: &str,
    network: Option<&str>,
) -> Result<SourceUrls, UrlError> {
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://"))
        || base.contains(['?', '#'])
        || base.len() <= "https://".len()
    {
        return Err(UrlError::Usage(format!(
            "--base-url {base:?} must be like https://pb.example.com (scheme and host, no query)"
        )));
    }
    let network = match network.or(source.url.network.as_deref()) {
        None => None,
        Some(n) => Some(network_named(n).ok_or_else(|| {
            UrlError::Usage(format!(
                "no network {n:?}; the networks are {}",
                network_names().join(", ")
            ))
        })?),
    };
    let fields = fields(source, network).map_err(UrlError::Mismatch)?;
    let mut notes = Vec::new();
    let mut placeholders = Vec::new();
    let mut query = Vec::new();
    if let Some(network) = network {
        check_accepts(source, network, &fields).map_err(UrlError::Mismatch)?;
        notes.extend(network.note.clone());
        if network.posts_fields_of.is_some() {
            let names: Vec<&str> = fields.iter().map(|f| f.param.as_str()).collect();
            notes.push(format!(
                "{} posts the conversion fields as a form body to this URL ({}).",
                network.name,
                names.join(", ")
            ));
        }
    }
    for f in fields.iter().filter(|f| !f.in_body) {
        if f.is_placeholder() {
            placeholders.push(f.macro_text.clone());
        }
        query.push(format!("{}={}", encode(&f.param), f.macro_text));
    }
    if !source.hosts.is_empty() {
        notes.push(format!(
            "This source is also selected by the host names {}: with one of them as the \
             base URL, /postback and /pixel work without the source name.",
            source.hosts.join(", ")
        ));
    }

    // The S2S URL carries the api key; the pixel URL, which sits in a public
    // page, carries the pixel key or none, never the api key.
    let key_param = source.rules.names[Role::ApiKey].first().map(|p| encode(p));
    let key = source.first_key();
    let with_key = |k: Option<&str>| {
        let mut q = Vec::new();
        if let (Some(param), Some(k)) = (&key_param, k) {
            q.push(format!("{param}={k}"));
        }
        q.extend(query.iter().cloned());
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    };
    let (postback_path, pixel_path) = match (&*source.name, source.key_in_path, key) {
        (_, true, Some(k)) => (format!("/{k}/postback"), None),
        ("default", _, _) => ("/postback".to_owned(), Some("/pixel".to_owned())),
        (n, _, _) => (format!("/postback/{n}"), Some(format!("/pixel/{n}"))),
    };
    let s2s_key = if source.key_in_path { None } else { key };
    let pixel = match pixel_path {
        Some(p) if source.pixels => {
            Some(format!("{base}{p}{}", with_key(source.first_pixel_key())))
        }
        _ => None,
    };
    Ok(SourceUrls {
        postback: format!("{base}{postback_path}{}", with_key(s2s_key)),
        pixel,
        notes,
        placeholders,
    })
}

/// A value a network fills in, with the status it means (statuses only).
pub(crate) type Sample = (String, Option<Status>);

/// One parameter of the URL (or of the posted body).
#[derive(Debug, Clone)]
pub struct Field {
    /// The role it fills.
    pub role: Role,
    /// The parameter's name in the URL (or body).
    pub param: String,
    /// The network's macro, the source's own, or a placeholder.
    pub macro_text: String,
    /// The network posts it in a form body instead of filling the URL.
    pub in_body: bool,
    /// What the network fills in, each with the status it means (statuses only).
    pub samples: Vec<Sample>,
}

impl Field {
    /// A placeholder the operator replaces: no network fills it.
    pub(crate) fn is_placeholder(&self) -> bool {
        self.macro_text.starts_with("REPLACE_")
    }
}

/// The parameters a sender fills for `source`, in URL order.
pub fn fields(source: &Source, network: Option<&Network>) -> Result<Vec<Field>, String> {
    let names = &source.rules.names;
    let scoped: &[(Role, String)] = match (&source.url.preset_macros, network) {
        (Some((name, m)), Some(n)) if *name == n.name => m,
        _ => &[],
    };
    let own = |role: Role| {
        source
            .url
            .macros
            .iter()
            .chain(scoped)
            .find(|(r, _)| *r == role)
            .map(|(_, m)| m.clone())
    };
    let mut out: Vec<Field> = Vec::new();
    let mut push = |role: Role, macro_text: String, in_body: bool, samples| {
        if out.iter().any(|f| f.role == role) {
            return;
        }
        if let Some(param) = role.names(names).first() {
            out.push(Field {
                role,
                param: param.clone(),
                macro_text,
                in_body,
                samples,
            });
        }
    };
    let plain = |n: Option<&Network>, role: Role| -> Vec<Sample> {
        match (n, role) {
            (Some(n), Role::Status) if !n.statuses.is_empty() => n
                .statuses
                .iter()
                .map(|(w, s)| (w.clone(), Some(*s)))
                .collect(),
            (Some(n), _) => n.samples(role).iter().map(|v| (v.clone(), None)).collect(),
            (None, _) => Vec::new(),
        }
    };
    match network {
        Some(n) if n.posts_fields_of.is_some() => {
            let format = n.posts_fields_of.as_deref().unwrap_or_default();
            let theirs = &preset(format)
                .expect("checked when the data loads")
                .rules
                .names;
            for role in Role::ALL {
                if role != Role::ApiKey && role.names(theirs).first() != role.names(names).first() {
                    return Err(format!(
                        "{} posts its own fields, which source {} does not read as it \
                         does (the {} field is {:?}): give the source preset = \"{format}\"",
                        n.name,
                        source.name,
                        role.as_str(),
                        role.names(theirs).first().map_or("none", String::as_str),
                    ));
                }
            }
            for role in [
                Role::Tracking,
                Role::Amount,
                Role::Txid,
                Role::Status,
                Role::Currency,
            ] {
                push(role, String::new(), true, plain(Some(n), role));
            }
        }
        Some(n) => {
            for (role, m) in &n.macros {
                match own(*role) {
                    Some(mine) => push(*role, mine, false, plain(Some(n), *role)),
                    None if m.contains('@') => {
                        let (text, samples) = mapped_status(source, n, m)?;
                        push(*role, text, false, samples);
                    }
                    None => push(*role, m.clone(), false, plain(Some(n), *role)),
                }
            }
        }
        None => {
            for role in PLAIN_ROLES {
                push(
                    role,
                    own(role).unwrap_or_else(|| placeholder(role)),
                    false,
                    Vec::new(),
                );
            }
        }
    }
    for (role, m) in source.url.macros.iter().chain(scoped) {
        push(*role, m.clone(), false, plain(network, *role));
    }
    for role in Role::TEMPLATE_IDS {
        push(role, placeholder(role), false, Vec::new());
    }
    let filled = |role: Role| out.iter().any(|f| f.role == role);
    if let Some(n) = network {
        if !filled(Role::Tracking) {
            return Err(format!(
                "{} fills no click id that source {} reads; set [sources.{}.macros] tracking",
                n.name, source.name, source.name
            ));
        }
        if source.rules.amount.required && !filled(Role::Amount) {
            return Err(format!(
                "{} fills no amount, and source {} requires one; set [sources.{}.macros] \
                 amount, or [sources.{}.amount] required = false",
                n.name, source.name, source.name, source.name
            ));
        }
    }
    Ok(out)
}

/// A status macro that maps the network's words to the receiver's own
/// (Keitaro's `{status:lead=0 sale=1}`): each `@approved`, `@pending`,
/// `@declined` becomes the source's word for it; the network then sends those.
fn mapped_status(
    source: &Source,
    network: &Network,
    template: &str,
) -> Result<(String, Vec<Sample>), String> {
    // The network's own word when the source reads it the same way, then
    // the meaning's name, then the source's first word for it.
    let word_for = |meaning: Status| {
        let same = |w: &str| source.rules.statuses.get(w) == Some(&meaning);
        let theirs = network
            .statuses
            .iter()
            .find(|(w, m)| *m == meaning && same(w))
            .map(|(w, _)| w.clone());
        let mut words: Vec<&String> = source
            .rules
            .statuses
            .iter()
            .filter(|(_, s)| **s == meaning)
            .map(|(w, _)| w)
            .collect();
        words.sort();
        theirs
            .or_else(|| same(meaning.as_str()).then(|| meaning.as_str().to_owned()))
            .or_else(|| words.first().map(|w| (*w).clone()))
            .ok_or_else(|| {
                format!(
                    "{} sends a {} status, and source {} has no word for it; add one to \
                     [sources.{}.statuses]",
                    network.name,
                    meaning.as_str(),
                    source.name,
                    source.name
                )
            })
    };
    let mut text = template.to_owned();
    for meaning in [Status::Approved, Status::Pending, Status::Declined] {
        let at = format!("@{}", meaning.as_str());
        if text.contains(&at) {
            text = text.replace(&at, &word_for(meaning)?);
        }
    }
    let mut samples = Vec::new();
    for (_, meaning) in &network.statuses {
        samples.push((word_for(*meaning)?, Some(*meaning)));
    }
    Ok((text, samples))
}

/// Fills `fields` with the network's sample values, each combination in
/// turn, and runs the result through the parser with the source's rules:
/// every value the network documents must be accepted, and its statuses must
/// keep their meaning.
fn check_accepts(source: &Source, network: &Network, fields: &[Field]) -> Result<(), String> {
    let status_read = fields.iter().any(|f| f.role == Role::Status);
    if !status_read {
        if let Some((word, meaning)) = network
            .statuses
            .iter()
            .find(|(_, s)| *s != Status::Approved)
        {
            return Err(format!(
                "{} sends a status ({word} = {}) that source {} does not read, so it would \
                 be recorded as approved; map params.status",
                network.name,
                meaning.as_str(),
                source.name
            ));
        }
    }
    for (query, meaning) in sample_queries(fields) {
        let mut params = Params::new();
        let parsed = params
            .add_form(query.as_bytes())
            .and_then(|()| parse(&params, &source.rules));
        let refused = |why: String| {
            format!(
                "{} fills this source's URL with values source {} refuses ({why}): {query}",
                network.name, source.name
            )
        };
        let c = parsed.map_err(|r| refused(hint(r.as_str(), &source.name)))?;
        // Kept as sent rather than read (amount.unreadable = "keep"): the
        // event would carry no amount.
        if c.unread.amount {
            return Err(refused(hint("bad_amount", &source.name)));
        }
        if let Some(meaning) = meaning {
            if meaning != c.status {
                return Err(refused(format!(
                    "its status {} means {}, the source records {}; add it to \
                     [sources.{}.statuses]",
                    c.status_raw.as_deref().unwrap_or(""),
                    meaning.as_str(),
                    c.status.as_str(),
                    source.name
                )));
            }
        }
    }
    Ok(())
}

fn hint(reason: &str, source: &str) -> String {
    match reason {
        "bad_amount" => format!(
            "bad_amount: widen [sources.{source}.amount] (min_decimals = 0 takes 100 and 2.5; \
             max_decimals up to 6), or give the source the preset of the format the network sends"
        ),
        "bad_status" => format!(
            "bad_status: add the network's words to [sources.{source}.statuses], or set \
             unknown_status = \"accept\""
        ),
        other => other.to_owned(),
    }
}

/// How many rounds fill every sample of `fields` at least once.
pub fn rounds(fields: &[Field]) -> usize {
    fields
        .iter()
        .map(|f| f.samples.len())
        .max()
        .unwrap_or(1)
        .max(1)
}

/// Form-encoded queries with the network's samples in place of its macros,
/// each with the status it means: as many as the longest sample list, so
/// every documented value is tried. Placeholders are left out: the operator
/// fills them.
pub(crate) fn sample_queries(fields: &[Field]) -> Vec<(String, Option<Status>)> {
    (0..rounds(fields))
        .map(|i| {
            let mut meaning = None;
            let pairs: Vec<String> = fields
                .iter()
                .filter(|f| !f.is_placeholder() && !f.samples.is_empty())
                .map(|f| {
                    let (value, means) = &f.samples[i % f.samples.len()];
                    if f.role == Role::Status {
                        meaning = *means;
                    }
                    format!("{}={}", encode(&f.param), encode(value))
                })
                .collect();
            (pairs.join("&"), meaning)
        })
        .collect()
}

/// Percent-encodes a parameter name (`transaction[amount]`) or a sample
/// value (every byte outside the unreserved set, so `+`, `/` and `=` arrive
/// as themselves); macros are left as the platform writes them.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postback::ParseRules;

    #[test]
    fn every_placeholder_is_refused_as_an_unfilled_macro() {
        for role in Role::ALL {
            let p = placeholder(role);
            assert!(
                crate::postback::placeholders::is_placeholder(&p, &[]),
                "{p}"
            );
        }
    }

    /// A network whose amount a source would keep as sent (TUNE's
    /// `amount.unreadable = "keep"`) is refused like a bad amount: the URL
    /// would file conversions without their amount.
    #[test]
    fn an_amount_kept_unread_is_a_mismatch() {
        let mut rules = crate::source::presets::preset("tune")
            .unwrap()
            .rules
            .clone();
        rules.amount.keep_unreadable = true;
        let s = Source::new("t", vec!["k".repeat(16)], rules);
        let mut network = crate::source::presets::network_named("adjust")
            .unwrap()
            .clone();
        network
            .samples
            .insert(Role::Amount, vec!["3.99".into(), "2.5".into()]);
        let filled = fields(&s, Some(&network)).unwrap();
        let err = check_accepts(&s, &network, &filled).unwrap_err();
        assert!(err.contains("bad_amount"), "{err}");
        network.samples.insert(Role::Amount, vec!["3.99".into()]);
        let filled = fields(&s, Some(&network)).unwrap();
        assert_eq!(check_accepts(&s, &network, &filled), Ok(()));
    }

    #[test]
    fn default_source_url_is_the_reference_format() {
        let s = Source::new("default", vec!["k".repeat(16)], ParseRules::reference());
        let u = source_urls(&s, "https://pb.example.com/", None).unwrap();
        let k = "k".repeat(16);
        assert_eq!(
            u.postback,
            format!("https://pb.example.com/postback?api_key={k}&tracking=REPLACE_CLICK_ID&amount=REPLACE_AMOUNT&txid=REPLACE_CONVERSION_ID&status=REPLACE_STATUS")
        );
        assert_eq!(u.placeholders.len(), 4);
        assert_eq!(
            u.pixel, None,
            "a keyed source takes no pixels without pixel keys"
        );
        // With a pixel key the pixel URL carries that key, never the api key.
        let mut s = s;
        s.set_pixel_keys(vec!["p".repeat(16)]);
        s.pixels = true;
        let u = source_urls(&s, "https://pb.example.com/", None).unwrap();
        let pixel = u.pixel.unwrap();
        assert_eq!(
            pixel,
            u.postback
                .replace("/postback?", "/pixel?")
                .replace(&k, &"p".repeat(16))
        );
        assert!(!pixel.contains(&k));
        assert!(source_urls(&s, "pb.example.com", None).is_err());
        assert!(source_urls(&s, "https://pb.example.com/?x=1", None).is_err());
    }
}
