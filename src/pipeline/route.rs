//! Which endpoint a request is for: `/postback`, `/postback/{source}`,
//! `/{key}/postback`, `/pixel`, `/pixel.gif`, `/pixel/{source}`; anything else
//! is 404, a known path with another method 405 (with the methods it takes),
//! and `OPTIONS` on a pixel endpoint a preflight's answer.

use super::Method;
use crate::event::Kind;
use crate::rejection::{Allow, Rejection};

/// How a request names its source.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Target<'r> {
    /// `/postback/{name}`, `/pixel/{name}`, or no name (host, then `default`).
    Named(Option<&'r str>),
    /// `/{key}/postback`: the key selects and authenticates the source.
    PathKey(&'r str),
}

/// The endpoint of `path` and how it names its source.
pub(super) fn route(method: Method, path: &str) -> Result<(Kind, Target<'_>), Rejection> {
    let path = without_trailing_slash(path);
    match named(method, path) {
        Ok((kind, name)) => Ok((kind, Target::Named(name))),
        Err(Rejection::NotFound) => match key_route(path) {
            Some(key) if get_or_post(method) => Ok((Kind::S2s, Target::PathKey(key))),
            Some(_) => Err(Rejection::MethodNotAllowed(Allow::GetPost)),
            None => Err(Rejection::NotFound),
        },
        Err(r) => Err(r),
    }
}

fn get_or_post(method: Method) -> bool {
    matches!(method, Method::Get | Method::Post)
}

/// The endpoints that name their source (or none) in the path.
fn named(method: Method, path: &str) -> Result<(Kind, Option<&str>), Rejection> {
    let (kind, source, allow) = match path {
        "/postback" => (Kind::S2s, None, Allow::GetPost),
        "/pixel" => (Kind::Pixel, None, Allow::GetPost),
        "/pixel.gif" => (Kind::Pixel, None, Allow::Get),
        p => match (p.strip_prefix("/postback/"), p.strip_prefix("/pixel/")) {
            (Some(name), _) if !name.is_empty() && !name.contains('/') => {
                (Kind::S2s, Some(name), Allow::GetPost)
            }
            (_, Some(name)) if !name.is_empty() && !name.contains('/') => {
                (Kind::Pixel, Some(name), Allow::GetPost)
            }
            _ => return Err(Rejection::NotFound),
        },
    };
    match (method, allow) {
        (Method::Get, _) | (Method::Post, Allow::GetPost) => Ok((kind, source)),
        // A browser asks before a beacon POST with a JSON body; S2S senders
        // and link checkers get the 405 and its Allow.
        (Method::Options, Allow::GetPost) if kind == Kind::Pixel => Err(Rejection::Options),
        _ => Err(Rejection::MethodNotAllowed(allow)),
    }
}

/// `path` without one trailing slash: a URL pasted into a sender's form often
/// gains one (`/postback/?...`), and it names the same endpoint.
fn without_trailing_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    }
}

/// The key of a `/{key}/postback` path.
fn key_route(path: &str) -> Option<&str> {
    let key = path.strip_prefix('/')?.strip_suffix("/postback")?;
    (!key.is_empty() && !key.contains('/')).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_path_and_method() {
        use Method::{Get, Options, Other, Post};
        use Target::{Named, PathKey};
        let ok = |m, p| route(m, p).ok();
        assert_eq!(ok(Get, "/postback"), Some((Kind::S2s, Named(None))));
        assert_eq!(
            ok(Post, "/postback/acme"),
            Some((Kind::S2s, Named(Some("acme"))))
        );
        assert_eq!(ok(Post, "/pixel"), Some((Kind::Pixel, Named(None))));
        assert_eq!(ok(Get, "/pixel.gif"), Some((Kind::Pixel, Named(None))));
        assert_eq!(
            ok(Get, "/pixel/shop"),
            Some((Kind::Pixel, Named(Some("shop"))))
        );
        assert_eq!(ok(Post, "/k3y/postback"), Some((Kind::S2s, PathKey("k3y"))));
        let err = |m, p| route(m, p).err();
        let not_allowed = |a| Some(Rejection::MethodNotAllowed(a));
        assert_eq!(err(Post, "/pixel.gif"), not_allowed(Allow::Get));
        assert_eq!(err(Options, "/pixel.gif"), not_allowed(Allow::Get));
        assert_eq!(err(Other, "/postback"), not_allowed(Allow::GetPost));
        assert_eq!(err(Options, "/postback/acme"), not_allowed(Allow::GetPost));
        assert_eq!(err(Other, "/k3y/postback"), not_allowed(Allow::GetPost));
        assert_eq!(err(Options, "/pixel"), Some(Rejection::Options));
        assert_eq!(err(Options, "/pixel/shop"), Some(Rejection::Options));
        assert_eq!(err(Get, "/postback/a/b"), Some(Rejection::NotFound));
        assert_eq!(err(Get, "/"), Some(Rejection::NotFound));
        assert_eq!(err(Get, "/a/b/postback"), Some(Rejection::NotFound));
        // A trailing slash names the same endpoint; two do not.
        assert_eq!(ok(Get, "/postback/"), Some((Kind::S2s, Named(None))));
        assert_eq!(ok(Get, "/pixel/"), Some((Kind::Pixel, Named(None))));
        assert_eq!(
            ok(Get, "/postback/acme/"),
            Some((Kind::S2s, Named(Some("acme"))))
        );
        assert_eq!(err(Get, "/postback//"), Some(Rejection::NotFound));
        assert_eq!(ok(Get, "/k3y/postback/"), Some((Kind::S2s, PathKey("k3y"))));
    }
}
