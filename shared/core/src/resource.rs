//! Resources (spec §3.5): versioned files per project / stage / service.

use crate::error::CoreError;
use serde::{Deserialize, Serialize};

/// Longest accepted resource URI.
pub const MAX_URI: usize = 1024;

/// Where a resource lives: project level, a stage, or a service in a stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    /// Stage, for stage and service resources.
    pub stage: Option<String>,
    /// Service (needs a stage).
    pub service: Option<String>,
}

impl Scope {
    /// Project level.
    pub fn project() -> Scope {
        Scope::default()
    }

    /// A stable key for storage: `""`, `"stage"` or `"stage/service"`.
    pub fn key(&self) -> String {
        match (&self.stage, &self.service) {
            (None, _) => String::new(),
            (Some(s), None) => s.clone(),
            (Some(s), Some(v)) => format!("{s}/{v}"),
        }
    }

    /// Keptn's `metadata.branch`: the stage, or `master` at project level.
    pub fn branch(&self) -> String {
        self.stage.clone().unwrap_or_else(|| "master".into())
    }
}

/// Checks and normalises a resource URI: relative (a leading `/` is dropped),
/// no `..` or `~` (Keptn's rule), no empty or control-character segments.
pub fn normalize_uri(uri: &str) -> Result<String, CoreError> {
    let u = uri.trim_start_matches('/');
    if u.is_empty() {
        return Err(CoreError::invalid("resourceURI", "must not be empty"));
    }
    if u.len() > MAX_URI {
        return Err(CoreError::invalid(
            "resourceURI",
            format!("must be at most {MAX_URI} characters"),
        ));
    }
    if u.contains("..") || u.contains('~') {
        return Err(CoreError::invalid(
            "resourceURI",
            format!("{uri:?} must not contain '..' or '~'"),
        ));
    }
    if u.chars().any(|c| c.is_control() || c == '\\') || u.split('/').any(str::is_empty) {
        return Err(CoreError::invalid(
            "resourceURI",
            format!("{uri:?} is not a valid relative path"),
        ));
    }
    Ok(u.to_string())
}

/// A change in a commit: new content, or `None` to delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Normalised URI.
    pub uri: String,
    /// Content, or `None` to delete.
    pub content: Option<Vec<u8>>,
}

/// A resource read at a version.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// URI.
    pub uri: String,
    /// Content bytes.
    pub content: Vec<u8>,
    /// Commit id of the version read.
    pub version: String,
}

/// The shipyard's resource URI at project level.
pub const SHIPYARD_URI: &str = "shipyard.yaml";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_rules_table() {
        assert_eq!(normalize_uri("/slo.yaml").unwrap(), "slo.yaml");
        assert_eq!(normalize_uri("helm/carts.tgz").unwrap(), "helm/carts.tgz");
        for bad in [
            "", "/", "../x", "a/../b", "~/x", "a~b", "a//b", "a\\b", "a\u{0}b",
        ] {
            assert!(normalize_uri(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Scope {
                stage: Some("dev".into()),
                service: Some("carts".into())
            }
            .key(),
            "dev/carts"
        );
    }
}
