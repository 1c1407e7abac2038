//! Creates a SAM template's resources on an AWS emulator, derived from the
//! template itself so the two cannot drift apart: the DynamoDB tables, the
//! event buses, the SQS queues (dead-letter queues first, with their redrive
//! policies) and the EventBridge rules with SQS targets, plus the SSM token
//! parameter the operator creates before a real deploy. Functions, APIs, IAM
//! and log groups have no meaning on an emulator without a Lambda runtime and
//! are skipped (the functions run as local processes fed by [`crate::sqs::Poller`]).
//!
//! Intrinsics understood: `Ref`, `Fn::Sub`, `Fn::GetAtt` (`.Arn`, `.QueueUrl`,
//! `.QueueName`, `.Name`) in long and short (`!Sub`) form, with the
//! pseudo-parameters `AWS::StackName`, `AWS::Region`, `AWS::AccountId`,
//! `AWS::Partition` and parameter defaults.

use crate::error::{fatal, store_error};
use crate::names::Names;
use aws_config::SdkConfig;
use keelson_core::ports::{StoreError, StoreResult};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};

/// The account id emulators use.
pub const EMULATOR_ACCOUNT: &str = "123456789012";

/// The template in this repository.
pub const TEMPLATE: &str = include_str!("../../../infra/aws/template.yaml");

/// What was created.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    /// Resource names (from the stack name).
    pub names: Option<Names>,
    /// Table names by logical id.
    pub tables: BTreeMap<String, String>,
    /// Bus names by logical id.
    pub buses: BTreeMap<String, String>,
    /// Queue URLs by logical id.
    pub queues: BTreeMap<String, String>,
    /// Rule names by logical id, with their target ARNs.
    pub rules: BTreeMap<String, (String, Vec<String>)>,
}

/// A parsed template: resources as JSON with intrinsics in long form.
#[derive(Debug, Clone)]
pub struct Template {
    /// Parameters.
    pub parameters: Map<String, Value>,
    /// Resources.
    pub resources: Map<String, Value>,
}

impl Template {
    /// Parses YAML (short-form tags become their `Fn::` long form).
    pub fn parse(yaml: &str) -> Result<Template, String> {
        let v: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(yaml).map_err(|e| format!("template: {e}"))?;
        let j = to_json(v);
        let section = |name: &str| match j.get(name) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        Ok(Template {
            parameters: section("Parameters"),
            resources: section("Resources"),
        })
    }

    /// Resources of a type, by logical id.
    pub fn of_type(&self, ty: &str) -> Vec<(&String, &Value)> {
        self.resources
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(ty))
            .collect()
    }
}

fn to_json(v: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).unwrap_or(Value::Null),
        Y::String(s) => Value::String(s),
        Y::Sequence(s) => Value::Array(s.into_iter().map(to_json).collect()),
        Y::Mapping(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let k = match k {
                        Y::String(s) => s,
                        other => serde_yaml_ng::to_string(&other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    (k, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = to_json(t.value);
            match name {
                "Ref" | "Condition" => json!({ name: inner }),
                "GetAtt" => match inner {
                    Value::String(s) => {
                        let (a, b) = s.split_once('.').unwrap_or((&s, ""));
                        json!({ "Fn::GetAtt": [a, b] })
                    }
                    other => json!({ "Fn::GetAtt": other }),
                },
                _ => json!({ format!("Fn::{name}"): inner }),
            }
        }
    }
}

/// Resolves intrinsics against the stack's context.
struct Resolver<'a> {
    stack: &'a str,
    region: String,
    template: &'a Template,
    /// Ref and attributes of created resources: (logical id, attribute or "") → value.
    known: HashMap<(String, String), String>,
}

