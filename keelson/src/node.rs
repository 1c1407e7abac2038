//! Local mode: the api, shipyard and datastore functions (and optional demo
//! executors) as tasks of one process, over a durable in-process bus backed by
//! the same SQLite file as the store (or memory).

use crate::executors;
use anyhow::Context;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{Clock, EventBus, Queue, Store, StoreResult, Subscription};
use keelson_core::sequence::Config as SequenceConfig;
use keelson_core::ErrorKind;
use keelson_shipyard::Orchestrator;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Which functions run in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSet {
    /// The REST API.
    pub api: bool,
    /// Sequence orchestration.
    pub shipyard: bool,
    /// Event storage.
    pub datastore: bool,
    /// SLO quality gates.
    pub lighthouse: bool,
    /// Approval tasks.
    pub approval: bool,
    /// Remediation actions (get-action).
    pub remediation: bool,
    /// The Prometheus SLI provider (off unless asked for: a project may use an
    /// external provider that answers the same events).
    pub prometheus: bool,
}

/// Names `--functions` accepts.
const KNOWN: &str = "api, shipyard, datastore, lighthouse, approval, remediation, prometheus";

impl FunctionSet {
    /// The control plane: api, shipyard, datastore, lighthouse, approval and remediation.
    pub fn all() -> Self {
        FunctionSet {
            api: true,
            shipyard: true,
            datastore: true,
            lighthouse: true,
            approval: true,
            remediation: true,
            prometheus: false,
        }
    }

    /// Parses `api,shipyard,datastore,lighthouse,approval,remediation,prometheus`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut f = FunctionSet {
            api: false,
            shipyard: false,
            datastore: false,
            lighthouse: false,
            approval: false,
            remediation: false,
            prometheus: false,
        };
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "api" => f.api = true,
                "shipyard" => f.shipyard = true,
                "datastore" => f.datastore = true,
                "lighthouse" => f.lighthouse = true,
                "approval" => f.approval = true,
                "remediation" => f.remediation = true,
                "prometheus" => f.prometheus = true,
                o => return Err(format!("unknown function {o:?} (known: {KNOWN})")),
            }
        }
        if !(f.api
            || f.shipyard
            || f.datastore
            || f.lighthouse
            || f.approval
            || f.remediation
            || f.prometheus)
        {
            return Err(format!("no function selected (known: {KNOWN})"));
        }
        Ok(f)
    }
}

/// Where state lives.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreChoice {
    /// Embedded SQLite in this directory (`keelson.db`).
    Sqlite(PathBuf),
    /// In memory; gone when the process ends.
    Memory,
    /// DynamoDB, EventBridge and SQS of a stack (`--backend aws`).
    Aws(crate::aws::AwsTarget),
}

/// Settings of a local node.
#[derive(Clone)]
pub struct NodeOptions {
    /// Store.
    pub store: StoreChoice,
    /// Address of the API.
    pub listen: SocketAddr,
    /// API token.
    pub token: String,
    /// Functions to run.
    pub functions: FunctionSet,
    /// Task names answered by built-in echo executors (the demo).
    pub echo_tasks: Vec<String>,
    /// How long an echo executor takes.
    pub echo_delay: Duration,
    /// Orchestration settings (timeouts).
    pub sequence: SequenceConfig,
    /// Datastore retention; `None` keeps everything.
    pub retention: Option<Duration>,
    /// How long consumers remember applied event ids (redeliveries older than
    /// this are no longer recognised). Default 15 days: longer than any queue
    /// Keelson runs on keeps a message (SQS: 14 days at most).
    pub dedupe_window: Duration,
    /// How often timers are checked.
    pub tick_interval: Duration,
    /// The clock (tests pass a manual one).
    pub clock: Arc<dyn Clock>,
    /// Called with every event published on the bus (benchmarks, watchers).
    pub observer: Option<Observer>,
    /// Lighthouse settings (the default SLI provider).
    pub lighthouse: keelson_lighthouse::Config,
    /// Prometheus SLI provider settings.
    pub prometheus: keelson_prometheus::Config,
}

