//! Test support (feature `testing`): a fresh database on a real PostgreSQL
//! server for every call of [`fresh_database`].
//!
//! The server is the one named by [`DATABASE_URL_ENV`] when that is set (an
//! admin URL: its user needs `CREATEDB`). Otherwise the first call starts
//! one throwaway server for the whole test process:
//!
//! - Debian's binaries under `/usr/lib/postgresql/<version>/bin` (the newest
//!   version there); when there are none and the process is root, Debian's
//!   `postgresql` package is installed with apt-get first;
//! - `initdb` into a new directory `/tmp/kpg-XXXXXX` (short: a Unix socket's
//!   path has at most 107 bytes, and `TMPDIR` may be long), then `postgres`
//!   on a free port of 127.0.0.1 only (its socket in that directory, trust
//!   authentication, `fsync=off`: nothing here must survive a crash).
//!   PostgreSQL refuses to run as root, so as root both run as the
//!   `postgres` user that the Debian package creates;
//! - readiness is polled by connecting, with a deadline, through the socket
//!   in the server's own directory: another test process may have taken the
//!   port we found free, and a TCP connection would then reach its server.
//!   Once ours answers there, it holds the port (it exits when it cannot
//!   listen on it).
//!
//! Test binaries run concurrently (each its own process with its own
//! server); the apt-get install is serialized with `flock` on
//! `/tmp/keelson-apt.lock`, and waits for other apt users' dpkg lock.
//!
//! The server goes away with the test process: a small watchdog shell reads
//! a pipe from the test process until it closes (as the kernel closes it
//! when the process exits, however it exits), then stops the server (fast
//! shutdown, then after 10 s an immediate one, then SIGKILL to its process
//! group) and deletes its directory. Starting takes about a second with the binaries in
//! place; each database is then a `CREATE DATABASE` (tens of milliseconds).
//!
//! [`fresh_tls_database`] does the same on a second server, started on
//! its first call, that also offers TLS with a throwaway CA.
//!
//! Databases created on a server named by [`DATABASE_URL_ENV`] are left
//! there (named `keelson_test_<uuid>`) for the owner of that server to drop.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

/// Environment variable naming an existing server to create the test
/// databases on: `postgres://user:password@host:port/database`, a user
/// allowed to create databases.
pub const DATABASE_URL_ENV: &str = "KEELSON_TEST_DATABASE_URL";

/// How long a throwaway server may take to accept connections.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// Tries at starting a server (another process may take the free port found).
const START_TRIES: usize = 3;
/// How long the watchdog waits for each stage of the server's shutdown.
const SHUTDOWN_GRACE_SECS: u32 = 10;
/// Held (with `flock`) around apt-get by every test process of this user.
const APT_LOCK: &str = "/tmp/keelson-apt.lock";

/// Creates a new, empty database named `keelson_test_<uuid>` and returns
/// its URL (not yet migrated: [`crate::PostgresStore::connect`] does that).
///
/// Panics, with the reason, when no server can be had: the caller is a test.
pub async fn fresh_database() -> String {
    let admin = match admin_url().await {
        Ok(url) => url,
        Err(e) => panic!("no PostgreSQL server for the tests: {e}"),
    };
    let name = format!("keelson_test_{}", uuid::Uuid::new_v4().simple());
    if let Err(e) = create_database(&admin, &name).await {
        panic!("creating database {name}: {e}");
    }
    with_database(&admin, &name)
}

/// Creates a new, empty database on a second throwaway server, one that
/// also offers TLS, and returns its URL (without `sslmode`: the caller adds
/// the one under test) and the PEM file of the CA that signed the server's
/// certificate. The certificate names `127.0.0.1` and `localhost`, and
/// the server accepts plain connections too.
///
/// This server is started (with the `openssl` command-line tool making a
/// throwaway CA and certificate) only by the first call, whatever
/// [`DATABASE_URL_ENV`] says: the plain server of [`fresh_database`] is
/// neither touched nor slowed down.
///
/// Panics, with the reason, when no server can be had: the caller is a test.
pub async fn fresh_tls_database() -> (String, PathBuf) {
    let server = match TLS_SERVER.get_or_init(|| start_server(true)).await {
        Ok(s) => s,
        Err(e) => panic!("no TLS PostgreSQL server for the tests: {e}"),
    };
    let ca = server
        .ca_file
        .clone()
        .expect("a TLS server has its CA file");
    let name = format!("keelson_test_{}", uuid::Uuid::new_v4().simple());
    if let Err(e) = create_database(&server.admin_url, &name).await {
        panic!("creating database {name}: {e}");
    }
    (with_database(&server.admin_url, &name), ca)
}

