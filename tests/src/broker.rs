//! A Knative Broker played faithfully on loopback, for the Knative-mode tests.
//!
//! What it does as Knative's multi-tenant broker does: an ingress that takes
//! CloudEvents in binary or structured mode and answers `202`; it stamps
//! `knativearrivaltime`; every Trigger whose filter matches gets its own,
//! concurrent delivery (no order across events) to its subscriber over HTTP in
//! binary mode with `Prefer: reply`; a `2xx` answer carrying an event puts that
//! event on the broker (a reply), a `2xx` whose body is something else counts
//! as a failed delivery (`502`, as Knative's broker filter answers); 404, 408,
//! 409, 429 and 5xx are retried with the Trigger's back-off, `retry` times,
//! then — like any other failure — the event goes to the dead-letter sink with
//! `knativeerrordest`, `knativeerrorcode` and `knativeerrordata`.
//!
//! The Triggers are read from the manifests in `infra/knative/` (their
//! filters, subscribers and delivery), so the tests run the filters that
//! a cluster would.

use anyhow::{anyhow, bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A Trigger's filter (Knative's `spec.filter.attributes` on `type`, or the
/// `spec.filters` dialect: `exact`, `prefix`, `suffix`, `all`, `any`, `not`).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every event.
    Everything,
    /// `type` equal to.
    Exact(String),
    /// `type` starting with.
    Prefix(String),
    /// `type` ending with.
    Suffix(String),
    /// All of them.
    All(Vec<Filter>),
    /// Any of them.
    Any(Vec<Filter>),
    /// Not it.
    Not(Box<Filter>),
}

impl Filter {
    /// Whether an event of type `ty` passes.
    pub fn matches(&self, ty: &str) -> bool {
        match self {
            Filter::Everything => true,
            Filter::Exact(t) => ty == t,
            Filter::Prefix(p) => ty.starts_with(p.as_str()),
            Filter::Suffix(s) => ty.ends_with(s.as_str()),
            Filter::All(fs) => fs.iter().all(|f| f.matches(ty)),
            Filter::Any(fs) => fs.iter().any(|f| f.matches(ty)),
            Filter::Not(f) => !f.matches(ty),
        }
    }
}

/// Delivery settings of a Trigger (`spec.delivery`).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Retries after the first attempt.
    pub retry: u32,
    /// First back-off delay.
    pub backoff: Duration,
    /// Exponential (else linear) back-off.
    pub exponential: bool,
    /// Name of the dead-letter sink's service, if any.
    pub dead_letter: Option<String>,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            retry: 0,
            backoff: Duration::from_millis(200),
            exponential: true,
            dead_letter: None,
        }
    }
}

/// A Trigger: a filter, a subscriber (a service name) and its delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// `metadata.name`.
    pub name: String,
    /// The filter.
    pub filter: Filter,
    /// `spec.subscriber.ref.name` (or `uri`).
    pub subscriber: String,
    /// Delivery settings.
    pub delivery: Delivery,
}

/// An attempt to deliver an event to a Trigger's subscriber.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Trigger name.
    pub trigger: String,
    /// The subscriber's service name.
    pub subscriber: String,
    /// Event id.
    pub event_id: String,
    /// Event type.
    pub event_type: String,
    /// HTTP status, 0 when the subscriber could not be reached.
    pub status: u16,
    /// Id of the event the subscriber replied with.
    pub reply: Option<String>,
}

/// An event the broker gave up on.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Trigger name.
    pub trigger: String,
    /// The event (structured JSON).
    pub event: Value,
    /// Last status (0: unreachable).
    pub status: u16,
    /// What the dead-letter sink answered (`None`: no sink, or unreachable).
    pub sink_status: Option<u16>,
}

struct Inner {
    triggers: Vec<Trigger>,
    /// Service name → URL.
    services: Mutex<BTreeMap<String, String>>,
    client: reqwest::Client,
    ingested: Mutex<Vec<Value>>,
    attempts: Mutex<Vec<Attempt>>,
    dead: Mutex<Vec<DeadLetter>>,
    /// Back-off delays are multiplied by this (tests shorten the manifests' delays).
    time_scale: f64,
    /// Every delivery is made twice, concurrently (at-least-once at its worst).
    duplicate: std::sync::atomic::AtomicBool,
}

