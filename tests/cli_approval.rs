//! Approvals end to end on the local backend, answered by a person with the
//! `keelson` binary (`keelson get approvals`, `keelson approve`, `keelson
//! decline`). `e2e_aws.rs` runs the same scenarios on the AWS backend.

/// The binary under test, built by cargo for this test target.
const KEELSON: &str = env!("CARGO_BIN_EXE_keelson");

async fn start(s: keelson_tests::Setup) -> keelson_tests::TestNode {
    keelson_tests::TestNode::start_with(s).await.unwrap()
}

/// Runs `keelson <verb> <args…>` against the node: stdout, or stderr on failure.
async fn person(n: &keelson_tests::TestNode, verb: &str, args: &[&str]) -> Result<String, String> {
    let url = n.api_url();
    let args: Vec<String> = std::iter::once(verb)
        .chain(args.iter().copied())
        .map(str::to_string)
        .collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(KEELSON)
            .args(&args)
            .env("KEELSON_ENDPOINT", url)
            .env("KEELSON_API_TOKEN", keelson_tests::TOKEN)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

include!("scenarios/approval.rs");
