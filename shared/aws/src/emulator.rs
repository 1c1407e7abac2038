//! The AWS emulator the tests and `keelson aws provision` talk to: started by
//! `localstack/start` when nothing answers on its port yet.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// The emulator's default endpoint.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4566";

/// The endpoint tests use: `KEELSON_TEST_AWS_ENDPOINT` or the default.
pub fn test_endpoint() -> String {
    std::env::var("KEELSON_TEST_AWS_ENDPOINT").unwrap_or_else(|_| DEFAULT_ENDPOINT.into())
}

fn answers(endpoint: &str) -> bool {
    let hostport = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    hostport
        .parse::<SocketAddr>()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).ok())
        .is_some()
}

static STARTING: Mutex<()> = Mutex::new(());

/// Makes sure an emulator answers on `endpoint` (a loopback `http://ip:port`),
/// running `localstack/start` from the repository at `repo` if not. Panics
/// with the script's output if it cannot be started: tests need it.
pub fn ensure(repo: &Path, endpoint: &str) {
    let _g = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    if answers(endpoint) {
        return;
    }
    let port = endpoint
        .rsplit(':')
        .next()
        .unwrap_or("4566")
        .trim_end_matches('/');
    let out = Command::new(repo.join("localstack/start"))
        .env("KEELSON_EMULATOR_PORT", port)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "localstack/start failed ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("running localstack/start: {e}"),
    }
    assert!(
        answers(endpoint),
        "the emulator does not answer on {endpoint}"
    );
}
