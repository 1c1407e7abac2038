//! Projects, resources and integrations.

use crate::events::{delete_events_if_few, delete_events_in_batches};
use crate::{from_json, pg_text, stored_u64, to_json, version_param, Db, PostgresStore};
use keelson_core::ports::{
    Integration, IntegrationStore, ProjectStore, ResourceStore, StoreError, StoreResult, Versioned,
};
use keelson_core::project::Project;
use keelson_core::resource::{Change, Resource, Scope, SHIPYARD_URI};
use keelson_core::timestamp::Timestamp;
use std::collections::HashMap;
use tokio_postgres::GenericClient;

/// Appends a commit with `changes` at `scope`; returns its id, or `NotFound`
/// if the project does not exist. Taking the commit number locks the project
/// row, so concurrent writers of one project commit one after the other.
async fn commit(
    tx: &impl GenericClient,
    project: &str,
    scope: &Scope,
    changes: &[Change],
    now: Timestamp,
) -> StoreResult<String> {
    let seq: i64 = match tx
        .query_opt(
            "UPDATE projects SET commits = commits + 1 WHERE name = $1::text RETURNING commits",
            &[&project],
        )
        .await
        .db()?
    {
        Some(row) => row.try_get(0).db()?,
        None => return Err(StoreError::NotFound(format!("project {project}"))),
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    tx.execute(
        "INSERT INTO commits (project, seq, id, time_ms) VALUES ($1, $2, $3, $4)",
        &[&project, &seq, &id, &now.millis()],
    )
    .await
    .db()?;
    // A commit naming one uri twice keeps the last change (as SQLite's
    // INSERT OR REPLACE did); one INSERT cannot write a key twice.
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        last.insert(c.uri.as_str(), i);
    }
    let (uris, contents): (Vec<&str>, Vec<Option<&[u8]>>) = changes
        .iter()
        .enumerate()
        .filter(|(i, c)| last.get(c.uri.as_str()) == Some(i))
        .map(|(_, c)| (c.uri.as_str(), c.content.as_deref()))
        .unzip();
    if !uris.is_empty() {
        tx.execute(
            "INSERT INTO resources (project, scope, uri, seq, content) \
             SELECT $1::text, $2::text, u, $3::bigint, c FROM unnest($4::text[], $5::bytea[]) AS t(u, c)",
            &[&project, &scope.key(), &seq, &uris, &contents],
        )
        .await
        .db()?;
    }
    Ok(id)
}

/// The commit number a read is made at: `None` when the project has no
/// commit (or does not exist) and no commit was named.
async fn read_point(
    c: &impl GenericClient,
    project: &str,
    at: Option<&str>,
) -> StoreResult<Option<i64>> {
    match at {
        None => c
            .query_one(
                "SELECT MAX(seq) FROM commits WHERE project = $1::text",
                &[&project],
            )
            .await
            .db()?
            .try_get(0)
            .db(),
        Some(id) => match c
            .query_opt(
                "SELECT seq FROM commits WHERE project = $1::text AND id = $2::text",
                &[&project, &id],
            )
            .await
            .db()?
        {
            Some(row) => Ok(Some(row.try_get(0).db()?)),
            None => Err(StoreError::NotFound(format!(
                "commit {id} of project {project}"
            ))),
        },
    }
}

impl ProjectStore for PostgresStore {
    async fn create_project(&self, p: &Project, now: Timestamp) -> StoreResult<String> {
        let json = to_json("project", p)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.db()?;
        // A concurrent creator of the same name waits here for the first to
        // commit, then inserts nothing.
        let inserted = tx
            .execute(
                "INSERT INTO projects (name, version, doc) VALUES ($1, 1, $2::text::json) \
                 ON CONFLICT (name) DO NOTHING",
                &[&p.name, &json],
            )
            .await
            .db()?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(format!("project {}", p.name)));
        }
        let id = commit(
            &*tx,
            &p.name,
            &Scope::project(),
            &[Change {
                uri: SHIPYARD_URI.into(),
                content: Some(p.shipyard.as_bytes().to_vec()),
            }],
            now,
        )
        .await?;
        tx.commit().await.db()?;
        Ok(id)
    }

    async fn get_project(&self, name: &str) -> StoreResult<Option<Versioned<Project>>> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(
                "SELECT version, doc::text FROM projects WHERE name = $1::text",
                &[&name],
            )
            .await
            .db()?
        else {
            return Ok(None);
        };
        let row_name = || format!("project {name:?}");
        Ok(Some(Versioned {
            version: stored_u64(row_name, row.try_get(0).db()?)?,
            value: from_json(row_name, row.try_get(1).db()?)?,
        }))
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT name, doc::text FROM projects ORDER BY name", &[])
            .await
            .db()?;
        rows.iter()
            .map(|r| {
                let name: &str = r.try_get(0).db()?;
                Ok(from_json(
                    || format!("project {name:?}"),
                    r.try_get(1).db()?,
                )?)
            })
            .collect()
    }

    async fn update_project(&self, p: &Project, expected_version: u64) -> StoreResult<()> {
        let json = to_json("project", p)?;
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE projects SET version = version + 1, doc = $3::text::json \
                 WHERE name = $1::text AND version = $2::bigint",
                &[&p.name, &version_param(expected_version), &json],
            )
            .await
            .db()?;
        if n == 1 {
            return Ok(());
        }
        let exists = client
            .query_opt("SELECT 1 FROM projects WHERE name = $1::text", &[&p.name])
            .await
            .db()?
            .is_some();
        if exists {
            Err(StoreError::Conflict)
        } else {
            Err(StoreError::NotFound(format!("project {}", p.name)))
        }
    }

    async fn delete_project(&self, name: &str) -> StoreResult<bool> {
        let events = "project = $1::text";
        let event_project = pg_text(name);
        let mut client = self.client().await?;
        loop {
            let tx = client.transaction().await.db()?;
            // Deleting the row first locks it: a concurrent commit of the
            // project waits, then finds no project.
            let n = tx
                .execute("DELETE FROM projects WHERE name = $1::text", &[&name])
                .await
                .db()?;
            if n == 0 {
                return Ok(false);
            }
            // The project goes in one transaction with its last events, so
            // that a failure leaves it in place for a retry to finish.
            if delete_events_if_few(&*tx, events, &event_project)
                .await?
                .is_some()
            {
                for sql in [
                    "DELETE FROM commits WHERE project = $1::text",
                    "DELETE FROM resources WHERE project = $1::text",
                    "DELETE FROM lanes WHERE project = $1::text",
                    "DELETE FROM executions WHERE project = $1::text",
                    "DELETE FROM open_triggers WHERE lane_project = $1::text",
                    "DELETE FROM pauses WHERE project = $1::text",
                ] {
                    tx.execute(sql, &[&name]).await.db()?;
                }
                tx.commit().await.db()?;
                return Ok(true);
            }
            // Events in too many contexts to lock in one transaction: delete
            // them batch by batch first, then try again.
            tx.rollback().await.db()?;
            delete_events_in_batches(&mut client, events, &event_project).await?;
        }
    }
}

