//! The `datastore` Lambda: stores every event, fed from its SQS queue.

use keelson_aws::sqs::{handle_batch, SqsBatchResponse, SqsEvent};
use keelson_lambda::{init_tracing, DatastoreConsumer, Env};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let env = Env::from_env().await?;
    let dead = env.dead_letters_from_env()?;
    let consumer = DatastoreConsumer(env.store.clone());
    let (consumer, dead) = (&consumer, &dead);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, Error>(handle_batch(consumer, dead, ev.payload).await)
    }))
    .await
}
