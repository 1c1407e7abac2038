//! The shared store and bus behaviours, on the in-memory adapters.

use keelson_memory::{MemoryBus, MemoryStore};

keelson_store_conformance::store_tests!(MemoryStore::new);

keelson_store_conformance::bus_tests!(MemoryBus::new, |bus: &MemoryBus, consumer: &str| {
    bus.dead_letters(consumer)
});

#[tokio::test]
async fn run_all_runs_every_behaviour() {
    keelson_store_conformance::run_all(MemoryStore::new).await;
    keelson_store_conformance::run_bus_all(MemoryBus::new, |bus: &MemoryBus, consumer: &str| {
        bus.dead_letters(consumer)
    })
    .await;
}
