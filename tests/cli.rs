//! The `keelson` command: client verbs against a running node, their errors,
//! and the quickstart.

/// The binary under test, built by cargo for this test target.
const KEELSON: &str = env!("CARGO_BIN_EXE_keelson");

use keelson_tests::{TestNode, SHIPYARD, TOKEN};
use serde_json::Value;
use std::process::{Command, Output};

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn client_verbs_drive_a_delivery_and_report_errors_clearly() {
    let n = TestNode::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sy = dir.path().join("shipyard.yaml");
    std::fs::write(&sy, SHIPYARD).unwrap();
    let slo = dir.path().join("slo.yaml");
    std::fs::write(&slo, "spec_version: '1.0'\n").unwrap();

    let o = tokio::task::spawn_blocking({
        let n_url = n.api_url();
        let sy = sy.clone();
        let slo = slo.clone();
        move || {
            let run = |args: &[&str]| {
                Command::new(KEELSON)
                    .args(args)
                    .env("KEELSON_ENDPOINT", &n_url)
                    .env("KEELSON_API_TOKEN", TOKEN)
                    .output()
                    .unwrap()
            };
            vec![
                run(&[
                    "create",
                    "project",
                    "cli",
                    "--shipyard",
                    sy.to_str().unwrap(),
                ]),
                run(&["create", "service", "carts", "--project", "cli"]),
                run(&[
                    "add-resource",
                    "--project",
                    "cli",
                    "--stage",
                    "dev",
                    "--service",
                    "carts",
                    "--resource",
                    slo.to_str().unwrap(),
                ]),
                run(&[
                    "add-resource",
                    "--project",
                    "cli",
                    "--all-stages",
                    "--service",
                    "carts",
                    "--resource",
                    slo.to_str().unwrap(),
                    "--resourceUri",
                    "x/slo.yaml",
                ]),
                run(&[
                    "trigger",
                    "delivery",
                    "--project=cli",
                    "--service=carts",
                    "--image=carts:9",
                    "--labels",
                    "build=7",
                ]),
            ]
        }
    })
    .await
    .unwrap();
    for out in &o {
        assert!(out.status.success(), "{:?}", text(out));
    }
    assert!(
        text(&o[3]).0.matches("added to stage").count() == 3,
        "{:?}",
        text(&o[3])
    );
    let ctx = text(&o[4])
        .0
        .trim()
        .strip_prefix("ID of Keptn context: ")
        .unwrap()
        .to_string();
    let t = n.wait_open("deployment", "cli", "dev", &ctx).await.unwrap();
    assert_eq!(
        t["data"]["configurationChange"]["values"]["image"],
        "carts:9"
    );
    assert_eq!(t["data"]["labels"]["build"], "7");

    n.events_with(&ctx, "sh.keptn.event.dev.delivery.triggered")
        .await
        .unwrap();
    let (pause, get_seq, get_ev, bad_file, bad_sy, bad_token) = tokio::task::spawn_blocking({
        let n_url = n.api_url();
        let ctx = ctx.clone();
        let dir = dir.path().to_path_buf();
        move || {
            let run = |args: &[&str], token: &str| {
                Command::new(KEELSON)
                    .args(args)
                    .env("KEELSON_ENDPOINT", &n_url)
                    .env("KEELSON_API_TOKEN", token)
                    .output()
                    .unwrap()
            };
            let bad = dir.join("bad.yaml");
            std::fs::write(
                &bad,
                "apiVersion: spec.keptn.sh/0.2.4\nkind: Shipyard\nspec: {stages: []}\n",
            )
            .unwrap();
            (
                run(
                    &[
                        "pause",
                        "sequence",
                        "--project",
                        "cli",
                        "--keptn-context",
                        &ctx,
                    ],
                    TOKEN,
                ),
                run(
                    &[
                        "get",
                        "sequence",
                        "--project",
                        "cli",
                        "--keptn-context",
                        &ctx,
                    ],
                    TOKEN,
                ),
                run(
                    &[
                        "get",
                        "event",
                        "dev.delivery.triggered",
                        "--project",
                        "cli",
                        "--keptn-context",
                        &ctx,
                    ],
                    TOKEN,
                ),
                run(&["send", "event", "--file", "/no/such/file.json"], TOKEN),
                run(
                    &[
                        "create",
                        "project",
                        "other",
                        "--shipyard",
                        bad.to_str().unwrap(),
                    ],
                    TOKEN,
                ),
                run(&["get", "sequence", "--project", "cli"], "wrong-token"),
            )
        }
    })
    .await
    .unwrap();
    assert!(pause.status.success(), "{:?}", text(&pause));
    let states: Value = serde_json::from_str(&text(&get_seq).0).unwrap();
    assert_eq!(states[0]["state"], "paused");
    let evs: Value = serde_json::from_str(&text(&get_ev).0).unwrap();
    assert_eq!(
        evs["events"][0]["type"],
        "sh.keptn.event.dev.delivery.triggered"
    );
    // Errors name the flag or field and the reason, and exit non-zero.
    assert!(!bad_file.status.success());
    assert!(
        text(&bad_file).1.contains("--file"),
        "{:?}",
        text(&bad_file)
    );
    assert!(!bad_sy.status.success());
    assert!(
        text(&bad_sy).1.contains("spec.stages"),
        "{:?}",
        text(&bad_sy)
    );
    assert!(!bad_token.status.success());
    assert!(text(&bad_token).1.contains("401"), "{:?}", text(&bad_token));
}

