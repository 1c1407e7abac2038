//! Quality-gate figures: the lighthouse's pure decision in process
//! (`evaluate`), and evaluations end to end through a local node's REST
//! trigger with an SLI provider playing a remote Keptn integration (`gates`).

use anyhow::{bail, Context};
use keelson::client::Client;
use keelson::{Node, NodeOptions, Observer, StoreChoice};
use keelson_core::event::KeptnEvent;
use keelson_core::slo::{self, PreviousEvaluation, SloInput};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Ten objectives: relative and absolute criteria, warnings, criteria sets
/// OR-ed, one key SLI, one informational objective, weights; compared with
/// the average of the last three passing or warning results.
pub const SLO: &str = r#"---
spec_version: "1.0"
filter:
  handler: "ItemsController.addToCart"
  id: "carts-primary"
comparison:
  aggregate_function: "avg"
  compare_with: "several_results"
  include_result_with_score: "pass_or_warn"
  number_of_comparison_results: 3
objectives:
  - sli: "response_time_p95"
    displayName: "Response time P95"
    pass:
      - criteria: ["<=+10%", "<600"]
    warning:
      - criteria: ["<=800"]
  - sli: "response_time_p50"
    displayName: "Response time P50"
    pass:
      - criteria: ["<=+10%"]
      - criteria: ["<200"]
    warning:
      - criteria: ["<=+25%"]
  - sli: "error_rate"
    displayName: "Error rate"
    key_sli: true
    weight: 2
    pass:
      - criteria: ["<=0.01"]
    warning:
      - criteria: ["<=0.02"]
  - sli: "throughput"
    displayName: "Throughput"
    pass:
      - criteria: [">=-10%", ">100"]
  - sli: "cpu_usage"
    displayName: "CPU usage"
    pass:
      - criteria: ["<80"]
    warning:
      - criteria: ["<90"]
  - sli: "memory_usage"
    displayName: "Memory usage (MiB)"
    pass:
      - criteria: ["<=+20%", "<2048"]
  - sli: "gc_pause_p99"
    displayName: "GC pause P99"
    pass:
      - criteria: ["<=50"]
    warning:
      - criteria: ["<=100"]
  - sli: "db_query_p95"
    displayName: "DB query P95"
    weight: 2
    pass:
      - criteria: ["<=+5%"]
    warning:
      - criteria: ["<=+15%"]
  - sli: "http_5xx"
    displayName: "HTTP 5xx responses"
    pass:
      - criteria: ["=0"]
    warning:
      - criteria: ["<=2"]
  - sli: "request_count"
    displayName: "Requests"
total_score:
  pass: "90%"
  warning: "75%"
"#;

const START: &str = "2026-11-01T10:00:00.000Z";
const END: &str = "2026-11-01T10:05:00.000Z";

/// The SLIs of [`SLO`] and their base values (all within the pass criteria).
const SLIS: [(&str, f64); 10] = [
    ("response_time_p95", 420.0),
    ("response_time_p50", 180.0),
    ("error_rate", 0.004),
    ("throughput", 1250.0),
    ("cpu_usage", 55.0),
    ("memory_usage", 900.0),
    ("gc_pause_p99", 21.0),
    ("db_query_p95", 12.5),
    ("http_5xx", 0.0),
    ("request_count", 375000.0),
];

/// Indicator values as a provider sends them, varied by `seed` by at most ±2%
/// (so relative criteria against the last three results keep passing).
fn indicator_values(seed: u64) -> Value {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let values: Vec<Value> = SLIS
        .iter()
        .map(|(m, v)| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let jitter = ((x >> 33) % 401) as f64 / 10_000.0 - 0.02;
            let v = (v * (1.0 + jitter) * 1000.0).round() / 1000.0;
            json!({"metric": m, "value": v, "success": true})
        })
        .collect();
    Value::Array(values)
}

