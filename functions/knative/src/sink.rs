//! Publishing to the Knative Broker: events go to the broker URL Knative
//! injects as `K_SINK`, in order, each with retries.
//!
//! Why not reply (a `200` with the event as the body, which Knative puts on
//! the broker)? A reply carries one event and a handler often emits several
//! in order (`.started` before `.finished`); and when the broker fails to
//! forward a reply, Knative sends the *original* event to the dead-letter sink
//! instead of redelivering it, so the emitted event would be lost. Sent here,
//! a failure fails the delivery (`503`), the broker redelivers, and the
//! function re-publishes the effects it stored with the applied event.

use keelson_core::event::KeptnEvent;
use keelson_core::ports::{EventBus, StoreError, StoreResult};
use std::time::Duration;

/// The `Content-Type` of a CloudEvent in structured mode.
pub const STRUCTURED: &str = "application/cloudevents+json";

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The broker could not be reached, or answered with a status worth retrying.
    #[error("the broker at {url} did not take event {id} after {attempts} attempts: {reason}")]
    Unavailable {
        /// Sink URL.
        url: String,
        /// Event id.
        id: String,
        /// Attempts made.
        attempts: u32,
        /// Last failure.
        reason: String,
    },
    /// The broker refused the event (a 4xx other than 408/429): retrying cannot help.
    #[error("the broker at {url} refused event {id}: {status} {body}")]
    Refused {
        /// Sink URL.
        url: String,
        /// Event id.
        id: String,
        /// Status code.
        status: u16,
        /// Response body (truncated).
        body: String,
    },
    /// No `K_SINK` was configured but the function published.
    #[error("K_SINK is not set: this function cannot publish events")]
    NoSink,
    /// The event could not be encoded.
    #[error("event {id} cannot be encoded: {source}")]
    Encode {
        /// Event id.
        id: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
}

/// Retry policy of publishing (exponential back-off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// First back-off; doubles after each failed attempt.
    pub backoff: Duration,
}

// 4 attempts of at most 5 s with 0.1 + 0.2 + 0.4 s between them: a
// delivery gives up well inside Knative's 30 s request timeout, so the
// broker's retry (not queue-proxy's cut) decides what happens next.
impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            backoff: Duration::from_millis(100),
        }
    }
}

/// Longest wait for one POST to the broker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The bus of a Knative function: HTTP POSTs of structured CloudEvents to the broker.
#[derive(Clone)]
pub struct KnativeBus {
    client: reqwest::Client,
    url: Option<String>,
    retry: Retry,
}

impl KnativeBus {
    /// A bus sending to `url` (`K_SINK`); `None` for a function that never publishes.
    pub fn new(url: Option<String>, retry: Retry) -> KnativeBus {
        let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP client settings refused; using the defaults");
                reqwest::Client::new()
            }
        };
        KnativeBus { client, url, retry }
    }

    /// The sink URL.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// Sends events to the broker now, in order, each with retries.
    pub async fn send(&self, events: &[KeptnEvent]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let url = self.url.as_deref().ok_or(SinkError::NoSink)?;
        for ev in events {
            self.send_one(url, ev).await?;
        }
        Ok(())
    }

    async fn send_one(&self, url: &str, ev: &KeptnEvent) -> Result<(), SinkError> {
        let body = serde_json::to_vec(ev).map_err(|source| SinkError::Encode {
            id: ev.id.clone(),
            source,
        })?;
        let attempts = self.retry.attempts.max(1);
        let mut delay = self.retry.backoff;
        let mut reason = String::new();
        for attempt in 1..=attempts {
            let sent = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, STRUCTURED)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if retryable(r.status().as_u16()) => {
                    reason = format!("status {}", r.status().as_u16());
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap_or_default();
                    let body = body.chars().take(512).collect();
                    return Err(SinkError::Refused {
                        url: url.into(),
                        id: ev.id.clone(),
                        status,
                        body,
                    });
                }
                Err(e) => reason = e.to_string(),
            }
            if attempt < attempts {
                tracing::debug!(id = %ev.id, attempt, %reason, "publishing failed; retrying");
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
        }
        Err(SinkError::Unavailable {
            url: url.into(),
            id: ev.id.clone(),
            attempts,
            reason,
        })
    }
}

/// Statuses a sender retries: Knative's own list (timeouts, throttling,
/// server errors) — a 404 may be a broker not yet ready after a deploy.
pub fn retryable(status: u16) -> bool {
    matches!(status, 404 | 408 | 409 | 429) || status >= 500
}

impl EventBus for KnativeBus {
    async fn publish(&self, events: &[KeptnEvent]) -> StoreResult<()> {
        self.send(events).await.map_err(|e| {
            let transient = matches!(e, SinkError::Unavailable { .. });
            StoreError::backend(e, transient)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A broker ingress answering `statuses` in turn (then 202), counting requests.
    async fn ingress(statuses: Vec<u16>) -> (String, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        let c = n.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move || {
                let i = c.fetch_add(1, Ordering::SeqCst);
                let s = statuses.get(i).copied().unwrap_or(202);
                async move { StatusCode::from_u16(s).unwrap() }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, n)
    }

    fn ev() -> KeptnEvent {
        KeptnEvent::new(
            "e1".into(),
            "t",
            "sh.keptn.event.test.triggered".into(),
            "ctx",
            serde_json::json!({}),
            keelson_core::Timestamp::from_millis(0),
        )
    }

    fn quick() -> Retry {
        Retry {
            attempts: 3,
            backoff: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn retryable_answers_are_retried_and_refusals_are_not() {
        let (url, n) = ingress(vec![503, 429]).await;
        let bus = KnativeBus::new(Some(url), quick());
        bus.publish(&[ev()]).await.unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 3);

        let (url, n) = ingress(vec![503, 503, 503]).await;
        let err = KnativeBus::new(Some(url), quick())
            .publish(&[ev()])
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            keelson_core::error::ErrorKind::Transient,
            "{err}"
        );
        assert_eq!(n.load(Ordering::SeqCst), 3);

        let (url, n) = ingress(vec![400]).await;
        let err = KnativeBus::new(Some(url), quick())
            .publish(&[ev()])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), keelson_core::error::ErrorKind::Fatal, "{err}");
        assert_eq!(n.load(Ordering::SeqCst), 1);

        let err = KnativeBus::new(None, quick())
            .publish(&[ev()])
            .await
            .unwrap_err();
        assert!(std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("K_SINK"));
        KnativeBus::new(None, quick()).publish(&[]).await.unwrap();
    }
}
