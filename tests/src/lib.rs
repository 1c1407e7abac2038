//! Test harness: start a Keelson node in-process (or the `keelson` binary),
//! talk to it over HTTP, and play the execution plane the way a remote Keptn
//! integration does — by polling `/controlPlane/v1/event/triggered/{type}` and
//! answering through `POST /v1/event`. Waiting is by polling with a deadline.

/// A real Prometheus on loopback, loaded with known data.
pub mod alertmanager;
/// A Knative Broker played on loopback.
pub mod broker;
/// Knative mode's HTTP services on loopback with PostgreSQL.
pub mod knative;
pub mod prometheus;

use anyhow::{anyhow, bail};
use keelson::client::Client;
use keelson::{Node, NodeOptions, StoreChoice};
use keelson_core::ports::{Clock, ManualClock};
use keelson_core::Timestamp;
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Token every test node uses.
pub const TOKEN: &str = "test-token";

/// A three-stage shipyard with a rollback sequence and a delayed task.
pub const SHIPYARD: &str = include_str!("../../events-fixtures/shipyards/three-stage.yaml");

/// The tasks of [`SHIPYARD`]'s `delivery` sequence, stage by stage.
pub const SHIPYARD_DELIVERY: [(&str, &[&str]); 3] = [
    ("dev", &["deployment", "test", "release"]),
    ("hardening", &["deployment", "test", "release"]),
    ("production", &["deployment", "release"]),
];

