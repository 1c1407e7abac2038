//! Knative mode on loopback: every function's HTTP service (the same app the
//! `<name>-http` binaries serve) on its own port and its own connection pool
//! to a fresh PostgreSQL database, behind the [`Broker`] harness configured
//! from the Triggers in `infra/knative/`.

use crate::broker::{triggers_from_manifests, Broker};
use anyhow::Context;
use keelson_core::ports::Clock;
use keelson_knative::{Function, FunctionConfig};
use std::path::PathBuf;
use std::sync::Arc;

/// Knative Service names of the manifests, per function.
pub const SERVICES: [(&str, Function); 8] = [
    ("keelson-api", Function::Api),
    ("keelson-shipyard", Function::Shipyard),
    ("keelson-datastore", Function::Datastore),
    ("keelson-lighthouse", Function::Lighthouse),
    ("keelson-approval", Function::Approval),
    ("keelson-remediation", Function::Remediation),
    ("keelson-prometheus", Function::Prometheus),
    ("keelson-dead-letters", Function::DeadLetter),
];

/// The manifests' directory.
pub fn manifests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/knative")
}

/// A running Knative-mode deployment.
pub struct KnativeStack {
    /// The broker.
    pub broker: Broker,
    /// The API's base URL (`…/api`).
    pub api_url: String,
    /// Service name → URL.
    pub services: Vec<(String, String)>,
    /// The database.
    pub database_url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KnativeStack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl KnativeStack {
    /// Starts the functions `run` chooses (all by default) on a fresh database.
    /// The manifests' back-off delays are shortened by `time_scale`.
    pub async fn start(
        cfg: FunctionConfig,
        clock: Arc<dyn Clock>,
        run: impl Fn(Function) -> bool,
        time_scale: f64,
    ) -> anyhow::Result<KnativeStack> {
        let triggers = triggers_from_manifests(&manifests())?;
        let broker = Broker::start(triggers, time_scale).await?;
        let database_url = keelson_postgres::testing::fresh_database().await;
        let mut cfg = cfg;
        cfg.sink = Some(broker.url.clone());
        let mut tasks = Vec::new();
        let mut services = Vec::new();
        let mut api_url = String::new();
        // Every service has its address before any starts: the shipyard's
        // sweep may publish at once, and the broker must know where to deliver.
        let mut listeners = Vec::new();
        for (name, f) in SERVICES {
            if !run(f) {
                continue;
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            broker.set_service(name, &url);
            if f == Function::Api {
                api_url = format!("{url}/api");
            }
            services.push((name.to_string(), url));
            listeners.push((name, f, listener));
        }
        for (name, f, listener) in listeners {
            // One pool per service, as one per pod: every one of them applies
            // (or finds applied) the migrations at start-up.
            let store = keelson_postgres::PostgresStore::connect_with_pool_size(&database_url, 4)
                .await
                .with_context(|| format!("{name}: connecting to {database_url}"))?;
            let app = keelson_knative::app(f, store, clock.clone(), &cfg);
            tasks.extend(app.tasks);
            tasks.push(tokio::spawn(async move {
                let _ = keelson_knative::serve::serve_until(
                    listener,
                    app.router,
                    app.health,
                    std::future::pending(),
                )
                .await;
            }));
        }
        Ok(KnativeStack {
            broker,
            api_url,
            services,
            database_url,
            tasks,
        })
    }

    /// The URL of a service.
    pub fn service(&self, name: &str) -> Option<&str> {
        self.services
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, u)| u.as_str())
    }
}
