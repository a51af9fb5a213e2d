//! Reloading the sources on SIGHUP: the config file is read again and its
//! sources swapped in whole; a config with problems is refused and the running
//! sources stay. Nothing else of the config changes without a restart.

use std::sync::Arc;

use tracing::{info, warn};

use crate::{config, pipeline, Config};

/// Reloads the sources on every SIGHUP, for as long as the gateway runs.
pub(crate) async fn on_hangup(app: Arc<pipeline::App>, running: Config) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "Cannot listen for SIGHUP; sources will not reload.");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            // Reading the file (and any secret files it names) is disk work.
            let (a, r) = (app.clone(), running.clone());
            let _ = tokio::task::spawn_blocking(move || reload(&a, &r, &config::ProcessEnv)).await;
        }
    }
    #[cfg(not(unix))]
    let _ = (app, running);
}

/// Reads the config file again and swaps in its sources; listeners, open
/// connections and requests in flight are untouched. A config with problems
/// is refused and the running sources stay. Other settings (addresses, Kafka,
/// limits) take effect only on a restart.
pub fn reload(
    app: &pipeline::App,
    running: &Config,
    env: &dyn config::Env,
) -> Result<usize, config::ConfigErrors> {
    let Some(path) = running.path.as_deref() else {
        warn!("Got SIGHUP, but the gateway runs without a config file; nothing to reload.");
        return Ok(0);
    };
    info!(path = %path.display(), "Got SIGHUP; reading the sources again.");
    let next = Config::load(Some(path), env).and_then(|mut c| {
        // Keys the running gateway made up (the embedded first run) stay.
        c.api_key = c.api_key.or_else(|| running.api_key.clone());
        c.pixel_key = c.pixel_key.or_else(|| running.pixel_key.clone());
        c.serving().map_err(|e| config::ConfigErrors(vec![e]))
    });
    match next {
        Ok(sources) => {
            let n = sources.len();
            app.sources.store(sources);
            let metrics = app.metrics();
            metrics
                .counter_with(crate::metrics::CONFIG_RELOADS, &[("result", "applied")])
                .increment(1);
            metrics.gauge(crate::metrics::SOURCES).set(n as f64);
            info!(path = %path.display(), sources = n, "Reloaded the sources.");
            Ok(n)
        }
        Err(e) => {
            app.metrics()
                .counter_with(crate::metrics::CONFIG_RELOADS, &[("result", "refused")])
                .increment(1);
            warn!(
                path = %path.display(),
                problems = %e.0.join("; ").escape_debug(),
                "Refused the new config; the running sources stay."
            );
            Err(e)
        }
    }
}