#[test]
fn the_quickstart_shows_a_delivery_completing_through_three_stages() {
    let out = Command::new(KEELSON).arg("quickstart").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "dev.delivery.finished",
        "staging.delivery.finished",
        "production.delivery.finished",
        "Delivery finished in all three stages.",
    ] {
        assert!(stdout.contains(line), "{line} missing:\n{stdout}");
    }
}

#[test]
fn serve_rejects_bad_flags_naming_them() {
    let out = Command::new(KEELSON)
        .args(["serve", "--memory", "--functions", "api,bogus"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).1.contains("--functions"), "{:?}", text(&out));
    let out = Command::new(KEELSON)
        .args(["serve", "--memory", "--task-started-timeout", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("--task-started-timeout"),
        "{:?}",
        text(&out)
    );
}

#[tokio::test]
async fn maintenance_windows_are_created_listed_and_ended_from_the_cli() {
    let n = TestNode::start().await.unwrap();
    n.project("shop", None, "carts").await.unwrap();
    let url = n.api_url();
    let outs = tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| {
            Command::new(KEELSON)
                .args(args)
                .env("KEELSON_ENDPOINT", &url)
                .env("KEELSON_API_TOKEN", TOKEN)
                .output()
                .unwrap()
        };
        let created = run(&[
            "create",
            "maintenance",
            "--project",
            "shop",
            "--stage",
            "dev",
            "--duration",
            "2h",
            "--comment",
            "db upgrade",
        ]);
        let listed = run(&["get", "maintenance", "--project", "shop"]);
        let (out, _) = text(&created);
        let id = out
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        let deleted = run(&["delete", "maintenance", "--project", "shop", "--id", &id]);
        let after = run(&["get", "maintenance", "--project", "shop"]);
        let bad = run(&[
            "create",
            "maintenance",
            "--project",
            "shop",
            "--duration",
            "soon",
        ]);
        (created, listed, id, deleted, after, bad)
    })
    .await
    .unwrap();
    let (created, listed, id, deleted, after, bad) = outs;
    let (c, e) = text(&created);
    assert!(created.status.success(), "{c}{e}");
    assert!(
        c.starts_with("Maintenance window ") && c.contains("project shop, stage dev"),
        "{c}"
    );
    let (l, _) = text(&listed);
    let windows: Value = serde_json::from_str(&l).unwrap();
    assert_eq!(windows[0]["id"], Value::String(id.clone()));
    assert_eq!(windows[0]["comment"], "db upgrade");
    assert!(deleted.status.success(), "{:?}", text(&deleted));
    let (a, _) = text(&after);
    assert_eq!(
        serde_json::from_str::<Value>(&a).unwrap(),
        serde_json::json!([])
    );
    let (_, err) = text(&bad);
    assert!(!bad.status.success());
    assert!(err.contains("duration"), "{err}");
}
