//! Keelson's functions as HTTP CloudEvents services behind a Knative Broker:
//! each `<name>-http` binary serves one function on `$PORT`, takes the
//! events its Trigger delivers on `POST /` (binary or structured mode),
//! publishes to the broker at `K_SINK` (or replies), and keeps its state in
//! PostgreSQL (`KEELSON_DATABASE_URL`), which every replica shares.

pub mod receive;
pub mod serve;
pub mod sink;

use axum::Router;
use keelson_core::error::ErrorKind;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{Clock, Store, Subscription, SystemClock};
use keelson_core::sequence::Config as SequenceConfig;
use keelson_shipyard::Orchestrator;
use serve::{consumer, consumer_with, Health};
use sink::{KnativeBus, Retry};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The functions, one per binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Keptn's REST API (`api-http`), a plain HTTP service.
    Api,
    /// Sequence orchestration (`shipyard-http`), with its periodic sweep.
    Shipyard,
    /// The event store (`datastore-http`).
    Datastore,
    /// Quality gates (`lighthouse-http`).
    Lighthouse,
    /// Approvals (`approval-http`).
    Approval,
    /// Remediation (`remediation-http`).
    Remediation,
    /// The Prometheus SLI provider (`prometheus-http`).
    Prometheus,
    /// The broker's dead-letter sink (`dead-letter-http`).
    DeadLetter,
}

impl Function {
    /// Whether it publishes events (and so needs `K_SINK`).
    pub fn publishes(self) -> bool {
        !matches!(self, Function::Datastore | Function::DeadLetter)
    }

    /// Its binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Function::Api => "api-http",
            Function::Shipyard => "shipyard-http",
            Function::Datastore => "datastore-http",
            Function::Lighthouse => "lighthouse-http",
            Function::Approval => "approval-http",
            Function::Remediation => "remediation-http",
            Function::Prometheus => "prometheus-http",
            Function::DeadLetter => "dead-letter-http",
        }
    }
}

/// Connections per replica unless `KEELSON_DATABASE_POOL_SIZE` says otherwise:
/// every function's replicas share the database's `max_connections` (100 by
/// default), so services × replicas × pool must stay below it.
pub const DEFAULT_POOL_SIZE: usize = 4;

/// Everything a function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PORT` (Knative sets it; default 8080).
    pub port: u16,
    /// `KEELSON_DATABASE_URL`: a `postgres://` URL.
    pub database_url: String,
    /// `KEELSON_DATABASE_POOL_SIZE`: connections this replica may open.
    pub pool_size: usize,
    /// `KEELSON_DATABASE_CA_FILE`: PEM certificates trusted for the database's
    /// TLS certificate, besides the platform's.
    pub ca_file: Option<std::path::PathBuf>,
    /// How the function behaves.
    pub functions: FunctionConfig,
}

/// Per-function settings (the parts tests set directly).
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    /// `K_SINK`: the broker URL events are published to.
    pub sink: Option<String>,
    /// Publishing retries.
    pub retry: Retry,
    /// `KEELSON_API_TOKEN` (api).
    pub token: String,
    /// Orchestration timeouts (api, shipyard).
    pub sequence: SequenceConfig,
    /// `KEELSON_TICK_INTERVAL`: how often the shipyard sweeps (default 1s).
    pub tick_interval: Duration,
    /// Retention (datastore).
    pub datastore: keelson_datastore::Config,
    /// Lighthouse settings.
    pub lighthouse: keelson_lighthouse::Config,
    /// Prometheus provider settings.
    pub prometheus: keelson_prometheus::Config,
}

