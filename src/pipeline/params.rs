//! A postback's parameters: its query, merged with a POST body read as its
//! content type says (form, JSON, or for pixels the `text/plain` query string
//! that `navigator.sendBeacon` sends).

use super::{Method, Request};
use crate::event::Kind;
use crate::postback::Params;
use crate::rejection::Rejection;
use crate::source::Source;

/// The query's parameters, then a POST body's; a key in both is a duplicate.
pub(super) fn read(kind: Kind, source: &Source, req: &Request<'_>) -> Result<Params, Rejection> {
    let mut params = Params::new();
    if let Some(q) = req.query {
        params
            .add_query(q.as_bytes(), source.rules.plus_as_space)
            .map_err(Rejection::Invalid)?;
    }
    if req.method == Method::Post {
        let body = req.body.as_ref().map_err(|r| *r)?;
        if !body.is_empty() {
            add_body(
                &mut params,
                kind,
                req.content_type,
                body,
                source.rules.json_nested,
            )?;
        }
    }
    Ok(params)
}

fn add_body(
    params: &mut Params,
    kind: Kind,
    content_type: Option<&str>,
    body: &[u8],
    json_nested: bool,
) -> Result<(), Rejection> {
    let json = |params: &mut Params| {
        if json_nested {
            params.add_nested_json(body)
        } else {
            params.add_json(body)
        }
    };
    let ctype = content_type.map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let added = match ctype.as_deref() {
        Some("application/x-www-form-urlencoded") => params.add_form(body),
        Some("application/json") => json(params),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => json(params),
        // navigator.sendBeacon sends a string body as text/plain.
        Some("text/plain") | None if kind == Kind::Pixel => params.add_form(body),
        _ => return Err(Rejection::UnsupportedContentType),
    };
    added.map_err(Rejection::Invalid)
}
