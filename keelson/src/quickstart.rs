//! `keelson quickstart`: a throw-away node with a sample project, built-in echo
//! executors, one delivery, and the sequence shown live as it moves.

use anyhow::{anyhow, bail};
use keelson::client::Client;
use keelson::{token, Node, NodeOptions, StoreChoice};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The sample shipyard: three stages, each promoting to the next.
pub const SHIPYARD: &str = r#"apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata:
  name: quickstart
spec:
  stages:
    - name: dev
      sequences:
        - name: delivery
          tasks:
            - name: deployment
              properties: {deploymentstrategy: direct}
            - name: test
              properties: {teststrategy: functional}
            - name: release
    - name: staging
      sequences:
        - name: delivery
          triggeredOn:
            - event: dev.delivery.finished
          tasks:
            - name: deployment
              properties: {deploymentstrategy: blue_green_service}
            - name: test
              properties: {teststrategy: performance}
            - name: release
    - name: production
      sequences:
        - name: delivery
          triggeredOn:
            - event: staging.delivery.finished
          tasks:
            - name: deployment
              properties: {deploymentstrategy: blue_green_service}
            - name: release
"#;

pub async fn run(port: u16, keep_running: bool) -> anyhow::Result<()> {
    let tok = token::generate();
    let mut opts = NodeOptions::new(
        StoreChoice::Memory,
        SocketAddr::from(([127, 0, 0, 1], port)),
        tok.clone(),
    );
    opts.echo_tasks = vec!["deployment".into(), "test".into(), "release".into()];
    opts.echo_delay = Duration::from_millis(250);
    let node = Node::start(opts).await?;
    println!(
        "Keelson quickstart: API at {} (token {tok}), in memory.",
        node.api_url()
    );
    let c = Client::new(&node.api_url(), &tok);
    c.create_project("quickstart", SHIPYARD).await?;
    println!("Created project quickstart with stages dev -> staging -> production");
    c.create_service("quickstart", "helloservice").await?;
    println!("Created service helloservice; echo executors answer deployment, test and release");
    let ctx = c
        .send_event(&json!({"type": "sh.keptn.event.dev.delivery.triggered", "source": "keelson-quickstart",
            "data": {"project": "quickstart", "stage": "dev", "service": "helloservice",
                     "configurationChange": {"values": {"image": "ghcr.io/example/helloservice:1.0.0"}}}}))
        .await?;
    println!("Triggered delivery of ghcr.io/example/helloservice:1.0.0 (keptnContext {ctx})\n");
    let result = watch(&c, &ctx, Duration::from_secs(60)).await;
    match &result {
        Ok(()) => {
            println!("\nDelivery finished in all three stages.");
            println!("Next: `keelson serve` for a persistent node, then `keelson create project` with your own shipyard.");
        }
        Err(e) => println!("\nThe delivery did not finish: {e}"),
    }
    if keep_running {
        println!("Still serving at {} — Ctrl-C to stop.", node.api_url());
        tokio::signal::ctrl_c().await?;
    }
    node.stop().await;
    result
}

/// Prints every new event of the context's stages until the last stage finished.
async fn watch(c: &Client, ctx: &str, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut seen: HashSet<String> = HashSet::new();
    let mut seen_types: HashSet<String> = HashSet::new();
    loop {
        if start.elapsed() > limit {
            bail!("gave up after {}s", limit.as_secs());
        }
        let states = c.sequences("quickstart", Some(ctx)).await?;
        let Some(st) = states.first() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let events = c
            .get(&format!(
                "/mongodb-datastore/event?keptnContext={ctx}&pageSize=100"
            ))
            .await?;
        let mut evs: Vec<Value> = events
            .get("events")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        evs.reverse();
        for e in evs {
            let id = e
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if !seen.insert(id) {
                continue;
            }
            let ty = e.get("type").and_then(Value::as_str).unwrap_or_default();
            seen_types.insert(ty.to_string());
            let stage = e
                .pointer("/data/stage")
                .and_then(Value::as_str)
                .unwrap_or("-");
            let result = e
                .pointer("/data/result")
                .and_then(Value::as_str)
                .map(|r| format!("  result={r}"))
                .unwrap_or_default();
            let short = ty.strip_prefix("sh.keptn.event.").unwrap_or(ty);
            println!(
                "  [{stage:<10}] {short:<32} {}{result}",
                e.get("source").and_then(Value::as_str).unwrap_or_default()
            );
        }
        let state = st.get("state").and_then(Value::as_str).unwrap_or_default();
        // Done once the last stage's .finished is stored (and so printed above).
        if state == "finished" && seen_types.contains("sh.keptn.event.production.delivery.finished")
        {
            return Ok(());
        }
        if matches!(state, "aborted" | "timedOut") {
            return Err(anyhow!("sequence ended in state {state}"));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}
