//! `keelson-store-conformance`: the behaviours every store and bus adapter
//! must share, one public async function per behaviour.
//!
//! Adapters run them from their own tests, one `#[tokio::test]` per behaviour:
//!
//! ```ignore
//! keelson_store_conformance::store_tests!(MemoryStore::new);
//! keelson_store_conformance::bus_tests!(MemoryBus::new, |bus: &MemoryBus, consumer: &str| {
//!     bus.dead_letters(consumer)
//! });
//! ```
//!
//! `store_tests!(guarded make)` takes a `make` that returns `(store, guard)`,
//! the guard (a temporary directory, say) living as long as the test. Or call
//! [`run_all`] / [`run_bus_all`] from a single test.
//!
//! Each function builds its data on a fresh, empty store and panics on the
//! first difference from the expected behaviour.

mod bus;
mod events;
mod fixtures;
mod projects;
mod sequence;

pub use bus::*;
pub use events::*;
pub use projects::*;
pub use sequence::*;

use keelson_core::event::KeptnEvent;
use keelson_core::ports::{EventBus, Queue, Store, Subscription};

/// Runs every store behaviour, each on a fresh store from `make`.
pub async fn run_all<S: Store>(make: impl Fn() -> S) {
    __store_cases!(run plain (make));
}

/// Runs every bus behaviour, each on a fresh bus from `make`; `dead_letters`
/// lists a consumer's dead letters with their reasons (an adapter's own API).
pub async fn run_bus_all<B: EventBus + Queue>(
    make: impl Fn(Vec<Subscription>) -> B,
    dead_letters: impl Fn(&B, &str) -> Vec<(KeptnEvent, String)>,
) {
    __bus_cases!(run(make)(dead_letters));
}

/// One `#[tokio::test]` per store behaviour. `store_tests!(make)` with
/// `make: Fn() -> S`, or `store_tests!(guarded make)` with `make: Fn() -> (S, G)`.
#[macro_export]
macro_rules! store_tests {
    (guarded $make:expr) => {
        $crate::__store_cases!(tests guarded ($make));
    };
    // `store_tests!(async make)` with `make: Fn() -> impl Future<Output = S>`
    // (a store on a backend that needs setting up, like a fresh table).
    (async $make:expr) => {
        $crate::__store_cases!(tests awaited ($make));
    };
    ($make:expr) => {
        $crate::__store_cases!(tests plain ($make));
    };
}

/// One `#[tokio::test]` per bus behaviour: `bus_tests!(make, dead_letters)`
/// with `make: Fn(Vec<Subscription>) -> B` and `dead_letters: Fn(&B, &str) -> Vec<(KeptnEvent, String)>`.
#[macro_export]
macro_rules! bus_tests {
    ($make:expr, $dead:expr $(,)?) => {
        $crate::__bus_cases!(tests($make)($dead));
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_cases {
    ($mode:ident $kind:ident $make:tt) => {
        $crate::__store_cases!(@expand $mode $kind $make;
            duplicate_event_ids_are_stored_once,
            every_event_query_filter_narrows_the_results,
            time_bounds_are_exclusive,
            root_events_are_the_earliest_of_each_context,
            events_come_newest_first_with_ties_in_reverse_storage_order,
            pages_are_walked_by_offset_with_a_total_count,
            a_zero_page_size_means_the_default_page_size,
            type_queries_match_any_of_the_values_at_any_path,
            type_queries_are_newest_first_after_from_time_and_limited,
            events_answering_an_invalidated_trigger_can_be_excluded,
            purging_deletes_older_events_and_moves_the_root,
            creating_a_project_commits_its_shipyard,
            creating_an_existing_project_fails,
            updating_a_project_is_conditional_on_its_version,
            projects_are_listed_by_name,
            deleting_a_project_removes_everything_of_it,
            every_resource_write_is_a_commit_and_reads_go_back_in_time,
            deleting_a_resource_hides_it_from_later_commits_only,
            reading_at_an_unknown_commit_is_not_found,
            resource_scopes_are_independent,
            writing_resources_of_an_unknown_project_is_not_found,
            lane_commits_are_conditional_on_the_version,
            a_lane_reads_back_as_committed,
            a_cause_is_applied_once_and_a_rejected_commit_changes_nothing,
            applied_effects_round_trip,
            applied_or_lane_reads_the_record_else_the_lane,
            applied_records_older_than_the_window_are_purged,
            recent_effects_are_those_near_the_newest_record,
            due_lanes_are_those_whose_wakeup_has_come,
            executions_are_projected_with_their_activity,
            open_triggers_are_replaced_on_every_lane_commit,
            pause_marks_cover_a_context_or_one_stage,
            integrations_are_upserted_listed_and_deleted,
        );
    };
    (@expand tests $kind:ident $make:tt; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $crate::__store_cases!(@make $kind $make);
                $crate::$name(&store).await;
                drop(store); // before the guard
            }
        )*
    };
    (@expand run $kind:ident $make:tt; $($name:ident),* $(,)?) => {
        $(
            {
                let (store, _guard) = $crate::__store_cases!(@make $kind $make);
                $crate::$name(&store).await;
                drop(store); // before the guard
            }
        )*
    };
    (@make plain $make:tt) => {
        (($make)(), ())
    };
    (@make guarded $make:tt) => {
        ($make)()
    };
    (@make awaited $make:tt) => {
        (($make)().await, ())
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __bus_cases {
    ($mode:ident $make:tt $dead:tt) => {
        $crate::__bus_cases!(@expand $mode $make $dead;
            publishing_fans_out_to_every_matching_consumer_in_order,
            events_no_consumer_subscribed_to_are_dropped,
            deliveries_are_handed_out_once_oldest_first,
            dead_letters_leave_the_queue_with_their_reason,
            released_deliveries_are_handed_out_again,
        );
    };
    (@expand tests $make:tt $dead:tt; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                $crate::$name(&$make, &$dead).await;
            }
        )*
    };
    (@expand run $make:tt $dead:tt; $($name:ident),* $(,)?) => {
        $(
            $crate::$name(&$make, &$dead).await;
        )*
    };
}
