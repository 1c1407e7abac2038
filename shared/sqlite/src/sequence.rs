//! Sequence orchestration state: [`SequenceStore`].

use crate::events::EventRow;
use crate::{from_json, to_json, Db, SqliteStore};
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{
    AppliedOrLane, ExecutionFilter, LaneCommit, OpenTriggerFilter, SequenceStore, StoreError,
    StoreResult, Versioned,
};
use keelson_core::sequence::{self, Execution, LaneKey, LaneState};
use keelson_core::timestamp::Timestamp;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension, Transaction};

fn json_rows<T: serde::de::DeserializeOwned>(
    tx: &Transaction<'_>,
    sql: &str,
    args: Vec<Value>,
) -> StoreResult<Vec<T>> {
    let mut stmt = tx.prepare_cached(sql).db()?;
    let rows = stmt
        .query_map(params_from_iter(args), |r| r.get::<_, String>(0))
        .db()?;
    let mut out = Vec::new();
    for row in rows {
        out.push(from_json(&row.db()?)?);
    }
    Ok(out)
}

/// Appends `AND col = ?` for a set optional filter.
fn and_eq(sql: &mut String, args: &mut Vec<Value>, col: &str, v: &Option<String>) {
    if let Some(v) = v {
        sql.push_str(&format!(" AND {col} = ?"));
        args.push(Value::Text(v.clone()));
    }
}

/// A lane's row: its version and state JSON.
fn lane_row(tx: &Transaction<'_>, key: &LaneKey) -> StoreResult<Option<(i64, String)>> {
    tx.prepare_cached(
        "SELECT version, state FROM lanes WHERE project = ?1 AND stage = ?2 AND service = ?3",
    )
    .db()?
    .query_row([&key.project, &key.stage, &key.service], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
    .db()
}

fn decode_lane(row: Option<(i64, String)>) -> StoreResult<Option<Versioned<LaneState>>> {
    row.map(|(version, state)| {
        Ok(Versioned {
            version: version as u64,
            value: from_json(&state)?,
        })
    })
    .transpose()
}

/// The effects JSON of `consumer`'s applied record of `cause_id`.
fn applied_row(
    tx: &Transaction<'_>,
    consumer: &str,
    cause_id: &str,
) -> StoreResult<Option<String>> {
    tx.prepare_cached("SELECT effects FROM applied WHERE consumer = ?1 AND cause_id = ?2")
        .db()?
        .query_row([consumer, cause_id], |r| r.get(0))
        .optional()
        .db()
}

/// An execution's columns, owned, for a grouped write.
struct ExecutionRow {
    id: String,
    project: String,
    stage: String,
    service: String,
    keptn_context: String,
    triggered_at: i64,
    active: bool,
    json: String,
}

/// The lane's JSON with its executions' JSON (`rows`, already encoded for
/// the executions table) spliced in: each execution, with its task results,
/// is encoded once per commit instead of twice.
fn lane_json(state: &LaneState, rows: &[ExecutionRow]) -> StoreResult<String> {
    const HEAD: &str = "{\"executions\":[";
    // Every field but the executions (listed, so that a new field is not
    // forgotten here).
    let rest = to_json(&LaneState {
        executions: Vec::new(),
        unpublished: state.unpublished.clone(),
        incarnation: state.incarnation.clone(),
    })?;
    let Some(tail) = rest.strip_prefix(HEAD).and_then(|t| t.strip_prefix(']')) else {
        return to_json(state);
    };
    let mut out =
        String::with_capacity(rest.len() + rows.iter().map(|r| r.json.len() + 1).sum::<usize>());
    out.push_str(HEAD);
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&r.json);
    }
    out.push(']');
    out.push_str(tail);
    Ok(out)
}

impl ExecutionRow {
    fn of(e: &Execution) -> StoreResult<Self> {
        Ok(ExecutionRow {
            id: e.id.clone(),
            project: e.project.clone(),
            stage: e.stage.clone(),
            service: e.service.clone(),
            keptn_context: e.keptn_context.clone(),
            triggered_at: e.triggered_at.millis(),
            active: !e.state.is_terminal(),
            json: to_json(e)?,
        })
    }
}

impl SequenceStore for SqliteStore {
    async fn load_lane(&self, key: &LaneKey) -> StoreResult<Option<Versioned<LaneState>>> {
        decode_lane(self.read_async(|tx| lane_row(tx, key)).await?)
    }