/// A fresh stack on the emulator (started by `localstack/start` if needed), provisioned from the template.
pub fn aws_target() -> keelson::AwsTarget {
    let endpoint = keelson_aws::emulator::test_endpoint();
    keelson_aws::emulator::ensure(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        &endpoint,
    );
    let stack = format!("e2e{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut t = keelson::AwsTarget::new(keelson_aws::Settings::emulator(&endpoint), &stack);
    t.provision = true;
    t.poll_wait = Duration::from_secs(2);
    t
}

/// One stage, one sequence of three tasks.
pub const ONE_STAGE: &str = r#"apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: one}
spec:
  stages:
    - name: dev
      sequences:
        - name: delivery
          tasks: [{name: deployment}, {name: test}, {name: release}]
"#;

/// A node under test with its client.
pub struct TestNode {
    /// The node (local and AWS backends).
    pub node: Option<Node>,
    /// The deployment (Knative backend).
    pub knative: Option<knative::KnativeStack>,
    /// A client for it.
    pub client: Client,
    /// The manual clock, when the test asked for one.
    pub clock: Option<Arc<ManualClock>>,
    /// The stack, on the AWS backend.
    pub aws: Option<keelson::AwsTarget>,
}

/// How to start a test node.
#[derive(Default)]
pub struct Setup {
    /// Use a manual clock.
    pub manual_clock: bool,
    /// Task-started timeout.
    pub started_timeout_ms: Option<i64>,
    /// SQLite in this directory instead of memory.
    pub data_dir: Option<std::path::PathBuf>,
    /// The AWS backend on the emulator, on a fresh stack.
    pub aws: bool,
    /// Knative mode: the HTTP services behind the broker harness, on PostgreSQL.
    pub knative: bool,
    /// Functions to run (default: all).
    pub functions: Option<keelson::FunctionSet>,
    /// SLI provider of projects that configure none.
    pub sli_provider: Option<String>,
    /// Run the Prometheus SLI provider against this server.
    pub prometheus_url: Option<String>,
}

impl TestNode {
    /// Starts a node on a free loopback port with the memory store.
    pub async fn start() -> anyhow::Result<TestNode> {
        Self::start_with(Setup::default()).await
    }

    /// Starts a node with the AWS backend on a fresh stack on the emulator.
    pub async fn start_aws() -> anyhow::Result<TestNode> {
        Self::start_with(Setup {
            aws: true,
            ..Setup::default()
        })
        .await
    }

    /// The API's base URL (`…/api`).
    pub fn api_url(&self) -> String {
        match (&self.node, &self.knative) {
            (Some(n), _) => n.api_url(),
            (None, Some(k)) => k.api_url.clone(),
            (None, None) => String::new(),
        }
    }

    /// Whether events reach each consumer in the order they were published:
    /// local mode's queues do. AWS mode does not (two pollers per queue take
    /// batches concurrently, as Lambda's event source mapping does, and SQS
    /// standard queues are unordered), nor does Knative's channel-based broker,
    /// which delivers every event on its own.
    pub fn delivers_in_order(&self) -> bool {
        self.knative.is_none() && self.aws.is_none()
    }

    /// Starts a node as described.
    pub async fn start_with(s: Setup) -> anyhow::Result<TestNode> {
        if s.knative {
            return Self::start_knative(s).await;
        }
        let target = s.aws.then(aws_target);
        let store = match &s.data_dir {
            _ if s.aws => StoreChoice::Aws(target.clone().expect("aws")),
            Some(d) => StoreChoice::Sqlite(d.clone()),
            None => StoreChoice::Memory,
        };
        let mut opts = NodeOptions::new(store, SocketAddr::from(([127, 0, 0, 1], 0)), TOKEN.into());
        // The emulator answers every sweep's query; a slower sweep keeps it responsive.
        opts.tick_interval = Duration::from_millis(if s.aws { 200 } else { 20 });
        let clock = s
            .manual_clock
            .then(|| Arc::new(ManualClock::at(Timestamp::from_millis(1_800_000_000_000))));
        if let Some(c) = &clock {
            opts.clock = c.clone() as Arc<dyn Clock>;
        }
        if let Some(ms) = s.started_timeout_ms {
            opts.sequence.task_started_timeout_ms = ms;
        }
        if let Some(f) = s.functions {
            opts.functions = f;
        }
        opts.lighthouse.default_sli_provider = s.sli_provider;
        if let Some(url) = s.prometheus_url {
            opts.prometheus.default_url = Some(url);
            opts.functions.prometheus = true;
        }
        let node = Node::start(opts).await?;
        let client = Client::new(&node.api_url(), TOKEN);
        Ok(TestNode {
            node: Some(node),
            knative: None,
            client,
            clock,
            aws: target,
        })
    }

    async fn start_knative(s: Setup) -> anyhow::Result<TestNode> {
        use keelson_knative::Function;
        let clock = s
            .manual_clock
            .then(|| Arc::new(ManualClock::at(Timestamp::from_millis(1_800_000_000_000))));
        let mut cfg = keelson_knative::FunctionConfig {
            token: TOKEN.into(),
            tick_interval: Duration::from_millis(50),
            ..Default::default()
        };
        if let Some(ms) = s.started_timeout_ms {
            cfg.sequence.task_started_timeout_ms = ms;
        }
        cfg.lighthouse.default_sli_provider = s.sli_provider;
        let with_prometheus = s.prometheus_url.is_some();
        cfg.prometheus.default_url = s.prometheus_url;
        let set = s.functions.unwrap_or_else(keelson::FunctionSet::all);
        let run = move |f: Function| match f {
            Function::Api => set.api,
            Function::Shipyard => set.shipyard,
            Function::Datastore => set.datastore,
            Function::DeadLetter => true,
            Function::Lighthouse => set.lighthouse,
            Function::Approval => set.approval,
            Function::Remediation => set.remediation,
            Function::Prometheus => with_prometheus || set.prometheus,
        };
        let system: Arc<dyn Clock> = Arc::new(keelson_core::ports::SystemClock);
        let c = clock.clone().map_or(system, |c| c as Arc<dyn Clock>);
        // The manifests' back-off (0.5 s doubling) shortened tenfold.
        let stack = knative::KnativeStack::start(cfg, c, run, 0.1).await?;
        let client = Client::new(&stack.api_url, TOKEN);
        Ok(TestNode {
            node: None,
            knative: Some(stack),
            client,
            clock,
            aws: None,
        })
    }

    /// Creates a project from [`SHIPYARD`] (or `shipyard`) with one service.
    pub async fn project(
        &self,
        name: &str,
        shipyard: Option<&str>,
        service: &str,
    ) -> anyhow::Result<()> {
        self.client
            .create_project(name, shipyard.unwrap_or(SHIPYARD))
            .await?;
        self.client.create_service(name, service).await
    }

    /// Triggers `<stage>.<sequence>` for a service with an image; returns the context.
    pub async fn trigger(
        &self,
        project: &str,
        stage: &str,
        sequence: &str,
        service: &str,
        image: &str,
    ) -> anyhow::Result<String> {
        self.client
            .send_event(&json!({"type": format!("sh.keptn.event.{stage}.{sequence}.triggered"), "source": "e2e",
                "data": {"project": project, "stage": stage, "service": service,
                         "configurationChange": {"values": {"image": image}}}}))
            .await
    }

    /// The sequence state of a context (once it exists).
    pub async fn state(&self, project: &str, ctx: &str) -> anyhow::Result<Option<Value>> {
        Ok(self
            .client
            .sequences(project, Some(ctx))
            .await?
            .into_iter()
            .next())
    }

    /// Waits until the context's state is `want`.
    pub async fn wait_state(&self, project: &str, ctx: &str, want: &str) -> anyhow::Result<Value> {
        wait_for(Duration::from_secs(20), || async {
            Ok(self
                .state(project, ctx)
                .await?
                .filter(|s| s["state"] == json!(want)))
        })
        .await
        .map_err(|e| anyhow!("context {ctx} never reached state {want}: {e}"))
    }

    /// Open task triggers of a type (the remote execution plane's view).
    pub async fn open(&self, task: &str, project: &str) -> anyhow::Result<Vec<Value>> {
        let v = self
            .client
            .get(&format!("/controlPlane/v1/event/triggered/sh.keptn.event.{task}.triggered?project={project}"))
            .await?;
        Ok(v["events"].as_array().cloned().unwrap_or_default())
    }

    /// Waits for the open trigger of `task` in `stage` of context `ctx`.
    pub async fn wait_open(
        &self,
        task: &str,
        project: &str,
        stage: &str,
        ctx: &str,
    ) -> anyhow::Result<Value> {
        wait_for(Duration::from_secs(20), || async {
            Ok(self
                .open(task, project)
                .await?
                .into_iter()
                .find(|e| e["data"]["stage"] == json!(stage) && e["shkeptncontext"] == json!(ctx)))
        })
        .await
        .map_err(|e| anyhow!("no open {task}.triggered in {stage} for {ctx}: {e}"))
    }

    /// Sends `.started` for a trigger, as executor `source`.
    pub async fn started(&self, trigger: &Value, source: &str) -> anyhow::Result<()> {
        self.answer(trigger, "started", source, None).await
    }

    /// Sends `.finished` with a result for a trigger, as executor `source`.
    pub async fn finished(
        &self,
        trigger: &Value,
        source: &str,
        result: &str,
    ) -> anyhow::Result<()> {
        self.answer(trigger, "finished", source, Some((result, "succeeded")))
            .await
    }

    /// Sends a task event answering `trigger`.
    pub async fn answer(
        &self,
        trigger: &Value,
        kind: &str,
        source: &str,
        outcome: Option<(&str, &str)>,
    ) -> anyhow::Result<()> {
        let ty = trigger["type"]
            .as_str()
            .ok_or_else(|| anyhow!("trigger without type"))?;
        let task = ty
            .trim_start_matches("sh.keptn.event.")
            .trim_end_matches(".triggered");
        let mut data = json!({"project": trigger["data"]["project"], "stage": trigger["data"]["stage"], "service": trigger["data"]["service"]});
        if let Some((r, s)) = outcome {
            data["result"] = json!(r);
            data["status"] = json!(s);
            data["message"] = json!(format!("{task} by {source}"));
        }
        self.client
            .send_event(&json!({"type": format!("sh.keptn.event.{task}.{kind}"), "source": source,
                "shkeptncontext": trigger["shkeptncontext"], "triggeredid": trigger["id"], "data": data}))
            .await?;
        Ok(())
    }

    /// Runs one task of a context in a stage with one executor: waits for its trigger, answers it.
    pub async fn run_task(
        &self,
        task: &str,
        project: &str,
        stage: &str,
        ctx: &str,
        result: &str,
    ) -> anyhow::Result<Value> {
        let t = self.wait_open(task, project, stage, ctx).await?;
        self.started(&t, "executor").await?;
        self.finished(&t, "executor", result).await?;
        Ok(t)
    }

    /// Waits until the datastore holds an event of `ty` in the context; returns the
    /// context's events, oldest first (the datastore stores a few ms after publishing).
    pub async fn events_with(&self, ctx: &str, ty: &str) -> anyhow::Result<Vec<Value>> {
        wait_for(Duration::from_secs(20), || async {
            let evs = self.events(ctx).await?;
            Ok(evs.iter().any(|e| e["type"] == json!(ty)).then_some(evs))
        })
        .await
        .map_err(|e| anyhow!("{ty} never stored for {ctx}: {e}"))
    }

    /// Events of a context from the datastore, oldest first.
    pub async fn events(&self, ctx: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = vec![];
        let mut key = String::new();
        loop {
            let v = self
                .client
                .get(&format!(
                    "/mongodb-datastore/event?keptnContext={ctx}&pageSize=100&nextPageKey={key}"
                ))
                .await?;
            out.extend(v["events"].as_array().cloned().unwrap_or_default());
            match v.get("nextPageKey").and_then(Value::as_str) {
                Some(k) => key = k.to_string(),
                None => break,
            }
        }
        out.reverse();
        Ok(out)
    }
}

/// Polls `f` until it yields `Some`, or fails after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, f: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > limit {
            match last_err {
                Some(e) => bail!("timed out after {limit:?}; last error: {e}"),
                None => bail!("timed out after {limit:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// Types of events, for order assertions.
pub fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Makes sure a Debian package's binary is there: if `present()` is false,
/// runs `apt-get install -y --no-install-recommends <package>`
/// (noninteractive; `apt-get update` first only if that fails). Parallel
/// tests install once; the others wait and find the binary. `hint` ends the
/// error message (how else to provide the binary).
pub fn apt_install(package: &str, present: impl Fn() -> bool, hint: &str) -> anyhow::Result<()> {
    use anyhow::{bail, Context};
    use std::process::{Command, Stdio};
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if present() {
        return Ok(());
    }
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if present() {
        return Ok(());
    }
    let apt = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running apt-get {}", args.join(" ")))
    };
    let install = ["install", "-y", "--no-install-recommends", package];
    let mut out = apt(&install)?;
    if !out.status.success() {
        let update = apt(&["update"])?;
        if !update.status.success() {
            bail!(
                "{package} is not installed and `apt-get update` failed: {}",
                String::from_utf8_lossy(&update.stderr).trim()
            );
        }
        out = apt(&install)?;
    }
    if !out.status.success() || !present() {
        bail!(
            "{package} is not installed and `apt-get install -y {package}` failed ({}): {}\n{hint}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A project `shop` with one stage, `production`, whose `remediation`
/// sequence (get-action → action → evaluation) loops while its evaluation
/// fails, as Keptn's docs set it up.
pub const REMEDIATION_SHIPYARD: &str = r#"apiVersion: spec.keptn.sh/0.2.4
kind: Shipyard
metadata: {name: remediated}
spec:
  stages:
    - name: production
      sequences:
        - name: remediation
          triggeredOn:
            - event: production.remediation.finished
              selector: {match: {evaluation.result: fail}}
          tasks: [{name: get-action}, {name: action}, {name: evaluation}]
"#;

impl Setup {
    /// Every function but the lighthouse: the test answers evaluations itself.
    pub fn without_lighthouse() -> Setup {
        let mut functions = keelson::FunctionSet::all();
        functions.lighthouse = false;
        Setup {
            functions: Some(functions),
            ..Setup::default()
        }
    }
}

impl TestNode {
    /// Creates project `shop` from [`REMEDIATION_SHIPYARD`] with service
    /// `carts` and uploads its `remediation.yaml`; returns the commit id.
    pub async fn remediation_project(&self, remediation_yaml: &str) -> anyhow::Result<String> {
        self.project("shop", Some(REMEDIATION_SHIPYARD), "carts")
            .await?;
        self.client
            .add_resource(
                "shop",
                Some("production"),
                Some("carts"),
                "remediation.yaml",
                remediation_yaml.as_bytes(),
            )
            .await
    }
}

/// A person answering approvals through the library the `keelson` verbs use
/// (`get approvals`, `approve`, `decline` with their flags), for backends
/// where the tests do not run the binary.
pub async fn person(n: &TestNode, verb: &str, args: &[&str]) -> Result<String, String> {
    let mut scope = keelson::approvals::Scope::default();
    let (mut id, mut message) = (None, None);
    let mut rest = args.iter().copied();
    if verb == "get" {
        assert_eq!(rest.next(), Some("approvals"));
    }
    while let Some(flag) = rest.next() {
        let v = rest.next().map(str::to_string);
        match flag {
            "--project" => scope.project = v.unwrap_or_default(),
            "--stage" => scope.stage = v,
            "--service" => scope.service = v,
            "--id" => id = v,
            "--message" => message = v,
            f => panic!("unexpected flag {f}"),
        }
    }
    let done = match verb {
        "get" => keelson::approvals::open(&n.client, &scope)
            .await
            .map(|open| keelson::approvals::table(&open)),
        v => {
            keelson::approvals::answer(
                &n.client,
                &scope,
                id.as_deref(),
                v == "approve",
                message.as_deref(),
            )
            .await
        }
    };
    done.map_err(|e| format!("{e:#}"))
}
