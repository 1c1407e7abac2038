//! An HTTP client for any Keelson (or Keptn) API, used by the CLI verbs.

use anyhow::{anyhow, Context};
use base64::Engine;
use serde_json::{json, Value};

/// Where and how to reach the API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// An API error answer (`{"code", "message"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// HTTP status.
    pub code: u16,
    /// Message.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {})", self.message, self.code)
    }
}
impl std::error::Error for ApiFailure {}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8080/api`).
    pub fn new(base: &str, token: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Sends a request; non-2xx answers become [`ApiFailure`].
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("x-token", &self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let v: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
        };
        if status.is_success() {
            Ok(v)
        } else {
            let message = v
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or(text);
            Err(anyhow!(ApiFailure {
                code: status.as_u16(),
                message
            }))
        }
    }

    /// GET.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }
    /// POST.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// `POST /v1/auth`.
    pub async fn auth(&self) -> anyhow::Result<()> {
        self.post("/v1/auth", &json!({})).await.map(|_| ())
    }

    /// Creates a project from shipyard text.
    pub async fn create_project(&self, name: &str, shipyard: &str) -> anyhow::Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(shipyard);
        self.post(
            "/controlPlane/v1/project",
            &json!({"name": name, "shipyard": b64}),
        )
        .await
        .map(|_| ())
    }

    /// Creates a service.
    pub async fn create_service(&self, project: &str, service: &str) -> anyhow::Result<()> {
        self.post(
            &format!("/controlPlane/v1/project/{project}/service"),
            &json!({"serviceName": service}),
        )
        .await
        .map(|_| ())
    }

    /// Uploads a resource; returns the commit id.
    pub async fn add_resource(
        &self,
        project: &str,
        stage: Option<&str>,
        service: Option<&str>,
        uri: &str,
        content: &[u8],
    ) -> anyhow::Result<String> {
        let mut path = format!("/resource-service/v1/project/{project}");
        if let Some(s) = stage {
            path.push_str(&format!("/stage/{s}"));
        }
        if let Some(s) = service {
            path.push_str(&format!("/service/{s}"));
        }
        path.push_str("/resource");
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        let v = self
            .post(
                &path,
                &json!({"resources": [{"resourceURI": uri, "resourceContent": b64}]}),
            )
            .await?;
        Ok(v.get("commitID")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// Sends an event; returns the keptnContext.
    pub async fn send_event(&self, event: &Value) -> anyhow::Result<String> {
        let v = self.post("/v1/event", event).await?;
        Ok(v.get("keptnContext")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// Stage names of a project.
    pub async fn stages(&self, project: &str) -> anyhow::Result<Vec<String>> {
        let v = self
            .get(&format!("/controlPlane/v1/project/{project}"))
            .await?;
        Ok(v.get("stages")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        s.get("stageName")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Sequence states of a project (optionally one context).
    pub async fn sequences(
        &self,
        project: &str,
        context: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let mut path = format!("/controlPlane/v1/sequence/{project}");
        if let Some(c) = context {
            path.push_str(&format!("?keptnContext={c}"));
        }
        let v = self.get(&path).await?;
        Ok(v.get("states")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Pause / resume / abort.
    pub async fn control(
        &self,
        project: &str,
        context: &str,
        state: &str,
        stage: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut body = json!({"state": state});
        if let Some(s) = stage {
            body["stage"] = json!(s);
        }
        self.post(
            &format!("/controlPlane/v1/sequence/{project}/{context}/control"),
            &body,
        )
        .await
        .map(|_| ())
    }
}

/// Turns `a.b=c` pairs into a nested JSON object (Keptn CLI's `--values` / `--data`).
pub fn nested_values(pairs: &[String]) -> anyhow::Result<Value> {
    let mut out = json!({});
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("{p:?}: expected key=value"))?;
        if k.is_empty() || k.split('.').any(str::is_empty) {
            return Err(anyhow!("{p:?}: the key must be dot-separated names"));
        }
        let mut cur = &mut out;
        let parts: Vec<&str> = k.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            if i == parts.len() - 1 {
                cur[*part] = json!(v);
            } else {
                if !cur.get(*part).is_some_and(Value::is_object) {
                    cur[*part] = json!({});
                }
                cur = &mut cur[*part];
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_values_build_objects_and_reject_bad_pairs() {
        let v = nested_values(&["image=x:1".into(), "a.b=c".into(), "a.d=e".into()]).unwrap();
        assert_eq!(v, json!({"image":"x:1","a":{"b":"c","d":"e"}}));
        assert!(nested_values(&["noequals".into()]).is_err());
        assert!(nested_values(&["a..b=c".into()]).is_err());
    }
}
