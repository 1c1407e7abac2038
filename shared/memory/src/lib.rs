//! `keelson-memory`: small, real implementations of the ports that keep
//! everything in process memory: [`MemoryStore`] (every store port) and
//! [`MemoryBus`] (the event bus and its per-consumer queues). They back the
//! tests and `keelson serve --memory`, and pass the shared conformance suite.

mod bus;
mod store;

pub use bus::MemoryBus;
pub use store::MemoryStore;

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, ignoring poisoning: every critical section leaves the state
/// consistent before anything that could panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
