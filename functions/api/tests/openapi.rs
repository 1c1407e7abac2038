//! The OpenAPI document served at `GET /api/openapi.json` describes exactly the
//! routes of `keelson_api::router`.
//!
//! `ROUTES` is transcribed from the router in `src/lib.rs`: when a route is
//! added or removed there, update this list and `openapi.json` together. The
//! axum wildcard `{*uri}` is written `{resourceURI}` in the document.

use serde_json::Value;
use std::collections::BTreeSet;

/// Every (method, path) the router serves.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/api/health"),
    ("post", "/api/v1/auth"),
    ("get", "/api/v1/metadata"),
    ("get", "/api/openapi.json"),
    ("post", "/api/v1/event"),
    ("post", "/api/v1/alerts/alertmanager"),
    ("post", "/api/v1/alerts/generic"),
    ("get", "/api/v1/maintenance"),
    ("post", "/api/v1/maintenance"),
    ("delete", "/api/v1/maintenance/{project}/{id}"),
    ("get", "/api/controlPlane/v1/project"),
    ("post", "/api/controlPlane/v1/project"),
    ("put", "/api/controlPlane/v1/project"),
    ("get", "/api/controlPlane/v1/project/{project}"),
    ("delete", "/api/controlPlane/v1/project/{project}"),
    ("get", "/api/controlPlane/v1/project/{project}/stage"),
    ("get", "/api/controlPlane/v1/project/{project}/stage/{stage}"),
    ("get", "/api/controlPlane/v1/project/{project}/stage/{stage}/service"),
    ("get", "/api/controlPlane/v1/project/{project}/stage/{stage}/service/{service}"),
    (
        "post",
        "/api/controlPlane/v1/project/{project}/stage/{stage}/service/{service}/evaluation",
    ),
    ("post", "/api/controlPlane/v1/project/{project}/service"),
    ("delete", "/api/controlPlane/v1/project/{project}/service/{service}"),
    ("get", "/api/controlPlane/v1/sequence/{project}"),
    ("post", "/api/controlPlane/v1/sequence/{project}/{context}/control"),
    ("get", "/api/controlPlane/v1/event/triggered/{event_type}"),
    ("get", "/api/controlPlane/v1/uniform/registration"),
    ("post", "/api/controlPlane/v1/uniform/registration"),
    ("delete", "/api/controlPlane/v1/uniform/registration/{id}"),
    ("put", "/api/controlPlane/v1/uniform/registration/{id}/ping"),
    ("get", "/api/mongodb-datastore/event"),
    ("get", "/api/mongodb-datastore/event/type/{event_type}"),
    ("get", "/api/resource-service/v1/project/{project}/resource"),
    ("post", "/api/resource-service/v1/project/{project}/resource"),
    ("put", "/api/resource-service/v1/project/{project}/resource"),
    ("get", "/api/resource-service/v1/project/{project}/resource/{resourceURI}"),
    ("put", "/api/resource-service/v1/project/{project}/resource/{resourceURI}"),
    ("delete", "/api/resource-service/v1/project/{project}/resource/{resourceURI}"),
    ("get", "/api/resource-service/v1/project/{project}/stage/{stage}/resource"),
    ("post", "/api/resource-service/v1/project/{project}/stage/{stage}/resource"),
    ("put", "/api/resource-service/v1/project/{project}/stage/{stage}/resource"),
    ("get", "/api/resource-service/v1/project/{project}/stage/{stage}/resource/{resourceURI}"),
    ("put", "/api/resource-service/v1/project/{project}/stage/{stage}/resource/{resourceURI}"),
    ("delete", "/api/resource-service/v1/project/{project}/stage/{stage}/resource/{resourceURI}"),
    ("get", "/api/resource-service/v1/project/{project}/stage/{stage}/service/{service}/resource"),
    ("post", "/api/resource-service/v1/project/{project}/stage/{stage}/service/{service}/resource"),
    ("put", "/api/resource-service/v1/project/{project}/stage/{stage}/service/{service}/resource"),
    (
        "get",
        "/api/resource-service/v1/project/{project}/stage/{stage}/service/{service}/resource/{resourceURI}",
    ),
    (
        "put",
        "/api/resource-service/v1/project/{project}/stage/{stage}/service/{service}/resource/{resourceURI}",
    ),
    (
        "delete",
        "/api/resource-service/v1/project/{project}/stage/{stage}/service/{service}/resource/{resourceURI}",
    ),
];

/// Routes outside the token middleware.
const PUBLIC: &[&str] = &["/health", "/api/health"];

const SECURITY_SCHEME: &str = "x-token";

/// The ways to present the token: Keptn's header, and what webhook senders
/// such as Alertmanager can send.
const TOKEN_SCHEMES: &[&str] = &["x-token", "bearer", "basic"];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn doc() -> Value {
    serde_json::from_str(keelson_api::OPENAPI).expect("openapi.json is valid JSON")
}

/// Every operation of the document as (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = item
            .as_object()
            .unwrap_or_else(|| panic!("path item {path} is an object"));
        for (method, op) in item {
            if METHODS.contains(&method.as_str()) {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let ptr = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{r} is a local reference"));
            doc.pointer(ptr).unwrap_or_else(|| panic!("{r} resolves"))
        }
        None => v,
    }
}

