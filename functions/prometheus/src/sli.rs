//! `prometheus/sli.yaml` (SLI name → PromQL) and `prometheus/config.yaml`
//! (the project's Prometheus URL).

use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;
use std::collections::BTreeMap;
use std::fmt;

/// The SLI definitions' resource URI (prometheus-service's `SliResourceURI`).
pub const SLI_URI: &str = "prometheus/sli.yaml";
/// The per-project connection settings' resource URI (project level only).
pub const CONFIG_URI: &str = "prometheus/config.yaml";

/// Where a resource was read: the levels Keptn's SLI lookup merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Level {
    /// Project level.
    Project(String),
    /// A stage.
    Stage(String),
    /// A service in a stage.
    Service {
        /// Stage.
        stage: String,
        /// Service.
        service: String,
    },
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Project(p) => write!(f, "project {p}"),
            Level::Stage(s) => write!(f, "stage {s}"),
            Level::Service { stage, service } => write!(f, "service {service} in stage {stage}"),
        }
    }
}

/// SLI name → PromQL query, after merging.
pub type Definitions = BTreeMap<String, String>;

#[derive(Debug, Deserialize)]
struct SliFile {
    #[serde(default)]
    indicators: Option<BTreeMap<String, Yaml>>,
}

/// Parses one `sli.yaml`. Scalar queries (`up: 1`) are taken as text, as Go's
/// yaml.v2 did when decoding into `map[string]string`; an empty file has no indicators.
pub fn parse(content: &[u8]) -> Result<Definitions, String> {
    let text = std::str::from_utf8(content).map_err(|e| format!("not UTF-8: {e}"))?;
    if text.trim().is_empty() {
        return Ok(Definitions::new());
    }
    let file: SliFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Definitions::new();
    for (name, q) in file.indicators.unwrap_or_default() {
        let query = match q {
            Yaml::String(s) => s,
            Yaml::Number(n) => n.to_string(),
            Yaml::Bool(b) => b.to_string(),
            Yaml::Null => String::new(),
            _ => return Err(format!("indicators.{name}: the query must be a string")),
        };
        out.insert(name, query);
    }
    Ok(out)
}

/// Merges the files found, least specific first (project < stage < service):
/// a later file's indicators override earlier ones of the same name. `None` when
/// no level has the file. As prometheus-service did, a file that leaves the merged
/// set empty is an error ("missing required field: indicators").
pub fn merge(files: &[(Level, Option<Vec<u8>>)]) -> Result<Option<Definitions>, String> {
    let mut merged: Option<Definitions> = None;
    for (level, content) in files {
        let Some(content) = content else { continue };
        let defs = parse(content).map_err(|e| format!("{SLI_URI} of {level}: {e}"))?;
        let m = merged.get_or_insert_with(Definitions::new);
        m.extend(defs);
        if m.is_empty() {
            return Err(format!(
                "{SLI_URI} of {level}: missing required field: indicators"
            ));
        }
    }
    Ok(merged)
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    url: Option<String>,
}

/// The `url` of a `prometheus/config.yaml`, normalised as prometheus-service
/// normalised the URL of its per-project secret: spaces removed, `https://`
/// assumed when no scheme is given. `None` when the file sets no URL.
pub fn parse_config_url(content: &[u8]) -> Result<Option<String>, String> {
    let text = std::str::from_utf8(content).map_err(|e| format!("not UTF-8: {e}"))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let file: ConfigFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let Some(url) = file
        .url
        .map(|u| u.replace(' ', ""))
        .filter(|u| !u.is_empty())
    else {
        return Ok(None);
    };
    let url = if url.starts_with("http://") || url.starts_with("https://") {
        url
    } else {
        format!("https://{url}")
    };
    check_url(&url)?;
    Ok(Some(url))
}

