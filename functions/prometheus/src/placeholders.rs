//! The placeholders prometheus-service substituted into an SLI query
//! (its `replaceQueryParameters`), in its order: custom filters first, then
//! `$PROJECT`, `$STAGE`, `$SERVICE`, `$DEPLOYMENT`, `$LABEL.<key>`, and
//! `$DURATION_SECONDS`. Substitution is plain text replacement, as in Go.

use std::collections::BTreeMap;

/// What a query's placeholders are replaced with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placeholders {
    /// `$PROJECT`.
    pub project: String,
    /// `$STAGE`.
    pub stage: String,
    /// `$SERVICE`.
    pub service: String,
    /// `$DEPLOYMENT` (see [`deployment`]).
    pub deployment: String,
    /// `$LABEL.<key>`.
    pub labels: BTreeMap<String, String>,
    /// The SLO's `filter` entries as `get-sli.customFilters`, in order: `$<key>` and `$<KEY>`.
    pub custom_filters: Vec<(String, String)>,
    /// `$DURATION_SECONDS`: end − start in seconds, rounded up.
    pub duration_seconds: i64,
}

/// Keptn's `$DEPLOYMENT`: a `deployment` label wins (prometheus-service's
/// fallback reads the label whenever it exists, even when the event names a
/// deployment — a quirk kept), then `data.deployment`, then `primary`.
pub fn deployment(labels: &BTreeMap<String, String>, data_deployment: Option<&str>) -> String {
    if let Some(l) = labels.get("deployment") {
        return l.clone();
    }
    match data_deployment {
        Some(d) if !d.is_empty() => d.to_string(),
        _ => "primary".to_string(),
    }
}

/// `$DURATION_SECONDS` as prometheus-service computed it: whole seconds, rounded up.
pub fn duration_seconds(start_ms: i64, end_ms: i64) -> i64 {
    (end_ms - start_ms).div_euclid(1000) + i64::from((end_ms - start_ms).rem_euclid(1000) != 0)
}

/// The query with every placeholder replaced.
pub fn substitute(query: &str, p: &Placeholders) -> String {
    let mut q = query.to_string();
    for (key, value) in &p.custom_filters {
        // prometheus-service stripped quotes from filter values before substituting.
        let value = value.replace(['\'', '"'], "");
        q = q.replace(&format!("${key}"), &value);
        q = q.replace(&format!("${}", key.to_uppercase()), &value);
    }
    q = q.replace("$PROJECT", &p.project);
    q = q.replace("$STAGE", &p.stage);
    q = q.replace("$SERVICE", &p.service);
    q = q.replace("$DEPLOYMENT", &p.deployment);
    // Go iterated the label map in random order; longest keys first makes
    // `$LABEL.ab` win over `$LABEL.a` every time.
    let mut labels: Vec<(&String, &String)> = p.labels.iter().collect();
    labels.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
    for (key, value) in labels {
        q = q.replace(&format!("$LABEL.{key}"), value);
    }
    q.replace("$DURATION_SECONDS", &format!("{}s", p.duration_seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders() -> Placeholders {
        Placeholders {
            project: "sockshop".into(),
            stage: "dev".into(),
            service: "carts".into(),
            deployment: "canary".into(),
            labels: [("buildId", "42"), ("build", "7")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            custom_filters: vec![
                ("handler".into(), "'ItemsController'".into()),
                ("Region".into(), "\"eu\"".into()),
            ],
            duration_seconds: 300,
        }
    }

    #[test]
    fn placeholder_substitution_table() {
        let p = placeholders();
        let cases = [
            (
                "sum(rate(http_requests_total{job='$SERVICE-$PROJECT-$STAGE'}[$DURATION_SECONDS]))",
                "sum(rate(http_requests_total{job='carts-sockshop-dev'}[300s]))",
            ),
            ("x{d='$DEPLOYMENT'}", "x{d='canary'}"),
            (
                "x{h='$handler',H='$HANDLER',r='$Region',R='$REGION'}",
                "x{h='ItemsController',H='ItemsController',r='eu',R='eu'}",
            ),
            ("x{b='$LABEL.buildId',c='$LABEL.build'}", "x{b='42',c='7'}"),
            ("$STAGE $STAGE", "dev dev"),
            ("$UNKNOWN $LABEL.nope", "$UNKNOWN $LABEL.nope"),
            ("up", "up"),
        ];
        for (q, want) in cases {
            assert_eq!(substitute(q, &p), want, "{q}");
        }
    }

    #[test]
    fn custom_filters_are_substituted_before_the_built_in_placeholders() {
        let mut p = placeholders();
        p.custom_filters = vec![("service".into(), "from-filter".into())];
        // `$service` and its upper-case form `$SERVICE` both come from the filter.
        assert_eq!(
            substitute("$service/$SERVICE", &p),
            "from-filter/from-filter"
        );
    }

    #[test]
    fn deployment_prefers_the_label_then_the_event_then_primary() {
        let none = BTreeMap::new();
        let label: BTreeMap<String, String> = [("deployment".to_string(), "blue".to_string())]
            .into_iter()
            .collect();
        assert_eq!(deployment(&none, Some("canary")), "canary");
        assert_eq!(deployment(&none, Some("")), "primary");
        assert_eq!(deployment(&none, None), "primary");
        assert_eq!(deployment(&label, Some("canary")), "blue");
        assert_eq!(deployment(&label, None), "blue");
    }

    #[test]
    fn durations_are_whole_seconds_rounded_up() {
        assert_eq!(duration_seconds(0, 300_000), 300);
        assert_eq!(duration_seconds(0, 300_001), 301);
        assert_eq!(duration_seconds(1_000, 76_905), 76);
        assert_eq!(duration_seconds(0, 0), 0);
        assert_eq!(duration_seconds(10_000, 0), -10);
    }
}
