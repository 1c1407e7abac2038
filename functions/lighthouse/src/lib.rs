//! The `lighthouse` function: SLO quality gates (Keptn's lighthouse-service).
//!
//! `evaluation.triggered` → `evaluation.started` and `get-sli.triggered` to the
//! project's SLI provider; `get-sli.finished` → `slo.yaml` at the event's
//! commit, previous `evaluation.finished` events from the datastore (without
//! invalidated ones) → [`keelson_core::slo::evaluation_finished_data`] →
//! `evaluation.finished`. `monitoring.configure` sets a project's SLI provider.
//!
//! Stateless: every emitted id is derived from the id of the event that caused
//! it, so a redelivered event re-emits the same events and consumers dedupe.

mod error;

pub use error::Error;

use keelson_core::event::{task_type, KeptnEvent};
use keelson_core::lighthouse::{self as decide, SloAtTrigger};
use keelson_core::ports::{
    Clock, EventBus, EventStore, OpenTriggerFilter, ProjectStore, ResourceStore, SequenceStore,
    StoreError, Subscription, TypeHit,
};
use keelson_core::query::{EventQuery, FilterTerm, TypeQuery, MAX_PAGE_SIZE};
use keelson_core::resource::{Change, Scope};
use keelson_core::slo::{self, SloInput};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Consumer name (its queue on the bus).
pub const CONSUMER: &str = "lighthouse";

/// The service-level SLO file.
pub const SLO_URI: &str = "slo.yaml";

/// Project-level resource naming the project's SLI provider, Keelson's form of
/// Keptn's `lighthouse-config-<project>` config map (same key).
pub const CONFIG_URI: &str = "lighthouse-config.yaml";

/// Key of the SLI provider in [`CONFIG_URI`].
pub const PROVIDER_KEY: &str = "sli-provider";

/// How long a `get-sli.finished` whose evaluation trigger is not in the
/// datastore yet is retried before it is answered as an orphan: the datastore
/// consumes the same bus and may simply be behind.
const ORPHAN_GRACE_MS: i64 = 60_000;

/// The events this function consumes.
pub fn subscription() -> Subscription {
    Subscription::new(
        CONSUMER,
        &[
            "sh.keptn.event.evaluation.triggered",
            "sh.keptn.event.get-sli.finished",
            "sh.keptn.event.monitoring.configure",
        ],
    )
}

/// Settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// SLI provider of projects that configure none (Keptn's `lighthouse-config`).
    pub default_sli_provider: Option<String>,
}

impl Config {
    /// From `KEELSON_SLI_PROVIDER` (unset or empty: none).
    pub fn from_env() -> Config {
        Config {
            default_sli_provider: std::env::var("KEELSON_SLI_PROVIDER")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        }
    }
}

/// What processing one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// These many events were published.
    Published(usize),
    /// A project's SLI provider was set.
    Configured,
    /// Not for this function.
    Ignored,
}

/// The lighthouse with its adapters.
pub struct Lighthouse<S, B, C> {
    store: S,
    bus: B,
    clock: C,
    cfg: Config,
    /// Parsed SLO files by their text: parsing YAML is most of an
    /// evaluation's CPU, and a service's slo.yaml rarely changes.
    slos: Mutex<HashMap<String, Arc<slo::Slo>>>,
    /// Previous evaluations decoded, by event id (`None`: unreadable).
    /// Stored events never change, and each is compared with by the next
    /// few evaluations of its service: decoding the ~6 KB events again was
    /// the largest cost of an evaluation.
    previous: Mutex<HashMap<String, Option<Arc<slo::PreviousEvaluation>>>>,
    /// The `evaluation.triggered` events answered here, by the id of the
    /// `get-sli.triggered` sent for each: the `get-sli.finished` names it,
    /// and finds its trigger without a read. Stored events never change, so
    /// this finds what the datastore would (the open triggers are only the
    /// quicker of the store's two ways to it).
    triggers: Mutex<HashMap<String, Arc<KeptnEvent>>>,
}

/// Distinct SLO texts kept parsed (the cache starts over when it is full).
const SLO_CACHE: usize = 256;
/// Previous evaluations kept decoded (the cache starts over when it is full).
const PREVIOUS_CACHE: usize = 4096;
/// Evaluation triggers kept (the cache starts over when it is full).
const TRIGGER_CACHE: usize = 4096;

