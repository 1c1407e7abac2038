//! `keelson serve --backend aws`: the same functions as local mode, but on
//! DynamoDB, EventBridge and SQS. Each queue-fed function's Lambda handler is
//! fed from its real queue by a [`Poller`] that behaves like Lambda's SQS event
//! source mapping; the sweep runs on a timer; the API writes to DynamoDB and
//! EventBridge. Runs against an emulator or real AWS with ordinary credentials.

use crate::node::{spawn_api, spawn_retention, Node, NodeOptions};
use anyhow::{anyhow, bail, Context};
use keelson_aws::names::Names;
use keelson_aws::provision::{provision, Template, TEMPLATE};
use keelson_aws::sqs::{Consumer, DeadLetterQueue, Poller, PollerConfig, SqsClient};
use keelson_aws::{clients, Settings};
use keelson_lambda::{
    ApprovalConsumer, DatastoreConsumer, Env, LighthouseConsumer, PrometheusConsumer,
    RemediationConsumer, ShipyardConsumer,
};
use keelson_shipyard::Orchestrator;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Where the AWS resources are.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsTarget {
    /// Endpoint and region.
    pub settings: Settings,
    /// The stack whose resources to use (`<stack>-state`, `<stack>-bus`, …).
    pub stack: String,
    /// Create the template's resources first (emulators).
    pub provision: bool,
    /// How long a poller waits for messages per receive.
    pub poll_wait: Duration,
}

impl AwsTarget {
    /// The stack `stack` on `settings`.
    pub fn new(settings: Settings, stack: &str) -> Self {
        AwsTarget {
            settings,
            stack: stack.into(),
            provision: false,
            poll_wait: Duration::from_secs(10),
        }
    }
}

