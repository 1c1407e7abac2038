//! `keelson-sqlite`: every store port and a durable local bus in one SQLite
//! file.
//!
//! The file is opened in WAL mode with `synchronous=NORMAL`: a committed
//! transaction survives a process crash or restart (a power loss may drop the
//! last few). Every write goes to one writer thread, which commits the writes
//! of all concurrent callers in one transaction, each under its own savepoint
//! (group commit). Queries use a small pool of other connections, which WAL
//! lets read while a write is in progress; they do their (short) blocking
//! SQLite work inline.
//!
//! [`SqliteStore::bus`] gives the [`SqliteBus`] that shares the store's file.

mod bus;
mod events;
mod projects;
mod sequence;

pub use bus::SqliteBus;

use keelson_core::ports::{StoreError, StoreResult, Subscription};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// The event type `events_evaluations` holds (schema v5): one literal for
/// the index's condition and for the queries that must repeat it.
macro_rules! evaluations_index_type {
    () => {
        "sh.keptn.event.evaluation.finished"
    };
}
pub(crate) use evaluations_index_type;

/// Version of the schema this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 5;

const SCHEMA_V1: &str = include_str!("schema.sql");
/// Version 2: an index for type queries scoped to one service (the
/// lighthouse's previous evaluations), which otherwise walked every event of
/// the type in the project, newest first, reading each one's row.
const SCHEMA_V2: &str =
    "CREATE INDEX events_type_scope ON events (type, project, stage, service, time);";
/// Version 3: `data.result` in a column when it is a string (NULL for other
/// values and for rows stored before, which the filter reads from the JSON),
/// and in the scoped type index, so the lighthouse's previous evaluations
/// are selected from the index without parsing each candidate's JSON. The
/// index names `seq` before `result` so that it still gives the newest-first
/// order (`time, seq`) without a sort. And `queue.event`: the stored event
/// (its `seq`) a queue row delivers, instead of a copy of its JSON.
const SCHEMA_V3: &str = "ALTER TABLE events ADD COLUMN result TEXT; \
     ALTER TABLE queue ADD COLUMN event INTEGER; \
     DROP INDEX events_type_scope; \
     CREATE INDEX events_type_scope ON events (type, project, stage, service, time, seq, result);";
/// Version 4: the event type in the `triggeredid` index, so that leaving out
/// invalidated evaluations reads the index alone: it looked up every event
/// answering each candidate's trigger in the table, a row read per event
/// (most of the lighthouse's previous-evaluations query, 4% of a
/// quality-gates run's CPU time).
const SCHEMA_V4: &str = "DROP INDEX events_triggeredid; \
     CREATE INDEX events_triggeredid ON events (triggeredid, type) WHERE triggeredid IS NOT NULL;";
/// Version 5: the scoped type index holds `evaluation.finished` events only
/// (the lighthouse's previous evaluations, the one query it serves fast).
/// Over every event it had one hot spot per (type, service), so each event
/// stored dirtied a leaf page of its own: 7 of the ~33 WAL pages a
/// quality-gates evaluation wrote. Scoped queries of other types walk
/// `events_type` newest first and filter.
const SCHEMA_V5: &str = concat!(
    "DROP INDEX events_type_scope; \
     CREATE INDEX events_evaluations ON events (project, stage, service, time, seq, result) \
     WHERE type = '",
    evaluations_index_type!(),
    "';"
);
/// How long a connection waits for a lock another holds before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the checkpointer's RESTART waits for readers (holding writers
/// off meanwhile) before giving up until its next round.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(5);
const STATEMENT_CACHE: usize = 128;
/// WAL frames (one page each, 4 KiB) after which the checkpointer rewinds the log.
const RESTART_FRAMES: i64 = 4096;
/// A rewound log file is truncated to this size.
const WAL_SIZE_LIMIT: i64 = 64 << 20;
/// Query connections of a file database: one per core of the machine the
/// figures were taken on, so reads of different consumers run side by side
/// instead of queueing behind one connection (each read is a few tens of µs
/// of CPU, mostly re-reading pages a commit invalidated).
const READERS: usize = 2;

/// Most grouped writes one transaction carries.
const MAX_GROUP: usize = 256;