    async fn commit_lane(&self, c: LaneCommit<'_>) -> StoreResult<()> {
        let effects = to_json(&c.effects)?;
        let executions: Vec<ExecutionRow> = c
            .state
            .executions
            .iter()
            .chain(c.ended)
            .map(ExecutionRow::of)
            .collect::<StoreResult<_>>()?;
        let state = lane_json(c.state, &executions[..c.state.executions.len()])?;
        let open: Vec<EventRow> = sequence::open_triggers(c.state)
            .into_iter()
            .map(EventRow::of)
            .collect();
        let open_ids = to_json(&open.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())?;
        let key = c.key.clone();
        let (consumer, cause_id) = (c.consumer.to_string(), c.cause_id.to_string());
        let (expected_version, next_wakeup, now) = (
            c.expected_version,
            c.next_wakeup.map(Timestamp::millis),
            c.now.millis(),
        );
        self.write_grouped(move |tx| {
            let applied = tx
                .prepare_cached("SELECT 1 FROM applied WHERE consumer = ?1 AND cause_id = ?2")
                .db()?
                .exists([&consumer, &cause_id])
                .db()?;
            if applied {
                return Err(StoreError::AlreadyApplied);
            }
            let current: i64 = tx
                .prepare_cached(
                    "SELECT version FROM lanes WHERE project = ?1 AND stage = ?2 AND service = ?3",
                )
                .db()?
                .query_row([&key.project, &key.stage, &key.service], |r| r.get(0))
                .optional()
                .db()?
                .unwrap_or(0);
            if current as u64 != expected_version {
                return Err(StoreError::Conflict);
            }
            tx.prepare_cached(
                "INSERT INTO lanes (project, stage, service, version, state, next_wakeup) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (project, stage, service) DO UPDATE SET \
                 version = excluded.version, state = excluded.state, next_wakeup = excluded.next_wakeup",
            )
            .db()?
            .execute(params![
                key.project,
                key.stage,
                key.service,
                current + 1,
                state,
                next_wakeup,
            ])
            .db()?;
            tx.prepare_cached(
                "INSERT INTO applied (consumer, cause_id, effects, applied_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .db()?
            .execute(params![consumer, cause_id, effects, now])
            .db()?;
            // An execution's id, lane, context and trigger time never
            // change: an update rewrites its JSON and state in place, and
            // leaves an unchanged one (another execution of the lane) alone.
            // (REPLACE deleted and re-inserted the row, with every index
            // entry, on each lane commit.)
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO executions \
                     (id, project, stage, service, keptn_context, triggered_at, active, json) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (id) DO UPDATE SET active = excluded.active, json = excluded.json \
                     WHERE executions.active IS NOT excluded.active OR executions.json IS NOT excluded.json",
                )
                .db()?;
            for e in &executions {
                upsert
                    .execute(params![
                        e.id,
                        e.project,
                        e.stage,
                        e.service,
                        e.keptn_context,
                        e.triggered_at,
                        e.active,
                        e.json,
                    ])
                    .db()?;
            }
            // The lane's open triggers become `open`: the others are
            // deleted, the new ones added, and those still open (an event
            // never changes under its id) are left as they are.
            tx.prepare_cached(
                "DELETE FROM open_triggers WHERE lane_project = ?1 AND lane_stage = ?2 \
                 AND lane_service = ?3 AND event_id NOT IN (SELECT value FROM json_each(?4))",
            )
            .db()?
            .execute([&key.project, &key.stage, &key.service, &open_ids])
            .db()?;
            let mut put = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO open_triggers (lane_project, lane_stage, lane_service, \
                     event_id, type, project, stage, service, time, json) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .db()?;
            for ev in &open {
                put.execute(params![
                    key.project,
                    key.stage,
                    key.service,
                    ev.id,
                    ev.ty,
                    ev.project,
                    ev.stage,
                    ev.service,
                    ev.time,
                    ev.json,
                ])
                .db()?;
            }
            Ok(())
        })
        .await
    }

    async fn record_applied(
        &self,
        consumer: &str,
        cause_id: &str,
        effects: &[KeptnEvent],
        now: Timestamp,
    ) -> StoreResult<bool> {
        let effects = to_json(&effects)?;
        let (consumer, cause_id, now) = (consumer.to_string(), cause_id.to_string(), now.millis());
        self.write_grouped(move |tx| {
            let n = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO applied (consumer, cause_id, effects, applied_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .db()?
                .execute(params![consumer, cause_id, effects, now])
                .db()?;
            Ok(n == 1)
        }).await
    }

    async fn recent_effects(&self, consumer: &str, window_ms: i64) -> StoreResult<Vec<KeptnEvent>> {
        let rows: Vec<String> = self
            .read_async(|tx| {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT effects FROM applied WHERE consumer = ?1 AND applied_at >= \
                     (SELECT MAX(applied_at) FROM applied WHERE consumer = ?1) - ?2 \
                     ORDER BY applied_at, cause_id",
                    )
                    .db()?;
                let rows = stmt
                    .query_map(params![consumer, window_ms], |r| r.get::<_, String>(0))
                    .db()?;
                rows.collect::<Result<_, _>>().db()
            })
            .await?;
        let mut out = Vec::new();
        for json in rows {
            let effects: Vec<KeptnEvent> = from_json(&json)?;
            out.extend(effects);
        }
        Ok(out)
    }

