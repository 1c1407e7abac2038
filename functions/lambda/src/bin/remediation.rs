//! The `remediation` Lambda: remediation actions, fed from its SQS queue
//! (`get-action.triggered`).

use keelson_aws::sqs::{handle_batch, SqsEvent};
use keelson_lambda::{init_tracing, Env, RemediationConsumer};
use lambda_runtime::{service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let env = Env::from_env().await?;
    let dead = env.dead_letters_from_env()?;
    let consumer = RemediationConsumer(env.remediation());
    let (consumer, dead) = (&consumer, &dead);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Error>(handle_batch(consumer, dead, ev.payload).await)
    }))
    .await
}