impl crate::PostgresStore {
    /// Whether the server sees a connection of this store's pool as
    /// encrypted (`pg_stat_ssl`).
    pub async fn connection_uses_tls(&self) -> Result<bool, String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(row.get(0))
    }
}

/// A running throwaway server, kept for the life of the test process.
struct Server {
    admin_url: String,
    /// The CA of the server's certificate (PEM), for a TLS server.
    ca_file: Option<PathBuf>,
    /// Never read: kept so the server is not reaped as a zombie before exit.
    _postgres: Child,
    /// Its closing (at process exit) tells the watchdog to stop the server.
    _watchdog: ChildStdin,
}

static SERVER: OnceCell<Result<Server, String>> = OnceCell::const_new();
static TLS_SERVER: OnceCell<Result<Server, String>> = OnceCell::const_new();

async fn admin_url() -> Result<String, String> {
    if let Some(url) = std::env::var(DATABASE_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        return Ok(url);
    }
    // Every test of the process waits here for the first one's server; a
    // failure is kept too, so the other tests fail at once with its reason.
    match SERVER.get_or_init(|| start_server(false)).await {
        Ok(s) => Ok(s.admin_url.clone()),
        Err(e) => Err(e.clone()),
    }
}

async fn create_database(admin: &str, name: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::connect(admin, NoTls)
        .await
        .map_err(|e| format!("connecting to {}: {e:?}", redact(admin)))?;
    let task = tokio::spawn(connection);
    let created = client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| format!("{e:?}"));
    drop(client);
    let _ = task.await;
    created
}

