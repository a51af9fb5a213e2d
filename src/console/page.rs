//! The console's page: one HTML file served from the binary, no external asset.

/// `GET /` on the admin listener.
pub(crate) const HTML: &str = include_str!("page.html");
