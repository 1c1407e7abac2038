//! `remediation-http`: the remediation function as a Knative Service (see the crate docs).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    keelson_knative::main(keelson_knative::Function::Remediation).await
}
