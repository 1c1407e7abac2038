//! Keelson benchmarks in local mode with the SQLite store, and AWS-mode
//! figures against the emulator on `http://127.0.0.1:4566`. Run:
//!
//! ```sh
//! cargo run --release -p keelson-bench -- [latency|ingest|query|all]
//! cargo run --release -p keelson-bench -- evaluate [--samples 300]
//! cargo run --release -p keelson-bench -- gates [--evaluations N] [--concurrency 64] [--services 64] [--warm 4]
//! cargo run --release -p keelson-bench -- latency --backend aws [--transitions N]
//! cargo run --release -p keelson-bench -- lambda-init --runs 30 target/lambda/api/bootstrap …
//! cargo run --release -p keelson-bench -- aws-requests [--deliveries 20] [--idle-secs 30] [--poll-wait 10]
//! # AWS modes take --endpoint http://127.0.0.1:<port> (default 4566)
//! ```
//!
//! Figures go to stdout as Markdown table rows for BENCHMARKS.md.

/// The allocator the `keelson` binary uses, so the node measured here runs as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod aws;
mod gates;
mod proxy;

use anyhow::{bail, Context};
use keelson::client::Client;
use keelson::{Node, NodeOptions, Observer, StoreChoice};
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{Clock, EventStore, SystemClock};
use keelson_core::query::EventQuery;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "bench";

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `p50 … | p90 … | p99 … | max …` of millisecond samples (sorts them).
fn percentiles(samples: &mut [f64]) -> String {
    samples.sort_by(|a, b| a.total_cmp(b));
    format!(
        "p50 {:.3} ms | p90 {:.3} ms | p99 {:.3} ms | max {:.3} ms",
        pct(samples, 50.0),
        pct(samples, 90.0),
        pct(samples, 99.0),
        pct(samples, 100.0)
    )
}

