//! The SQS shell: a Lambda SQS batch handler that takes every record on its
//! own and reports partial batch failures, and a [`Poller`] that feeds the same
//! handler from a queue the way Lambda's event source mapping does (for
//! `keelson serve --backend aws`).
//!
//! Per record: the body is an EventBridge envelope with the CloudEvent as
//! `detail`. A record that is not one, or whose event the handler refuses as
//! invalid, is sent to the dead-letter queue and counted as done, so it never
//! holds up its batch. A transient or fatal failure is reported as a batch item
//! failure: SQS redelivers it after the visibility timeout, and its redrive
//! policy moves it to the dead-letter queue after `maxReceiveCount` receives.

use crate::error::store_error;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
pub use aws_sdk_sqs::Client as SqsClient;
use aws_sdk_sqs::Client;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{StoreResult, Subscription};
use keelson_core::ErrorKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;
use std::time::Duration;

/// The URL of the queue named `name`.
pub async fn queue_url(client: &Client, name: &str) -> StoreResult<String> {
    let out = client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(store_error)?;
    out.queue_url()
        .map(str::to_string)
        .ok_or_else(|| crate::error::fatal(format!("queue {name} has no URL")))
}

/// The Lambda SQS event.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct SqsEvent {
    /// The records.
    #[serde(rename = "Records")]
    pub records: Vec<SqsRecord>,
}

/// One SQS message as Lambda hands it over.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct SqsRecord {
    /// The message id (what a batch item failure names).
    #[serde(rename = "messageId")]
    pub message_id: String,
    /// The receipt handle.
    #[serde(rename = "receiptHandle", default)]
    pub receipt_handle: String,
    /// The body.
    #[serde(default)]
    pub body: String,
    /// System attributes (`ApproximateReceiveCount`, …).
    #[serde(default)]
    pub attributes: serde_json::Map<String, Value>,
}

/// The answer Lambda expects with `ReportBatchItemFailures`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct SqsBatchResponse {
    /// The records to redeliver.
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// A record to redeliver.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct BatchItemFailure {
    /// Its message id.
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// Why a handler failed on an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// How to treat it.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

/// A function fed from a queue.
pub trait Consumer: Send + Sync {
    /// The event types it consumes (a rule may deliver a superset).
    fn subscription(&self) -> Subscription;
    /// Handles events, one result per event in order.
    fn handle(
        &self,
        events: Vec<KeptnEvent>,
    ) -> impl Future<Output = Vec<Result<(), Failure>>> + Send;
}

/// Where refused records go.
pub trait DeadLetters: Send + Sync {
    /// Stores `body` with the reason; an error leaves the record to be redelivered.
    fn send(&self, body: &str, reason: &str) -> impl Future<Output = StoreResult<()>> + Send;
}

/// A dead-letter queue by URL.
#[derive(Clone)]
pub struct DeadLetterQueue {
    client: Client,
    url: String,
}

impl DeadLetterQueue {
    /// The queue at `url`.
    pub fn new(client: Client, url: &str) -> Self {
        DeadLetterQueue {
            client,
            url: url.into(),
        }
    }
}

/// The message attribute carrying why a record was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "keelson-reason";