fn get_sli_finished_data(project: &str, stage: &str, service: &str, seed: u64) -> Value {
    json!({
        "project": project, "stage": stage, "service": service,
        "labels": {"buildId": "build-17", "owner": "team-carts"},
        "status": "succeeded", "result": "pass",
        "get-sli": {"start": START, "end": END, "indicatorValues": indicator_values(seed)}
    })
}

fn summarize(per_eval_ns: &mut [f64]) -> (f64, f64, f64) {
    per_eval_ns.sort_by(|a, b| a.total_cmp(b));
    (
        crate::pct(per_eval_ns, 50.0),
        crate::pct(per_eval_ns, 90.0),
        per_eval_ns[0],
    )
}

/// Times `f` in samples of `iters` calls after a warm-up; returns the
/// per-call times in ns, one per sample.
fn sample<T>(samples: usize, mut f: impl FnMut() -> T) -> Vec<f64> {
    // Warm-up, and a batch size that makes a sample last ~2 ms.
    let warm = Instant::now();
    let mut calls = 0u64;
    while warm.elapsed() < Duration::from_millis(500) {
        black_box(f());
        calls += 1;
    }
    let per = warm.elapsed().as_secs_f64() / calls as f64;
    let iters = ((0.002 / per) as u64).clamp(1, 1_000_000);
    (0..samples)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            t.elapsed().as_secs_f64() * 1e9 / iters as f64
        })
        .collect()
}

/// Three earlier `evaluation.finished` CloudEvents of the same service,
/// newest first, produced by the decision itself (each compared with those
/// before it).
fn previous_events() -> anyhow::Result<Vec<Value>> {
    let mut events: Vec<Value> = vec![];
    for i in 0..3u64 {
        let prev = slo::previous_from_values(&events)?;
        let data = slo::evaluation_finished_data(
            &get_sli_finished_data("sockshop", "staging", "carts", 100 + i),
            SloInput::Text(SLO),
            &prev,
        );
        let ev = json!({
            "specversion": "1.0",
            "id": format!("6f1c2a3e-0000-4000-8000-00000000000{i}"),
            "source": "lighthouse-service",
            "type": "sh.keptn.event.evaluation.finished",
            "time": "2026-11-01T09:00:00.000Z",
            "shkeptncontext": format!("0b2d4c6e-0000-4000-8000-00000000000{i}"),
            "triggeredid": format!("a1b2c3d4-0000-4000-8000-00000000000{i}"),
            "data": data,
        });
        events.insert(0, ev);
    }
    Ok(events)
}

