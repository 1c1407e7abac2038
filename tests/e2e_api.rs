//! The Keptn-compatible API over HTTP: auth, validation, errors, resources,
//! datastore queries, uniform registration.

use base64::Engine;
use keelson_tests::{wait_for, TestNode, TOKEN};
use serde_json::{json, Value};
use std::time::Duration;

async fn raw(
    n: &TestNode,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{}", n.api_url(), path));
    if let Some(t) = token {
        req = req.header("x-token", t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn assert_error(got: &(u16, Value), code: u16, needle: &str) {
    assert_eq!(got.0, code, "{got:?}");
    assert_eq!(got.1["code"], json!(code), "{got:?}");
    let msg = got.1["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "message {msg:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn every_route_but_health_needs_the_token() {
    let n = TestNode::start().await.unwrap();
    let (code, _) = raw(&n, reqwest::Method::GET, "/../health", None, None).await;
    assert_eq!(code, 200);
    for (m, p) in [
        (reqwest::Method::POST, "/v1/auth"),
        (reqwest::Method::GET, "/v1/metadata"),
        (reqwest::Method::POST, "/v1/event"),
        (reqwest::Method::GET, "/controlPlane/v1/project"),
        (reqwest::Method::GET, "/mongodb-datastore/event"),
        (reqwest::Method::GET, "/openapi.json"),
    ] {
        assert_error(
            &raw(&n, m.clone(), p, None, None).await,
            401,
            "unauthenticated",
        );
        assert_error(
            &raw(&n, m.clone(), p, Some("wrong"), None).await,
            401,
            "unauthenticated",
        );
    }
    let (code, meta) = raw(&n, reqwest::Method::GET, "/v1/metadata", Some(TOKEN), None).await;
    assert_eq!(code, 200);
    assert_eq!(meta["keptnlabel"], json!("keptn"));
    let (code, doc) = raw(&n, reqwest::Method::GET, "/openapi.json", Some(TOKEN), None).await;
    assert_eq!(code, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
}

#[tokio::test]
async fn rejected_events_get_a_clear_400_naming_the_problem() {
    let n = TestNode::start().await.unwrap();
    let post = |b: String| {
        let n = &n;
        async move { raw(n, reqwest::Method::POST, "/v1/event", Some(TOKEN), Some(&b)).await }
    };
    assert_error(&post("{not json".into()).await, 400, "JSON");
    assert_error(&post(json!({"data": {}}).to_string()).await, 400, "type");
    assert_error(&post(json!({"type": "sh.keptn.event.deployment.triggered", "data": {"project":"p","stage":"s","service":"x"}}).to_string()).await, 400, "type");
    assert_error(&post(json!({"type": "sh.keptn.event.dev.delivery.triggered", "data": {"project":"p","stage":"prod","service":"x"}}).to_string()).await, 400, "data.stage");
    assert_error(&post(json!({"type": "sh.keptn.event.test.finished", "triggeredid": "t", "data": {"project":"p","stage":"s","service":"x","status":"succeeded"}}).to_string()).await, 400, "data.result");
    assert_error(&post(json!({"type": "sh.keptn.event.dev.delivery.triggered", "extensions": {"data": 1}, "data": {"project":"p","stage":"dev","service":"x"}}).to_string()).await, 400, "extensions.data");
    let big = "x".repeat(70 * 1024);
    assert_error(&post(json!({"type": "sh.keptn.event.dev.delivery.triggered", "data": {"project":"p","stage":"dev","service":"x","blob": big}}).to_string()).await, 400, "maximum size");
    // A valid event is accepted and its context is answered.
    let (code, v) = post(json!({"type": "sh.keptn.event.dev.delivery.triggered", "shkeptncontext": "my-build-1", "data": {"project":"p","stage":"dev","service":"x"}}).to_string()).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["keptnContext"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn projects_services_and_their_errors() {
    let n = TestNode::start().await.unwrap();
    n.project("shop", None, "carts").await.unwrap();
    let p = n.client.get("/controlPlane/v1/project/shop").await.unwrap();
    assert_eq!(p["projectName"], json!("shop"));
    let stages: Vec<&str> = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stageName"].as_str().unwrap())
        .collect();
    assert_eq!(stages, vec!["dev", "hardening", "production"]);
    assert_eq!(p["stages"][1]["parentStages"], json!(["dev"]));
    assert_eq!(p["stages"][0]["services"][0]["serviceName"], json!("carts"));
    let err = n
        .client
        .create_project("shop", keelson_tests::SHIPYARD)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("409"), "{err}");
    let err = n.client.create_service("shop", "carts").await.unwrap_err();
    assert!(err.to_string().contains("409"), "{err}");
    let bad_name = raw(
        &n,
        reqwest::Method::POST,
        "/controlPlane/v1/project",
        Some(TOKEN),
        Some(&json!({"name": "Bad_Name", "shipyard": ""}).to_string()),
    )
    .await;
    assert_error(&bad_name, 400, "name");
    let b64 = base64::engine::general_purpose::STANDARD
        .encode("apiVersion: spec.keptn.sh/0.2.0\nkind: Shipyard\nspec: {stages: []}");
    let bad_sy = raw(
        &n,
        reqwest::Method::POST,
        "/controlPlane/v1/project",
        Some(TOKEN),
        Some(&json!({"name": "other", "shipyard": b64}).to_string()),
    )
    .await;
    assert_error(&bad_sy, 400, "spec.stages");
    assert_error(
        &raw(
            &n,
            reqwest::Method::GET,
            "/controlPlane/v1/project/nope",
            Some(TOKEN),
            None,
        )
        .await,
        404,
        "nope",
    );
    let list = n
        .client
        .get("/controlPlane/v1/project?pageSize=1")
        .await
        .unwrap();
    assert_eq!(list["totalCount"], json!(1));
    assert_eq!(list["nextPageKey"], json!("0"));
    let svc = n
        .client
        .get("/controlPlane/v1/project/shop/stage/dev/service/carts")
        .await
        .unwrap();
    assert_eq!(svc["serviceName"], json!("carts"));
    n.client
        .call(
            reqwest::Method::DELETE,
            "/controlPlane/v1/project/shop/service/carts",
            None,
        )
        .await
        .unwrap();
    assert_error(
        &raw(
            &n,
            reqwest::Method::GET,
            "/controlPlane/v1/project/shop/stage/dev/service/carts",
            Some(TOKEN),
            None,
        )
        .await,
        404,
        "carts",
    );
    n.client
        .call(
            reqwest::Method::DELETE,
            "/controlPlane/v1/project/shop",
            None,
        )
        .await
        .unwrap();
    assert_error(
        &raw(
            &n,
            reqwest::Method::GET,
            "/controlPlane/v1/project/shop",
            Some(TOKEN),
            None,
        )
        .await,
        404,
        "shop",
    );
}

#[tokio::test]
async fn resources_are_versioned_and_readable_at_a_version() {
    let n = TestNode::start().await.unwrap();
    n.project("res", None, "svc").await.unwrap();
    let v1 = n
        .client
        .add_resource("res", Some("dev"), Some("svc"), "slo.yaml", b"version: 1")
        .await
        .unwrap();
    let v2 = n
        .client
        .add_resource("res", Some("dev"), Some("svc"), "slo.yaml", b"version: 2")
        .await
        .unwrap();
    assert_ne!(v1, v2);
    let base = "/resource-service/v1/project/res/stage/dev/service/svc/resource";
    let decode = |v: &Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v["resourceContent"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let latest = n.client.get(&format!("{base}/slo.yaml")).await.unwrap();
    assert_eq!(decode(&latest), "version: 2");
    let old = n
        .client
        .get(&format!("{base}/slo.yaml?gitCommitID={v1}"))
        .await
        .unwrap();
    assert_eq!(decode(&old), "version: 1");
    let list = n.client.get(base).await.unwrap();
    assert_eq!(list["resources"][0]["resourceURI"], json!("slo.yaml"));
    // Stage level does not see the service's file.
    assert_error(
        &raw(
            &n,
            reqwest::Method::GET,
            "/resource-service/v1/project/res/stage/dev/resource/slo.yaml",
            Some(TOKEN),
            None,
        )
        .await,
        404,
        "slo.yaml",
    );
    for bad in ["../etc/passwd", "~root", "a/../b"] {
        let body =
            json!({"resources": [{"resourceURI": bad, "resourceContent": "eA=="}]}).to_string();
        assert_error(
            &raw(&n, reqwest::Method::POST, base, Some(TOKEN), Some(&body)).await,
            400,
            "resourceURI",
        );
    }
    let body =
        json!({"resources": [{"resourceURI": "x.txt", "resourceContent": "%%%"}]}).to_string();
    assert_error(
        &raw(&n, reqwest::Method::POST, base, Some(TOKEN), Some(&body)).await,
        400,
        "base64",
    );
    assert_error(
        &raw(
            &n,
            reqwest::Method::GET,
            &format!("{base}/slo.yaml?gitCommitID=deadbeef"),
            Some(TOKEN),
            None,
        )
        .await,
        404,
        "",
    );
    n.client
        .call(reqwest::Method::DELETE, &format!("{base}/slo.yaml"), None)
        .await
        .unwrap();
    assert_error(
        &raw(
            &n,
            reqwest::Method::GET,
            &format!("{base}/slo.yaml"),
            Some(TOKEN),
            None,
        )
        .await,
        404,
        "slo.yaml",
    );
    let still_old = n
        .client
        .get(&format!("{base}/slo.yaml?gitCommitID={v2}"))
        .await
        .unwrap();
    assert_eq!(decode(&still_old), "version: 2");
}

#[tokio::test]
async fn a_sequence_uses_the_shipyard_version_it_started_with() {
    let n = TestNode::start().await.unwrap();
    n.project("ver", None, "svc").await.unwrap();
    let ctx = n
        .trigger("ver", "dev", "delivery", "svc", "img:1")
        .await
        .unwrap();
    let dep = n.wait_open("deployment", "ver", "dev", &ctx).await.unwrap();
    // Change dev's delivery to a single different task while the sequence runs.
    let changed = keelson_tests::SHIPYARD.replacen(
        "            - name: test\n              properties: {teststrategy: functional}\n",
        "            - name: smoke\n",
        1,
    );
    assert_ne!(changed, keelson_tests::SHIPYARD);
    n.client
        .add_resource("ver", None, None, "shipyard.yaml", changed.as_bytes())
        .await
        .unwrap();
    n.started(&dep, "x").await.unwrap();
    n.finished(&dep, "x", "pass").await.unwrap();
    n.wait_open("test", "ver", "dev", &ctx).await.unwrap();
    // A new sequence uses the new version.
    let ctx2 = n
        .trigger("ver", "production", "delivery", "svc", "img:2")
        .await
        .unwrap();
    n.wait_open("deployment", "ver", "production", &ctx2)
        .await
        .unwrap();
    let bad = json!({"resources": [{"resourceURI": "shipyard.yaml", "resourceContent": base64::engine::general_purpose::STANDARD.encode("kind: nope")}]}).to_string();
    assert_error(
        &raw(
            &n,
            reqwest::Method::POST,
            "/resource-service/v1/project/ver/resource",
            Some(TOKEN),
            Some(&bad),
        )
        .await,
        400,
        "shipyard",
    );
}

#[tokio::test]
async fn the_datastore_answers_keptn_queries() {
    let n = TestNode::start().await.unwrap();
    n.project("ds", None, "svc").await.unwrap();
    let ctx = n
        .trigger("ds", "dev", "delivery", "svc", "img:1")
        .await
        .unwrap();
    n.run_task("deployment", "ds", "dev", &ctx, "pass")
        .await
        .unwrap();
    n.wait_open("test", "ds", "dev", &ctx).await.unwrap();
    let evs = wait_for(Duration::from_secs(10), || async {
        let v = n
            .client
            .get(&format!(
                "/mongodb-datastore/event?keptnContext={ctx}&pageSize=2"
            ))
            .await?;
        Ok((v["totalCount"].as_u64() >= Some(5)).then_some(v))
    })
    .await
    .unwrap();
    assert_eq!(evs["events"].as_array().unwrap().len(), 2);
    assert_eq!(evs["nextPageKey"], json!("2"));
    assert_eq!(evs["events"][0]["contenttype"], json!("application/json"));
    let roots = n
        .client
        .get("/mongodb-datastore/event?project=ds&root=true")
        .await
        .unwrap();
    assert_eq!(
        roots["events"][0]["type"],
        json!("sh.keptn.event.dev.delivery.triggered")
    );
    let fin = n
        .client
        .get("/mongodb-datastore/event/type/sh.keptn.event.deployment.finished?filter=data.project:ds%20AND%20data.result:pass,warning&excludeInvalidated=true")
        .await
        .unwrap();
    assert_eq!(fin["events"].as_array().unwrap().len(), 1);
    let none = n.client.get("/mongodb-datastore/event/type/sh.keptn.event.deployment.finished?filter=data.project:ds%20AND%20data.result:fail").await.unwrap();
    assert!(none["events"].as_array().unwrap().is_empty());
    assert_error(
        &raw(
            &n,
            reqwest::Method::GET,
            "/mongodb-datastore/event/type/x?filter=data.stage:dev",
            Some(TOKEN),
            None,
        )
        .await,
        400,
        "filter",
    );
    assert_error(
        &raw(
            &n,
            reqwest::Method::GET,
            "/mongodb-datastore/event?pageSize=1000",
            Some(TOKEN),
            None,
        )
        .await,
        400,
        "pageSize",
    );
    assert_error(
        &raw(
            &n,
            reqwest::Method::GET,
            "/mongodb-datastore/event?fromTime=yesterday",
            Some(TOKEN),
            None,
        )
        .await,
        400,
        "fromTime",
    );
}

#[tokio::test]
async fn integrations_register_ping_list_and_delete() {
    let n = TestNode::start().await.unwrap();
    let body = json!({"name": "helm-service", "metadata": {"hostname": "h1", "kubernetesmetadata": {"namespace": "keptn"}},
        "subscriptions": [{"event": "sh.keptn.event.deployment.triggered", "filter": {"projects": ["p"]}}]});
    let (code, v) = raw(
        &n,
        reqwest::Method::POST,
        "/controlPlane/v1/uniform/registration",
        Some(TOKEN),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(code, 201);
    let id = v["id"].as_str().unwrap().to_string();
    let (code, v2) = raw(
        &n,
        reqwest::Method::POST,
        "/controlPlane/v1/uniform/registration",
        Some(TOKEN),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!((code, v2["id"].as_str().unwrap()), (200, id.as_str()));
    let list = n
        .client
        .get("/controlPlane/v1/uniform/registration?project=p")
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let none = n
        .client
        .get("/controlPlane/v1/uniform/registration?project=other")
        .await
        .unwrap();
    assert!(none.as_array().unwrap().is_empty());
    let pinged = n
        .client
        .call(
            reqwest::Method::PUT,
            &format!("/controlPlane/v1/uniform/registration/{id}/ping"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(pinged["name"], json!("helm-service"));
    let bad =
        json!({"name": "x", "subscriptions": [{"event": "e", "filter": {"services": ["s"]}}]})
            .to_string();
    assert_error(
        &raw(
            &n,
            reqwest::Method::POST,
            "/controlPlane/v1/uniform/registration",
            Some(TOKEN),
            Some(&bad),
        )
        .await,
        400,
        "stages",
    );
    n.client
        .call(
            reqwest::Method::DELETE,
            &format!("/controlPlane/v1/uniform/registration/{id}"),
            None,
        )
        .await
        .unwrap();
    assert_error(
        &raw(
            &n,
            reqwest::Method::DELETE,
            &format!("/controlPlane/v1/uniform/registration/{id}"),
            Some(TOKEN),
            None,
        )
        .await,
        404,
        "",
    );
}

#[tokio::test]
async fn framework_rejections_and_extreme_parameters_still_answer_keptn_shaped_json() {
    let n = TestNode::start().await.unwrap();
    n.project("edge", None, "svc").await.unwrap();
    assert_error(
        &raw(
            &n,
            reqwest::Method::GET,
            "/controlPlane/v1/project/%FF",
            Some(TOKEN),
            None,
        )
        .await,
        400,
        "",
    );
    assert_error(
        &raw(
            &n,
            reqwest::Method::PATCH,
            "/controlPlane/v1/project",
            Some(TOKEN),
            None,
        )
        .await,
        405,
        "method",
    );
    let huge = format!(
        "{{\"resources\":[{{\"resourceURI\":\"a\",\"resourceContent\":\"{}\"}}]}}",
        "A".repeat(17 * 1024 * 1024)
    );
    assert_error(
        &raw(
            &n,
            reqwest::Method::POST,
            "/resource-service/v1/project/edge/resource",
            Some(TOKEN),
            Some(&huge),
        )
        .await,
        413,
        "",
    );
    for path in [
        "/controlPlane/v1/sequence/edge?pageSize=5&nextPageKey=18446744073709551615",
        "/controlPlane/v1/project?nextPageKey=18446744073709551615",
        "/controlPlane/v1/event/triggered/sh.keptn.event.deployment.triggered?nextPageKey=18446744073709551615",
    ] {
        let (code, v) = raw(&n, reqwest::Method::GET, path, Some(TOKEN), None).await;
        assert_eq!(code, 200, "{path}: {v}");
    }
}

#[tokio::test]
async fn a_lazily_loaded_token_is_read_on_first_use_and_a_failed_read_is_retried() {
    use keelson_core::ports::{Subscription, SystemClock};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let store = keelson_memory::MemoryStore::new();
    let bus = keelson_memory::MemoryBus::new(Vec::<Subscription>::new());
    let orch = Arc::new(keelson_shipyard::Orchestrator::new(
        store,
        bus,
        SystemClock,
        Default::default(),
    ));
    let loads = Arc::new(AtomicUsize::new(0));
    let l = loads.clone();
    let token = keelson_api::Token::lazy(move || {
        let n = l.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err("parameter store unreachable".to_string())
            } else {
                Ok("lazy-secret".to_string())
            }
        }
    });
    let app = keelson_api::router(Arc::new(keelson_api::Api { orch, token }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/metadata", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    assert_eq!(
        loads.load(Ordering::SeqCst),
        0,
        "not read before the first request"
    );
    let get = |t: &'static str| {
        let url = url.clone();
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .header("x-token", t)
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap())
        }
    };
    let (code, body) = get("lazy-secret").await;
    assert_eq!(code, 503);
    assert_eq!(
        body["message"],
        json!("the API token could not be read; try again")
    );
    assert_eq!(get("lazy-secret").await.0, 200);
    assert_eq!(get("wrong").await.0, 401);
    assert_eq!(get("lazy-secret").await.0, 200);
    assert_eq!(loads.load(Ordering::SeqCst), 2, "read once it succeeded");
}
