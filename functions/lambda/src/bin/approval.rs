//! The `approval` Lambda: approval tasks, fed from its SQS queue
//! (`approval.triggered`).

use keelson_aws::sqs::{handle_batch, SqsEvent};
use keelson_lambda::{init_tracing, ApprovalConsumer, Env};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let env = Env::from_env().await?;
    let dead = env.dead_letters_from_env()?;
    let consumer = ApprovalConsumer(env.approval());
    let (consumer, dead) = (&consumer, &dead);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(handle_batch(consumer, dead, ev.payload).await)
    }))
    .await
}