/// `evaluate`: the lighthouse's pure work for one `get-sli.finished`.
pub fn evaluate_bench(samples: usize) -> anyhow::Result<()> {
    let stored = previous_events()?;
    let previous: Vec<PreviousEvaluation> = slo::previous_from_values(&stored)?;
    let get_sli = get_sli_finished_data("sockshop", "staging", "carts", 7);
    let out = slo::evaluation_finished_data(&get_sli, SloInput::Text(SLO), &previous);
    let ev = &out["evaluation"];
    let results = ev["indicatorResults"].as_array().map_or(0, Vec::len);
    let compared = ev["comparedEvents"].as_array().map_or(0, Vec::len);
    if out["status"] != "succeeded" || results != 10 || compared != 3 {
        bail!("the fixture does not evaluate as intended: {out:#}");
    }
    let statuses: Vec<&str> = ev["indicatorResults"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["status"].as_str())
        .collect();
    eprintln!(
        "fixture: result {}, score {}, {} indicator results ({}), {} compared events, output {} bytes of JSON",
        out["result"],
        ev["score"],
        results,
        statuses.join(","),
        compared,
        serde_json::to_string(&out)?.len()
    );
    let parsed = slo::parse(SLO)?;
    let values: Vec<slo::IndicatorValue> =
        serde_json::from_value(get_sli["get-sli"]["indicatorValues"].clone())?;
    let selected = slo::select_previous(&parsed.comparison, previous.clone());

    let rows: Vec<(&str, Vec<f64>)> = vec![
        (
            "`evaluation_finished_data` (decode get-sli data, parse slo.yaml, select, score, render the JSON `data`)",
            sample(samples, || {
                slo::evaluation_finished_data(
                    black_box(&get_sli),
                    SloInput::Text(black_box(SLO)),
                    black_box(&previous),
                )
            }),
        ),
        (
            "`evaluation_finished_data` with the SLO parsed already (`SloInput::Parsed`: decode, select, score, render)",
            sample(samples, || {
                slo::evaluation_finished_data(
                    black_box(&get_sli),
                    SloInput::Parsed {
                        text: SLO,
                        slo: black_box(&parsed),
                    },
                    black_box(&previous),
                )
            }),
        ),
        (
            "`previous_from_values` (decode 3 stored `evaluation.finished` events)",
            sample(samples, || slo::previous_from_values(black_box(&stored))),
        ),
        (
            "`parse` (slo.yaml, 10 objectives)",
            sample(samples, || slo::parse(black_box(SLO))),
        ),
        (
            "`evaluate` (parsed SLO, 10 values, 3 previous)",
            sample(samples, || {
                slo::evaluate(black_box(&parsed), black_box(&values), black_box(&selected))
            }),
        ),
        (
            "lighthouse's pure work per `get-sli.finished` (`parse` once + `previous_from_values` + `evaluation_finished_data` with the parsed SLO)",
            sample(samples, || {
                let prev = slo::previous_from_values(black_box(&stored)).unwrap_or_default();
                match slo::parse(black_box(SLO)) {
                    Ok(p) => {
                        let prev = slo::select_previous(&p.comparison, prev);
                        slo::evaluation_finished_data(
                            black_box(&get_sli),
                            SloInput::Parsed { text: SLO, slo: &p },
                            &prev,
                        )
                    }
                    Err(_) => {
                        slo::evaluation_finished_data(black_box(&get_sli), SloInput::Text(SLO), &prev)
                    }
                }
            }),
        ),
    ];
    for (what, mut ns) in rows {
        let (p50, p90, min) = summarize(&mut ns);
        println!(
            "| {what} | {samples} samples | median {:.2} µs | p90 {:.2} µs | min {:.2} µs |",
            p50 / 1000.0,
            p90 / 1000.0,
            min / 1000.0
        );
    }
    Ok(())
}

const SHIPYARD: &str = "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\nmetadata: {name: gates}\nspec:\n  stages:\n    - name: staging\n      sequences:\n        - name: delivery\n          tasks: [{name: deployment}, {name: evaluation}]\n";

/// The events of one REST-triggered evaluation, in order.
const STEPS: [&str; 8] = [
    "sh.keptn.event.staging.evaluation.triggered",
    "sh.keptn.event.evaluation.triggered",
    "sh.keptn.event.evaluation.started",
    "sh.keptn.event.get-sli.triggered",
    "sh.keptn.event.get-sli.started",
    "sh.keptn.event.get-sli.finished",
    "sh.keptn.event.evaluation.finished",
    "sh.keptn.event.staging.evaluation.finished",
];
const FINISHED: usize = 6;

#[derive(Default)]
struct Trace {
    at: [Option<Instant>; 8],
    waiter: Option<oneshot::Sender<Instant>>,
    result: Option<(String, String)>,
}

#[derive(Default)]
struct Seen {
    traces: Mutex<HashMap<String, Trace>>,
    events: AtomicU64,
}

/// One provider request: `get-sli.triggered` id, context and data.
type SliRequest = (String, String, Value);

fn observer(seen: Arc<Seen>, provider: mpsc::UnboundedSender<SliRequest>) -> Observer {
    Arc::new(move |e: &KeptnEvent| {
        let now = Instant::now();
        seen.events.fetch_add(1, Ordering::Relaxed);
        let Some(step) = STEPS.iter().position(|s| *s == e.ty) else {
            return;
        };
        if step == 3 && e.data.pointer("/get-sli/sliProvider") == Some(&json!("bench")) {
            let _ = provider.send((e.id.clone(), e.shkeptncontext.clone(), e.data.clone()));
        }
        let mut traces = seen.traces.lock().unwrap();
        let t = traces.entry(e.shkeptncontext.clone()).or_default();
        t.at[step].get_or_insert(now);
        if step == FINISHED {
            let s = |k: &str| e.data[k].as_str().unwrap_or_default().to_string();
            t.result = Some((s("status"), s("result")));
            if let Some(w) = t.waiter.take() {
                let _ = w.send(now);
            }
        }
    })
}

