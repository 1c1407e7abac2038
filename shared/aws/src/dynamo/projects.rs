//! Projects, resources and integrations.
//!
//! A project is an item of the `PROJECTS` partition (listing it is one
//! consistent query) carrying its version (for `update_project`) and its commit
//! counter (for `write_resources`, conditional on it). Everything else of the
//! project lives in the partition `PROJECT#<name>`: `COMMITID#<id>` → sequence
//! number, and one item per resource change `RES#<scope>#<uri>#<seq>`, whose
//! content is inline when small and in `BLOB#<commit>#<scope>#<uri>#<i>` chunks
//! otherwise.

use super::io::{names, put_action, values, Sk, MAX_TRANSACTION_ITEMS, Q};
use super::item::{
    b, build_err, get_b, get_bool, get_json, get_n, get_s, item, key, limit, malformed, n, s,
    to_json, Item,
};
use super::keys::*;
use super::DynamoStore;
use crate::error::store_error;
use aws_sdk_dynamodb::types::{TransactWriteItem, Update, WriteRequest};
use keelson_core::ports::{
    Integration, IntegrationStore, ProjectStore, ResourceStore, StoreError, StoreResult, Versioned,
};
use keelson_core::project::Project;
use keelson_core::resource::{Change, Resource, Scope, SHIPYARD_URI};
use keelson_core::timestamp::Timestamp;
use std::collections::BTreeMap;

/// Content up to this size is stored in the change item itself.
const INLINE_MAX: usize = 32 * 1024;
/// Inline content of one commit stays below this (a transaction carries at most 4 MB).
const INLINE_BUDGET: usize = 2 * 1024 * 1024;
/// Size of a content chunk.
const CHUNK: usize = 300 * 1024;
/// Attempts at a commit against concurrent commits of the same project.
const COMMIT_ATTEMPTS: usize = 10;
/// Actions of a commit besides its changes: the project item and the commit id.
const COMMIT_OVERHEAD: usize = 2;

fn project_item(p: &Project, json: String, commit: &str) -> Item {
    item([
        ("pk", s(PROJECTS_PK)),
        ("sk", s(project_sk(&p.name))),
        ("name", s(&p.name)),
        ("version", n(1)),
        ("json", s(json)),
        ("commits", n(1)),
        ("latest", s(commit)),
    ])
}

fn commit_item(project: &str, id: &str, seq: u64) -> Item {
    item([
        ("pk", s(project_pk(project))),
        ("sk", s(commit_id_sk(id))),
        ("seq", n(seq)),
    ])
}

/// The last change of each uri of `changes`.
fn last_wins(changes: &[Change]) -> Vec<&Change> {
    let mut by_uri: BTreeMap<&str, &Change> = BTreeMap::new();
    for c in changes {
        by_uri.insert(&c.uri, c);
    }
    by_uri.into_values().collect()
}

/// The writes of a commit's changes: the change items (for the transaction)
/// and the content chunks (written before it, keyed by the commit id so a
/// failed transaction leaves nothing any read reaches).
fn change_writes(
    project: &str,
    scope: &str,
    changes: &[&Change],
    seq: u64,
    commit: &str,
) -> StoreResult<(Vec<TransactWriteItem>, Vec<WriteRequest>)> {
    if changes.len() + COMMIT_OVERHEAD > MAX_TRANSACTION_ITEMS {
        return Err(limit(format!(
            "a commit changes at most {} resources, this one {}",
            MAX_TRANSACTION_ITEMS - COMMIT_OVERHEAD,
            changes.len()
        )));
    }
    let pk = project_pk(project);
    let mut actions = Vec::new();
    let mut blobs = Vec::new();
    let mut inline_total = 0;
    for c in changes {
        let mut it = item([
            ("pk", s(&pk)),
            (
                "sk",
                s(format!(
                    "{}{}",
                    resource_prefix(scope, Some(&c.uri)),
                    seq_key(seq)
                )),
            ),
            ("uri", s(&c.uri)),
            ("seq", n(seq)),
            ("commit", s(commit)),
        ]);
        match &c.content {
            None => {
                it.insert(
                    "deleted".into(),
                    aws_sdk_dynamodb::types::AttributeValue::Bool(true),
                );
            }
            Some(bytes)
                if bytes.len() <= INLINE_MAX && inline_total + bytes.len() <= INLINE_BUDGET =>
            {
                inline_total += bytes.len();
                it.insert("content".into(), b(bytes.clone()));
            }
            Some(bytes) => {
                let prefix = blob_prefix(commit, scope, &c.uri);
                let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
                it.insert("chunks".into(), n(chunks.len()));
                it.insert("size".into(), n(bytes.len()));
                for (i, chunk) in chunks.into_iter().enumerate() {
                    blobs.push(DynamoStore::put_request(item([
                        ("pk", s(&pk)),
                        ("sk", s(format!("{prefix}{}", chunk_key(i)))),
                        ("data", b(chunk.to_vec())),
                    ]))?);
                }
            }
        }
        actions.push(put_action(it, None)?);
    }
    Ok((actions, blobs))
}

