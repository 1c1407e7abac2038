//! Datastore queries (spec §3.4): the `GET /event` filters and the
//! `/event/type/{type}?filter=` syntax, with one matching function that the
//! in-memory store uses and the other stores must agree with.

use crate::error::CoreError;
use crate::event::KeptnEvent;
use crate::timestamp::Timestamp;
use serde_json::Value;

/// Default page size of the datastore.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page size of the datastore.
pub const MAX_PAGE_SIZE: usize = 100;

/// `GET /event` parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventQuery {
    /// shkeptncontext.
    pub keptn_context: Option<String>,
    /// Exact type.
    pub ty: Option<String>,
    /// data.project.
    pub project: Option<String>,
    /// data.stage.
    pub stage: Option<String>,
    /// data.service.
    pub service: Option<String>,
    /// Event id.
    pub event_id: Option<String>,
    /// Source.
    pub source: Option<String>,
    /// time > fromTime.
    pub from_time: Option<Timestamp>,
    /// time < beforeTime.
    pub before_time: Option<Timestamp>,
    /// Only the earliest event of each context.
    pub root: bool,
    /// Page size (1..=100).
    pub page_size: usize,
    /// Offset of the page.
    pub offset: usize,
}

impl EventQuery {
    /// Whether `ev` passes every filter but `root` (the stores apply `root` themselves).
    pub fn matches(&self, ev: &KeptnEvent) -> bool {
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| got == Some(w))
        };
        eq(&self.keptn_context, Some(ev.shkeptncontext.as_str()))
            && eq(&self.ty, Some(ev.ty.as_str()))
            && eq(&self.project, ev.project())
            && eq(&self.stage, ev.stage())
            && eq(&self.service, ev.service())
            && eq(&self.event_id, Some(ev.id.as_str()))
            && eq(&self.source, Some(ev.source.as_str()))
            && self.from_time.is_none_or(|t| ev.time > t)
            && self.before_time.is_none_or(|t| ev.time < t)
    }
}

/// One page of events, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventPage {
    /// The events.
    pub events: Vec<KeptnEvent>,
    /// Offset of the next page, `None` on the last page.
    pub next_offset: Option<usize>,
    /// Number of matching events.
    pub total_count: usize,
}

impl EventQuery {
    /// The page size asked for; 0 means [`DEFAULT_PAGE_SIZE`].
    pub fn effective_page_size(&self) -> usize {
        if self.page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            self.page_size
        }
    }
}

impl TypeQuery {
    /// The limit asked for; 0 means [`DEFAULT_PAGE_SIZE`].
    pub fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            self.limit
        }
    }
}

impl EventPage {
    /// The page of `events` read at `offset` with `page_size` out of `total_count`.
    pub fn at(
        events: Vec<KeptnEvent>,
        offset: usize,
        page_size: usize,
        total_count: usize,
    ) -> Self {
        let next = offset.saturating_add(page_size);
        EventPage {
            events,
            next_offset: (next < total_count).then_some(next),
            total_count,
        }
    }
}

/// Parses a page size parameter (`pageSize` / `limit`).
pub fn parse_page_size(field: &str, v: Option<&str>, max: usize) -> Result<usize, CoreError> {
    match v {
        None | Some("") => Ok(DEFAULT_PAGE_SIZE.min(max)),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(CoreError::invalid(
                field,
                format!("must be a number from 1 to {max}, got {s:?}"),
            )),
        },
    }
}

/// Parses `nextPageKey` (a decimal offset).
pub fn parse_page_key(v: Option<&str>) -> Result<usize, CoreError> {
    match v {
        None | Some("") => Ok(0),
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| CoreError::invalid("nextPageKey", format!("{s:?} is not a page key"))),
    }
}

/// One `key:v1,v2` term of a type-query filter.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterTerm {
    /// Dotted path: a top-level attribute (`shkeptncontext`, `source`, `id`,
    /// `triggeredid`, `type`, `gitcommitid`) or `data.<path>`.
    pub key: String,
    /// Accepted values (any of).
    pub values: Vec<String>,
}

/// `GET /event/type/{type}` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeQuery {
    /// The event type.
    pub ty: String,
    /// Filter terms (AND).
    pub filter: Vec<FilterTerm>,
    /// Drop events whose `triggeredid` has an `.invalidated` event.
    pub exclude_invalidated: bool,
    /// time > fromTime.
    pub from_time: Option<Timestamp>,
    /// At most this many (1..=100).
    pub limit: usize,
}

/// Parses `k:v AND k:v1,v2`; it must contain `data.project:` or `shkeptncontext:` (Keptn's rule).
pub fn parse_filter(s: &str) -> Result<Vec<FilterTerm>, CoreError> {
    let mut out = Vec::new();
    for part in s.split(" AND ") {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once(':').ok_or_else(|| {
            CoreError::invalid("filter", format!("{part:?} is not of the form key:value"))
        })?;
        let k = k.trim();
        if k.is_empty() || !valid_path(k) {
            return Err(CoreError::invalid(
                "filter",
                format!("{k:?} is not a valid key"),
            ));
        }
        let values: Vec<String> = v.split(',').map(|x| x.trim().to_string()).collect();
        if values.iter().any(String::is_empty) {
            return Err(CoreError::invalid(
                "filter",
                format!("{part:?} has an empty value"),
            ));
        }
        out.push(FilterTerm {
            key: k.to_string(),
            values,
        });
    }
    if !out
        .iter()
        .any(|t| t.key == "data.project" || t.key == "shkeptncontext")
    {
        return Err(CoreError::invalid(
            "filter",
            "must contain data.project:<project> or shkeptncontext:<context>",
        ));
    }
    Ok(out)
}

