//! The datastore: [`EventStore`].

use crate::fixtures::*;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::EventStore;
use keelson_core::query::{parse_filter, EventQuery, TypeQuery, DEFAULT_PAGE_SIZE};
use serde_json::json;

/// Ids already stored are skipped (in and across batches) and counted as not new; the
/// first stored version is kept; a stored event reads back equal, extensions included.
pub async fn duplicate_event_ids_are_stored_once<S: EventStore>(s: &S) {
    let mut a = ev("a", DEPLOYMENT_FINISHED, "c1", ("p", "dev", "carts"), 1000);
    a.triggeredid = Some("trig".into());
    a.gitcommitid = Some("commit".into());
    a.data["result"] = json!("pass");
    a.data["nested"] = json!({"list": [1, 2.5, "x", null, true], "empty": {}});
    a.extensions
        .insert("traceparent".into(), json!("00-abc-def-01"));
    let b = ev("b", DEPLOYMENT_TRIGGERED, "c1", ("p", "dev", "carts"), 2000);
    let c = ev("c", DEPLOYMENT_TRIGGERED, "c2", ("p", "dev", "carts"), 3000);

    assert_eq!(s.insert_events(&[a.clone(), b.clone()]).await.unwrap(), 2);
    let mut b_again = b.clone();
    b_again.source = "someone-else".into();
    assert_eq!(
        s.insert_events(&[b_again, c.clone(), c.clone()])
            .await
            .unwrap(),
        1,
        "only c is new, and only once"
    );
    assert_eq!(s.insert_events(&[]).await.unwrap(), 0);

    let page = s.query_events(&all()).await.unwrap();
    assert_eq!(page.total_count, 3);
    assert_eq!(page.next_offset, None);
    assert_eq!(
        page.events,
        vec![c, b, a],
        "events read back as stored, the first b kept"
    );
}

/// Six events across contexts, types, projects, stages, services and sources.
fn filter_fixture() -> Vec<KeptnEvent> {
    let mut e = vec![
        ev(
            "e1",
            DEPLOYMENT_TRIGGERED,
            "c1",
            ("p1", "dev", "carts"),
            1000,
        ),
        ev(
            "e2",
            DEPLOYMENT_FINISHED,
            "c1",
            ("p1", "dev", "carts"),
            2000,
        ),
        ev(
            "e3",
            DEPLOYMENT_TRIGGERED,
            "c2",
            ("p1", "prod", "carts"),
            3000,
        ),
        ev(
            "e4",
            "sh.keptn.event.test.finished",
            "c3",
            ("p2", "dev", "orders"),
            4000,
        ),
        ev(
            "e5",
            EVALUATION_FINISHED,
            "c3",
            ("p2", "dev", "carts"),
            5000,
        ),
        ev("e6", "sh.keptn.log.error", "c4", ("", "", ""), 6000),
    ];
    e[1].source = "helm-service".into();
    e[4].source = "lighthouse-service".into();
    e
}

