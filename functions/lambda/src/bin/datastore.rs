//! The `datastore` Lambda: stores every event, fed from its SQS queue; the
//! hourly schedule applies the retention period (`KEELSON_RETENTION`).

use keelson_aws::sqs::{handle_batch, SqsEvent};
use keelson_core::ports::SystemClock;
use keelson_lambda::{init_tracing, DatastoreConsumer, Env};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let env = Env::from_env().await?;
    let dead = env.dead_letters_from_env()?;
    let cfg = keelson_datastore::Config::from_env()?;
    let consumer = DatastoreConsumer(env.store.clone());
    let (consumer, dead, cfg) = (&consumer, &dead, &cfg);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move {
        if ev.payload.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(ev.payload)?;
            let resp = handle_batch(consumer, dead, batch).await;
            return Ok::<Value, Error>(serde_json::to_value(resp)?);
        }
        // Anything else is the schedule's invocation.
        let deleted = keelson_datastore::apply_retention(&consumer.0, &SystemClock, cfg).await?;
        Ok(json!({ "deleted": deleted }))
    }))
    .await
}