/// The broker.
pub struct Broker {
    /// Ingress URL (what `K_SINK` is set to).
    pub url: String,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Broker {
    /// Starts the ingress on a free loopback port with these Triggers; back-off
    /// delays are scaled by `time_scale`. Subscribers are named services, set
    /// with [`Broker::set_service`] before events flow.
    pub async fn start(triggers: Vec<Trigger>, time_scale: f64) -> anyhow::Result<Broker> {
        let inner = Arc::new(Inner {
            triggers,
            services: Mutex::new(BTreeMap::new()),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            ingested: Mutex::new(Vec::new()),
            attempts: Mutex::new(Vec::new()),
            dead: Mutex::new(Vec::new()),
            time_scale,
            duplicate: std::sync::atomic::AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/keelson/keelson", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/keelson/keelson", post(ingress))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Broker { url, inner, server })
    }

    /// From now on, deliver every event twice to each Trigger, concurrently
    /// (Knative's delivery is at least once).
    pub fn duplicate_deliveries(&self) {
        self.inner
            .duplicate
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Where the service `name` listens.
    pub fn set_service(&self, name: &str, url: &str) {
        lock(&self.inner.services).insert(name.into(), url.into());
    }

    /// The Triggers.
    pub fn triggers(&self) -> &[Trigger] {
        &self.inner.triggers
    }

    /// Every event the ingress took (structured JSON), in arrival order.
    pub fn ingested(&self) -> Vec<Value> {
        lock(&self.inner.ingested).clone()
    }

    /// Every delivery attempt so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        lock(&self.inner.attempts).clone()
    }

    /// Events given up on.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        lock(&self.inner.dead).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn ingress(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    match to_json(&headers, body) {
        Ok(ev) => {
            publish(inner, ev);
            StatusCode::ACCEPTED
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// A CloudEvent in either mode as structured JSON (the SDK parses it).
fn to_json(headers: &HeaderMap, body: Bytes) -> anyhow::Result<Value> {
    let ce = cloudevents::binding::http::to_event(headers, body.to_vec())?;
    Ok(serde_json::to_value(&ce)?)
}

fn publish(inner: Arc<Inner>, mut ev: Value) {
    if let Some(o) = ev.as_object_mut() {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        o.insert("knativearrivaltime".into(), Value::String(now));
    }
    lock(&inner.ingested).push(ev.clone());
    let ty = ev["type"].as_str().unwrap_or("").to_string();
    let copies = if inner.duplicate.load(std::sync::atomic::Ordering::SeqCst) {
        2
    } else {
        1
    };
    for (i, t) in inner.triggers.iter().enumerate() {
        if t.filter.matches(&ty) {
            for _ in 0..copies {
                let (inner, ev) = (inner.clone(), ev.clone());
                tokio::spawn(async move { deliver(inner, i, ev).await });
            }
        }
    }
}

async fn deliver(inner: Arc<Inner>, trigger: usize, ev: Value) {
    let t = &inner.triggers[trigger];
    let mut delay = t.delivery.backoff.mul_f64(inner.time_scale);
    let mut last = (0u16, String::new());
    for attempt in 0..=t.delivery.retry {
        if attempt > 0 {
            tokio::time::sleep(delay).await;
            delay = if t.delivery.exponential {
                delay * 2
            } else {
                delay + t.delivery.backoff.mul_f64(inner.time_scale)
            };
        }
        // Looked up on every attempt: a service may come up meanwhile.
        let target = lock(&inner.services).get(&t.subscriber).cloned();
        let (status, body, reply) = match &target {
            Some(url) => send_binary(&inner.client, url, &ev, &[]).await,
            None => (0, format!("no service {}", t.subscriber), None),
        };
        lock(&inner.attempts).push(Attempt {
            trigger: t.name.clone(),
            subscriber: t.subscriber.clone(),
            event_id: ev["id"].as_str().unwrap_or("").into(),
            event_type: ev["type"].as_str().unwrap_or("").into(),
            status,
            reply: reply
                .as_ref()
                .and_then(|r| r["id"].as_str())
                .map(str::to_string),
        });
        if (200..300).contains(&status) {
            if let Some(r) = reply {
                publish(inner.clone(), r);
            }
            return;
        }
        last = (status, body);
        if !(status == 0 || retryable(status)) {
            break;
        }
    }
    dead_letter(&inner, t, ev, last).await;
}

/// Knative retries these (and unreachable subscribers).
fn retryable(status: u16) -> bool {
    matches!(status, 404 | 408 | 409 | 429) || status >= 500
}

async fn dead_letter(inner: &Arc<Inner>, t: &Trigger, ev: Value, (status, body): (u16, String)) {
    let sink_status = send_dead_letter(inner, t, &ev, status, body).await;
    lock(&inner.dead).push(DeadLetter {
        trigger: t.name.clone(),
        event: ev,
        status,
        sink_status,
    });
}

async fn send_dead_letter(
    inner: &Arc<Inner>,
    t: &Trigger,
    ev: &Value,
    status: u16,
    body: String,
) -> Option<u16> {
    let sink = t.delivery.dead_letter.as_ref()?;
    let url = lock(&inner.services).get(sink).cloned()?;
    let dest = lock(&inner.services)
        .get(&t.subscriber)
        .cloned()
        .unwrap_or_default();
    let data = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
    let extra = [
        ("knativeerrordest", dest),
        ("knativeerrorcode", status.to_string()),
        ("knativeerrordata", data),
    ];
    let (code, _, _) = send_binary(&inner.client, &url, ev, &extra).await;
    (code != 0).then_some(code)
}

/// POSTs `ev` in binary mode with `Prefer: reply`; returns the status, the
/// body, and the reply event if the answer carries one.
async fn send_binary(
    client: &reqwest::Client,
    url: &str,
    ev: &Value,
    extra: &[(&str, String)],
) -> (u16, String, Option<Value>) {
    let Some(obj) = ev.as_object() else {
        return (0, "not an object".into(), None);
    };
    let mut req = client.post(url).header("prefer", "reply");
    let mut content_type = "application/json".to_string();
    let mut body = Vec::new();
    for (k, v) in obj {
        match k.as_str() {
            "data" => body = data_bytes(v),
            "data_base64" => {
                body = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap_or(""))
                    .unwrap_or_default()
            }
            "datacontenttype" => content_type = v.as_str().unwrap_or("").to_string(),
            _ => {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                req = req.header(format!("ce-{k}"), percent_encode(&s));
            }
        }
    }
    for (k, v) in extra {
        req = req.header(format!("ce-{k}"), percent_encode(v));
    }
    let resp = match req
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return (0, e.to_string(), None),
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    let is_event = headers.contains_key("ce-id")
        || headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/cloudevents+json"));
    let body = String::from_utf8_lossy(&bytes).into_owned();
    if !(200..300).contains(&status) || (bytes.is_empty() && !is_event) {
        return (status, body, None);
    }
    match is_event.then(|| to_json(&headers, bytes.clone())) {
        Some(Ok(reply)) => (status, body, Some(reply)),
        // A reply that is no CloudEvent fails the delivery, as in Knative.
        _ => (502, body, None),
    }
}

/// The HTTP binding's encoding of a binary-mode attribute value: space, `"`,
/// `%` and everything outside printable ASCII as `%XX` (UTF-8 bytes).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn data_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.clone().into_bytes(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    }
}

/// The Triggers of the manifests in `dir` (every `*.yaml` file, every document
/// of kind `Trigger`), with the delivery of the Broker where a Trigger has none.
pub fn triggers_from_manifests(dir: &std::path::Path) -> anyhow::Result<Vec<Trigger>> {
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .with_context(|| format!("parsing {}", f.display()))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    let broker_delivery = docs
        .iter()
        .find(|d| d["kind"] == "Broker")
        .map(|b| delivery(&b["spec"]["delivery"]))
        .transpose()?
        .unwrap_or_default();
    docs.iter()
        .filter(|d| d["kind"] == "Trigger")
        .map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
            let spec = &d["spec"];
            let filter = if let Some(fs) = spec["filters"].as_array().filter(|a| !a.is_empty()) {
                // Knative: when `filters` is set, `filter` is ignored.
                Filter::All(fs.iter().map(filter).collect::<anyhow::Result<_>>()?)
            } else if let Some(attrs) = spec["filter"]["attributes"].as_object() {
                Filter::All(
                    attrs
                        .iter()
                        .map(|(k, v)| match (k.as_str(), v.as_str()) {
                            ("type", Some(t)) => Ok(Filter::Exact(t.into())),
                            _ => Err(anyhow!("trigger {name}: only type filters are played")),
                        })
                        .collect::<anyhow::Result<_>>()?,
                )
            } else {
                Filter::Everything
            };
            let subscriber = spec["subscriber"]["ref"]["name"]
                .as_str()
                .ok_or_else(|| anyhow!("trigger {name}: no subscriber ref name"))?
                .to_string();
            let delivery = if spec["delivery"].is_object() {
                delivery(&spec["delivery"])?
            } else {
                broker_delivery.clone()
            };
            Ok(Trigger {
                name,
                filter,
                subscriber,
                delivery,
            })
        })
        .collect()
}