/// `keptn_context`, `ty`, `project`, `stage`, `service`, `event_id` and `source` each
/// filter exactly, alone and together; `total_count` counts the matches.
pub async fn every_event_query_filter_narrows_the_results<S: EventStore>(s: &S) {
    insert(s, &filter_fixture()).await;
    let q = all;
    let s_ = |v: &str| Some(v.to_string());
    let cases: Vec<(EventQuery, Vec<&str>)> = vec![
        (q(), vec!["e6", "e5", "e4", "e3", "e2", "e1"]),
        (
            EventQuery {
                keptn_context: s_("c1"),
                ..q()
            },
            vec!["e2", "e1"],
        ),
        (
            EventQuery {
                ty: s_(DEPLOYMENT_TRIGGERED),
                ..q()
            },
            vec!["e3", "e1"],
        ),
        (
            EventQuery {
                project: s_("p2"),
                ..q()
            },
            vec!["e5", "e4"],
        ),
        (
            EventQuery {
                stage: s_("dev"),
                ..q()
            },
            vec!["e5", "e4", "e2", "e1"],
        ),
        (
            EventQuery {
                service: s_("carts"),
                ..q()
            },
            vec!["e5", "e3", "e2", "e1"],
        ),
        (
            EventQuery {
                event_id: s_("e3"),
                ..q()
            },
            vec!["e3"],
        ),
        (
            EventQuery {
                source: s_("helm-service"),
                ..q()
            },
            vec!["e2"],
        ),
        (
            EventQuery {
                project: s_("p1"),
                stage: s_("dev"),
                ty: s_(DEPLOYMENT_FINISHED),
                ..q()
            },
            vec!["e2"],
        ),
        (
            EventQuery {
                keptn_context: s_("c1"),
                ty: s_(DEPLOYMENT_TRIGGERED),
                ..q()
            },
            vec!["e1"],
        ),
        (
            EventQuery {
                keptn_context: s_("c3"),
                service: s_("carts"),
                ..q()
            },
            vec!["e5"],
        ),
        (
            EventQuery {
                event_id: s_("e4"),
                keptn_context: s_("c3"),
                ..q()
            },
            vec!["e4"],
        ),
        (
            EventQuery {
                event_id: s_("e4"),
                keptn_context: s_("c1"),
                ..q()
            },
            vec![],
        ),
        (
            EventQuery {
                project: s_("p1"),
                source: s_("lighthouse-service"),
                ..q()
            },
            vec![],
        ),
        (
            EventQuery {
                project: s_("nope"),
                ..q()
            },
            vec![],
        ),
    ];
    for (query, want) in cases {
        let page = s.query_events(&query).await.unwrap();
        assert_eq!(ids(&page.events), want, "{query:?}");
        assert_eq!(page.total_count, want.len(), "total_count of {query:?}");
        assert_eq!(page.next_offset, None, "{query:?}");
    }
}

/// `from_time` and `before_time` exclude their bounds.
pub async fn time_bounds_are_exclusive<S: EventStore>(s: &S) {
    insert(
        s,
        &[
            ev("t1", DEPLOYMENT_TRIGGERED, "c", ("p", "dev", "svc"), 1000),
            ev("t2", DEPLOYMENT_TRIGGERED, "c", ("p", "dev", "svc"), 2000),
            ev("t3", DEPLOYMENT_TRIGGERED, "c", ("p", "dev", "svc"), 3000),
        ],
    )
    .await;
    let q = |from: Option<i64>, before: Option<i64>| EventQuery {
        from_time: from.map(t),
        before_time: before.map(t),
        ..all()
    };
    assert_eq!(query_ids(s, q(Some(1000), None)).await, ["t3", "t2"]);
    assert_eq!(query_ids(s, q(Some(999), None)).await, ["t3", "t2", "t1"]);
    assert_eq!(query_ids(s, q(None, Some(3000))).await, ["t2", "t1"]);
    assert_eq!(query_ids(s, q(None, Some(3001))).await, ["t3", "t2", "t1"]);
    assert_eq!(query_ids(s, q(Some(1000), Some(3000))).await, ["t2"]);
    assert_eq!(
        query_ids(s, q(Some(3000), None)).await,
        Vec::<String>::new()
    );
    assert_eq!(
        query_ids(s, q(Some(2000), Some(2001))).await,
        Vec::<String>::new()
    );
    let page = s
        .query_events(&EventQuery {
            keptn_context: Some("c".into()),
            ..q(Some(1000), None)
        })
        .await
        .unwrap();
    assert_eq!(page.total_count, 2);
}

