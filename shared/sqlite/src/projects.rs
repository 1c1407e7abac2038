//! Projects, resources and integrations.

use crate::events::delete_events;
use crate::{from_json, lock, to_json, Db, SqliteStore};
use keelson_core::ports::{
    Integration, IntegrationStore, ProjectStore, ResourceStore, StoreError, StoreResult, Versioned,
};
use keelson_core::project::Project;
use keelson_core::resource::{Change, Resource, Scope, SHIPYARD_URI};
use keelson_core::timestamp::Timestamp;
use rusqlite::types::Value;
use rusqlite::{params, OptionalExtension, Transaction};
use std::sync::Arc;

/// A project this process decoded, with what identifies its row's content:
/// the version (every update raises it) and the id of the project's first
/// commit (a project deleted and created again starts at version 1 anew).
#[derive(Debug)]
pub(crate) struct Decoded {
    version: i64,
    created: String,
    project: Arc<Project>,
}

/// Projects kept decoded per store (the cache starts over when it is full).
const PROJECT_CACHE: usize = 256;

fn project_exists(tx: &Transaction<'_>, name: &str) -> StoreResult<bool> {
    tx.prepare_cached("SELECT 1 FROM projects WHERE name = ?1")
        .db()?
        .exists([name])
        .db()
}