/// Every store port on one SQLite database. Clones share the connections.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: Mutex<Connection>,
    /// Async callers queue here for a query connection (one permit per
    /// connection; the writer's, for an in-memory database): waiting on a
    /// connection's mutex would block a runtime thread.
    read_turn: tokio::sync::Semaphore,
    /// The query connections; none for an in-memory database, which one connection serves.
    readers: Vec<Mutex<Connection>>,
    /// Bus: consumer → highest receipt handed out by this process (undelivered
    /// = above it). One async lock per consumer, held across its read: two
    /// consumers' receives never wait for each other, and a waiting receive
    /// does not block a runtime thread.
    delivered: Mutex<HashMap<String, Arc<tokio::sync::Mutex<i64>>>>,
    /// Bus: consumer → the events this process published to it, by receipt,
    /// committed and not yet handed out ([`bus::Fresh`]).
    fresh: Mutex<HashMap<String, bus::Fresh>>,
    /// The writer thread's queue of grouped writes ([`SqliteStore::write_grouped`]).
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// Projects decoded, by name ([`projects::Decoded`]).
    projects: Mutex<HashMap<String, projects::Decoded>>,
}

/// A write that the writer thread runs inside a shared transaction.
trait Job: Send {
    /// Runs the write; true when it failed (its changes are then rolled back).
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> bool;
    /// Hands the outcome to the caller; `failed` is why the transaction did
    /// not commit, if it did not.
    fn finish(self: Box<Self>, failed: Option<&StoreError>);
    /// Whether it runs in a transaction of its own ([`SqliteStore::write_alone`]).
    fn alone(&self) -> bool;
}

struct Grouped<F, T> {
    write: F,
    out: Option<StoreResult<T>>,
    reply: tokio::sync::oneshot::Sender<StoreResult<T>>,
    alone: bool,
}