/// `root` keeps the earliest event of each context (the first stored on equal
/// times), among those passing the other filters; an earlier event stored later
/// becomes the root.
pub async fn root_events_are_the_earliest_of_each_context<S: EventStore>(s: &S) {
    let p1 = ("p1", "dev", "svc");
    // c1: the root arrives second.
    insert(s, &[ev("c1-late", DEPLOYMENT_FINISHED, "c1", p1, 2000)]).await;
    insert(s, &[ev("c1-early", DEPLOYMENT_TRIGGERED, "c1", p1, 1000)]).await;
    // c2: equal times; the first stored is the root (not the smallest id).
    insert(s, &[ev("c2-b", DEPLOYMENT_TRIGGERED, "c2", p1, 1500)]).await;
    insert(s, &[ev("c2-a", DEPLOYMENT_TRIGGERED, "c2", p1, 1500)]).await;
    // c3: another project.
    insert(
        s,
        &[ev(
            "c3-root",
            EVALUATION_FINISHED,
            "c3",
            ("p2", "dev", "svc"),
            500,
        )],
    )
    .await;
    // c4: both in one batch, the later first.
    insert(
        s,
        &[
            ev("c4-second", DEPLOYMENT_FINISHED, "c4", p1, 900),
            ev("c4-first", DEPLOYMENT_TRIGGERED, "c4", p1, 800),
            ev("c4-tie", DEPLOYMENT_TRIGGERED, "c4", p1, 800),
        ],
    )
    .await;
    // Same time as the root, stored later: not the root.
    insert(s, &[ev("c1-a-tie", DEPLOYMENT_TRIGGERED, "c1", p1, 1000)]).await;

    let root = |q: EventQuery| EventQuery { root: true, ..q };
    let page = s.query_events(&root(all())).await.unwrap();
    assert_eq!(
        ids(&page.events),
        ["c2-b", "c1-early", "c4-first", "c3-root"]
    );
    assert_eq!(page.total_count, 4);
    assert_eq!(
        query_ids(
            s,
            root(EventQuery {
                project: Some("p1".into()),
                ..all()
            })
        )
        .await,
        ["c2-b", "c1-early", "c4-first"]
    );
    assert_eq!(
        query_ids(
            s,
            root(EventQuery {
                keptn_context: Some("c1".into()),
                ..all()
            })
        )
        .await,
        ["c1-early"]
    );
    assert_eq!(
        query_ids(
            s,
            root(EventQuery {
                ty: Some(DEPLOYMENT_FINISHED.into()),
                ..all()
            })
        )
        .await,
        Vec::<String>::new(),
        "no root is a deployment.finished"
    );
    assert_eq!(
        query_ids(
            s,
            root(EventQuery {
                from_time: Some(t(900)),
                ..all()
            })
        )
        .await,
        ["c2-b", "c1-early"]
    );
    let page = s
        .query_events(&EventQuery {
            page_size: 2,
            offset: 2,
            ..root(all())
        })
        .await
        .unwrap();
    assert_eq!(ids(&page.events), ["c4-first", "c3-root"]);
    assert_eq!((page.total_count, page.next_offset), (4, None));
}

/// Newest first; of events with equal times the later stored is the newer
/// (the effects of one step share their time and are stored in causal order).
/// Type queries use the same order.
pub async fn events_come_newest_first_with_ties_in_reverse_storage_order<S: EventStore>(s: &S) {
    let x = ("p", "dev", "svc");
    insert(
        s,
        &[
            ev("m-1", DEPLOYMENT_TRIGGERED, "c", x, 1000),
            ev("m-3", DEPLOYMENT_TRIGGERED, "c", x, 1000),
            ev("m-0", DEPLOYMENT_TRIGGERED, "c", x, 2000),
        ],
    )
    .await;
    insert(
        s,
        &[
            ev("m-2", DEPLOYMENT_TRIGGERED, "c", x, 1000),
            ev("m-4", DEPLOYMENT_TRIGGERED, "c", x, 500),
        ],
    )
    .await;
    let want = ["m-0", "m-2", "m-3", "m-1", "m-4"];
    assert_eq!(query_ids(s, all()).await, want);
    let by_type = s
        .query_by_type(&type_query(DEPLOYMENT_TRIGGERED, "data.project:p"))
        .await
        .unwrap();
    assert_eq!(ids(&by_type), want);
    let page = s
        .query_events(&EventQuery {
            page_size: 2,
            offset: 1,
            ..all()
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&page.events),
        ["m-2", "m-3"],
        "ties are split across pages consistently"
    );
}

