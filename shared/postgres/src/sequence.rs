//! Sequence orchestration state: [`SequenceStore`].

use crate::{
    from_json, pg_opt_text, pg_text, stored_u64, to_json, version_param, Db, Params, PostgresStore,
};
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{
    ExecutionFilter, LaneCommit, OpenTriggerFilter, SequenceStore, StoreError, StoreResult,
    Versioned,
};
use keelson_core::sequence::{self, Execution, LaneKey, LaneState};
use keelson_core::timestamp::Timestamp;
use std::collections::HashMap;

/// Appends `AND col = $n` for a set optional filter.
fn and_eq(sql: &mut String, p: &mut Params, col: &str, v: &Option<String>) {
    if let Some(v) = v {
        sql.push_str(&format!(" AND {col} = {}::text", p.bind(pg_text(v))));
    }
}

fn lane_name(key: &LaneKey) -> String {
    format!("lane {:?}/{:?}/{:?}", key.project, key.stage, key.service)
}

/// Keeps the last of the items with equal keys, in order: one INSERT cannot
/// write a key twice, and SQLite's INSERT OR REPLACE kept the last.
fn last_by_key<'a, T>(items: Vec<&'a T>, key: impl Fn(&'a T) -> &'a str) -> Vec<&'a T> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        last.insert(key(*it), i);
    }
    items
        .into_iter()
        .enumerate()
        .filter(|(i, it)| last.get(key(*it)) == Some(i))
        .map(|(_, it)| it)
        .collect()
}

