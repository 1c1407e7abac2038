//! The requests: paginated queries, batches with retries of unprocessed
//! items, conditional single-item writes and transactions whose cancellation
//! reasons are handed back to the caller.

use super::item::{build_err, item_size, key, s, DynamoError, Item};
use super::DynamoStore;
use crate::error::{is_transaction_conflict, maybe_applied, store_error, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    Delete, DeleteRequest, KeysAndAttributes, Put, PutRequest, ReturnValue, TransactWriteItem,
    WriteRequest,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use keelson_core::ports::{StoreError, StoreResult};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// DynamoDB's limit of actions per transaction.
pub(crate) const MAX_TRANSACTION_ITEMS: usize = 100;
/// Largest item this store writes (DynamoDB's limit is 400 KB, names included).
pub(crate) const MAX_ITEM_BYTES: usize = 380 * 1024;
/// DynamoDB's item size limit (400 KB, attribute names included).
pub(crate) const DYNAMO_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's limit of the aggregate item size of one transaction (4 MB).
pub(crate) const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
/// Attempts at a single-item write that meets a transaction in progress on
/// its item (`TransactionConflictException`).
const CONFLICT_ATTEMPTS: u32 = 6;
/// Attempts at a batch's unprocessed items before giving up (transiently).
const BATCH_ATTEMPTS: u32 = 8;

/// The sort-key condition of a query.
#[derive(Debug, Clone)]
pub(crate) enum Sk {
    Any,
    BeginsWith(String),
    Between(String, String),
}

/// A query of one partition of the table or of an index.
#[derive(Debug, Clone)]
pub(crate) struct Q {
    pub index: Option<&'static str>,
    pub pk: String,
    pub sk: Sk,
    pub forward: bool,
    /// Items per page (the loop goes on while the callback asks for more).
    pub page: Option<i32>,
}

impl Q {
    /// A partition of the table, read consistently.
    pub fn table(pk: impl Into<String>, sk: Sk) -> Q {
        Q {
            index: None,
            pk: pk.into(),
            sk,
            forward: true,
            page: None,
        }
    }

    /// A partition of `gsi1` … `gsi3` (eventually consistent, as every GSI).
    pub fn index(index: &'static str, pk: impl Into<String>, sk: Sk) -> Q {
        Q {
            index: Some(index),
            ..Q::table(pk, sk)
        }
    }

    pub fn newest_first(self) -> Q {
        Q {
            forward: false,
            ..self
        }
    }

    pub fn page(self, n: i32) -> Q {
        Q {
            page: Some(n),
            ..self
        }
    }
}

/// A write condition: the item is absent, or `<attr> <op> <value>` holds on it.
#[derive(Debug, Clone)]
pub(crate) struct Cond {
    expr: String,
    names: Option<HashMap<String, String>>,
    values: Option<Item>,
}

impl Cond {
    pub fn absent() -> Cond {
        Cond {
            expr: "attribute_not_exists(pk)".into(),
            names: None,
            values: None,
        }
    }

    pub fn cmp(attr: &str, op: &str, value: aws_sdk_dynamodb::types::AttributeValue) -> Cond {
        Cond {
            expr: format!("#c {op} :v"),
            names: names([("#c", attr)]),
            values: values([(":v", value)]),
        }
    }

    /// This condition and `<attr> <op> <value>`.
    pub fn and(
        mut self,
        attr: &str,
        op: &str,
        value: aws_sdk_dynamodb::types::AttributeValue,
    ) -> Cond {
        let i = self.names.as_ref().map_or(0, HashMap::len);
        let (nk, vk) = (format!("#c{i}"), format!(":v{i}"));
        self.expr = format!("{} AND {nk} {op} {vk}", self.expr);
        self.names
            .get_or_insert_with(HashMap::new)
            .insert(nk, attr.to_string());
        self.values
            .get_or_insert_with(HashMap::new)
            .insert(vk, value);
        self
    }
}

/// A failed transaction.
#[derive(Debug)]
pub(crate) enum TxError {
    /// Cancelled by DynamoDB (nothing was written): the reason code of each
    /// action, in order (`"None"` for the actions that did not fail).
    Cancelled(Vec<String>),
    /// Any other failure. `maybe_applied`: there was no definite answer (a
    /// timeout, a 5xx …), so the transaction may have committed.
    Store {
        err: StoreError,
        maybe_applied: bool,
    },
}

impl TxError {
    /// Whether the action at `i` failed its condition.
    pub fn condition_failed(&self, i: usize) -> bool {
        matches!(self, TxError::Cancelled(c) if c.get(i).map(String::as_str) == Some("ConditionalCheckFailed"))
    }

    /// Whether a concurrent transaction got in the way.
    pub fn conflicted(&self) -> bool {
        matches!(self, TxError::Cancelled(c) if c.iter().any(|r| r == "TransactionConflict"))
    }

    /// Whether the transaction certainly wrote nothing.
    pub fn not_applied(&self) -> bool {
        match self {
            TxError::Cancelled(_) => true,
            TxError::Store { maybe_applied, .. } => !maybe_applied,
        }
    }

    /// Any other failure as a store error (transient for throttling and
    /// transaction conflicts).
    pub fn into_store(self) -> StoreError {
        match self {
            TxError::Store { err, .. } => err,
            TxError::Cancelled(codes) => DynamoError::Cancelled(codes).into(),
        }
    }
}

/// A failure of ours before anything was sent.
fn refused(err: StoreError) -> TxError {
    TxError::Store {
        err,
        maybe_applied: false,
    }
}

/// The size DynamoDB counts for a transaction action.
fn action_size(a: &TransactWriteItem) -> (usize, usize) {
    let key_size = |k: &Item| item_size(k);
    let vals = |v: &Option<Item>| v.as_ref().map_or(0, item_size);
    if let Some(p) = &a.put {
        let s = item_size(&p.item);
        (s, s + vals(&p.expression_attribute_values))
    } else if let Some(d) = &a.delete {
        (0, key_size(&d.key) + vals(&d.expression_attribute_values))
    } else if let Some(u) = &a.update {
        let s = key_size(&u.key) + vals(&u.expression_attribute_values);
        (s, s)
    } else if let Some(c) = &a.condition_check {
        (0, key_size(&c.key) + vals(&c.expression_attribute_values))
    } else {
        (0, 0)
    }
}

/// Checks DynamoDB's transaction limits before sending: at most 100 actions,
/// items under 400 KB, at most 4 MB in all.
pub(crate) fn check_transaction(actions: &[TransactWriteItem]) -> StoreResult<()> {
    if actions.len() > MAX_TRANSACTION_ITEMS {
        return Err(super::item::limit(format!(
            "{} writes in one transaction (DynamoDB allows {MAX_TRANSACTION_ITEMS})",
            actions.len()
        )));
    }
    let mut total = 0;
    for a in actions {
        let (item, size) = action_size(a);
        if item > DYNAMO_ITEM_BYTES {
            return Err(super::item::limit(format!(
                "an item of {item} bytes (DynamoDB allows {DYNAMO_ITEM_BYTES})"
            )));
        }
        total += size;
    }
    if total > MAX_TRANSACTION_BYTES {
        return Err(super::item::limit(format!(
            "a transaction of {total} bytes (DynamoDB allows {MAX_TRANSACTION_BYTES})"
        )));
    }
    Ok(())
}

pub(crate) fn put_action(item: Item, cond: Option<&str>) -> StoreResult<TransactWriteItem> {
    Ok(TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name("") // filled in by `transact`
                .set_item(Some(item))
                .set_condition_expression(cond.map(String::from))
                .build()
                .map_err(build_err)?,
        )
        .build())
}

