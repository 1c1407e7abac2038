//! Publishing to the Knative Broker: events go to the broker URL Knative
//! injects as `K_SINK`, with retries; while a delivery is being answered, the
//! last event a handler publishes becomes the HTTP reply instead (Knative
//! puts a reply event on the broker itself, one request fewer).

use keelson_core::event::KeptnEvent;
use keelson_core::ports::{EventBus, StoreError, StoreResult};
use std::cell::RefCell;
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
}

/// Retry policy of publishing (exponential back-off).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// First back-off; doubles after each failed attempt.
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 5,
            backoff: Duration::from_millis(100),
        }
    }
}

tokio::task_local! {
    /// Events published while a delivery is being answered, in order.
    static CAPTURE: RefCell<Vec<KeptnEvent>>;
}

/// Runs `fut` with the events it publishes through a [`KnativeBus`] captured
/// instead of sent; returns its output and the captured events, in order.
pub async fn capturing<F: std::future::Future>(fut: F) -> (F::Output, Vec<KeptnEvent>) {
    CAPTURE
        .scope(RefCell::new(Vec::new()), async move {
            let out = fut.await;
            let captured = CAPTURE.with(|c| std::mem::take(&mut *c.borrow_mut()));
            (out, captured)
        })
        .await
}

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
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
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
        let body = serde_json::to_vec(ev).unwrap_or_default();
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
                    let mut body = r.text().await.unwrap_or_default();
                    body.truncate(512);
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
        // Inside a delivery the events are answered with it (the shell sends
        // them, or replies with the last), so a handler's commit-then-publish
        // order is kept and a failed send fails the delivery, which the broker
        // retries: the redelivered event re-publishes the stored effects.
        let captured = CAPTURE
            .try_with(|c| c.borrow_mut().extend_from_slice(events))
            .is_ok();
        if captured {
            return Ok(());
        }
        self.send(events).await.map_err(|e| {
            let transient = !matches!(e, SinkError::Refused { .. } | SinkError::NoSink);
            StoreError::backend(e, transient)
        })
    }
}
