//! A real Prometheus Alertmanager on loopback for tests (Debian's
//! `prometheus-alertmanager`, installed with apt-get when missing;
//! `KEELSON_TEST_ALERTMANAGER` points at another binary). It routes every
//! alert to one webhook receiver — Keelson — with bearer-token auth, groups
//! for a second, and repeats notifications every few seconds so that tests
//! see duplicates. Killed when dropped.

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_DEADLINE: Duration = Duration::from_secs(60);
const PORT_ATTEMPTS: usize = 3;

fn bin() -> PathBuf {
    std::env::var_os("KEELSON_TEST_ALERTMANAGER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus-alertmanager"))
}

/// A running Alertmanager.
pub struct Alertmanager {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Alertmanager {
    /// Starts Alertmanager sending every alert group to `webhook_url` with
    /// `Authorization: Bearer <token>` (Alertmanager's `http_config`),
    /// `send_resolved`, group wait and interval of 1 s, repeat interval `repeat`.
    pub async fn start(
        webhook_url: &str,
        token: &str,
        repeat: &str,
    ) -> anyhow::Result<Alertmanager> {
        ensure_installed()?;
        let dir = tempfile::Builder::new()
            .prefix("keelson-alertmanager-")
            .tempdir()
            .context("creating a temporary directory for Alertmanager")?;
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: keelson\n  group_by: [alertname, keptn_service]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: {repeat}\n\
                 receivers:\n  - name: keelson\n    webhook_configs:\n      - url: {webhook_url}\n        send_resolved: true\n        http_config:\n          authorization:\n            type: Bearer\n            credentials: {token}\n"
            ),
        )?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = crate::free_port();
            let log_path = dir.path().join("alertmanager.log");
            let log = std::fs::File::create(&log_path)?;
            let mut child = Command::new(bin())
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // No cluster: a single instance, nothing else listening.
                .arg("--cluster.listen-address=")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", bin().display()))?;
            let url = format!("http://127.0.0.1:{port}");
            let started = Instant::now();
            let outcome = loop {
                if let Some(status) = child.try_wait()? {
                    break Err(anyhow!("Alertmanager exited with {status}"));
                }
                if let Ok(r) = http.get(format!("{url}/-/ready")).send().await {
                    if r.status().is_success() {
                        break Ok(());
                    }
                }
                if started.elapsed() > READY_DEADLINE {
                    break Err(anyhow!(
                        "/-/ready did not answer 200 within {READY_DEADLINE:?}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            match outcome {
                Ok(()) => {
                    return Ok(Alertmanager {
                        url,
                        child,
                        dir,
                        http,
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    last = format!("{e}\n--- {} ---\n{log}", log_path.display());
                    if !log.contains("address already in use") {
                        break;
                    }
                }
            }
        }
        Err(anyhow!("Alertmanager never became ready: {last}"))
    }

    /// Posts alerts to Alertmanager's API (`POST /api/v2/alerts`), as
    /// Prometheus does: a firing alert has no `endsAt` in the past; sending it
    /// again with `endsAt` in the past resolves it.
    pub async fn post_alerts(&self, alerts: &Value) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/api/v2/alerts", self.url))
            .json(alerts)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "Alertmanager refused the alerts: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ensures the Alertmanager binary exists (Debian's `prometheus-alertmanager`,
/// installed with apt-get when missing).
pub fn ensure_installed() -> anyhow::Result<()> {
    crate::apt_install(
        "prometheus-alertmanager",
        || bin().is_file(),
        "Install Debian's prometheus-alertmanager package, or set KEELSON_TEST_ALERTMANAGER.",
    )
}
