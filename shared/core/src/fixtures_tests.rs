//! Round-trips every payload in `events-fixtures/` and checks the API rules on them.

use crate::event::{normalize_ingress, validate_for_api, KeptnEvent};
use crate::Timestamp;

const FIXTURES: &[(&str, &str)] = &[
    (
        "delivery.triggered",
        include_str!("../../../events-fixtures/delivery.triggered.json"),
    ),
    (
        "deployment.triggered",
        include_str!("../../../events-fixtures/deployment.triggered.json"),
    ),
    (
        "deployment.finished",
        include_str!("../../../events-fixtures/deployment.finished.json"),
    ),
    (
        "evaluation.finished.rest",
        include_str!("../../../events-fixtures/evaluation.finished.rest.json"),
    ),
    (
        "approval.finished",
        include_str!("../../../events-fixtures/approval.finished.json"),
    ),
];

#[test]
fn every_fixture_round_trips() {
    for (name, text) in FIXTURES {
        let mut ev =
            KeptnEvent::parse_untrusted(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        normalize_ingress(&mut ev, Timestamp::from_millis(1_700_000_000_000));
        let json = ev.to_json();
        let back: KeptnEvent =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, ev, "{name}");
        let again = KeptnEvent::parse_untrusted(json.as_bytes()).unwrap();
        assert_eq!(again.data, ev.data, "{name}");
        assert_eq!(again.extensions, ev.extensions, "{name}");
    }
}

#[test]
fn fixtures_meet_the_api_rules_except_the_controller_only_task_trigger() {
    for (name, text) in FIXTURES {
        let ev = KeptnEvent::parse_untrusted(text.as_bytes()).unwrap();
        let verdict = validate_for_api(&ev);
        if *name == "deployment.triggered" {
            assert!(verdict.is_err(), "clients cannot inject task triggers");
        } else {
            verdict.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

#[test]
fn the_rest_shape_keeps_its_extensions() {
    let ev = KeptnEvent::parse_untrusted(FIXTURES[3].1.as_bytes()).unwrap();
    assert!(ev.extensions.contains_key("traceparent"));
    assert_eq!(ev.datacontenttype.as_deref(), Some("application/json"));
    assert_eq!(
        ev.data["evaluation"]["indicatorResults"][0]["passTargets"][0]["targetValue"],
        220
    );
}
