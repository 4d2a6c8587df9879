//! What `salve run` starts around the engine: the gRPC API, the metrics endpoint, and the
//! triggers of a rule reload (a change in the rules directory, SIGHUP).
//!
//! Each of them reaches the engine through the same [`ControlHandle`], as a job on the
//! engine's thread; a reload from any trigger takes the one path that start-up takes.

use crate::config::Config;
use crate::load_rules_with;
use salve_connectors::{ControlHandle, RuleLoader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Why the operator surface could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC API could not start.
    #[error("api.listen: {0}")]
    Api(#[from] salve_api::grpc::ApiError),
    /// The metrics endpoint could not start.
    #[error("metrics.listen: {0}")]
    Metrics(#[from] salve_api::metrics::MetricsError),
    /// The rules directory cannot be watched.
    #[error("rules.dir {dir}: cannot watch it for changes: {source}")]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: notify::Error,
    },
}

/// Builds the rule set the way start-up does: the configured directory (or the shipped
/// rules) with the configured parameter overrides.
pub fn rule_loader(config: &Config) -> RuleLoader {
    let dir = config.rules.dir.clone();
    let params = config.rules.params.clone();
    Arc::new(move |runtime| load_rules_with(runtime, dir.as_deref(), &params))
}

/// The running servers and reload triggers.
pub struct Operator {
    /// The gRPC API's address, when it is on.
    pub api: Option<SocketAddr>,
    /// The metrics endpoint's address, when it is on.
    pub metrics: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Kept alive for as long as the directory is watched.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("api", &self.api)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Operator {
    /// Binds the servers and starts the reload triggers; call from within a Tokio runtime.
    /// The addresses are known when this returns, so the banner can print them.
    pub async fn start(config: &Config, control: ControlHandle) -> Result<Self, ServeError> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };

        let mut api = None;
        if !config.api.listen.trim().is_empty() {
            let server = salve_api::grpc::bind(&config.api, control.clone()).await?;
            api = Some(server.local_addr());
            let shutdown = until_stopped(stopped.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(error) = server.serve(shutdown).await {
                    tracing::error!("the gRPC API stopped: {error}");
                }
            }));
        }
        let mut metrics = None;
        if !config.metrics.listen.trim().is_empty() {
            let server = salve_api::metrics::bind(&config.metrics, control.clone()).await?;
            metrics = Some(server.local_addr());
            let shutdown = until_stopped(stopped.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(error) = server.serve(shutdown).await {
                    tracing::error!("the metrics endpoint stopped: {error}");
                }
            }));
        }

        let (reloads, requests) = mpsc::unbounded_channel::<&'static str>();
        let debounce = Duration::from_millis(config.rules.reload_debounce_ms);
        tasks.push(tokio::spawn(reload_on_request(
            control.clone(),
            requests,
            debounce,
            stopped.clone(),
        )));
        tasks.push(tokio::spawn(reload_on_hangup(reloads.clone(), stopped)));
        let watcher = match &config.rules.dir {
            Some(dir) if config.rules.watch => Some(watch_rules(dir, reloads)?),
            _ => None,
        };
        Ok(Self {
            api,
            metrics,
            stop,
            tasks,
            _watcher: watcher,
        })
    }

    /// Stops the servers, letting calls in progress finish, and the reload triggers.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// Watches `dir` and asks for a reload when a rule file in it changes.
fn watch_rules(
    dir: &Path,
    reloads: mpsc::UnboundedSender<&'static str>,
) -> Result<notify::RecommendedWatcher, ServeError> {
    use notify::{RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            // Editors write swap and backup files beside the rules; only rule files count.
            Ok(event) if event.paths.iter().any(|p| is_rule_file(p)) => {
                if !event.kind.is_access() {
                    let _ = reloads.send("file");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!("watching the rules directory: {error}"),
        }
    })
    .map_err(|source| ServeError::Watch {
        dir: dir.to_owned(),
        source,
    })?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|source| ServeError::Watch {
            dir: dir.to_owned(),
            source,
        })?;
    tracing::info!(dir = %dir.display(), "watching the rules directory for changes");
    Ok(watcher)
}

fn is_rule_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "rhai")
}

/// Asks for a reload on every SIGHUP, as daemons conventionally do.
async fn reload_on_hangup(
    reloads: mpsc::UnboundedSender<&'static str>,
    mut stopped: watch::Receiver<bool>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!("cannot listen for SIGHUP; reload with salve ctl reload: {error}");
                return;
            }
        };
        loop {
            tokio::select! {
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reloading the rules");
                    let _ = reloads.send("signal");
                }
                _ = stopped.wait_for(|stop| *stop) => return,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (reloads, stopped.wait_for(|stop| *stop).await);
    }
}

/// Runs the reloads asked for. Requests that arrive within `debounce` of each other make one
/// reload once they stop: an editor saving, a `git checkout` of many files.
async fn reload_on_request(
    control: ControlHandle,
    mut requests: mpsc::UnboundedReceiver<&'static str>,
    debounce: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let trigger = tokio::select! {
            request = requests.recv() => match request {
                Some(trigger) => trigger,
                None => return,
            },
            _ = stopped.wait_for(|stop| *stop) => return,
        };
        // A signal is one deliberate request; file events come in bursts.
        if trigger == "file" {
            while let Ok(Some(_)) = tokio::time::timeout(debounce, requests.recv()).await {}
        }
        match control.reload(trigger).await {
            Ok(outcome) if outcome.succeeded() => {}
            // The engine logged the errors with file and line; the old rules run on.
            Ok(_) => {}
            Err(error) => tracing::warn!(trigger, "rules not reloaded: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_rule_file;
    use std::path::Path;

    #[test]
    fn only_rule_files_trigger_a_reload() {
        assert!(is_rule_file(Path::new("/etc/salve/rules/crash_loop.rhai")));
        assert!(!is_rule_file(Path::new(
            "/etc/salve/rules/.crash_loop.rhai.swp"
        )));
        assert!(!is_rule_file(Path::new(
            "/etc/salve/rules/crash_loop.rhai~"
        )));
        assert!(!is_rule_file(Path::new("/etc/salve/rules/4913")));
    }
}