/// A Prometheus base URL must be an absolute http(s) URL.
pub fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.has_host() => Ok(()),
        Ok(_) => Err(format!("{url:?} is not an http(s) URL")),
        Err(e) => Err(format!("{url:?} is not a valid URL: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defs(pairs: &[(&str, &str)]) -> Definitions {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sli_files_parse_as_keptn_wrote_them() {
        let text = br#"---
spec_version: '1.0'
indicators:
  throughput: "sum(rate(http_requests_total{job='$SERVICE'}[$DURATION_SECONDS]))"
  error_rate: sum(rate(errors[5m]))
  constant: 1
  empty:
"#;
        assert_eq!(
            parse(text).unwrap(),
            defs(&[
                (
                    "throughput",
                    "sum(rate(http_requests_total{job='$SERVICE'}[$DURATION_SECONDS]))"
                ),
                ("error_rate", "sum(rate(errors[5m]))"),
                ("constant", "1"),
                ("empty", ""),
            ])
        );
        assert_eq!(parse(b"  \n").unwrap(), Definitions::new());
        assert_eq!(parse(b"spec_version: '1.0'\n").unwrap(), Definitions::new());
    }

    #[test]
    fn malformed_sli_files_are_reported() {
        assert!(parse(b"indicators: [a, b]").is_err());
        assert_eq!(
            parse(b"indicators:\n  x: [1, 2]\n").unwrap_err(),
            "indicators.x: the query must be a string"
        );
        assert!(parse(b"indicators: {x: 'unterminated").is_err());
        assert!(parse(&[0xff, 0xfe]).unwrap_err().starts_with("not UTF-8"));
    }

    #[test]
    fn service_overrides_stage_overrides_project() {
        let files = vec![
            (
                Level::Project("p".into()),
                Some(b"indicators: {a: pa, b: pb, c: pc}".to_vec()),
            ),
            (
                Level::Stage("dev".into()),
                Some(b"indicators: {b: sb}".to_vec()),
            ),
            (
                Level::Service {
                    stage: "dev".into(),
                    service: "carts".into(),
                },
                Some(b"indicators: {c: vc, d: vd}".to_vec()),
            ),
        ];
        assert_eq!(
            merge(&files).unwrap(),
            Some(defs(&[("a", "pa"), ("b", "sb"), ("c", "vc"), ("d", "vd")]))
        );
        let only_stage = vec![
            (Level::Project("p".into()), None),
            (
                Level::Stage("dev".into()),
                Some(b"indicators: {b: sb}".to_vec()),
            ),
        ];
        assert_eq!(merge(&only_stage).unwrap(), Some(defs(&[("b", "sb")])));
        assert_eq!(merge(&[(Level::Project("p".into()), None)]).unwrap(), None);
    }

    #[test]
    fn merge_errors_name_the_file_and_level() {
        let bad = vec![
            (
                Level::Project("p".into()),
                Some(b"indicators: {a: pa}".to_vec()),
            ),
            (
                Level::Service {
                    stage: "dev".into(),
                    service: "carts".into(),
                },
                Some(b"indicators: [".to_vec()),
            ),
        ];
        let e = merge(&bad).unwrap_err();
        assert!(
            e.starts_with("prometheus/sli.yaml of service carts in stage dev: "),
            "{e}"
        );
        let empty = vec![(
            Level::Stage("dev".into()),
            Some(b"spec_version: '1.0'".to_vec()),
        )];
        assert_eq!(
            merge(&empty).unwrap_err(),
            "prometheus/sli.yaml of stage dev: missing required field: indicators"
        );
    }

    #[test]
    fn config_urls_are_normalised_like_prometheus_service_did() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"url: http://prom:9090", Some("http://prom:9090")),
            (
                b"url: https://prom.example.com/sub/",
                Some("https://prom.example.com/sub/"),
            ),
            (
                b"url: prom.example.com:9090",
                Some("https://prom.example.com:9090"),
            ),
            (b"url: ' http://prom :9090'", Some("http://prom:9090")),
            (b"url: ''", None),
            (b"other: 1", None),
            (b"", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_config_url(input).unwrap().as_deref(),
                *want,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        for bad in [&b"url: [1]"[..], b"url: 'http://'"] {
            assert!(
                parse_config_url(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