impl DeadLetters for DeadLetterQueue {
    async fn send(&self, body: &str, reason: &str) -> StoreResult<()> {
        let reason: String = reason.chars().take(1000).collect();
        let attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason)
            .build()
            .map_err(|e| crate::error::fatal(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .message_attributes(REASON_ATTRIBUTE, attr)
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

/// Takes the CloudEvent out of an EventBridge envelope (or a bare CloudEvent).
pub fn parse_body(body: &str) -> Result<KeptnEvent, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let ce = match v {
        Value::Object(mut m) if m.contains_key("detail-type") => match m.remove("detail") {
            Some(d @ Value::Object(_)) => d,
            _ => return Err("the EventBridge envelope has no object `detail`".into()),
        },
        other => other,
    };
    // Events on the bus were complete when published: nothing is filled in here.
    for field in ["specversion", "id", "source", "type", "shkeptncontext"] {
        match ce.get(field) {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => return Err(format!("detail is not a valid event: {field}: is required")),
        }
    }
    KeptnEvent::from_untrusted_value(ce).map_err(|e| format!("detail is not a valid event: {e}"))
}

/// Handles an SQS batch: parse each record on its own, hand the valid ones to
/// `consumer` (in order), dead-letter the invalid ones, report the rest.
pub async fn handle_batch<C: Consumer, D: DeadLetters>(
    consumer: &C,
    dead: &D,
    batch: SqsEvent,
) -> SqsBatchResponse {
    let sub = consumer.subscription();
    let mut failures = Vec::new();
    let mut parsed: Vec<(SqsRecord, KeptnEvent)> = Vec::new();
    for r in batch.records {
        match parse_body(&r.body) {
            Ok(ev) if sub.matches(&ev.ty) => parsed.push((r, ev)),
            // A rule pattern is broader than the subscription: nothing to do.
            Ok(_) => {}
            Err(reason) => refuse(dead, &r, &reason, &mut failures).await,
        }
    }
    let events = parsed.iter().map(|(_, e)| e.clone()).collect();
    let results = consumer.handle(events).await;
    for (i, (r, ev)) in parsed.iter().enumerate() {
        match results.get(i) {
            Some(Ok(())) => {}
            Some(Err(f)) if f.kind == ErrorKind::Invalid => {
                let reason = format!("event {} ({}) refused: {}", ev.id, ev.ty, f.message);
                refuse(dead, r, &reason, &mut failures).await;
            }
            Some(Err(f)) => {
                tracing::warn!(id = %ev.id, ty = %ev.ty, kind = ?f.kind, error = %f.message, "will be redelivered");
                failures.push(BatchItemFailure {
                    item_identifier: r.message_id.clone(),
                });
            }
            None => failures.push(BatchItemFailure {
                item_identifier: r.message_id.clone(),
            }),
        }
    }
    SqsBatchResponse {
        batch_item_failures: failures,
    }
}

async fn refuse<D: DeadLetters>(
    dead: &D,
    r: &SqsRecord,
    reason: &str,
    failures: &mut Vec<BatchItemFailure>,
) {
    tracing::warn!(message = %r.message_id, reason, "dead-lettering a record");
    if let Err(e) = dead.send(&r.body, reason).await {
        tracing::warn!(error = %e, "dead-lettering failed; the record will be redelivered");
        failures.push(BatchItemFailure {
            item_identifier: r.message_id.clone(),
        });
    }
}

/// Settings of a [`Poller`].
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// Messages per receive (SQS: at most 10).
    pub batch_size: i32,
    /// Long-poll wait.
    pub wait: Duration,
    /// How long a failed record stays invisible before its redelivery, at most
    /// (the first retry comes after a second, doubling per receive).
    pub max_retry_delay: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            batch_size: 10,
            wait: Duration::from_secs(10),
            max_retry_delay: Duration::from_secs(60),
        }
    }
}

/// Feeds a consumer from its queue like Lambda's SQS event source mapping:
/// receive a batch, run [`handle_batch`], delete only the successes. Failed
/// records come back after a backoff; the queue's redrive policy moves a
/// record to its dead-letter queue after `maxReceiveCount` receives.
pub struct Poller<C, D> {
    /// The SQS client.
    pub client: Client,
    /// The consumer's queue.
    pub queue_url: String,
    /// The consumer.
    pub consumer: C,
    /// Its dead-letter queue.
    pub dead: D,
    /// Settings.
    pub config: PollerConfig,
}

