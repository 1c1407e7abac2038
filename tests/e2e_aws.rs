//! The AWS backend end to end: `keelson serve --backend aws` in-process on
//! the emulator (DynamoDB, EventBridge rules into SQS queues with dead-letter
//! queues, each function fed by its poller), each test on a fresh stack
//! provisioned from infra/aws/template.yaml. The delivery scenarios are the
//! same as the local backend's; the at-least-once ones follow.

use keelson_tests::{types, wait_for, Setup, TestNode};
use serde_json::json;
use std::time::Duration;

async fn start(s: Setup) -> TestNode {
    TestNode::start_with(Setup { aws: true, ..s })
        .await
        .unwrap()
}

include!("scenarios/delivery.rs");

mod quality_gate {
    //! The quality-gate scenarios, with the lighthouse and the Prometheus
    //! provider fed from their queues.
    use super::start;
    include!("scenarios/quality_gate.rs");
}

mod approval {
    //! The approval scenarios, with the approval function fed from its queue;
    //! the person answers through the library the `keelson` verbs use.
    use super::start;

    use keelson_tests::person;

    include!("scenarios/approval.rs");
}

mod remediation {
    //! The remediation scenarios, with the remediation function fed from its queue.
    use super::start;
    include!("scenarios/remediation.rs");
}

mod alerts {
    //! The alert scenarios (a real Alertmanager notifying the node's API).
    use super::start;
    include!("scenarios/alerts.rs");
}

mod at_least_once {
    //! What SQS and EventBridge may do — deliver twice, out of order, to two
    //! consumers at once, to a handler that dies half-way — against the real
    //! conditional writes of the emulator's DynamoDB.

    use super::start;
    use keelson::FunctionSet;
    use keelson_aws::eventbridge::EventBridgeBus;
    use keelson_aws::names::Names;
    use keelson_aws::sqs::{
        handle_batch, DeadLetterQueue, Poller, PollerConfig, SqsClient, SqsEvent, SqsRecord,
    };
    use keelson_aws::{clients, config::SdkConfig};
    use keelson_core::event::KeptnEvent;
    use keelson_core::ports::{EventBus, StoreResult, SystemClock};
    use keelson_core::Timestamp;
    use keelson_lambda::{Env, ShipyardConsumer};
    use keelson_shipyard::Orchestrator;
    use keelson_tests::{wait_for, Setup, TestNode, ONE_STAGE};
    use serde_json::{json, Value};
    use std::collections::{BTreeMap, HashSet};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    struct Stack {
        sdk: SdkConfig,
        names: Names,
        sqs: SqsClient,
    }

    impl Stack {
        async fn of(n: &TestNode) -> Stack {
            let t = n.aws.clone().expect("an AWS node");
            let sdk = keelson_aws::load(&t.settings).await;
            Stack {
                names: Names::new(&t.stack),
                sqs: clients::sqs(&sdk),
                sdk,
            }
        }

        async fn url(&self, name: &str) -> String {
            keelson_aws::sqs::queue_url(&self.sqs, name).await.unwrap()
        }

        /// A second, independent set of clients on the same table and bus.
        fn env(&self) -> Env {
            Env::new(self.sdk.clone(), &self.names.table(), &self.names.bus())
        }
    }

    /// Without the node's own shipyard: the tests feed it themselves.
    async fn node_without_shipyard() -> TestNode {
        start(Setup {
            functions: Some(FunctionSet::parse("api,datastore").unwrap()),
            ..Setup::default()
        })
        .await
    }

    async fn run_one_stage(n: &TestNode, project: &str) -> String {
        n.project(project, Some(ONE_STAGE), "svc").await.unwrap();
        let ctx = n
            .trigger(project, "dev", "delivery", "svc", "img:1")
            .await
            .unwrap();
        for task in ["deployment", "test", "release"] {
            n.run_task(task, project, "dev", &ctx, "pass")
                .await
                .unwrap();
        }
        n.wait_state(project, &ctx, "finished").await.unwrap();
        ctx
    }

