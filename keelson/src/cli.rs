//! The command line: `serve`, `quickstart` and Keptn-CLI-style client verbs.

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use keelson::client::{nested_values, Client};
use keelson::token::{self, Origin};
use keelson::{FunctionSet, Node, NodeOptions, StoreChoice};
use keelson_core::shipyard::parse_go_duration;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Keelson: a Keptn-compatible, event-driven control plane.
#[derive(Parser)]
#[command(name = "keelson", version, about)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// API endpoint, e.g. http://127.0.0.1:8080/api (default: saved by `auth`, else the local node).
    #[arg(long, global = true, env = "KEELSON_ENDPOINT")]
    endpoint: Option<String>,
    /// API token (default: saved by `auth`, else the local node's).
    #[arg(
        long = "api-token",
        global = true,
        env = "KEELSON_API_TOKEN",
        hide_env_values = true
    )]
    api_token: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run Keelson locally: every function in one process, embedded SQLite store.
    Serve(ServeArgs),
    /// Start a throw-away Keelson with a sample project and watch a delivery go through three stages.
    Quickstart(QuickstartArgs),
    /// Check and save the endpoint and token for the other verbs.
    Auth,
    /// Create a project or a service.
    #[command(subcommand)]
    Create(CreateCmd),
    /// Upload a file as a resource.
    #[command(name = "add-resource")]
    AddResource(AddResourceArgs),
    /// Trigger a delivery or any sequence.
    #[command(subcommand)]
    Trigger(TriggerCmd),
    /// Send an event.
    #[command(subcommand)]
    Send(SendCmd),
    /// Read events or sequences.
    #[command(subcommand)]
    Get(GetCmd),
    /// End a maintenance window.
    #[command(subcommand)]
    Delete(DeleteCmd),
    /// Approve an open approval: sends approval.finished with result pass.
    /// Without --id, answers the only approval open in the scope.
    Approve(ApprovalArgs),
    /// Decline an open approval: sends approval.finished with result fail, which ends the sequence.
    Decline(ApprovalArgs),
    /// Pause a sequence.
    Pause(ControlTarget),
    /// Resume a sequence.
    Resume(ControlTarget),
    /// Abort a sequence.
    Abort(ControlTarget),
    /// AWS mode: create a stack's resources on an emulator.
    #[command(subcommand)]
    Aws(AwsCmd),
    /// Evaluate an SLO offline (no server), exactly as the lighthouse scores it.
    /// Exit code 0 = pass (or warning), 1 = fail, 2 = unusable input.
    Evaluate(EvaluateArgs),
    /// Configure a project's SLI provider (sends monitoring.configure).
    #[command(subcommand)]
    Configure(ConfigureCmd),
}

#[derive(Args)]
struct EvaluateArgs {
    /// slo.yaml (YAML or JSON).
    #[arg(long)]
    slo: PathBuf,
    /// JSON: a get-sli.finished CloudEvent, its data object, or a list of {metric, value, success, message}.
    #[arg(long)]
    sli: PathBuf,
    /// JSON list of earlier evaluation.finished events (or their data), newest first.
    #[arg(long)]
    previous: Option<PathBuf>,
    /// `json` (the evaluation.finished data) or `table`.
    #[arg(long, default_value = "json", value_parser = ["json", "table"])]
    format: String,
    /// Exit 1 on a warning too.
    #[arg(long = "fail-on-warning")]
    fail_on_warning: bool,
}

#[derive(Subcommand)]
enum ConfigureCmd {
    /// Set the SLI provider the lighthouse asks for a project's SLIs (e.g. prometheus).
    Monitoring {
        /// Provider name, the `sliProvider` of get-sli.triggered.
        provider: String,
        #[arg(long)]
        project: String,
        /// Service (passed on to providers that set up monitoring per service).
        #[arg(long)]
        service: Option<String>,
    },
}

