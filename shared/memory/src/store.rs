//! The in-memory store.

use crate::lock;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{
    EventStore, ExecutionFilter, Integration, IntegrationStore, LaneCommit, OpenTriggerFilter,
    ProjectStore, ResourceStore, SequenceStore, StoreError, StoreResult, Versioned,
};
use keelson_core::project::Project;
use keelson_core::query::{self, EventPage, EventQuery, TypeQuery};
use keelson_core::resource::{Change, Resource, Scope, SHIPYARD_URI};
use keelson_core::sequence::{self, Execution, LaneKey, LaneState};
use keelson_core::timestamp::Timestamp;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Every store port, in memory. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<State>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[derive(Debug, Default)]
struct State {
    events: Events,
    projects: BTreeMap<String, ProjectRec>,
    lanes: BTreeMap<LaneKey, LaneRec>,
    applied: HashMap<(String, String), (Vec<KeptnEvent>, Timestamp)>,
    executions: HashMap<String, ExecRec>,
    open_triggers: BTreeMap<LaneKey, Vec<KeptnEvent>>,
    /// (project, context, stage); `""` marks the whole context.
    pauses: BTreeSet<(String, String, String)>,
    integrations: BTreeMap<String, Integration>,
}

#[derive(Debug)]
struct StoredEvent {
    /// Insertion order, for root ties.
    seq: u64,
    ev: KeptnEvent,
}

#[derive(Debug, Default)]
struct Events {
    next_seq: u64,
    by_id: HashMap<String, StoredEvent>,
    /// shkeptncontext → id of its root event (smallest time, first stored on ties).
    roots: HashMap<String, String>,
}

impl Events {
    fn insert(&mut self, ev: &KeptnEvent) -> bool {
        if self.by_id.contains_key(&ev.id) {
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let becomes_root = match self.roots.get(&ev.shkeptncontext) {
            None => true,
            Some(root) => self.by_id.get(root).is_none_or(|r| ev.time < r.ev.time),
        };
        if becomes_root {
            self.roots.insert(ev.shkeptncontext.clone(), ev.id.clone());
        }
        self.by_id.insert(
            ev.id.clone(),
            StoredEvent {
                seq,
                ev: ev.clone(),
            },
        );
        true
    }

    fn is_root(&self, ev: &KeptnEvent) -> bool {
        self.roots.get(&ev.shkeptncontext) == Some(&ev.id)
    }

    /// Removes the events `drop` selects and re-elects the roots of the contexts that lost theirs.
    fn remove_where(&mut self, drop: impl Fn(&KeptnEvent) -> bool) -> u64 {
        let mut orphaned = HashSet::new();
        let mut removed = 0;
        let roots = &self.roots;
        self.by_id.retain(|id, s| {
            if !drop(&s.ev) {
                return true;
            }
            if roots.get(&s.ev.shkeptncontext) == Some(id) {
                orphaned.insert(s.ev.shkeptncontext.clone());
            }
            removed += 1;
            false
        });
        if orphaned.is_empty() {
            return removed;
        }
        let mut best: HashMap<&str, &StoredEvent> = HashMap::new();
        for s in self.by_id.values() {
            let ctx = s.ev.shkeptncontext.as_str();
            if !orphaned.contains(ctx) {
                continue;
            }
            let better = best
                .get(ctx)
                .is_none_or(|b| (s.ev.time, s.seq) < (b.ev.time, b.seq));
            if better {
                best.insert(ctx, s);
            }
        }
        for ctx in &orphaned {
            self.roots.remove(ctx);
        }
        let new_roots: Vec<(String, String)> = best
            .into_iter()
            .map(|(ctx, s)| (ctx.to_string(), s.ev.id.clone()))
            .collect();
        self.roots.extend(new_roots);
        removed
    }
}

/// Newest first: time descending, then the later stored first.
fn newest_first(a: &StoredEvent, b: &StoredEvent) -> Ordering {
    (b.ev.time, b.seq).cmp(&(a.ev.time, a.seq))
}

/// A resource's changes as (commit seq, content or `None` for a deletion), oldest first.
type History = Vec<(usize, Option<Vec<u8>>)>;

#[derive(Debug)]
struct ProjectRec {
    version: u64,
    project: Project,
    /// Commit ids, oldest first; a commit's sequence number is its index.
    commits: Vec<String>,
    /// (scope key, uri) → its changes.
    resources: BTreeMap<(String, String), History>,
}

impl ProjectRec {
    fn commit(&mut self, scope: &str, changes: &[Change]) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let seq = self.commits.len();
        self.commits.push(id.clone());
        for c in changes {
            let hist = self
                .resources
                .entry((scope.to_string(), c.uri.clone()))
                .or_default();
            match hist.last_mut() {
                Some(last) if last.0 == seq => last.1 = c.content.clone(),
                _ => hist.push((seq, c.content.clone())),
            }
        }
        id
    }