impl ResourceStore for PostgresStore {
    async fn write_resources(
        &self,
        project: &str,
        scope: &Scope,
        changes: &[Change],
        now: Timestamp,
    ) -> StoreResult<String> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.db()?;
        let id = commit(&*tx, project, scope, changes, now).await?;
        tx.commit().await.db()?;
        Ok(id)
    }

    async fn read_resource(
        &self,
        project: &str,
        scope: &Scope,
        uri: &str,
        at: Option<&str>,
    ) -> StoreResult<Option<Resource>> {
        let client = self.client().await?;
        let Some(seq) = read_point(&**client, project, at).await? else {
            return Ok(None);
        };
        let row = client
            .query_opt(
                "SELECT r.content, c.id FROM resources r \
                 JOIN commits c ON c.project = r.project AND c.seq = r.seq \
                 WHERE r.project = $1::text AND r.scope = $2::text AND r.uri = $3::text \
                 AND r.seq <= $4::bigint \
                 ORDER BY r.seq DESC LIMIT 1",
                &[&project, &scope.key(), &uri, &seq],
            )
            .await
            .db()?;
        let Some(row) = row else {
            return Ok(None);
        };
        let content: Option<Vec<u8>> = row.try_get(0).db()?;
        Ok(match content {
            Some(content) => Some(Resource {
                uri: uri.to_string(),
                content,
                version: row.try_get(1).db()?,
            }),
            None => None,
        })
    }

    async fn list_resources(
        &self,
        project: &str,
        scope: &Scope,
        at: Option<&str>,
    ) -> StoreResult<Vec<(String, String)>> {
        let client = self.client().await?;
        let Some(seq) = read_point(&**client, project, at).await? else {
            return Ok(Vec::new());
        };
        let rows = client
            .query(
                "SELECT l.uri, c.id FROM ( \
                     SELECT DISTINCT ON (uri) uri, seq, content IS NULL AS gone FROM resources \
                     WHERE project = $1::text AND scope = $2::text AND seq <= $3::bigint \
                     ORDER BY uri, seq DESC \
                 ) l JOIN commits c ON c.project = $1::text AND c.seq = l.seq \
                 WHERE NOT l.gone ORDER BY l.uri",
                &[&project, &scope.key(), &seq],
            )
            .await
            .db()?;
        rows.iter()
            .map(|r| Ok((r.try_get(0).db()?, r.try_get(1).db()?)))
            .collect()
    }

    async fn latest_commit(&self, project: &str) -> StoreResult<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id FROM commits WHERE project = $1::text ORDER BY seq DESC LIMIT 1",
                &[&project],
            )
            .await
            .db()?;
        row.map(|r| r.try_get(0).db()).transpose()
    }
}

impl IntegrationStore for PostgresStore {
    async fn put_integration(&self, i: &Integration) -> StoreResult<bool> {
        let json = to_json("integration", i)?;
        let client = self.client().await?;
        // `xmax = 0` holds for a row this statement inserted, not for one it
        // updated: an upsert that says which it did, even when two race.
        let row = client
            .query_one(
                "INSERT INTO integrations (id, name, doc) VALUES ($1, $2, $3::text::json) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, doc = excluded.doc \
                 RETURNING (xmax = 0)",
                &[&pg_text(&i.id), &pg_text(&i.name), &json],
            )
            .await
            .db()?;
        row.try_get(0).db()
    }

    async fn get_integration(&self, id: &str) -> StoreResult<Option<Integration>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT doc::text FROM integrations WHERE id = $1::text",
                &[&pg_text(id)],
            )
            .await
            .db()?;
        match row {
            Some(r) => Ok(Some(from_json(
                || format!("integration {id:?}"),
                r.try_get(0).db()?,
            )?)),
            None => Ok(None),
        }
    }

    async fn list_integrations(&self) -> StoreResult<Vec<Integration>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, doc::text FROM integrations ORDER BY name, id",
                &[],
            )
            .await
            .db()?;
        rows.iter()
            .map(|r| {
                let id: &str = r.try_get(0).db()?;
                Ok(from_json(
                    || format!("integration {id:?}"),
                    r.try_get(1).db()?,
                )?)
            })
            .collect()
    }

    async fn delete_integration(&self, id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM integrations WHERE id = $1::text",
                &[&pg_text(id)],
            )
            .await
            .db()?;
        Ok(n > 0)
    }
}
