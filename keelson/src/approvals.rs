//! `keelson approve` / `keelson decline` / `keelson get approvals`: open
//! approvals (the `approval.triggered` events the shipyard waits on) and a
//! person's answer to one, sent as `approval.finished` through the API — what
//! `keptn send event approval.finished` did, without its prompt.

use crate::client::Client;
use anyhow::{anyhow, bail, Context};
use keelson_core::approval;
use keelson_core::event::KeptnEvent;
use serde_json::Value;

/// `source` of the answers this CLI sends.
pub const SOURCE: &str = "keelson-cli";

/// Which approvals: a project, optionally narrowed to a stage and a service.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Project.
    pub project: String,
    /// Stage.
    pub stage: Option<String>,
    /// Service.
    pub service: Option<String>,
}

impl Scope {
    fn describe(&self) -> String {
        let mut s = format!("project {}", self.project);
        if let Some(st) = &self.stage {
            s.push_str(&format!(", stage {st}"));
        }
        if let Some(sv) = &self.service {
            s.push_str(&format!(", service {sv}"));
        }
        s
    }
}

/// The open approvals in `scope`, oldest first.
pub async fn open(c: &Client, scope: &Scope) -> anyhow::Result<Vec<KeptnEvent>> {
    let mut url = reqwest::Url::parse("http://query/").context("building the query")?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("project", &scope.project);
        if let Some(s) = &scope.stage {
            q.append_pair("stage", s);
        }
        if let Some(s) = &scope.service {
            q.append_pair("service", s);
        }
    }
    let query = url.query().unwrap_or_default().to_string();
    let mut out = vec![];
    let mut next = String::new();
    loop {
        let path = format!(
            "/controlPlane/v1/event/triggered/sh.keptn.event.approval.triggered?{query}&pageSize=100&nextPageKey={next}"
        );
        let v = c.get(&path).await?;
        for e in v
            .get("events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(
                serde_json::from_value(e.clone())
                    .context("the API answered with an unreadable event")?,
            );
        }
        match v.get("nextPageKey").and_then(Value::as_str) {
            Some(k) if !k.is_empty() && k != "0" => next = k.to_string(),
            _ => return Ok(out),
        }
    }
}

/// `data.evaluation.score` of an approval (the evaluation before it), as text.
fn score(e: &KeptnEvent) -> String {
    match e.data.pointer("/evaluation/score") {
        Some(Value::Number(n)) => n.to_string(),
        _ => "-".into(),
    }
}

/// The approvals as a table: id, stage, service, result and score of the
/// task before, keptn context, waiting since.
pub fn table(approvals: &[KeptnEvent]) -> String {
    let rows: Vec<[String; 7]> = approvals
        .iter()
        .map(|e| {
            let r = approval::result_of(&e.data);
            [
                e.id.clone(),
                e.stage().unwrap_or("-").to_string(),
                e.service().unwrap_or("-").to_string(),
                if r.is_empty() {
                    "-".into()
                } else {
                    r.to_string()
                },
                score(e),
                e.shkeptncontext.clone(),
                e.time.to_rfc3339(),
            ]
        })
        .collect();
    let head = [
        "ID",
        "STAGE",
        "SERVICE",
        "RESULT",
        "SCORE",
        "KEPTN CONTEXT",
        "WAITING SINCE",
    ];
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = *w));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(head.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// Answers one open approval in `scope`: the one named by `id`, or the only
/// one open. Returns what to print.
pub async fn answer(
    c: &Client,
    scope: &Scope,
    id: Option<&str>,
    approve: bool,
    message: Option<&str>,
) -> anyhow::Result<String> {
    let open = open(c, scope).await?;
    let trigger = match id {
        Some(id) => open.iter().find(|e| e.id == id).ok_or_else(|| {
            if open.is_empty() {
                anyhow!(
                    "--id: no open approval {id} in {} (none is open)",
                    scope.describe()
                )
            } else {
                anyhow!(
                    "--id: no open approval {id} in {}; open ones:\n{}",
                    scope.describe(),
                    table(&open)
                )
            }
        })?,
        None => match open.as_slice() {
            [] => bail!("no open approval in {}", scope.describe()),
            [one] => one,
            _ => bail!(
                "{} approvals are open in {}; choose one with --id:\n{}",
                open.len(),
                scope.describe(),
                table(&open)
            ),
        },
    };
    let event = approval::answer(trigger, approve, message, SOURCE);
    c.send_event(&event).await?;
    Ok(format!(
        "{} approval {} of {}/{}/{} (keptn context {}, result before: {}, score: {})",
        if approve { "Approved" } else { "Declined" },
        trigger.id,
        trigger.project().unwrap_or("-"),
        trigger.stage().unwrap_or("-"),
        trigger.service().unwrap_or("-"),
        trigger.shkeptncontext,
        Some(approval::result_of(&trigger.data))
            .filter(|r| !r.is_empty())
            .unwrap_or("-"),
        score(trigger)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_core::event::task_type;
    use keelson_core::Timestamp;
    use serde_json::json;

    #[test]
    fn the_table_shows_result_and_score_of_each_approval() {
        let mut a = KeptnEvent::new(
            "a-1".into(),
            "shipyard-controller",
            task_type("approval", "triggered"),
            "ctx-1",
            json!({"project": "p", "stage": "production", "service": "carts",
                   "result": "warning", "evaluation": {"score": 87.5, "result": "warning"}}),
            Timestamp::parse("2026-12-02T10:00:00Z").unwrap(),
        );
        let t = table(std::slice::from_ref(&a));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(lines[0].starts_with("ID  "), "{t}");
        for cell in [
            "a-1",
            "production",
            "carts",
            "warning",
            "87.5",
            "ctx-1",
            "2026-12-02T10:00:00",
        ] {
            assert!(lines[1].contains(cell), "{cell} missing: {t}");
        }
        a.data = json!({"project": "p"});
        let t = table(&[a]);
        assert!(t.lines().nth(1).unwrap().contains(" -  "), "{t}");
    }
}
