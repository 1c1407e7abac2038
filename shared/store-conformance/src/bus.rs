//! The bus: [`EventBus`] and [`Queue`].

use crate::fixtures::*;
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{Delivery, EventBus, Queue, StoreError, Subscription};

fn bus_ev(id: &str, ty: &str) -> KeptnEvent {
    ev(id, ty, "ctx", ("p", "dev", "carts"), 1000)
}

async fn receive_ids<B: Queue>(bus: &B, consumer: &str, max: usize) -> (Vec<String>, Vec<u64>) {
    let d: Vec<Delivery> = bus.receive(consumer, max).await.expect("receive");
    (
        d.iter().map(|d| d.event.id.clone()).collect(),
        d.iter().map(|d| d.receipt).collect(),
    )
}

/// `publish` queues each event once for every consumer with a matching NATS
/// pattern (`*` one token, `>` the rest; several subscriptions of a consumer
/// count once), in publish order, with increasing receipts; the events read back equal.
pub async fn publishing_fans_out_to_every_matching_consumer_in_order<B: EventBus + Queue>(
    make: &impl Fn(Vec<Subscription>) -> B,
    _dead_letters: &impl Fn(&B, &str) -> Vec<(KeptnEvent, String)>,
) {
    let bus = make(vec![
        Subscription::new(
            "shipyard",
            &["sh.keptn.event.*.*.triggered", "sh.keptn.event.*.finished"],
        ),
        Subscription::new("datastore", &["sh.keptn.>"]),
        Subscription::new("approval", &["sh.keptn.event.approval.*"]),
        Subscription::new("twice", &["sh.keptn.event.>"]),
        Subscription::new("twice", &["sh.keptn.event.*.finished"]),
    ]);
    let mut e1 = bus_ev("e1", "sh.keptn.event.dev.delivery.triggered");
    e1.extensions
        .insert("traceparent".into(), serde_json::json!("00-1"));
    let events = [
        e1,
        bus_ev("e2", DEPLOYMENT_TRIGGERED),
        bus_ev("e3", DEPLOYMENT_FINISHED),
        bus_ev("e4", "sh.keptn.event.approval.finished"),
        bus_ev("e5", "sh.keptn.log.error"),
    ];
    bus.publish(&events).await.unwrap();

    let all = bus.receive("datastore", 100).await.unwrap();
    assert_eq!(
        all.iter().map(|d| d.event.clone()).collect::<Vec<_>>(),
        events,
        "events read back equal"
    );
    assert!(
        all.windows(2).all(|w| w[0].receipt < w[1].receipt),
        "receipts increase"
    );
    assert_eq!(
        receive_ids(&bus, "shipyard", 100).await.0,
        ["e1", "e3", "e4"]
    );
    assert_eq!(receive_ids(&bus, "approval", 100).await.0, ["e4"]);
    assert_eq!(
        receive_ids(&bus, "twice", 100).await.0,
        ["e1", "e2", "e3", "e4"]
    );
    assert_eq!(
        receive_ids(&bus, "nobody", 100).await.0,
        Vec::<String>::new()
    );

    bus.publish(&[bus_ev("e6", DEPLOYMENT_FINISHED)])
        .await
        .unwrap();
    bus.publish(&[]).await.unwrap();
    assert_eq!(receive_ids(&bus, "shipyard", 100).await.0, ["e6"]);
    assert_eq!(receive_ids(&bus, "datastore", 100).await.0, ["e6"]);

    let clone = bus.clone();
    clone
        .publish(&[bus_ev("e7", DEPLOYMENT_FINISHED)])
        .await
        .unwrap();
    assert_eq!(
        receive_ids(&bus, "shipyard", 100).await.0,
        ["e7"],
        "clones share the queues"
    );
}

/// An event no subscription matches is not queued for anyone.
pub async fn events_no_consumer_subscribed_to_are_dropped<B: EventBus + Queue>(
    make: &impl Fn(Vec<Subscription>) -> B,
    _dead_letters: &impl Fn(&B, &str) -> Vec<(KeptnEvent, String)>,
) {
    let bus = make(vec![Subscription::new(
        "shipyard",
        &["sh.keptn.event.*.*.triggered"],
    )]);
    bus.publish(&[
        bus_ev("x", DEPLOYMENT_FINISHED),
        bus_ev("y", "com.example.other"),
    ])
    .await
    .unwrap();
    assert!(bus.receive("shipyard", 10).await.unwrap().is_empty());
    bus.publish(&[bus_ev("z", "sh.keptn.event.dev.delivery.triggered")])
        .await
        .unwrap();
    assert_eq!(receive_ids(&bus, "shipyard", 10).await.0, ["z"]);
}

