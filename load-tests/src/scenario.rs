//! Scenario files (`load-tests/scenarios/*.toml`): how long, how many
//! connections, closed or open loop, and the mix of postbacks. Every run is
//! bounded twice, by time and by request count.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pacing {
    /// Each connection sends its next request as soon as the last reply came.
    Closed,
    /// Requests are due at a fixed rate whatever the replies do; latency is
    /// measured from the time a request was due, so a stall shows in full.
    Open,
}

/// How requests use connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connections {
    /// One keep-alive connection per worker, reopened only after an error.
    KeepAlive,
    /// A new connection for every request (`Connection: close`).
    New,
    /// Even workers keep alive, odd workers open a new connection each time.
    Mixed,
}

/// Shares of the three kinds of postback, in percent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// A new conversion with a token never sent before.
    pub valid: u32,
    /// The exact bytes of a postback already answered `OK`.
    pub repeat: u32,
    /// A postback the gateway must refuse (bad amount, macro, escape, ...).
    pub malformed: u32,
}

/// Shares of the three ways of sending, in percent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Methods {
    /// `GET /postback?...`, the usual server-to-server call.
    pub s2s_get: u32,
    /// `POST /postback` with an `application/x-www-form-urlencoded` body.
    pub form_post: u32,
    /// `GET /pixel.gif?...`, as a browser loads an image pixel.
    pub pixel: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub pacing: Pacing,
    pub connections: Connections,
    /// Workers, each with at most one request in flight.
    pub concurrency: usize,
    pub duration_secs: f64,
    /// Upper bound on requests, whatever the duration.
    pub max_requests: u64,
    /// Requests per second in open loop; ignored in closed loop.
    #[serde(default)]
    pub rate: f64,
    /// A request without a complete reply by then counts as a timeout.
    #[serde(default = "default_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Open loop: busy-wait the last millisecond before a due time, since
    /// tokio's timer only has millisecond resolution.
    #[serde(default)]
    pub precise_pacing: bool,
    pub mix: Mix,
    pub methods: Methods,
}

fn default_timeout_ms() -> u64 {
    5000
}

impl Scenario {
    /// About how many new conversions a run sends: all requests in open loop
    /// (rate × duration), `max_requests` in closed loop, valid share only.
    pub fn expected_new_conversions(&self) -> usize {
        let requests = match self.pacing {
            Pacing::Open => (self.rate * self.duration_secs * 1.05) as u64,
            Pacing::Closed => self.max_requests,
        }
        .min(self.max_requests);
        (requests * u64::from(self.mix.valid) / 100) as usize
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let s: Scenario =
            toml::from_str(&text).with_context(|| format!("bad scenario {}", path.display()))?;
        s.validate()
            .with_context(|| format!("bad scenario {}", path.display()))?;
        Ok(s)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.mix.valid + self.mix.repeat + self.mix.malformed != 100 {
            bail!("mix shares must add up to 100");
        }
        if self.methods.s2s_get + self.methods.form_post + self.methods.pixel != 100 {
            bail!("method shares must add up to 100");
        }
        if self.concurrency == 0 || self.concurrency > 10_000 {
            bail!("concurrency must be 1..=10000");
        }
        if !(self.duration_secs > 0.0 && self.duration_secs <= 600.0) {
            bail!("duration_secs must be in (0, 600]");
        }
        if self.max_requests == 0 {
            bail!("max_requests must be at least 1");
        }
        if self.pacing == Pacing::Open && !(self.rate > 0.0 && self.rate <= 1_000_000.0) {
            bail!("an open-loop scenario needs a rate in (0, 1000000]");
        }
        Ok(())
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Whether worker `i` opens a new connection for every request.
    pub fn new_connection_per_request(&self, worker: usize) -> bool {
        match self.connections {
            Connections::KeepAlive => false,
            Connections::New => true,
            Connections::Mixed => worker % 2 == 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::from_file(&path).unwrap();
                n += 1;
            }
        }
        assert!(n >= 4);
    }

    #[test]
    fn shares_must_add_up() {
        let text = r#"
            name = "x"
            pacing = "closed"
            connections = "keep_alive"
            concurrency = 1
            duration_secs = 1
            max_requests = 10
            mix = { valid = 90, repeat = 5, malformed = 4 }
            methods = { s2s_get = 100, form_post = 0, pixel = 0 }
        "#;
        let s: Scenario = toml::from_str(text).unwrap();
        assert!(s.validate().is_err());
    }
}
