//! Debian's Chromium, headless, for the tests that need a real browser.

use std::process::Command;

/// Loads `url` in headless Chromium with the profile in `profile` (and
/// `extra` flags) and returns the page's DOM once it has loaded and its
/// scripts have had three seconds of virtual time.
pub fn chromium(url: &str, profile: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run chromium ({e}); scripts/test.sh installs Debian's chromium")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium: {stderr}");
    // A page that failed to load dumps nothing; say why.
    let dumping = extra.contains(&"--dump-dom");
    assert!(
        !dumping || !out.stdout.is_empty(),
        "chromium loaded nothing from {url}: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
