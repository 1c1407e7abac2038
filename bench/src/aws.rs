//! AWS-mode figures against the emulator (moto or LocalStack on
//! `http://127.0.0.1:4566`): Lambda cold-start init against a runtime-API stub,
//! AWS requests per task transition (counted at a proxy in front of the
//! emulator) with their cost, and task-transition latency with the AWS backend.

use crate::proxy::{self, Record};
use crate::{percentiles, TOKEN};
use anyhow::{anyhow, bail, Context};
use keelson::client::Client;
use keelson::{AwsTarget, Node, NodeOptions, Observer, StoreChoice};
use keelson_aws::provision::{provision, Provisioned, Template, TEMPLATE};
use keelson_aws::Settings;
use keelson_core::event::KeptnEvent;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The emulator: `KEELSON_BENCH_AWS_ENDPOINT` (set by `--endpoint`), else `http://127.0.0.1:4566`.
fn endpoint() -> String {
    std::env::var("KEELSON_BENCH_AWS_ENDPOINT")
        .unwrap_or_else(|_| keelson_aws::emulator::DEFAULT_ENDPOINT.into())
}

/// The three-stage shipyard of the end-to-end tests (`tests/src/lib.rs`
/// `SHIPYARD`): 8 tasks per delivery (dev 3, hardening 3, production 2).
pub const SHIPYARD: &str = include_str!("../../events-fixtures/shipyards/three-stage.yaml");

fn stack_name(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{prefix}{:x}", n & 0xffff_ffff)
}

/// Provisions the template's resources for `stack` directly on the emulator.
async fn provision_stack(stack: &str, token: &str) -> anyhow::Result<Provisioned> {
    let endpoint = endpoint();
    let sdk = keelson_aws::load(&Settings::emulator(&endpoint)).await;
    let t = Template::parse(TEMPLATE).map_err(|e| anyhow!(e))?;
    provision(&sdk, &t, stack, Some(token))
        .await
        .with_context(|| {
            format!("provisioning {stack} on {endpoint} (is the emulator up? localstack/start)")
        })
}

// ---------------------------------------------------------------- cold start

/// Cold-start init: the time from spawning a bootstrap to its first
/// `GET /2018-06-01/runtime/invocation/next` at a local runtime-API stub.
pub async fn lambda_init(bootstraps: &[String], runs: usize) -> anyhow::Result<()> {
    let stack = stack_name("benchinit");
    let p = provision_stack(&stack, "bench-init-token").await?;
    let names = p.names.clone().context("no names")?;
    let dlq = |f: &str| {
        p.queues
            .values()
            .find(|u| u.ends_with(&format!("/{}", names.dlq(f))))
            .cloned()
            .unwrap_or_default()
    };
    for path in bootstraps {
        let function = std::path::Path::new(path)
            .parent()
            .and_then(|d| d.file_name())
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "api".into());
        let dlq_url = dlq(if function == "datastore" {
            "datastore"
        } else {
            "shipyard"
        });
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs + 1 {
            samples.push(one_init(path, &function, &names, &dlq_url)?);
        }
        // The first run warms the page cache; it is reported separately.
        let first = samples.remove(0);
        println!(
            "| cold-start init `{function}` ({path}) | {runs} runs (+1 discarded: {first:.2} ms) | {} |",
            percentiles(&mut samples)
        );
    }
    Ok(())
}