    /// The sequence number a read is made at; `None` when the project has no commit yet.
    fn read_point(&self, project: &str, at: Option<&str>) -> StoreResult<Option<usize>> {
        match at {
            None => Ok(self.commits.len().checked_sub(1)),
            Some(c) => self
                .commits
                .iter()
                .position(|x| x == c)
                .map(Some)
                .ok_or_else(|| StoreError::NotFound(format!("commit {c} of project {project}"))),
        }
    }

    /// The change of a history in effect at `seq`.
    fn at(hist: &History, seq: usize) -> Option<&(usize, Option<Vec<u8>>)> {
        hist.iter().rev().find(|(s, _)| *s <= seq)
    }
}

#[derive(Debug)]
struct LaneRec {
    version: u64,
    state: LaneState,
    next_wakeup: Option<Timestamp>,
}

#[derive(Debug)]
struct ExecRec {
    active: bool,
    exec: Execution,
}

impl EventStore for MemoryStore {
    async fn insert_events(&self, events: &[KeptnEvent]) -> StoreResult<usize> {
        let mut st = lock(&self.inner);
        Ok(events.iter().filter(|e| st.events.insert(e)).count())
    }

    async fn query_events(&self, q: &EventQuery) -> StoreResult<EventPage> {
        let st = lock(&self.inner);
        let mut hits: Vec<&StoredEvent> = st
            .events
            .by_id
            .values()
            .filter(|s| q.matches(&s.ev) && (!q.root || st.events.is_root(&s.ev)))
            .collect();
        hits.sort_by(|a, b| newest_first(a, b));
        let page_size = q.effective_page_size();
        let total_count = hits.len();
        let events = hits
            .into_iter()
            .skip(q.offset)
            .take(page_size)
            .map(|s| s.ev.clone())
            .collect();
        Ok(EventPage::at(events, q.offset, page_size, total_count))
    }

    async fn query_by_type(&self, q: &TypeQuery) -> StoreResult<Vec<KeptnEvent>> {
        let st = lock(&self.inner);
        let invalidated: HashSet<&str> = if q.exclude_invalidated {
            st.events
                .by_id
                .values()
                .filter(|s| query::is_invalidation(&s.ev.ty))
                .filter_map(|s| s.ev.triggeredid.as_deref())
                .collect()
        } else {
            HashSet::new()
        };
        let mut hits: Vec<&StoredEvent> = st
            .events
            .by_id
            .values()
            .filter(|s| q.matches(&s.ev))
            .filter(|s| {
                s.ev.triggeredid
                    .as_deref()
                    .is_none_or(|t| !invalidated.contains(t))
            })
            .collect();
        hits.sort_by(|a, b| newest_first(a, b));
        let limit = q.effective_limit();
        Ok(hits.into_iter().take(limit).map(|s| s.ev.clone()).collect())
    }

    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64> {
        let mut st = lock(&self.inner);
        Ok(st.events.remove_where(|e| e.time < before))
    }
}