impl<F, T> Job for Grouped<F, T>
where
    F: FnMut(&rusqlite::Transaction<'_>) -> StoreResult<T> + Send,
    T: Send,
{
    fn run(&mut self, tx: &rusqlite::Transaction<'_>) -> bool {
        let out = (self.write)(tx);
        let failed = out.is_err();
        let out = Some(out);
        self.out = out;
        failed
    }

    fn finish(self: Box<Self>, failed: Option<&StoreError>) {
        let out = match (self.out, failed) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), None) => Ok(v),
            (Some(Ok(_)) | None, Some(e)) => Err(StoreError::backend(
                Message(format!("the write was not committed: {e}")),
                matches!(e.kind(), keelson_core::error::ErrorKind::Transient),
            )),
            (None, None) => Err(backend_msg("the write panicked".to_string())),
        };
        let _ = self.reply.send(out);
    }

    fn alone(&self) -> bool {
        self.alone
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates its schema.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<Self> {
        let path = path.as_ref();
        let mut writer = Connection::open(path).db()?;
        configure(&writer)?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .db()?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(backend_msg(format!(
                "{}: could not switch to WAL journal mode (got {mode})",
                path.display()
            )));
        }
        writer.pragma_update(None, "synchronous", "NORMAL").db()?;
        migrate(&mut writer)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .db()?;
                configure(&reader)?;
                reader.pragma_update(None, "query_only", true).db()?;
                Ok(reader)
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // Checkpoints run on their own connection and thread, not inside a
        // writer's commit: an inline auto-checkpoint (with its fsync) was the
        // slowest step of a publish and showed in the latency tail.
        writer.pragma_update(None, "wal_autocheckpoint", 0).db()?;
        writer
            .query_row(
                &format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}"),
                [],
                |_| Ok(()),
            )
            .db()?;
        let checkpointer = Connection::open(path).db()?;
        configure(&checkpointer)?;
        let store = Self::from_connections(writer, readers)?;
        spawn_checkpointer(Arc::downgrade(&store.inner), checkpointer);
        Ok(store)
    }

    /// A private in-memory database (one connection; gone when the last clone is dropped).
    pub fn open_in_memory() -> StoreResult<Self> {
        let mut conn = Connection::open_in_memory().db()?;
        configure(&conn)?;
        migrate(&mut conn)?;
        Self::from_connections(conn, Vec::new())
    }

    fn from_connections(writer: Connection, readers: Vec<Connection>) -> StoreResult<Self> {
        let (jobs, queue) = mpsc::channel();
        let store = SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                read_turn: tokio::sync::Semaphore::new(readers.len().max(1)),
                readers: readers.into_iter().map(Mutex::new).collect(),
                delivered: Mutex::new(HashMap::new()),
                fresh: Mutex::new(HashMap::new()),
                jobs,
                projects: Mutex::new(HashMap::new()),
            }),
        };
        spawn_writer(Arc::downgrade(&store.inner), queue)?;
        Ok(store)
    }

    /// The bus on this database, delivering to `subscriptions` (several
    /// subscriptions of one consumer are merged). Buses of one store share
    /// their delivery state, so a delivery is handed out once per process.
    pub fn bus(&self, subscriptions: Vec<Subscription>) -> SqliteBus {
        SqliteBus::new(self.clone(), subscriptions)
    }

    /// The bus's fresh events (see [`Inner::fresh`]).
    fn fresh(&self) -> MutexGuard<'_, HashMap<String, bus::Fresh>> {
        lock(&self.inner.fresh)
    }

    /// The bus's delivery position of `consumer` (see [`Inner::delivered`]).
    fn delivered(&self, consumer: &str) -> Arc<tokio::sync::Mutex<i64>> {
        lock(&self.inner.delivered)
            .entry(consumer.to_string())
            .or_default()
            .clone()
    }

    /// A write that may share its transaction with other callers' (group
    /// commit): the writer thread runs the writes waiting for it one after
    /// another and commits them together; a failed one is rolled back alone
    /// (see `commit_group`), so a write may run twice and must not consume
    /// what it captured. Under load one commit then carries many
    /// writes, and pages that several of them change are written to the log
    /// once. Returns once the write is committed (or failed).
    async fn write_grouped<T: Send + 'static>(
        &self,
        write: impl FnMut(&rusqlite::Transaction<'_>) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.write_on_writer(write, false).await
    }

    /// A write that may change many rows (purges, a project's deletion): the
    /// writer thread runs it in a transaction of its own, without a
    /// savepoint, whose journal (in memory) would hold a copy of every page
    /// it changes.
    async fn write_alone<T: Send + 'static>(
        &self,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        // Runs once: a job alone is never run again (see `commit_group`).
        let mut write = Some(write);
        let once = move |tx: &rusqlite::Transaction<'_>| match write.take() {
            Some(w) => w(tx),
            None => Err(backend_msg("a write alone was run twice".to_string())),
        };
        self.write_on_writer(once, true).await
    }

    async fn write_on_writer<T: Send + 'static>(
        &self,
        write: impl FnMut(&rusqlite::Transaction<'_>) -> StoreResult<T> + Send + 'static,
        alone: bool,
    ) -> StoreResult<T> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let job = Grouped {
            write,
            out: None,
            reply,
            alone,
        };
        self.inner
            .jobs
            .send(Box::new(job))
            .map_err(|_| transient_msg("the store's writer has stopped".to_string()))?;
        outcome
            .await
            .map_err(|_| transient_msg("the write was interrupted".to_string()))?
    }

    /// [`Self::read`] for async callers: waits for its turn without
    /// blocking the runtime thread.
    async fn read_async<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let _turn = self.read_turn().await?;
        self.read(f)
    }

    /// A query connection's turn (the writer's, when it is the only one).
    async fn read_turn(&self) -> StoreResult<tokio::sync::SemaphorePermit<'_>> {
        turn(&self.inner.read_turn).await
    }

    /// Runs `f` in a read transaction (one snapshot) on a query connection:
    /// a free one if there is one (a caller holding a read turn always finds
    /// one), else it waits for the first.
    fn read<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let readers = &self.inner.readers;
        let mut conn = match readers.iter().find_map(try_lock) {
            Some(free) => free,
            None => lock(readers.first().unwrap_or(&self.inner.writer)),
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .db()?;
        f(&tx)
    }
}