impl SequenceStore for PostgresStore {
    async fn load_lane(&self, key: &LaneKey) -> StoreResult<Option<Versioned<LaneState>>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT version, state::text FROM lanes \
                 WHERE project = $1::text AND stage = $2::text AND service = $3::text",
                &[&key.project, &key.stage, &key.service],
            )
            .await
            .db()?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            version: stored_u64(|| lane_name(key), row.try_get(0).db()?)?,
            value: from_json(|| lane_name(key), row.try_get(1).db()?)?,
        }))
    }

    async fn commit_lane(&self, c: LaneCommit<'_>) -> StoreResult<()> {
        let state = to_json("lane state", c.state)?;
        let effects = to_json("effects", c.effects)?;
        let executions: Vec<&Execution> = last_by_key(
            c.state.executions.iter().chain(c.ended).collect(),
            |e: &Execution| e.id.as_str(),
        );
        let mut ex = ExecutionColumns::default();
        for e in executions {
            ex.push(e)?;
        }
        let open = last_by_key(sequence::open_triggers(c.state), |e: &KeptnEvent| {
            e.id.as_str()
        });
        let mut ot = TriggerColumns::default();
        for ev in open {
            ot.push(ev);
        }
        let key = c.key;
        let mut client = self.client().await?;
        let tx = client.transaction().await.db()?;
        // The cause first: of two writers applying it, the second waits for
        // the first and then finds it applied (the port wants AlreadyApplied
        // before any version check).
        let recorded = tx
            .execute(
                "INSERT INTO applied (consumer, cause_id, effects, applied_at) \
                 VALUES ($1, $2, $3::text::json, $4) ON CONFLICT DO NOTHING",
                &[
                    &pg_text(c.consumer),
                    &pg_text(c.cause_id),
                    &effects,
                    &c.now.millis(),
                ],
            )
            .await
            .db()?;
        if recorded == 0 {
            return Err(StoreError::AlreadyApplied);
        }
        let wakeup = c.next_wakeup.map(Timestamp::millis);
        // Under READ COMMITTED the loser of a race waits for the winner's row
        // lock, then re-checks `version` against the committed row (or finds
        // the new key taken) and writes nothing: a Conflict, never a lost update.
        let written = if c.expected_version == 0 {
            tx.execute(
                "INSERT INTO lanes (project, stage, service, version, state, next_wakeup) \
                 VALUES ($1, $2, $3, 1, $4::text::json, $5) \
                 ON CONFLICT (project, stage, service) DO NOTHING",
                &[&key.project, &key.stage, &key.service, &state, &wakeup],
            )
            .await
        } else {
            tx.execute(
                "UPDATE lanes SET version = version + 1, state = $4::text::json, next_wakeup = $5 \
                 WHERE project = $1::text AND stage = $2::text AND service = $3::text \
                 AND version = $6::bigint",
                &[
                    &key.project,
                    &key.stage,
                    &key.service,
                    &state,
                    &wakeup,
                    &version_param(c.expected_version),
                ],
            )
            .await
        }
        .db()?;
        if written == 0 {
            return Err(StoreError::Conflict);
        }
        if !ex.id.is_empty() {
            tx.execute(
                "INSERT INTO executions \
                 (id, project, stage, service, keptn_context, triggered_at, active, doc) \
                 SELECT id, project, stage, service, keptn_context, triggered_at, active, doc::json \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                             $6::bigint[], $7::bool[], $8::text[]) \
                      AS t(id, project, stage, service, keptn_context, triggered_at, active, doc) \
                 ON CONFLICT (id) DO UPDATE SET project = excluded.project, \
                     stage = excluded.stage, service = excluded.service, \
                     keptn_context = excluded.keptn_context, \
                     triggered_at = excluded.triggered_at, active = excluded.active, \
                     doc = excluded.doc",
                &[
                    &ex.id,
                    &ex.project,
                    &ex.stage,
                    &ex.service,
                    &ex.keptn_context,
                    &ex.triggered_at,
                    &ex.active,
                    &ex.doc,
                ],
            )
            .await
            .db()?;
        }
        tx.execute(
            "DELETE FROM open_triggers \
             WHERE lane_project = $1::text AND lane_stage = $2::text AND lane_service = $3::text",
            &[&key.project, &key.stage, &key.service],
        )
        .await
        .db()?;
        if !ot.event_id.is_empty() {
            tx.execute(
                "INSERT INTO open_triggers (lane_project, lane_stage, lane_service, \
                     event_id, type, project, stage, service, time_ms, doc) \
                 SELECT $1::text, $2::text, $3::text, event_id, type, project, stage, service, \
                        time_ms, doc::json \
                 FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                             $9::bigint[], $10::text[]) \
                      AS t(event_id, type, project, stage, service, time_ms, doc)",
                &[
                    &key.project,
                    &key.stage,
                    &key.service,
                    &ot.event_id,
                    &ot.ty,
                    &ot.project,
                    &ot.stage,
                    &ot.service,
                    &ot.time_ms,
                    &ot.doc,
                ],
            )
            .await
            .db()?;
        }
        tx.commit().await.db()
    }

    async fn record_applied(
        &self,
        consumer: &str,
        cause_id: &str,
        effects: &[KeptnEvent],
        now: Timestamp,
    ) -> StoreResult<bool> {
        let effects = to_json("effects", effects)?;
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO applied (consumer, cause_id, effects, applied_at) \
                 VALUES ($1, $2, $3::text::json, $4) ON CONFLICT DO NOTHING",
                &[
                    &pg_text(consumer),
                    &pg_text(cause_id),
                    &effects,
                    &now.millis(),
                ],
            )
            .await
            .db()?;
        Ok(n == 1)
    }

    async fn recent_effects(&self, consumer: &str, window_ms: i64) -> StoreResult<Vec<KeptnEvent>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT cause_id, effects::text FROM applied WHERE consumer = $1::text \
                 AND applied_at >= (SELECT MAX(applied_at) FROM applied WHERE consumer = $1::text) \
                     - $2::bigint \
                 ORDER BY applied_at, cause_id",
                &[&pg_text(consumer), &window_ms],
            )
            .await
            .db()?;
        let mut out = Vec::new();
        for r in &rows {
            let cause: &str = r.try_get(0).db()?;
            let effects: Vec<KeptnEvent> = from_json(
                || format!("applied record {consumer:?}/{cause:?}"),
                r.try_get(1).db()?,
            )?;
            out.extend(effects);
        }
        Ok(out)
    }

    async fn purge_applied(&self, before: Timestamp) -> StoreResult<u64> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM applied WHERE applied_at < $1::bigint",
                &[&before.millis()],
            )
            .await
            .db()
    }

    async fn applied_effects(
        &self,
        consumer: &str,
        cause_id: &str,
    ) -> StoreResult<Option<Vec<KeptnEvent>>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT effects::text FROM applied WHERE consumer = $1::text AND cause_id = $2::text",
                &[&pg_text(consumer), &pg_text(cause_id)],
            )
            .await
            .db()?;
        match row {
            Some(r) => Ok(Some(from_json(
                || format!("applied record {consumer:?}/{cause_id:?}"),
                r.try_get(0).db()?,
            )?)),
            None => Ok(None),
        }
    }

    async fn due_lanes(&self, now: Timestamp) -> StoreResult<Vec<LaneKey>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT project, stage, service FROM lanes \
                 WHERE next_wakeup IS NOT NULL AND next_wakeup <= $1::bigint \
                 ORDER BY project, stage, service",
                &[&now.millis()],
            )
            .await
            .db()?;
        rows.iter()
            .map(|r| {
                Ok(LaneKey {
                    project: r.try_get(0).db()?,
                    stage: r.try_get(1).db()?,
                    service: r.try_get(2).db()?,
                })
            })
            .collect()
    }

    async fn list_executions(&self, f: &ExecutionFilter) -> StoreResult<Vec<Execution>> {
        let mut p = Params::default();
        let mut sql = format!(
            "SELECT id, doc::text FROM executions WHERE project = {}::text",
            p.bind(f.project.clone())
        );
        and_eq(&mut sql, &mut p, "keptn_context", &f.keptn_context);
        and_eq(&mut sql, &mut p, "stage", &f.stage);
        and_eq(&mut sql, &mut p, "service", &f.service);
        if f.active_only {
            sql.push_str(" AND active");
        }
        sql.push_str(" ORDER BY triggered_at, id");
        self.query_docs(&sql, &p, "execution").await
    }

    async fn open_triggers(&self, f: &OpenTriggerFilter) -> StoreResult<Vec<KeptnEvent>> {
        let mut p = Params::default();
        let mut sql = format!(
            "SELECT event_id, doc::text FROM open_triggers WHERE type = {}::text",
            p.bind(pg_text(&f.ty))
        );
        and_eq(&mut sql, &mut p, "project", &f.project);
        and_eq(&mut sql, &mut p, "stage", &f.stage);
        and_eq(&mut sql, &mut p, "service", &f.service);
        and_eq(&mut sql, &mut p, "event_id", &f.event_id);
        sql.push_str(" ORDER BY time_ms, event_id");
        self.query_docs(&sql, &p, "open trigger").await
    }

    async fn set_paused(
        &self,
        project: &str,
        keptn_context: &str,
        stage: Option<&str>,
        paused: bool,
    ) -> StoreResult<()> {
        let stage_key = stage.unwrap_or_default();
        let sql = match (paused, stage) {
            (true, _) => {
                "INSERT INTO pauses (project, keptn_context, stage) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING"
            }
            (false, Some(_)) => {
                "DELETE FROM pauses \
                 WHERE project = $1::text AND keptn_context = $2::text AND stage = $3::text"
            }
            // Resuming a whole context resumes its stages too.
            (false, None) => {
                "DELETE FROM pauses \
                 WHERE project = $1::text AND keptn_context = $2::text AND $3::text = ''"
            }
        };
        let client = self.client().await?;
        client
            .execute(
                sql,
                &[&project, &pg_text(keptn_context), &pg_text(stage_key)],
            )
            .await
            .db()?;
        Ok(())
    }

    async fn is_paused(
        &self,
        project: &str,
        keptn_context: &str,
        stage: &str,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT 1 FROM pauses WHERE project = $1::text AND keptn_context = $2::text \
                 AND stage IN ('', $3::text) LIMIT 1",
                &[&project, &pg_text(keptn_context), &pg_text(stage)],
            )
            .await
            .db()?;
        Ok(row.is_some())
    }
}