fn valid_path(k: &str) -> bool {
    k.split('.').all(|seg| {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// The text value at a dotted path of an event (numbers and booleans as their JSON text).
pub fn field_text(ev: &KeptnEvent, key: &str) -> Option<String> {
    let v = match key {
        "id" => return Some(ev.id.clone()),
        "type" => return Some(ev.ty.clone()),
        "source" => return Some(ev.source.clone()),
        "shkeptncontext" => return Some(ev.shkeptncontext.clone()),
        "triggeredid" => return ev.triggeredid.clone(),
        "gitcommitid" => return ev.gitcommitid.clone(),
        k => {
            let rest = k.strip_prefix("data.")?;
            let mut cur = &ev.data;
            for seg in rest.split('.') {
                cur = cur.get(seg)?;
            }
            cur
        }
    };
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl TypeQuery {
    /// Whether `ev` matches the type, the filter and `fromTime` (not invalidation).
    pub fn matches(&self, ev: &KeptnEvent) -> bool {
        ev.ty == self.ty
            && self.from_time.is_none_or(|t| ev.time > t)
            && self
                .filter
                .iter()
                .all(|t| field_text(ev, &t.key).is_some_and(|v| t.values.contains(&v)))
    }
}

/// Whether an event type invalidates (`*.invalidated`).
pub fn is_invalidation(ty: &str) -> bool {
    ty.ends_with(".invalidated")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev() -> KeptnEvent {
        let mut e = KeptnEvent::new(
            "id1".into(),
            "lighthouse-service",
            "sh.keptn.event.evaluation.finished".into(),
            "ctx",
            json!({"project":"p","stage":"s","service":"svc","result":"pass","evaluation":{"score":90}}),
            Timestamp::from_millis(1000),
        );
        e.triggeredid = Some("t1".into());
        e
    }

    #[test]
    fn filter_syntax_table() {
        let f = parse_filter("data.project:p AND data.result:pass,warning").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].values, vec!["pass", "warning"]);
        for bad in [
            "",
            "data.stage:s",
            "data.project",
            "data.project:",
            "data..x:1 AND data.project:p",
            "x y:1 AND data.project:p",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad:?}");
        }
        assert!(parse_filter("shkeptncontext:c").is_ok());
    }

    #[test]
    fn type_query_matches_paths_any_of_and_time() {
        let e = ev();
        let q = |filter: &str, from: Option<i64>| TypeQuery {
            ty: e.ty.clone(),
            filter: parse_filter(filter).unwrap(),
            exclude_invalidated: false,
            from_time: from.map(Timestamp::from_millis),
            limit: 20,
        };
        assert!(q("data.project:p AND data.result:pass,warning", None).matches(&e));
        assert!(!q("data.project:p AND data.result:fail", None).matches(&e));
        assert!(q("data.project:p AND data.evaluation.score:90", None).matches(&e));
        assert!(q("shkeptncontext:ctx AND triggeredid:t1", None).matches(&e));
        assert!(!q("data.project:p", Some(1000)).matches(&e));
        assert!(q("data.project:p", Some(999)).matches(&e));
    }

    #[test]
    fn event_query_filters_table() {
        let e = ev();
        let base = EventQuery::default();
        assert!(base.matches(&e));
        assert!(EventQuery {
            project: Some("p".into()),
            keptn_context: Some("ctx".into()),
            ..base.clone()
        }
        .matches(&e));
        assert!(!EventQuery {
            stage: Some("x".into()),
            ..base.clone()
        }
        .matches(&e));
        assert!(!EventQuery {
            before_time: Some(Timestamp::from_millis(1000)),
            ..base.clone()
        }
        .matches(&e));
        assert!(EventQuery {
            before_time: Some(Timestamp::from_millis(1001)),
            ..base.clone()
        }
        .matches(&e));
        assert!(!EventQuery {
            source: Some("x".into()),
            ..base
        }
        .matches(&e));
    }

    #[test]
    fn page_parameters_are_checked() {
        assert_eq!(parse_page_size("pageSize", None, 100), Ok(20));
        assert_eq!(parse_page_size("pageSize", Some("100"), 100), Ok(100));
        assert!(parse_page_size("pageSize", Some("0"), 100).is_err());
        assert!(parse_page_size("pageSize", Some("101"), 100).is_err());
        assert!(parse_page_size("pageSize", Some("x"), 100).is_err());
        assert_eq!(parse_page_key(Some("40")), Ok(40));
        assert!(parse_page_key(Some("-1")).is_err());
    }
}