impl Default for FunctionConfig {
    fn default() -> Self {
        FunctionConfig {
            sink: None,
            retry: Retry::default(),
            token: String::new(),
            sequence: SequenceConfig::default(),
            tick_interval: Duration::from_secs(1),
            datastore: keelson_datastore::Config { retention_ms: None },
            lighthouse: keelson_lighthouse::Config::default(),
            prometheus: keelson_prometheus::Config::default(),
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Settings {
    /// Reads the environment of `function`, naming every missing or bad variable.
    pub fn from_env(function: Function) -> Result<Settings, Vec<String>> {
        let mut bad = Vec::new();
        let mut f = FunctionConfig::default();
        let port = match var("PORT") {
            None => 8080,
            Some(p) => p.parse::<u16>().unwrap_or_else(|_| {
                bad.push(format!("PORT: {p:?} is not a port number"));
                0
            }),
        };
        let database_url = var("KEELSON_DATABASE_URL").unwrap_or_else(|| {
            bad.push("KEELSON_DATABASE_URL: not set (a postgres:// URL)".into());
            String::new()
        });
        if !database_url.is_empty()
            && !database_url.starts_with("postgres://")
            && !database_url.starts_with("postgresql://")
        {
            bad.push("KEELSON_DATABASE_URL: must be a postgres:// or postgresql:// URL".into());
        }
        let pool_size = match var("KEELSON_DATABASE_POOL_SIZE") {
            None => DEFAULT_POOL_SIZE,
            Some(n) => match n.parse::<usize>() {
                Ok(n) if (1..=256).contains(&n) => n,
                _ => {
                    bad.push(format!(
                        "KEELSON_DATABASE_POOL_SIZE: {n:?} is not a number from 1 to 256"
                    ));
                    DEFAULT_POOL_SIZE
                }
            },
        };
        let ca_file = var("KEELSON_DATABASE_CA_FILE").map(std::path::PathBuf::from);
        if let Some(p) = &ca_file {
            if !p.is_file() {
                bad.push(format!(
                    "KEELSON_DATABASE_CA_FILE: {} is not a readable file",
                    p.display()
                ));
            }
        }
        f.sink = var("K_SINK");
        match &f.sink {
            None if function.publishes() => bad
                .push("K_SINK: not set (the broker URL; a SinkBinding or the env sets it)".into()),
            Some(u) if !u.starts_with("http://") && !u.starts_with("https://") => {
                bad.push(format!("K_SINK: {u:?} is not an http(s) URL"))
            }
            _ => {}
        }
        match function {
            Function::Api | Function::Shipyard => {
                match keelson_shipyard::config_from_env() {
                    Ok(c) => f.sequence = c,
                    Err(e) => bad.push(e),
                }
                if function == Function::Api {
                    match var("KEELSON_API_TOKEN") {
                        Some(t) => f.token = t,
                        None => bad.push("KEELSON_API_TOKEN: not set".into()),
                    }
                }
                if let Some(t) = var("KEELSON_TICK_INTERVAL") {
                    match keelson_core::shipyard::parse_go_duration(&t) {
                        Ok(ms) if ms > 0 => f.tick_interval = Duration::from_millis(ms as u64),
                        Ok(_) => bad.push("KEELSON_TICK_INTERVAL: must be more than 0".into()),
                        Err(e) => bad.push(format!("KEELSON_TICK_INTERVAL: {e}")),
                    }
                }
            }
            Function::Datastore => match keelson_datastore::Config::from_env() {
                Ok(c) => f.datastore = c,
                Err(e) => bad.push(e),
            },
            Function::Lighthouse => f.lighthouse = keelson_lighthouse::Config::from_env(),
            Function::Prometheus => match keelson_prometheus::Config::from_env() {
                Ok(c) => f.prometheus = c,
                Err(e) => bad.extend(e.problems),
            },
            Function::Approval | Function::Remediation | Function::DeadLetter => {}
        }
        if bad.is_empty() {
            Ok(Settings {
                port,
                database_url,
                pool_size,
                ca_file,
                functions: f,
            })
        } else {
            Err(bad)
        }
    }
}

/// A running function: its HTTP app, readiness, and background work.
pub struct App {
    /// Routes (the health routes are added when serving).
    pub router: Router,
    /// Readiness.
    pub health: Health,
    /// Background tasks (the shipyard's sweep, the datastore's retention).
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn failure(kind: ErrorKind, e: impl std::fmt::Display) -> serve::Failure {
    (kind, e.to_string())
}

/// A consumer app for a function (in an `Arc`) whose `process(&event)` handles one event.
macro_rules! process_app {
    ($function:expr, $subscription:expr, $clock:expr) => {{
        let f: Arc<_> = $function;
        consumer($subscription, $clock, move |ev: KeptnEvent| {
            let f = f.clone();
            async move {
                f.process(&ev)
                    .await
                    .map(|_| ())
                    .map_err(|e| failure(e.kind(), e))
            }
        })
    }};
}

/// Builds `function` on a store and clock (tests pass their own).
pub fn app<S: Store>(
    function: Function,
    store: S,
    clock: Arc<dyn Clock>,
    cfg: &FunctionConfig,
) -> App {
    let bus = KnativeBus::new(cfg.sink.clone(), cfg.retry);
    let health = Health::of_store(store.clone());
    let mut tasks = Vec::new();
    let router = match function {
        Function::Api => {
            let orch = Arc::new(Orchestrator::new(store, bus, clock, cfg.sequence.clone()));
            keelson_api::router(Arc::new(keelson_api::Api {
                orch,
                token: keelson_api::Token::Fixed(cfg.token.clone()),
            }))
        }
        Function::Shipyard => {
            let orch = Arc::new(Orchestrator::new(
                store.clone(),
                bus,
                clock.clone(),
                cfg.sequence.clone(),
            ));
            tasks.push(tokio::spawn(keelson_shipyard::tick_forever(
                orch.clone(),
                cfg.tick_interval,
            )));
            tasks.push(tokio::spawn(keelson_shipyard::forget_applied_forever(
                store,
                clock.clone(),
                keelson_shipyard::DEDUPE_WINDOW_MS,
                Duration::from_secs(600),
            )));
            process_app!(orch, keelson_shipyard::subscription(), clock)
        }
        Function::Datastore => {
            if cfg.datastore.retention_ms.is_some() {
                tasks.push(tokio::spawn(keelson_datastore::retain_forever(
                    store.clone(),
                    clock.clone(),
                    cfg.datastore.clone(),
                    Duration::from_secs(3600),
                )));
            }
            consumer(
                keelson_datastore::subscription(),
                clock,
                move |ev: KeptnEvent| {
                    let store = store.clone();
                    async move {
                        keelson_datastore::store_events(&store, std::slice::from_ref(&ev))
                            .await
                            .map(|_| ())
                            .map_err(|e| failure(e.kind(), e))
                    }
                },
            )
        }
        Function::Lighthouse => process_app!(
            Arc::new(keelson_lighthouse::Lighthouse::new(
                store,
                bus,
                clock.clone(),
                cfg.lighthouse.clone()
            )),
            keelson_lighthouse::subscription(),
            clock
        ),
        Function::Approval => process_app!(
            Arc::new(keelson_approval::Approval::new(store, bus, clock.clone())),
            keelson_approval::subscription(),
            clock
        ),
        Function::Remediation => process_app!(
            Arc::new(keelson_remediation::Remediation::new(
                store,
                bus,
                clock.clone()
            )),
            keelson_remediation::subscription(),
            clock
        ),
        Function::Prometheus => process_app!(
            Arc::new(keelson_prometheus::Provider::new(
                store,
                bus,
                clock.clone(),
                cfg.prometheus.clone()
            )),
            keelson_prometheus::subscription(),
            clock
        ),
        Function::DeadLetter => dead_letters(store, clock),
    };
    App {
        router,
        health,
        tasks,
    }
}

/// The dead-letter sink: logs what the broker gave up on, with the broker's
/// reason (`knativeerrordest`, `knativeerrorcode`, `knativeerrordata`), and
/// stores the event (idempotent on its id) so the audit log keeps it even
/// when it was the datastore's delivery that failed.
fn dead_letters<S: Store>(store: S, clock: Arc<dyn Clock>) -> Router {
    let every = Subscription::new("dead-letters", &[">"]);
    consumer_with(every, clock, true, move |mut ev: KeptnEvent| {
        let store = store.clone();
        async move {
            let attr = |k: &str| {
                ev.extensions
                    .get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let (dest, code, data) = (
                attr("knativeerrordest"),
                attr("knativeerrorcode"),
                attr("knativeerrordata"),
            );
            tracing::error!(id = %ev.id, ty = %ev.ty, shkeptncontext = %ev.shkeptncontext,
                destination = %dest, code = %code, response = %decode_error_data(&data),
                "the broker dead-lettered an event");
            ev.extensions.retain(|k, _| !k.starts_with("knative"));
            store
                .insert_events(std::slice::from_ref(&ev))
                .await
                .map(|_| ())
                .map_err(|e| failure(e.kind(), e))
        }
    })
}

/// `knativeerrordata` is the subscriber's response body, base64-encoded, and
/// cut by Knative (to 1024 characters): decode what is whole, show at most
/// 1024 characters.
fn decode_error_data(data: &str) -> String {
    use base64::Engine;
    let whole = &data.as_bytes()[..data.len() / 4 * 4];
    match base64::engine::general_purpose::STANDARD.decode(whole) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).chars().take(1024).collect(),
        Err(_) => data.chars().take(1024).collect(),
    }
}

/// Plain log lines; `RUST_LOG` is a level (default `info`).
pub fn init_tracing() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .try_init();
}

/// The `main` of every `<name>-http` binary: settings, store (migrations
/// applied), app, served until SIGTERM. Exit code 2 for bad settings (every
/// problem named), 1 when the store cannot be reached or the port bound.
pub async fn main(function: Function) -> ExitCode {
    init_tracing();
    let settings = match Settings::from_env(function) {
        Ok(s) => s,
        Err(problems) => {
            eprintln!("{}: bad environment:", function.binary());
            for p in problems {
                eprintln!("  {p}");
            }
            return ExitCode::from(2);
        }
    };
    let options = keelson_postgres::ConnectOptions {
        pool_size: settings.pool_size,
        ca_file: settings.ca_file.clone(),
    };
    let store =
        match keelson_postgres::PostgresStore::connect_with(&settings.database_url, &options).await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: KEELSON_DATABASE_URL: {e}", function.binary());
                return ExitCode::from(1);
            }
        };
    let app = app(function, store, Arc::new(SystemClock), &settings.functions);
    let addr = std::net::SocketAddr::from(([0, 0, 0, 0], settings.port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{}: PORT: cannot listen on {addr}: {e}", function.binary());
            return ExitCode::from(1);
        }
    };
    let served = serve::serve(listener, app.router, app.health).await;
    for t in app.tasks {
        t.abort();
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", function.binary());
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brokers_error_data_is_decoded_even_when_cut_inside_a_character() {
        use base64::Engine;
        let body = "é".repeat(2000);
        let full = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
        // Knative cuts the attribute to 1024 characters, not at a boundary.
        let cut = &full[..1023];
        let shown = decode_error_data(cut);
        // 1020 whole base64 characters: 765 bytes, 382 'é' and half of one.
        assert_eq!(shown, format!("{}\u{FFFD}", "é".repeat(382)));
        assert_eq!(decode_error_data(&full).chars().count(), 1024);
        assert_eq!(decode_error_data("not base64 ü!"), "not base64 ü!");
    }
}
