//! Items: attribute constructors and checked accessors. Data read from the
//! table is never trusted: a missing or mistyped attribute is an error.

use crate::error::TRANSIENT_CANCELLATION_REASONS;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use keelson_core::ports::{StoreError, StoreResult};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::str::FromStr;

/// One DynamoDB item.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// Errors of the DynamoDB store that are not the SDK's.
#[derive(Debug, thiserror::Error)]
pub enum DynamoError {
    /// An item read from the table is not what this store writes.
    #[error("malformed item {key}: {what}")]
    Malformed {
        /// `pk/sk` of the item.
        key: String,
        /// What is wrong.
        what: String,
        /// The JSON error, for unreadable documents.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// A DynamoDB limit (item size, transaction size) would be exceeded.
    #[error("DynamoDB limit: {0}")]
    Limit(String),
    /// A request could not be built.
    #[error("could not build a DynamoDB request")]
    Build(#[from] aws_smithy_types::error::operation::BuildError),
    /// Batch items still unprocessed after the retries.
    #[error("{0} still unprocessed after retries")]
    Unprocessed(&'static str),
    /// A transaction was cancelled for a reason this store does not expect.
    #[error("transaction cancelled: {0:?}")]
    Cancelled(Vec<String>),
    /// A value could not be serialised.
    #[error("could not serialise {what}")]
    Serialize {
        /// What.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The table did not become active in time.
    #[error("table {0} did not become active")]
    NotActive(String),
}

impl From<DynamoError> for StoreError {
    fn from(e: DynamoError) -> Self {
        let transient = match &e {
            DynamoError::Unprocessed(_) | DynamoError::NotActive(_) => true,
            // Throttled or in conflict with another transaction: a retry may pass.
            DynamoError::Cancelled(reasons) => reasons
                .iter()
                .any(|r| TRANSIENT_CANCELLATION_REASONS.contains(&r.as_str())),
            _ => false,
        };
        StoreError::backend(e, transient)
    }
}

/// The size DynamoDB counts for a value (numbers and containers generously).
pub(crate) fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(x) => x.len(),
        AttributeValue::N(x) => x.len() + 1,
        AttributeValue::B(x) => x.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(xs) => 3 + xs.iter().map(|x| value_size(x) + 1).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| k.len() + value_size(x) + 1)
                .sum::<usize>()
        }
        AttributeValue::Ss(xs) => xs.iter().map(String::len).sum(),
        AttributeValue::Ns(xs) => xs.iter().map(|x| x.len() + 1).sum(),
        AttributeValue::Bs(xs) => xs.iter().map(|x| x.as_ref().len()).sum(),
        _ => 0,
    }
}

/// The size DynamoDB counts for an item: names plus values.
pub(crate) fn item_size(it: &Item) -> usize {
    it.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

pub(crate) fn limit(msg: impl Into<String>) -> StoreError {
    DynamoError::Limit(msg.into()).into()
}

pub(crate) fn build_err(e: aws_smithy_types::error::operation::BuildError) -> StoreError {
    DynamoError::Build(e).into()
}

pub(crate) fn to_json<T: serde::Serialize + ?Sized>(
    what: &'static str,
    v: &T,
) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|source| DynamoError::Serialize { what, source }.into())
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn b(v: impl Into<Vec<u8>>) -> AttributeValue {
    AttributeValue::B(Blob::new(v))
}

/// An item (or key) from attribute pairs.
pub(crate) fn item<const N: usize>(pairs: [(&str, AttributeValue); N]) -> Item {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The `pk`/`sk` key.
pub(crate) fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    item([("pk", s(pk)), ("sk", s(sk))])
}

fn key_text(it: &Item) -> String {
    let part = |k: &str| match it.get(k) {
        Some(AttributeValue::S(v)) => v.as_str(),
        _ => "?",
    };
    format!("{}/{}", part("pk"), part("sk"))
}

pub(crate) fn malformed(it: &Item, what: impl Into<String>) -> StoreError {
    DynamoError::Malformed {
        key: key_text(it),
        what: what.into(),
        source: None,
    }
    .into()
}

