//! Deterministic event ids: an emitted event's id is derived from the id of the
//! event that caused it, so re-running a handler after a crash re-emits the
//! *same* events and downstream consumers dedupe them (DESIGN.md, rule 2).

use uuid::Uuid;

/// Namespace of every id Keelson derives.
pub const KEELSON_NAMESPACE: Uuid = Uuid::from_u128(0x6b65_656c_736f_6e00_8000_0000_0000_0001);

/// The id of the `n`-th effect (`purpose`) caused by `cause`.
pub fn derive(cause: &str, purpose: &str) -> String {
    Uuid::new_v5(&KEELSON_NAMESPACE, format!("{cause}/{purpose}").as_bytes()).to_string()
}

/// A fresh random id for events that have no cause (API ingress without a client id).
pub fn random() -> String {
    Uuid::new_v4().to_string()
}

/// Keptn's rule for `shkeptncontext` on ingress: a valid UUID is kept; any other
/// non-empty string becomes a deterministic UUID seeded from it.
pub fn keptn_context_from(s: &str) -> String {
    if let Ok(u) = Uuid::parse_str(s) {
        return u.hyphenated().to_string();
    }
    Uuid::new_v5(&KEELSON_NAMESPACE, format!("shkeptncontext/{s}").as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct_per_purpose() {
        assert_eq!(derive("a", "task/1"), derive("a", "task/1"));
        assert_ne!(derive("a", "task/1"), derive("a", "task/2"));
        assert_ne!(derive("a", "task/1"), derive("b", "task/1"));
    }

    #[test]
    fn keptn_context_keeps_uuids_and_seeds_other_strings() {
        let u = "9b1c0000-0000-4000-8000-000000000001";
        assert_eq!(keptn_context_from(u), u);
        let seeded = keptn_context_from("my-build-42");
        assert!(Uuid::parse_str(&seeded).is_ok());
        assert_eq!(seeded, keptn_context_from("my-build-42"));
    }
}