impl DynamoStore {
    async fn project_item(&self, name: &str) -> StoreResult<Option<Item>> {
        self.get(PROJECTS_PK, &project_sk(name)).await
    }

    /// The commit sequence number a read is made at (`None`: no commit yet).
    async fn read_point(&self, project: &str, at: Option<&str>) -> StoreResult<Option<u64>> {
        match at {
            None => match self.project_item(project).await? {
                None => Ok(None),
                Some(it) => Ok(Some(get_n::<u64>(&it, "commits")?).filter(|c| *c > 0)),
            },
            Some(c) => match self.get(&project_pk(project), &commit_id_sk(c)).await? {
                Some(it) => Ok(Some(get_n(&it, "seq")?)),
                None => Err(StoreError::NotFound(format!(
                    "commit {c} of project {project}"
                ))),
            },
        }
    }

    /// Removes the chunks of a commit that certainly did not happen (every
    /// earlier attempt was cancelled by DynamoDB).
    async fn drop_blobs(&self, blobs: &[WriteRequest]) {
        let deletes: Vec<WriteRequest> = blobs
            .iter()
            .filter_map(|w| w.put_request.as_ref())
            .filter_map(|p| {
                let pk = get_s(&p.item, "pk").ok()?;
                let sk = get_s(&p.item, "sk").ok()?;
                DynamoStore::delete_request(pk, sk).ok()
            })
            .collect();
        if let Err(e) = self.batch_write(deletes).await {
            tracing::warn!(error = %e, "could not remove the content chunks of a failed commit");
        }
    }

    /// A change item's content.
    async fn content_of(&self, project: &str, scope: &str, it: &Item) -> StoreResult<Vec<u8>> {
        if it.contains_key("content") {
            return Ok(get_b(it, "content")?.to_vec());
        }
        let chunks: usize = get_n(it, "chunks")?;
        let commit = get_s(it, "commit")?;
        let uri = get_s(it, "uri")?;
        let parts = self
            .query_all(&Q::table(
                project_pk(project),
                Sk::BeginsWith(blob_prefix(commit, scope, uri)),
            ))
            .await?;
        if parts.len() != chunks {
            return Err(malformed(
                it,
                format!("{chunks} content chunks expected, {} found", parts.len()),
            ));
        }
        let mut out = Vec::new();
        for p in &parts {
            out.extend_from_slice(get_b(p, "data")?);
        }
        Ok(out)
    }
}

impl ProjectStore for DynamoStore {
    async fn create_project(&self, p: &Project, _now: Timestamp) -> StoreResult<String> {
        let commit = commit_id();
        let shipyard = Change {
            uri: SHIPYARD_URI.into(),
            content: Some(p.shipyard.as_bytes().to_vec()),
        };
        let (changes, blobs) =
            change_writes(&p.name, &Scope::project().key(), &[&shipyard], 1, &commit)?;
        let mut actions = vec![
            put_action(
                project_item(p, to_json("project", p)?, &commit),
                Some("attribute_not_exists(pk)"),
            )?,
            put_action(commit_item(&p.name, &commit, 1), None)?,
        ];
        actions.extend(changes);
        self.batch_write(blobs.clone()).await?;
        match self.transact(actions).await {
            Ok(()) => Ok(commit),
            Err(e) => {
                // Only a commit that certainly did not happen loses its chunks:
                // after a timeout or a 5xx it may have committed, and its
                // resource would read as malformed without them (orphaned
                // chunks are harmless: keyed by a commit id nothing names).
                if e.not_applied() {
                    self.drop_blobs(&blobs).await;
                }
                if e.condition_failed(0) {
                    Err(StoreError::AlreadyExists(format!("project {}", p.name)))
                } else if e.conflicted() {
                    Err(StoreError::Conflict)
                } else {
                    Err(e.into_store())
                }
            }
        }
    }