/// The writer thread: takes every grouped write waiting (up to
/// [`MAX_GROUP`]) and commits them in one transaction, until the store is dropped.
fn spawn_writer(store: Weak<Inner>, queue: mpsc::Receiver<Box<dyn Job>>) -> StoreResult<()> {
    std::thread::Builder::new()
        .name("keelson-sqlite-writer".into())
        .spawn(move || {
            // A job that must run alone, taken while collecting a group.
            let mut next: Option<Box<dyn Job>> = None;
            loop {
                let first = match next.take() {
                    Some(job) => job,
                    None => match queue.recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    },
                };
                let mut group = vec![first];
                while group.len() < MAX_GROUP && !group[0].alone() {
                    match queue.try_recv() {
                        Ok(job) if job.alone() => {
                            next = Some(job);
                            break;
                        }
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
                // Gone: the jobs are dropped and their callers told so.
                let Some(inner) = store.upgrade() else { return };
                let mut conn = lock(&inner.writer);
                commit_group(&mut conn, group);
            }
        })
        .map(drop)
        .map_err(|e| backend_msg(format!("cannot start the SQLite writer thread: {e}")))
}

/// Runs `group` in one immediate transaction and tells each job the outcome.
///
/// The jobs first run one after another with nothing between them. A job
/// that fails before changing a row (a conflict or a duplicate its reads
/// found: the failures that happen in practice) leaves nothing to undo, and
/// the others commit. Only when a job fails or panics after changing rows is
/// the transaction rolled back and the group run again, each job under a
/// savepoint of its own that its failure rolls back. A savepoint for every
/// job copied each page a job first touched into the savepoint's journal:
/// 5% of the CPU time of a quality-gates run, on the writer thread
/// (BENCHMARKS.md).
fn commit_group(conn: &mut Connection, mut group: Vec<Box<dyn Job>>) {
    let outcome = match run_group(conn, &mut group, false) {
        Err(Undo::Job) => run_group(conn, &mut group, true),
        other => other,
    };
    let failed = match outcome {
        Ok(()) => None,
        Err(Undo::Job) => Some(backend_msg(
            "a failed write could not be undone".to_string(),
        )),
        Err(Undo::Store(e)) => Some(e),
    };
    for job in group {
        job.finish(failed.as_ref());
    }
}

/// Why [`run_group`] did not commit.
enum Undo {
    /// A job failed after changing rows, with no savepoint to undo it alone.
    Job,
    /// The transaction failed.
    Store(StoreError),
}

impl From<StoreError> for Undo {
    fn from(e: StoreError) -> Self {
        Undo::Store(e)
    }
}

/// One attempt of [`commit_group`]: each job under a savepoint (`savepoints`)
/// or none.
fn run_group(
    conn: &mut Connection,
    group: &mut [Box<dyn Job>],
    savepoints: bool,
) -> Result<(), Undo> {
    let shared = group.len() > 1;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db()?;
    let mut any = false;
    for job in group.iter_mut() {
        if shared && savepoints {
            tx.prepare_cached("SAVEPOINT job").db()?.execute([]).db()?;
        }
        let changes = tx.total_changes();
        let failed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(&tx))).unwrap_or(true);
        if failed && tx.is_autocommit() {
            // SQLite rolled the transaction back itself (a full disk, an I/O
            // error): the jobs after this one must not run outside it.
            return Err(Undo::Store(backend_msg(
                "the transaction was rolled back after a failed write".to_string(),
            )));
        }
        if shared && savepoints {
            if failed {
                tx.prepare_cached("ROLLBACK TO job")
                    .db()?
                    .execute([])
                    .db()?;
            }
            tx.prepare_cached("RELEASE job").db()?.execute([]).db()?;
        } else if shared && failed && tx.total_changes() != changes {
            // Dropped, the transaction rolls back.
            return Err(Undo::Job);
        }
        any |= !failed;
    }
    // Nothing to keep: the transaction rolls back when dropped.
    if any {
        tx.commit().db()?;
    }
    Ok(())
}

