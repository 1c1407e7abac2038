//! The shared store and bus behaviours, on SQLite: in memory (one connection)
//! and in a file (a writer and a reader connection).

use keelson_sqlite::{SqliteBus, SqliteStore};

fn dead_letters(bus: &SqliteBus, consumer: &str) -> Vec<(keelson_core::event::KeptnEvent, String)> {
    bus.dead_letters(consumer).expect("dead_letters")
}

mod in_memory {
    use super::*;

    keelson_store_conformance::store_tests!(|| SqliteStore::open_in_memory().expect("open"));

    keelson_store_conformance::bus_tests!(
        |subs| SqliteStore::open_in_memory().expect("open").bus(subs),
        dead_letters
    );
}

mod file {
    use super::*;

    fn open() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("keelson.db")).expect("open");
        (store, dir)
    }

    keelson_store_conformance::store_tests!(guarded open);
}