/// A callback that sees every published event.
pub type Observer = Arc<dyn Fn(&KeptnEvent) + Send + Sync>;

impl NodeOptions {
    /// Defaults for `listen` and `token`.
    pub fn new(store: StoreChoice, listen: SocketAddr, token: String) -> Self {
        NodeOptions {
            store,
            listen,
            token,
            functions: FunctionSet::all(),
            echo_tasks: vec![],
            echo_delay: Duration::from_millis(0),
            sequence: SequenceConfig::default(),
            retention: None,
            dedupe_window: Duration::from_secs(15 * 24 * 3600),
            tick_interval: Duration::from_millis(200),
            clock: Arc::new(keelson_core::ports::SystemClock),
            observer: None,
            lighthouse: keelson_lighthouse::Config::default(),
            prometheus: keelson_prometheus::Config::default(),
        }
    }
}

/// A running node.
pub struct Node {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The API token.
    pub token: String,
    tasks: Vec<JoinHandle<()>>,
    shutdown: Arc<Notify>,
}

impl Node {
    /// `http://addr/api`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Starts a node.
    pub async fn start(opts: NodeOptions) -> anyhow::Result<Node> {
        // With a shared SQLite file the functions may run in several processes
        // (`--functions`), so every process publishes for all of the control
        // plane's consumers; in memory only this process's consumers exist.
        if let StoreChoice::Aws(target) = &opts.store {
            let target = target.clone();
            return crate::aws::start(opts, &target).await;
        }
        let shared = matches!(opts.store, StoreChoice::Sqlite(_));
        let mut subs = vec![];
        if opts.functions.shipyard || shared {
            subs.push(keelson_shipyard::subscription());
        }
        if opts.functions.datastore || shared {
            subs.push(keelson_datastore::subscription());
        }
        if opts.functions.lighthouse || shared {
            subs.push(keelson_lighthouse::subscription());
        }
        if opts.functions.approval || shared {
            subs.push(keelson_approval::subscription());
        }
        if opts.functions.remediation || shared {
            subs.push(keelson_remediation::subscription());
        }
        if opts.functions.prometheus {
            subs.push(keelson_prometheus::subscription());
        }
        for t in &opts.echo_tasks {
            subs.push(executors::subscription(t));
        }
        match &opts.store {
            StoreChoice::Aws(_) => unreachable!("handled above"),
            StoreChoice::Memory => {
                let store = keelson_memory::MemoryStore::new();
                let bus = keelson_memory::MemoryBus::new(subs.clone());
                start_with(store, bus, subs, opts).await
            }
            StoreChoice::Sqlite(dir) => {
                crate::token::create_private_dir(dir)?;
                let path = dir.join("keelson.db");
                let store = keelson_sqlite::SqliteStore::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                // The bus writes the datastore's rows itself (in the publish
                // transaction), whichever process runs the datastore.
                let bus = store
                    .bus(subs.clone())
                    .storing_events_for(keelson_datastore::CONSUMER);
                start_with(store, bus, subs, opts).await
            }
        }
    }

    pub(crate) fn from_parts(
        addr: SocketAddr,
        token: String,
        tasks: Vec<JoinHandle<()>>,
        shutdown: Arc<Notify>,
    ) -> Node {
        Node {
            addr,
            token,
            tasks,
            shutdown,
        }
    }

    /// Stops every task and waits for the API to close.
    pub async fn stop(self) {
        self.shutdown.notify_waiters();
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A bus that shows every published event to an observer.
#[derive(Clone)]
pub struct ObservedBus<B> {
    inner: B,
    observer: Option<Observer>,
}

impl<B> ObservedBus<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, observer: Option<Observer>) -> Self {
        ObservedBus { inner, observer }
    }
}

impl<B: EventBus> EventBus for ObservedBus<B> {
    async fn publish(&self, events: &[KeptnEvent]) -> StoreResult<()> {
        self.inner.publish(events).await?;
        if let Some(o) = &self.observer {
            events.iter().for_each(|e| o(e));
        }
        Ok(())
    }
}