#[derive(Subcommand)]
enum AwsCmd {
    /// Creates the resources of infra/aws/template.yaml (table, bus, rules,
    /// queues, dead-letter queues, token parameter) for a stack, on an
    /// emulator. Repeatable. On real AWS, deploy the template with SAM instead.
    Provision {
        /// The stack name resources are named after.
        #[arg(long, default_value = "keelson", env = "KEELSON_STACK")]
        stack: String,
        /// The emulator's endpoint.
        #[arg(
            long = "aws-endpoint",
            env = "AWS_ENDPOINT_URL",
            default_value = "http://127.0.0.1:4566"
        )]
        aws_endpoint: String,
        /// The API token to store in the stack's SSM parameter; generated when absent.
        #[arg(long = "token", env = "KEELSON_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
}

/// Where `serve` keeps state and moves events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// Embedded SQLite (or memory) and an in-process bus.
    Local,
    /// DynamoDB, EventBridge and SQS of a stack.
    Aws,
}

#[derive(Args)]
struct ServeArgs {
    /// Data directory (default: the user's data directory + /keelson).
    #[arg(long, env = "KEELSON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep everything in memory (nothing survives the process).
    #[arg(long, conflicts_with = "data_dir")]
    memory: bool,
    /// Port of the API.
    #[arg(long, default_value_t = 8080, env = "KEELSON_PORT")]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "KEELSON_HOST")]
    host: IpAddr,
    /// Functions to run in this process: api, shipyard, datastore, lighthouse, approval, remediation, prometheus.
    #[arg(
        long,
        env = "KEELSON_FUNCTIONS",
        default_value = "api,shipyard,datastore,lighthouse,approval,remediation"
    )]
    functions: String,
    /// SLI provider of projects that configure none (`keelson configure monitoring`).
    #[arg(long = "sli-provider", env = "KEELSON_SLI_PROVIDER")]
    sli_provider: Option<String>,
    /// Prometheus server of the built-in Prometheus SLI provider; runs the
    /// `prometheus` function (projects whose provider is `prometheus` use it).
    #[arg(long = "prometheus-url", env = "KEELSON_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// Also run built-in echo executors for deployment, test and release.
    #[arg(long)]
    demo: bool,
    /// A task without .started/.finished after this long times its sequence out (Go duration).
    #[arg(long, default_value = "10m", env = "KEELSON_TASK_STARTED_TIMEOUT")]
    task_started_timeout: String,
    /// A started task without .finished after this long times its sequence out (off when unset).
    #[arg(long, env = "KEELSON_TASK_FINISHED_TIMEOUT")]
    task_finished_timeout: Option<String>,
    /// Delete stored events older than this (Go duration, e.g. 720h; off when unset).
    #[arg(long, env = "KEELSON_RETENTION")]
    retention: Option<String>,
    /// How long applied event ids are remembered for deduplication (Go duration).
    #[arg(long, default_value = "360h", env = "KEELSON_DEDUPE_WINDOW")]
    dedupe_window: String,
    /// `local` (SQLite or memory) or `aws` (DynamoDB, EventBridge and SQS of `--stack`).
    #[arg(long, value_enum, default_value = "local", env = "KEELSON_BACKEND")]
    backend: Backend,
    /// AWS backend: the stack whose resources to use.
    #[arg(long, default_value = "keelson", env = "KEELSON_STACK")]
    stack: String,
    /// AWS backend: an emulator's endpoint (real AWS when absent; region and
    /// credentials come from the usual AWS variables and profiles).
    #[arg(long = "aws-endpoint", env = "AWS_ENDPOINT_URL")]
    aws_endpoint: Option<String>,
    /// AWS backend: create the stack's resources first (emulators only).
    #[arg(long, requires = "aws_endpoint")]
    provision: bool,
}

#[derive(Args)]
struct QuickstartArgs {
    /// Port of the API (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Keep serving after the delivery finished (Ctrl-C to stop).
    #[arg(long)]
    keep_running: bool,
}

