//! The adapters against the AWS emulator (moto or LocalStack on loopback,
//! started by `localstack/start` if needed), each test on its own stack.

use keelson_aws::eventbridge::EventBridgeBus;
use keelson_aws::names::{Names, QUEUE_FUNCTIONS};
use keelson_aws::provision::{provision, Template, TEMPLATE};
use keelson_aws::sqs::{
    Consumer, DeadLetterQueue, Failure, Poller, PollerConfig, REASON_ATTRIBUTE,
};
use keelson_aws::{clients, emulator, Settings};
use keelson_core::event::KeptnEvent;
use keelson_core::ports::{EventBus, Subscription};
use keelson_core::{ErrorKind, Timestamp};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

async fn sdk() -> keelson_aws::config::SdkConfig {
    let endpoint = emulator::test_endpoint();
    emulator::ensure(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
        &endpoint,
    );
    keelson_aws::load(&Settings::emulator(&endpoint)).await
}

fn stack() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn ev(id: &str, ty: &str) -> KeptnEvent {
    KeptnEvent::new(
        id.into(),
        "test",
        ty.into(),
        "5b8bb7ac-6c5e-4a4e-8a8e-1d2b9d6a4c11",
        serde_json::json!({"project": "p", "stage": "dev", "service": "s"}),
        Timestamp::from_millis(1_700_000_000_000),
    )
}

#[tokio::test]
async fn provisioning_creates_what_the_template_names() {
    let sdk = sdk().await;
    let stack = stack();
    let t = Template::parse(TEMPLATE).unwrap();
    let p = provision(&sdk, &t, &stack, Some("s3cret")).await.unwrap();
    let n = Names::new(&stack);
    assert_eq!(p.tables.values().collect::<Vec<_>>(), vec![&n.table()]);
    assert_eq!(p.buses.values().collect::<Vec<_>>(), vec![&n.bus()]);
    let sqs = clients::sqs(&sdk);
    for f in QUEUE_FUNCTIONS {
        for name in [n.queue(f), n.dlq(f)] {
            let url = sqs.get_queue_url().queue_name(&name).send().await.unwrap();
            assert!(
                p.queues
                    .values()
                    .any(|u| Some(u.as_str()) == url.queue_url()),
                "{name} was not created from the template"
            );
        }
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(
                sqs.get_queue_url()
                    .queue_name(n.queue(f))
                    .send()
                    .await
                    .unwrap()
                    .queue_url()
                    .unwrap(),
            )
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .unwrap();
        let redrive =
            &attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy];
        assert!(redrive.contains(&n.dlq(f)), "{f}: {redrive}");
        let (rule, targets) = p.rules.values().find(|(r, _)| *r == n.rule(f)).unwrap();
        assert_eq!(rule, &n.rule(f));
        assert_eq!(targets.len(), 1);
        assert!(
            targets[0].ends_with(&format!(":{}", n.queue(f))),
            "{targets:?}"
        );
    }
    let token = keelson_aws::token::read(&clients::ssm(&sdk), &n.token_parameter())
        .await
        .unwrap();
    assert_eq!(token, "s3cret");
    // Provisioning again is harmless.
    provision(&sdk, &t, &stack, None).await.unwrap();
}

struct Recorder(Mutex<Vec<KeptnEvent>>, Subscription);

impl Consumer for Recorder {
    fn subscription(&self) -> Subscription {
        self.1.clone()
    }
    async fn handle(&self, events: Vec<KeptnEvent>) -> Vec<Result<(), Failure>> {
        events
            .into_iter()
            .map(|e| {
                let refuse = e.id == "refused";
                self.0.lock().unwrap().push(e);
                if refuse {
                    Err(Failure::new(ErrorKind::Invalid, "not for me"))
                } else {
                    Ok(())
                }
            })
            .collect()
    }
}

