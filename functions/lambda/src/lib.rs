//! The shells shared by the Lambda `main`s and `keelson serve --backend aws`:
//! settings from the environment, clients built once, and each queue-fed
//! function as an SQS [`Consumer`].

use keelson_aws::clients;
use keelson_aws::config::SdkConfig;
use keelson_aws::dynamo::DynamoStore;
use keelson_aws::eventbridge::EventBridgeBus;
use keelson_aws::names::{ENV_BUS, ENV_DLQ_URL, ENV_TABLE, ENV_TOKEN_PARAMETER};
use keelson_aws::sqs::{Consumer, DeadLetterQueue, Failure};
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{Clock, EventBus, Store, Subscription, SystemClock};
use keelson_core::sequence::Config as SequenceConfig;
use keelson_shipyard::Orchestrator;
use std::sync::Arc;

/// The orchestrator of AWS mode.
pub type AwsOrchestrator = Orchestrator<DynamoStore, EventBridgeBus, SystemClock>;

/// What every function builds once per cold start.
#[derive(Clone)]
pub struct Env {
    /// The SDK configuration.
    pub sdk: SdkConfig,
    /// The state table.
    pub store: DynamoStore,
    /// The bus.
    pub bus: EventBridgeBus,
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("environment variable {name} is not set"))
}

impl Env {
    /// Inside Lambda: from `KEELSON_TABLE`, `KEELSON_BUS` and the variables
    /// Lambda sets (region and the function's credentials).
    pub async fn from_env() -> Result<Env, String> {
        let sdk = keelson_aws::config::from_lambda_env()?;
        Ok(Env::new(sdk, &var(ENV_TABLE)?, &var(ENV_BUS)?))
    }

    /// On a given table and bus.
    pub fn new(sdk: SdkConfig, table: &str, bus: &str) -> Env {
        // TTL removes applied-event records a day after the dedupe window, as a
        // backstop to the sweep's explicit purge.
        let store = DynamoStore::new(clients::dynamodb(&sdk), table).with_applied_ttl(
            std::time::Duration::from_millis((DEDUPE_WINDOW_MS + 24 * 3600 * 1000) as u64),
        );
        let bus = EventBridgeBus::new(clients::eventbridge(&sdk), bus);
        Env { sdk, store, bus }
    }

    /// The orchestrator.
    pub fn orchestrator(&self, cfg: SequenceConfig) -> Arc<AwsOrchestrator> {
        Arc::new(Orchestrator::new(
            self.store.clone(),
            self.bus.clone(),
            SystemClock,
            cfg,
        ))
    }

    /// The lighthouse.
    pub fn lighthouse(
        &self,
        cfg: keelson_lighthouse::Config,
    ) -> Arc<keelson_lighthouse::Lighthouse<DynamoStore, EventBridgeBus, SystemClock>> {
        Arc::new(keelson_lighthouse::Lighthouse::new(
            self.store.clone(),
            self.bus.clone(),
            SystemClock,
            cfg,
        ))
    }

    /// The approval function.
    pub fn approval(
        &self,
    ) -> Arc<keelson_approval::Approval<DynamoStore, EventBridgeBus, SystemClock>> {
        Arc::new(keelson_approval::Approval::new(
            self.store.clone(),
            self.bus.clone(),
            SystemClock,
        ))
    }

    /// The remediation function.
    pub fn remediation(
        &self,
    ) -> Arc<keelson_remediation::Remediation<DynamoStore, EventBridgeBus, SystemClock>> {
        Arc::new(keelson_remediation::Remediation::new(
            self.store.clone(),
            self.bus.clone(),
            SystemClock,
        ))
    }

    /// The Prometheus SLI provider.
    pub fn prometheus(
        &self,
        cfg: keelson_prometheus::Config,
    ) -> Arc<keelson_prometheus::Provider<DynamoStore, EventBridgeBus, SystemClock>> {
        Arc::new(keelson_prometheus::Provider::new(
            self.store.clone(),
            self.bus.clone(),
            SystemClock,
            cfg,
        ))
    }

    /// The dead-letter queue named by `KEELSON_DLQ_URL`.
    pub fn dead_letters_from_env(&self) -> Result<DeadLetterQueue, String> {
        Ok(DeadLetterQueue::new(
            clients::sqs(&self.sdk),
            &var(ENV_DLQ_URL)?,
        ))
    }

