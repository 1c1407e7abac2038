//! The `prometheus` Lambda: the Prometheus SLI provider, fed from its SQS
//! queue (`get-sli.triggered` for `sliProvider: prometheus`).

use keelson_aws::sqs::{handle_batch, SqsEvent};
use keelson_lambda::{init_tracing, Env, PrometheusConsumer};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let env = Env::from_env().await?;
    let dead = env.dead_letters_from_env()?;
    let cfg = keelson_prometheus::Config::from_env()?;
    let consumer = PrometheusConsumer(env.prometheus(cfg));
    let (consumer, dead) = (&consumer, &dead);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(handle_batch(consumer, dead, ev.payload).await)
    }))
    .await
}