    /// Every task was triggered exactly once: no second trigger under another id.
    async fn assert_each_task_triggered_once(n: &TestNode, ctx: &str, tasks: &[&str]) {
        let want: BTreeMap<String, usize> = tasks
            .iter()
            .map(|t| (format!("sh.keptn.event.{t}.triggered"), 1))
            .collect();
        // The datastore stores asynchronously: wait until it has them all, then count.
        let events = wait_for(Duration::from_secs(20), || async {
            let evs = n.events(ctx).await?;
            let done = evs
                .iter()
                .any(|e| e["type"] == json!("sh.keptn.event.dev.delivery.finished"));
            Ok(done.then_some(evs))
        })
        .await
        .unwrap();
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        for e in &events {
            let ty = e["type"].as_str().unwrap().to_string();
            if want.contains_key(&ty) {
                *got.entry(ty).or_default() += 1;
            }
        }
        assert_eq!(got, want);
        let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), events.len(), "an event id stored twice");
    }

    fn record(m: &aws_sdk_sqs::types::Message) -> SqsRecord {
        SqsRecord {
            message_id: m.message_id().unwrap().into(),
            receipt_handle: m.receipt_handle().unwrap().into(),
            body: m.body().unwrap().into(),
            attributes: Default::default(),
        }
    }

    #[tokio::test]
    async fn every_message_delivered_twice_and_out_of_order_triggers_each_task_once() {
        let n = node_without_shipyard().await;
        let st = Stack::of(&n).await;
        let (q, dlq) = (
            st.url(&st.names.queue("shipyard")).await,
            st.url(&st.names.dlq("shipyard")).await,
        );
        let consumer = ShipyardConsumer(st.env().orchestrator(Default::default()));
        let dead = DeadLetterQueue::new(st.sqs.clone(), &dlq);
        let sqs = st.sqs.clone();
        let driver = tokio::spawn(async move {
            loop {
                let out = sqs
                    .receive_message()
                    .queue_url(&q)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .unwrap();
                let records: Vec<SqsRecord> = out.messages().iter().map(record).collect();
                if records.is_empty() {
                    continue;
                }
                // Each message twice: once in order, then again newest first.
                let mut twice = records.clone();
                twice.extend(records.iter().rev().cloned());
                let resp = handle_batch(&consumer, &dead, SqsEvent { records: twice }).await;
                assert!(resp.batch_item_failures.is_empty(), "{resp:?}");
                for r in &records {
                    sqs.delete_message()
                        .queue_url(&q)
                        .receipt_handle(&r.receipt_handle)
                        .send()
                        .await
                        .unwrap();
                }
            }
        });
        let ctx = run_one_stage(&n, "twice").await;
        assert_each_task_triggered_once(&n, &ctx, &["deployment", "test", "release"]).await;
        driver.abort();
    }

    fn event(
        ty: &str,
        ctx: &str,
        source: &str,
        triggered: Option<&str>,
        data: Value,
    ) -> KeptnEvent {
        let mut e = KeptnEvent::new(
            uuid::Uuid::new_v4().to_string(),
            source,
            ty.into(),
            ctx,
            data,
            Timestamp::from_datetime(time::OffsetDateTime::now_utc()),
        );
        e.triggeredid = triggered.map(str::to_string);
        e
    }

    #[tokio::test]
    async fn two_concurrent_finished_events_for_one_task_trigger_the_next_task_once() {
        let n = node_without_shipyard().await;
        let st = Stack::of(&n).await;
        // Two shipyard instances with their own clients, as two Lambda invocations would be.
        let a = st.env().orchestrator(Default::default());
        let b = st.env().orchestrator(Default::default());
        n.project("race", Some(ONE_STAGE), "svc0").await.unwrap();
        for round in 0..4 {
            let svc = format!("svc{round}");
            if round > 0 {
                n.client.create_service("race", &svc).await.unwrap();
            }
            let ctx = uuid::Uuid::new_v4().to_string();
            let data = json!({"project": "race", "stage": "dev", "service": svc});
            a.process(&event(
                "sh.keptn.event.dev.delivery.triggered",
                &ctx,
                "e2e",
                None,
                data.clone(),
            ))
            .await
            .unwrap();
            let trigger = n
                .wait_open("deployment", "race", "dev", &ctx)
                .await
                .unwrap();
            let tid = trigger["id"].as_str().unwrap();
            for exec in ["exec-a", "exec-b"] {
                a.process(&event(
                    "sh.keptn.event.deployment.started",
                    &ctx,
                    exec,
                    Some(tid),
                    data.clone(),
                ))
                .await
                .unwrap();
            }
            let mut done = data.clone();
            done["result"] = json!("pass");
            done["status"] = json!("succeeded");
            let fa = event(
                "sh.keptn.event.deployment.finished",
                &ctx,
                "exec-a",
                Some(tid),
                done.clone(),
            );
            let fb = event(
                "sh.keptn.event.deployment.finished",
                &ctx,
                "exec-b",
                Some(tid),
                done,
            );
            let (ra, rb) = tokio::join!(a.process(&fa), b.process(&fb));
            ra.unwrap();
            rb.unwrap();
            n.wait_open("test", "race", "dev", &ctx).await.unwrap();
            let open: Vec<Value> = n
                .open("test", "race")
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e["shkeptncontext"] == json!(ctx))
                .collect();
            assert_eq!(open.len(), 1, "round {round}: {open:?}");
            // And the bus carried exactly one: the datastore has one test trigger.
            let test_triggers = || async {
                let evs = n.events(&ctx).await?;
                Ok::<usize, anyhow::Error>(
                    evs.iter()
                        .filter(|e| e["type"] == json!("sh.keptn.event.test.triggered"))
                        .count(),
                )
            };
            wait_for(Duration::from_secs(20), || async {
                Ok((test_triggers().await? > 0).then_some(()))
            })
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(test_triggers().await.unwrap(), 1, "round {round}");
        }
    }

    /// A bus whose first publish of every batch fails, as if the handler
    /// were killed after its state write and before its publish.
    #[derive(Clone)]
    struct DyingBus {
        inner: EventBridgeBus,
        died: Arc<Mutex<HashSet<String>>>,
    }

    impl EventBus for DyingBus {
        async fn publish(&self, events: &[KeptnEvent]) -> StoreResult<()> {
            if let Some(first) = events.first() {
                if self.died.lock().unwrap().insert(first.id.clone()) {
                    return Err(keelson_core::ports::StoreError::backend(
                        std::io::Error::other("killed between the state write and the publish"),
                        true,
                    ));
                }
            }
            self.inner.publish(events).await
        }
    }

    #[tokio::test]
    async fn a_handler_killed_between_its_state_write_and_its_publish_loses_nothing() {
        let n = node_without_shipyard().await;
        let st = Stack::of(&n).await;
        let env = st.env();
        let died = Arc::new(Mutex::new(HashSet::new()));
        let bus = DyingBus {
            inner: env.bus.clone(),
            died: died.clone(),
        };
        let orch = Arc::new(Orchestrator::new(
            env.store.clone(),
            bus,
            SystemClock,
            Default::default(),
        ));
        let poller = Poller {
            client: st.sqs.clone(),
            queue_url: st.url(&st.names.queue("shipyard")).await,
            consumer: ShipyardConsumer(orch),
            dead: DeadLetterQueue::new(st.sqs.clone(), &st.url(&st.names.dlq("shipyard")).await),
            config: PollerConfig {
                wait: Duration::from_secs(1),
                ..PollerConfig::default()
            },
        };
        let driver = tokio::spawn(async move { poller.run().await });
        let ctx = run_one_stage(&n, "dying").await;
        assert_each_task_triggered_once(&n, &ctx, &["deployment", "test", "release"]).await;
        assert!(
            died.lock().unwrap().len() >= 4,
            "every transition died once: {:?}",
            died.lock().unwrap()
        );
        driver.abort();
    }

    #[tokio::test]
    async fn a_poison_message_goes_to_the_dead_letter_queue_and_the_rest_flows_on() {
        let n = start(Setup::default()).await;
        let st = Stack::of(&n).await;
        let q = st.url(&st.names.queue("shipyard")).await;
        for body in [
            "not json",
            r#"{"detail-type":"x","detail":{"type":"sh.keptn.event.a.finished"}}"#,
        ] {
            st.sqs
                .send_message()
                .queue_url(&q)
                .message_body(body)
                .send()
                .await
                .unwrap();
        }
        let ctx = run_one_stage(&n, "poison").await;
        assert_each_task_triggered_once(&n, &ctx, &["deployment", "test", "release"]).await;
        let dlq = st.url(&st.names.dlq("shipyard")).await;
        let bodies = Mutex::new(Vec::<String>::new());
        wait_for(Duration::from_secs(20), || async {
            let out = st
                .sqs
                .receive_message()
                .queue_url(&dlq)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await?;
            let mut b = bodies.lock().unwrap();
            b.extend(out.messages().iter().map(|m| m.body().unwrap().to_string()));
            Ok((b.len() >= 2).then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", bodies.lock().unwrap()));
        let bodies = bodies.into_inner().unwrap();
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        assert!(bodies.contains(&"not json".to_string()), "{bodies:?}");
    }
}