/// `receive` hands out up to `max` of the consumer's undelivered events,
/// oldest first, each once; `ack` removes deliveries (unknown receipts are
/// ignored); queues of consumers are independent.
pub async fn deliveries_are_handed_out_once_oldest_first<B: EventBus + Queue>(
    make: &impl Fn(Vec<Subscription>) -> B,
    _dead_letters: &impl Fn(&B, &str) -> Vec<(KeptnEvent, String)>,
) {
    let bus = make(vec![
        Subscription::new("a", &["sh.keptn.>"]),
        Subscription::new("b", &["sh.keptn.>"]),
    ]);
    let events: Vec<KeptnEvent> = (1..=5)
        .map(|i| bus_ev(&format!("e{i}"), DEPLOYMENT_FINISHED))
        .collect();
    bus.publish(&events).await.unwrap();

    assert!(bus.receive("a", 0).await.unwrap().is_empty());
    let (first, r1) = receive_ids(&bus, "a", 2).await;
    assert_eq!(first, ["e1", "e2"]);
    let (second, r2) = receive_ids(&bus, "a", 2).await;
    assert_eq!(second, ["e3", "e4"]);
    let (third, r3) = receive_ids(&bus, "a", 10).await;
    assert_eq!(third, ["e5"]);
    assert!(
        bus.receive("a", 10).await.unwrap().is_empty(),
        "nothing is handed out twice"
    );

    bus.ack("a", &[r1[0], r1[1], r2[0]]).await.unwrap();
    bus.ack("a", &[r1[0], 987_654_321]).await.unwrap();
    bus.ack("a", &[]).await.unwrap();
    bus.publish(&[bus_ev("e6", DEPLOYMENT_FINISHED)])
        .await
        .unwrap();
    let (fourth, r4) = receive_ids(&bus, "a", 10).await;
    assert_eq!(
        fourth,
        ["e6"],
        "unacknowledged deliveries are not handed out again"
    );
    assert!(r4[0] > r3[0]);
    bus.ack("a", &[r2[1], r3[0], r4[0]]).await.unwrap();

    assert_eq!(
        receive_ids(&bus, "b", 100).await.0,
        ["e1", "e2", "e3", "e4", "e5", "e6"],
        "b's queue is untouched by a's deliveries and acks"
    );
}

/// `dead_letter` moves a delivery out of the queue into the consumer's dead
/// letters with the reason; a receipt not in the consumer's queue is `NotFound`.
pub async fn dead_letters_leave_the_queue_with_their_reason<B: EventBus + Queue>(
    make: &impl Fn(Vec<Subscription>) -> B,
    dead_letters: &impl Fn(&B, &str) -> Vec<(KeptnEvent, String)>,
) {
    let bus = make(vec![
        Subscription::new("a", &["sh.keptn.>"]),
        Subscription::new("b", &["sh.keptn.>"]),
    ]);
    let e1 = bus_ev("e1", DEPLOYMENT_FINISHED);
    let e2 = bus_ev("e2", DEPLOYMENT_FINISHED);
    bus.publish(&[e1.clone(), e2.clone()]).await.unwrap();
    let (_, ra) = receive_ids(&bus, "a", 10).await;
    let (_, rb) = receive_ids(&bus, "b", 10).await;
    assert!(dead_letters(&bus, "a").is_empty());

    bus.dead_letter("a", ra[0], "cannot parse data")
        .await
        .unwrap();
    assert_eq!(
        dead_letters(&bus, "a"),
        vec![(e1.clone(), "cannot parse data".to_string())]
    );
    assert!(dead_letters(&bus, "b").is_empty());
    match bus.dead_letter("a", ra[0], "again").await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("a dead letter cannot die twice: {other:?}"),
    }
    match bus.dead_letter("a", 987_654_321, "unknown").await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("unknown receipt: {other:?}"),
    }
    if !rb.contains(&ra[1]) {
        match bus.dead_letter("b", ra[1], "not b's").await {
            Err(StoreError::NotFound(_)) => {}
            other => panic!("another consumer's receipt: {other:?}"),
        }
    }
    bus.dead_letter("a", ra[1], "second").await.unwrap();
    assert_eq!(
        dead_letters(&bus, "a"),
        vec![
            (e1.clone(), "cannot parse data".to_string()),
            (e2.clone(), "second".to_string())
        ]
    );
    bus.ack("a", &ra).await.unwrap();
    assert_eq!(
        dead_letters(&bus, "a").len(),
        2,
        "acknowledging does not touch dead letters"
    );

    bus.dead_letter("b", rb[1], "b's reason").await.unwrap();
    assert_eq!(
        dead_letters(&bus, "b"),
        vec![(e2, "b's reason".to_string())]
    );
    bus.publish(&[bus_ev("e3", DEPLOYMENT_FINISHED)])
        .await
        .unwrap();
    assert_eq!(receive_ids(&bus, "a", 10).await.0, ["e3"]);
}

/// `release` makes received, un-acknowledged deliveries available again, from
/// the oldest released one on (a handler failed transiently and will retry).
pub async fn released_deliveries_are_handed_out_again<B: EventBus + Queue>(
    make: &impl Fn(Vec<Subscription>) -> B,
    _dead_letters: &impl Fn(&B, &str) -> Vec<(KeptnEvent, String)>,
) {
    let bus = make(vec![Subscription::new("a", &["sh.keptn.>"])]);
    let events: Vec<KeptnEvent> = (1..=4)
        .map(|i| bus_ev(&format!("e{i}"), DEPLOYMENT_FINISHED))
        .collect();
    bus.publish(&events).await.unwrap();
    let (ids, receipts) = receive_ids(&bus, "a", 10).await;
    assert_eq!(ids, ["e1", "e2", "e3", "e4"]);
    bus.ack("a", &receipts[..1]).await.unwrap();
    bus.release("a", &receipts[1..]).await.unwrap();
    bus.release("a", &[]).await.unwrap();
    let (again, again_r) = receive_ids(&bus, "a", 10).await;
    assert_eq!(
        again,
        ["e2", "e3", "e4"],
        "released deliveries come back, acked ones do not"
    );
    assert_eq!(again_r, receipts[1..].to_vec(), "with the same receipts");
    assert!(bus.receive("a", 10).await.unwrap().is_empty());
}