/// The SLI provider, as a remote Keptn integration: told of each
/// `get-sli.triggered` (by the bus observer here, by a subscription in
/// Keptn), it POSTs `get-sli.started` and `get-sli.finished` to the API.
fn spawn_provider(c: Client, mut rx: mpsc::UnboundedReceiver<SliRequest>) {
    let seed = Arc::new(AtomicU64::new(1));
    tokio::spawn(async move {
        while let Some((id, ctx, data)) = rx.recv().await {
            let c = c.clone();
            let seed = seed.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let s = |k: &str| data[k].as_str().unwrap_or_default().to_string();
                let (p, st, svc) = (s("project"), s("stage"), s("service"));
                let started = json!({"type": "sh.keptn.event.get-sli.started", "source": "bench-sli-provider",
                    "shkeptncontext": ctx, "triggeredid": id,
                    "data": {"project": p, "stage": st, "service": svc, "status": "succeeded"}});
                let mut d = get_sli_finished_data(&p, &st, &svc, seed);
                d["get-sli"]["start"] = data["get-sli"]["start"].clone();
                d["get-sli"]["end"] = data["get-sli"]["end"].clone();
                let finished = json!({"type": "sh.keptn.event.get-sli.finished", "source": "bench-sli-provider",
                    "shkeptncontext": ctx, "triggeredid": id, "data": d});
                for ev in [started, finished] {
                    if let Err(e) = c.send_event(&ev).await {
                        eprintln!("SLI provider: {e:#}");
                    }
                }
            });
        }
    });
}

/// Fires one evaluation and waits for its `evaluation.finished`; returns
/// the trigger time and the context.
async fn one_evaluation(
    c: &Client,
    seen: &Seen,
    service: &str,
) -> anyhow::Result<(Instant, String)> {
    let path = format!("/controlPlane/v1/project/gates/stage/staging/service/{service}/evaluation");
    let t0 = Instant::now();
    let v = c.post(&path, &json!({"start": START, "end": END})).await?;
    let ctx = v["keptnContext"]
        .as_str()
        .context("no keptnContext")?
        .to_string();
    let rx = {
        let mut traces = seen.traces.lock().unwrap();
        let t = traces.entry(ctx.clone()).or_default();
        if t.at[FINISHED].is_some() {
            None
        } else {
            let (tx, rx) = oneshot::channel();
            t.waiter = Some(tx);
            Some(rx)
        }
    };
    if let Some(rx) = rx {
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .with_context(|| format!("no evaluation.finished for {ctx} within 60 s"))??;
    }
    Ok((t0, ctx))
}

/// Counts warnings logged by the node (a consumer's retry shows up here).
mod warnings {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    pub type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

    struct Count(Counts);

    impl Count {
        fn wanted(&self, m: &tracing::Metadata<'_>) -> bool {
            m.is_event() && *m.level() <= tracing::Level::WARN
        }
    }

    struct Msg(String);

