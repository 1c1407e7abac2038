//! Projects, resources and integrations.

use crate::fixtures::*;
use keelson_core::ports::{
    ExecutionFilter, Integration, IntegrationStore, OpenTriggerFilter, ProjectStore, ResourceStore,
    Store, StoreError, Versioned,
};
use keelson_core::query::EventQuery;
use keelson_core::resource::{Change, Resource, Scope, SHIPYARD_URI};
use serde_json::json;

fn put(uri: &str, content: &str) -> Change {
    Change {
        uri: uri.into(),
        content: Some(content.as_bytes().to_vec()),
    }
}

fn delete(uri: &str) -> Change {
    Change {
        uri: uri.into(),
        content: None,
    }
}

fn stage(name: &str) -> Scope {
    Scope {
        stage: Some(name.into()),
        service: None,
    }
}

fn service(stage: &str, service: &str) -> Scope {
    Scope {
        stage: Some(stage.into()),
        service: Some(service.into()),
    }
}

/// The content of a resource as text, `None` when absent.
async fn content<S: ResourceStore>(
    s: &S,
    project: &str,
    scope: &Scope,
    uri: &str,
    at: Option<&str>,
) -> Option<String> {
    s.read_resource(project, scope, uri, at)
        .await
        .expect("read_resource")
        .map(|r| String::from_utf8(r.content).expect("utf-8 content"))
}

fn listing(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(u, c)| (u.to_string(), c.to_string()))
        .collect()
}

