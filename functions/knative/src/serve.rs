//! The HTTP shell of an event consumer behind a Knative Trigger, its health
//! endpoints, and serving with graceful shutdown.

use crate::receive::{error_response, read_event};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
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
use tracing::Instrument;

/// Largest delivery accepted: the API's own request limit, so an event the
/// API took is never refused downstream (a 413 would be dead-lettered).
pub const MAX_EVENT_BODY: usize = keelson_api::MAX_BODY_BYTES;

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
                        // Requests on a kept-alive connection may still come
                        // in while the server drains.
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
    clock: Arc<dyn Clock>,
    keep_knative: bool,
}

/// A consumer behind a Trigger: `POST /` takes one CloudEvent (binary or
/// structured mode); the handler publishes what it emits to `K_SINK` itself
/// (see [`crate::sink`] for why there are no replies). Answers:
/// - `202` when handled, or for an event outside the subscription (a
///   Trigger filter can be broader than it);
/// - `400` for a request that is no Keptn CloudEvent, or an event the
///   function refuses (retrying cannot help: the broker dead-letters it);
/// - `503` for a transient failure (the broker unreachable, the database
///   busy) or a lost race: the broker retries;
/// - `500` for a fatal error or a handler that panicked (retried too: it may
///   be a deploy in progress), then the dead-letter sink.
pub fn consumer<F, Fut>(subscription: Subscription, clock: Arc<dyn Clock>, handle: F) -> Router
where
    F: Fn(KeptnEvent) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Failure>> + Send + 'static,
{
    consumer_with(subscription, clock, false, handle)
}

/// [`consumer`], optionally keeping the broker's `knative*` attributes.
pub fn consumer_with<F, Fut>(
    subscription: Subscription,
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
        clock,
        keep_knative,
    });
    Router::new()
        .route("/", post(deliver))
        .layer(DefaultBodyLimit::max(MAX_EVENT_BODY))
        .with_state(shell)
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
    let (id, ty) = (ev.id.clone(), ev.ty.clone());
    // Its own task: a handler that panics is answered 500 (and retried by
    // the broker) instead of dropping the connection unanswered.
    let handled = tokio::spawn((shell.handler)(ev).instrument(span)).await;
    let (kind, message) = match handled {
        Ok(Ok(())) => return StatusCode::ACCEPTED.into_response(),
        Ok(Err(failure)) => failure,
        Err(e) => (ErrorKind::Fatal, format!("the handler failed: {e}")),
    };
    let status = status_of(kind);
    tracing::warn!(%id, %ty, ?kind, error = %message, status = status.as_u16(), "handling failed");
    error_response(status, &message)
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

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_core::ports::SystemClock;
    use std::sync::atomic::AtomicUsize;

    async fn start(app: Router) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    }

    fn event(ty: &str) -> String {
        serde_json::json!({"specversion": "1.0", "id": "e1", "source": "t", "type": ty,
            "time": "2024-01-01T00:00:00Z", "data": {"project": "p"}})
        .to_string()
    }

    async fn post(url: &str, body: String) -> (u16, String) {
        let r = reqwest::Client::new()
            .post(url)
            .header("content-type", crate::sink::STRUCTURED)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn each_outcome_of_a_handler_is_answered_with_its_status() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let sub = Subscription::new("t", &["sh.keptn.event.*.triggered"]);
        let app = consumer(sub, Arc::new(SystemClock), move |ev: KeptnEvent| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                match ev.ty.as_str() {
                    "sh.keptn.event.ok.triggered" => Ok(()),
                    "sh.keptn.event.bad.triggered" => Err((ErrorKind::Invalid, "bad input".into())),
                    "sh.keptn.event.busy.triggered" => Err((ErrorKind::Transient, "busy".into())),
                    "sh.keptn.event.race.triggered" => Err((ErrorKind::Conflict, "race".into())),
                    "sh.keptn.event.broken.triggered" => Err((ErrorKind::Fatal, "broken".into())),
                    _ => panic!("a handler bug"),
                }
            }
        });
        let url = start(app).await;
        let cases = [
            ("sh.keptn.event.ok.triggered", 202),
            ("sh.keptn.event.bad.triggered", 400),
            ("sh.keptn.event.busy.triggered", 503),
            ("sh.keptn.event.race.triggered", 503),
            ("sh.keptn.event.broken.triggered", 500),
            ("sh.keptn.event.panics.triggered", 500),
        ];
        for (ty, want) in cases {
            let (status, body) = post(&url, event(ty)).await;
            assert_eq!(status, want, "{ty}: {body}");
            if want != 202 {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["code"], serde_json::json!(want), "{ty}: {body}");
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), cases.len());
        // Outside the subscription: accepted, the handler never called.
        let (status, _) = post(&url, event("sh.keptn.event.ok.finished")).await;
        assert_eq!(status, 202);
        assert_eq!(calls.load(Ordering::SeqCst), cases.len());
        // Beyond the body limit: refused before parsing.
        let big = event(&"x".repeat(MAX_EVENT_BODY));
        let (status, _) = post(&url, big).await;
        assert_eq!(status, 413);
    }
}