pub(crate) fn get_s<'a>(it: &'a Item, k: &str) -> StoreResult<&'a str> {
    match it.get(k) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(_) => Err(malformed(it, format!("{k} is not a string"))),
        None => Err(malformed(it, format!("{k} is missing"))),
    }
}

pub(crate) fn opt_s<'a>(it: &'a Item, k: &str) -> StoreResult<Option<&'a str>> {
    match it.get(k) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(_) => get_s(it, k).map(Some),
    }
}

pub(crate) fn get_n<T: FromStr>(it: &Item, k: &str) -> StoreResult<T> {
    match it.get(k) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| malformed(it, format!("{k} = {v:?} is not the expected number"))),
        Some(_) => Err(malformed(it, format!("{k} is not a number"))),
        None => Err(malformed(it, format!("{k} is missing"))),
    }
}

pub(crate) fn opt_n<T: FromStr>(it: &Item, k: &str) -> StoreResult<Option<T>> {
    match it.get(k) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(_) => get_n(it, k).map(Some),
    }
}

pub(crate) fn get_b<'a>(it: &'a Item, k: &str) -> StoreResult<&'a [u8]> {
    match it.get(k) {
        Some(AttributeValue::B(v)) => Ok(v.as_ref()),
        Some(_) => Err(malformed(it, format!("{k} is not binary"))),
        None => Err(malformed(it, format!("{k} is missing"))),
    }
}

pub(crate) fn get_bool(it: &Item, k: &str) -> StoreResult<bool> {
    match it.get(k) {
        Some(AttributeValue::Bool(v)) => Ok(*v),
        None => Ok(false),
        Some(_) => Err(malformed(it, format!("{k} is not a boolean"))),
    }
}

pub(crate) fn get_list_s(it: &Item, k: &str) -> StoreResult<Vec<String>> {
    match it.get(k) {
        None => Ok(Vec::new()),
        Some(AttributeValue::L(vs)) => vs
            .iter()
            .map(|v| match v {
                AttributeValue::S(x) => Ok(x.clone()),
                _ => Err(malformed(it, format!("{k} holds a non-string"))),
            })
            .collect(),
        Some(_) => Err(malformed(it, format!("{k} is not a list"))),
    }
}

pub(crate) fn from_json_str<T: DeserializeOwned>(
    it: &Item,
    what: &str,
    text: &str,
) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| {
        DynamoError::Malformed {
            key: key_text(it),
            what: format!("{what} is not valid JSON of its type"),
            source: Some(e),
        }
        .into()
    })
}

pub(crate) fn from_json_bytes<T: DeserializeOwned>(
    it: &Item,
    what: &str,
    bytes: &[u8],
) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        DynamoError::Malformed {
            key: key_text(it),
            what: format!("{what} is not valid JSON of its type"),
            source: Some(e),
        }
        .into()
    })
}

pub(crate) fn get_json<T: DeserializeOwned>(it: &Item, k: &str) -> StoreResult<T> {
    let text = get_s(it, k)?;
    from_json_str(it, k, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_core::ErrorKind;

    #[test]
    fn throttled_or_conflicting_cancellations_are_transient() {
        let kind = |codes: &[&str]| {
            StoreError::from(DynamoError::Cancelled(
                codes.iter().map(|c| c.to_string()).collect(),
            ))
            .kind()
        };
        for r in [
            "ThrottlingError",
            "ProvisionedThroughputExceeded",
            "TransactionConflict",
            "RequestLimitExceeded",
        ] {
            assert_eq!(kind(&["None", r]), ErrorKind::Transient, "{r}");
        }
        assert_eq!(kind(&["ValidationError"]), ErrorKind::Fatal);
        assert_eq!(
            kind(&["None", "ItemCollectionSizeLimitExceeded"]),
            ErrorKind::Fatal
        );
    }

    #[test]
    fn item_sizes_count_names_and_values() {
        let it = item([("pk", s("abc")), ("n", n(12)), ("b", b(vec![0u8; 10]))]);
        assert_eq!(item_size(&it), (2 + 3) + (1 + 3) + (1 + 10));
    }
}