/// `create_project` stores the project at version 1 and writes its shipyard as
/// `shipyard.yaml` at project level in the project's first commit, whose id it returns.
pub async fn creating_a_project_commits_its_shipyard<S: ProjectStore + ResourceStore>(s: &S) {
    let p = project("sockshop");
    assert_eq!(s.get_project("sockshop").await.unwrap(), None);
    let commit = s.create_project(&p, t(0)).await.unwrap();
    assert!(
        is_commit_id(&commit),
        "{commit:?} is 32 lowercase hex digits"
    );
    assert_eq!(
        s.get_project("sockshop").await.unwrap(),
        Some(Versioned {
            version: 1,
            value: p.clone()
        })
    );
    assert_eq!(
        s.latest_commit("sockshop").await.unwrap(),
        Some(commit.clone())
    );
    assert_eq!(
        s.read_resource("sockshop", &Scope::project(), SHIPYARD_URI, None)
            .await
            .unwrap(),
        Some(Resource {
            uri: SHIPYARD_URI.into(),
            content: SHIPYARD.as_bytes().to_vec(),
            version: commit.clone(),
        })
    );
    assert_eq!(
        s.list_resources("sockshop", &Scope::project(), None)
            .await
            .unwrap(),
        listing(&[(SHIPYARD_URI, &commit)])
    );
    assert!(s
        .list_resources("sockshop", &stage("dev"), None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.get_project("other").await.unwrap(), None);
}

/// A second `create_project` of a name fails with `AlreadyExists` and changes nothing.
pub async fn creating_an_existing_project_fails<S: ProjectStore + ResourceStore>(s: &S) {
    let p = project("sockshop");
    let commit = s.create_project(&p, t(0)).await.unwrap();
    let mut again = p.clone();
    again.shipyard = "changed".into();
    match s.create_project(&again, t(1)).await {
        Err(StoreError::AlreadyExists(_)) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        s.get_project("sockshop").await.unwrap(),
        Some(Versioned {
            version: 1,
            value: p
        })
    );
    assert_eq!(s.latest_commit("sockshop").await.unwrap(), Some(commit));
    assert_eq!(
        content(s, "sockshop", &Scope::project(), SHIPYARD_URI, None)
            .await
            .as_deref(),
        Some(SHIPYARD)
    );
}

/// `update_project` replaces the project at version + 1 when the version is
/// the expected one, fails with `Conflict` otherwise (`NotFound` when absent),
/// and writes no resource.
pub async fn updating_a_project_is_conditional_on_its_version<S: ProjectStore + ResourceStore>(
    s: &S,
) {
    let p = project("sockshop");
    let commit = s.create_project(&p, t(0)).await.unwrap();
    let mut v2 = p.clone();
    v2.shipyard = "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\n".into();
    v2.stages = vec!["dev".into()];
    v2.git_remote_url = Some("https://example.com/repo.git".into());
    s.update_project(&v2, 1).await.unwrap();
    assert_eq!(
        s.get_project("sockshop").await.unwrap(),
        Some(Versioned {
            version: 2,
            value: v2.clone()
        })
    );

    let mut stale = p.clone();
    stale.git_user = Some("late".into());
    match s.update_project(&stale, 1).await {
        Err(StoreError::Conflict) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    match s.update_project(&stale, 3).await {
        Err(StoreError::Conflict) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(
        s.get_project("sockshop").await.unwrap(),
        Some(Versioned {
            version: 2,
            value: v2.clone()
        })
    );
    assert_not_found(
        s.update_project(&project("absent"), 1).await,
        "update of an absent project",
    );

    assert_eq!(
        s.latest_commit("sockshop").await.unwrap(),
        Some(commit),
        "no commit"
    );
    assert_eq!(
        content(s, "sockshop", &Scope::project(), SHIPYARD_URI, None)
            .await
            .as_deref(),
        Some(SHIPYARD),
        "shipyard.yaml is written by callers, not by update_project"
    );
    s.update_project(&v2, 2).await.unwrap();
    assert_eq!(
        s.get_project("sockshop").await.unwrap().map(|v| v.version),
        Some(3)
    );
}

/// `list_projects` returns every project sorted by name.
pub async fn projects_are_listed_by_name<S: ProjectStore>(s: &S) {
    assert!(s.list_projects().await.unwrap().is_empty());
    for name in ["zeta", "alpha", "mid"] {
        s.create_project(&project(name), t(0)).await.unwrap();
    }
    let names: Vec<String> = s
        .list_projects()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    assert_eq!(s.list_projects().await.unwrap()[0], project("alpha"));
}

/// Fills a project with a resource, a lane with an open trigger and an
/// execution, a pause mark and events.
async fn populate<S: Store>(s: &S, name: &str) -> Lane {
    s.create_project(&project(name), t(0)).await.unwrap();
    s.write_resources(
        name,
        &service("dev", "carts"),
        &[put("slo.yaml", "slo")],
        t(1),
    )
    .await
    .unwrap();
    let mut lane = Lane::new(name, "dev", "carts");
    lane.trigger(s, &format!("{name}-seq"), &format!("{name}-ctx"), 100)
        .await;
    s.set_paused(name, &format!("{name}-ctx"), Some("prod"), true)
        .await
        .unwrap();
    insert(
        s,
        &[
            ev(
                &format!("{name}-e1"),
                DEPLOYMENT_TRIGGERED,
                &format!("{name}-ctx"),
                (name, "dev", "carts"),
                100,
            ),
            ev(
                &format!("{name}-e2"),
                DEPLOYMENT_FINISHED,
                &format!("{name}-ctx"),
                (name, "dev", "carts"),
                200,
            ),
        ],
    )
    .await;
    lane
}

/// `delete_project` removes the project, its resources and commits, lanes,
/// executions, open triggers, pause marks and events (the roots of their
/// contexts move to what remains); false when absent. The name can be reused.
pub async fn deleting_a_project_removes_everything_of_it<S: Store>(s: &S) {
    let doomed = populate(s, "doomed").await;
    let kept = populate(s, "kept").await;
    // An event of the doomed context without a project survives and becomes the root.
    insert(
        s,
        &[ev(
            "unscoped",
            "sh.keptn.log.error",
            "doomed-ctx",
            ("", "", ""),
            300,
        )],
    )
    .await;

    assert!(s.delete_project("doomed").await.unwrap());
    assert!(!s.delete_project("doomed").await.unwrap());
    assert!(!s.delete_project("never").await.unwrap());

    assert_eq!(s.get_project("doomed").await.unwrap(), None);
    let names: Vec<String> = s
        .list_projects()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["kept"]);
    assert_eq!(s.latest_commit("doomed").await.unwrap(), None);
    assert_eq!(
        content(s, "doomed", &Scope::project(), SHIPYARD_URI, None).await,
        None
    );
    assert_eq!(
        content(s, "doomed", &service("dev", "carts"), "slo.yaml", None).await,
        None
    );
    assert!(s
        .list_resources("doomed", &service("dev", "carts"), None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.load_lane(&doomed.key).await.unwrap(), None);
    let execs = |p: &str| ExecutionFilter {
        project: p.into(),
        ..ExecutionFilter::default()
    };
    assert!(s
        .list_executions(&execs("doomed"))
        .await
        .unwrap()
        .is_empty());
    let open = |p: &str| OpenTriggerFilter {
        ty: DEPLOYMENT_TRIGGERED.into(),
        project: Some(p.into()),
        ..OpenTriggerFilter::default()
    };
    assert!(s.open_triggers(&open("doomed")).await.unwrap().is_empty());
    assert!(!s.is_paused("doomed", "doomed-ctx", "prod").await.unwrap());
    assert!(s
        .due_lanes(t(i64::from(i32::MAX)))
        .await
        .unwrap()
        .iter()
        .all(|k| k.project != "doomed"));
    assert_eq!(
        query_ids(
            s,
            EventQuery {
                project: Some("doomed".into()),
                ..all()
            }
        )
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        query_ids(
            s,
            EventQuery {
                keptn_context: Some("doomed-ctx".into()),
                root: true,
                ..all()
            }
        )
        .await,
        ["unscoped"]
    );

    // The other project is untouched.
    assert_eq!(
        s.get_project("kept").await.unwrap().map(|v| v.version),
        Some(1)
    );
    assert_eq!(
        content(s, "kept", &service("dev", "carts"), "slo.yaml", None)
            .await
            .as_deref(),
        Some("slo")
    );
    assert_eq!(
        s.load_lane(&kept.key).await.unwrap().map(|v| v.value),
        Some(kept.state.clone())
    );
    assert_eq!(
        s.list_executions(&execs("kept")).await.unwrap(),
        kept.state.executions
    );
    assert_eq!(s.open_triggers(&open("kept")).await.unwrap().len(), 1);
    assert!(s.is_paused("kept", "kept-ctx", "prod").await.unwrap());
    assert_eq!(
        query_ids(
            s,
            EventQuery {
                project: Some("kept".into()),
                ..all()
            }
        )
        .await,
        ["kept-e2", "kept-e1"]
    );

    // The name can be used again, from scratch.
    let commit = s.create_project(&project("doomed"), t(5)).await.unwrap();
    assert_eq!(
        s.get_project("doomed").await.unwrap().map(|v| v.version),
        Some(1)
    );
    assert_eq!(
        s.list_resources("doomed", &Scope::project(), None)
            .await
            .unwrap(),
        listing(&[(SHIPYARD_URI, &commit)])
    );
    assert!(s
        .list_resources("doomed", &service("dev", "carts"), None)
        .await
        .unwrap()
        .is_empty());
}

/// Every `write_resources` is a new commit of the project (even an empty one);
/// reads and listings at a commit see the content as of that commit; a
/// resource's version is the commit that last wrote it.
pub async fn every_resource_write_is_a_commit_and_reads_go_back_in_time<
    S: ProjectStore + ResourceStore,
>(
    s: &S,
) {
    let dev = stage("dev");
    let c0 = s.create_project(&project("p"), t(0)).await.unwrap();
    let c1 = s
        .write_resources("p", &dev, &[put("slo.yaml", "v1"), put("a.txt", "a")], t(1))
        .await
        .unwrap();
    let c2 = s
        .write_resources("p", &dev, &[put("slo.yaml", "v2")], t(2))
        .await
        .unwrap();
    let c3 = s
        .write_resources("p", &Scope::project(), &[put("other.txt", "o")], t(3))
        .await
        .unwrap();
    let commits = [&c0, &c1, &c2, &c3];
    for (i, c) in commits.iter().enumerate() {
        assert!(is_commit_id(c), "{c:?}");
        assert!(commits[..i].iter().all(|o| o != c), "commit ids are fresh");
    }
    assert_eq!(s.latest_commit("p").await.unwrap(), Some(c3.clone()));

    let read = |at: Option<&str>, uri: &str| {
        let uri = uri.to_string();
        let at = at.map(String::from);
        let dev = dev.clone();
        async move {
            s.read_resource("p", &dev, &uri, at.as_deref())
                .await
                .unwrap()
        }
    };
    assert_eq!(
        read(None, "slo.yaml").await,
        Some(Resource {
            uri: "slo.yaml".into(),
            content: b"v2".to_vec(),
            version: c2.clone()
        })
    );
    assert_eq!(
        read(Some(&c1), "slo.yaml").await,
        Some(Resource {
            uri: "slo.yaml".into(),
            content: b"v1".to_vec(),
            version: c1.clone()
        })
    );
    assert_eq!(
        read(Some(&c3), "slo.yaml").await.map(|r| r.version),
        Some(c2.clone())
    );
    assert_eq!(
        read(Some(&c0), "slo.yaml").await,
        None,
        "not written yet at c0"
    );
    assert_eq!(
        read(None, "a.txt").await.map(|r| r.version),
        Some(c1.clone())
    );
    assert_eq!(read(None, "missing").await, None);

    assert_eq!(
        s.list_resources("p", &dev, None).await.unwrap(),
        listing(&[("a.txt", &c1), ("slo.yaml", &c2)])
    );
    assert_eq!(
        s.list_resources("p", &dev, Some(&c1)).await.unwrap(),
        listing(&[("a.txt", &c1), ("slo.yaml", &c1)])
    );
    assert!(s
        .list_resources("p", &dev, Some(&c0))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.list_resources("p", &Scope::project(), Some(&c2))
            .await
            .unwrap(),
        listing(&[(SHIPYARD_URI, &c0)])
    );

    let c4 = s.write_resources("p", &dev, &[], t(4)).await.unwrap();
    assert!(is_commit_id(&c4) && c4 != c3);
    assert_eq!(s.latest_commit("p").await.unwrap(), Some(c4.clone()));
    assert_eq!(
        read(None, "slo.yaml").await.map(|r| r.version),
        Some(c2.clone())
    );

    let binary: Vec<u8> = (0..=255u8).collect();
    let c5 = s
        .write_resources(
            "p",
            &dev,
            &[
                Change {
                    uri: "helm/chart.tgz".into(),
                    content: Some(binary.clone()),
                },
                put("twice.txt", "first"),
                put("twice.txt", "second"),
            ],
            t(5),
        )
        .await
        .unwrap();
    assert_eq!(
        read(None, "helm/chart.tgz").await,
        Some(Resource {
            uri: "helm/chart.tgz".into(),
            content: binary,
            version: c5.clone()
        })
    );
    assert_eq!(
        content(s, "p", &dev, "twice.txt", None).await.as_deref(),
        Some("second"),
        "the last change of a uri in a commit wins"
    );
    assert_eq!(
        s.list_resources("p", &dev, None).await.unwrap(),
        listing(&[
            ("a.txt", &c1),
            ("helm/chart.tgz", &c5),
            ("slo.yaml", &c2),
            ("twice.txt", &c5)
        ])
    );
}

/// A change without content deletes the uri from that commit on (deleting an
/// absent uri is fine); earlier commits still have it; it can be written again.
pub async fn deleting_a_resource_hides_it_from_later_commits_only<
    S: ProjectStore + ResourceStore,
>(
    s: &S,
) {
    let carts = service("dev", "carts");
    s.create_project(&project("p"), t(0)).await.unwrap();
    let c1 = s
        .write_resources("p", &carts, &[put("x", "1"), put("y", "2")], t(1))
        .await
        .unwrap();
    let c2 = s
        .write_resources("p", &carts, &[delete("x")], t(2))
        .await
        .unwrap();
    assert_ne!(c1, c2);
    assert_eq!(content(s, "p", &carts, "x", None).await, None);
    assert_eq!(content(s, "p", &carts, "x", Some(&c2)).await, None);
    assert_eq!(
        content(s, "p", &carts, "x", Some(&c1)).await.as_deref(),
        Some("1")
    );
    assert_eq!(
        s.list_resources("p", &carts, None).await.unwrap(),
        listing(&[("y", &c1)])
    );
    assert_eq!(
        s.list_resources("p", &carts, Some(&c1)).await.unwrap(),
        listing(&[("x", &c1), ("y", &c1)])
    );

    let c3 = s
        .write_resources("p", &carts, &[delete("ghost")], t(3))
        .await
        .unwrap();
    assert_eq!(s.latest_commit("p").await.unwrap(), Some(c3.clone()));
    assert_eq!(
        s.list_resources("p", &carts, None).await.unwrap(),
        listing(&[("y", &c1)])
    );

    let c4 = s
        .write_resources("p", &carts, &[put("x", "again")], t(4))
        .await
        .unwrap();
    let r = s
        .read_resource("p", &carts, "x", None)
        .await
        .unwrap()
        .expect("x is back");
    assert_eq!((r.content, r.version), (b"again".to_vec(), c4.clone()));
    assert_eq!(content(s, "p", &carts, "x", Some(&c3)).await, None);
    assert_eq!(
        s.list_resources("p", &carts, None).await.unwrap(),
        listing(&[("x", &c4), ("y", &c1)])
    );
}

/// Reading or listing at a commit the project does not have (unknown, or
/// another project's) is `NotFound`; an unknown project has no resources and no commit.
pub async fn reading_at_an_unknown_commit_is_not_found<S: ProjectStore + ResourceStore>(s: &S) {
    let root = Scope::project();
    s.create_project(&project("p"), t(0)).await.unwrap();
    let foreign = s.create_project(&project("q"), t(0)).await.unwrap();
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_not_found(
        s.read_resource("p", &root, SHIPYARD_URI, Some(unknown))
            .await,
        "read at an unknown commit",
    );
    assert_not_found(
        s.list_resources("p", &root, Some(unknown)).await,
        "list at an unknown commit",
    );
    assert_not_found(
        s.read_resource("p", &root, SHIPYARD_URI, Some(&foreign))
            .await,
        "read at another project's commit",
    );
    assert_not_found(
        s.list_resources("p", &root, Some(&foreign)).await,
        "list at another project's commit",
    );

    assert_eq!(
        s.read_resource("absent", &root, SHIPYARD_URI, None)
            .await
            .unwrap(),
        None
    );
    assert!(s
        .list_resources("absent", &root, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(s.latest_commit("absent").await.unwrap(), None);
    assert_not_found(
        s.read_resource("absent", &root, SHIPYARD_URI, Some(&foreign))
            .await,
        "read of an absent project at a commit",
    );
}

/// Project, stage and service scopes hold separate resources under the same uri.
pub async fn resource_scopes_are_independent<S: ProjectStore + ResourceStore>(s: &S) {
    let (root, dev, prod, dev_carts) = (
        Scope::project(),
        stage("dev"),
        stage("prod"),
        service("dev", "carts"),
    );
    s.create_project(&project("p"), t(0)).await.unwrap();
    s.write_resources("p", &root, &[put("slo.yaml", "project")], t(1))
        .await
        .unwrap();
    let c_dev = s
        .write_resources("p", &dev, &[put("slo.yaml", "stage")], t(2))
        .await
        .unwrap();
    let c_svc = s
        .write_resources("p", &dev_carts, &[put("slo.yaml", "service")], t(3))
        .await
        .unwrap();
    assert_eq!(
        content(s, "p", &root, "slo.yaml", None).await.as_deref(),
        Some("project")
    );
    assert_eq!(
        content(s, "p", &dev, "slo.yaml", None).await.as_deref(),
        Some("stage")
    );
    assert_eq!(
        content(s, "p", &dev_carts, "slo.yaml", None)
            .await
            .as_deref(),
        Some("service")
    );
    assert_eq!(content(s, "p", &prod, "slo.yaml", None).await, None);
    assert_eq!(
        content(s, "p", &service("prod", "carts"), "slo.yaml", None).await,
        None
    );
    assert_eq!(
        content(s, "p", &service("dev", "orders"), "slo.yaml", None).await,
        None
    );

    s.write_resources("p", &dev, &[delete("slo.yaml")], t(4))
        .await
        .unwrap();
    assert_eq!(content(s, "p", &dev, "slo.yaml", None).await, None);
    assert_eq!(
        content(s, "p", &dev_carts, "slo.yaml", None)
            .await
            .as_deref(),
        Some("service")
    );
    assert_eq!(
        content(s, "p", &root, "slo.yaml", None).await.as_deref(),
        Some("project")
    );
    assert!(s.list_resources("p", &dev, None).await.unwrap().is_empty());
    assert_eq!(
        s.list_resources("p", &dev_carts, None).await.unwrap(),
        listing(&[("slo.yaml", &c_svc)])
    );
    assert_eq!(
        s.list_resources("p", &dev, Some(&c_svc)).await.unwrap(),
        listing(&[("slo.yaml", &c_dev)])
    );
}

/// `write_resources` on an unknown project is `NotFound` and creates nothing.
pub async fn writing_resources_of_an_unknown_project_is_not_found<
    S: ProjectStore + ResourceStore,
>(
    s: &S,
) {
    assert_not_found(
        s.write_resources("absent", &Scope::project(), &[put("a", "b")], t(0))
            .await,
        "write to an absent project",
    );
    assert_eq!(s.latest_commit("absent").await.unwrap(), None);
    assert_eq!(s.get_project("absent").await.unwrap(), None);
}

fn integration(id: &str, name: &str, version: &str) -> Integration {
    Integration {
        id: id.into(),
        name: name.into(),
        body: json!({"name": name, "metadata": {"integrationversion": version}, "subscriptions": [{"event": "sh.keptn.event.test.triggered"}]}),
        last_seen: t(1000),
    }
}

/// `put_integration` upserts by id (true when new); the list is sorted by name
/// then id; `delete_integration` is false when absent.
pub async fn integrations_are_upserted_listed_and_deleted<S: IntegrationStore>(s: &S) {
    assert!(s.list_integrations().await.unwrap().is_empty());
    assert!(s
        .put_integration(&integration("b-id", "zeta", "1"))
        .await
        .unwrap());
    let mut updated = integration("b-id", "zeta", "2");
    updated.last_seen = t(2000);
    assert!(!s.put_integration(&updated).await.unwrap());
    assert_eq!(
        s.get_integration("b-id").await.unwrap(),
        Some(updated.clone())
    );
    assert!(s
        .put_integration(&integration("c-id", "alpha", "1"))
        .await
        .unwrap());
    assert!(s
        .put_integration(&integration("a-id", "alpha", "1"))
        .await
        .unwrap());
    assert_eq!(
        s.list_integrations().await.unwrap(),
        vec![
            integration("a-id", "alpha", "1"),
            integration("c-id", "alpha", "1"),
            updated.clone()
        ]
    );
    assert_eq!(s.get_integration("absent").await.unwrap(), None);
    assert!(s.delete_integration("b-id").await.unwrap());
    assert!(!s.delete_integration("b-id").await.unwrap());
    assert_eq!(s.get_integration("b-id").await.unwrap(), None);
    let ids: Vec<String> = s
        .list_integrations()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids, ["a-id", "c-id"]);
}