fn one_init(
    path: &str,
    function: &str,
    names: &keelson_aws::names::Names,
    dlq_url: &str,
) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = std::sync::mpsc::channel::<anyhow::Result<(Instant, String)>>();
    std::thread::spawn(move || {
        let r = (|| {
            let (mut s, _) = listener.accept()?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk)?;
                if n == 0 {
                    bail!("the bootstrap closed the connection");
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    let at = Instant::now();
                    let line = String::from_utf8_lossy(&buf[..i]).to_string();
                    // Keep the connection open (no answer) until the child is killed.
                    std::thread::sleep(Duration::from_millis(50));
                    let _ = s.write_all(b"");
                    return Ok((at, line));
                }
            }
        })();
        let _ = tx.send(r);
    });
    let start = Instant::now();
    let mut child = Command::new(path)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env(
            "AWS_LAMBDA_FUNCTION_NAME",
            format!("{}-{function}", names.stack),
        )
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/12/02/[1]bench")
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}-{function}", names.stack),
        )
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("KEELSON_TABLE", names.table())
        .env("KEELSON_BUS", names.bus())
        .env("KEELSON_DLQ_URL", dlq_url)
        .env("KEELSON_TOKEN_PARAMETER", names.token_parameter())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {path}"))?;
    let got = rx.recv_timeout(Duration::from_secs(10));
    let _ = child.kill();
    let out = child.wait_with_output()?;
    match got {
        Ok(Ok((at, line))) => {
            if !line.starts_with("GET /2018-06-01/runtime/invocation/next") {
                bail!("unexpected first request from {path}: {line}");
            }
            Ok(at.duration_since(start).as_secs_f64() * 1000.0)
        }
        Ok(Err(e)) => Err(e)
            .with_context(|| format!("{path}: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(_) => bail!(
            "{path} did not ask for an invocation within 10 s: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

// ---------------------------------------------------------------- executor

/// A node on the AWS backend whose published events come through a channel.
struct AwsNode {
    node: Node,
    client: Client,
    events: mpsc::UnboundedReceiver<(Instant, KeptnEvent)>,
}

async fn aws_node(endpoint: &str, stack: &str, poll_wait: Duration) -> anyhow::Result<AwsNode> {
    let (tx, rx) = mpsc::unbounded_channel();
    let observer: Observer = Arc::new(move |e: &KeptnEvent| {
        let _ = tx.send((Instant::now(), e.clone()));
    });
    let mut target = AwsTarget::new(Settings::emulator(endpoint), stack);
    target.poll_wait = poll_wait;
    let mut opts = NodeOptions::new(
        StoreChoice::Aws(target),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        TOKEN.into(),
    );
    // The sweep runs once at start; deliveries here never need it (no
    // `triggeredAfter`, no queued sequences). Its cost is reported on its own.
    opts.tick_interval = Duration::from_secs(3600);
    opts.observer = Some(observer);
    let node = Node::start(opts).await?;
    let client = Client::new(&node.api_url(), TOKEN);
    Ok(AwsNode {
        node,
        client,
        events: rx,
    })
}

fn is_task_trigger(e: &KeptnEvent) -> Option<String> {
    let rest = e.ty.strip_prefix("sh.keptn.event.")?;
    let task = rest.strip_suffix(".triggered")?;
    (!task.contains('.') && e.source == "shipyard-controller").then(|| task.to_string())
}

/// Plays the executors for one sequence context until `done` (an event type)
/// is published for it. Calls `on_trigger(finished_at_of_previous, triggered_at)`
/// for every task trigger after the first.
async fn play(
    n: &mut AwsNode,
    ctx: &str,
    done: &str,
    project: &str,
    service: &str,
    mut on_transition: impl FnMut(Instant, Instant),
) -> anyhow::Result<usize> {
    let mut last_finished: Option<Instant> = None;
    let mut tasks = 0;
    let mut pending_finished: HashMap<String, ()> = HashMap::new();
    loop {
        let (at, e) = tokio::time::timeout(Duration::from_secs(30), n.events.recv())
            .await
            .map_err(|_| anyhow!("no event for 30 s waiting for {done} of {ctx}"))?
            .ok_or_else(|| anyhow!("observer closed"))?;
        if e.shkeptncontext != ctx {
            continue;
        }
        if e.ty == done {
            return Ok(tasks);
        }
        if e.ty.ends_with(".finished") && e.source == "bench" {
            if let Some(t) = &e.triggeredid {
                if pending_finished.remove(t).is_some() {
                    last_finished = Some(at);
                }
            }
            continue;
        }
        let Some(task) = is_task_trigger(&e) else {
            continue;
        };
        if let Some(f) = last_finished.take() {
            on_transition(f, at);
        }
        tasks += 1;
        let stage = e.data["stage"].as_str().unwrap_or_default().to_string();
        let data = json!({"project": project, "stage": stage, "service": service});
        n.client
            .send_event(&json!({"type": format!("sh.keptn.event.{task}.started"), "source": "bench", "shkeptncontext": ctx, "triggeredid": e.id, "data": data}))
            .await?;
        let mut fd = data.clone();
        fd["result"] = json!("pass");
        fd["status"] = json!("succeeded");
        pending_finished.insert(e.id.clone(), ());
        n.client
            .send_event(&json!({"type": format!("sh.keptn.event.{task}.finished"), "source": "bench", "shkeptncontext": ctx, "triggeredid": e.id, "data": fd}))
            .await?;
    }
}

// ---------------------------------------------------------------- latency

/// Task transition latency with the AWS backend on the emulator: as the local
/// `latency` mode (`.finished` published by the API → next `.triggered`
/// published by the shipyard function), with executors driven by the node's
/// observer instead of polling the API (polling would load the emulator).
pub async fn latency(transitions: usize, poll_wait: Duration) -> anyhow::Result<()> {
    let stack = stack_name("benchlat");
    provision_stack(&stack, TOKEN).await?;
    let mut n = aws_node(&endpoint(), &stack, poll_wait).await?;
    let tasks = 50;
    n.client
        .create_project("bench", &crate::many_task_shipyard(tasks))
        .await?;
    n.client.create_service("bench", "svc").await?;
    let mut samples = Vec::with_capacity(transitions);
    let mut runs = 0;
    while samples.len() < transitions {
        runs += 1;
        let ctx = n
            .client
            .send_event(&json!({"type": "sh.keptn.event.dev.long.triggered", "source": "bench", "data": {"project": "bench", "stage": "dev", "service": "svc"}}))
            .await?;
        let mut i = 0;
        play(
            &mut n,
            &ctx,
            "sh.keptn.event.dev.long.finished",
            "bench",
            "svc",
            |f, t| {
                i += 1;
                if runs > 1 || i > 5 {
                    samples.push(t.duration_since(f).as_secs_f64() * 1000.0);
                }
            },
        )
        .await?;
    }
    println!(
        "| task transition latency, AWS backend on the emulator (.finished published → next .triggered published) | {} transitions | {} |",
        samples.len(),
        percentiles(&mut samples)
    );
    n.node.stop().await;
    Ok(())
}

// ---------------------------------------------------------------- requests

/// Prices (us-east-1, on-demand, USD).
mod price {
    pub const EVENTBRIDGE_EVENT: f64 = 1.00e-6;
    pub const SQS_REQUEST: f64 = 0.40e-6;
    pub const DDB_WRU: f64 = 0.625e-6;
    pub const DDB_RRU: f64 = 0.125e-6;
    pub const LAMBDA_REQUEST: f64 = 0.20e-6;
    /// arm64, per GB-second.
    pub const LAMBDA_GB_S_ARM: f64 = 0.000_013_333_4;
    pub const APIGW_HTTP_REQUEST: f64 = 1.00e-6;
}

/// Assumed billed duration per Lambda invocation (see BENCHMARKS.md).
const ASSUMED_INVOKE_MS: f64 = 30.0;
const MEMORY_GB: f64 = 0.25;

fn ddb_size(v: &Value) -> f64 {
    let Some(m) = v.as_object() else {
        return 0.0;
    };
    let Some((t, x)) = m.iter().next() else {
        return 0.0;
    };
    match t.as_str() {
        "S" => x.as_str().map_or(0, str::len) as f64,
        "N" => {
            let s = x.as_str().unwrap_or("0");
            let digits = s
                .trim_start_matches('-')
                .replace('.', "")
                .trim_start_matches('0')
                .trim_end_matches('0')
                .len()
                .max(1);
            (digits as f64 / 2.0).ceil() + 1.0
        }
        "B" => (x.as_str().map_or(0, str::len) * 3 / 4) as f64,
        "BOOL" | "NULL" => 1.0,
        "SS" | "NS" | "BS" => x
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e.as_str().map_or(0, str::len) as f64)
                    .sum()
            })
            .unwrap_or(0.0),
        "L" => {
            3.0 + x
                .as_array()
                .map(|a| a.iter().map(|e| ddb_size(e) + 1.0).sum())
                .unwrap_or(0.0)
        }
        "M" => 3.0 + item_size(x) + x.as_object().map_or(0, |o| o.len()) as f64,
        _ => 0.0,
    }
}