impl<C: Consumer, D: DeadLetters> Poller<C, D> {
    /// Polls forever.
    pub async fn run(&self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.poll_once().await {
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(queue = %self.queue_url, error = %e, "polling failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// One receive and its handling; returns how many records were received.
    pub async fn poll_once(&self) -> StoreResult<usize> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.config.batch_size)
            .wait_time_seconds(self.config.wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(store_error)?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(0);
        }
        let records: Vec<SqsRecord> = messages
            .iter()
            .map(|m| {
                let mut attributes = serde_json::Map::new();
                for (k, v) in m.attributes().into_iter().flatten() {
                    attributes.insert(k.as_str().to_string(), Value::String(v.clone()));
                }
                SqsRecord {
                    message_id: m.message_id().unwrap_or_default().into(),
                    receipt_handle: m.receipt_handle().unwrap_or_default().into(),
                    body: m.body().unwrap_or_default().into(),
                    attributes,
                }
            })
            .collect();
        let n = records.len();
        let resp = handle_batch(
            &self.consumer,
            &self.dead,
            SqsEvent {
                records: records.clone(),
            },
        )
        .await;
        let failed: std::collections::HashSet<&str> = resp
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        let mut delete = self
            .client
            .delete_message_batch()
            .queue_url(&self.queue_url);
        let mut any = false;
        for (i, r) in records.iter().enumerate() {
            if failed.contains(r.message_id.as_str()) {
                let receives: u32 = r
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1);
                let delay = Duration::from_secs(1 << receives.saturating_sub(1).min(10))
                    .min(self.config.max_retry_delay);
                let _ = self
                    .client
                    .change_message_visibility()
                    .queue_url(&self.queue_url)
                    .receipt_handle(&r.receipt_handle)
                    .visibility_timeout(delay.as_secs() as i32)
                    .send()
                    .await;
                continue;
            }
            any = true;
            delete = delete.entries(
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(&r.receipt_handle)
                    .build()
                    .map_err(|e| crate::error::fatal(e.to_string()))?,
            );
        }
        if any {
            let out = delete.send().await.map_err(store_error)?;
            for f in out.failed() {
                tracing::warn!(id = %f.id(), code = %f.code(), "delete failed; the record will be redelivered");
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder {
        seen: Mutex<Vec<String>>,
        fail: fn(&KeptnEvent) -> Option<Failure>,
    }

    impl Consumer for Recorder {
        fn subscription(&self) -> Subscription {
            Subscription::new("test", &["sh.keptn.event.*.finished"])
        }
        async fn handle(&self, events: Vec<KeptnEvent>) -> Vec<Result<(), Failure>> {
            events
                .iter()
                .map(|e| {
                    self.seen.lock().unwrap().push(e.id.clone());
                    (self.fail)(e).map_or(Ok(()), Err)
                })
                .collect()
        }
    }

    #[derive(Default)]
    struct Dead(Mutex<Vec<(String, String)>>, bool);

    impl DeadLetters for Dead {
        async fn send(&self, body: &str, reason: &str) -> StoreResult<()> {
            if self.1 {
                return Err(crate::error::fatal("dlq down"));
            }
            self.0.lock().unwrap().push((body.into(), reason.into()));
            Ok(())
        }
    }

    fn record(id: &str, body: String) -> SqsRecord {
        SqsRecord {
            message_id: id.into(),
            body,
            ..SqsRecord::default()
        }
    }

    fn envelope(ev_id: &str, ty: &str) -> String {
        serde_json::json!({
            "version": "0", "id": "x", "detail-type": ty, "source": "keelson",
            "detail": {
                "specversion": "1.0", "id": ev_id, "source": "t", "type": ty,
                "shkeptncontext": "9b5e1ba0-7cbd-4fd8-9b2e-2c2d7b0f0f11",
                "data": {"project": "p", "stage": "s", "service": "x"}
            }
        })
        .to_string()
    }

    #[tokio::test]
    async fn each_record_stands_alone() {
        let c = Recorder {
            seen: Mutex::default(),
            fail: |e| match e.id.as_str() {
                "bad" => Some(Failure::new(ErrorKind::Invalid, "no")),
                "busy" => Some(Failure::new(ErrorKind::Transient, "later")),
                _ => None,
            },
        };
        let dead = Dead::default();
        let batch = SqsEvent {
            records: vec![
                record("m1", envelope("ok1", "sh.keptn.event.test.finished")),
                record("m2", "{not json".into()),
                record(
                    "m7",
                    r#"{"detail-type":"x","detail":{"type":"sh.keptn.event.a.finished"}}"#.into(),
                ),
                record("m3", envelope("bad", "sh.keptn.event.test.finished")),
                record("m4", envelope("busy", "sh.keptn.event.test.finished")),
                record("m5", envelope("other", "sh.keptn.event.test.started")),
                record("m6", envelope("ok2", "sh.keptn.event.test.finished")),
            ],
        };
        let resp = handle_batch(&c, &dead, batch).await;
        assert_eq!(
            resp.batch_item_failures,
            vec![BatchItemFailure {
                item_identifier: "m4".into()
            }]
        );
        assert_eq!(*c.seen.lock().unwrap(), vec!["ok1", "bad", "busy", "ok2"]);
        let dead = dead.0.lock().unwrap();
        assert_eq!(dead.len(), 3);
        assert!(dead[0].1.contains("not JSON"), "{}", dead[0].1);
        assert!(
            dead[1].1.contains("specversion: is required"),
            "{}",
            dead[1].1
        );
        assert!(dead[2].1.contains("event bad"), "{}", dead[2].1);
        let json = serde_json::to_value(&resp).unwrap();
        assert_eq!(json["batchItemFailures"][0]["itemIdentifier"], "m4");
    }

    #[tokio::test]
    async fn a_record_that_cannot_be_dead_lettered_is_redelivered() {
        let c = Recorder {
            seen: Mutex::default(),
            fail: |_| None,
        };
        let dead = Dead(Mutex::default(), true);
        let batch = SqsEvent {
            records: vec![record("m1", "[]".into())],
        };
        let resp = handle_batch(&c, &dead, batch).await;
        assert_eq!(resp.batch_item_failures.len(), 1);
    }

    #[test]
    fn the_lambda_event_shape_parses() {
        let raw = r#"{"Records":[{"messageId":"059f36b4","receiptHandle":"AQEB","body":"{}","attributes":{"ApproximateReceiveCount":"1"},"messageAttributes":{},"md5OfBody":"x","eventSource":"aws:sqs","eventSourceARN":"arn:aws:sqs:us-east-2:1:q","awsRegion":"us-east-2"}]}"#;
        let e: SqsEvent = serde_json::from_str(raw).unwrap();
        assert_eq!(e.records[0].message_id, "059f36b4");
        assert_eq!(e.records[0].attributes["ApproximateReceiveCount"], "1");
    }
}
