//! The HTTP shell of an event consumer behind a Knative Trigger, its health
//! endpoints, and serving with graceful shutdown.

use crate::receive::{error_response, read_event, reply};
use crate::sink::{capturing, KnativeBus, SinkError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use keelson_core::error::ErrorKind;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{Clock, Store, Subscription};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A handler's failure: its kind decides the HTTP status (and so whether the
/// broker retries), the message is logged and returned.
pub type Failure = (ErrorKind, String);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler = Arc<dyn Fn(KeptnEvent) -> BoxFuture<Result<(), Failure>> + Send + Sync>;
type Probe = Arc<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>;

/// Readiness: a store that answers, and not shutting down.
#[derive(Clone)]
pub struct Health {
    stopping: Arc<AtomicBool>,
    probe: Probe,
}

impl Health {
    /// Readiness that reads the store (a missing project is an answer).
    pub fn of_store<S: Store>(store: S) -> Health {
        Health {
            stopping: Arc::new(AtomicBool::new(false)),
            probe: Arc::new(move || {
                let store = store.clone();
                Box::pin(async move {
                    store
                        .get_project("keelson-readiness-probe")
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            }),
        }
    }

    /// Readiness with nothing to check.
    pub fn always() -> Health {
        Health {
            stopping: Arc::new(AtomicBool::new(false)),
            probe: Arc::new(|| Box::pin(async { Ok(()) })),
        }
    }

    /// `/healthz` (liveness: the process serves) and `/readyz` (readiness).
    pub fn routes(&self) -> Router {
        let h = self.clone();
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let h = h.clone();
                    async move {
                        if h.stopping.load(Ordering::SeqCst) {
                            return error_response(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "shutting down",
                            );
                        }
                        match (h.probe)().await {
                            Ok(()) => "ready".into_response(),
                            Err(e) => error_response(
                                StatusCode::SERVICE_UNAVAILABLE,
                                &format!("the store does not answer: {e}"),
                            ),
                        }
                    }
                }),
            )
    }
}

/// How a consumer answers a delivery.
struct Shell {
    subscription: Subscription,
    handler: Handler,
    bus: KnativeBus,
    clock: Arc<dyn Clock>,
    keep_knative: bool,
}

/// A consumer behind a Trigger: `POST /` takes one CloudEvent (binary or
/// structured mode) and answers
/// - `202` when handled with nothing to publish, or an event outside the
///   subscription (a Trigger filter can be broader than it);
/// - `200` with the last event the handler published as the reply (the
///   broker puts it on the bus); the ones before it are sent to `K_SINK` first;
/// - `400` for a request that is no Keptn CloudEvent, or an event the
///   function refuses (retrying cannot help: the broker dead-letters it);
/// - `503` for a transient failure or a lost race (the broker retries), and
///   `500` for a fatal one (retried too: it may be a deploy in progress).
pub fn consumer<F, Fut>(
    subscription: Subscription,
    bus: KnativeBus,
    clock: Arc<dyn Clock>,
    handle: F,
) -> Router
where
    F: Fn(KeptnEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    consumer_with(subscription, bus, clock, false, handle)
}

/// [`consumer`], optionally keeping the broker's `knative*` attributes.
pub fn consumer_with<F, Fut>(
    subscription: Subscription,
    bus: KnativeBus,
    clock: Arc<dyn Clock>,
    keep_knative: bool,
    handle: F,
) -> Router
where
    F: Fn(KeptnEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    let handler: Handler = Arc::new(move |ev| Box::pin(handle(ev)));
    let shell = Arc::new(Shell {
        subscription,
        handler,
        bus,
        clock,
        keep_knative,
    });
    Router::new().route("/", post(deliver)).with_state(shell)
}

async fn deliver(State(shell): State<Arc<Shell>>, headers: HeaderMap, body: Bytes) -> Response {
    let ev = match read_event(&headers, body, shell.clock.now(), shell.keep_knative) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(error = %e, "refusing a delivery");
            return e.into_response();
        }
    };
    if !shell.subscription.matches(&ev.ty) {
        tracing::debug!(id = %ev.id, ty = %ev.ty, "not subscribed; ignored");
        return StatusCode::ACCEPTED.into_response();
    }
    let span = tracing::info_span!("event", ce.id = %ev.id, ce.r#type = %ev.ty,
        shkeptncontext = %ev.shkeptncontext, triggeredid = ev.triggeredid.as_deref().unwrap_or(""));
    let _enter = span.enter();
    let (id, ty) = (ev.id.clone(), ev.ty.clone());
    let (result, mut published) = capturing((shell.handler)(ev)).await;
    // Whatever was published before a failure goes out anyway: its state
    // change is committed, and the redelivery would only re-send it.
    let last = match &result {
        Ok(()) => published.pop(),
        Err(_) => None,
    };
    if let Err(e) = shell.bus.send(&published).await {
        tracing::warn!(%id, %ty, error = %e, "publishing failed; the broker will redeliver");
        return sink_failure(&e);
    }
    match (result, last) {
        (Ok(()), Some(ev)) => reply(&ev),
        (Ok(()), None) => StatusCode::ACCEPTED.into_response(),
        (Err((kind, message)), _) => {
            let status = status_of(kind);
            tracing::warn!(%id, %ty, ?kind, error = %message, status = status.as_u16(), "handling failed");
            error_response(status, &message)
        }
    }
}

fn sink_failure(e: &SinkError) -> Response {
    let status = match e {
        SinkError::NoSink => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_GATEWAY,
    };
    error_response(status, &e.to_string())
}

/// The status a failure of `kind` is answered with.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::Conflict | ErrorKind::Transient => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Fatal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Serves `app` plus the health routes on `addr` until SIGTERM or Ctrl-C,
/// then stops taking requests (readiness fails at once) and finishes the
/// ones in flight, as Knative expects of a draining pod.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    health: Health,
) -> std::io::Result<()> {
    serve_until(listener, app, health, shutdown_signal()).await
}

/// [`serve`] until `stop` completes.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    app: Router,
    health: Health,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = health.stopping.clone();
    let app = app.merge(health.routes());
    tracing::info!(addr = %listener.local_addr()?, "serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            stop.await;
            stopping.store(true, Ordering::SeqCst);
            tracing::info!("shutting down: finishing requests in flight");
        })
        .await
}

/// SIGTERM (Kubernetes) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