impl Resolver<'_> {
    fn pseudo(&self, name: &str) -> Option<String> {
        match name {
            "AWS::StackName" => Some(self.stack.into()),
            "AWS::Region" => Some(self.region.clone()),
            "AWS::AccountId" => Some(EMULATOR_ACCOUNT.into()),
            "AWS::Partition" => Some("aws".into()),
            "AWS::URLSuffix" => Some("amazonaws.com".into()),
            _ => None,
        }
    }

    fn reference(&self, name: &str) -> StoreResult<String> {
        if let Some(v) = self.pseudo(name) {
            return Ok(v);
        }
        if let Some(v) = self.known.get(&(name.to_string(), String::new())) {
            return Ok(v.clone());
        }
        if let Some(p) = self.template.parameters.get(name) {
            return match p.get("Default") {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(v @ Value::Number(_)) => Ok(v.to_string()),
                _ => Err(fatal(format!("parameter {name} has no default"))),
            };
        }
        Err(fatal(format!("Ref {name}: not provisioned (yet)")))
    }

    fn attribute(&self, id: &str, attr: &str) -> StoreResult<String> {
        self.known
            .get(&(id.to_string(), attr.to_string()))
            .cloned()
            .ok_or_else(|| fatal(format!("GetAtt {id}.{attr}: not provisioned (yet)")))
    }

    fn sub(&self, s: &str, vars: &Map<String, Value>) -> StoreResult<String> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let j = after
                .find('}')
                .ok_or_else(|| fatal(format!("Fn::Sub {s:?}: unclosed ${{")))?;
            let name = &after[..j];
            let v = if let Some(v) = vars.get(name) {
                self.resolve_str(v)?
            } else if let Some((id, attr)) = name.split_once('.') {
                self.attribute(id, attr)?
            } else {
                self.reference(name)?
            };
            out.push_str(&v);
            rest = &after[j + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Resolves every intrinsic in `v`.
    fn resolve(&self, v: &Value) -> StoreResult<Value> {
        match v {
            Value::Object(m) if m.len() == 1 => {
                let (k, inner) = m.iter().next().expect("one entry");
                match k.as_str() {
                    "Ref" => Ok(Value::String(
                        self.reference(inner.as_str().unwrap_or_default())?,
                    )),
                    "Fn::Sub" => match inner {
                        Value::String(s) => Ok(Value::String(self.sub(s, &Map::new())?)),
                        Value::Array(a) if a.len() == 2 => {
                            let vars = a[1].as_object().cloned().unwrap_or_default();
                            Ok(Value::String(
                                self.sub(a[0].as_str().unwrap_or_default(), &vars)?,
                            ))
                        }
                        _ => Err(fatal("Fn::Sub: malformed")),
                    },
                    "Fn::GetAtt" => match inner.as_array().map(Vec::as_slice) {
                        Some([Value::String(a), Value::String(b)]) => {
                            Ok(Value::String(self.attribute(a, b)?))
                        }
                        _ => Err(fatal("Fn::GetAtt: malformed")),
                    },
                    _ => Ok(Value::Object(
                        [(k.clone(), self.resolve(inner)?)].into_iter().collect(),
                    )),
                }
            }
            Value::Object(m) => Ok(Value::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), self.resolve(v)?)))
                    .collect::<StoreResult<_>>()?,
            )),
            Value::Array(a) => Ok(Value::Array(
                a.iter()
                    .map(|v| self.resolve(v))
                    .collect::<StoreResult<_>>()?,
            )),
            other => Ok(other.clone()),
        }
    }

    fn resolve_str(&self, v: &Value) -> StoreResult<String> {
        match self.resolve(v)? {
            Value::String(s) => Ok(s),
            other => Ok(other.to_string()),
        }
    }

    fn set(&mut self, id: &str, attr: &str, v: String) {
        self.known.insert((id.into(), attr.into()), v);
    }
}