pub(crate) fn delete_action(pk: &str, sk: &str) -> StoreResult<TransactWriteItem> {
    Ok(TransactWriteItem::builder()
        .delete(
            Delete::builder()
                .table_name("")
                .set_key(Some(key(pk, sk)))
                .build()
                .map_err(build_err)?,
        )
        .build())
}

/// Attribute values of an expression, `:a` style.
pub(crate) fn values<const N: usize>(
    pairs: [(&str, aws_sdk_dynamodb::types::AttributeValue); N],
) -> Option<Item> {
    Some(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// Attribute names of an expression, `#a` style.
pub(crate) fn names<const N: usize>(pairs: [(&str, &str); N]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Sends a single-item write again while it meets a transaction in progress
/// on its item (`TransactionConflictException`), with backoff, at most
/// `CONFLICT_ATTEMPTS` times; any other outcome is returned as it is.
async fn retry_conflicts<T, E, F, Fut>(mut send: F) -> Result<T, SdkError<E, HttpResponse>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    let mut attempt = 0;
    loop {
        match send().await {
            Err(e) if is_transaction_conflict(&e) && attempt + 1 < CONFLICT_ATTEMPTS => {
                attempt += 1;
                backoff(attempt).await;
            }
            r => return r,
        }
    }
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(25u64 << attempt.min(6))).await;
}

impl DynamoStore {
    /// Runs `q` page by page (following `LastEvaluatedKey`) and hands every item
    /// to `f` until it returns false.
    pub(crate) async fn query_each(
        &self,
        q: &Q,
        mut f: impl FnMut(Item) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let (pk_attr, sk_attr) = match q.index {
            None => ("pk".to_string(), "sk".to_string()),
            Some(i) => (format!("{i}pk"), format!("{i}sk")),
        };
        let mut vals = HashMap::from([(":pk".to_string(), s(&q.pk))]);
        let cond = match &q.sk {
            Sk::Any => "#pk = :pk".to_string(),
            Sk::BeginsWith(p) => {
                vals.insert(":p".into(), s(p));
                "#pk = :pk AND begins_with(#sk, :p)".to_string()
            }
            Sk::Between(a, b) => {
                vals.insert(":a".into(), s(a));
                vals.insert(":b".into(), s(b));
                "#pk = :pk AND #sk BETWEEN :a AND :b".to_string()
            }
        };
        let mut names = HashMap::from([("#pk".to_string(), pk_attr)]);
        if !matches!(q.sk, Sk::Any) {
            names.insert("#sk".to_string(), sk_attr);
        }
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(self.table.as_ref())
                .set_index_name(q.index.map(String::from))
                .key_condition_expression(&cond)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(vals.clone()))
                .scan_index_forward(q.forward)
                .set_consistent_read(q.index.is_none().then_some(true))
                .set_limit(q.page)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(store_error)?;
            for it in out.items.unwrap_or_default() {
                if !f(it)? {
                    return Ok(());
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(()),
            }
        }
    }

    /// Every item of `q`.
    pub(crate) async fn query_all(&self, q: &Q) -> StoreResult<Vec<Item>> {
        let mut out = Vec::new();
        self.query_each(q, |it| {
            out.push(it);
            Ok(true)
        })
        .await?;
        Ok(out)
    }

    /// One item, read consistently.
    pub(crate) async fn get(&self, pk: &str, sk: &str) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(self.table.as_ref())
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_error)?;
        Ok(out.item.filter(|i| !i.is_empty()))
    }

    /// Writes an item unconditionally.
    pub(crate) async fn put(&self, item: Item) -> StoreResult<()> {
        retry_conflicts(|| {
            self.client
                .put_item()
                .table_name(self.table.as_ref())
                .set_item(Some(item.clone()))
                .send()
        })
        .await
        .map(|_| ())
        .map_err(store_error)
    }

    /// Writes an item if `cond` holds; false if it did not.
    /// A write that meets a transaction in progress on its item is retried.
    pub(crate) async fn put_if(&self, item: Item, cond: Cond) -> StoreResult<bool> {
        let r = retry_conflicts(|| {
            self.client
                .put_item()
                .table_name(self.table.as_ref())
                .set_item(Some(item.clone()))
                .condition_expression(cond.expr.clone())
                .set_expression_attribute_values(cond.values.clone())
                .set_expression_attribute_names(cond.names.clone())
                .send()
        })
        .await;
        match r {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// Deletes an item if `cond` holds (always without one); returns the old
    /// item, `None` if there was none or the condition failed.
    pub(crate) async fn delete_returning(
        &self,
        pk: &str,
        sk: &str,
        cond: Option<Cond>,
    ) -> StoreResult<Option<Item>> {
        let r = retry_conflicts(|| {
            let mut req = self
                .client
                .delete_item()
                .table_name(self.table.as_ref())
                .set_key(Some(key(pk, sk)))
                .return_values(ReturnValue::AllOld);
            if let Some(c) = &cond {
                req = req
                    .condition_expression(c.expr.clone())
                    .set_expression_attribute_values(c.values.clone())
                    .set_expression_attribute_names(c.names.clone());
            }
            req.send()
        })
        .await;
        match r {
            Ok(out) => Ok(out.attributes.filter(|a| !a.is_empty())),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|x| x.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// Puts and deletes in batches of 25, retrying unprocessed items with backoff.
    pub(crate) async fn batch_write(&self, reqs: Vec<WriteRequest>) -> StoreResult<()> {
        for chunk in reqs.chunks(25) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                if attempt == BATCH_ATTEMPTS {
                    return Err(DynamoError::Unprocessed("batch writes").into());
                }
                if attempt > 0 {
                    backoff(attempt).await;
                }
                attempt += 1;
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(self.table.as_ref(), pending)
                    .send()
                    .await
                    .map_err(store_error)?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(self.table.as_ref()))
                    .unwrap_or_default();
            }
        }
        Ok(())
    }

    pub(crate) fn put_request(item: Item) -> StoreResult<WriteRequest> {
        Ok(WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(build_err)?,
            )
            .build())
    }

    pub(crate) fn delete_request(pk: &str, sk: &str) -> StoreResult<WriteRequest> {
        Ok(WriteRequest::builder()
            .delete_request(
                DeleteRequest::builder()
                    .set_key(Some(key(pk, sk)))
                    .build()
                    .map_err(build_err)?,
            )
            .build())
    }

    /// Items by key (duplicates asked once), read consistently in batches of
    /// 100, retrying unprocessed keys. Absent items are left out.
    pub(crate) async fn batch_get(&self, keys: Vec<(String, String)>) -> StoreResult<Vec<Item>> {
        let mut seen = HashSet::new();
        let keys: Vec<(String, String)> = keys
            .into_iter()
            .filter(|k| seen.insert(k.clone()))
            .collect();
        let mut found = Vec::new();
        for chunk in keys.chunks(100) {
            let mut pending: Vec<Item> = chunk.iter().map(|(p, s)| key(p, s)).collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                if attempt == BATCH_ATTEMPTS {
                    return Err(DynamoError::Unprocessed("batch reads").into());
                }
                if attempt > 0 {
                    backoff(attempt).await;
                }
                attempt += 1;
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(pending))
                    .consistent_read(true)
                    .build()
                    .map_err(build_err)?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(self.table.as_ref(), ka)
                    .send()
                    .await
                    .map_err(store_error)?;
                if let Some(mut r) = out.responses {
                    found.extend(r.remove(self.table.as_ref()).unwrap_or_default());
                }
                pending = out
                    .unprocessed_keys
                    .and_then(|mut m| m.remove(self.table.as_ref()))
                    .map(|ka| ka.keys)
                    .unwrap_or_default();
            }
        }
        Ok(found)
    }

    /// One `TransactWriteItems` (at most 100 actions).
    pub(crate) async fn transact(&self, actions: Vec<TransactWriteItem>) -> Result<(), TxError> {
        check_transaction(&actions).map_err(refused)?;
        let table = self.table.to_string();
        let actions = actions
            .into_iter()
            .map(|mut a| {
                if let Some(p) = a.put.as_mut() {
                    p.table_name = table.clone();
                }
                if let Some(d) = a.delete.as_mut() {
                    d.table_name = table.clone();
                }
                if let Some(u) = a.update.as_mut() {
                    u.table_name = table.clone();
                }
                if let Some(c) = a.condition_check.as_mut() {
                    c.table_name = table.clone();
                }
                a
            })
            .collect();
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    Err(TxError::Cancelled(
                        c.cancellation_reasons()
                            .iter()
                            .map(|r| r.code().unwrap_or("None").to_string())
                            .collect(),
                    ))
                }
                _ => Err(TxError::Store {
                    maybe_applied: maybe_applied(&e),
                    err: store_error(e),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dynamo::item::{b, item};

    fn blob_put(bytes: usize) -> TransactWriteItem {
        put_action(item([("pk", s("p")), ("data", b(vec![0u8; bytes]))]), None).unwrap()
    }

    #[test]
    fn transactions_beyond_dynamodb_limits_are_refused_before_sending() {
        assert!(check_transaction(&(0..100).map(|_| blob_put(1)).collect::<Vec<_>>()).is_ok());
        assert!(check_transaction(&(0..101).map(|_| blob_put(1)).collect::<Vec<_>>()).is_err());
        // 13 × 300 KiB fits in 4 MB, 14 do not.
        let chunks = |k| (0..k).map(|_| blob_put(300 * 1024)).collect::<Vec<_>>();
        assert!(check_transaction(&chunks(13)).is_ok());
        let e = check_transaction(&chunks(14)).unwrap_err();
        assert_eq!(e.kind(), keelson_core::ErrorKind::Fatal);
        assert!(check_transaction(&[blob_put(DYNAMO_ITEM_BYTES)]).is_err());
    }

    #[test]
    fn a_second_condition_gets_its_own_placeholders() {
        let c = Cond::cmp("ord", "=", s("o")).and("time", "<", s("5"));
        assert_eq!(c.expr, "#c = :v AND #c1 < :v1");
        assert_eq!(c.names.unwrap().len(), 2);
        assert_eq!(c.values.unwrap().len(), 2);
    }
}