impl ProjectStore for MemoryStore {
    async fn create_project(&self, p: &Project, _now: Timestamp) -> StoreResult<String> {
        let mut st = lock(&self.inner);
        if st.projects.contains_key(&p.name) {
            return Err(StoreError::AlreadyExists(format!("project {}", p.name)));
        }
        let mut rec = ProjectRec {
            version: 1,
            project: p.clone(),
            commits: Vec::new(),
            resources: BTreeMap::new(),
        };
        let commit = rec.commit(
            &Scope::project().key(),
            &[Change {
                uri: SHIPYARD_URI.into(),
                content: Some(p.shipyard.as_bytes().to_vec()),
            }],
        );
        st.projects.insert(p.name.clone(), rec);
        Ok(commit)
    }

    async fn get_project(&self, name: &str) -> StoreResult<Option<Versioned<Project>>> {
        let st = lock(&self.inner);
        Ok(st.projects.get(name).map(|r| Versioned {
            version: r.version,
            value: r.project.clone(),
        }))
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        let st = lock(&self.inner);
        Ok(st.projects.values().map(|r| r.project.clone()).collect())
    }

    async fn update_project(&self, p: &Project, expected_version: u64) -> StoreResult<()> {
        let mut st = lock(&self.inner);
        let rec = st
            .projects
            .get_mut(&p.name)
            .ok_or_else(|| StoreError::NotFound(format!("project {}", p.name)))?;
        if rec.version != expected_version {
            return Err(StoreError::Conflict);
        }
        rec.version += 1;
        rec.project = p.clone();
        Ok(())
    }

    async fn delete_project(&self, name: &str) -> StoreResult<bool> {
        let mut st = lock(&self.inner);
        if st.projects.remove(name).is_none() {
            return Ok(false);
        }
        st.lanes.retain(|k, _| k.project != name);
        st.open_triggers.retain(|k, _| k.project != name);
        st.executions.retain(|_, r| r.exec.project != name);
        st.pauses.retain(|(p, _, _)| p != name);
        st.events.remove_where(|e| e.project() == Some(name));
        Ok(true)
    }
}

impl ResourceStore for MemoryStore {
    async fn write_resources(
        &self,
        project: &str,
        scope: &Scope,
        changes: &[Change],
        _now: Timestamp,
    ) -> StoreResult<String> {
        let mut st = lock(&self.inner);
        let rec = st
            .projects
            .get_mut(project)
            .ok_or_else(|| StoreError::NotFound(format!("project {project}")))?;
        Ok(rec.commit(&scope.key(), changes))
    }

    async fn read_resource(
        &self,
        project: &str,
        scope: &Scope,
        uri: &str,
        at: Option<&str>,
    ) -> StoreResult<Option<Resource>> {
        let st = lock(&self.inner);
        let Some(rec) = st.projects.get(project) else {
            return match at {
                None => Ok(None),
                Some(c) => Err(StoreError::NotFound(format!(
                    "commit {c} of project {project}"
                ))),
            };
        };
        let Some(seq) = rec.read_point(project, at)? else {
            return Ok(None);
        };
        let Some(hist) = rec.resources.get(&(scope.key(), uri.to_string())) else {
            return Ok(None);
        };
        Ok(match ProjectRec::at(hist, seq) {
            Some((s, Some(content))) => Some(Resource {
                uri: uri.to_string(),
                content: content.clone(),
                version: rec.commits[*s].clone(),
            }),
            _ => None,
        })
    }