/// Executions as column arrays, for one `unnest` INSERT.
#[derive(Default)]
struct ExecutionColumns {
    id: Vec<String>,
    project: Vec<String>,
    stage: Vec<String>,
    service: Vec<String>,
    keptn_context: Vec<String>,
    triggered_at: Vec<i64>,
    active: Vec<bool>,
    doc: Vec<String>,
}

impl PostgresStore {
    /// Rows of `(id, JSON document)` from `sql` (a statement whose shape is
    /// bounded, so it is cached), each document read as a `T`; a row that
    /// does not read is an error naming `what` and its id.
    async fn query_docs<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        p: &Params,
        what: &str,
    ) -> StoreResult<Vec<T>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.db()?;
        let rows = client.query(&stmt, &p.refs()).await.db()?;
        rows.iter()
            .map(|r| {
                let id: &str = r.try_get(0).db()?;
                Ok(from_json(|| format!("{what} {id:?}"), r.try_get(1).db()?)?)
            })
            .collect()
    }
}

impl ExecutionColumns {
    fn push(&mut self, e: &Execution) -> StoreResult<()> {
        self.doc.push(to_json("execution", e)?);
        self.id.push(pg_text(&e.id));
        self.project.push(e.project.clone());
        self.stage.push(e.stage.clone());
        self.service.push(e.service.clone());
        self.keptn_context.push(pg_text(&e.keptn_context));
        self.triggered_at.push(e.triggered_at.millis());
        self.active.push(!e.state.is_terminal());
        Ok(())
    }
}

/// Open triggers as column arrays, for one `unnest` INSERT.
#[derive(Default)]
struct TriggerColumns {
    event_id: Vec<String>,
    ty: Vec<String>,
    project: Vec<Option<String>>,
    stage: Vec<Option<String>>,
    service: Vec<Option<String>>,
    time_ms: Vec<i64>,
    doc: Vec<String>,
}

impl TriggerColumns {
    fn push(&mut self, ev: &KeptnEvent) {
        self.event_id.push(pg_text(&ev.id));
        self.ty.push(pg_text(&ev.ty));
        self.project.push(pg_opt_text(ev.project()));
        self.stage.push(pg_opt_text(ev.stage()));
        self.service.push(pg_opt_text(ev.service()));
        self.time_ms.push(ev.time.millis());
        self.doc.push(ev.to_json());
    }
}