#[derive(Subcommand)]
enum CreateCmd {
    /// Create a project from a shipyard file.
    Project {
        /// Project name.
        name: String,
        /// Shipyard file.
        #[arg(long)]
        shipyard: PathBuf,
    },
    /// Create a service in every stage of a project.
    Service {
        /// Service name.
        name: String,
        /// Project.
        #[arg(long)]
        project: String,
    },
    /// Silence alert-driven remediation for a project (or one stage, or one service) for a while.
    Maintenance {
        #[arg(long)]
        project: String,
        #[arg(long)]
        stage: Option<String>,
        #[arg(long)]
        service: Option<String>,
        /// Start (RFC 3339; default now).
        #[arg(long)]
        start: Option<String>,
        /// End (RFC 3339); or --duration.
        #[arg(long, conflicts_with = "duration")]
        end: Option<String>,
        /// Length, e.g. 2h or 30m; or --end.
        #[arg(long)]
        duration: Option<String>,
        /// Why.
        #[arg(long)]
        comment: Option<String>,
    },
}

#[derive(Args)]
struct AddResourceArgs {
    #[arg(long)]
    project: String,
    #[arg(long)]
    stage: Option<String>,
    #[arg(long)]
    service: Option<String>,
    /// Add the resource to every stage.
    #[arg(long = "all-stages")]
    all_stages: bool,
    /// Local file.
    #[arg(long)]
    resource: PathBuf,
    /// Path in the configuration (default: the file name).
    #[arg(long = "resourceUri", alias = "resource-uri")]
    resource_uri: Option<String>,
}

#[derive(Subcommand)]
enum TriggerCmd {
    /// Trigger a delivery of a new image.
    Delivery {
        #[arg(long)]
        project: String,
        #[arg(long)]
        service: String,
        /// Image, e.g. docker.io/org/app:1.2.3.
        #[arg(long)]
        image: String,
        /// Stage (default: the first stage).
        #[arg(long)]
        stage: Option<String>,
        /// Sequence name.
        #[arg(long, default_value = "delivery")]
        sequence: String,
        /// Extra configurationChange values, key=value (dots nest).
        #[arg(long = "values", value_delimiter = ',')]
        values: Vec<String>,
        /// Labels, key=value.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
    },
    /// Trigger a quality-gate evaluation of a service in a stage.
    Evaluation {
        #[arg(long)]
        project: String,
        #[arg(long)]
        stage: String,
        #[arg(long)]
        service: String,
        /// Window length ending now, or after --start (Go duration, default 5m).
        #[arg(long)]
        timeframe: Option<String>,
        /// Window start (RFC 3339 or 2006-01-02T15:04:05, UTC).
        #[arg(long)]
        start: Option<String>,
        /// Window end (needs --start; excludes --timeframe).
        #[arg(long)]
        end: Option<String>,
        /// Labels, key=value.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
    },
    /// Trigger any sequence.
    Sequence {
        /// Sequence name.
        name: String,
        #[arg(long)]
        project: String,
        #[arg(long)]
        service: String,
        #[arg(long)]
        stage: String,
        /// Data, key=value (dots nest).
        #[arg(long, value_delimiter = ',')]
        data: Vec<String>,
        /// Labels, key=value.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SendCmd {
    /// Send a CloudEvent from a JSON file.
    Event {
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum GetCmd {
    /// Events from the datastore, newest first.
    Event {
        /// Type, with or without the sh.keptn.event. prefix.
        event_type: Option<String>,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        stage: Option<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long = "keptn-context")]
        keptn_context: Option<String>,
        #[arg(long = "page-size", default_value_t = 20)]
        page_size: usize,
    },
    /// Current and future maintenance windows of a project.
    Maintenance {
        #[arg(long)]
        project: String,
    },
    /// Open approvals, with the result and evaluation score before each.
    Approvals {
        #[arg(long)]
        project: String,
        #[arg(long)]
        stage: Option<String>,
        #[arg(long)]
        service: Option<String>,
    },
    /// Sequence states of a project.
    Sequence {
        #[arg(long)]
        project: String,
        #[arg(long = "keptn-context")]
        keptn_context: Option<String>,
    },
}

#[derive(Subcommand)]
enum DeleteCmd {
    /// End a maintenance window (see `keelson get maintenance`).
    Maintenance {
        #[arg(long)]
        project: String,
        #[arg(long)]
        id: String,
    },
}

#[derive(Args)]
struct ApprovalArgs {
    #[arg(long)]
    project: String,
    #[arg(long)]
    stage: Option<String>,
    #[arg(long)]
    service: Option<String>,
    /// The approval.triggered id (see `keelson get approvals`).
    #[arg(long)]
    id: Option<String>,
    /// A note kept with the answer (data.message).
    #[arg(long)]
    message: Option<String>,
}

impl ApprovalArgs {
    fn scope(&self) -> keelson::approvals::Scope {
        keelson::approvals::Scope {
            project: self.project.clone(),
            stage: self.stage.clone(),
            service: self.service.clone(),
        }
    }
}

#[derive(Args)]
struct ControlTarget {
    /// Always `sequence`.
    #[arg(value_parser = ["sequence"])]
    what: String,
    #[arg(long)]
    project: String,
    #[arg(long = "keptn-context")]
    keptn_context: String,
    /// Only this stage.
    #[arg(long)]
    stage: Option<String>,
}

/// Default data directory.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("keelson")
}