    async fn get_project(&self, name: &str) -> StoreResult<Option<Versioned<Project>>> {
        let Some(it) = self.project_item(name).await? else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            version: get_n(&it, "version")?,
            value: get_json(&it, "json")?,
        }))
    }

    async fn list_projects(&self) -> StoreResult<Vec<Project>> {
        let items = self.query_all(&Q::table(PROJECTS_PK, Sk::Any)).await?;
        let mut out: Vec<Project> = items
            .iter()
            .map(|it| get_json(it, "json"))
            .collect::<StoreResult<_>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn update_project(&self, p: &Project, expected_version: u64) -> StoreResult<()> {
        let r = self
            .client
            .update_item()
            .table_name(self.table.as_ref())
            .set_key(Some(key(PROJECTS_PK, project_sk(&p.name))))
            .update_expression("SET #j = :j, #v = :next")
            .condition_expression("attribute_exists(pk) AND #v = :v")
            .set_expression_attribute_names(names([("#j", "json"), ("#v", "version")]))
            .set_expression_attribute_values(values([
                (":j", s(to_json("project", p)?)),
                (":v", n(expected_version)),
                (":next", n(expected_version + 1)),
            ]))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
            {
                if self.project_item(&p.name).await?.is_some() {
                    Err(StoreError::Conflict)
                } else {
                    Err(StoreError::NotFound(format!("project {}", p.name)))
                }
            }
            Err(e) => Err(store_error(e)),
        }
    }

    async fn delete_project(&self, name: &str) -> StoreResult<bool> {
        if self.project_item(name).await?.is_none() {
            return Ok(false);
        }
        // Contents first, the project item last: a delete that dies half-way
        // leaves the project visible, and deleting it again finishes the job.
        self.delete_project_events(name).await?;
        let pk = project_pk(name);
        let items = self.query_all(&Q::table(&pk, Sk::Any)).await?;
        let deletes = items
            .iter()
            .map(|it| DynamoStore::delete_request(&pk, get_s(it, "sk")?))
            .collect::<StoreResult<Vec<_>>>()?;
        self.batch_write(deletes).await?;
        Ok(self
            .delete_returning(PROJECTS_PK, &project_sk(name), None)
            .await?
            .is_some())
    }
}

impl ResourceStore for DynamoStore {
    async fn write_resources(
        &self,
        project: &str,
        scope: &Scope,
        changes: &[Change],
        _now: Timestamp,
    ) -> StoreResult<String> {
        let commit = commit_id();
        let changes = last_wins(changes);
        let scope = scope.key();
        let mut blobs_written: Option<Vec<WriteRequest>> = None;
        for _ in 0..COMMIT_ATTEMPTS {
            let Some(p) = self.project_item(project).await? else {
                if let Some(bl) = &blobs_written {
                    self.drop_blobs(bl).await;
                }
                return Err(StoreError::NotFound(format!("project {project}")));
            };
            let count: u64 = get_n(&p, "commits")?;
            let seq = count + 1;
            let (change_actions, blobs) = change_writes(project, &scope, &changes, seq, &commit)?;
            if blobs_written.is_none() {
                self.batch_write(blobs.clone()).await?;
                blobs_written = Some(blobs);
            }
            let bump = Update::builder()
                .table_name("")
                .set_key(Some(key(PROJECTS_PK, project_sk(project))))
                .update_expression("SET #c = :next, #l = :id")
                .condition_expression("#c = :c")
                .set_expression_attribute_names(names([("#c", "commits"), ("#l", "latest")]))
                .set_expression_attribute_values(values([
                    (":c", n(count)),
                    (":next", n(seq)),
                    (":id", s(&commit)),
                ]))
                .build()
                .map_err(build_err)?;
            let mut actions = vec![
                TransactWriteItem::builder().update(bump).build(),
                put_action(commit_item(project, &commit, seq), None)?,
            ];
            actions.extend(change_actions);
            match self.transact(actions).await {
                Ok(()) => return Ok(commit),
                Err(e) if e.condition_failed(0) || e.conflicted() => continue,
                Err(e) => {
                    // As in `create_project`: keep the chunks of a commit that
                    // may have happened.
                    if let (true, Some(bl)) = (e.not_applied(), &blobs_written) {
                        self.drop_blobs(bl).await;
                    }
                    return Err(e.into_store());
                }
            }
        }
        if let Some(bl) = &blobs_written {
            self.drop_blobs(bl).await;
        }
        Err(StoreError::Conflict)
    }

