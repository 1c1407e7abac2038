//! Projects and services, and Keptn's entity-name rules (quirk 2.11-h).

use crate::error::CoreError;
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};

/// Longest project name Keptn accepts.
pub const MAX_PROJECT_NAME: usize = 200;
/// Longest service name Keptn accepts (a Helm release name limit).
pub const MAX_SERVICE_NAME: usize = 43;

/// Keptn's entity-name regex `(^[a-z][a-z0-9-]*[a-z0-9]$)|(^[a-z][a-z0-9]*)` is
/// unanchored in its second branch, so Keptn accepted anything starting with a
/// lowercase letter (`a_B/..`). Keelson applies the first branch fully
/// (lowercase letters, digits, inner dashes): names become paths and URL parts,
/// and a `/` or `..` there must never reach the stores. See docs/compatibility.md.
pub fn validate_name(field: &str, name: &str) -> Result<(), CoreError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && *b.last().unwrap_or(&b'-') != b'-';
    if ok {
        Ok(())
    } else {
        Err(CoreError::invalid(
            field,
            format!("{name:?} is not a valid name: use lowercase letters, digits and inner dashes, starting with a letter"),
        ))
    }
}

/// Validates a project name.
pub fn validate_project_name(name: &str) -> Result<(), CoreError> {
    validate_name("name", name)?;
    if name.len() > MAX_PROJECT_NAME {
        return Err(CoreError::invalid(
            "name",
            format!("must be at most {MAX_PROJECT_NAME} characters"),
        ));
    }
    Ok(())
}

/// Validates a service name.
pub fn validate_service_name(name: &str) -> Result<(), CoreError> {
    validate_name("serviceName", name)?;
    if name.len() > MAX_SERVICE_NAME {
        return Err(CoreError::invalid(
            "serviceName",
            format!("must be at most {MAX_SERVICE_NAME} characters"),
        ));
    }
    Ok(())
}

/// A service; it exists in every stage of its project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Service name.
    pub name: String,
    /// When it was created.
    pub creation_date: Timestamp,
}

/// A project as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    /// Project name.
    pub name: String,
    /// When it was created.
    pub creation_date: Timestamp,
    /// The current shipyard file (YAML text).
    pub shipyard: String,
    /// Its `apiVersion`.
    pub shipyard_version: String,
    /// Stage names in shipyard order.
    pub stages: Vec<String>,
    /// Services, in creation order.
    pub services: Vec<Service>,
    /// Git upstream URL, kept for Keptn clients that show it (no git sync happens).
    #[serde(default)]
    pub git_remote_url: Option<String>,
    /// Git user, kept likewise.
    #[serde(default)]
    pub git_user: Option<String>,
}

impl Project {
    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        for ok in ["a", "sockshop", "carts-db", "a1", "p2p"] {
            validate_name("n", ok).unwrap();
        }
        for bad in ["", "A", "1a", "a-", "-a", "a_b", "a/b", "a..b", "ä", "a b"] {
            assert!(validate_name("n", bad).is_err(), "{bad:?}");
        }
        assert!(validate_service_name(&"a".repeat(44)).is_err());
        assert!(validate_service_name(&"a".repeat(43)).is_ok());
        assert!(validate_project_name(&"a".repeat(201)).is_err());
    }
}