async fn node(dir: &std::path::Path, observer: Option<Observer>) -> anyhow::Result<(Node, Client)> {
    let mut opts = NodeOptions::new(
        StoreChoice::Sqlite(dir.to_path_buf()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        TOKEN.into(),
    );
    opts.observer = observer;
    let n = Node::start(opts).await?;
    let c = Client::new(&n.api_url(), TOKEN);
    Ok((n, c))
}

fn many_task_shipyard(tasks: usize) -> String {
    let mut s = String::from("apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\nmetadata: {name: bench}\nspec:\n  stages:\n    - name: dev\n      sequences:\n        - name: long\n          tasks:\n");
    for i in 0..tasks {
        s.push_str(&format!("            - name: t{i}\n"));
    }
    s
}

/// Task transition latency: from the `.finished` accepted by the API (published on
/// the bus) to the next task's `.triggered` published by the shipyard function.
async fn latency(transitions: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    type Seen = Arc<Mutex<HashMap<String, Instant>>>;
    let finished_at: Seen = Arc::default();
    let triggered_at: Seen = Arc::default();
    let (f2, t2) = (finished_at.clone(), triggered_at.clone());
    let observer: Observer = Arc::new(move |e: &KeptnEvent| {
        let now = Instant::now();
        if e.ty.ends_with(".finished") {
            if let Some(t) = &e.triggeredid {
                f2.lock().unwrap().insert(t.clone(), now);
            }
        } else if e.ty.ends_with(".triggered") && e.source == "shipyard-controller" {
            t2.lock().unwrap().insert(e.id.clone(), now);
        }
    });
    let (n, c) = node(dir.path(), Some(observer)).await?;
    let tasks = 50;
    c.create_project("bench", &many_task_shipyard(tasks))
        .await?;
    c.create_service("bench", "svc").await?;
    let mut samples = Vec::with_capacity(transitions);
    let mut runs = 0;
    while samples.len() < transitions {
        runs += 1;
        let ctx = c
            .send_event(&json!({"type": "sh.keptn.event.dev.long.triggered", "data": {"project": "bench", "stage": "dev", "service": "svc"}}))
            .await?;
        let mut prev_trigger: Option<String> = None;
        for i in 0..tasks {
            let ty = format!("sh.keptn.event.t{i}.triggered");
            let trig = wait_open(&c, &ty, &ctx).await?;
            let id = trig["id"].as_str().unwrap_or_default().to_string();
            if let Some(p) = prev_trigger.take() {
                let f = finished_at.lock().unwrap().get(&p).copied();
                let t = triggered_at.lock().unwrap().get(&id).copied();
                if let (Some(f), Some(t)) = (f, t) {
                    if runs > 1 || i > 5 {
                        samples.push(t.duration_since(f).as_secs_f64() * 1000.0);
                    }
                }
            }
            let data = json!({"project": "bench", "stage": "dev", "service": "svc"});
            c.send_event(&json!({"type": format!("sh.keptn.event.t{i}.started"), "source": "bench", "shkeptncontext": ctx, "triggeredid": id, "data": data}))
                .await?;
            let mut fd = data.clone();
            fd["result"] = json!("pass");
            fd["status"] = json!("succeeded");
            c.send_event(&json!({"type": format!("sh.keptn.event.t{i}.finished"), "source": "bench", "shkeptncontext": ctx, "triggeredid": id, "data": fd}))
                .await?;
            prev_trigger = Some(id);
        }
    }
    println!(
        "| task transition latency (.finished accepted → next .triggered emitted) | {} transitions | {} |",
        samples.len(),
        percentiles(&mut samples)
    );
    n.stop().await;
    Ok(())
}

async fn wait_open(c: &Client, ty: &str, ctx: &str) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    loop {
        let v = c
            .get(&format!(
                "/controlPlane/v1/event/triggered/{ty}?project=bench"
            ))
            .await?;
        if let Some(e) = v["events"].as_array().and_then(|a| {
            a.iter()
                .find(|e| e["shkeptncontext"] == json!(ctx))
                .cloned()
        }) {
            return Ok(e);
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("no {ty} for {ctx}");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Sustained ingest: `total` events POSTed by `conns` concurrent clients; the
/// rate counts until every event is stored by the datastore and consumed by the
/// shipyard function.
async fn ingest(total: usize, conns: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (n, c) = node(dir.path(), None).await?;
    c.create_project("ing", &many_task_shipyard(1)).await?;
    c.create_service("ing", "svc").await?;
    let start = Instant::now();
    let per = total / conns;
    let mut handles = vec![];
    for w in 0..conns {
        let c = c.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per {
                let ev = json!({"type": "sh.keptn.event.test.finished", "source": "bench", "shkeptncontext": format!("00000000-0000-4000-8000-{:012}", w),
                    "triggeredid": format!("t-{w}-{i}"),
                    "data": {"project": "ing", "stage": "dev", "service": "svc", "result": "pass", "status": "succeeded", "test": {"start": "2023-01-01T00:00:00Z"}}});
                c.send_event(&ev).await?;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let accepted = start.elapsed();
    let want = per * conns;
    loop {
        let v = c
            .get(
                "/mongodb-datastore/event?project=ing&type=sh.keptn.event.test.finished&pageSize=1",
            )
            .await?;
        if v["totalCount"].as_u64().unwrap_or(0) as usize >= want {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("events were not all stored");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stored = start.elapsed();
    println!(
        "| sustained POST /api/v1/event ingest ({conns} connections, each event stored and routed) | {want} events | accepted {:.0} ev/s | stored {:.0} ev/s | {:.2} s total |",
        want as f64 / accepted.as_secs_f64(),
        want as f64 / stored.as_secs_f64(),
        stored.as_secs_f64()
    );
    n.stop().await;
    Ok(())
}

/// Datastore query by keptnContext with `total` stored events (100 per context).
async fn query(total: usize, samples: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keelson.db");
    let store = keelson_sqlite::SqliteStore::open(&path).context("opening the store")?;
    let per_ctx = 100;
    let contexts = total / per_ctx;
    let base = SystemClock.now().millis() - (total as i64);
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..total {
        let ctx = format!("00000000-0000-4000-8000-{:012}", i % contexts);
        let ty = [
            "sh.keptn.event.deployment.triggered",
            "sh.keptn.event.deployment.started",
            "sh.keptn.event.deployment.finished",
            "sh.keptn.event.test.finished",
        ][i % 4];
        let mut e = KeptnEvent::new(
            format!("ev-{i}"),
            "bench",
            ty.into(),
            &ctx,
            json!({"project": format!("p{}", i % 10), "stage": "dev", "service": "svc", "result": "pass", "status": "succeeded", "n": i}),
            keelson_core::Timestamp::from_millis(base + i as i64),
        );
        e.triggeredid = Some(format!("tr-{}", i / 4));
        batch.push(e);
        if batch.len() == 10_000 {
            store.insert_events(&batch).await?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.insert_events(&batch).await?;
    }
    let load = t0.elapsed();
    drop(store);
    // Query through the HTTP API of a node on the same file.
    let (n, c) = node(dir.path(), None).await?;
    let mut lat = Vec::with_capacity(samples);
    let mut x: u64 = 12345;
    for _ in 0..samples {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ctx = format!(
            "00000000-0000-4000-8000-{:012}",
            (x >> 33) as usize % contexts
        );
        let s = Instant::now();
        let v = c
            .get(&format!(
                "/mongodb-datastore/event?keptnContext={ctx}&pageSize=20"
            ))
            .await?;
        lat.push(s.elapsed().as_secs_f64() * 1000.0);
        if v["totalCount"].as_u64() != Some(per_ctx as u64) {
            bail!("unexpected totalCount {}", v["totalCount"]);
        }
    }
    println!(
        "| datastore GET /event?keptnContext (HTTP, page of 20, totalCount) | {total} events stored ({contexts} contexts, loaded in {:.1} s) | {} |",
        load.as_secs_f64(),
        percentiles(&mut lat)
    );
    n.stop().await;
    // The store alone, without HTTP.
    let store = keelson_sqlite::SqliteStore::open(&path)?;
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ctx = format!(
            "00000000-0000-4000-8000-{:012}",
            (x >> 33) as usize % contexts
        );
        let q = EventQuery {
            keptn_context: Some(ctx),
            page_size: 20,
            ..Default::default()
        };
        let s = Instant::now();
        let page = store.query_events(&q).await?;
        lat.push(s.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(page.total_count, per_ctx);
    }
    println!(
        "| datastore query_events by keptnContext (store only) | {total} events | {} |",
        percentiles(&mut lat)
    );
    Ok(())
}

/// The value of `--name` in `args`.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn flag_num<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T> {
    match flag(args, name) {
        Some(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}: not a number: {v}")),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().cloned().unwrap_or_else(|| "all".into());
    let quick = std::env::var("KEELSON_BENCH_QUICK").is_ok();
    let poll_wait = Duration::from_secs(flag_num(&args, "--poll-wait", 10)?);
    if let Some(e) = flag(&args, "--endpoint") {
        // Read by the aws module (a loopback emulator, http://<ip>:<port>).
        std::env::set_var("KEELSON_BENCH_AWS_ENDPOINT", e);
    }
    if what == "lambda-init" {
        let mut paths = vec![];
        let mut it = args.iter().skip(1);
        while let Some(a) = it.next() {
            match a.as_str() {
                "--runs" | "--endpoint" | "--poll-wait" => {
                    it.next();
                }
                "--bootstrap" => paths.extend(it.next().cloned()),
                p => paths.push(p.to_string()),
            }
        }
        if paths.is_empty() {
            bail!("lambda-init: give the bootstrap paths (target/lambda/<function>/bootstrap)");
        }
        return aws::lambda_init(&paths, flag_num(&args, "--runs", 30)?).await;
    }
    if what == "aws-requests" {
        return aws::requests(
            flag_num(&args, "--deliveries", 20)?,
            flag_num(&args, "--idle-secs", 30)?,
            poll_wait,
        )
        .await;
    }
    if what == "latency" && flag(&args, "--backend").as_deref() == Some("aws") {
        return aws::latency(
            flag_num(&args, "--transitions", if quick { 100 } else { 500 })?,
            poll_wait,
        )
        .await;
    }
    if what == "evaluate" {
        return gates::evaluate_bench(flag_num(&args, "--samples", 300)?);
    }
    if what == "gates" {
        let concurrency = flag_num(&args, "--concurrency", 64)?;
        return gates::gates(
            flag_num(&args, "--evaluations", if quick { 2_000 } else { 20_000 })?,
            concurrency,
            flag_num(&args, "--services", concurrency)?,
            flag_num(&args, "--warm", 4)?,
        )
        .await;
    }
    if what == "latency" || what == "all" {
        latency(if quick { 200 } else { 2000 }).await?;
    }
    if what == "ingest" || what == "all" {
        ingest(if quick { 5_000 } else { 50_000 }, 32).await?;
    }
    if what == "query" || what == "all" {
        query(
            if quick { 100_000 } else { 1_000_000 },
            if quick { 200 } else { 2000 },
        )
        .await?;
    }
    Ok(())
}
