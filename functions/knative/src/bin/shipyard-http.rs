//! `shipyard-http`: the shipyard function as a Knative Service (see the crate docs).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    keelson_knative::main(keelson_knative::Function::Shipyard).await
}