fn str_prop(p: &Value, key: &str) -> Option<String> {
    p.get(key).and_then(|v| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// Creates `template`'s resources for stack `stack` on the emulator `sdk`
/// points at. `token`, when given, is stored in the API-token parameter.
/// Creating what exists already is not an error (provisioning is repeatable).
pub async fn provision(
    sdk: &SdkConfig,
    template: &Template,
    stack: &str,
    token: Option<&str>,
) -> StoreResult<Provisioned> {
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    let mut r = Resolver {
        stack,
        region: region.clone(),
        template,
        known: HashMap::new(),
    };
    let mut out = Provisioned {
        names: Some(Names::new(stack)),
        ..Provisioned::default()
    };
    let props = |res: &Value| res.get("Properties").cloned().unwrap_or(json!({}));

    // Tables.
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    for (id, res) in template.of_type("AWS::DynamoDB::Table") {
        let p = r.resolve(&props(res))?;
        let name = str_prop(&p, "TableName").ok_or_else(|| fatal(format!("{id}: no TableName")))?;
        create_table(&ddb, &name, &p).await?;
        r.set(id, "", name.clone());
        r.set(
            id,
            "Arn",
            format!("arn:aws:dynamodb:{region}:{EMULATOR_ACCOUNT}:table/{name}"),
        );
        out.tables.insert(id.clone(), name);
    }

    // Buses.
    let eb = aws_sdk_eventbridge::Client::new(sdk);
    for (id, res) in template.of_type("AWS::Events::EventBus") {
        let p = r.resolve(&props(res))?;
        let name = str_prop(&p, "Name").ok_or_else(|| fatal(format!("{id}: no Name")))?;
        match eb.create_event_bus().name(&name).send().await {
            Ok(_) => {}
            Err(e) if already_exists(crate::error::code_of(&e)) => {}
            Err(e) => return Err(store_error(e)),
        }
        r.set(id, "", name.clone());
        r.set(id, "Name", name.clone());
        r.set(
            id,
            "Arn",
            format!("arn:aws:events:{region}:{EMULATOR_ACCOUNT}:event-bus/{name}"),
        );
        out.buses.insert(id.clone(), name);
    }

    // Queues: those another queue's redrive policy names come first.
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut queues = template.of_type("AWS::SQS::Queue");
    queues.sort_by_key(|(_, res)| res.pointer("/Properties/RedrivePolicy").is_some());
    for (id, res) in queues {
        let p = r.resolve(&props(res))?;
        let name = str_prop(&p, "QueueName").ok_or_else(|| fatal(format!("{id}: no QueueName")))?;
        let mut req = sqs.create_queue().queue_name(&name);
        for (key, attr) in [
            ("VisibilityTimeout", "VisibilityTimeout"),
            ("MessageRetentionPeriod", "MessageRetentionPeriod"),
            (
                "ReceiveMessageWaitTimeSeconds",
                "ReceiveMessageWaitTimeSeconds",
            ),
            ("DelaySeconds", "DelaySeconds"),
            ("MaximumMessageSize", "MaximumMessageSize"),
        ] {
            if let Some(v) = str_prop(&p, key) {
                req = req.attributes(attr.into(), v);
            }
        }
        if let Some(rp) = p.get("RedrivePolicy") {
            req = req.attributes("RedrivePolicy".into(), rp.to_string());
        }
        let url = req
            .send()
            .await
            .map_err(store_error)?
            .queue_url()
            .unwrap_or_default()
            .to_string();
        r.set(id, "", url.clone());
        r.set(id, "QueueUrl", url.clone());
        r.set(id, "QueueName", name.clone());
        r.set(
            id,
            "Arn",
            format!("arn:aws:sqs:{region}:{EMULATOR_ACCOUNT}:{name}"),
        );
        out.queues.insert(id.clone(), url);
    }

    // Rules with SQS targets (schedules target functions, which have no runtime here).
    for (id, res) in template.of_type("AWS::Events::Rule") {
        let p = r.resolve(&props(res))?;
        let Some(pattern) = p.get("EventPattern") else {
            continue;
        };
        let name = str_prop(&p, "Name").unwrap_or_else(|| format!("{stack}-{id}"));
        let mut req = eb
            .put_rule()
            .name(&name)
            .event_pattern(pattern.to_string())
            .state(aws_sdk_eventbridge::types::RuleState::Enabled);
        if let Some(bus) = str_prop(&p, "EventBusName") {
            req = req.event_bus_name(bus);
        }
        req.send().await.map_err(store_error)?;
        let mut targets = Vec::new();
        let mut put = eb.put_targets().rule(&name);
        if let Some(bus) = str_prop(&p, "EventBusName") {
            put = put.event_bus_name(bus);
        }
        for t in p
            .get("Targets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let arn = str_prop(t, "Arn").unwrap_or_default();
            if !arn.starts_with("arn:aws:sqs:") {
                continue;
            }
            let tid = str_prop(t, "Id").unwrap_or_else(|| "target".into());
            let mut target = aws_sdk_eventbridge::types::Target::builder()
                .id(tid)
                .arn(&arn);
            if let Some(dlq) = t.pointer("/DeadLetterConfig/Arn").and_then(Value::as_str) {
                target = target.dead_letter_config(
                    aws_sdk_eventbridge::types::DeadLetterConfig::builder()
                        .arn(dlq)
                        .build(),
                );
            }
            if let Some(rp) = t.get("RetryPolicy") {
                let num = |k: &str| rp.get(k).and_then(Value::as_i64).map(|n| n as i32);
                target = target.retry_policy(
                    aws_sdk_eventbridge::types::RetryPolicy::builder()
                        .set_maximum_retry_attempts(num("MaximumRetryAttempts"))
                        .set_maximum_event_age_in_seconds(num("MaximumEventAgeInSeconds"))
                        .build(),
                );
            }
            put = put.targets(target.build().map_err(|e| fatal(e.to_string()))?);
            targets.push(arn);
        }
        if !targets.is_empty() {
            put.send().await.map_err(store_error)?;
        }
        out.rules.insert(id.clone(), (name, targets));
    }

    // The API token (a SecureString the operator creates before a real deploy).
    if let Some(token) = token {
        let ssm = aws_sdk_ssm::Client::new(sdk);
        ssm.put_parameter()
            .name(Names::new(stack).token_parameter())
            .value(token)
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .map_err(store_error)?;
    }
    Ok(out)
}

fn already_exists(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("ResourceAlreadyExistsException" | "ResourceInUseException")
    )
}

async fn create_table(ddb: &aws_sdk_dynamodb::Client, name: &str, p: &Value) -> StoreResult<()> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
    };
    let bad = |what: &str| fatal(format!("table {name}: {what}"));
    let keys = |v: Option<&Value>| -> StoreResult<Vec<KeySchemaElement>> {
        v.and_then(Value::as_array)
            .ok_or_else(|| bad("no KeySchema"))?
            .iter()
            .map(|k| {
                KeySchemaElement::builder()
                    .attribute_name(str_prop(k, "AttributeName").unwrap_or_default())
                    .key_type(KeyType::from(
                        str_prop(k, "KeyType").unwrap_or_default().as_str(),
                    ))
                    .build()
                    .map_err(|e| fatal(e.to_string()))
            })
            .collect()
    };
    let mut req = ddb
        .create_table()
        .table_name(name)
        .set_key_schema(Some(keys(p.get("KeySchema"))?))
        .billing_mode(BillingMode::from(
            str_prop(p, "BillingMode")
                .unwrap_or_else(|| "PAY_PER_REQUEST".into())
                .as_str(),
        ));
    for a in p
        .get("AttributeDefinitions")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no AttributeDefinitions"))?
    {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(str_prop(a, "AttributeName").unwrap_or_default())
                .attribute_type(ScalarAttributeType::from(
                    str_prop(a, "AttributeType").unwrap_or_default().as_str(),
                ))
                .build()
                .map_err(|e| fatal(e.to_string()))?,
        );
    }
    for g in p
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let projection = g
            .pointer("/Projection/ProjectionType")
            .and_then(Value::as_str)
            .unwrap_or("ALL");
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(str_prop(g, "IndexName").unwrap_or_default())
                .set_key_schema(Some(keys(g.get("KeySchema"))?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(projection))
                        .build(),
                )
                .build()
                .map_err(|e| fatal(e.to_string()))?,
        );
    }
    match req.send().await {
        Ok(_) => {}
        Err(e) if already_exists(crate::error::code_of(&e)) => return Ok(()),
        Err(e) => return Err(store_error(e)),
    }
    if let Some(ttl) = p.get("TimeToLiveSpecification") {
        if ttl.get("Enabled").and_then(Value::as_bool) == Some(true)
            || str_prop(ttl, "Enabled").as_deref() == Some("true")
        {
            ddb.update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(str_prop(ttl, "AttributeName").unwrap_or_default())
                        .enabled(true)
                        .build()
                        .map_err(|e| fatal(e.to_string()))?,
                )
                .send()
                .await
                .map_err(store_error)?;
        }
    }
    Ok(())
}

/// Why provisioning was refused (kept for callers that match on it).
pub type ProvisionError = StoreError;
