// The delivery scenarios, run against every backend: the including test
// file defines `async fn start(s: Setup) -> TestNode`.

#[tokio::test]
async fn a_three_stage_delivery_runs_through_every_stage_to_the_end() {
    let n = start(Setup::default()).await;
    n.project("shop", None, "carts").await.unwrap();
    let ctx = n
        .trigger("shop", "dev", "delivery", "carts", "carts:1")
        .await
        .unwrap();
    for (stage, tasks) in keelson_tests::SHIPYARD_DELIVERY {
        for task in tasks {
            let t = n.run_task(task, "shop", stage, &ctx, "pass").await.unwrap();
            assert_eq!(t["source"], json!("shipyard-controller"));
            assert_eq!(
                t["data"]["configurationChange"]["values"]["image"],
                json!("carts:1")
            );
            assert!(
                t.get("triggeredid").is_none(),
                "task triggers carry no triggeredid"
            );
            assert!(t["gitcommitid"].as_str().is_some_and(|c| !c.is_empty()));
        }
    }
    let st = n.wait_state("shop", &ctx, "finished").await.unwrap();
    let stages: Vec<(String, String)> = st["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        vec![
            ("dev".into(), "succeeded".into()),
            ("hardening".into(), "succeeded".into()),
            ("production".into(), "succeeded".into())
        ]
    );
    assert_eq!(st["stages"][2]["image"], json!("carts:1"));
    // The datastore holds every event once, and the stage finished precedes the next stage's trigger.
    let evs = wait_for(Duration::from_secs(10), || async {
        let e = n.events(&ctx).await?;
        Ok(e.iter()
            .any(|e| e["type"] == json!("sh.keptn.event.production.delivery.finished"))
            .then_some(e))
    })
    .await
    .unwrap();
    let ty = types(&evs);
    let pos = |t: &str| {
        ty.iter()
            .position(|x| x == t)
            .unwrap_or_else(|| panic!("{t} missing in {ty:?}"))
    };
    assert!(
        pos("sh.keptn.event.dev.delivery.finished")
            < pos("sh.keptn.event.hardening.delivery.triggered")
    );
    assert!(
        pos("sh.keptn.event.hardening.delivery.finished")
            < pos("sh.keptn.event.production.delivery.triggered")
    );
    let mut ids: Vec<&str> = evs.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "no event stored twice");
    assert_eq!(
        ty.iter()
            .filter(|t| t.ends_with("deployment.triggered"))
            .count(),
        3
    );
    assert!(
        n.open("deployment", "shop").await.unwrap().is_empty(),
        "no open triggers left"
    );
}