fn filter(v: &Value) -> anyhow::Result<Filter> {
    let o: &Map<String, Value> = v.as_object().ok_or_else(|| anyhow!("filter {v}"))?;
    let (k, body) = o
        .iter()
        .next()
        .filter(|_| o.len() == 1)
        .ok_or_else(|| anyhow!("a filter has exactly one dialect: {v}"))?;
    let ty = || -> anyhow::Result<String> {
        let attrs = body.as_object().ok_or_else(|| anyhow!("filter {v}"))?;
        match (attrs.len(), attrs.get("type").and_then(Value::as_str)) {
            (1, Some(t)) => Ok(t.to_string()),
            _ => bail!("only type filters are played: {v}"),
        }
    };
    Ok(match k.as_str() {
        "exact" => Filter::Exact(ty()?),
        "prefix" => Filter::Prefix(ty()?),
        "suffix" => Filter::Suffix(ty()?),
        "all" => Filter::All(list(body)?),
        "any" => Filter::Any(list(body)?),
        "not" => Filter::Not(Box::new(filter(body)?)),
        other => bail!("filter dialect {other} is not played"),
    })
}

fn list(v: &Value) -> anyhow::Result<Vec<Filter>> {
    v.as_array()
        .ok_or_else(|| anyhow!("expected a list: {v}"))?
        .iter()
        .map(filter)
        .collect()
}