fn credentials_path() -> PathBuf {
    dirs::config_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("keelson")
        .join("credentials.json")
}

fn duration_ms(field: &str, s: &str) -> anyhow::Result<i64> {
    parse_go_duration(s).map_err(|e| anyhow!("--{field}: {e}"))
}

fn client(cli: &Cli) -> anyhow::Result<Client> {
    let saved: Option<Value> = std::fs::read_to_string(credentials_path())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let saved_str = |k: &str| {
        saved
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let endpoint = cli
        .endpoint
        .clone()
        .or_else(|| saved_str("endpoint"))
        .unwrap_or_else(|| "http://127.0.0.1:8080/api".into());
    let token = match cli.api_token.clone().or_else(|| saved_str("token")) {
        Some(t) => t,
        None => {
            let p = default_data_dir().join(token::TOKEN_FILE);
            std::fs::read_to_string(&p)
                .map(|t| t.trim().to_string())
                .map_err(|_| anyhow!("no API token: pass --api-token, set KEELSON_API_TOKEN or run `keelson auth`"))?
        }
    };
    Ok(Client::new(&endpoint, &token))
}

/// `println!` that survives a closed stdout (see [`write_out`]).
macro_rules! outln {
    ($($t:tt)*) => {
        write_out(&format!("{}\n", format_args!($($t)*)))
    };
}

fn print(v: &Value) {
    write_out(&format!(
        "{}\n",
        serde_json::to_string_pretty(v).unwrap_or_default()
    ));
}

/// Writes to stdout; a reader that went away (`| head`) is not an error
/// (`println!` would panic on the broken pipe).
fn write_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let verbose = matches!(cli.cmd, Cmd::Serve(_));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEELSON_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if verbose { "info" } else { "warn" })
            }),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match &cli.cmd {
        Cmd::Serve(a) => serve(a).await,
        Cmd::Aws(AwsCmd::Provision {
            stack,
            aws_endpoint,
            token,
        }) => {
            let settings = keelson_aws::Settings::emulator(aws_endpoint);
            let generated = token.is_none();
            let tok = token.clone().unwrap_or_else(token::generate);
            let p = provision_stack(&settings, stack, &tok).await?;
            outln!("Provisioned stack {stack} on {aws_endpoint}:");
            for (id, name) in p.tables.iter().chain(&p.buses) {
                outln!("  {id:<26} {name}");
            }
            for (id, url) in &p.queues {
                outln!("  {id:<26} {url}");
            }
            for (id, (name, targets)) in &p.rules {
                outln!("  {id:<26} {name} -> {}", targets.join(", "));
            }
            let param = keelson_aws::names::Names::new(stack).token_parameter();
            if generated {
                outln!("  API token (SSM {param}): {tok}");
            } else {
                outln!("  API token stored in SSM {param}");
            }
            Ok(())
        }
        Cmd::Quickstart(a) => crate::quickstart::run(a.port, a.keep_running).await,
        Cmd::Auth => {
            let endpoint = cli
                .endpoint
                .clone()
                .ok_or_else(|| anyhow!("--endpoint: is required"))?;
            let token = cli
                .api_token
                .clone()
                .ok_or_else(|| anyhow!("--api-token: is required"))?;
            Client::new(&endpoint, &token).auth().await?;
            let p = credentials_path();
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)?;
            }
            token::write_private(
                &p,
                &json!({"endpoint": endpoint, "token": token}).to_string(),
            )?;
            outln!("Successfully authenticated against {endpoint}");
            Ok(())
        }
        Cmd::Create(CreateCmd::Project { name, shipyard }) => {
            let text = std::fs::read_to_string(shipyard)
                .with_context(|| format!("--shipyard: cannot read {}", shipyard.display()))?;
            client(&cli)?.create_project(name, &text).await?;
            outln!("Project {name} created");
            Ok(())
        }
        Cmd::Create(CreateCmd::Maintenance {
            project,
            stage,
            service,
            start,
            end,
            duration,
            comment,
        }) => {
            let w = client(&cli)?
                .post(
                    "/v1/maintenance",
                    &json!({"project": project, "stage": stage, "service": service, "start": start,
                            "end": end, "duration": duration, "comment": comment}),
                )
                .await?;
            let s = |k: &str| w[k].as_str().unwrap_or("-").to_string();
            outln!(
                "Maintenance window {} created for project {}{}{}: {} to {}",
                s("id"),
                s("project"),
                w["stage"]
                    .as_str()
                    .map(|x| format!(", stage {x}"))
                    .unwrap_or_default(),
                w["service"]
                    .as_str()
                    .map(|x| format!(", service {x}"))
                    .unwrap_or_default(),
                s("start"),
                s("end")
            );
            Ok(())
        }
        Cmd::Get(GetCmd::Maintenance { project }) => {
            let v = client(&cli)?
                .get(&format!("/v1/maintenance?project={project}"))
                .await?;
            print(&v["windows"]);
            Ok(())
        }
        Cmd::Delete(DeleteCmd::Maintenance { project, id }) => {
            client(&cli)?
                .call(
                    reqwest::Method::DELETE,
                    &format!("/v1/maintenance/{project}/{id}"),
                    None,
                )
                .await?;
            outln!("Maintenance window {id} of project {project} ended");
            Ok(())
        }
        Cmd::Create(CreateCmd::Service { name, project }) => {
            client(&cli)?.create_service(project, name).await?;
            outln!("Service {name} created in project {project}");
            Ok(())
        }
        Cmd::AddResource(a) => {
            let c = client(&cli)?;
            let content = std::fs::read(&a.resource)
                .with_context(|| format!("--resource: cannot read {}", a.resource.display()))?;
            let uri = match &a.resource_uri {
                Some(u) => u.clone(),
                None => a
                    .resource
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| anyhow!("--resourceUri: is required"))?
                    .to_string(),
            };
            let stages: Vec<Option<String>> = if a.all_stages {
                c.stages(&a.project).await?.into_iter().map(Some).collect()
            } else {
                vec![a.stage.clone()]
            };
            if a.service.is_some() && stages.iter().any(Option::is_none) {
                bail!("--stage: is required with --service (or use --all-stages)");
            }
            for s in stages {
                let commit = c
                    .add_resource(
                        &a.project,
                        s.as_deref(),
                        a.service.as_deref(),
                        &uri,
                        &content,
                    )
                    .await?;
                outln!(
                    "Resource {uri} added{} (version {commit})",
                    s.map(|s| format!(" to stage {s}")).unwrap_or_default()
                );
            }
            Ok(())
        }
        Cmd::Trigger(TriggerCmd::Delivery {
            project,
            service,
            image,
            stage,
            sequence,
            values,
            labels,
        }) => {
            let c = client(&cli)?;
            let stage = match stage {
                Some(s) => s.clone(),
                None => c
                    .stages(project)
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| anyhow!("project {project} has no stages"))?,
            };
            let mut vals = nested_values(values)?;
            vals["image"] = json!(image);
            let data = json!({"project": project, "stage": stage, "service": service,
                "labels": nested_values(labels)?, "configurationChange": {"values": vals}});
            let ctx = c
                .send_event(&json!({"type": format!("sh.keptn.event.{stage}.{sequence}.triggered"), "source": "https://github.com/keelson/cli", "specversion": "1.0", "data": data}))
                .await?;
            outln!("ID of Keptn context: {ctx}");
            Ok(())
        }
        Cmd::Trigger(TriggerCmd::Sequence {
            name,
            project,
            service,
            stage,
            data,
            labels,
        }) => {
            let mut d = nested_values(data)?;
            d["project"] = json!(project);
            d["stage"] = json!(stage);
            d["service"] = json!(service);
            d["labels"] = nested_values(labels)?;
            let ctx = client(&cli)?
                .send_event(&json!({"type": format!("sh.keptn.event.{stage}.{name}.triggered"), "source": "https://github.com/keelson/cli", "specversion": "1.0", "data": d}))
                .await?;
            outln!("ID of Keptn context: {ctx}");
            Ok(())
        }
        Cmd::Trigger(TriggerCmd::Evaluation {
            project,
            stage,
            service,
            timeframe,
            start,
            end,
            labels,
        }) => {
            let mut body = json!({});
            for (k, v) in [("timeframe", timeframe), ("start", start), ("end", end)] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if !labels.is_empty() {
                body["labels"] = nested_values(labels)?;
            }
            let v = client(&cli)?
                .post(
                    &format!("/controlPlane/v1/project/{project}/stage/{stage}/service/{service}/evaluation"),
                    &body,
                )
                .await?;
            outln!(
                "ID of Keptn context: {}",
                v["keptnContext"].as_str().unwrap_or_default()
            );
            Ok(())
        }
        Cmd::Evaluate(a) => {
            use keelson::evaluate;
            let code = match evaluate::evaluate_files(&a.slo, &a.sli, a.previous.as_deref()) {
                Err(e) => {
                    eprintln!("Error: {e}");
                    evaluate::EXIT_UNUSABLE
                }
                Ok(data) => {
                    if a.format == "table" {
                        write_out(&evaluate::table(&data));
                    } else {
                        print(&data);
                    }
                    let code = evaluate::exit_code(&data, a.fail_on_warning);
                    if code == evaluate::EXIT_UNUSABLE {
                        eprintln!(
                            "Error: the evaluation of --slo {} with --sli {} errored: {}",
                            a.slo.display(),
                            a.sli.display(),
                            data["message"].as_str().unwrap_or_default()
                        );
                    }
                    code
                }
            };
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Cmd::Configure(ConfigureCmd::Monitoring {
            provider,
            project,
            service,
        }) => {
            let mut data = json!({"project": project, "type": provider});
            if let Some(s) = service {
                data["service"] = json!(s);
            }
            client(&cli)?
                .send_event(&json!({"type": "sh.keptn.event.monitoring.configure", "source": "https://github.com/keelson/cli", "specversion": "1.0", "data": data}))
                .await?;
            outln!("SLI provider of project {project} set to {provider}");
            Ok(())
        }
        Cmd::Send(SendCmd::Event { file }) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("--file: cannot read {}", file.display()))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow!("--file: {} is not JSON: {e}", file.display()))?;
            let ctx = client(&cli)?.send_event(&v).await?;
            outln!("ID of Keptn context: {ctx}");
            Ok(())
        }
        Cmd::Get(GetCmd::Event {
            event_type,
            project,
            stage,
            service,
            keptn_context,
            page_size,
        }) => {
            let mut q = vec![format!("pageSize={page_size}")];
            if let Some(t) = event_type {
                let t = if t.starts_with("sh.keptn.") {
                    t.clone()
                } else {
                    format!("sh.keptn.event.{t}")
                };
                q.push(format!("type={t}"));
            }
            for (k, v) in [
                ("project", project),
                ("stage", stage),
                ("service", service),
                ("keptnContext", keptn_context),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={v}"));
                }
            }
            let v = client(&cli)?
                .get(&format!("/mongodb-datastore/event?{}", q.join("&")))
                .await?;
            print(&v);
            Ok(())
        }
        Cmd::Get(GetCmd::Sequence {
            project,
            keptn_context,
        }) => {
            let states = client(&cli)?
                .sequences(project, keptn_context.as_deref())
                .await?;
            print(&Value::Array(states));
            Ok(())
        }
        Cmd::Get(GetCmd::Approvals {
            project,
            stage,
            service,
        }) => {
            let scope = keelson::approvals::Scope {
                project: project.clone(),
                stage: stage.clone(),
                service: service.clone(),
            };
            let open = keelson::approvals::open(&client(&cli)?, &scope).await?;
            if open.is_empty() {
                outln!("No open approval.");
            } else {
                write_out(&keelson::approvals::table(&open));
            }
            Ok(())
        }
        Cmd::Approve(a) | Cmd::Decline(a) => {
            let approve = matches!(cli.cmd, Cmd::Approve(_));
            let done = keelson::approvals::answer(
                &client(&cli)?,
                &a.scope(),
                a.id.as_deref(),
                approve,
                a.message.as_deref(),
            )
            .await?;
            outln!("{done}");
            Ok(())
        }
        Cmd::Pause(t) => control(&cli, t, "pause").await,
        Cmd::Resume(t) => control(&cli, t, "resume").await,
        Cmd::Abort(t) => control(&cli, t, "abort").await,
    }
}