    async fn list_resources(
        &self,
        project: &str,
        scope: &Scope,
        at: Option<&str>,
    ) -> StoreResult<Vec<(String, String)>> {
        let st = lock(&self.inner);
        let Some(rec) = st.projects.get(project) else {
            return match at {
                None => Ok(Vec::new()),
                Some(c) => Err(StoreError::NotFound(format!(
                    "commit {c} of project {project}"
                ))),
            };
        };
        let Some(seq) = rec.read_point(project, at)? else {
            return Ok(Vec::new());
        };
        let key = scope.key();
        Ok(rec
            .resources
            .iter()
            .filter(|((s, _), _)| *s == key)
            .filter_map(|((_, uri), hist)| match ProjectRec::at(hist, seq) {
                Some((s, Some(_))) => Some((uri.clone(), rec.commits[*s].clone())),
                _ => None,
            })
            .collect())
    }

    async fn latest_commit(&self, project: &str) -> StoreResult<Option<String>> {
        let st = lock(&self.inner);
        Ok(st
            .projects
            .get(project)
            .and_then(|r| r.commits.last().cloned()))
    }
}

impl SequenceStore for MemoryStore {
    async fn load_lane(&self, key: &LaneKey) -> StoreResult<Option<Versioned<LaneState>>> {
        let st = lock(&self.inner);
        Ok(st.lanes.get(key).map(|l| Versioned {
            version: l.version,
            value: l.state.clone(),
        }))
    }

    async fn commit_lane(&self, c: LaneCommit<'_>) -> StoreResult<()> {
        let mut st = lock(&self.inner);
        let applied_key = (c.consumer.to_string(), c.cause_id.to_string());
        if st.applied.contains_key(&applied_key) {
            return Err(StoreError::AlreadyApplied);
        }
        let current = st.lanes.get(c.key).map_or(0, |l| l.version);
        if current != c.expected_version {
            return Err(StoreError::Conflict);
        }
        st.lanes.insert(
            c.key.clone(),
            LaneRec {
                version: current + 1,
                state: c.state.clone(),
                next_wakeup: c.next_wakeup,
            },
        );
        st.applied.insert(applied_key, (c.effects.to_vec(), c.now));
        for e in c.state.executions.iter().chain(c.ended) {
            st.executions.insert(
                e.id.clone(),
                ExecRec {
                    active: !e.state.is_terminal(),
                    exec: e.clone(),
                },
            );
        }
        let open: Vec<KeptnEvent> = sequence::open_triggers(c.state)
            .into_iter()
            .cloned()
            .collect();
        st.open_triggers.insert(c.key.clone(), open);
        Ok(())
    }

    async fn record_applied(
        &self,
        consumer: &str,
        cause_id: &str,
        effects: &[KeptnEvent],
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut st = lock(&self.inner);
        let key = (consumer.to_string(), cause_id.to_string());
        if st.applied.contains_key(&key) {
            return Ok(false);
        }
        st.applied.insert(key, (effects.to_vec(), now));
        Ok(true)
    }

    async fn recent_effects(&self, consumer: &str, window_ms: i64) -> StoreResult<Vec<KeptnEvent>> {
        let st = lock(&self.inner);
        // (applied_at, cause_id, effects) of this consumer's records.
        let mut mine: Vec<(Timestamp, &String, &Vec<KeptnEvent>)> = st
            .applied
            .iter()
            .filter(|((c, _), _)| c == consumer)
            .map(|((_, cause), (effects, at))| (*at, cause, effects))
            .collect();
        let Some(newest) = mine.iter().map(|(at, _, _)| *at).max() else {
            return Ok(vec![]);
        };
        let from = newest.millis().saturating_sub(window_ms);
        mine.retain(|(at, _, _)| at.millis() >= from);
        mine.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        Ok(mine.into_iter().flat_map(|(_, _, e)| e.clone()).collect())
    }

    async fn purge_applied(&self, before: Timestamp) -> StoreResult<u64> {
        let mut st = lock(&self.inner);
        let n = st.applied.len();
        st.applied.retain(|_, (_, at)| *at >= before);
        Ok((n - st.applied.len()) as u64)
    }