/// Appends a commit with `changes` at `scope`; returns its id.
fn commit(
    tx: &Transaction<'_>,
    project: &str,
    scope: &Scope,
    changes: &[Change],
    now: Timestamp,
) -> StoreResult<String> {
    let seq: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM commits WHERE project = ?1")
        .db()?
        .query_row([project], |r| r.get(0))
        .db()?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    tx.prepare_cached("INSERT INTO commits (project, seq, id, time) VALUES (?1, ?2, ?3, ?4)")
        .db()?
        .execute(params![project, seq, id, now.millis()])
        .db()?;
    let mut put = tx
        .prepare_cached(
            "INSERT OR REPLACE INTO resources (project, scope, uri, seq, content) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .db()?;
    let scope = scope.key();
    for c in changes {
        put.execute(params![project, scope, c.uri, seq, c.content])
            .db()?;
    }
    Ok(id)
}

/// The commit sequence number a read is made at: `Ok(None)` when the project has
/// no commit (or does not exist) and no commit was named.
fn read_point(tx: &Transaction<'_>, project: &str, at: Option<&str>) -> StoreResult<Option<i64>> {
    match at {
        None => tx
            .prepare_cached("SELECT MAX(seq) FROM commits WHERE project = ?1")
            .db()?
            .query_row([project], |r| r.get(0))
            .db(),
        Some(c) => tx
            .prepare_cached("SELECT seq FROM commits WHERE project = ?1 AND id = ?2")
            .db()?
            .query_row([project, c], |r| r.get(0))
            .optional()
            .db()?
            .map(Some)
            .ok_or_else(|| StoreError::NotFound(format!("commit {c} of project {project}"))),
    }
}

impl ProjectStore for SqliteStore {
    async fn create_project(&self, p: &Project, now: Timestamp) -> StoreResult<String> {
        let json = to_json(p)?;
        let name = p.name.clone();
        let shipyard = p.shipyard.as_bytes().to_vec();
        self.write_grouped(move |tx| {
            if project_exists(tx, &name)? {
                return Err(StoreError::AlreadyExists(format!("project {name}")));
            }
            tx.prepare_cached("INSERT INTO projects (name, version, json) VALUES (?1, 1, ?2)")
                .db()?
                .execute([&name, &json])
                .db()?;
            commit(
                tx,
                &name,
                &Scope::project(),
                &[Change {
                    uri: SHIPYARD_URI.into(),
                    content: Some(shipyard.clone()),
                }],
                now,
            )
        })
        .await
    }

    async fn get_project(&self, name: &str) -> StoreResult<Option<Versioned<Project>>> {
        // The row's version and creation identify its content: the JSON is
        // read and decoded only when this process has not decoded that one.
        enum Read {
            Absent,
            Same(Arc<Project>, i64),
            New(Decoded, String),
        }
        let read = self
            .read_async(|tx| {
                let key: Option<(i64, Option<String>)> = tx
                    .prepare_cached(
                        "SELECT p.version, c.id FROM projects p \
                         LEFT JOIN commits c ON c.project = p.name AND c.seq = 1 \
                         WHERE p.name = ?1",
                    )
                    .db()?
                    .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .db()?;
                let Some((version, created)) = key else {
                    return Ok(Read::Absent);
                };
                let created = created.unwrap_or_default();
                if let Some(d) = lock(&self.inner.projects).get(name) {
                    if d.version == version && d.created == created {
                        return Ok(Read::Same(d.project.clone(), version));
                    }
                }
                let json: String = tx
                    .prepare_cached("SELECT json FROM projects WHERE name = ?1")
                    .db()?
                    .query_row([name], |r| r.get(0))
                    .db()?;
                Ok(Read::New(
                    Decoded {
                        version,
                        created,
                        project: Arc::new(from_json(&json)?),
                    },
                    name.to_string(),
                ))
            })
            .await?;
        Ok(match read {
            Read::Absent => None,
            Read::Same(project, version) => Some(Versioned {
                version: version as u64,
                value: (*project).clone(),
            }),
            Read::New(d, name) => {
                let out = Versioned {
                    version: d.version as u64,
                    value: (*d.project).clone(),
                };
                let mut cache = lock(&self.inner.projects);
                if cache.len() >= PROJECT_CACHE {
                    cache.clear();
                }
                cache.insert(name, d);
                Some(out)
            }
        })
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        let rows: Vec<String> = self
            .read_async(|tx| {
                let mut stmt = tx
                    .prepare_cached("SELECT json FROM projects ORDER BY name")
                    .db()?;
                let rows = stmt.query_map([], |r| r.get(0)).db()?;
                rows.collect::<Result<_, _>>().db()
            })
            .await?;
        rows.iter().map(|j| from_json(j)).collect()
    }

    async fn update_project(&self, p: &Project, expected_version: u64) -> StoreResult<()> {
        let json = to_json(p)?;
        let name = p.name.clone();
        self.write_grouped(move |tx| {
            let version: Option<i64> = tx
                .prepare_cached("SELECT version FROM projects WHERE name = ?1")
                .db()?
                .query_row([&name], |r| r.get(0))
                .optional()
                .db()?;
            match version {
                None => Err(StoreError::NotFound(format!("project {name}"))),
                Some(v) if v as u64 != expected_version => Err(StoreError::Conflict),
                Some(v) => {
                    tx.prepare_cached(
                        "UPDATE projects SET version = ?2, json = ?3 WHERE name = ?1",
                    )
                    .db()?
                    .execute(params![name, v + 1, json])
                    .db()?;
                    Ok(())
                }
            }
        })
        .await
    }

    async fn delete_project(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_string();
        self.write_alone(move |tx| {
            if !project_exists(tx, &name)? {
                return Ok(false);
            }
            for sql in [
                // Deliveries of its events (queue rows name stored events).
                "DELETE FROM queue WHERE event IN (SELECT seq FROM events WHERE project = ?1)",
                "DELETE FROM projects WHERE name = ?1",
                "DELETE FROM commits WHERE project = ?1",
                "DELETE FROM resources WHERE project = ?1",
                "DELETE FROM lanes WHERE project = ?1",
                "DELETE FROM executions WHERE project = ?1",
                "DELETE FROM open_triggers WHERE lane_project = ?1",
                "DELETE FROM pauses WHERE project = ?1",
            ] {
                tx.prepare_cached(sql).db()?.execute([&name]).db()?;
            }
            delete_events(tx, "project = ?1", Value::Text(name))?;
            Ok(true)
        })
        .await
    }
}

impl ResourceStore for SqliteStore {
    async fn write_resources(
        &self,
        project: &str,
        scope: &Scope,
        changes: &[Change],
        now: Timestamp,
    ) -> StoreResult<String> {
        let (project, scope, changes) = (project.to_string(), scope.clone(), changes.to_vec());
        self.write_grouped(move |tx| {
            if !project_exists(tx, &project)? {
                return Err(StoreError::NotFound(format!("project {project}")));
            }
            commit(tx, &project, &scope, &changes, now)
        })
        .await
    }

    async fn read_resource(
        &self,
        project: &str,
        scope: &Scope,
        uri: &str,
        at: Option<&str>,
    ) -> StoreResult<Option<Resource>> {
        self.read_async(|tx| {
            let Some(seq) = read_point(tx, project, at)? else {
                return Ok(None);
            };
            let row: Option<(Option<Vec<u8>>, String)> = tx
                .prepare_cached(
                    "SELECT r.content, c.id FROM resources r \
                     JOIN commits c ON c.project = r.project AND c.seq = r.seq \
                     WHERE r.project = ?1 AND r.scope = ?2 AND r.uri = ?3 AND r.seq <= ?4 \
                     ORDER BY r.seq DESC LIMIT 1",
                )
                .db()?
                .query_row(params![project, scope.key(), uri, seq], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .db()?;
            Ok(match row {
                Some((Some(content), version)) => Some(Resource {
                    uri: uri.to_string(),
                    content,
                    version,
                }),
                _ => None,
            })
        })
        .await
    }

    async fn list_resources(
        &self,
        project: &str,
        scope: &Scope,
        at: Option<&str>,
    ) -> StoreResult<Vec<(String, String)>> {
        self.read_async(|tx| {
            let Some(seq) = read_point(tx, project, at)? else {
                return Ok(Vec::new());
            };
            let mut stmt = tx
                .prepare_cached(
                    "SELECT r.uri, c.id FROM resources r \
                     JOIN commits c ON c.project = r.project AND c.seq = r.seq \
                     WHERE r.project = ?1 AND r.scope = ?2 AND r.content IS NOT NULL \
                     AND r.seq = (SELECT MAX(x.seq) FROM resources x WHERE x.project = r.project \
                                  AND x.scope = r.scope AND x.uri = r.uri AND x.seq <= ?3) \
                     ORDER BY r.uri",
                )
                .db()?;
            let rows = stmt
                .query_map(params![project, scope.key(), seq], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .db()?;
            rows.collect::<Result<_, _>>().db()
        })
        .await
    }

    async fn latest_commit(&self, project: &str) -> StoreResult<Option<String>> {
        self.read_async(|tx| {
            tx.prepare_cached("SELECT id FROM commits WHERE project = ?1 ORDER BY seq DESC LIMIT 1")
                .db()?
                .query_row([project], |r| r.get(0))
                .optional()
                .db()
        })
        .await
    }
}

impl IntegrationStore for SqliteStore {
    async fn put_integration(&self, i: &Integration) -> StoreResult<bool> {
        let json = to_json(i)?;
        let (id, name) = (i.id.clone(), i.name.clone());
        self.write_grouped(move |tx| {
            let existed = tx
                .prepare_cached("SELECT 1 FROM integrations WHERE id = ?1")
                .db()?
                .exists([&id])
                .db()?;
            tx.prepare_cached(
                "INSERT OR REPLACE INTO integrations (id, name, json) VALUES (?1, ?2, ?3)",
            )
            .db()?
            .execute([&id, &name, &json])
            .db()?;
            Ok(!existed)
        })
        .await
    }

    async fn get_integration(&self, id: &str) -> StoreResult<Option<Integration>> {
        let json: Option<String> = self
            .read_async(|tx| {
                tx.prepare_cached("SELECT json FROM integrations WHERE id = ?1")
                    .db()?
                    .query_row([id], |r| r.get(0))
                    .optional()
                    .db()
            })
            .await?;
        json.map(|j| from_json(&j)).transpose()
    }

    async fn list_integrations(&self) -> StoreResult<Vec<Integration>> {
        let rows: Vec<String> = self
            .read_async(|tx| {
                let mut stmt = tx
                    .prepare_cached("SELECT json FROM integrations ORDER BY name, id")
                    .db()?;
                let rows = stmt.query_map([], |r| r.get(0)).db()?;
                rows.collect::<Result<_, _>>().db()
            })
            .await?;
        rows.iter().map(|j| from_json(j)).collect()
    }

    async fn delete_integration(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.write_grouped(move |tx| {
            let n = tx
                .prepare_cached("DELETE FROM integrations WHERE id = ?1")
                .db()?
                .execute([&id])
                .db()?;
            Ok(n > 0)
        })
        .await
    }
}
