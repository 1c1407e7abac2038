//! The requests: paginated queries, batches with retries of unprocessed
//! items, conditional single-item writes and transactions whose cancellation
//! reasons are handed back to the caller.

use super::item::{build_err, key, s, DynamoError, Item};
use super::DynamoStore;
use crate::error::store_error;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    Delete, DeleteRequest, KeysAndAttributes, Put, PutRequest, ReturnValue, TransactWriteItem,
    WriteRequest,
};
use keelson_core::ports::{StoreError, StoreResult};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// DynamoDB's limit of actions per transaction.
pub(crate) const MAX_TRANSACTION_ITEMS: usize = 100;
/// Largest item this store writes (DynamoDB's limit is 400 KB, names included).
pub(crate) const MAX_ITEM_BYTES: usize = 380 * 1024;
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
}

/// A transaction cancelled by DynamoDB: the reason code of each action, in order
/// (`"None"` for the actions that did not fail).
#[derive(Debug)]
pub(crate) enum TxError {
    Cancelled(Vec<String>),
    Store(StoreError),
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

    /// Any other failure as a store error.
    pub fn into_store(self) -> StoreError {
        match self {
            TxError::Store(e) => e,
            TxError::Cancelled(codes) => DynamoError::Cancelled(codes).into(),
        }
    }
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
        self.client
            .put_item()
            .table_name(self.table.as_ref())
            .set_item(Some(item))
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Writes an item if `cond` holds; false if it did not.
    pub(crate) async fn put_if(&self, item: Item, cond: Cond) -> StoreResult<bool> {
        let r = self
            .client
            .put_item()
            .table_name(self.table.as_ref())
            .set_item(Some(item))
            .condition_expression(cond.expr)
            .set_expression_attribute_values(cond.values)
            .set_expression_attribute_names(cond.names)
            .send()
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
        let mut req = self
            .client
            .delete_item()
            .table_name(self.table.as_ref())
            .set_key(Some(key(pk, sk)))
            .return_values(ReturnValue::AllOld);
        if let Some(c) = cond {
            req = req
                .condition_expression(c.expr)
                .set_expression_attribute_values(c.values)
                .set_expression_attribute_names(c.names);
        }
        match req.send().await {
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
        if actions.len() > MAX_TRANSACTION_ITEMS {
            return Err(TxError::Store(super::item::limit(format!(
                "{} writes in one transaction (DynamoDB allows {MAX_TRANSACTION_ITEMS})",
                actions.len()
            ))));
        }
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
                _ => Err(TxError::Store(store_error(e))),
            },
        }
    }
}