/// Checkpoints the WAL every 250 ms until the store is dropped: PASSIVE
/// (never blocks readers or the writer), and RESTART once the log holds
/// [`RESTART_FRAMES`] frames. Under a steady stream of writes a passive
/// checkpoint never catches up with the writer, so SQLite never rewinds the
/// log: it grew by gigabytes in minutes, and every commit then wrote fresh
/// file blocks. RESTART briefly holds writers off (they wait in the busy
/// handler) so the next commit starts the log from its beginning again.
fn spawn_checkpointer(store: std::sync::Weak<Inner>, conn: Connection) {
    let fallback = store.clone();
    let spawned = std::thread::Builder::new()
        .name("keelson-sqlite-checkpoint".into())
        .spawn(move || {
            // RESTART holds new writers off while it waits for readers: wait
            // briefly and try again next time rather than stall commits.
            let _ = conn.busy_handler(Some(checkpoint_busy));
            // The frame count stays put until the next write rewinds the log;
            // an idle database is not restarted over and over.
            let mut restarted_at = -1;
            loop {
                std::thread::sleep(Duration::from_millis(250));
                if store.upgrade().is_none() {
                    return;
                }
                let log = conn
                    .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
                    .unwrap_or(0);
                if log >= RESTART_FRAMES && log != restarted_at {
                    let busy = conn
                        .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
                        .unwrap_or(1);
                    if busy == 0 {
                        restarted_at = log;
                    }
                }
            }
        });
    if spawned.is_err() {
        // Without the thread, fall back to SQLite's own checkpoints on commit.
        if let Some(inner) = fallback.upgrade() {
            let _ = lock(&inner.writer).pragma_update(None, "wal_autocheckpoint", 1000);
        }
    }
}

/// Pause between retries of a lock another connection holds. SQLite's own
/// busy handler sleeps 1, 2, 5, 10, 15, 20, 25… ms between retries: a writer
/// kept out for a few hundred µs by a checkpoint, or a checkpoint waiting
/// for a reader's 50 µs query, slept for tens of ms — 6.4 s of a 41 s
/// quality-gates run (BENCHMARKS.md). The locks here are held for
/// microseconds to a few milliseconds, so retry at that scale.
const BUSY_PAUSE: Duration = Duration::from_micros(50);

/// Busy handler of every connection: retries every [`BUSY_PAUSE`] for up to [`BUSY_TIMEOUT`].
fn busy(retries: i32) -> bool {
    retry_until(retries, BUSY_TIMEOUT)
}

/// Busy handler of the checkpointer: gives up after [`CHECKPOINT_WAIT`].
fn checkpoint_busy(retries: i32) -> bool {
    retry_until(retries, CHECKPOINT_WAIT)
}

fn retry_until(retries: i32, limit: Duration) -> bool {
    // The pause actually slept is longer than asked for; count at least it.
    if BUSY_PAUSE * u32::try_from(retries).unwrap_or(u32::MAX) >= limit {
        return false;
    }
    std::thread::sleep(BUSY_PAUSE);
    true
}

fn configure(conn: &Connection) -> StoreResult<()> {
    conn.busy_handler(Some(busy)).db()?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // One plan per statement whatever its parameters: the bundled SQLite is
    // built with STAT4, which re-prepares a cached statement whenever a
    // parameter compared with an indexed column is bound anew — the
    // previous-evaluations query was parsed and planned again on every call.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .db()?;
    // Savepoint and statement journals (a group run again after a failed write
    // puts each write under a savepoint) and temporary tables in memory: on
    // disk every page a write touched was first copied
    // to a temp file with its own pwrite calls, a quarter of the writer
    // thread's time (BENCHMARKS.md, quality gates).
    conn.pragma_update(None, "temp_store", "MEMORY").db()?;
    // No memory map (SQLite's default): a reader drops its mapping whenever
    // another connection has committed, i.e. before nearly every read, and
    // the munmap with its TLB shootdowns plus the page faults that follow
    // cost more than reading the pages (BENCHMARKS.md, quality gates: with
    // a 1 GiB map 398 evaluations/s, 3.4 ms CPU each; without, 455/s, 3.0 ms).
    Ok(())
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db()?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).db()?;
    if version > SCHEMA_VERSION {
        return Err(backend_msg(format!(
            "the database has schema version {version}, newer than this build's {SCHEMA_VERSION}"
        )));
    }
    if version < 1 {
        tx.execute_batch(SCHEMA_V1).db()?;
    }
    if version < 2 {
        tx.execute_batch(SCHEMA_V2).db()?;
    }
    if version < 3 {
        tx.execute_batch(SCHEMA_V3).db()?;
    }
    if version < 4 {
        tx.execute_batch(SCHEMA_V4).db()?;
    }
    if version < 5 {
        tx.execute_batch(SCHEMA_V5).db()?;
    }
    // Later versions add their steps here: `if version < 6 { ... }`.
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .db()?;
    tx.commit().db()
}