    async fn read_resource(
        &self,
        project: &str,
        scope: &Scope,
        uri: &str,
        at: Option<&str>,
    ) -> StoreResult<Option<Resource>> {
        let Some(seq) = self.read_point(project, at).await? else {
            return Ok(None);
        };
        let scope = scope.key();
        let prefix = resource_prefix(&scope, Some(uri));
        let q = Q::table(
            project_pk(project),
            Sk::Between(
                format!("{prefix}{}", seq_key(0)),
                format!("{prefix}{}", seq_key(seq)),
            ),
        )
        .newest_first()
        .page(1);
        let mut latest = None;
        self.query_each(&q, |it| {
            latest = Some(it);
            Ok(false)
        })
        .await?;
        let Some(it) = latest else { return Ok(None) };
        if get_bool(&it, "deleted")? {
            return Ok(None);
        }
        Ok(Some(Resource {
            uri: uri.to_string(),
            content: self.content_of(project, &scope, &it).await?,
            version: get_s(&it, "commit")?.to_string(),
        }))
    }

    async fn list_resources(
        &self,
        project: &str,
        scope: &Scope,
        at: Option<&str>,
    ) -> StoreResult<Vec<(String, String)>> {
        let Some(seq) = self.read_point(project, at).await? else {
            return Ok(Vec::new());
        };
        let q = Q::table(
            project_pk(project),
            Sk::BeginsWith(resource_prefix(&scope.key(), None)),
        );
        // uri → (seq, commit, deleted) of its latest change at the read point.
        let mut latest: BTreeMap<String, (u64, String, bool)> = BTreeMap::new();
        self.query_each(&q, |it| {
            let s_: u64 = get_n(&it, "seq")?;
            if s_ > seq {
                return Ok(true);
            }
            let uri = get_s(&it, "uri")?.to_string();
            let entry = (
                s_,
                get_s(&it, "commit")?.to_string(),
                get_bool(&it, "deleted")?,
            );
            match latest.get(&uri) {
                Some((old, _, _)) if *old >= s_ => {}
                _ => {
                    latest.insert(uri, entry);
                }
            }
            Ok(true)
        })
        .await?;
        Ok(latest
            .into_iter()
            .filter(|(_, (_, _, deleted))| !deleted)
            .map(|(uri, (_, commit, _))| (uri, commit))
            .collect())
    }

    async fn latest_commit(&self, project: &str) -> StoreResult<Option<String>> {
        let Some(it) = self.project_item(project).await? else {
            return Ok(None);
        };
        if get_n::<u64>(&it, "commits")? == 0 {
            return Ok(None);
        }
        Ok(Some(get_s(&it, "latest")?.to_string()))
    }
}

impl IntegrationStore for DynamoStore {
    async fn put_integration(&self, i: &Integration) -> StoreResult<bool> {
        let out = self
            .client
            .put_item()
            .table_name(self.table.as_ref())
            .set_item(Some(item([
                ("pk", s(INTEGRATIONS_PK)),
                ("sk", s(integration_sk(&i.id))),
                ("name", s(&i.name)),
                ("json", s(to_json("integration", i)?)),
            ])))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(store_error)?;
        Ok(out.attributes.is_none_or(|a| a.is_empty()))
    }

    async fn get_integration(&self, id: &str) -> StoreResult<Option<Integration>> {
        match self.get(INTEGRATIONS_PK, &integration_sk(id)).await? {
            None => Ok(None),
            Some(it) => Ok(Some(get_json(&it, "json")?)),
        }
    }

    async fn list_integrations(&self) -> StoreResult<Vec<Integration>> {
        let items = self.query_all(&Q::table(INTEGRATIONS_PK, Sk::Any)).await?;
        let mut out: Vec<Integration> = items
            .iter()
            .map(|it| get_json(it, "json"))
            .collect::<StoreResult<_>>()?;
        out.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(out)
    }

    async fn delete_integration(&self, id: &str) -> StoreResult<bool> {
        Ok(self
            .delete_returning(INTEGRATIONS_PK, &integration_sk(id), None)
            .await?
            .is_some())
    }
}