#[tokio::test]
async fn two_executors_must_both_finish_and_a_finished_before_its_started_waits() {
    let n = start(Setup::default()).await;
    n.project("multi", None, "svc").await.unwrap();
    let ctx = n
        .trigger("multi", "dev", "delivery", "svc", "img:1")
        .await
        .unwrap();
    let t = n
        .wait_open("deployment", "multi", "dev", &ctx)
        .await
        .unwrap();
    // jes's .finished overtakes its .started: the task waits.
    n.finished(&t, "jes", "pass").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        n.open("deployment", "multi").await.unwrap().len(),
        1,
        "a .finished before its .started waits"
    );
    n.started(&t, "jes").await.unwrap();
    let test = n.wait_open("test", "multi", "dev", &ctx).await.unwrap();
    // Two executors that both started must both finish. The bus may reorder
    // events (SQS does), so each .started is seen applied before the next
    // event goes out: the done rule counts what has arrived.
    for exec in ["a", "b"] {
        let id = uuid::Uuid::new_v4().to_string();
        n.client
            .send_event(&json!({"id": id, "type": "sh.keptn.event.test.started", "source": exec,
                "shkeptncontext": ctx, "triggeredid": test["id"],
                "data": {"project": "multi", "stage": "dev", "service": "svc"}}))
            .await
            .unwrap();
        wait_for(Duration::from_secs(20), || async {
            let st = n.state("multi", &ctx).await?;
            Ok(st.filter(|s| s["stages"][0]["latestEvent"]["id"] == json!(id)))
        })
        .await
        .unwrap();
    }
    n.finished(&test, "a", "pass").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        n.open("test", "multi").await.unwrap().len(),
        1,
        "still waiting for b"
    );
    assert!(n.open("release", "multi").await.unwrap().is_empty());
    n.finished(&test, "b", "warning").await.unwrap();
    let rel = n.wait_open("release", "multi", "dev", &ctx).await.unwrap();
    assert_eq!(rel["data"]["result"], json!("warning"));
    assert!(n.open("test", "multi").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failing_task_ends_the_stage_and_fires_the_rollback_sequence() {
    let n = start(Setup::default()).await;
    n.project("rb", None, "svc").await.unwrap();
    let ctx = n
        .trigger("rb", "hardening", "delivery", "svc", "img:2")
        .await
        .unwrap();
    n.run_task("deployment", "rb", "hardening", &ctx, "pass")
        .await
        .unwrap();
    n.run_task("test", "rb", "hardening", &ctx, "fail")
        .await
        .unwrap();
    // The rollback sequence's task is triggered in the same context; release never is.
    let rb = n
        .wait_open("rollback", "rb", "hardening", &ctx)
        .await
        .unwrap();
    assert_eq!(rb["data"]["result"], json!("fail"));
    assert!(n.open("release", "rb").await.unwrap().is_empty());
    n.run_task("rollback", "rb", "hardening", &ctx, "pass")
        .await
        .unwrap();
    let st = n.wait_state("rb", &ctx, "finished").await.unwrap();
    let evs = n
        .events_with(&ctx, "sh.keptn.event.hardening.rollback.finished")
        .await
        .unwrap();
    let fin = evs
        .iter()
        .find(|e| e["type"] == json!("sh.keptn.event.hardening.delivery.finished"))
        .unwrap();
    assert_eq!(fin["data"]["result"], json!("fail"));
    assert!(types(&evs).contains(&"sh.keptn.event.hardening.rollback.finished".to_string()));
    assert!(!types(&evs).contains(&"sh.keptn.event.production.delivery.triggered".to_string()));
    assert!(st["stages"][0]["latestFailedEvent"].is_object());
}

#[tokio::test]
async fn two_deliveries_for_one_service_run_one_after_the_other_in_order() {
    let n = start(Setup::default()).await;
    n.project("q", None, "svc").await.unwrap();
    let a = n
        .trigger("q", "dev", "delivery", "svc", "img:a")
        .await
        .unwrap();
    let b = n
        .trigger("q", "dev", "delivery", "svc", "img:b")
        .await
        .unwrap();
    // A broker that delivers concurrently (Knative's channel-based one) may
    // hand the shipyard the second trigger first: then it runs first.
    let (a, b, second_image) = if n.delivers_in_order() {
        (a, b, "img:b")
    } else {
        let first = wait_for(Duration::from_secs(20), || async {
            let open = n.open("deployment", "q").await?;
            Ok(open.first().and_then(|t| t["shkeptncontext"].as_str().map(str::to_string)))
        })
        .await
        .unwrap();
        if first == a { (a, b, "img:b") } else { (b, a, "img:a") }
    };
    n.wait_open("deployment", "q", "dev", &a).await.unwrap();
    n.wait_state("q", &b, "waiting").await.unwrap();
    assert_eq!(
        n.open("deployment", "q").await.unwrap().len(),
        1,
        "only the first delivery runs"
    );
    for task in ["deployment", "test", "release"] {
        n.run_task(task, "q", "dev", &a, "pass").await.unwrap();
    }
    let t = n.wait_open("deployment", "q", "dev", &b).await.unwrap();
    assert_eq!(
        t["data"]["configurationChange"]["values"]["image"],
        json!(second_image)
    );
    // The first delivery moved on to hardening meanwhile: another lane, running in parallel.
    n.wait_open("deployment", "q", "hardening", &a)
        .await
        .unwrap();
}

#[tokio::test]
async fn pause_holds_the_next_task_resume_continues_and_abort_ends_the_sequence() {
    let n = start(Setup::default()).await;
    n.project("ctl", None, "svc").await.unwrap();
    let ctx = n
        .trigger("ctl", "dev", "delivery", "svc", "img:1")
        .await
        .unwrap();
    let t = n.wait_open("deployment", "ctl", "dev", &ctx).await.unwrap();
    n.client.control("ctl", &ctx, "pause", None).await.unwrap();
    n.wait_state("ctl", &ctx, "paused").await.unwrap();
    n.started(&t, "x").await.unwrap();
    n.finished(&t, "x", "pass").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        n.open("test", "ctl").await.unwrap().is_empty(),
        "paused: the next task waits"
    );
    n.client.control("ctl", &ctx, "resume", None).await.unwrap();
    n.wait_open("test", "ctl", "dev", &ctx).await.unwrap();
    n.client.control("ctl", &ctx, "abort", None).await.unwrap();
    n.wait_state("ctl", &ctx, "aborted").await.unwrap();
    assert!(n.open("test", "ctl").await.unwrap().is_empty());
    let evs = n
        .events_with(&ctx, "sh.keptn.event.dev.delivery.finished")
        .await
        .unwrap();
    let fin = evs
        .iter()
        .find(|e| e["type"] == json!("sh.keptn.event.dev.delivery.finished"))
        .unwrap();
    assert_eq!(fin["data"]["status"], json!("aborted"));
    assert!(
        !types(&evs).contains(&"sh.keptn.event.hardening.delivery.triggered".to_string()),
        "no follow-up after abort"
    );
    // The abort cleared the pause marks: re-triggering the context is not born paused.
    n.client.control("ctl", &ctx, "pause", None).await.unwrap();
    n.client.control("ctl", &ctx, "abort", None).await.unwrap();
    n.client
        .send_event(
            &json!({"type": "sh.keptn.event.dev.delivery.triggered", "shkeptncontext": ctx,
            "data": {"project": "ctl", "stage": "dev", "service": "svc"}}),
        )
        .await
        .unwrap();
    n.wait_open("deployment", "ctl", "dev", &ctx).await.unwrap();
    // Control of an unknown context is a no-op; bad input is a clear 400.
    n.client
        .control("ctl", "no-such-context", "abort", None)
        .await
        .unwrap();
    let err = n
        .client
        .control("ctl", &ctx, "explode", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("state"), "{err}");
}