/// DynamoDB's item size: attribute names plus values.
fn item_size(item: &Value) -> f64 {
    item.as_object()
        .map(|o| o.iter().map(|(k, v)| k.len() as f64 + ddb_size(v)).sum())
        .unwrap_or(0.0)
}

fn gsis(item: &Value) -> usize {
    ["gsi1pk", "gsi2pk", "gsi3pk"]
        .iter()
        .filter(|k| item.get(**k).is_some())
        .count()
}

fn key_of(v: &Value) -> String {
    let s = |k: &str| v[k]["S"].as_str().unwrap_or_default().to_string();
    format!("{}\u{0}{}", s("pk"), s("sk"))
}

fn kind_of(key: &str) -> String {
    let (pk, sk) = key.split_once('\u{0}').unwrap_or((key, ""));
    let p = pk.split('#').next().unwrap_or_default();
    let s = sk.split('#').next().unwrap_or_default();
    format!("{p}/{s}")
}

/// Read and write units of the DynamoDB requests in `recs`, with the item
/// kinds written. `final_items` is the table after the run (sizes of updated
/// and deleted items are taken from the item as last seen, else from it).
#[derive(Default, Debug)]
struct Capacity {
    wru_table: f64,
    wru_gsi: f64,
    rru: f64,
    writes_by_kind: BTreeMap<String, (usize, f64)>,
    gets_by_kind: BTreeMap<String, usize>,
    unknown_sizes: usize,
}