    impl Visit for Msg {
        fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
            if matches!(f.name(), "message" | "error" | "consumer") {
                let s = format!("{v:?}");
                let s: String = s.chars().take(90).collect();
                self.0.push_str(&format!("{}={s} ", f.name()));
            }
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Count {
        // Only warnings are enabled, no span: the registry then tracks no
        // spans, which keeps its cost out of the figures (and the shipyard
        // consumer holds an entered span across an await, which makes the
        // registry panic under load once debug spans are enabled).
        fn register_callsite(
            &self,
            m: &'static tracing::Metadata<'static>,
        ) -> tracing::subscriber::Interest {
            if self.wanted(m) {
                tracing::subscriber::Interest::always()
            } else {
                tracing::subscriber::Interest::never()
            }
        }

        fn enabled(&self, m: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
            self.wanted(m)
        }

        fn on_event(&self, e: &tracing::Event<'_>, _: Context<'_, S>) {
            if *e.metadata().level() <= tracing::Level::WARN {
                let mut m = Msg(String::new());
                e.record(&mut m);
                // Ids differ per event; keep the message's shape.
                let key: String =
                    m.0.split(' ')
                        .map(|w| {
                            if w.len() >= 32 && w.contains('-') {
                                "<id>"
                            } else {
                                w
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                *self.0.lock().unwrap().entry(key).or_default() += 1;
            }
        }
    }

    pub fn install() -> Counts {
        let counts = Counts::default();
        let _ = tracing_subscriber::registry()
            .with(Count(counts.clone()))
            .try_init();
        counts
    }
}

/// CPU seconds (user, system) this process has used, from `/proc/self/stat`.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at the state.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the state.
    (tick(11), tick(12))
}

/// This process's I/O counters from `/proc/self/io`: read and write system
/// calls (`syscr`, `syscw`) and the bytes they moved (`rchar`, `wchar`) —
/// SQLite's page reads and WAL writes, the checkpoint's copies, the HTTP
/// sockets. Unlike the rate, they hardly depend on the host's speed of the
/// moment, so they show a change in the work per evaluation.
fn io_counters() -> [u64; 4] {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    [
        field("syscr"),
        field("rchar"),
        field("syscw"),
        field("wchar"),
    ]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `gates`: `total` REST-triggered evaluations, `concurrency` in flight
/// (closed loop: each worker waits for its `evaluation.finished`), spread
/// over `services` services of one stage (one lane each: a lane runs one
/// sequence at a time, as in Keptn).
pub async fn gates(
    total: usize,
    concurrency: usize,
    services: usize,
    warm_per_service: usize,
) -> anyhow::Result<()> {
    let warns = warnings::install();
    let dir = tempfile::tempdir()?;
    // KEEP=1 leaves the SQLite file behind for inspection (sizes of rows and tables).
    let keep = std::env::var_os("KEEP").is_some();
    if keep {
        eprintln!("dir {}", dir.path().display());
    }
    let seen = Arc::new(Seen::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let mut opts = NodeOptions::new(
        StoreChoice::Sqlite(dir.path().to_path_buf()),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        crate::TOKEN.into(),
    );
    opts.observer = Some(observer(seen.clone(), tx));
    opts.lighthouse.default_sli_provider = Some("bench".into());
    let n = Node::start(opts).await?;
    let c = Client::new(&n.api_url(), crate::TOKEN);
    spawn_provider(Client::new(&n.api_url(), crate::TOKEN), rx);
    c.create_project("gates", SHIPYARD).await?;
    let names: Vec<String> = (0..services).map(|i| format!("svc-{i:03}")).collect();
    for s in &names {
        c.create_service("gates", s).await?;
        c.add_resource(
            "gates",
            Some("staging"),
            Some(s),
            "slo.yaml",
            SLO.as_bytes(),
        )
        .await?;
    }
    // Warm-up: every service gets enough results to compare with three.
    let warm = Instant::now();
    let mut hs = vec![];
    for s in names.clone() {
        let (c, seen) = (c.clone(), seen.clone());
        hs.push(tokio::spawn(async move {
            for _ in 0..warm_per_service {
                one_evaluation(&c, &seen, &s).await?;
            }
            anyhow::Ok(())
        }));
    }
    for h in hs {
        h.await??;
    }
    eprintln!(
        "warm-up: {} evaluations in {:.2} s",
        services * warm_per_service,
        warm.elapsed().as_secs_f64()
    );
    // Let the shipyard close the last sequences before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let events0 = seen.events.load(Ordering::Relaxed);
    let load0 = loadavg();
    let cpu0 = cpu_seconds();
    let io0 = io_counters();
    let next = Arc::new(AtomicUsize::new(0));
    let names = Arc::new(names);
    let start = Instant::now();
    let mut hs = vec![];
    for w in 0..concurrency {
        let (c, seen, next, names) = (c.clone(), seen.clone(), next.clone(), names.clone());
        hs.push(tokio::spawn(async move {
            let mut done = vec![];
            while next.fetch_add(1, Ordering::Relaxed) < total {
                done.push(one_evaluation(&c, &seen, &names[w % names.len()]).await?);
            }
            anyhow::Ok(done)
        }));
    }
    let mut done = vec![];
    for h in hs {
        done.extend(h.await??);
    }
    let elapsed = start.elapsed();
    let cpu1 = cpu_seconds();
    let io1 = io_counters();
    let events = seen.events.load(Ordering::Relaxed) - events0;
    // Sequences still closing after the last evaluation.finished.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let traces = std::mem::take(&mut *seen.traces.lock().unwrap());
    let mut latency = vec![];
    let mut hops: Vec<Vec<f64>> = vec![vec![]; STEPS.len()];
    let mut outcomes: HashMap<(String, String), usize> = HashMap::new();
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
    for (t0, ctx) in &done {
        let t = &traces[ctx];
        let at = t.at;
        if let Some(f) = at[FINISHED] {
            latency.push(ms(*t0, f));
        }
        if let Some(a) = at[0] {
            hops[0].push(ms(*t0, a));
        }
        for i in 1..STEPS.len() {
            if let (Some(a), Some(b)) = (at[i - 1], at[i]) {
                hops[i].push(ms(a, b));
            }
        }
        *outcomes
            .entry(t.result.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let rate = done.len() as f64 / elapsed.as_secs_f64();
    println!(
        "| REST-triggered evaluations end to end ({concurrency} in flight over {services} services, SLI provider over HTTP) | {} evaluations in {:.2} s | **{rate:.0} evaluations/s** | trigger → evaluation.finished {} | {:.2} events published per evaluation |",
        done.len(),
        elapsed.as_secs_f64(),
        crate::percentiles(&mut latency),
        events as f64 / done.len() as f64
    );
    let labels = [
        "POST …/evaluation → `staging.evaluation.triggered` published (API)",
        "→ `evaluation.triggered` (shipyard, incl. lane queueing)",
        "→ `evaluation.started` (lighthouse, reads slo.yaml)",
        "→ `get-sli.triggered` (same publish)",
        "→ `get-sli.started` accepted (provider over HTTP)",
        "→ `get-sli.finished` accepted (provider over HTTP)",
        "→ `evaluation.finished` (lighthouse: trigger lookup, slo.yaml, previous, decision)",
        "→ `staging.evaluation.finished` (shipyard)",
    ];
    for (label, mut h) in labels.iter().zip(hops) {
        if !h.is_empty() {
            println!("|   {label} | {} |", crate::percentiles(&mut h));
        }
    }
    let (user, sys) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    println!(
        "|   process CPU (node + harness) | {:.2} cores busy on average (user {user:.2} s, system {sys:.2} s) | {:.0} µs CPU per evaluation | load average before: {load0}, after: {} |",
        (user + sys) / elapsed.as_secs_f64(),
        (user + sys) * 1e6 / done.len() as f64,
        loadavg()
    );
    let per = |i: usize| io1[i].saturating_sub(io0[i]) as f64 / done.len() as f64;
    println!(
        "|   I/O system calls (node + harness) | {:.1} reads ({:.1} KiB) per evaluation | {:.1} writes ({:.1} KiB) per evaluation |",
        per(0),
        per(1) / 1024.0,
        per(2),
        per(3) / 1024.0
    );
    let mut o: Vec<_> = outcomes.into_iter().collect();
    o.sort();
    eprintln!("outcomes (status, result): {o:?}");
    for (k, v) in warns.lock().unwrap().iter() {
        eprintln!("warning ×{v}: {k}");
    }
    n.stop().await;
    if o.iter().any(|((status, _), _)| status != "succeeded") {
        bail!("some evaluations did not succeed");
    }
    if keep {
        std::mem::forget(dir);
    }
    Ok(())
}