#[tokio::test]
async fn a_task_that_never_starts_times_the_sequence_out_on_the_test_clock() {
    let n = start(Setup {
        manual_clock: true,
        started_timeout_ms: Some(600_000),
        ..Default::default()
    }).await;
    n.project("to", None, "svc").await.unwrap();
    let ctx = n
        .trigger("to", "dev", "delivery", "svc", "img:1")
        .await
        .unwrap();
    n.wait_open("deployment", "to", "dev", &ctx).await.unwrap();
    let clock = n.clock.clone().unwrap();
    clock.advance_ms(599_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        n.state("to", &ctx).await.unwrap().unwrap()["state"],
        json!("started")
    );
    clock.advance_ms(1_000);
    n.wait_state("to", &ctx, "timedOut").await.unwrap();
    let evs = n
        .events_with(&ctx, "sh.keptn.event.dev.delivery.finished")
        .await
        .unwrap();
    let fin = evs
        .iter()
        .find(|e| e["type"] == json!("sh.keptn.event.dev.delivery.finished"))
        .unwrap();
    assert_eq!(fin["data"]["status"], json!("errored"));
    assert_eq!(
        fin["data"]["message"],
        json!("sequence timed out while waiting for task deployment to receive a correlating .started or .finished event")
    );
    assert!(n.open("deployment", "to").await.unwrap().is_empty());
}
