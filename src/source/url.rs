//! The postback URL an operator hands to a sender: the source's path, its
//! secret, and each role's parameter with the platform's own macro in the value
//! position (`{aff_sub}`, `#price#`, `REPLACE`), for the platform to fill in.

use super::presets::{preset, MacroStyle, Role};
use super::Source;

/// How a source's URLs are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    /// Roles in URL order with the macro the platform fills in.
    pub macros: Vec<(Role, String)>,
    /// For roles the source maps but the platform preset does not list.
    pub style: MacroStyle,
    /// The platform posts its fields in a form body; the URL carries only the key.
    pub body_fields: bool,
}

impl UrlTemplate {
    pub fn reference() -> UrlTemplate {
        let p = preset("reference").expect("the reference preset exists");
        UrlTemplate {
            macros: p.macros,
            style: p.style,
            body_fields: p.body_fields,
        }
    }
}

/// What `postback-gateway postback-url` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUrls {
    pub postback: String,
    /// When the source takes pixels.
    pub pixel: Option<String>,
    /// Something the operator must know about the URL, in one sentence.
    pub note: Option<String>,
}

/// The URLs for `source` under `base` (`https://pb.example.com`, no query).
pub fn source_urls(source: &Source, base: &str) -> Result<SourceUrls, String> {
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://"))
        || base.contains(['?', '#'])
        || base.len() <= "https://".len()
    {
        return Err(format!(
            "--base-url {base:?} must be like https://pb.example.com (scheme and host, no query)"
        ));
    }
    let names = &source.rules.names;
    let key = source.first_key();
    // The S2S URL carries the api key; the pixel URL, which sits in a public
    // page, carries the pixel key or none, never the api key.
    let mut query: Vec<String> = Vec::new();
    let mut pixel_query: Vec<String> = Vec::new();
    if let Some(param) = names.api_key.first() {
        if let (Some(k), false) = (key, source.key_in_path) {
            query.push(format!("{}={k}", encode(param)));
        }
        if let Some(k) = source.first_pixel_key() {
            pixel_query.push(format!("{}={k}", encode(param)));
        }
    }
    let mut listed = Vec::new();
    if !source.url.body_fields {
        let extra = Role::TEMPLATE_IDS
            .into_iter()
            .filter(|r| !source.url.macros.iter().any(|(m, _)| m == r))
            .map(|r| (r, source.url.style.wrap(r.as_str())));
        let all = source.url.macros.iter().cloned().chain(extra);
        for (role, macro_text) in all {
            if let Some(param) = role.names(names).first() {
                query.push(format!("{}={macro_text}", encode(param)));
                pixel_query.push(format!("{}={macro_text}", encode(param)));
                listed.push(role);
            }
        }
    }
    let joined = |q: Vec<String>| {
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    };
    let (query, pixel_query) = (joined(query), joined(pixel_query));
    let (postback_path, pixel_path) = match (&*source.name, source.key_in_path, key) {
        (_, true, Some(k)) => (format!("/{k}/postback"), None),
        ("default", _, _) => ("/postback".to_owned(), Some("/pixel".to_owned())),
        (n, _, _) => (format!("/postback/{n}"), Some(format!("/pixel/{n}"))),
    };
    let pixel = match pixel_path {
        Some(p) if source.pixels => Some(format!("{base}{p}{pixel_query}")),
        _ => None,
    };
    let note = if source.url.body_fields {
        let fields: Vec<&str> = [Role::Tracking, Role::Amount, Role::Txid, Role::Status]
            .into_iter()
            .filter_map(|r| r.names(names).first().map(String::as_str))
            .collect();
        Some(format!(
            "The platform posts the conversion fields as a form body to this URL ({}).",
            fields.join(", ")
        ))
    } else if source.hosts.is_empty() {
        None
    } else {
        Some(format!(
            "This source is also selected by the host names {}: with one of them as the \
             base URL, /postback and /pixel work without the source name.",
            source.hosts.join(", ")
        ))
    };
    Ok(SourceUrls {
        postback: format!("{base}{postback_path}{query}"),
        pixel,
        note,
    })
}

/// Percent-encodes a parameter name (`transaction[amount]`); macros are left
/// as the platform writes them.
fn encode(s: &str) -> String {
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
    fn default_source_url_is_the_reference_format() {
        let s = Source::new("default", vec!["k".repeat(16)], ParseRules::reference());
        let u = source_urls(&s, "https://pb.example.com/").unwrap();
        let k = "k".repeat(16);
        assert_eq!(
            u.postback,
            format!("https://pb.example.com/postback?api_key={k}&tracking={{tracking}}&amount={{amount}}&txid={{txid}}")
        );
        assert_eq!(
            u.pixel, None,
            "a keyed source takes no pixels without pixel keys"
        );
        // With a pixel key the pixel URL carries that key, never the api key.
        let mut s = s;
        s.set_pixel_keys(vec!["p".repeat(16)]);
        s.pixels = true;
        let u = source_urls(&s, "https://pb.example.com/").unwrap();
        let pixel = u.pixel.unwrap();
        assert_eq!(
            pixel,
            u.postback
                .replace("/postback?", "/pixel?")
                .replace(&k, &"p".repeat(16))
        );
        assert!(!pixel.contains(&k));
        assert!(source_urls(&s, "pb.example.com").is_err());
        assert!(source_urls(&s, "https://pb.example.com/?x=1").is_err());
    }
}