    /// The API token from the SSM parameter named by `KEELSON_TOKEN_PARAMETER`.
    pub async fn token_from_env(&self) -> Result<String, String> {
        let name = var(ENV_TOKEN_PARAMETER)?;
        keelson_aws::token::read(&clients::ssm(&self.sdk), &name)
            .await
            .map_err(|e| format!("reading the API token from {name}: {e}"))
    }
}

/// Client constructors.
pub mod aws_sdk {
    pub use keelson_aws::clients::*;
}

/// Logs as JSON-free plain lines (CloudWatch keeps them as they are).
pub fn init_tracing() {
    // A level, not a filter expression: EnvFilter brings a regex engine into
    // the bootstrap, and a function needs only a level.
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .without_time()
        .try_init();
}

/// A queue consumer for a function whose `process(&event)` handles one event:
/// the batch's events one at a time, in order, each failure classified by
/// the function's error kind.
macro_rules! one_by_one_consumer {
    ($(#[$doc:meta])* $name:ident, $function:ty, $subscription:path) => {
        $(#[$doc])*
        pub struct $name<S, B, C>(pub Arc<$function>);

        impl<S: Store, B: EventBus, C: Clock> Consumer for $name<S, B, C> {
            fn subscription(&self) -> Subscription {
                $subscription()
            }

            async fn handle(&self, events: Vec<KeptnEvent>) -> Vec<Result<(), Failure>> {
                one_by_one(events, |ev| async move {
                    self.0
                        .process(&ev)
                        .await
                        .map(|_| ())
                        .map_err(|e| Failure::new(e.kind(), e.to_string()))
                })
                .await
            }
        }
    };
}

one_by_one_consumer!(
    /// The shipyard function as a queue consumer.
    ShipyardConsumer,
    Orchestrator<S, B, C>,
    keelson_shipyard::subscription
);
one_by_one_consumer!(
    /// The lighthouse function as a queue consumer.
    LighthouseConsumer,
    keelson_lighthouse::Lighthouse<S, B, C>,
    keelson_lighthouse::subscription
);
one_by_one_consumer!(
    /// The approval function as a queue consumer.
    ApprovalConsumer,
    keelson_approval::Approval<S, B, C>,
    keelson_approval::subscription
);
one_by_one_consumer!(
    /// The remediation function as a queue consumer.
    RemediationConsumer,
    keelson_remediation::Remediation<S, B, C>,
    keelson_remediation::subscription
);
one_by_one_consumer!(
    /// The Prometheus SLI provider as a queue consumer.
    PrometheusConsumer,
    keelson_prometheus::Provider<S, B, C>,
    keelson_prometheus::subscription
);

/// The datastore function as a queue consumer: a batch in one write.
pub struct DatastoreConsumer<S>(pub S);

impl<S: Store> Consumer for DatastoreConsumer<S> {
    fn subscription(&self) -> Subscription {
        keelson_datastore::subscription()
    }

    async fn handle(&self, events: Vec<KeptnEvent>) -> Vec<Result<(), Failure>> {
        let n = events.len();
        match keelson_datastore::store_events(&self.0, &events).await {
            Ok(_) => vec![Ok(()); n],
            // One event the store refuses must not hold up the others: store
            // them one by one so that only the failing ones are retried.
            Err(_) if n > 1 => {
                let mut out = Vec::with_capacity(n);
                for ev in events {
                    out.push(
                        keelson_datastore::store_events(&self.0, std::slice::from_ref(&ev))
                            .await
                            .map(|_| ())
                            .map_err(|e| Failure::new(e.kind(), e.to_string())),
                    );
                }
                out
            }
            Err(e) => vec![Err(Failure::new(e.kind(), e.to_string())); n],
        }
    }
}

/// Events one at a time, in order, each reported on its own.
async fn one_by_one<F, Fut>(events: Vec<KeptnEvent>, f: F) -> Vec<Result<(), Failure>>
where
    F: Fn(KeptnEvent) -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        out.push(f(ev).await);
    }
    out
}

pub use keelson_shipyard::{sweep, DEDUPE_WINDOW_MS};