async fn control(cli: &Cli, t: &ControlTarget, state: &str) -> anyhow::Result<()> {
    client(cli)?
        .control(&t.project, &t.keptn_context, state, t.stage.as_deref())
        .await?;
    outln!(
        "Sent {state} for sequence {} of project {}",
        t.keptn_context,
        t.project
    );
    Ok(())
}

async fn serve(a: &ServeArgs) -> anyhow::Result<()> {
    let functions = FunctionSet::parse(&a.functions).map_err(|e| anyhow!("--functions: {e}"))?;
    if a.backend == Backend::Aws {
        return serve_aws(a, functions).await;
    }
    let (store, dir) = if a.memory {
        (StoreChoice::Memory, None)
    } else {
        let d = a.data_dir.clone().unwrap_or_else(default_data_dir);
        (StoreChoice::Sqlite(d.clone()), Some(d))
    };
    let env_token = std::env::var("KEELSON_API_TOKEN").ok();
    let (tok, origin) = token::resolve(env_token, dir.as_deref())?;
    let mut opts = node_options(a, store, tok.clone(), functions)?;
    if a.demo {
        opts.echo_tasks = vec!["deployment".into(), "test".into(), "release".into()];
        opts.echo_delay = Duration::from_millis(300);
    }
    let node = Node::start(opts).await?;
    outln!("Keelson is running.");
    if a.functions.contains("api") {
        outln!("  API:    {}", node.api_url());
    } else {
        outln!("  API:    not in this process (functions: {})", a.functions);
    }
    match &dir {
        Some(d) => outln!("  Store:  {}", d.join("keelson.db").display()),
        None => outln!("  Store:  memory (nothing is kept when this process ends)"),
    }
    match origin {
        Origin::Env => outln!("  Token:  from KEELSON_API_TOKEN"),
        Origin::Stored(p) => outln!("  Token:  stored in {} (owner-only)", p.display()),
        Origin::Generated(Some(p)) => outln!("  Token:  {tok}\n          (generated now, stored in {} with owner-only permissions; it is not printed again)", p.display()),
        Origin::Generated(None) => outln!("  Token:  {tok}"),
    }
    outln!(
        "Try:  curl -H 'x-token: <token>' {}/v1/metadata",
        node.api_url()
    );
    shutdown_signal().await?;
    outln!("Stopping.");
    node.stop().await;
    Ok(())
}

