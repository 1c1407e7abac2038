//! The Prometheus SLI provider (keptn-contrib/prometheus-service's `get-sli`
//! handling): answers a `get-sli.triggered` whose `sliProvider` is
//! `prometheus` with `get-sli.started`, then one instant query per indicator,
//! then `get-sli.finished` carrying the values.
//!
//! It keeps no state. A redelivered trigger is answered again with the same
//! event ids (derived from the trigger's id), so consumers dedupe the repeat;
//! Prometheus may have answered differently the second time, and the first
//! answer stored wins.

mod error;
pub mod placeholders;
pub mod prometheus_api;
pub mod sli;

pub use error::{ConfigError, Error};

use keelson_core::event::{task_type, KeptnEvent};
use keelson_core::ids;
use keelson_core::ports::{Clock, EventBus, ResourceStore, StoreError, Subscription};
use keelson_core::resource::Scope;
use keelson_core::Timestamp;
use placeholders::Placeholders;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sli::{Definitions, Level, CONFIG_URI, SLI_URI};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

/// Consumer name (the bus queue).
pub const CONSUMER: &str = "prometheus";
/// `source` of the events this provider emits.
pub const SOURCE: &str = "keelson-prometheus";
/// The provider name a `get-sli.triggered` must carry in `get-sli.sliProvider`.
pub const SLI_PROVIDER: &str = "prometheus";
/// Default URL of Prometheus for projects without `prometheus/config.yaml`.
pub const ENV_URL: &str = "KEELSON_PROMETHEUS_URL";
/// Timeout of one query, a Go duration (`30s`).
pub const ENV_TIMEOUT: &str = "KEELSON_PROMETHEUS_TIMEOUT";
/// Timeout of one query when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The events this function consumes.
pub fn subscription() -> Subscription {
    Subscription::new(CONSUMER, &["sh.keptn.event.get-sli.triggered"])
}

/// Settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Prometheus of projects that configure none.
    pub default_url: Option<String>,
    /// Timeout of one query (connect, send, read the answer).
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_url: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl Config {
    /// From [`ENV_URL`] (unset or empty: none) and [`ENV_TIMEOUT`] (unset: 30s).
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From variables looked up by `var`; names every bad one.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut cfg = Config::default();
        if let Some(url) = var(ENV_URL).map(|s| s.trim().to_string()) {
            if !url.is_empty() {
                match sli::check_url(&url) {
                    Ok(()) => cfg.default_url = Some(url),
                    Err(e) => problems.push(format!("{ENV_URL}: {e}")),
                }
            }
        }
        if let Some(t) = var(ENV_TIMEOUT) {
            match keelson_core::shipyard::parse_go_duration(&t) {
                Ok(ms) if ms > 0 => cfg.timeout = Duration::from_millis(ms as u64),
                Ok(_) => problems.push(format!("{ENV_TIMEOUT}: must be more than 0")),
                Err(e) => problems.push(format!("{ENV_TIMEOUT}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// What processing one event did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Not a `get-sli.triggered` for Prometheus.
    Ignored,
    /// `get-sli.started` and this `get-sli.finished` were published.
    Answered(Box<KeptnEvent>),
}

/// One entry of `get-sli.indicatorValues` (go-utils `v0_2_0.SLIResult`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SliValue {
    /// The SLI name.
    pub metric: String,
    /// The value (0 when there is none).
    pub value: f64,
    /// Always 0 from a provider; lighthouse fills it in its own results.
    #[serde(default)]
    pub compared_value: f64,
    /// Whether a value was retrieved.
    pub success: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl SliValue {
    fn ok(metric: &str, value: f64) -> Self {
        SliValue {
            metric: metric.into(),
            value,
            compared_value: 0.0,
            success: true,
            message: String::new(),
        }
    }

    fn failed(metric: &str, message: String) -> Self {
        SliValue {
            metric: metric.into(),
            value: 0.0,
            compared_value: 0.0,
            success: false,
            message,
        }
    }
}

/// The `get-sli.triggered` data this provider reads (go-utils `GetSLITriggeredEventData`).
#[derive(Debug, Deserialize)]
struct TriggerData {
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    deployment: Option<Value>,
    #[serde(rename = "get-sli")]
    get_sli: GetSli,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetSli {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    indicators: Option<Vec<String>>,
    #[serde(default)]
    custom_filters: Option<Vec<Option<Filter>>>,
}

#[derive(Debug, Deserialize)]
struct Filter {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

/// The answer to a trigger: the finished event's status, result, message and values.
#[derive(Debug)]
struct Answer {
    status: &'static str,
    result: &'static str,
    message: String,
    values: Vec<SliValue>,
}

impl Answer {
    /// prometheus-service's errored answer (its `sdk.Error` with StatusErrored / ResultFailed).
    fn errored(message: String) -> Self {
        Answer {
            status: "errored",
            result: "fail",
            message,
            values: Vec::new(),
        }
    }

    /// prometheus-service's verdict over the values: status succeeded, result
    /// pass when every indicator has a value, warning when some have none, and
    /// fail with "unable to retrieve metrics" when none has. Lighthouse scores
    /// an objective whose value has `success=false` as failed, and fails the
    /// whole evaluation only on a get-sli result of `fail` (spec §4.4, §4.5).
    fn of(values: Vec<SliValue>) -> Self {
        let failed = values.iter().filter(|v| !v.success).count();
        let (result, message) = match failed {
            0 => ("pass", String::new()),
            n if n < values.len() => ("warning", String::new()),
            _ => ("fail", "unable to retrieve metrics".to_string()),
        };
        Answer {
            status: "succeeded",
            result,
            message,
            values,
        }
    }
}

/// Why no query could be run: either a reason the finished event reports, or a
/// store failure the shell retries.
enum Refusal {
    Answer(String),
    Store(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

/// A store read whose `NotFound` (an unknown `gitcommitid`) is a reason to
/// report rather than a failure to retry.
fn read_or_report<T>(r: Result<T, StoreError>, prefix: &str) -> Result<T, Refusal> {
    match r {
        Ok(v) => Ok(v),
        Err(e @ StoreError::NotFound(_)) => Err(Refusal::Answer(format!("{prefix}: {e}"))),
        Err(e) => Err(Refusal::Store(e)),
    }
}

/// The provider with its adapters and its HTTP client.
pub struct Provider<S, B, C> {
    store: S,
    bus: B,
    clock: C,
    cfg: Config,
    /// Built once; when it cannot be (no usable TLS roots), every answer says why.
    http: Result<reqwest::Client, String>,
}

impl<S: ResourceStore, B: EventBus, C: Clock> Provider<S, B, C> {
    /// Builds it, with the one HTTP client every query uses.
    pub fn new(store: S, bus: B, clock: C, cfg: Config) -> Self {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .user_agent(concat!("keelson-prometheus/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                let e = prometheus_api::chain(&e);
                tracing::error!(error = %e, "the HTTP client for Prometheus could not be built");
                e
            });
        Provider {
            store,
            bus,
            clock,
            cfg,
            http,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Processes one event from the bus.
    pub async fn process(&self, ev: &KeptnEvent) -> Result<Outcome, Error> {
        if ev.ty != task_type("get-sli", "triggered") {
            return Ok(Outcome::Ignored);
        }
        let provider = ev
            .data
            .get("get-sli")
            .and_then(|g| g.get("sliProvider"))
            .and_then(Value::as_str);
        if provider != Some(SLI_PROVIDER) {
            return Ok(Outcome::Ignored);
        }
        let mut started_data = common_data(&ev.data);
        started_data.insert("status".into(), json!("succeeded"));
        let started = self.answer_event(ev, "started", Value::Object(started_data));
        self.bus.publish(&[started]).await?;

        let answer = match self.answer(ev).await {
            Ok(a) => a,
            Err(Refusal::Answer(message)) => Answer::errored(message),
            Err(Refusal::Store(e)) => return Err(e.into()),
        };
        if answer.status == "errored" {
            tracing::warn!(ce.id = %ev.id, shkeptncontext = %ev.shkeptncontext, message = %answer.message, "get-sli errored");
        }
        tracing::info!(
            ce.id = %ev.id,
            shkeptncontext = %ev.shkeptncontext,
            indicators = answer.values.len(),
            failed = answer.values.iter().filter(|v| !v.success).count(),
            result = answer.result,
            "get-sli answered"
        );
        let get_sli = ev.data.get("get-sli");
        let echo = |k: &str| {
            get_sli
                .and_then(|g| g.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let mut data = common_data(&ev.data);
        data.insert("status".into(), json!(answer.status));
        data.insert("result".into(), json!(answer.result));
        if !answer.message.is_empty() {
            data.insert("message".into(), json!(answer.message));
        }
        data.insert(
            "get-sli".into(),
            json!({"start": echo("start"), "end": echo("end"), "indicatorValues": answer.values}),
        );
        let finished = self.answer_event(ev, "finished", Value::Object(data));
        self.bus.publish(std::slice::from_ref(&finished)).await?;
        Ok(Outcome::Answered(Box::new(finished)))
    }

    /// `get-sli.<kind>` answering `trigger`, with an id derived from the trigger's.
    fn answer_event(&self, trigger: &KeptnEvent, kind: &str, data: Value) -> KeptnEvent {
        let ty = task_type("get-sli", kind);
        let mut ev = KeptnEvent::new(
            ids::derive(&trigger.id, &format!("get-sli.{kind}")),
            SOURCE,
            ty,
            &trigger.shkeptncontext,
            data,
            self.clock.now(),
        );
        ev.triggeredid = Some(trigger.id.clone());
        ev.gitcommitid = trigger.gitcommitid.clone();
        ev
    }

    async fn answer(&self, ev: &KeptnEvent) -> Result<Answer, Refusal> {
        let data: TriggerData = serde_json::from_value(ev.data.clone()).map_err(|e| {
            Refusal::Answer(format!("failed to decode get-sli.triggered event: {e}"))
        })?;
        let project = data.project.unwrap_or_default();
        let stage = data.stage.unwrap_or_default();
        let service = data.service.unwrap_or_default();
        let at = ev.gitcommitid.as_deref();
        let url = self.prometheus_url(&project, at).await?;
        let indicators = data.get_sli.indicators.unwrap_or_default();
        let definitions = self
            .definitions(&project, &stage, &service, at, !indicators.is_empty())
            .await?;

        let start = parse_time(data.get_sli.start.as_deref())
            .map_err(|e| format!("unable to parse start timestamp: {e}"));
        let end = parse_time(data.get_sli.end.as_deref())
            .map_err(|e| format!("unable to parse end timestamp: {e}"));
        let labels = data.labels.unwrap_or_default();
        let placeholders = Placeholders {
            deployment: placeholders::deployment(
                &labels,
                data.deployment.as_ref().and_then(Value::as_str),
            ),
            project,
            stage,
            service,
            labels,
            custom_filters: data
                .get_sli
                .custom_filters
                .unwrap_or_default()
                .into_iter()
                .flatten()
                .map(|f| (f.key, f.value))
                .collect(),
            duration_seconds: match (&start, &end) {
                (Ok(s), Ok(e)) => placeholders::duration_seconds(s.millis(), e.millis()),
                _ => 0,
            },
        };
        let http = self.http.as_ref().map_err(|e| {
            Refusal::Answer(format!(
                "the HTTP client for Prometheus could not be built: {e}"
            ))
        })?;
        let window = start.and_then(|s| end.map(|e| (s, e)));
        let queries = indicators
            .iter()
            .map(|name| self.indicator(http, name, &definitions, &placeholders, &window, &url));
        Ok(Answer::of(join_ordered(queries.collect()).await))
    }

    /// One indicator's value; every problem becomes its `success=false` message.
    async fn indicator(
        &self,
        http: &reqwest::Client,
        name: &str,
        definitions: &Definitions,
        placeholders: &Placeholders,
        window: &Result<(Timestamp, Timestamp), String>,
        url: &str,
    ) -> SliValue {
        let end = match window {
            Ok((_, end)) => *end,
            Err(e) => return SliValue::failed(name, e.clone()),
        };
        let Some(query) = definitions.get(name).filter(|q| !q.trim().is_empty()) else {
            return SliValue::failed(
                name,
                format!(
                    "unable to get metric query: no query defined for SLI {name:?} in {SLI_URI}"
                ),
            );
        };
        let query = placeholders::substitute(query, placeholders);
        tracing::debug!(sli = name, query = %query, "querying Prometheus");
        match prometheus_api::instant_query(http, url, &query, end).await {
            Ok(v) => SliValue::ok(name, v),
            Err(e) => SliValue::failed(name, e.to_string()),
        }
    }

    /// The project's Prometheus: `url` of its `prometheus/config.yaml`, else the default.
    async fn prometheus_url(&self, project: &str, at: Option<&str>) -> Result<String, Refusal> {
        const PREFIX: &str = "failed to get Prometheus API URL";
        if !project.is_empty() {
            let res = self
                .store
                .read_resource(project, &Scope::project(), CONFIG_URI, at)
                .await;
            if let Some(r) = read_or_report(res, PREFIX)? {
                let url = sli::parse_config_url(&r.content).map_err(|e| {
                    Refusal::Answer(format!("{PREFIX}: {CONFIG_URI} of project {project}: {e}"))
                })?;
                if let Some(u) = url {
                    return Ok(u);
                }
            }
        }
        self.cfg.default_url.clone().ok_or_else(|| {
            Refusal::Answer(format!(
                "{PREFIX}: none is configured: set url in {CONFIG_URI} of project {project}, or {ENV_URL}"
            ))
        })
    }

    /// The SLI queries, merged project < stage < service as Keptn's SLI lookup
    /// did. Missing at every level is reported only when indicators were asked for.
    async fn definitions(
        &self,
        project: &str,
        stage: &str,
        service: &str,
        at: Option<&str>,
        required: bool,
    ) -> Result<Definitions, Refusal> {
        let prefix = format!("unable to retrieve custom queries for project {project}");
        let mut levels = Vec::new();
        if !project.is_empty() {
            levels.push((Level::Project(project.into()), Scope::project()));
            if !stage.is_empty() {
                levels.push((
                    Level::Stage(stage.into()),
                    Scope {
                        stage: Some(stage.into()),
                        service: None,
                    },
                ));
                if !service.is_empty() {
                    levels.push((
                        Level::Service {
                            stage: stage.into(),
                            service: service.into(),
                        },
                        Scope {
                            stage: Some(stage.into()),
                            service: Some(service.into()),
                        },
                    ));
                }
            }
        }
        let mut files = Vec::new();
        for (level, scope) in levels {
            let res = self.store.read_resource(project, &scope, SLI_URI, at).await;
            let content = read_or_report(res, &prefix)?.map(|r| r.content);
            files.push((level, content));
        }
        match sli::merge(&files) {
            Ok(Some(d)) => Ok(d),
            Ok(None) if !required => Ok(Definitions::new()),
            Ok(None) => {
                let searched: Vec<String> = files.iter().map(|(l, _)| l.to_string()).collect();
                Err(Refusal::Answer(format!(
                    "{prefix}: no {SLI_URI} found (looked at {})",
                    if searched.is_empty() {
                        "nothing: the event names no project".to_string()
                    } else {
                        searched.join(", ")
                    }
                )))
            }
            Err(e) => Err(Refusal::Answer(format!("{prefix}: {e}"))),
        }
    }
}

/// `project`, `stage`, `service` and `labels` of a trigger, as answers echo them.
fn common_data(data: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    for k in ["project", "stage", "service"] {
        if let Some(s) = data
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            m.insert(k.into(), json!(s));
        }
    }
    if let Some(l) = data
        .get("labels")
        .filter(|l| l.as_object().is_some_and(|o| !o.is_empty()))
    {
        m.insert("labels".into(), l.clone());
    }
    m
}

/// A `get-sli` time: RFC 3339 or Unix seconds, as prometheus-service accepted.
fn parse_time(s: Option<&str>) -> Result<Timestamp, String> {
    let s = s.unwrap_or_default();
    if let Some(t) = Timestamp::parse(s) {
        return Ok(t);
    }
    s.trim()
        .parse::<i64>()
        .ok()
        .and_then(|secs| secs.checked_mul(1000))
        .map(Timestamp::from_millis)
        .ok_or_else(|| format!("{s:?} is neither an RFC 3339 time nor Unix seconds"))
}

/// Runs the futures concurrently; their outputs in the futures' order.
async fn join_ordered<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (f, out) in pending.iter_mut().zip(done.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests;