/// Starts the functions of `opts` against `target`.
pub async fn start(opts: NodeOptions, target: &AwsTarget) -> anyhow::Result<Node> {
    if !opts.echo_tasks.is_empty() {
        bail!("--demo: the demo executors run in local mode only");
    }
    let sdk = keelson_aws::load(&target.settings).await;
    let names = Names::new(&target.stack);
    if target.provision {
        let t = Template::parse(TEMPLATE).map_err(|e| anyhow!(e))?;
        provision(&sdk, &t, &target.stack, None)
            .await
            .with_context(|| format!("provisioning stack {}", target.stack))?;
    }
    let env = Env::new(sdk.clone(), &names.table(), &names.bus());
    let bus = crate::node::ObservedBus::new(env.bus.clone(), opts.observer.clone());
    let orch = Arc::new(Orchestrator::new(
        env.store.clone(),
        bus,
        opts.clock.clone(),
        opts.sequence.clone(),
    ));
    let sqs = clients::sqs(&sdk);
    let queue_url = |name: String| {
        let sqs = sqs.clone();
        async move {
            keelson_aws::sqs::queue_url(&sqs, &name)
                .await
                .with_context(|| {
                    format!("finding queue {name} (is the stack deployed or provisioned?)")
                })
        }
    };
    let config = PollerConfig {
        wait: target.poll_wait,
        ..PollerConfig::default()
    };
    let mut tasks = Vec::new();
    // Lambda runs several pollers per queue; two keep a slow batch from holding up the next.
    const POLLERS: usize = 2;
    let queues = |function: &'static str| {
        let (q, dlq) = (names.queue(function), names.dlq(function));
        let queue_url = &queue_url;
        async move { anyhow::Ok((queue_url(q).await?, queue_url(dlq).await?)) }
    };
    if opts.functions.shipyard {
        let (q, dlq) = queues(keelson_shipyard::CONSUMER).await?;
        let o = orch.clone();
        tasks.extend(spawn_pollers(&sqs, &q, &dlq, &config, POLLERS, || {
            ShipyardConsumer(o.clone())
        }));
        let o = orch.clone();
        let every = opts.tick_interval;
        let window = opts.dedupe_window.as_millis() as i64;
        tasks.push(tokio::spawn(async move {
            loop {
                if let Err(e) = keelson_shipyard::sweep(&o, window).await {
                    tracing::warn!(error = %e, "sweep failed");
                }
                tokio::time::sleep(every).await;
            }
        }));
    }
    if opts.functions.datastore {
        let (q, dlq) = queues(keelson_datastore::CONSUMER).await?;
        tasks.extend(spawn_pollers(&sqs, &q, &dlq, &config, POLLERS, || {
            DatastoreConsumer(env.store.clone())
        }));
    }
    let observed = || crate::node::ObservedBus::new(env.bus.clone(), opts.observer.clone());
    // A function fed from its queue by pollers, as Lambda's event source mapping would.
    macro_rules! poll_function {
        ($consumer:path, $wrap:ident, $function:expr) => {{
            let (q, dlq) = queues($consumer).await?;
            let f = Arc::new($function);
            tasks.extend(spawn_pollers(&sqs, &q, &dlq, &config, POLLERS, || {
                $wrap(f.clone())
            }));
        }};
    }
    let clock = || opts.clock.clone();
    if opts.functions.lighthouse {
        poll_function!(
            keelson_lighthouse::CONSUMER,
            LighthouseConsumer,
            keelson_lighthouse::Lighthouse::new(
                env.store.clone(),
                observed(),
                clock(),
                opts.lighthouse.clone()
            )
        );
    }
    if opts.functions.approval {
        poll_function!(
            keelson_approval::CONSUMER,
            ApprovalConsumer,
            keelson_approval::Approval::new(env.store.clone(), observed(), clock())
        );
    }
    if opts.functions.remediation {
        poll_function!(
            keelson_remediation::CONSUMER,
            RemediationConsumer,
            keelson_remediation::Remediation::new(env.store.clone(), observed(), clock())
        );
    }
    if opts.functions.prometheus {
        poll_function!(
            keelson_prometheus::CONSUMER,
            PrometheusConsumer,
            keelson_prometheus::Provider::new(
                env.store.clone(),
                observed(),
                clock(),
                opts.prometheus.clone()
            )
        );
    }
    if let (true, Some(ret)) = (opts.functions.datastore, opts.retention) {
        tasks.push(spawn_retention(
            env.store.clone(),
            opts.clock.clone(),
            ret,
            Duration::from_secs(300),
        ));
    }
    let shutdown = Arc::new(Notify::new());
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
    Ok(Node::from_parts(addr, opts.token, tasks, shutdown))
}

/// `n` pollers of one queue, each with its own consumer.
fn spawn_pollers<C: Consumer + 'static>(
    sqs: &SqsClient,
    queue: &str,
    dlq: &str,
    config: &PollerConfig,
    n: usize,
    consumer: impl Fn() -> C,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|_| spawn_poller(sqs, queue, dlq, consumer(), config.clone()))
        .collect()
}

fn spawn_poller<C: Consumer + 'static>(
    sqs: &SqsClient,
    queue: &str,
    dlq: &str,
    consumer: C,
    config: PollerConfig,
) -> tokio::task::JoinHandle<()> {
    let poller = Poller {
        client: sqs.clone(),
        queue_url: queue.into(),
        consumer,
        dead: DeadLetterQueue::new(sqs.clone(), dlq),
        config,
    };
    // Lambda fails an invocation whose handler panics and redelivers its batch
    // later; here a panic ends one run of the loop, which starts again (the
    // batch's records come back after their visibility timeout).
    let poller = Arc::new(poller);
    tokio::spawn(async move {
        loop {
            let p = poller.clone();
            match tokio::spawn(async move { p.run().await }).await {
                Err(e) if e.is_panic() => {
                    tracing::error!(queue = %poller.queue_url, "a handler panicked; polling again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                _ => return,
            }
        }
    })
}