fn kb(s: f64) -> f64 {
    (s / 1024.0).ceil().max(1.0)
}

/// One write of `item` (a put) or of the item at `key` (update, delete).
fn write(
    c: &mut Capacity,
    seen: &mut HashMap<String, Value>,
    final_items: &HashMap<String, Value>,
    item: Option<&Value>,
    key: &Value,
    factor: f64,
) {
    let k = key_of(item.unwrap_or(key));
    let known = item
        .cloned()
        .or_else(|| seen.get(&k).cloned())
        .or_else(|| final_items.get(&k).cloned());
    let (size, g) = match &known {
        Some(i) => (item_size(i), gsis(i)),
        None => {
            c.unknown_sizes += 1;
            (1024.0, 0)
        }
    };
    if let Some(i) = item {
        seen.insert(k.clone(), i.clone());
    }
    c.wru_table += factor * kb(size);
    c.wru_gsi += g as f64 * kb(size);
    let e = c.writes_by_kind.entry(kind_of(&k)).or_default();
    e.0 += 1;
    e.1 += size;
}

fn capacity(recs: &[Record], final_items: &HashMap<String, Value>) -> Capacity {
    let mut seen: HashMap<String, Value> = HashMap::new();
    let mut c = Capacity::default();
    let four_kb = |s: f64| (s / 4096.0).ceil().max(1.0);
    for r in recs {
        let Some(op) = r.op.strip_prefix("DynamoDB_20120810.") else {
            continue;
        };
        let req: Value = serde_json::from_slice(&r.req).unwrap_or(Value::Null);
        let resp: Value = serde_json::from_slice(&r.resp).unwrap_or(Value::Null);
        let consistent = req["ConsistentRead"].as_bool().unwrap_or(false);
        match op {
            "PutItem" => write(
                &mut c,
                &mut seen,
                final_items,
                Some(&req["Item"]),
                &Value::Null,
                1.0,
            ),
            "UpdateItem" | "DeleteItem" => {
                write(&mut c, &mut seen, final_items, None, &req["Key"], 1.0)
            }
            "TransactWriteItems" => {
                for a in req["TransactItems"].as_array().into_iter().flatten() {
                    if let Some(p) = a.get("Put") {
                        write(
                            &mut c,
                            &mut seen,
                            final_items,
                            Some(&p["Item"]),
                            &Value::Null,
                            2.0,
                        );
                    } else if let Some(u) = a.get("Update").or(a.get("Delete")) {
                        write(&mut c, &mut seen, final_items, None, &u["Key"], 2.0);
                    } else if let Some(u) = a.get("ConditionCheck") {
                        // Charged like a write of the checked item.
                        let k = key_of(&u["Key"]);
                        let s = seen
                            .get(&k)
                            .or(final_items.get(&k))
                            .map_or(1024.0, item_size);
                        c.wru_table += 2.0 * kb(s);
                    }
                }
            }
            "BatchWriteItem" => {
                for reqs in req["RequestItems"]
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.values())
                {
                    for w in reqs.as_array().into_iter().flatten() {
                        if let Some(p) = w.get("PutRequest") {
                            write(
                                &mut c,
                                &mut seen,
                                final_items,
                                Some(&p["Item"]),
                                &Value::Null,
                                1.0,
                            );
                        } else if let Some(d) = w.get("DeleteRequest") {
                            write(&mut c, &mut seen, final_items, None, &d["Key"], 1.0);
                        }
                    }
                }
            }
            "GetItem" => {
                *c.gets_by_kind
                    .entry(kind_of(&key_of(&req["Key"])))
                    .or_default() += 1;
                let s = resp.get("Item").map_or(0.0, item_size);
                if let Some(i) = resp.get("Item") {
                    seen.insert(key_of(i), i.clone());
                }
                c.rru += four_kb(s) * if consistent { 1.0 } else { 0.5 };
            }
            "Query" | "Scan" => {
                let items = resp["Items"].as_array().cloned().unwrap_or_default();
                let mut s: f64 = items.iter().map(item_size).sum();
                let count = resp["Count"].as_f64().unwrap_or(0.0);
                let scanned = resp["ScannedCount"].as_f64().unwrap_or(count);
                if scanned > count {
                    let avg = if items.is_empty() { 1024.0 } else { s / count };
                    s += (scanned - count) * avg;
                }
                if req.get("IndexName").is_none() {
                    for i in &items {
                        seen.insert(key_of(i), i.clone());
                    }
                }
                c.rru += four_kb(s) * if consistent { 1.0 } else { 0.5 };
            }
            "BatchGetItem" => {
                let consistent = req["RequestItems"]
                    .as_object()
                    .and_then(|o| o.values().next())
                    .and_then(|t| t["ConsistentRead"].as_bool())
                    .unwrap_or(false);
                let mut got = 0;
                for items in resp["Responses"]
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.values())
                {
                    for i in items.as_array().into_iter().flatten() {
                        got += 1;
                        c.rru += four_kb(item_size(i)) * if consistent { 1.0 } else { 0.5 };
                    }
                }
                let asked: usize = req["RequestItems"]
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.values())
                    .map(|t| t["Keys"].as_array().map_or(0, Vec::len))
                    .sum();
                c.rru += asked.saturating_sub(got) as f64 * if consistent { 1.0 } else { 0.5 };
            }
            "TransactGetItems" => {
                for r in resp["Responses"].as_array().into_iter().flatten() {
                    c.rru += 2.0 * four_kb(r.get("Item").map_or(0.0, item_size));
                }
            }
            _ => {}
        }
    }
    c
}