/// The settings every backend shares.
fn node_options(
    a: &ServeArgs,
    store: StoreChoice,
    tok: String,
    functions: FunctionSet,
) -> anyhow::Result<NodeOptions> {
    let mut opts = NodeOptions::new(store, SocketAddr::new(a.host, a.port), tok);
    opts.functions = functions;
    opts.sequence.task_started_timeout_ms =
        duration_ms("task-started-timeout", &a.task_started_timeout)?;
    opts.sequence.task_finished_timeout_ms = a
        .task_finished_timeout
        .as_deref()
        .map(|d| duration_ms("task-finished-timeout", d))
        .transpose()?;
    opts.retention = a
        .retention
        .as_deref()
        .map(|d| duration_ms("retention", d).map(|ms| Duration::from_millis(ms as u64)))
        .transpose()?;
    opts.dedupe_window =
        Duration::from_millis(duration_ms("dedupe-window", &a.dedupe_window)? as u64);
    opts.lighthouse.default_sli_provider = a.sli_provider.clone().filter(|p| !p.trim().is_empty());
    if let Some(url) = a.prometheus_url.clone().filter(|u| !u.trim().is_empty()) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--prometheus-url: {url:?} must start with http:// or https://");
        }
        opts.prometheus.default_url = Some(url);
        opts.functions.prometheus = true;
    }
    Ok(opts)
}