/// Every `$ref` anywhere under `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// The `{name}` segments of a path template.
fn template_params(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_document_is_openapi_3_json() {
    let d = doc();
    let version = d["openapi"].as_str().expect("`openapi` is a string");
    assert!(
        version.starts_with("3."),
        "openapi version {version:?} is not 3.x"
    );
    assert!(d["info"]["title"].is_string());
    assert!(d["info"]["version"].is_string());
}

#[test]
fn the_route_list_has_no_duplicates() {
    let set: BTreeSet<_> = ROUTES.iter().collect();
    assert_eq!(set.len(), ROUTES.len());
}

#[test]
fn every_route_is_documented() {
    let d = doc();
    let missing: Vec<String> = ROUTES
        .iter()
        .filter(|(m, p)| !d["paths"][*p][*m].is_object())
        .map(|(m, p)| format!("{} {p}", m.to_uppercase()))
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from openapi.json: {missing:#?}"
    );
}

#[test]
fn the_document_describes_no_route_the_router_lacks() {
    let d = doc();
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let extra: Vec<String> = operations(&d)
        .into_iter()
        .filter(|(m, p, _)| !routes.contains(&(m.clone(), p.clone())))
        .map(|(m, p, _)| format!("{} {p}", m.to_uppercase()))
        .collect();
    assert!(
        extra.is_empty(),
        "operations in openapi.json that the router does not serve: {extra:#?}"
    );
}

#[test]
fn every_operation_declares_a_success_response() {
    let d = doc();
    for (m, p, op) in operations(&d) {
        let responses = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{m} {p} has responses"));
        assert!(
            responses.keys().any(|c| c.len() == 3 && c.starts_with('2')),
            "{m} {p} declares no 2xx response"
        );
    }
}

#[test]
fn the_token_is_an_api_key_in_the_x_token_header() {
    let d = doc();
    let scheme = &d["components"]["securitySchemes"][SECURITY_SCHEME];
    assert_eq!(scheme["type"], "apiKey");
    assert_eq!(scheme["in"], "header");
    assert_eq!(scheme["name"], keelson_api::TOKEN_HEADER);
}

#[test]
fn protected_operations_require_the_token_and_health_checks_do_not() {
    let d = doc();
    let global = d.get("security").cloned().unwrap_or(Value::Array(vec![]));
    let requires_token = |sec: &Value| {
        let reqs = sec.as_array().expect("security is a list");
        // Every alternative must carry the token (an empty alternative would make it optional).
        !reqs.is_empty()
            && reqs.iter().all(|r| {
                r.as_object().is_some_and(|o| {
                    !o.is_empty() && o.keys().all(|k| TOKEN_SCHEMES.contains(&k.as_str()))
                })
            })
    };
    for (m, p, op) in operations(&d) {
        let effective = op.get("security").unwrap_or(&global);
        if PUBLIC.contains(&p.as_str()) {
            assert_eq!(
                effective,
                &Value::Array(vec![]),
                "{m} {p} must need no token"
            );
        } else {
            assert!(
                requires_token(effective),
                "{m} {p} must require the {SECURITY_SCHEME} security"
            );
            let responses = &op["responses"];
            assert!(
                responses.get("401").is_some(),
                "{m} {p} must document the 401 answer"
            );
        }
    }
}

#[test]
fn errors_are_code_and_message_objects() {
    let d = doc();
    let err = &d["components"]["schemas"]["Error"];
    assert_eq!(err["type"], "object");
    assert_eq!(err["properties"]["code"]["type"], "integer");
    assert_eq!(err["properties"]["message"]["type"], "string");
    let required: BTreeSet<&str> = err["required"]
        .as_array()
        .expect("Error.required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required, BTreeSet::from(["code", "message"]));
    // Every documented JSON error answer uses it.
    for (m, p, op) in operations(&d) {
        for (code, resp) in op["responses"].as_object().into_iter().flatten() {
            if code.starts_with('4') || code.starts_with('5') {
                let resp = resolve(&d, resp);
                if let Some(schema) = resp.pointer("/content/application~1json/schema") {
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/Error",
                        "{m} {p} answers {code} with another schema"
                    );
                }
            }
        }
    }
}

#[test]
fn path_parameters_match_the_path_templates() {
    let d = doc();
    for (m, p, op) in operations(&d) {
        let item = &d["paths"][&p];
        let declared: BTreeSet<String> = item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(op["parameters"].as_array().into_iter().flatten())
            .map(|x| resolve(&d, x))
            .filter(|x| x["in"] == "path")
            .map(|x| {
                assert_eq!(
                    x["required"], true,
                    "{m} {p}: path parameter {} must be required",
                    x["name"]
                );
                x["name"].as_str().expect("parameter name").to_string()
            })
            .collect();
        assert_eq!(
            declared,
            template_params(&p),
            "{m} {p}: path parameters differ from the template"
        );
    }
}

#[test]
fn every_reference_resolves() {
    let d = doc();
    let mut all = Vec::new();
    refs(&d, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let ptr = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r} is a local reference"));
        assert!(d.pointer(ptr).is_some(), "{r} does not resolve");
    }
}

#[test]
fn the_core_schemas_are_defined() {
    let d = doc();
    for name in [
        "KeptnContextExtendedCE",
        "ExpandedProject",
        "ExpandedStage",
        "ExpandedService",
        "SequenceState",
        "Resource",
        "Integration",
        "Error",
    ] {
        assert!(
            d["components"]["schemas"][name].is_object(),
            "schema {name} is missing"
        );
    }
}
