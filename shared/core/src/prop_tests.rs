//! The parsers never panic, whatever they are given.

use crate::event::{validate_for_api, EventType, KeptnEvent};
use crate::query::parse_filter;
use crate::resource::normalize_uri;
use crate::shipyard::{parse_go_duration, Shipyard};
use proptest::prelude::*;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z.]{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("sh.keptn.event.dev.delivery.triggered"),
            Just("sh.keptn.event.test.finished"),
            Just("1.0"),
            Just("2023-01-01T00:00:00Z")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_string()),
                    Just("data".to_string()),
                    Just("project".to_string()),
                    Just("stage".to_string()),
                    Just("service".to_string()),
                    Just("triggeredid".to_string()),
                    Just("time".to_string()),
                    Just("extensions".to_string()),
                    Just("result".to_string()),
                    Just("status".to_string()),
                    "[a-zA-Z_-]{1,8}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn event_parsing_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(ev) = KeptnEvent::parse_untrusted(&bytes) {
            let _ = validate_for_api(&ev);
        }
    }

    #[test]
    fn event_parsing_never_panics_on_json(v in json_value()) {
        if let Ok(ev) = KeptnEvent::from_untrusted_value(v) {
            let _ = validate_for_api(&ev);
            let _ = EventType::parse(&ev.ty);
            let _ = ev.to_json();
        }
    }

    #[test]
    fn shipyard_parsing_never_panics(text in "\\PC{0,400}") {
        let _ = Shipyard::parse(&text);
    }

    #[test]
    fn shipyard_parsing_never_panics_on_yaml_like_input(
        lines in prop::collection::vec(prop_oneof![
            Just("apiVersion: spec.keptn.sh/0.2.4".to_string()), Just("kind: Shipyard".to_string()), Just("spec:".to_string()),
            Just("  stages:".to_string()), Just("    - name: dev".to_string()), Just("      sequences:".to_string()),
            Just("        - name: delivery".to_string()), Just("          tasks:".to_string()), Just("            - name: t".to_string()),
            Just("              triggeredAfter: 1h".to_string()), Just("          triggeredOn: [{event: a.b.finished}]".to_string()),
            "[ -~]{0,30}"
        ], 0..20)
    ) {
        let _ = Shipyard::parse(&lines.join("\n"));
    }

    #[test]
    fn small_parsers_never_panic(s in "\\PC{0,60}") {
        let _ = parse_go_duration(&s);
        let _ = parse_filter(&s);
        let _ = normalize_uri(&s);
        let _ = crate::Timestamp::parse(&s);
        let _ = crate::project::validate_name("n", &s);
    }
}