async fn provision_stack(
    settings: &keelson_aws::Settings,
    stack: &str,
    token: &str,
) -> anyhow::Result<keelson_aws::provision::Provisioned> {
    let sdk = keelson_aws::load(settings).await;
    let t = keelson_aws::provision::Template::parse(keelson_aws::provision::TEMPLATE)
        .map_err(|e| anyhow!(e))?;
    keelson_aws::provision::provision(&sdk, &t, stack, Some(token))
        .await
        .with_context(|| format!("provisioning stack {stack}"))
}

/// `serve --backend aws`.
async fn serve_aws(a: &ServeArgs, functions: FunctionSet) -> anyhow::Result<()> {
    if a.demo {
        bail!("--demo: the demo executors run with --backend local only");
    }
    if a.memory || a.data_dir.is_some() {
        bail!("--memory/--data-dir: not used with --backend aws (state is in DynamoDB)");
    }
    let settings = match &a.aws_endpoint {
        Some(e) => keelson_aws::Settings::emulator(e),
        None => keelson_aws::Settings::from_env(),
    };
    let names = keelson_aws::names::Names::new(&a.stack);
    let target = keelson::AwsTarget::new(settings.clone(), &a.stack);
    let (tok, origin) = match std::env::var("KEELSON_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        Some(t) => (t, "from KEELSON_API_TOKEN".to_string()),
        None if a.provision => {
            let t = token::generate();
            (
                t.clone(),
                format!("{t} (generated; stored in SSM {})", names.token_parameter()),
            )
        }
        None => {
            let sdk = keelson_aws::load(&settings).await;
            let t = keelson_aws::token::read(
                &keelson_aws::clients::ssm(&sdk),
                &names.token_parameter(),
            )
            .await
            .with_context(|| {
                format!(
                    "no KEELSON_API_TOKEN, and reading SSM parameter {} failed",
                    names.token_parameter()
                )
            })?;
            (t, format!("from SSM {}", names.token_parameter()))
        }
    };
    if a.provision {
        provision_stack(&settings, &a.stack, &tok).await?;
    }
    let mut opts = node_options(a, StoreChoice::Aws(target), tok.clone(), functions)?;
    // Each sweep queries the table: once a second is plenty (the Lambda schedule runs once a minute).
    opts.tick_interval = Duration::from_secs(1);
    let sweep = opts.tick_interval;
    let node = Node::start(opts).await?;
    outln!("Keelson is running (AWS backend, stack {}).", a.stack);
    if a.functions.contains("api") {
        outln!("  API:    {}", node.api_url());
    }
    outln!(
        "  AWS:    {} (table {}, bus {}, queues {}-*)",
        a.aws_endpoint.as_deref().unwrap_or("real AWS"),
        names.table(),
        names.bus(),
        a.stack
    );
    outln!("  Sweep:  every {} ms", sweep.as_millis());
    outln!("  Token:  {origin}");
    shutdown_signal().await?;
    outln!("Stopping.");
    node.stop().await;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")
    }
}