/// Waits for a connection's turn (the semaphores are never closed).
async fn turn(gate: &tokio::sync::Semaphore) -> StoreResult<tokio::sync::SemaphorePermit<'_>> {
    gate.acquire()
        .await
        .map_err(|_| transient_msg("the store is shutting down".to_string()))
}

/// Locks a mutex if it is free, ignoring poisoning.
fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        // An interrupted transaction rolled back when it was dropped.
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

/// Locks a mutex, ignoring poisoning (an interrupted transaction rolls back when dropped).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Maps SQLite errors to [`StoreError`]s.
trait Db<T> {
    fn db(self) -> StoreResult<T>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self) -> StoreResult<T> {
        self.map_err(|e| {
            let transient = matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            );
            StoreError::backend(e, transient)
        })
    }
}

#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

fn backend_msg(m: String) -> StoreError {
    StoreError::backend(Message(m), false)
}

fn transient_msg(m: String) -> StoreError {
    StoreError::backend(Message(m), true)
}

fn to_json<T: Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::backend(e, false))
}

fn from_json<T: DeserializeOwned>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::backend(e, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(store: &SqliteStore) -> Vec<String> {
        store
            .read(|tx| {
                let mut stmt = tx.prepare("SELECT id FROM integrations ORDER BY id").db()?;
                let rows = stmt.query_map([], |r| r.get(0)).db()?;
                rows.collect::<Result<_, _>>().db()
            })
            .unwrap()
    }

    /// Writes row `id`; then fails (a conflict) if `id` starts with `failing`.
    fn insert_row(tx: &rusqlite::Transaction<'_>, id: &str, failing: &str) -> StoreResult<()> {
        tx.execute(
            "INSERT INTO integrations (id, name, json) VALUES (?1, '', '{}')",
            [id],
        )
        .db()?;
        if id.starts_with(failing) {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    /// Writes row `id`, then fails, panics or succeeds.
    async fn job(store: SqliteStore, id: String) -> StoreResult<String> {
        store
            .write_grouped(move |tx| {
                insert_row(tx, &id, "fail")?;
                if id.starts_with("panic") {
                    panic!("a write that panics");
                }
                Ok(id.clone())
            })
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_in_a_group_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("k.db")).unwrap();
        let ids: Vec<String> = (0..30)
            .map(|i| match i % 3 {
                0 => format!("ok-{i:02}"),
                1 => format!("fail-{i:02}"),
                _ if i == 5 => format!("panic-{i:02}"),
                _ => format!("ok-{i:02}"),
            })
            .collect();
        // With the writer's connection held (by another thread, for 100 ms),
        // the jobs queue up and the writer thread takes them as one group
        // (after the first).
        let (locked, is_locked) = std::sync::mpsc::channel();
        let holder = {
            let store = store.clone();
            std::thread::spawn(move || {
                let _held = lock(&store.inner.writer);
                let _ = locked.send(());
                std::thread::sleep(Duration::from_millis(100));
            })
        };
        is_locked.recv().unwrap();
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| tokio::spawn(job(store.clone(), id.clone())))
            .collect();
        for (id, t) in ids.iter().zip(tasks) {
            let out = t.await.unwrap();
            match id.split('-').next() {
                Some("ok") => assert_eq!(out.unwrap(), *id),
                Some("fail") => assert!(matches!(out, Err(StoreError::Conflict)), "{id}: {out:?}"),
                _ => assert!(
                    out.as_ref()
                        .is_err_and(|e| e.to_string().contains("panicked")),
                    "{id}: {out:?}"
                ),
            }
        }
        holder.join().unwrap();
        let expected: Vec<String> = ids.into_iter().filter(|i| i.starts_with("ok")).collect();
        assert_eq!(rows(&store), expected);
        // The writer carries on after a panic.
        assert_eq!(job(store.clone(), "ok-99".into()).await.unwrap(), "ok-99");
    }

    /// The usual failure, found by a write's reads before it changes a row,
    /// needs no savepoint: the group commits in one pass, each write run
    /// once. A write failing after changing rows has the group run again
    /// (each under a savepoint), and its rows are rolled back alone.
    #[test]
    fn a_group_runs_again_only_after_a_write_failed_with_changes() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Runs one group on the writer's connection, as the writer thread does.
        fn grouped(store: &SqliteStore, ids: &[&str]) -> (Vec<StoreResult<()>>, usize) {
            let runs = Arc::new(AtomicUsize::new(0));
            let mut group: Vec<Box<dyn Job>> = vec![];
            let mut replies = vec![];
            for id in ids {
                let (runs, id) = (runs.clone(), id.to_string());
                let (reply, outcome) = tokio::sync::oneshot::channel();
                replies.push(outcome);
                group.push(Box::new(Grouped {
                    write: move |tx: &rusqlite::Transaction<'_>| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        if id.starts_with("clean") {
                            return Err(StoreError::Conflict);
                        }
                        insert_row(tx, &id, "dirty")
                    },
                    out: None,
                    reply,
                    alone: false,
                }));
            }
            commit_group(&mut lock(&store.inner.writer), group);
            let out = replies
                .into_iter()
                .map(|mut r| r.try_recv().unwrap())
                .collect();
            (out, runs.load(Ordering::SeqCst))
        }
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("k.db")).unwrap();
        let (out, runs) = grouped(&store, &["a-0", "clean-1", "a-2", "clean-3", "a-4"]);
        assert_eq!(runs, 5, "clean failures: every write runs once");
        let failed: Vec<bool> = out.iter().map(Result::is_err).collect();
        assert_eq!(failed, [false, true, false, true, false], "{out:?}");
        assert_eq!(rows(&store), ["a-0", "a-2", "a-4"]);
        let (out, runs) = grouped(&store, &["b-0", "b-1", "dirty-2", "b-3", "b-4"]);
        // b-0, b-1 and dirty-2, then the group again under savepoints.
        assert_eq!(runs, 3 + 5, "a failure after changes runs the group again");
        assert!(matches!(out[2], Err(StoreError::Conflict)), "{out:?}");
        let failed: Vec<bool> = out.iter().map(Result::is_err).collect();
        assert_eq!(failed, [false, false, true, false, false], "{out:?}");
        assert_eq!(
            rows(&store),
            ["a-0", "a-2", "a-4", "b-0", "b-1", "b-3", "b-4"]
        );
    }

    /// A write that may change many rows runs in a transaction of its own,
    /// not under a savepoint among other writes; those around it still commit.
    #[tokio::test]
    async fn a_write_alone_is_not_grouped() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("k.db")).unwrap();
        let (locked, is_locked) = std::sync::mpsc::channel();
        let holder = {
            let store = store.clone();
            std::thread::spawn(move || {
                let _held = lock(&store.inner.writer);
                let _ = locked.send(());
                std::thread::sleep(Duration::from_millis(100));
            })
        };
        is_locked.recv().unwrap();
        let before: Vec<_> = (0..5)
            .map(|i| tokio::spawn(job(store.clone(), format!("ok-{i}"))))
            .collect();
        let alone = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write_alone(|tx| {
                        // Under a group's savepoint this would release it.
                        Ok(tx.execute_batch("RELEASE job").map_err(|e| e.to_string()))
                    })
                    .await
            })
        };
        let after: Vec<_> = (5..10)
            .map(|i| tokio::spawn(job(store.clone(), format!("ok-{i}"))))
            .collect();
        for t in before.into_iter().chain(after) {
            t.await.unwrap().unwrap();
        }
        let probe = alone.await.unwrap().unwrap();
        assert!(
            probe
                .as_ref()
                .is_err_and(|e| e.contains("no such savepoint")),
            "{probe:?}"
        );
        holder.join().unwrap();
        assert_eq!(rows(&store).len(), 10);
    }
}
