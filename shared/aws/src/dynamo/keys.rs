//! Key construction. Every user-supplied key part is escaped (`%` → `%25`,
//! `#` → `%23`) so `#` always separates parts and prefixes never overlap.

use keelson_core::timestamp::Timestamp;

/// Escapes a key part.
pub(crate) fn esc(s: &str) -> String {
    s.replace('%', "%25").replace('#', "%23")
}

/// A time as 20 digits that sort like the time (negative times too).
pub(crate) fn time_key(t: Timestamp) -> String {
    format!("{:020}", (t.millis() as u64) ^ (1u64 << 63))
}

/// Storage order of an event: time, then storage sequence.
pub(crate) fn ord_key(t: Timestamp, seq: u64) -> String {
    format!("{}#{:020}", time_key(t), seq)
}

/// Sorts after every time key under the same prefix.
pub(crate) const TIME_HIGH: &str = "~";

/// `(low, high)` of a `BETWEEN` on `prefix` + time-keyed sort keys selecting
/// `from < time < before`; `None` when nothing can match. Sort keys are
/// `<prefix><time key>#…`, so `<prefix><time key of before>` sorts before every
/// key of that time and after every earlier one.
pub(crate) fn time_between(
    prefix: &str,
    from: Option<Timestamp>,
    before: Option<Timestamp>,
) -> Option<(String, String)> {
    let lo = from.map_or(i64::MIN, |f| f.millis().saturating_add(1));
    if let Some(b) = before {
        if lo >= b.millis() {
            return None;
        }
    }
    let high = match before {
        Some(b) => time_key(b),
        None => TIME_HIGH.to_string(),
    };
    Some((
        format!("{prefix}{}", time_key(Timestamp::from_millis(lo))),
        format!("{prefix}{high}"),
    ))
}

/// A fresh commit id: 32 lowercase hex digits.
pub(crate) fn commit_id() -> String {
    keelson_core::ids::random().replace('-', "")
}

pub(crate) const EVENT_SK: &str = "EV";
pub(crate) fn event_pk(id: &str) -> String {
    format!("EV#{}", esc(id))
}
pub(crate) fn ctx_pk(ctx: &str) -> String {
    format!("CTX#{}", esc(ctx))
}
pub(crate) const ROOT_SK: &str = "ROOT";
pub(crate) fn project_events_pk(project: &str) -> String {
    format!("PRJ#{}", esc(project))
}
pub(crate) fn type_pk(ty: &str) -> String {
    format!("TYPE#{}", esc(ty))
}
pub(crate) const TYPES_PK: &str = "EVTYPES";
pub(crate) fn type_sk(ty: &str) -> String {
    format!("T#{}", esc(ty))
}
pub(crate) const META_PK: &str = "META";
pub(crate) const SEQ_SK: &str = "EVSEQ";
pub(crate) const INVALIDATIONS_PK: &str = "INVALIDATIONS";
pub(crate) fn invalidation_sk(triggeredid: &str, id: &str) -> String {
    format!("{}#{}", esc(triggeredid), esc(id))
}

pub(crate) const PROJECTS_PK: &str = "PROJECTS";
pub(crate) fn project_sk(name: &str) -> String {
    format!("P#{}", esc(name))
}
/// The partition of everything a project owns.
pub(crate) fn project_pk(name: &str) -> String {
    format!("PROJECT#{}", esc(name))
}
pub(crate) fn commit_id_sk(id: &str) -> String {
    format!("COMMITID#{}", esc(id))
}
pub(crate) fn resource_prefix(scope: &str, uri: Option<&str>) -> String {
    match uri {
        None => format!("RES#{}#", esc(scope)),
        Some(u) => format!("RES#{}#{}#", esc(scope), esc(u)),
    }
}
pub(crate) fn seq_key(seq: u64) -> String {
    format!("{seq:010}")
}
pub(crate) fn blob_prefix(commit: &str, scope: &str, uri: &str) -> String {
    format!("BLOB#{}#{}#{}#", esc(commit), esc(scope), esc(uri))
}
pub(crate) fn chunk_key(i: usize) -> String {
    format!("{i:05}")
}

pub(crate) fn lane_sk(stage: &str, service: &str) -> String {
    format!("LANE#{}#{}", esc(stage), esc(service))
}
pub(crate) const WAKEUP_PK: &str = "WAKEUP";
pub(crate) fn exec_sk(id: &str) -> String {
    format!("EXEC#{}", esc(id))
}
pub(crate) fn open_sk(stage: &str, service: &str, event_id: &str) -> String {
    format!("OPEN#{}#{}#{}", esc(stage), esc(service), esc(event_id))
}
pub(crate) fn open_type_pk(ty: &str) -> String {
    format!("OPEN#{}", esc(ty))
}
pub(crate) fn pause_prefix(ctx: &str) -> String {
    format!("PAUSE#{}#", esc(ctx))
}

pub(crate) fn applied_pk(consumer: &str, cause: &str) -> String {
    format!("APPLIED#{}#{}", esc(consumer), esc(cause))
}
pub(crate) const APPLIED_SK: &str = "APPLIED";
pub(crate) fn applied_consumer_pk(consumer: &str) -> String {
    format!("APPLIEDAT#{}", esc(consumer))
}
/// Applied records are spread over this many `gsi3` partitions (purge reads them all).
pub(crate) const APPLIED_SHARDS: u64 = 8;
pub(crate) fn applied_shard_pk(consumer: &str, cause: &str) -> String {
    // FNV-1a: stable across processes, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in consumer.bytes().chain([0]).chain(cause.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("APPLIED#{}", h % APPLIED_SHARDS)
}
pub(crate) fn effects_sk(i: usize) -> String {
    format!("EFFECTS#{}", chunk_key(i))
}

pub(crate) const INTEGRATIONS_PK: &str = "INTEGRATIONS";
pub(crate) fn integration_sk(id: &str) -> String {
    format!("I#{}", esc(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_like_times() {
        let ts = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for w in ts.windows(2) {
            let (a, b) = (Timestamp::from_millis(w[0]), Timestamp::from_millis(w[1]));
            assert!(time_key(a) < time_key(b), "{w:?}");
            assert!(ord_key(a, 99) < ord_key(b, 1));
        }
        let t = Timestamp::from_millis(5);
        assert!(ord_key(t, 2) < ord_key(t, 10));
    }

    #[test]
    fn escaped_parts_never_contain_the_separator() {
        assert_eq!(esc("a#b%c"), "a%23b%25c");
        assert_ne!(
            resource_prefix("s", Some("a#b")),
            resource_prefix("s#a", Some("b"))
        );
    }

    #[test]
    fn time_ranges_exclude_their_bounds() {
        let t = Timestamp::from_millis;
        let (lo, hi) = time_between("p#", Some(t(10)), Some(t(20))).unwrap();
        let k = |ms: i64| format!("p#{}", ord_key(t(ms), 3));
        assert!(k(10) < lo && lo <= k(11));
        assert!(k(19) <= hi && hi < k(20));
        assert!(time_between("", Some(t(10)), Some(t(11))).is_none());
        let (_, hi) = time_between("", None, None).unwrap();
        assert!(ord_key(t(i64::MAX), u64::MAX) < hi);
    }
}