/// Applies the datastore's retention every `every`.
pub(crate) fn spawn_retention<S: keelson_core::ports::EventStore + 'static>(
    store: S,
    clock: Arc<dyn Clock>,
    retention: Duration,
    every: Duration,
) -> JoinHandle<()> {
    let cfg = keelson_datastore::Config {
        retention_ms: Some(retention.as_millis() as i64),
    };
    tokio::spawn(keelson_datastore::retain_forever(store, clock, cfg, every))
}

/// Binds the API and serves `app` until `shutdown`.
pub(crate) async fn spawn_api(
    listen: SocketAddr,
    app: axum::Router,
    shutdown: Arc<Notify>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the API to {listen}"))?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.notified().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "API server stopped");
        }
    });
    Ok((addr, task))
}

/// A bus that wakes the consumers it delivered to.
#[derive(Clone)]
pub struct NotifyingBus<B> {
    inner: B,
    subs: Arc<Vec<Subscription>>,
    wake: Arc<HashMap<String, Arc<Notify>>>,
    observer: Option<Observer>,
}

impl<B: EventBus> EventBus for NotifyingBus<B> {
    async fn publish(&self, events: &[KeptnEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.inner.publish(events).await?;
        if let Some(o) = &self.observer {
            events.iter().for_each(|e| o(e));
        }
        for s in self.subs.iter() {
            if events.iter().any(|e| s.matches(&e.ty)) {
                if let Some(n) = self.wake.get(&s.consumer) {
                    n.notify_one();
                }
            }
        }
        Ok(())
    }
}

async fn start_with<S, Q>(
    store: S,
    queue: Q,
    subs: Vec<Subscription>,
    opts: NodeOptions,
) -> anyhow::Result<Node>
where
    S: Store,
    Q: EventBus + Queue,
{
    let wake: HashMap<String, Arc<Notify>> = subs
        .iter()
        .map(|s| (s.consumer.clone(), Arc::new(Notify::new())))
        .collect();
    let wake = Arc::new(wake);
    // The consumer whose events the bus stores itself is not woken by
    // publishes (it only drains what older versions queued for it).
    let woken: Vec<Subscription> = subs
        .iter()
        .filter(|s| Some(s.consumer.as_str()) != queue.stores_events_for())
        .cloned()
        .collect();
    let bus = NotifyingBus {
        inner: queue.clone(),
        subs: Arc::new(woken),
        wake: wake.clone(),
        observer: opts.observer.clone(),
    };
    let orch = Arc::new(Orchestrator::new(
        store.clone(),
        bus.clone(),
        opts.clock.clone(),
        opts.sequence.clone(),
    ));
    let shutdown = Arc::new(Notify::new());
    let mut tasks = Vec::new();

    if opts.functions.shipyard {
        match orch.republish_recent(60_000).await {
            Ok(n) if n > 0 => tracing::info!(
                events = n,
                "re-published the last effects of the previous run"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "re-publishing the last effects failed"),
        }
        let o = orch.clone();
        // The span is attached with `instrument`: an entered span guard held
        // across an await closes out of order when the task moves threads.
        tasks.push(spawn_by_lane(
            queue.clone(),
            keelson_shipyard::CONSUMER,
            wake[keelson_shipyard::CONSUMER].clone(),
            move |ev: KeptnEvent| {
                let o = o.clone();
                async move {
                    o.process(&ev)
                        .await
                        .map(|_| ())
                        .map_err(|e| (e.kind(), e.to_string()))
                }
            },
        ));
        tasks.push(tokio::spawn(keelson_shipyard::forget_applied_forever(
            store.clone(),
            opts.clock.clone(),
            i64::try_from(opts.dedupe_window.as_millis()).unwrap_or(i64::MAX),
            Duration::from_secs(600),
        )));
        tasks.push(tokio::spawn(keelson_shipyard::tick_forever(
            orch.clone(),
            opts.tick_interval,
        )));
    }
    if opts.functions.datastore {
        let stores_events = queue.stores_events_for() == Some(keelson_datastore::CONSUMER);
        let st = store.clone();
        let q = queue.clone();
        let w = wake[keelson_datastore::CONSUMER].clone();
        tasks.push(tokio::spawn(async move {
            consume(
                q,
                keelson_datastore::CONSUMER,
                w,
                // Stored events become queryable a few ms later; in exchange
                // the datastore writes fewer, larger transactions.
                Duration::from_millis(3),
                // A bus that stores the events itself queues nothing new for
                // the datastore: drain what older versions queued, then stop.
                stores_events,
                move |batch: Vec<KeptnEvent>| {
                    let st = st.clone();
                    async move {
                        keelson_datastore::store_events(&st, &batch)
                            .await
                            .map(|_| ())
                            .map_err(|e| {
                                tracing::warn!(error = %e, "datastore: will retry");
                                (0, Failure::of(e.kind(), e.to_string()))
                            })
                    }
                },
            )
            .await
        }));
        if let Some(ret) = opts.retention {
            tasks.push(spawn_retention(
                store.clone(),
                opts.clock.clone(),
                ret,
                Duration::from_secs(60),
            ));
        }
    }
    // A function whose `process(&event)` handles one event, as a per-lane consumer.
    macro_rules! spawn_function {
        ($consumer:path, $function:expr) => {{
            let f = Arc::new($function);
            tasks.push(spawn_by_lane(
                queue.clone(),
                $consumer,
                wake[$consumer].clone(),
                move |ev: KeptnEvent| {
                    let f = f.clone();
                    async move {
                        f.process(&ev)
                            .await
                            .map(|_| ())
                            .map_err(|e| (e.kind(), e.to_string()))
                    }
                },
            ));
        }};
    }
    let clock = || opts.clock.clone();
    if opts.functions.lighthouse {
        spawn_function!(
            keelson_lighthouse::CONSUMER,
            keelson_lighthouse::Lighthouse::new(
                store.clone(),
                bus.clone(),
                clock(),
                opts.lighthouse.clone()
            )
        );
    }
    if opts.functions.approval {
        spawn_function!(
            keelson_approval::CONSUMER,
            keelson_approval::Approval::new(store.clone(), bus.clone(), clock())
        );
    }
    if opts.functions.remediation {
        spawn_function!(
            keelson_remediation::CONSUMER,
            keelson_remediation::Remediation::new(store.clone(), bus.clone(), clock())
        );
    }
    if opts.functions.prometheus {
        spawn_function!(
            keelson_prometheus::CONSUMER,
            keelson_prometheus::Provider::new(
                store.clone(),
                bus.clone(),
                clock(),
                opts.prometheus.clone()
            )
        );
    }
    for task in &opts.echo_tasks {
        let consumer = executors::consumer(task);
        let q = queue.clone();
        let w = wake[&consumer].clone();
        let b = bus.clone();
        let clock = opts.clock.clone();
        let delay = opts.echo_delay;
        tasks.push(tokio::spawn(async move {
            let name = consumer.clone();
            consume(
                q,
                &name,
                w,
                Duration::ZERO,
                false,
                move |batch: Vec<KeptnEvent>| {
                    let b = b.clone();
                    let clock = clock.clone();
                    async move {
                        for ev in &batch {
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let out = executors::echo(ev, clock.now());
                            if let Err(e) = b.publish(&out).await {
                                tracing::warn!(error = %e, "echo executor: will retry");
                                return Err((0, Failure::Retry));
                            }
                        }
                        Ok(())
                    }
                },
            )
            .await
        }));
    }

    let mut addr = opts.listen;
    if opts.functions.api {
        let api = Arc::new(keelson_api::Api {
            orch: orch.clone(),
            token: opts.token.clone().into(),
        });
        let (a, task) = spawn_api(opts.listen, keelson_api::router(api), shutdown.clone()).await?;
        addr = a;
        tasks.push(task);
    }
    Ok(Node {
        addr,
        token: opts.token,
        tasks,
        shutdown,
    })
}

/// A consumer whose events are handled in order within a lane (project,
/// stage, service) and concurrently across lanes: each lane's events of a
/// batch run as one task, so the lanes of a batch share both cores instead
/// of queueing behind each other. The functions it serves are built for
/// concurrent writers (Lambda runs many at once): a lane write conflicts and
/// re-applies rather than losing an update.
///
/// A failed event stops the rest of its lane's events in the batch; the
/// batch is then reported as failing at the earliest failed event, so the
/// events after it are delivered again (the consumers dedupe the ones that
/// had succeeded).
fn spawn_by_lane<Q, F, Fut>(
    queue: Q,
    consumer: &'static str,
    wake: Arc<Notify>,
    handle: F,
) -> JoinHandle<()>
where
    Q: Queue,
    F: Fn(KeptnEvent) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), (ErrorKind, String)>> + Send + 'static,
{
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        consume(queue, consumer, wake, Duration::ZERO, false, move |batch: Vec<KeptnEvent>| {
            let handle = handle.clone();
            async move {
                let mut tasks = tokio::task::JoinSet::new();
                // Each lane's task marks the event it is handling, so that a
                // panic is charged to that event (and, after the retries, it
                // is the one dead-lettered).
                let mut handling: HashMap<tokio::task::Id, Arc<AtomicUsize>> = HashMap::new();
                for lane in by_lane(batch) {
                    let handle = handle.clone();
                    let current = Arc::new(AtomicUsize::new(lane.first().map_or(0, |(at, _)| *at)));
                    let mark = current.clone();
                    let task = tasks.spawn(async move {
                        for (at, ev) in lane {
                            mark.store(at, Ordering::SeqCst);
                            let span = tracing::debug_span!("event", ce.id = %ev.id, ce.type = %ev.ty, shkeptncontext = %ev.shkeptncontext);
                            if let Err((kind, msg)) = tracing::Instrument::instrument(handle(ev), span).await {
                                return Err((at, kind, msg));
                            }
                        }
                        Ok(())
                    });
                    handling.insert(task.id(), current);
                }
                let mut first: Option<(usize, ErrorKind, String)> = None;
                while let Some(joined) = tasks.join_next().await {
                    let failed = match joined {
                        Ok(Ok(())) => continue,
                        Ok(Err(f)) => f,
                        Err(e) => {
                            let at = handling
                                .get(&e.id())
                                .map_or(0, |c| c.load(Ordering::SeqCst));
                            (at, ErrorKind::Fatal, format!("handler task failed: {e}"))
                        }
                    };
                    if first.as_ref().is_none_or(|f| failed.0 < f.0) {
                        first = Some(failed);
                    }
                }
                match first {
                    None => Ok(()),
                    Some((at, kind, msg)) => {
                        tracing::warn!(consumer, error = %msg, "event failed");
                        Err((at, Failure::of(kind, msg)))
                    }
                }
            }
        })
        .await
    })
}

