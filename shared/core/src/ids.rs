//! Deterministic event ids: an emitted event's id is derived from the id of the
//! event that caused it, so re-running a handler after a crash re-emits the
//! *same* events and downstream consumers dedupe them (DESIGN.md, rule 2).

use uuid::Uuid;

/// Namespace of every id Keelson derives.
pub const KEELSON_NAMESPACE: Uuid = Uuid::from_u128(0x6b65_656c_736f_6e00_8000_0000_0000_0001);

/// The id of the `n`-th effect (`purpose`) caused by `cause`.
///
/// A name-based UUID (version 5) of cause and purpose; when the cause is a
/// time-ordered UUID (version 7, or one derived like this), the derived id
/// keeps its 48-bit millisecond prefix (and becomes version 8, RFC 9562's
/// custom layout, with 74 bits of the name's hash). The ids of one chain of
/// events then sort together, near the other recent ones: stores index
/// events, triggers and executions by id, and random ids put every insert on
/// a different index page (BENCHMARKS.md, quality gates).
pub fn derive(cause: &str, purpose: &str) -> String {
    let named = Uuid::new_v5(&KEELSON_NAMESPACE, format!("{cause}/{purpose}").as_bytes());
    match Uuid::parse_str(cause) {
        Ok(c) if matches!(c.get_version_num(), 7 | 8) => {
            let mut b = *named.as_bytes();
            b[..6].copy_from_slice(&c.as_bytes()[..6]);
            b[6] = (b[6] & 0x0f) | 0x80;
            b[8] = (b[8] & 0x3f) | 0x80;
            Uuid::from_bytes(b).to_string()
        }
        _ => named.to_string(),
    }
}

/// A fresh id for events that have no cause (API ingress without a client
/// id) and for new contexts: time-ordered (UUID version 7), so that recent
/// ids share index pages (see [`derive`]).
pub fn random() -> String {
    Uuid::now_v7().to_string()
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
    fn ids_derived_from_time_ordered_ids_keep_their_time_prefix() {
        let root = random();
        let root_uuid = Uuid::parse_str(&root).unwrap();
        assert_eq!(root_uuid.get_version_num(), 7);
        let child = derive(&root, "task/1");
        let grandchild = derive(&child, "finished");
        for id in [&child, &grandchild] {
            let u = Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 8, "{id}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(&u.as_bytes()[..6], &root_uuid.as_bytes()[..6], "{id}");
        }
        assert_eq!(child, derive(&root, "task/1"));
        assert_ne!(child, derive(&root, "task/2"));
        assert_ne!(child, grandchild);
        // Other causes (client ids, random UUIDs) give name-based UUIDs.
        let v4 = "9b1c0000-0000-4000-8000-000000000001";
        assert_eq!(
            Uuid::parse_str(&derive(v4, "x")).unwrap().get_version_num(),
            5
        );
        assert_eq!(
            Uuid::parse_str(&derive("client-id", "x"))
                .unwrap()
                .get_version_num(),
            5
        );
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
