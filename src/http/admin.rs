//! The admin listener: `/metrics`, `/healthz`, `/readyz`, and the console
//! (`/`, `/sources`, `/sources/{name}/recent`, `/unmatched/recent`). Never on
//! the public port.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};

use super::reply::{ok, rejected, Body};
use crate::config::admin::Denied;
use crate::console;
use crate::metrics as m;
use crate::pipeline::App;
use crate::rejection::Rejection;

/// The admin listener: the open routes and the console.
pub(crate) async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    respond(&app, &req, true)
}

/// The metrics listener (`[admin] metrics_addr`): the open routes only.
pub(crate) async fn handle_open(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    respond(&app, &req, false)
}

fn respond(app: &Arc<App>, req: &Request<Incoming>, with_console: bool) -> Response<Body> {
    if req.method() != Method::GET {
        return rejected(
            Rejection::MethodNotAllowed(crate::rejection::Allow::Get),
            false,
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let ready = app.ready();
            let metrics = app.metrics();
            metrics.gauge(m::READY).set(if ready { 1.0 } else { 0.0 });
            metrics
                .gauge(m::CONSOLE_BYTES)
                .set(app.console.bytes() as f64);
            let mut resp = Response::new(Full::new(Bytes::from(metrics.render())));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/healthz" => ok("ok\n"),
        "/readyz" => match app.not_ready() {
            None => ok("ready\n"),
            Some(why) => {
                let mut resp = rejected(Rejection::NotReady, false);
                *resp.body_mut() = Full::new(Bytes::from(format!("not ready: {why}\n")));
                resp
            }
        },
        path if with_console => console(app, req, path),
        _ => rejected(Rejection::NotFound, false),
    }
}

/// The console's routes, for a request that passes [`AdminAccess::check`].
fn console(app: &App, req: &Request<Incoming>, path: &str) -> Response<Body> {
    if let Err(denied) = app.admin.check(req.headers()) {
        return match (denied, path) {
            (Denied::ForeignHost, _) => status_text(
                StatusCode::MISDIRECTED_REQUEST,
                "this Host is not one of the console's names ([admin] hosts)\n",
            ),
            // The page holds no data: it is the form that asks for the token.
            (Denied::NoToken, "/") => {
                let mut resp = page();
                *resp.status_mut() = StatusCode::UNAUTHORIZED;
                resp
            }
            (Denied::NoToken, _) => {
                let mut resp = status_text(
                    StatusCode::UNAUTHORIZED,
                    "the console needs the admin token: Authorization: Bearer <token>\n",
                );
                resp.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                resp
            }
        };
    }
    match path {
        "/" => page(),
        "/sources" => json(console::sources_json(&app.console, &app.sources.load())),
        "/unmatched/recent" => {
            json(console::recent_json(&app.console, &app.sources.load(), None).unwrap_or_default())
        }
        path => match path
            .strip_prefix("/sources/")
            .and_then(|p| p.strip_suffix("/recent"))
        {
            Some(name) => {
                match console::recent_json(&app.console, &app.sources.load(), Some(name)) {
                    Some(v) => json(v),
                    None => rejected(Rejection::NotFound, false),
                }
            }
            None => rejected(Rejection::NotFound, false),
        },
    }
}

fn page() -> Response<Body> {
    with_type(console::page::HTML.into(), "text/html; charset=utf-8")
}

fn status_text(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = with_type(
        Bytes::from_static(text.as_bytes()),
        "text/plain; charset=utf-8",
    );
    *resp.status_mut() = status;
    resp
}

fn json(value: serde_json::Value) -> Response<Body> {
    with_type(value.to_string().into(), "application/json")
}

/// A 200 with `body` as `content_type`, never cached (the console refreshes).
fn with_type(body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