/// The batch's events grouped by lane, each group in delivery order, with
/// each event's position in the batch. Events without a lane form one group.
fn by_lane(batch: Vec<KeptnEvent>) -> Vec<Vec<(usize, KeptnEvent)>> {
    let mut index: HashMap<Option<(String, String, String)>, usize> = HashMap::new();
    let mut groups: Vec<Vec<(usize, KeptnEvent)>> = Vec::new();
    for (at, ev) in batch.into_iter().enumerate() {
        let key = match (ev.project(), ev.stage(), ev.service()) {
            (Some(p), Some(st), Some(sv)) => Some((p.to_string(), st.to_string(), sv.to_string())),
            _ => None,
        };
        let g = *index.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push((at, ev));
    }
    groups
}

/// One consumer's loop, like Lambda's SQS event source mapping: receive a
/// batch, handle it, acknowledge what succeeded; a poison event (Invalid)
/// goes to the dead letters, anything else is retried after a pause.
/// The handler returns `Err((handled, poison_reason))` on failure.
async fn consume<Q, F, Fut>(
    queue: Q,
    consumer: &str,
    wake: Arc<Notify>,
    linger: Duration,
    stop_when_empty: bool,
    handler: F,
) where
    Q: Queue,
    F: Fn(Vec<KeptnEvent>) -> Fut,
    Fut: std::future::Future<Output = Result<(), (usize, Failure)>>,
{
    const BATCH: usize = 256;
    // Acknowledgements are written in batches: each ack is a SQLite commit, and
    // under load one commit per small batch dominated the ingest cost. A
    // processed but not yet acknowledged event is only redelivered after a crash,
    // where the consumers' dedupe makes it harmless.
    const ACK_BATCH: usize = 512;
    const ACK_EVERY: Duration = Duration::from_millis(100);
    // An event that keeps failing (not as invalid input) is retried this many
    // times, then dead-lettered, so it cannot hold up its queue forever.
    const MAX_ATTEMPTS: u32 = 8;
    let mut backoff = Duration::from_millis(50);
    let mut failing: Option<(u64, u32)> = None;
    let mut acks: Vec<u64> = Vec::new();
    let mut last_ack = Instant::now();
    let flush = |acks: &mut Vec<u64>, last: &mut Instant| {
        let done = std::mem::take(acks);
        *last = Instant::now();
        let q = queue.clone();
        async move {
            if !done.is_empty() {
                if let Err(e) = q.ack(consumer, &done).await {
                    tracing::warn!(consumer, error = %e, "ack failed");
                }
            }
        }
    };
    loop {
        let batch = match queue.receive(consumer, BATCH).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(consumer, error = %e, "receive failed");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if batch.is_empty() {
            flush(&mut acks, &mut last_ack).await;
            if stop_when_empty {
                return;
            }
            // Woken at once by publishers in this process; publishers in other
            // processes sharing the file are seen on the next poll.
            let _ = tokio::time::timeout(Duration::from_millis(250), wake.notified()).await;
            continue;
        }
        let small = batch.len() < BATCH / 4;
        let receipts: Vec<u64> = batch.iter().map(|d| d.receipt).collect();
        let events: Vec<KeptnEvent> = batch.into_iter().map(|d| d.event).collect();
        match handler(events).await {
            Ok(()) => {
                acks.extend_from_slice(&receipts);
                if acks.len() >= ACK_BATCH || last_ack.elapsed() >= ACK_EVERY {
                    flush(&mut acks, &mut last_ack).await;
                }
                backoff = Duration::from_millis(50);
                if small && !linger.is_zero() {
                    // Let a few more events gather: fewer, larger transactions under load.
                    tokio::time::sleep(linger).await;
                }
            }
            Err((done, failure)) => {
                acks.extend_from_slice(&receipts[..done]);
                flush(&mut acks, &mut last_ack).await;
                let poison = match failure {
                    Failure::Poison(reason) => Some(reason),
                    Failure::Retry => None,
                    Failure::Fatal(reason) => {
                        let attempts = match failing {
                            Some((r, n)) if r == receipts[done] => n + 1,
                            _ => 1,
                        };
                        failing = Some((receipts[done], attempts));
                        (attempts >= MAX_ATTEMPTS)
                            .then(|| format!("failed {attempts} times: {reason}"))
                    }
                };
                if let Some(reason) = poison {
                    failing = None;
                    tracing::warn!(consumer, reason = %reason, "dead-lettering an event");
                    let _ = queue.dead_letter(consumer, receipts[done], &reason).await;
                    let _ = queue.release(consumer, &receipts[done + 1..]).await;
                } else {
                    let _ = queue.release(consumer, &receipts[done..]).await;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Why a consumer's handler failed.
enum Failure {
    /// Invalid input: dead-letter at once.
    Poison(String),
    /// A dependency failed transiently (or a write conflicted): retry, forever.
    Retry,
    /// Anything else: retry a few times, then dead-letter.
    Fatal(String),
}

impl Failure {
    fn of(kind: ErrorKind, message: String) -> Self {
        match kind {
            ErrorKind::Invalid => Failure::Poison(message),
            ErrorKind::Transient | ErrorKind::Conflict => Failure::Retry,
            ErrorKind::Fatal => Failure::Fatal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keelson_core::ports::{EventBus, Subscription};
    use keelson_core::Timestamp;
    use keelson_memory::MemoryBus;
    use std::sync::Mutex;

    fn ev(id: &str) -> KeptnEvent {
        KeptnEvent::new(
            id.into(),
            "t",
            "sh.keptn.event.test.finished".into(),
            "c",
            serde_json::json!({}),
            Timestamp::from_millis(1),
        )
    }

    async fn run(
        bus: MemoryBus,
        fail: impl Fn(&str, u32) -> Option<Failure> + Send + Sync + 'static,
    ) -> Arc<Mutex<Vec<String>>> {
        let done = Arc::new(Mutex::new(Vec::new()));
        let tries = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
        let (d, t, fail) = (done.clone(), tries.clone(), Arc::new(fail));
        tokio::spawn(async move {
            consume(
                bus,
                "c",
                Arc::new(Notify::new()),
                Duration::ZERO,
                false,
                move |batch: Vec<KeptnEvent>| {
                    let (d, t, fail) = (d.clone(), t.clone(), fail.clone());
                    async move {
                        for (i, e) in batch.iter().enumerate() {
                            let n = {
                                let mut t = t.lock().unwrap();
                                let n = t.entry(e.id.clone()).or_default();
                                *n += 1;
                                *n
                            };
                            if let Some(f) = fail(&e.id, n) {
                                return Err((i, f));
                            }
                            d.lock().unwrap().push(e.id.clone());
                        }
                        Ok(())
                    }
                },
            )
            .await
        });
        done
    }

    fn lane_ev(id: &str, service: &str) -> KeptnEvent {
        KeptnEvent::new(
            id.into(),
            "t",
            "sh.keptn.event.test.finished".into(),
            "c",
            serde_json::json!({"project": "p", "stage": "s", "service": service}),
            Timestamp::from_millis(1),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn lanes_are_handled_concurrently_and_each_lane_in_order_through_failures() {
        let bus = MemoryBus::new(vec![Subscription::new("c", &["sh.keptn.>"])]);
        bus.publish(&[
            lane_ev("a1", "a"),
            lane_ev("a2", "a"),
            lane_ev("b1", "b"),
            lane_ev("b2", "b"),
            lane_ev("c1", "c"),
        ])
        .await
        .unwrap();
        let done = Arc::new(Mutex::new(Vec::<String>::new()));
        let tries = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
        // a1 finishes only once b1 has: handled one lane after another, this
        // would never happen.
        let b1_done = Arc::new(Notify::new());
        let (d, t, b) = (done.clone(), tries.clone(), b1_done.clone());
        let _task = spawn_by_lane(bus.clone(), "c", Arc::new(Notify::new()), move |e| {
            let (d, t, b) = (d.clone(), t.clone(), b.clone());
            async move {
                let n = {
                    let mut t = t.lock().unwrap();
                    let n = t.entry(e.id.clone()).or_default();
                    *n += 1;
                    *n
                };
                match e.id.as_str() {
                    "a1" if n == 1 => b.notified().await,
                    // b2 fails twice: b1 and the other lanes are not redone
                    // for it, and b2 still comes after b1.
                    "b2" if n <= 2 => return Err((ErrorKind::Transient, "not yet".into())),
                    _ => {}
                }
                d.lock().unwrap().push(e.id.clone());
                if e.id == "b1" {
                    b.notify_one();
                }
                Ok(())
            }
        });
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if done.lock().unwrap().contains(&"b2".to_string()) {
                break;
            }
        }
        let done = done.lock().unwrap().clone();
        let pos = |id: &str| {
            done.iter()
                .position(|d| d == id)
                .unwrap_or_else(|| panic!("{id} was never handled: {done:?}"))
        };
        assert!(pos("b1") < pos("a1"), "a1 waited for b1: {done:?}");
        assert!(pos("a1") < pos("a2"), "lane a in order: {done:?}");
        assert!(pos("b1") < pos("b2"), "lane b in order: {done:?}");
        pos("c1");
        let tries = tries.lock().unwrap();
        assert_eq!(tries["b2"], 3, "b2 retried until it succeeded");
        assert_eq!(tries["b1"], 1, "b1, before the failure, is not redone");
        assert!(bus.dead_letters("c").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_that_panics_gets_its_own_event_dead_lettered() {
        let bus = MemoryBus::new(vec![Subscription::new("c", &["sh.keptn.>"])]);
        bus.publish(&[lane_ev("b1", "b"), lane_ev("a1", "a"), lane_ev("a2", "a")])
            .await
            .unwrap();
        let _task = spawn_by_lane(
            bus.clone(),
            "c",
            Arc::new(Notify::new()),
            |e: KeptnEvent| async move {
                if e.id == "a2" {
                    panic!("a bug in the handler");
                }
                Ok(())
            },
        );
        for _ in 0..600 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !bus.dead_letters("c").is_empty() {
                break;
            }
        }
        let dead: Vec<String> = bus
            .dead_letters("c")
            .into_iter()
            .map(|(e, _)| e.id)
            .collect();
        assert_eq!(dead, vec!["a2".to_string()]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_that_keeps_failing_is_dead_lettered_and_the_queue_moves_on() {
        let bus = MemoryBus::new(vec![Subscription::new("c", &["sh.keptn.>"])]);
        bus.publish(&[ev("bad"), ev("good")]).await.unwrap();
        let done = run(bus.clone(), |id, _| {
            (id == "bad").then(|| Failure::Fatal("broken".into()))
        })
        .await;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !done.lock().unwrap().is_empty() {
                break;
            }
        }
        assert_eq!(*done.lock().unwrap(), vec!["good".to_string()]);
        let dead = bus.dead_letters("c");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].0.id, "bad");
        assert!(dead[0].1.contains("broken"), "{}", dead[0].1);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_without_giving_up() {
        let bus = MemoryBus::new(vec![Subscription::new("c", &["sh.keptn.>"])]);
        bus.publish(&[ev("flaky"), ev("next")]).await.unwrap();
        let done = run(bus.clone(), |id, n| {
            (id == "flaky" && n <= 20).then_some(Failure::Retry)
        })
        .await;
        for _ in 0..2000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if done.lock().unwrap().len() == 2 {
                break;
            }
        }
        assert_eq!(
            *done.lock().unwrap(),
            vec!["flaky".to_string(), "next".to_string()],
            "in order, nothing skipped"
        );
        assert!(bus.dead_letters("c").is_empty());
    }

    /// Local mode's SQLite bus stores events as it publishes them: the
    /// datastore consumer stores what an older version queued for it, then
    /// stops instead of polling an empty queue for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_datastore_drains_what_an_older_version_queued_and_then_stops() {
        use keelson_core::ports::EventStore;
        use keelson_core::query::EventQuery;
        let dir = tempfile::tempdir().unwrap();
        let store = keelson_sqlite::SqliteStore::open(dir.path().join("keelson.db")).unwrap();
        let older = store.bus(vec![keelson_datastore::subscription()]);
        let queued = lane_ev("queued", "a");
        older.publish(std::slice::from_ref(&queued)).await.unwrap();

        let mut opts = NodeOptions::new(
            StoreChoice::Sqlite(dir.path().into()),
            "127.0.0.1:0".parse().unwrap(),
            "token".into(),
        );
        opts.functions = FunctionSet::parse("datastore").unwrap();
        let node = Node::start(opts).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node.tasks.iter().all(|t| t.is_finished()) {
            assert!(
                Instant::now() < deadline,
                "the datastore consumer still runs"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stored = store
            .query_events(&EventQuery {
                keptn_context: Some("c".into()),
                ..EventQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(stored.events, [queued], "stored before it stopped");
        let left = older
            .receive(keelson_datastore::CONSUMER, 10)
            .await
            .unwrap();
        assert!(left.is_empty(), "acknowledged: {left:?}");
        node.stop().await;
    }
}
