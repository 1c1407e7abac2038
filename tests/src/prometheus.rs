//! A real Prometheus server on loopback for tests: its TSDB is backfilled from
//! OpenMetrics text with `promtool`, it scrapes nothing, and it is killed when
//! dropped. Several tests may each start their own in parallel.
//!
//! The binaries are Debian's `prometheus` package (`/usr/bin/prometheus`,
//! `/usr/bin/promtool`); `KEELSON_TEST_PROMETHEUS` and `KEELSON_TEST_PROMTOOL`
//! point at others.

use anyhow::{anyhow, bail, Context};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Prometheus may take to load its blocks and answer `/-/ready`
/// (generous: tests run beside compilers on small machines).
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// Attempts at a free port: another process may take the one picked before
/// Prometheus binds it.
const PORT_ATTEMPTS: usize = 3;

fn prometheus_bin() -> PathBuf {
    std::env::var_os("KEELSON_TEST_PROMETHEUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"))
}

fn promtool_bin() -> PathBuf {
    std::env::var_os("KEELSON_TEST_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/promtool"))
}

/// A running Prometheus; dropping it kills the process and deletes its data.
pub struct Prometheus {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus on a free 127.0.0.1 port with a TSDB backfilled from
    /// `openmetrics` (OpenMetrics text ending with `# EOF`, timestamps in Unix
    /// seconds) via `promtool tsdb create-blocks-from openmetrics`, no scrape
    /// targets and a 100-year retention (backfilled blocks older than the
    /// retention would be deleted at start), and waits until `/-/ready` answers 200.
    pub fn start(openmetrics: &str) -> anyhow::Result<Prometheus> {
        ensure_installed()?;
        if !openmetrics.trim_end().ends_with("# EOF") {
            bail!("the OpenMetrics input must end with \"# EOF\"");
        }
        let dir = tempfile::Builder::new()
            .prefix("keelson-prometheus-")
            .tempdir()
            .context("creating a temporary directory for Prometheus")?;
        let input = dir.path().join("backfill.om");
        std::fs::write(&input, openmetrics)?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let out = Command::new(promtool_bin())
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&data)
            .output()
            .with_context(|| format!("running {}", promtool_bin().display()))?;
        if !out.status.success() {
            bail!(
                "promtool could not backfill the data ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let config = dir.path().join("prometheus.yml");
        // No scrape_configs: the backfilled blocks are all the data there is.
        std::fs::write(&config, "global:\n  evaluation_interval: 1m\n")?;

        let mut last_failure = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = crate::free_port();
            let log_path = dir.path().join("prometheus.log");
            let log = std::fs::File::create(&log_path)?;
            let mut child = Command::new(prometheus_bin())
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg("--storage.tsdb.retention.time=100y")
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", prometheus_bin().display()))?;
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    return Ok(Prometheus {
                        url: format!("http://127.0.0.1:{port}"),
                        child,
                        dir,
                    })
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    last_failure = format!("{e}\n--- {} ---\n{log}", log_path.display());
                    if !log.contains("address already in use") {
                        break;
                    }
                }
            }
        }
        Err(anyhow!("Prometheus never became ready: {last_failure}"))
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The directory holding its data, config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `/-/ready` until it answers 200, the process exits, or the deadline passes.
fn wait_ready(child: &mut Child, port: u16) -> anyhow::Result<()> {
    let started = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("Prometheus exited with {status}");
        }
        if ready(addr) {
            return Ok(());
        }
        if started.elapsed() > READY_DEADLINE {
            bail!("/-/ready did not answer 200 within {READY_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `GET /-/ready` over plain HTTP/1.0 (no client library, no runtime needed).
fn ready(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut head = [0u8; 16];
        let n = s.read(&mut head)?;
        let line = String::from_utf8_lossy(&head[..n]);
        Ok(line.starts_with("HTTP/1.") && line.get(9..12) == Some("200"))
    };
    attempt().unwrap_or(false)
}

/// Ensures `prometheus` and `promtool` exist (Debian's `prometheus` package,
/// installed with apt-get when missing).
pub fn ensure_installed() -> anyhow::Result<()> {
    crate::apt_install(
        "prometheus",
        || prometheus_bin().is_file() && promtool_bin().is_file(),
        "Install Debian's prometheus package, or set KEELSON_TEST_PROMETHEUS and KEELSON_TEST_PROMTOOL.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfilled_samples_are_queryable() {
        let p = Prometheus::start(
            "# TYPE up gauge\nup{job=\"x\"} 1 1767225600\nup{job=\"x\"} 1 1767225660\n# EOF\n",
        )
        .unwrap();
        let addr: SocketAddr = p.url.trim_start_matches("http://").parse().unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /api/v1/query?query=up&time=1767225660 HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(
            body.contains(r#""value":[1767225660,"1"]"#),
            "{body}\n{}",
            p.log()
        );
    }

    #[test]
    fn input_without_eof_is_refused() {
        let e = Prometheus::start("up 1 1767225600\n").err().unwrap();
        assert!(e.to_string().contains("# EOF"), "{e}");
    }
}
