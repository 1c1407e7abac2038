//! `keelson`: run a local control plane, or talk to one.

mod cli;
mod quickstart;

use clap::Parser;

/// mimalloc rather than glibc's malloc: under load the node's tasks on both
/// cores allocated and freed concurrently, and glibc's arena locks, chunk
/// consolidation and returned pages were ~17% of its CPU (BENCHMARKS.md,
/// quality gates).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = cli::Cli::parse();
    let code = match cli::run(cli).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