/// `offset` and `page_size` walk the matches; `next_offset` is set while more
/// exist; `total_count` is the number of matches on every page.
pub async fn pages_are_walked_by_offset_with_a_total_count<S: EventStore>(s: &S) {
    let mine: Vec<KeptnEvent> = (0..25)
        .map(|i| {
            ev(
                &format!("e{i:02}"),
                DEPLOYMENT_TRIGGERED,
                &format!("c{i}"),
                ("p", "dev", "svc"),
                1000 + i,
            )
        })
        .collect();
    let others: Vec<KeptnEvent> = (0..5)
        .map(|i| {
            ev(
                &format!("o{i}"),
                DEPLOYMENT_TRIGGERED,
                "co",
                ("other", "dev", "svc"),
                1000 + i,
            )
        })
        .collect();
    insert(s, &mine).await;
    insert(s, &others).await;
    let q = |offset: usize, page_size: usize| EventQuery {
        project: Some("p".into()),
        offset,
        page_size,
        ..EventQuery::default()
    };
    let want = |from: i64, to: i64| -> Vec<String> {
        (to..=from).rev().map(|i| format!("e{i:02}")).collect()
    };

    let p1 = s.query_events(&q(0, 10)).await.unwrap();
    assert_eq!(ids(&p1.events), want(24, 15));
    assert_eq!((p1.total_count, p1.next_offset), (25, Some(10)));
    let p2 = s.query_events(&q(10, 10)).await.unwrap();
    assert_eq!(ids(&p2.events), want(14, 5));
    assert_eq!((p2.total_count, p2.next_offset), (25, Some(20)));
    let p3 = s.query_events(&q(20, 10)).await.unwrap();
    assert_eq!(ids(&p3.events), want(4, 0));
    assert_eq!((p3.total_count, p3.next_offset), (25, None));

    let exact_end = s.query_events(&q(15, 10)).await.unwrap();
    assert_eq!(ids(&exact_end.events), want(9, 0));
    assert_eq!((exact_end.total_count, exact_end.next_offset), (25, None));
    let past_end = s.query_events(&q(30, 10)).await.unwrap();
    assert!(past_end.events.is_empty());
    assert_eq!((past_end.total_count, past_end.next_offset), (25, None));
    let everything = s
        .query_events(&EventQuery {
            page_size: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(everything.total_count, 30);
}

/// A `page_size` of 0 (as in `EventQuery::default()`) means [`DEFAULT_PAGE_SIZE`].
pub async fn a_zero_page_size_means_the_default_page_size<S: EventStore>(s: &S) {
    let evs: Vec<KeptnEvent> = (0..25)
        .map(|i| {
            ev(
                &format!("e{i:02}"),
                DEPLOYMENT_TRIGGERED,
                "c",
                ("p", "dev", "svc"),
                i,
            )
        })
        .collect();
    insert(s, &evs).await;
    let page = s.query_events(&EventQuery::default()).await.unwrap();
    assert_eq!(page.events.len(), DEFAULT_PAGE_SIZE);
    assert_eq!(
        (page.total_count, page.next_offset),
        (25, Some(DEFAULT_PAGE_SIZE))
    );
}

fn type_query(ty: &str, filter: &str) -> TypeQuery {
    TypeQuery {
        ty: ty.into(),
        filter: parse_filter(filter).expect("filter"),
        exclude_invalidated: false,
        from_time: None,
        limit: 100,
    }
}

/// Filter terms are ANDed; a term matches any of its values; keys are the
/// top-level attributes or `data.` paths at any depth, compared as text
/// (numbers and booleans as their JSON text); objects, arrays and missing paths never match.
pub async fn type_queries_match_any_of_the_values_at_any_path<S: EventStore>(s: &S) {
    let mut v1 = ev(
        "v1",
        EVALUATION_FINISHED,
        "c1",
        ("p1", "dev", "carts"),
        1000,
    );
    v1.data["result"] = json!("pass");
    v1.data["evaluation"] = json!({"score": 90, "passed": true, "time-frame": "5m", "list": ["a"]});
    v1.triggeredid = Some("t1".into());
    v1.gitcommitid = Some("g1".into());
    v1.source = "lighthouse-service".into();
    let mut v2 = ev(
        "v2",
        EVALUATION_FINISHED,
        "c2",
        ("p1", "dev", "carts"),
        2000,
    );
    v2.data["result"] = json!("warning");
    v2.data["evaluation"] = json!({"score": 75.5, "passed": false});
    v2.triggeredid = Some("t2".into());
    let mut v3 = ev(
        "v3",
        EVALUATION_FINISHED,
        "c3",
        ("p1", "prod", "carts"),
        3000,
    );
    v3.data["result"] = json!("fail");
    v3.data["evaluation"] = json!({"score": 10});
    v3.triggeredid = Some("t3".into());
    let mut v4 = ev(
        "v4",
        EVALUATION_FINISHED,
        "c4",
        ("p2", "dev", "orders"),
        4000,
    );
    v4.data["result"] = json!("pass");
    let mut other = ev(
        "x5",
        DEPLOYMENT_FINISHED,
        "c1",
        ("p1", "dev", "carts"),
        5000,
    );
    other.data["result"] = json!("pass");
    insert(s, &[v1, v2, v3, v4, other]).await;

    let cases: &[(&str, &[&str])] = &[
        ("data.project:p1", &["v3", "v2", "v1"]),
        ("data.project:p1,p2", &["v4", "v3", "v2", "v1"]),
        (
            "data.project:p1 AND data.result:pass,warning",
            &["v2", "v1"],
        ),
        (
            "data.project:p1 AND data.result:pass AND data.stage:prod",
            &[],
        ),
        ("data.project:p1 AND data.stage:prod", &["v3"]),
        ("data.project:p2 AND data.service:orders", &["v4"]),
        ("data.project:p1 AND data.evaluation.score:90", &["v1"]),
        (
            "data.project:p1 AND data.evaluation.score:75.5,10",
            &["v3", "v2"],
        ),
        ("data.project:p1 AND data.evaluation.passed:true", &["v1"]),
        ("data.project:p1 AND data.evaluation.passed:false", &["v2"]),
        ("data.project:p1 AND data.evaluation.time-frame:5m", &["v1"]),
        ("data.project:p1 AND data.evaluation:x", &[]),
        ("data.project:p1 AND data.evaluation.list:a", &[]),
        ("data.project:p1 AND data.evaluation.missing:x", &[]),
        ("data.project:p1 AND data.result.deeper:x", &[]),
        ("shkeptncontext:c1", &["v1"]),
        ("shkeptncontext:c1,c3", &["v3", "v1"]),
        ("shkeptncontext:c1,c3 AND data.result:fail", &["v3"]),
        ("data.project:p1 AND triggeredid:t2", &["v2"]),
        ("data.project:p1 AND id:v3,v4", &["v3"]),
        ("data.project:p1 AND source:lighthouse-service", &["v1"]),
        ("data.project:p1 AND gitcommitid:g1", &["v1"]),
        (
            "data.project:p2 AND type:sh.keptn.event.evaluation.finished",
            &["v4"],
        ),
        ("data.project:p1 AND unknownattribute:x", &[]),
    ];
    for (filter, want) in cases {
        let got = s
            .query_by_type(&type_query(EVALUATION_FINISHED, filter))
            .await
            .unwrap();
        assert_eq!(ids(&got), *want, "filter {filter:?}");
    }
    let got = s
        .query_by_type(&type_query(DEPLOYMENT_FINISHED, "data.project:p1"))
        .await
        .unwrap();
    assert_eq!(ids(&got), ["x5"], "only the asked type");
}

/// `from_time` is exclusive; newest first; at most `limit`.
pub async fn type_queries_are_newest_first_after_from_time_and_limited<S: EventStore>(s: &S) {
    let evs: Vec<KeptnEvent> = [1000, 2000, 3000, 4000, 5000, 3000]
        .iter()
        .enumerate()
        .map(|(i, ms)| {
            ev(
                &format!("k{i}"),
                EVALUATION_FINISHED,
                "c",
                ("p", "dev", "svc"),
                *ms,
            )
        })
        .collect();
    insert(s, &evs).await;
    let q = |from: Option<i64>, limit: usize| TypeQuery {
        from_time: from.map(t),
        limit,
        ..type_query(EVALUATION_FINISHED, "data.project:p")
    };
    let got = |r: Vec<KeptnEvent>| r.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        got(s.query_by_type(&q(None, 100)).await.unwrap()),
        ["k4", "k3", "k5", "k2", "k1", "k0"]
    );
    assert_eq!(
        got(s.query_by_type(&q(Some(2000), 100)).await.unwrap()),
        ["k4", "k3", "k5", "k2"]
    );
    assert_eq!(
        got(s.query_by_type(&q(Some(2000), 3)).await.unwrap()),
        ["k4", "k3", "k5"]
    );
    assert_eq!(got(s.query_by_type(&q(None, 1)).await.unwrap()), ["k4"]);
    assert!(s
        .query_by_type(&q(Some(5000), 100))
        .await
        .unwrap()
        .is_empty());
}

/// `exclude_invalidated` drops events whose `triggeredid` is the `triggeredid`
/// of any stored `*.invalidated` event, whatever its project.
pub async fn events_answering_an_invalidated_trigger_can_be_excluded<S: EventStore>(s: &S) {
    let p = ("p1", "dev", "svc");
    let with_trigger =
        |id: &str, ty: &str, project: (&str, &str, &str), trig: Option<&str>, ms: i64| {
            let mut e = ev(id, ty, &format!("ctx-{id}"), project, ms);
            e.triggeredid = trig.map(String::from);
            e
        };
    insert(
        s,
        &[
            with_trigger("f1", EVALUATION_FINISHED, p, Some("tA"), 1000),
            with_trigger("f2", EVALUATION_FINISHED, p, Some("tB"), 2000),
            with_trigger("f3", EVALUATION_FINISHED, p, None, 3000),
            with_trigger("f4", EVALUATION_FINISHED, p, Some("tC"), 5000),
            with_trigger(
                "inv",
                EVALUATION_INVALIDATED,
                ("elsewhere", "", ""),
                Some("tA"),
                4000,
            ),
            with_trigger(
                "not-inv",
                "sh.keptn.event.test.finished",
                p,
                Some("tC"),
                6000,
            ),
        ],
    )
    .await;
    let q = |exclude: bool| TypeQuery {
        exclude_invalidated: exclude,
        ..type_query(EVALUATION_FINISHED, "data.project:p1")
    };
    assert_eq!(
        ids(&s.query_by_type(&q(false)).await.unwrap()),
        ["f4", "f3", "f2", "f1"]
    );
    assert_eq!(
        ids(&s.query_by_type(&q(true)).await.unwrap()),
        ["f4", "f3", "f2"]
    );

    insert(
        s,
        &[with_trigger(
            "inv2",
            EVALUATION_INVALIDATED,
            p,
            Some("tB"),
            500,
        )],
    )
    .await;
    assert_eq!(
        ids(&s.query_by_type(&q(true)).await.unwrap()),
        ["f4", "f3"],
        "an invalidation of any time counts"
    );
    let limited = TypeQuery {
        limit: 1,
        ..q(true)
    };
    assert_eq!(ids(&s.query_by_type(&limited).await.unwrap()), ["f4"]);
}

/// `purge_events` deletes events with `time < before` and counts them; a context
/// whose root was purged gets its next-oldest event as root.
pub async fn purging_deletes_older_events_and_moves_the_root<S: EventStore>(s: &S) {
    let p = ("p", "dev", "svc");
    insert(
        s,
        &[
            ev("c1-first", DEPLOYMENT_TRIGGERED, "c1", p, 1000),
            ev("c1-z", DEPLOYMENT_TRIGGERED, "c1", p, 2000),
            ev("c1-y", DEPLOYMENT_TRIGGERED, "c1", p, 2000),
            ev("c1-last", DEPLOYMENT_TRIGGERED, "c1", p, 3000),
            ev("c2-only", DEPLOYMENT_TRIGGERED, "c2", p, 500),
            ev("c3-new", DEPLOYMENT_TRIGGERED, "c3", p, 5000),
        ],
    )
    .await;
    assert_eq!(s.purge_events(t(2000)).await.unwrap(), 2);
    assert_eq!(
        query_ids(s, all()).await,
        ["c3-new", "c1-last", "c1-y", "c1-z"]
    );
    let roots = EventQuery {
        root: true,
        ..all()
    };
    assert_eq!(
        query_ids(s, roots.clone()).await,
        ["c3-new", "c1-z"],
        "c1's root moves to its first stored oldest"
    );
    assert_eq!(s.purge_events(t(2000)).await.unwrap(), 0);

    // The purged ids may be stored again; roots follow.
    insert(s, &[ev("c2-only", DEPLOYMENT_TRIGGERED, "c2", p, 4000)]).await;
    insert(s, &[ev("c1-new-root", DEPLOYMENT_TRIGGERED, "c1", p, 1500)]).await;
    assert_eq!(
        query_ids(s, roots.clone()).await,
        ["c3-new", "c2-only", "c1-new-root"]
    );

    assert_eq!(s.purge_events(t(10_000)).await.unwrap(), 6);
    let page = s.query_events(&roots).await.unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.total_count, 0);
}
