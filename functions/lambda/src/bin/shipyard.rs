//! The `shipyard` Lambda: sequence orchestration fed from its SQS queue, and
//! the scheduled sweep (timeouts, `triggeredAfter`, queued dispatch).

use keelson_aws::sqs::{handle_batch, SqsEvent};
use keelson_lambda::{init_tracing, sweep, Env, ShipyardConsumer};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let env = Env::from_env().await?;
    let dead = env.dead_letters_from_env()?;
    let consumer = ShipyardConsumer(env.orchestrator(keelson_shipyard::config_from_env()?));
    let (consumer, dead) = (&consumer, &dead);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move {
        if ev.payload.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(ev.payload)?;
            let resp = handle_batch(consumer, dead, batch).await;
            return Ok::<Value, Error>(serde_json::to_value(resp)?);
        }
        // Anything else is the schedule's invocation.
        let emitted = sweep(&consumer.0, keelson_lambda::DEDUPE_WINDOW_MS).await?;
        Ok(json!({ "emitted": emitted }))
    }))
    .await
}