async fn scan_table(table: &str) -> anyhow::Result<HashMap<String, Value>> {
    let http = reqwest::Client::new();
    let mut out = HashMap::new();
    let mut start: Option<Value> = None;
    loop {
        let mut body = json!({"TableName": table, "ConsistentRead": true});
        if let Some(s) = start.take() {
            body["ExclusiveStartKey"] = s;
        }
        let v: Value = http
            .post(endpoint())
            .header("Content-Type", "application/x-amz-json-1.0")
            .header("X-Amz-Target", "DynamoDB_20120810.Scan")
            .header("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-target, Signature=0")
            .body(body.to_string())
            .send()
            .await?
            .json()
            .await?;
        for i in v["Items"].as_array().into_iter().flatten() {
            out.insert(key_of(i), i.clone());
        }
        match v.get("LastEvaluatedKey") {
            Some(k) => start = Some(k.clone()),
            None => return Ok(out),
        }
    }
}

fn is_empty_receive(r: &Record) -> bool {
    r.op == "AmazonSQS.ReceiveMessage"
        && serde_json::from_slice::<Value>(&r.resp)
            .ok()
            .and_then(|v| v["Messages"].as_array().map(Vec::len))
            .unwrap_or(0)
            == 0
}

fn received(r: &Record) -> usize {
    serde_json::from_slice::<Value>(&r.resp)
        .ok()
        .and_then(|v| v["Messages"].as_array().map(Vec::len))
        .unwrap_or(0)
}