    async fn applied_effects(
        &self,
        consumer: &str,
        cause_id: &str,
    ) -> StoreResult<Option<Vec<KeptnEvent>>> {
        let st = lock(&self.inner);
        Ok(st
            .applied
            .get(&(consumer.to_string(), cause_id.to_string()))
            .map(|(effects, _)| effects.clone()))
    }

    async fn due_lanes(&self, now: Timestamp) -> StoreResult<Vec<LaneKey>> {
        let st = lock(&self.inner);
        Ok(st
            .lanes
            .iter()
            .filter(|(_, l)| l.next_wakeup.is_some_and(|w| w <= now))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn list_executions(&self, f: &ExecutionFilter) -> StoreResult<Vec<Execution>> {
        let st = lock(&self.inner);
        let eq = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        let mut out: Vec<&Execution> = st
            .executions
            .values()
            .filter(|r| {
                r.exec.project == f.project
                    && eq(&f.keptn_context, &r.exec.keptn_context)
                    && eq(&f.stage, &r.exec.stage)
                    && eq(&f.service, &r.exec.service)
                    && (!f.active_only || r.active)
            })
            .map(|r| &r.exec)
            .collect();
        out.sort_by(|a, b| (a.triggered_at, &a.id).cmp(&(b.triggered_at, &b.id)));
        Ok(out.into_iter().cloned().collect())
    }

    async fn open_triggers(&self, f: &OpenTriggerFilter) -> StoreResult<Vec<KeptnEvent>> {
        let st = lock(&self.inner);
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == got)
        };
        let mut out: Vec<&KeptnEvent> = st
            .open_triggers
            .values()
            .flatten()
            .filter(|e| {
                e.ty == f.ty
                    && eq(&f.project, e.project())
                    && eq(&f.stage, e.stage())
                    && eq(&f.service, e.service())
                    && eq(&f.event_id, Some(&e.id))
            })
            .collect();
        out.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        Ok(out.into_iter().cloned().collect())
    }

    async fn set_paused(
        &self,
        project: &str,
        keptn_context: &str,
        stage: Option<&str>,
        paused: bool,
    ) -> StoreResult<()> {
        let mut st = lock(&self.inner);
        let key = (
            project.to_string(),
            keptn_context.to_string(),
            stage.unwrap_or_default().to_string(),
        );
        match (paused, stage) {
            (true, _) => {
                st.pauses.insert(key);
            }
            (false, Some(_)) => {
                st.pauses.remove(&key);
            }
            // Resuming a whole context resumes its stages too.
            (false, None) => st
                .pauses
                .retain(|(p, c, _)| !(p == project && c == keptn_context)),
        }
        Ok(())
    }

    async fn is_paused(
        &self,
        project: &str,
        keptn_context: &str,
        stage: &str,
    ) -> StoreResult<bool> {
        let st = lock(&self.inner);
        let mark = |s: &str| {
            st.pauses.contains(&(
                project.to_string(),
                keptn_context.to_string(),
                s.to_string(),
            ))
        };
        Ok(mark("") || mark(stage))
    }
}

impl IntegrationStore for MemoryStore {
    async fn put_integration(&self, i: &Integration) -> StoreResult<bool> {
        let mut st = lock(&self.inner);
        Ok(st.integrations.insert(i.id.clone(), i.clone()).is_none())
    }

    async fn get_integration(&self, id: &str) -> StoreResult<Option<Integration>> {
        let st = lock(&self.inner);
        Ok(st.integrations.get(id).cloned())
    }

    async fn list_integrations(&self) -> StoreResult<Vec<Integration>> {
        let st = lock(&self.inner);
        let mut out: Vec<Integration> = st.integrations.values().cloned().collect();
        out.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(out)
    }

    async fn delete_integration(&self, id: &str) -> StoreResult<bool> {
        let mut st = lock(&self.inner);
        Ok(st.integrations.remove(id).is_some())
    }
}