/// `admin` with its database replaced by `name`.
fn with_database(admin: &str, name: &str) -> String {
    let scheme = ["postgres://", "postgresql://"]
        .into_iter()
        .find(|s| admin.starts_with(s));
    let Some(scheme) = scheme else {
        // libpq's key=value form: a later key wins.
        return format!("{admin} dbname={name}");
    };
    let rest = &admin[scheme.len()..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority_end..]
        .find('?')
        .map(|i| &rest[authority_end + i..])
        .unwrap_or("");
    format!("{scheme}{}/{name}{query}", &rest[..authority_end])
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if s + 3 < at => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Where the binaries are and whom to run them as.
struct Binaries {
    bin: PathBuf,
    /// `postgres`' uid and gid when this process is root.
    run_as: Option<(u32, u32)>,
}

impl Binaries {
    fn command(&self, program: &str, dir: &Path) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(dir);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

async fn start_server(tls: bool) -> Result<Server, String> {
    let started = Instant::now();
    let bins = tokio::task::spawn_blocking(find_or_install)
        .await
        .map_err(|e| e.to_string())??;
    let mut last_error = String::new();
    for _ in 0..START_TRIES {
        let bins = Binaries {
            bin: bins.bin.clone(),
            run_as: bins.run_as,
        };
        let attempt = tokio::task::spawn_blocking(move || spawn_server(&bins, tls))
            .await
            .map_err(|e| e.to_string())??;
        match attempt.wait_ready().await {
            Ok(server) => {
                eprintln!(
                    "keelson-postgres: test server {} ready in {:?}",
                    server.admin_url,
                    started.elapsed()
                );
                return Ok(server);
            }
            // The watchdog (dropped with the attempt) deletes its directory.
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

fn find_or_install() -> Result<Binaries, String> {
    let root = is_root()?;
    let bin = match find_bin_dir() {
        Some(bin) => bin,
        None if root => {
            install_postgresql()?;
            find_bin_dir().ok_or_else(|| {
                "Debian's postgresql package is installed but no /usr/lib/postgresql/*/bin/initdb"
                    .to_string()
            })?
        }
        None => {
            return Err(format!(
                "no PostgreSQL under /usr/lib/postgresql and not root to install it: \
                 install Debian's postgresql package or set {DATABASE_URL_ENV}"
            ))
        }
    };
    let run_as = if root { Some(postgres_user()?) } else { None };
    Ok(Binaries { bin, run_as })
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb` and `postgres`.
fn find_bin_dir() -> Option<PathBuf> {
    fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("postgres").is_file())
                .then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v)
        .map(|(_, bin)| bin)
}

fn install_postgresql() -> Result<(), String> {
    // One script under one lock: a concurrent test binary waits for this
    // install and then finds nothing to do. A fresh machine's package lists
    // may be missing or stale, hence the update when the install fails.
    let script = r#"
        apt() { apt-get -o DPkg::Lock::Timeout=120 "$@"; }
        set -- install -y --no-install-recommends postgresql
        apt "$@" || { apt update && apt "$@"; }
    "#;
    eprintln!("keelson-postgres: installing Debian's postgresql package for the tests");
    let out = Command::new("flock")
        .args(["-w", "900", APT_LOCK, "sh", "-c", script])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running flock {APT_LOCK} apt-get: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "apt-get install postgresql failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn is_root() -> Result<bool, String> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("running id -u: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// uid and gid of the `postgres` user (created by Debian's package).
fn postgres_user() -> Result<(u32, u32), String> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == "postgres")
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| {
            "running as root, and PostgreSQL refuses to: no `postgres` user to run it as".into()
        })
}

/// A server process that may not be ready yet.
struct Attempt {
    dir: PathBuf,
    port: u16,
    postgres: Child,
    watchdog: ChildStdin,
    ca_file: Option<PathBuf>,
}

/// A new directory `/tmp/kpg-XXXXXX` (or under the temporary directory
/// when there is no `/tmp`), ours alone.
fn private_dir() -> Result<PathBuf, String> {
    let tmp = Path::new("/tmp");
    let base = if tmp.is_dir() {
        tmp.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    loop {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let dir = base.join(format!("kpg-{}", &suffix[..6]));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("creating {}: {e}", dir.display())),
        }
    }
}

fn spawn_server(bins: &Binaries, tls: bool) -> Result<Attempt, String> {
    let dir = private_dir()?;
    if let Some((uid, gid)) = bins.run_as {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    let out = bins
        .command("initdb", &dir)
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
        // No fsync of the new cluster: it lives as long as this process.
        .arg("--no-sync")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(&dir);
        return Err(format!(
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut tls_settings = Vec::new();
    let ca_file = if tls {
        match make_certificates(&dir, bins.run_as) {
            Ok(certs) => {
                tls_settings = vec![
                    "-c".to_string(),
                    "ssl=on".to_string(),
                    "-c".to_string(),
                    format!("ssl_cert_file={}", certs.cert.display()),
                    "-c".to_string(),
                    format!("ssl_key_file={}", certs.key.display()),
                ];
                Some(certs.ca)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
    } else {
        None
    };
    let port = free_port()?;
    let log = fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let postgres = bins
        .command("postgres", &dir)
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(&dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ])
        .args(&tls_settings)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Its own process group: a Ctrl-C at the terminal is for the tests,
        // the watchdog stops the server.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let watchdog = spawn_watchdog(postgres.id(), &dir, SHUTDOWN_GRACE_SECS)?;
    Ok(Attempt {
        dir,
        port,
        postgres,
        watchdog,
        ca_file,
    })
}

/// Files of a throwaway CA and a server certificate it signed.
struct Certificates {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Makes, in `dir/tls`, a CA and a certificate for `127.0.0.1` and
/// `localhost` signed by it (P-256 keys: fast to make), valid for two days.
/// The server's key goes to the server's user with mode 0600, as
/// PostgreSQL demands of a key it does not own through root.
fn make_certificates(dir: &Path, run_as: Option<(u32, u32)>) -> Result<Certificates, String> {
    let tls = dir.join("tls");
    fs::create_dir(&tls).map_err(|e| format!("creating {}: {e}", tls.display()))?;
    // A v3 CA (webpki refuses v1 certificates) and a leaf with the SANs
    // rustls checks (it ignores the CN).
    let script = r#"
        set -e
        cd "$1"
        ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2             -subj /CN=keelson-test-ca             -addext basicConstraints=critical,CA:TRUE             -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
        openssl req -new $ec -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
        printf '%s
' 'subjectAltName=DNS:localhost,IP:127.0.0.1'             'basicConstraints=critical,CA:FALSE'             'keyUsage=critical,digitalSignature'             'extendedKeyUsage=serverAuth' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial             -days 2 -extfile server.ext -out server.crt 2>&1
        chmod 0600 server.key
    "#;
    let out = Command::new("sh")
        .args(["-c", script, "keelson-pg-certs"])
        .arg(&tls)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running openssl (is it installed?): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "making the test certificates with openssl failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let key = tls.join("server.key");
    if let Some((uid, gid)) = run_as {
        std::os::unix::fs::chown(&key, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", key.display()))?;
    }
    Ok(Certificates {
        ca: tls.join("ca.pem"),
        cert: tls.join("server.crt"),
        key,
    })
}

/// Starts the shell that stops the server and deletes `dir` once its
/// standard input closes. (The server cannot be told to die with its parent
/// without `prctl`, i.e. unsafe code.) `pid` leads its own process group.
fn spawn_watchdog(pid: u32, dir: &Path, grace_secs: u32) -> Result<ChildStdin, String> {
    // SIGINT is PostgreSQL's fast shutdown; SIGQUIT its immediate one (for
    // a server stuck in the fast one); SIGKILL to the group ends what is
    // left (a killed postmaster's backends would linger otherwise). The
    // directory goes only once nothing runs there any more.
    let script = r#"
        cat >/dev/null
        gone() { ! kill -0 "$1" 2>/dev/null; }
        wait_gone() {
            i=0
            while ! gone "$1" && [ "$i" -lt $(($3 * 10)) ]; do sleep 0.1; i=$((i+1)); done
        }
        kill -INT "$1" 2>/dev/null
        wait_gone "$@"
        if ! gone "$1"; then kill -QUIT -- "-$1" 2>/dev/null; wait_gone "$@"; fi
        if ! gone "$1"; then kill -KILL -- "-$1" 2>/dev/null; wait_gone "$@"; fi
        rm -rf "$2"
    "#;
    // bash (Essential on Debian), not dash: dash's kill cannot signal a
    // process group.
    let mut child = Command::new("bash")
        .args(["-c", script, "keelson-pg-watchdog"])
        .arg(pid.to_string())
        .arg(dir)
        .arg(grace_secs.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting the watchdog shell: {e}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| "the watchdog has no stdin".to_string())
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

impl Attempt {
    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ =
            fs::File::open(self.dir.join("server.log")).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// Polls for a connection through the server's socket until the
    /// deadline; gives up early if the server exits.
    async fn wait_ready(mut self) -> Result<Server, String> {
        let url = self.admin_url();
        let mut socket = tokio_postgres::Config::new();
        socket
            .host_path(&self.dir)
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5));
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.postgres.try_wait() {
                return Err(format!("postgres exited ({status}):\n{}", self.log()));
            }
            match socket.connect(NoTls).await {
                Ok(_) => {
                    return Ok(Server {
                        admin_url: url,
                        ca_file: self.ca_file,
                        _postgres: self.postgres,
                        _watchdog: self.watchdog,
                    })
                }
                Err(e) if Instant::now() > deadline => {
                    let _ = self.postgres.kill();
                    return Err(format!(
                        "postgres did not accept connections within {READY_DEADLINE:?} ({e:?}):\n{}",
                        self.log()
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        let cases = [
            ("postgres://u:p@h:5432/admin", "postgres://u:p@h:5432/x"),
            (
                "postgres://u@h/admin?sslmode=disable",
                "postgres://u@h/x?sslmode=disable",
            ),
            ("postgresql://h:1", "postgresql://h:1/x"),
            (
                "postgres://h:1?application_name=a",
                "postgres://h:1/x?application_name=a",
            ),
            (
                "host=h user=u dbname=admin",
                "host=h user=u dbname=admin dbname=x",
            ),
        ];
        for (admin, want) in cases {
            assert_eq!(with_database(admin, "x"), want, "{admin}");
        }
    }

    #[test]
    fn the_servers_socket_path_fits_the_unix_limit() {
        let dir = private_dir().unwrap();
        let socket = dir.join(".s.PGSQL.65535");
        let _ = fs::remove_dir(&dir);
        // sun_path holds 108 bytes, with the terminating NUL.
        assert!(socket.as_os_str().len() <= 107, "{}", socket.display());
    }

    #[test]
    fn the_watchdog_kills_a_server_that_ignores_shutdown_then_deletes_its_directory() {
        let dir = private_dir().unwrap();
        fs::write(dir.join("file"), "x").unwrap();
        // Ignores SIGINT and SIGQUIT, as a stuck server would not act on them.
        let mut stuck = Command::new("bash")
            .args(["-c", "trap '' INT QUIT; sleep 60 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let watchdog = spawn_watchdog(stuck.id(), &dir, 1).unwrap();
        drop(watchdog);
        let deadline = Instant::now() + Duration::from_secs(20);
        while dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = stuck.try_wait().unwrap();
        if status.is_none() {
            let _ = stuck.kill();
            let _ = stuck.wait();
        }
        assert!(!dir.exists(), "{} was not deleted", dir.display());
        assert!(status.is_some(), "the stuck process was left running");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