#[tokio::test]
async fn events_reach_their_consumers_and_poison_records_go_to_the_dead_letter_queue() {
    let sdk = sdk().await;
    let stack = stack();
    let t = Template::parse(TEMPLATE).unwrap();
    provision(&sdk, &t, &stack, None).await.unwrap();
    let n = Names::new(&stack);
    let sqs = clients::sqs(&sdk);
    let url = |name: String| {
        let sqs = sqs.clone();
        async move {
            sqs.get_queue_url()
                .queue_name(name)
                .send()
                .await
                .unwrap()
                .queue_url()
                .unwrap()
                .to_string()
        }
    };
    let (queue, dlq) = (url(n.queue("shipyard")).await, url(n.dlq("shipyard")).await);

    // 23 events in three PutEvents batches; the shipyard takes 22 of them.
    let bus = EventBridgeBus::new(clients::eventbridge(&sdk), &n.bus());
    let mut events: Vec<KeptnEvent> = (0..20)
        .map(|i| ev(&format!("e{i}"), "sh.keptn.event.test.finished"))
        .collect();
    events.push(ev("waiting", "sh.keptn.event.test.waiting"));
    events.push(ev("seq", "sh.keptn.event.dev.delivery.triggered"));
    events.push(ev("refused", "sh.keptn.event.test.started"));
    bus.publish(&events).await.unwrap();
    // A record that is no event at all, in the middle of the queue.
    sqs.send_message()
        .queue_url(&queue)
        .message_body("{\"detail-type\": \"x\", \"detail\": 7}")
        .send()
        .await
        .unwrap();

    let poller = Poller {
        client: sqs.clone(),
        queue_url: queue.clone(),
        consumer: Recorder(Mutex::default(), keelson_shipyard_like()),
        dead: DeadLetterQueue::new(sqs.clone(), &dlq),
        config: PollerConfig {
            wait: Duration::from_secs(1),
            ..PollerConfig::default()
        },
    };
    let mut empty = 0;
    while empty < 2 {
        if poller.poll_once().await.unwrap() == 0 {
            empty += 1;
        }
    }
    let mut seen: Vec<String> = poller
        .consumer
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.id.clone())
        .collect();
    seen.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("e{i}")).collect();
    want.extend(["refused".to_string(), "seq".to_string()]);
    want.sort();
    assert_eq!(seen, want, "every event once, the waiting one not at all");

    let dead = sqs
        .receive_message()
        .queue_url(&dlq)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let mut reasons: Vec<String> = dead
        .messages()
        .iter()
        .map(|m| {
            m.message_attributes().unwrap()[REASON_ATTRIBUTE]
                .string_value()
                .unwrap()
                .to_string()
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("event refused (sh.keptn.event.test.started)"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("envelope has no object `detail`"),
        "{reasons:?}"
    );
}

fn keelson_shipyard_like() -> Subscription {
    Subscription::new(
        "shipyard",
        &[
            "sh.keptn.event.*.*.triggered",
            "sh.keptn.event.*.started",
            "sh.keptn.event.*.finished",
        ],
    )
}

#[tokio::test]
async fn the_templates_table_is_the_one_the_store_is_written_for() {
    let sdk = sdk().await;
    let stack = stack();
    let t = Template::parse(TEMPLATE).unwrap();
    provision(&sdk, &t, &stack, None).await.unwrap();
    let ddb = clients::dynamodb(&sdk);
    let own = format!("{stack}-own");
    keelson_aws::dynamo::create_table(&ddb, &own).await.unwrap();
    let shape = |name: String| {
        let ddb = ddb.clone();
        async move {
            let d = ddb.describe_table().table_name(name).send().await.unwrap();
            let t = d.table().unwrap();
            let keys = |k: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<String> {
                k.iter()
                    .map(|e| format!("{}:{}", e.attribute_name(), e.key_type().as_str()))
                    .collect()
            };
            let mut attrs: Vec<String> = t
                .attribute_definitions()
                .iter()
                .map(|a| format!("{}:{}", a.attribute_name(), a.attribute_type().as_str()))
                .collect();
            attrs.sort();
            let mut gsis: Vec<String> = t
                .global_secondary_indexes()
                .iter()
                .map(|g| {
                    format!(
                        "{} {:?} {:?}",
                        g.index_name().unwrap(),
                        keys(g.key_schema()),
                        g.projection()
                            .and_then(|p| p.projection_type())
                            .map(|p| p.as_str().to_string())
                    )
                })
                .collect();
            gsis.sort();
            let ttl = ddb
                .describe_time_to_live()
                .table_name(t.table_name().unwrap())
                .send()
                .await
                .unwrap();
            let ttl = ttl
                .time_to_live_description()
                .and_then(|d| d.attribute_name())
                .map(str::to_string);
            (keys(t.key_schema()), attrs, gsis, ttl)
        }
    };
    let from_template = shape(Names::new(&stack).table()).await;
    assert_eq!(from_template, shape(own).await);
    assert_eq!(from_template.3.as_deref(), Some("expires_at"));
}
