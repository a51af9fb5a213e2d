//! The admin listener: `/metrics`, `/healthz`, `/readyz`. Never on the public port.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};

use super::reply::{ok, rejected, Body};
use crate::metrics as m;
use crate::pipeline::App;
use crate::rejection::Rejection;

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET {
        return rejected(Rejection::MethodNotAllowed, false);
    }
    match req.uri().path() {
        "/metrics" => {
            let ready = app.ready();
            metrics::gauge!(m::READY).set(if ready { 1.0 } else { 0.0 });
            let mut resp = Response::new(Full::new(Bytes::from(app.metrics.render())));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/healthz" => ok("ok\n"),
        "/readyz" if app.ready() => ok("ready\n"),
        "/readyz" => rejected(Rejection::NotReady, false),
        _ => rejected(Rejection::NotFound, false),
    }
}