fn short(op: &str) -> String {
    let (svc, name) = op.split_once('.').unwrap_or(("", op));
    let svc = match svc {
        "DynamoDB_20120810" => "DynamoDB",
        "AWSEvents" => "EventBridge",
        "AmazonSQS" => "SQS",
        "AmazonSSM" => "SSM",
        s => s,
    };
    format!("{svc} {name}")
}

/// The EventBridge rules of the template: which consumer queues an event type reaches.
fn rule_matches(detail_type: &str) -> usize {
    let shipyard = [".triggered", ".started", ".finished"]
        .iter()
        .any(|s| detail_type.ends_with(s));
    let datastore = detail_type.starts_with("sh.keptn.");
    shipyard as usize + datastore as usize
}

const PHASE_SETUP: usize = 0;
const PHASE_START: usize = 1;
const PHASE_RUN: usize = 2;
const PHASE_IDLE: usize = 3;

/// AWS requests per task transition, counted at a proxy in front of the
/// emulator, and what they cost at AWS prices.
pub async fn requests(
    deliveries: usize,
    idle_secs: u64,
    poll_wait: Duration,
) -> anyhow::Result<()> {
    let upstream: SocketAddr = endpoint()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .context("the endpoint must be http://<ip>:<port>")?;
    let (paddr, log) = proxy::start(upstream).await?;
    let stack = stack_name("benchreq");
    provision_stack(&stack, TOKEN).await?;
    log.set_phase(PHASE_START);
    let t_start = Instant::now();
    let mut n = aws_node(&format!("http://{paddr}"), &stack, poll_wait).await?;
    // Let the start-up sweep finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    log.set_phase(PHASE_SETUP);
    n.client.create_project("req", SHIPYARD).await?;
    n.client.create_service("req", "svc").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    while n.events.try_recv().is_ok() {}
    log.set_phase(PHASE_RUN);
    let run_start = Instant::now();
    let mut tasks = 0;
    let mut api_posts = 0;
    for d in 0..deliveries {
        let ctx = n
            .client
            .send_event(&json!({"type": "sh.keptn.event.dev.delivery.triggered", "source": "bench",
                "data": {"project": "req", "stage": "dev", "service": "svc",
                         "configurationChange": {"values": {"image": format!("example/svc:{d}")}}}}))
            .await?;
        api_posts += 1;
        let t = play(
            &mut n,
            &ctx,
            "sh.keptn.event.production.delivery.finished",
            "req",
            "svc",
            |_, _| {},
        )
        .await?;
        tasks += t;
        api_posts += 2 * t;
    }
    // Until the datastore and shipyard have consumed the last events: no
    // request but idle receives for 3 s.
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let recs = log.of_phase(PHASE_RUN);
        let last = recs
            .iter()
            .filter(|r| !is_empty_receive(r))
            .map(|r| r.at)
            .max();
        if last.is_some_and(|l| l.elapsed() > Duration::from_secs(3)) {
            break;
        }
    }
    let run_secs = run_start.elapsed().as_secs_f64();
    log.set_phase(PHASE_IDLE);
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle_elapsed = idle_start.elapsed().as_secs_f64();
    let idle = log.of_phase(PHASE_IDLE);
    n.node.stop().await;
    let run = log.of_phase(PHASE_RUN);
    let start = log.of_phase(PHASE_START);
    let setup = log.of_phase(PHASE_SETUP);
    let final_items = scan_table(&format!("{stack}-state")).await?;

    let tr = tasks as f64;
    println!("\n### AWS requests, stack {stack}: {deliveries} deliveries of the 3-stage shipyard, {tasks} task transitions, {run_secs:.1} s (node start {:.1} s)\n", t_start.elapsed().as_secs_f64() - run_secs - idle_elapsed);
    // Counts per operation.
    let mut ops: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut empty_run = 0;
    let mut msgs_received = 0;
    let mut events_put = 0;
    let mut sends = 0;
    let mut event_bytes: Vec<usize> = vec![];
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for r in &run {
        if is_empty_receive(r) {
            empty_run += 1;
            continue;
        }
        if r.op == "AmazonSQS.ReceiveMessage" {
            msgs_received += received(r);
        }
        if r.op == "AWSEvents.PutEvents" {
            let v: Value = serde_json::from_slice(&r.req).unwrap_or(Value::Null);
            for e in v["Entries"].as_array().into_iter().flatten() {
                events_put += 1;
                let dt = e["DetailType"].as_str().unwrap_or_default();
                let kind = dt.rsplit('.').next().unwrap_or_default().to_string();
                *by_type.entry(kind).or_default() += 1;
                sends += rule_matches(dt);
                event_bytes.push(
                    e["Detail"].as_str().map_or(0, str::len)
                        + dt.len()
                        + e["Source"].as_str().map_or(0, str::len),
                );
            }
        }
        if r.status != 200 {
            *errors.entry(short(&r.op)).or_default() += 1;
        }
        let e = ops.entry(short(&r.op)).or_default();
        e.0 += 1;
        e.1 += r.req.len();
    }
    println!("| operation | requests | per delivery | per task transition | mean request body |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut total = 0;
    for (op, (c, bytes)) in &ops {
        total += c;
        println!(
            "| {op} | {c} | {:.2} | {:.2} | {} B |",
            *c as f64 / deliveries as f64,
            *c as f64 / tr,
            bytes / c.max(&1)
        );
    }
    println!(
        "| (implicit) SQS SendMessage by EventBridge rule targets | {sends} | {:.2} | {:.2} | |",
        sends as f64 / deliveries as f64,
        sends as f64 / tr
    );
    println!(
        "| **total (excluding idle receives)** | {} | {:.2} | {:.2} | |",
        total + sends,
        (total + sends) as f64 / deliveries as f64,
        (total + sends) as f64 / tr
    );
    println!("| idle (empty) ReceiveMessage during the run | {empty_run} | | | |");
    println!("\nNon-200 responses (e.g. failed conditions), included above: {errors:?}");
    println!(
        "\nEvents published: {events_put} ({:.2} per task transition; by kind {:?}); messages received {msgs_received}; API POSTs by the executors {api_posts} ({:.2} per task transition).",
        events_put as f64 / tr,
        by_type,
        api_posts as f64 / tr
    );
    event_bytes.sort();
    if !event_bytes.is_empty() {
        println!(
            "PutEvents entry size (detail + detail-type + source): median {} B, max {} B.",
            event_bytes[event_bytes.len() / 2],
            event_bytes[event_bytes.len() - 1]
        );
    }
    let mut rtt: HashMap<String, Vec<f64>> = HashMap::new();
    for r in run.iter().filter(|r| !is_empty_receive(r)) {
        rtt.entry(short(&r.op)).or_default().push(r.elapsed_ms);
    }
    let mut rtt: Vec<_> = rtt.into_iter().collect();
    rtt.sort_by(|a, b| a.0.cmp(&b.0));
    println!(
        "\nRound trip through proxy+emulator (ms, p50): {}",
        rtt.iter_mut()
            .map(|(k, v)| {
                v.sort_by(f64::total_cmp);
                format!("{k} {:.1}", v[v.len() / 2])
            })
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Capacity.
    let cap = capacity(&run, &final_items);
    println!(
        "\nDynamoDB capacity (estimated from request/response items): {:.1} WRU table (transactional ×2 included) + {:.1} WRU GSI = {:.2} WRU per task transition; {:.1} RRU = {:.2} RRU per task transition; {} writes of unknown size (1 KB assumed).",
        cap.wru_table,
        cap.wru_gsi,
        (cap.wru_table + cap.wru_gsi) / tr,
        cap.rru,
        cap.rru / tr,
        cap.unknown_sizes
    );
    println!("\n| item kind written | writes | per task transition | mean size |");
    println!("| --- | ---: | ---: | ---: |");
    for (k, (c, s)) in &cap.writes_by_kind {
        println!(
            "| {k} | {c} | {:.2} | {:.0} B |",
            *c as f64 / tr,
            s / *c as f64
        );
    }

    println!(
        "\nGetItem by item kind: {}",
        cap.gets_by_kind
            .iter()
            .map(|(k, c)| format!("{k} {:.2}/transition", *c as f64 / tr))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Cost.
    let sqs_reqs = ops
        .iter()
        .filter(|(k, _)| k.starts_with("SQS "))
        .map(|(_, (c, _))| c)
        .sum::<usize>()
        + sends;
    let invocations_batched = api_posts + ops.get("SQS ReceiveMessage").map_or(0, |(c, _)| *c);
    let invocations_single = api_posts + msgs_received;
    let per_tr = |x: f64| x / tr;
    let eb = per_tr(events_put as f64) * price::EVENTBRIDGE_EVENT;
    let sqs = per_tr(sqs_reqs as f64) * price::SQS_REQUEST;
    let ddb_w = per_tr(cap.wru_table + cap.wru_gsi) * price::DDB_WRU;
    let ddb_r = per_tr(cap.rru) * price::DDB_RRU;
    let lam = |inv: usize| {
        per_tr(inv as f64)
            * (price::LAMBDA_REQUEST
                + ASSUMED_INVOKE_MS / 1000.0 * MEMORY_GB * price::LAMBDA_GB_S_ARM)
    };
    let apigw = per_tr(api_posts as f64) * price::APIGW_HTTP_REQUEST;
    println!("\n| cost per 1M task transitions (USD) | units per transition | USD |");
    println!("| --- | ---: | ---: |");
    let row =
        |name: &str, units: f64, usd: f64| println!("| {name} | {units:.2} | {:.2} |", usd * 1e6);
    row(
        "EventBridge custom events ($1.00/M)",
        per_tr(events_put as f64),
        eb,
    );
    row(
        "SQS requests incl. rule deliveries ($0.40/M)",
        per_tr(sqs_reqs as f64),
        sqs,
    );
    row(
        "DynamoDB writes ($0.625/M WRU)",
        per_tr(cap.wru_table + cap.wru_gsi),
        ddb_w,
    );
    row("DynamoDB reads ($0.125/M RRU)", per_tr(cap.rru), ddb_r);
    row(
        "Lambda, one invocation per received batch ($0.20/M + 30 ms × 256 MB arm64)",
        per_tr(invocations_batched as f64),
        lam(invocations_batched),
    );
    row(
        "API Gateway HTTP API ($1.00/M)",
        per_tr(api_posts as f64),
        apigw,
    );
    let total_usd = eb + sqs + ddb_w + ddb_r + lam(invocations_batched) + apigw;
    println!("| **total** | | **{:.2}** |", total_usd * 1e6);
    println!(
        "\nPer 1M events published ({:.2} events per task transition): ${:.2}. With one Lambda invocation per message instead of per batch ({:.2} invocations per transition): ${:.2} per 1M transitions.",
        events_put as f64 / tr,
        total_usd * 1e6 * tr / events_put as f64,
        per_tr(invocations_single as f64),
        (total_usd - lam(invocations_batched) + lam(invocations_single)) * 1e6
    );

    // Idle and fixed costs.
    let idle_receives = idle.iter().filter(|r| is_empty_receive(r)).count();
    let idle_other = idle.len() - idle_receives;
    println!(
        "\nIdle: {idle_receives} empty ReceiveMessage in {idle_elapsed:.1} s ({:.3}/s, 4 pollers, wait {} s) and {idle_other} other requests; run: {empty_run} empty receives in {run_secs:.1} s.",
        idle_receives as f64 / idle_elapsed,
        poll_wait.as_secs()
    );
    let mut start_ops: BTreeMap<String, usize> = BTreeMap::new();
    for r in &start {
        *start_ops.entry(short(&r.op)).or_default() += 1;
    }
    println!("Node start (queue lookups, one sweep, first receives): {start_ops:?}");
    let mut setup_ops: BTreeMap<String, usize> = BTreeMap::new();
    for r in setup.iter().filter(|r| !is_empty_receive(r)) {
        *setup_ops.entry(short(&r.op)).or_default() += 1;
    }
    println!("Project + service creation: {setup_ops:?}");
    Ok(())
}