    async fn purge_applied(&self, before: Timestamp) -> StoreResult<u64> {
        self.write_alone(move |tx| {
            let n = tx
                .prepare_cached("DELETE FROM applied WHERE applied_at < ?1")
                .db()?
                .execute([before.millis()])
                .db()?;
            Ok(n as u64)
        })
        .await
    }

    async fn applied_effects(
        &self,
        consumer: &str,
        cause_id: &str,
    ) -> StoreResult<Option<Vec<KeptnEvent>>> {
        let json = self
            .read_async(|tx| applied_row(tx, consumer, cause_id))
            .await?;
        json.map(|j| from_json(&j)).transpose()
    }

    async fn applied_or_lane(
        &self,
        consumer: &str,
        cause_id: &str,
        key: &LaneKey,
    ) -> StoreResult<AppliedOrLane> {
        // One snapshot, one turn on a query connection: the shipyard asks
        // this for every event it handles.
        let (applied, lane) = self
            .read_async(|tx| match applied_row(tx, consumer, cause_id)? {
                Some(effects) => Ok((Some(effects), None)),
                None => Ok((None, lane_row(tx, key)?)),
            })
            .await?;
        Ok(match applied {
            Some(effects) => AppliedOrLane::Applied(from_json(&effects)?),
            None => AppliedOrLane::Lane(decode_lane(lane)?),
        })
    }

    async fn due_lanes(&self, now: Timestamp) -> StoreResult<Vec<LaneKey>> {
        self.read_async(|tx| {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT project, stage, service FROM lanes \
                     WHERE next_wakeup IS NOT NULL AND next_wakeup <= ?1 \
                     ORDER BY project, stage, service",
                )
                .db()?;
            let rows = stmt
                .query_map([now.millis()], |r| {
                    Ok(LaneKey {
                        project: r.get(0)?,
                        stage: r.get(1)?,
                        service: r.get(2)?,
                    })
                })
                .db()?;
            rows.collect::<Result<_, _>>().db()
        })
        .await
    }

    async fn list_executions(&self, f: &ExecutionFilter) -> StoreResult<Vec<Execution>> {
        let mut sql = String::from("SELECT json FROM executions WHERE project = ?");
        let mut args = vec![Value::Text(f.project.clone())];
        and_eq(&mut sql, &mut args, "keptn_context", &f.keptn_context);
        and_eq(&mut sql, &mut args, "stage", &f.stage);
        and_eq(&mut sql, &mut args, "service", &f.service);
        if f.active_only {
            sql.push_str(" AND active = 1");
        }
        sql.push_str(" ORDER BY triggered_at, id");
        self.read_async(|tx| json_rows(tx, &sql, args)).await
    }

    async fn open_triggers(&self, f: &OpenTriggerFilter) -> StoreResult<Vec<KeptnEvent>> {
        let mut sql = String::from("SELECT json FROM open_triggers WHERE type = ?");
        let mut args = vec![Value::Text(f.ty.clone())];
        and_eq(&mut sql, &mut args, "project", &f.project);
        and_eq(&mut sql, &mut args, "stage", &f.stage);
        and_eq(&mut sql, &mut args, "service", &f.service);
        and_eq(&mut sql, &mut args, "event_id", &f.event_id);
        sql.push_str(" ORDER BY time, event_id");
        self.read_async(|tx| json_rows(tx, &sql, args)).await
    }

    async fn set_paused(
        &self,
        project: &str,
        keptn_context: &str,
        stage: Option<&str>,
        paused: bool,
    ) -> StoreResult<()> {
        let stage_key = stage.unwrap_or_default().to_string();
        let (project, keptn_context, stage) = (
            project.to_string(),
            keptn_context.to_string(),
            stage.is_some(),
        );
        self.write_grouped(move |tx| {
            let sql = match (paused, stage) {
                (true, _) => {
                    "INSERT OR IGNORE INTO pauses (project, keptn_context, stage) VALUES (?1, ?2, ?3)"
                }
                (false, true) => {
                    "DELETE FROM pauses WHERE project = ?1 AND keptn_context = ?2 AND stage = ?3"
                }
                // Resuming a whole context resumes its stages too.
                (false, false) => {
                    "DELETE FROM pauses WHERE project = ?1 AND keptn_context = ?2 AND ?3 = ''"
                }
            };
            tx.prepare_cached(sql)
                .db()?
                .execute([&project, &keptn_context, &stage_key])
                .db()?;
            Ok(())
        }).await
    }

    async fn is_paused(
        &self,
        project: &str,
        keptn_context: &str,
        stage: &str,
    ) -> StoreResult<bool> {
        self.read_async(|tx| {
            tx.prepare_cached(
                "SELECT 1 FROM pauses WHERE project = ?1 AND keptn_context = ?2 AND stage IN ('', ?3)",
            )
            .db()?
            .exists([project, keptn_context, stage])
            .db()
        }).await
    }
}