fn delivery(v: &Value) -> anyhow::Result<Delivery> {
    let mut d = Delivery::default();
    if let Some(r) = v["retry"].as_u64() {
        d.retry = r as u32;
    }
    if let Some(p) = v["backoffPolicy"].as_str() {
        d.exponential = p != "linear";
    }
    if let Some(s) = v["backoffDelay"].as_str() {
        d.backoff = iso_duration(s).ok_or_else(|| anyhow!("backoffDelay {s:?}"))?;
    }
    d.dead_letter = v["deadLetterSink"]["ref"]["name"]
        .as_str()
        .map(str::to_string);
    Ok(d)
}

/// `PT0.5S`, `PT2S`, `PT1M` (the subset Knative's examples use).
fn iso_duration(s: &str) -> Option<Duration> {
    let rest = s.strip_prefix("PT")?;
    let (num, unit) = rest.split_at(rest.len().checked_sub(1)?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "S" => n,
        "M" => n * 60.0,
        "H" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(name: &str, ty: &str, subscriber: &str) -> Trigger {
        Trigger {
            name: name.into(),
            filter: Filter::Exact(ty.into()),
            subscriber: subscriber.into(),
            delivery: Delivery {
                retry: 2,
                backoff: Duration::from_millis(5),
                exponential: true,
                dead_letter: Some("dls".into()),
            },
        }
    }

    /// A subscriber that answers with `status`, `headers` and `body`.
    async fn subscriber(
        status: u16,
        headers: Vec<(&'static str, &'static str)>,
        body: &'static str,
    ) -> String {
        let app = axum::Router::new().route(
            "/",
            post(move || {
                let headers = headers.clone();
                async move {
                    let mut r = axum::response::Response::new(axum::body::Body::from(body));
                    *r.status_mut() = StatusCode::from_u16(status).unwrap();
                    for (k, v) in headers {
                        r.headers_mut().insert(k, v.parse().unwrap());
                    }
                    r
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    }

    #[tokio::test]
    async fn replies_are_put_on_the_broker_and_a_reply_that_is_no_event_is_a_failure() {
        let broker = Broker::start(
            vec![
                trigger("a", "t.a", "replier"),
                trigger("b", "t.b", "sink"),
                trigger("c", "t.c", "garbage"),
            ],
            1.0,
        )
        .await
        .unwrap();
        let reply = r#"{"specversion":"1.0","id":"r1","source":"s","type":"t.b","data":{"x":1}}"#;
        broker.set_service(
            "replier",
            &subscriber(
                200,
                vec![("content-type", "application/cloudevents+json")],
                reply,
            )
            .await,
        );
        broker.set_service("sink", &subscriber(202, vec![], "").await);
        broker.set_service(
            "garbage",
            &subscriber(200, vec![("content-type", "text/plain")], "ok").await,
        );
        broker.set_service("dls", &subscriber(202, vec![], "").await);
        let send = |ty: &str| {
            reqwest::Client::new()
                .post(broker.url.clone())
                .header("ce-specversion", "1.0")
                .header("ce-id", format!("id-{ty}"))
                .header("ce-source", "test")
                .header("ce-type", ty.to_string())
                .header("content-type", "application/json")
                .body("{}")
                .send()
        };
        assert_eq!(send("t.a").await.unwrap().status().as_u16(), 202);
        assert_eq!(send("t.c").await.unwrap().status().as_u16(), 202);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while broker.dead_letters().is_empty()
            || !broker.attempts().iter().any(|a| a.event_id == "r1")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                broker.attempts()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The reply went to trigger b; the plain-text 200 was retried, then dead-lettered.
        let a: Vec<_> = broker
            .attempts()
            .into_iter()
            .filter(|a| a.trigger == "a")
            .collect();
        assert_eq!((a.len(), a[0].reply.as_deref()), (1, Some("r1")));
        assert!(broker
            .attempts()
            .iter()
            .any(|x| x.trigger == "b" && x.event_id == "r1" && x.status == 202));
        let c: Vec<_> = broker
            .attempts()
            .into_iter()
            .filter(|a| a.trigger == "c")
            .collect();
        assert_eq!(
            c.iter().map(|a| a.status).collect::<Vec<_>>(),
            [502, 502, 502]
        );
        let dead = broker.dead_letters();
        assert_eq!(
            (
                dead[0].trigger.as_str(),
                dead[0].status,
                dead[0].sink_status
            ),
            ("c", 502, Some(202))
        );
        assert!(broker
            .ingested()
            .iter()
            .any(|e| e["id"] == "r1" && e["knativearrivaltime"].is_string()));
    }

    #[test]
    fn filters_and_durations_are_read_as_knative_reads_them() {
        let f = filter(&serde_json::json!({"all": [
            {"prefix": {"type": "sh.keptn.event."}},
            {"suffix": {"type": ".triggered"}},
            {"not": {"exact": {"type": "sh.keptn.event.x.triggered"}}}
        ]}))
        .unwrap();
        assert!(f.matches("sh.keptn.event.dev.delivery.triggered"));
        assert!(!f.matches("sh.keptn.event.x.triggered"));
        assert!(!f.matches("sh.keptn.event.dev.delivery.finished"));
        assert!(filter(&serde_json::json!({"cesql": "true"})).is_err());
        assert_eq!(iso_duration("PT0.5S"), Some(Duration::from_millis(500)));
        assert_eq!(iso_duration("PT1M"), Some(Duration::from_secs(60)));
        assert_eq!(iso_duration("1s"), None);
    }
}