impl<S: EventStore + ProjectStore + ResourceStore + SequenceStore, B: EventBus, C: Clock>
    Lighthouse<S, B, C>
{
    /// Builds it.
    pub fn new(store: S, bus: B, clock: C, cfg: Config) -> Self {
        Lighthouse {
            store,
            bus,
            clock,
            cfg,
            slos: Mutex::new(HashMap::new()),
            previous: Mutex::new(HashMap::new()),
            triggers: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps a decoded previous evaluation.
    fn remember(&self, id: String, p: Option<Arc<slo::PreviousEvaluation>>) {
        let mut cache = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= PREVIOUS_CACHE {
            cache.clear();
        }
        cache.insert(id, p);
    }

    /// `slo::parse`, cached by text.
    fn parse_slo(&self, text: &str) -> Result<Arc<slo::Slo>, slo::SloError> {
        let mut cache = self.slos.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(text) {
            return Ok(p.clone());
        }
        let parsed = Arc::new(slo::parse(text)?);
        if cache.len() >= SLO_CACHE {
            cache.clear();
        }
        cache.insert(text.to_string(), parsed.clone());
        Ok(parsed)
    }

    /// Processes one event from the bus.
    pub async fn process(&self, ev: &KeptnEvent) -> Result<Outcome, Error> {
        if ev.ty == task_type("evaluation", "triggered") {
            self.on_triggered(ev).await
        } else if ev.ty == task_type("get-sli", "finished") {
            self.on_get_sli_finished(ev).await
        } else if ev.ty == "sh.keptn.event.monitoring.configure" {
            self.on_configure(ev).await
        } else {
            Ok(Outcome::Ignored)
        }
    }

    async fn publish(&self, events: Vec<KeptnEvent>) -> Result<Outcome, Error> {
        self.bus.publish(&events).await?;
        Ok(Outcome::Published(events.len()))
    }

    /// The provider named in the project's [`CONFIG_URI`]; `NotFound` for an unknown project.
    async fn configured_provider(&self, project: &str) -> Result<Option<String>, StoreError> {
        let r = self
            .store
            .read_resource(project, &Scope::project(), CONFIG_URI, None)
            .await?;
        Ok(r.and_then(|r| provider_of(&r.content)))
    }

    /// The SLI provider of a project: its [`CONFIG_URI`], else the default.
    pub async fn sli_provider(&self, project: &str) -> Result<Option<String>, Error> {
        let configured = match self.configured_provider(project).await {
            Ok(p) => p,
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(configured.or_else(|| self.cfg.default_sli_provider.clone()))
    }

    async fn read_slo(
        &self,
        ev: &KeptnEvent,
        at: Option<&str>,
    ) -> Result<Result<Option<Vec<u8>>, String>, Error> {
        let (Some(project), Some(stage), Some(service)) = (ev.project(), ev.stage(), ev.service())
        else {
            return Ok(Err("the event names no project, stage and service".into()));
        };
        // Keptn names what is missing: project, stage or service.
        let Some(p) = self.store.get_project(project).await?.map(|v| v.value) else {
            return Ok(Err(format!("project {project} not found")));
        };
        if !p.stages.iter().any(|s| s == stage) {
            return Ok(Err(format!("stage {stage} not found")));
        }
        if p.service(service).is_none() {
            return Ok(Err(format!("service {service} not found")));
        }
        let scope = Scope {
            stage: Some(stage.into()),
            service: Some(service.into()),
        };
        match self.store.read_resource(project, &scope, SLO_URI, at).await {
            Ok(r) => Ok(Ok(r.map(|r| r.content))),
            Err(StoreError::NotFound(what)) => Ok(Err(format!("{what} not found"))),
            Err(e) if e.kind() == keelson_core::ErrorKind::Transient => Err(e.into()),
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    async fn on_triggered(&self, ev: &KeptnEvent) -> Result<Outcome, Error> {
        let slo = match self.read_slo(ev, ev.gitcommitid.as_deref()).await? {
            Ok(None) => SloAtTrigger::Missing,
            Ok(Some(bytes)) => match std::str::from_utf8(&bytes)
                .map_err(|_| "slo.yaml is not UTF-8 text".to_string())
                .and_then(|t| self.parse_slo(t).map_err(|e| e.to_string()))
            {
                Ok(s) => SloAtTrigger::Found {
                    indicators: s.objectives.iter().map(|o| o.sli.clone()).collect(),
                    filters: s
                        .filter
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                },
                Err(e) => SloAtTrigger::Unreadable(e),
            },
            Err(e) => SloAtTrigger::Unreadable(e),
        };
        let provider = match ev.project() {
            Some(p) => self.sli_provider(p).await?,
            None => None,
        };
        let out = decide::on_evaluation_triggered(ev, &slo, provider.as_deref(), self.clock.now());
        let sent = self.publish(out).await?;
        let mut triggers = self.triggers.lock().unwrap_or_else(|e| e.into_inner());
        if triggers.len() >= TRIGGER_CACHE {
            triggers.clear();
        }
        triggers.insert(decide::get_sli_id(&ev.id), Arc::new(ev.clone()));
        Ok(sent)
    }

    /// The trigger answered here whose `get-sli.triggered` `ev` answers, if
    /// it is of `ev`'s context and lane (what the store's queries select).
    fn remembered_trigger(&self, ev: &KeptnEvent) -> Option<KeptnEvent> {
        let named = ev.triggeredid.as_deref()?;
        let t = self
            .triggers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(named)
            .cloned()?;
        (t.shkeptncontext == ev.shkeptncontext
            && t.project() == ev.project()
            && t.stage() == ev.stage()
            && t.service() == ev.service())
        .then(|| (*t).clone())
    }

    /// The evaluation triggers `ev` may answer, from the store.
    async fn stored_triggers(&self, ev: &KeptnEvent) -> Result<Vec<KeptnEvent>, Error> {
        // The shipyard records the triggers it sends in the same write that
        // emits them, so they are found there at once; the datastore, which
        // consumes the same bus and may be behind, holds the rest (triggers
        // someone else sent).
        let open = self
            .store
            .open_triggers(&OpenTriggerFilter {
                ty: task_type("evaluation", "triggered"),
                project: ev.project().map(String::from),
                stage: ev.stage().map(String::from),
                service: ev.service().map(String::from),
                event_id: None,
            })
            .await?;
        let named = ev.triggeredid.as_deref();
        let from_lanes = open
            .into_iter()
            .rev()
            .filter(|t| t.shkeptncontext == ev.shkeptncontext)
            .find(|t| Some(decide::get_sli_id(&t.id).as_str()) == named);
        Ok(match from_lanes {
            Some(t) => vec![t],
            None => {
                self.store
                    .query_events(&EventQuery {
                        keptn_context: Some(ev.shkeptncontext.clone()),
                        ty: Some(task_type("evaluation", "triggered")),
                        project: ev.project().map(String::from),
                        stage: ev.stage().map(String::from),
                        service: ev.service().map(String::from),
                        page_size: MAX_PAGE_SIZE,
                        ..EventQuery::default()
                    })
                    .await?
                    .events
            }
        })
    }

    async fn on_get_sli_finished(&self, ev: &KeptnEvent) -> Result<Outcome, Error> {
        let now = self.clock.now();
        let candidates = match self.remembered_trigger(ev) {
            Some(t) => vec![t],
            None => self.stored_triggers(ev).await?,
        };
        let Some(trigger) = decide::pick_trigger(&candidates, ev) else {
            if now.millis().saturating_sub(ev.time.millis()) < ORPHAN_GRACE_MS {
                return Err(Error::TriggerNotStoredYet(ev.id.clone()));
            }
            return self
                .publish(vec![decide::orphan_get_sli_finished(ev, now)])
                .await;
        };
        let at = ev.gitcommitid.as_deref().filter(|c| !c.is_empty());
        let read = self.read_slo(ev, at).await?;
        let text;
        let input = match &read {
            Ok(None) => SloInput::Missing,
            Ok(Some(bytes)) => match std::str::from_utf8(bytes) {
                Ok(t) => {
                    text = t.to_string();
                    SloInput::Text(&text)
                }
                Err(_) => SloInput::Unreadable {
                    error: "slo.yaml is not UTF-8 text".into(),
                    raw: bytes,
                },
            },
            Err(e) => SloInput::Unreadable {
                error: e.clone(),
                raw: &[],
            },
        };
        // Parsed once: for choosing the previous evaluations and for the scoring.
        let parsed = match &input {
            SloInput::Text(t) => self.parse_slo(t).ok().map(|p| (*t, p)),
            _ => None,
        };
        let (input, previous) = match &parsed {
            Some((text, p)) => (
                SloInput::Parsed { text, slo: p },
                self.previous(ev, trigger, &p.comparison).await?,
            ),
            None => (input, vec![]),
        };
        let data = slo::evaluation_finished_data(&ev.data, input, &previous);
        let finished = decide::evaluation_finished(trigger, data, ev.gitcommitid.clone(), now);
        // The next evaluation of this service compares with this one: keep it
        // decoded as the store would give it (serde_json's float_roundtrip
        // reads back every float exactly as written; a test holds it to that).
        let id = finished.id.clone();
        let decoded = slo::PreviousEvaluation::from_value(&finished.data)
            .ok()
            .map(|p| {
                Arc::new(slo::PreviousEvaluation {
                    id: id.clone(),
                    ..p
                })
            });
        let out = self.publish(vec![finished]).await?;
        self.remember(id, decoded);
        Ok(out)
    }

    /// Previous evaluations to compare with, newest first, as Keptn's datastore
    /// query selects them (§4.6). The evaluation being answered is excluded: on
    /// a redelivery its own earlier `evaluation.finished` may already be stored.
    async fn previous(
        &self,
        ev: &KeptnEvent,
        trigger: &KeptnEvent,
        c: &slo::Comparison,
    ) -> Result<Vec<slo::PreviousEvaluation>, Error> {
        let Some(project) = ev.project() else {
            return Ok(vec![]);
        };
        let term = |k: &str, v: Vec<String>| FilterTerm {
            key: k.into(),
            values: v,
        };
        let mut filter = vec![term("data.project", vec![project.into()])];
        if let Some(s) = ev.stage() {
            filter.push(term("data.stage", vec![s.into()]));
        }
        if let Some(s) = ev.service() {
            filter.push(term("data.service", vec![s.into()]));
        }
        if let Some(results) = c.result_filter() {
            filter.push(term(
                "data.result",
                results.iter().map(|r| r.to_string()).collect(),
            ));
        }
        let own = keelson_core::ids::derive(&trigger.id, "evaluation.finished");
        // What the cache holds is taken out as the store asks, so that a
        // cache starting over meanwhile loses nothing.
        let taken: Mutex<HashMap<String, Option<Arc<slo::PreviousEvaluation>>>> =
            Mutex::new(HashMap::new());
        let known = |id: &str| {
            let cache = self.previous.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(id) {
                Some(p) => {
                    let mut taken = taken.lock().unwrap_or_else(|e| e.into_inner());
                    taken.insert(id.to_string(), p.clone());
                    true
                }
                None => false,
            }
        };
        let hits = self
            .store
            .query_by_type_skipping(
                &TypeQuery {
                    ty: task_type("evaluation", "finished"),
                    filter,
                    exclude_invalidated: true,
                    from_time: None,
                    limit: (c.limit() + 1).clamp(1, MAX_PAGE_SIZE),
                },
                &known,
            )
            .await?;
        let mut taken = taken.into_inner().unwrap_or_else(|e| e.into_inner());
        // One unreadable stored event must not drop every comparison: skip it (as Keptn did).
        let previous = hits
            .into_iter()
            .filter_map(|hit| match hit {
                TypeHit::Known(id) => taken.remove(&id).flatten(),
                TypeHit::Event(e) => {
                    let decoded = slo::PreviousEvaluation::from_value(&e.data).ok().map(|p| {
                        Arc::new(slo::PreviousEvaluation {
                            id: e.id.clone(),
                            ..p
                        })
                    });
                    self.remember(e.id, decoded.clone());
                    decoded
                }
            })
            .filter(|p| p.id != own)
            .map(|p| (*p).clone())
            .collect();
        Ok(slo::select_previous(c, previous))
    }

    /// `monitoring.configure` (`data.type` = the provider): stores the
    /// project's SLI provider, as Keptn's lighthouse wrote its config map.
    async fn on_configure(&self, ev: &KeptnEvent) -> Result<Outcome, Error> {
        let (Some(project), Some(provider)) = (ev.project(), ev.data_str("type")) else {
            return Err(Error::Invalid(
                "monitoring.configure needs data.project and data.type".into(),
            ));
        };
        let current = match self.configured_provider(project).await {
            Err(StoreError::NotFound(what)) => {
                return Err(Error::Invalid(format!("{what} not found")))
            }
            r => r?,
        };
        if current.as_deref() == Some(provider) {
            return Ok(Outcome::Configured);
        }
        let content = format!("{PROVIDER_KEY}: {}\n", yaml_string(provider));
        self.store
            .write_resources(
                project,
                &Scope::project(),
                &[Change {
                    uri: CONFIG_URI.into(),
                    content: Some(content.into_bytes()),
                }],
                self.clock.now(),
            )
            .await?;
        Ok(Outcome::Configured)
    }
}

/// The provider named in a [`CONFIG_URI`] file (`sli-provider: <name>`).
pub fn provider_of(content: &[u8]) -> Option<String> {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_slice(content).ok()?;
    v.get(PROVIDER_KEY)?
        .as_str()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}
