#!/usr/bin/env python3
"""Offline checks of infra/knative. Run it through ../validate, which installs
the pinned tools and passes their locations in the environment.

1. Every *.yaml file is listed in its directory's kustomization.yaml.
2. kustomize (kubectl kustomize) renders each kustomization.
3. Core Kubernetes resources: kubernetes-validate, strict (unknown fields
   fail), against the Kubernetes JSON schemas it bundles. The pod spec of each
   Knative Service is checked the same way, as a core Pod.
4. Knative resources: (a) the OpenAPI schemas of Knative's CRDs (as shipped in
   the cloudcoil-models-knative-* packages), made strict: an object that
   declares its properties rejects any other; (b) the validators that
   @kubernetes-models/knative generates from Knative's Go API types (types and
   required fields; they accept unknown fields, which (a) catches).
5. Cross-references and the deployment's policy (scale, probes, security
   context, delivery), and the routing: the triggers deliver every event type
   each function's subscription names.

Every problem is printed as `ERROR <file>: <Kind>/<name>: <field>: <message>`.
"""

import argparse
import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.dirname(HERE)  # infra/knative
REPO = os.path.dirname(os.path.dirname(BASE))

# Oldest Kubernetes the core resources must be valid for (fields added later
# fail): an old baseline for clusters that run Knative >= 1.15.
K8S_VERSION = "1.28.0"

ORIGIN = "config.kubernetes.io/origin"

# function -> its Knative Service and NATS-style subscription (`*` = one
# token, `>` = the rest). The same lists as functions/<fn>/src/lib.rs
# (`subscription()`), which is compared below when it can be read.
SUBSCRIPTIONS = {
    "shipyard": ("keelson-shipyard", [
        "sh.keptn.event.*.*.triggered",
        "sh.keptn.event.*.started",
        "sh.keptn.event.*.finished",
    ]),
    "datastore": ("keelson-datastore", ["sh.keptn.event.>"]),
    "lighthouse": ("keelson-lighthouse", [
        "sh.keptn.event.evaluation.triggered",
        "sh.keptn.event.get-sli.finished",
        "sh.keptn.event.monitoring.configure",
    ]),
    "approval": ("keelson-approval", ["sh.keptn.event.approval.triggered"]),
    "remediation": ("keelson-remediation", ["sh.keptn.event.get-action.triggered"]),
    "prometheus": ("keelson-prometheus", ["sh.keptn.event.get-sli.triggered"]),
}

# Knative Service -> binary, min-scale, whether it publishes (gets K_SINK; as
# Function::publishes in functions/knative/src/lib.rs),
# extra env (name -> (kind, object, key)).
DB = ("secret", "keelson-database", "url")
SERVICES = {
    "keelson-api": ("api-http", "1", True,
                    {"KEELSON_API_TOKEN": ("secret", "keelson-api-token", "token")}),
    "keelson-shipyard": ("shipyard-http", "1", True, {}),
    "keelson-datastore": ("datastore-http", "0", False,
                          {"KEELSON_RETENTION": ("configmap", "keelson-config", "KEELSON_RETENTION")}),
    "keelson-lighthouse": ("lighthouse-http", "0", True,
                           {"KEELSON_SLI_PROVIDER": ("configmap", "keelson-config", "KEELSON_SLI_PROVIDER")}),
    "keelson-approval": ("approval-http", "0", True, {}),
    "keelson-remediation": ("remediation-http", "0", True, {}),
    "keelson-prometheus": ("prometheus-http", "0", True,
                           {"KEELSON_PROMETHEUS_URL": ("configmap", "keelson-config", "KEELSON_PROMETHEUS_URL")}),
    "keelson-dead-letters": ("dead-letter-http", "0", False, {}),
}
DEAD_LETTERS = "keelson-dead-letters"
BROKER = "keelson"
DELIVERY = {"retry": 5, "backoffPolicy": "exponential", "backoffDelay": "PT0.5S"}
SINK_LABEL = ("keelson.dev/sink", "broker")

# Knative-only fields of a revision's pod spec, dropped before checking it as
# a core Pod.
KNATIVE_POD_FIELDS = ("containerConcurrency", "timeoutSeconds",
                      "responseStartTimeoutSeconds", "idleTimeoutSeconds")


class Problem:
    def __init__(self, file, resource, field, message, tool):
        self.file, self.resource, self.field = file, resource, field
        self.message, self.tool = message, tool

    def __str__(self):
        where = self.file + ": " + self.resource
        if self.field:
            where += ": " + self.field
        return f"ERROR {where}: {self.message} [{self.tool}]"


class Doc:
    """One rendered resource and the source file it came from."""

    def __init__(self, body, file):
        self.body, self.file = body, file
        self.kind = body.get("kind", "?")
        self.api = body.get("apiVersion", "?")
        self.name = (body.get("metadata") or {}).get("name", "?")

    @property
    def id(self):
        return f"{self.kind}/{self.name}"

    @property
    def knative(self):
        return self.api.split("/")[0].endswith("knative.dev")


def dotted(path):
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


# ---------------------------------------------------------------- 1 and 2

def kustomization_dirs(root):
    dirs = []
    for d, subdirs, files in os.walk(root):
        subdirs[:] = sorted(s for s in subdirs if s != "check" and not s.startswith("."))
        if "kustomization.yaml" in files:
            dirs.append(d)
    return dirs


def check_listed(root, shown, problems):
    """Every YAML file belongs to the resources of its directory's kustomization."""
    for d, subdirs, files in os.walk(root):
        subdirs[:] = sorted(s for s in subdirs if s != "check" and not s.startswith("."))
        manifests = sorted(f for f in files if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml")
        rel = os.path.relpath(d, root)
        show = shown if rel == "." else f"{shown}/{rel}"
        if not manifests:
            continue
        if "kustomization.yaml" not in files:
            for f in manifests:
                problems.append(Problem(f"{show}/{f}", "-", "", "no kustomization.yaml in its directory lists it", "completeness"))
            continue
        with open(os.path.join(d, "kustomization.yaml")) as fh:
            k = yaml.safe_load(fh) or {}
        listed = set(os.path.normpath(r) for r in (k.get("resources") or []))
        for f in manifests:
            if f not in listed:
                problems.append(Problem(f"{show}/{f}", "-", "", f"not listed in {show}/kustomization.yaml resources", "completeness"))


def render(root, shown, kubectl, problems):
    """Renders every kustomization under root (a scratch copy, which gets
    origin annotations); returns {kustomization dir: [Doc]}."""
    out = {}
    for d in kustomization_dirs(root):
        rel = os.path.relpath(d, root)
        show = shown if rel == "." else f"{shown}/{rel}"
        kfile = os.path.join(d, "kustomization.yaml")
        try:
            with open(kfile) as fh:
                k = yaml.safe_load(fh) or {}
        except yaml.YAMLError as e:
            problems.append(Problem(f"{show}/kustomization.yaml", "-", "", f"not YAML: {e}", "kustomize"))
            continue
        k["buildMetadata"] = sorted(set(k.get("buildMetadata") or []) | {"originAnnotations"})
        with open(kfile, "w") as fh:
            yaml.safe_dump(k, fh)
        r = subprocess.run([kubectl, "kustomize", d], capture_output=True, text=True)
        if r.returncode != 0:
            msg = r.stderr.strip().replace(root, shown)
            problems.append(Problem(f"{show}/kustomization.yaml", "-", "", "kustomize failed: " + msg, "kustomize"))
            continue
        docs = []
        for body in yaml.safe_load_all(r.stdout):
            if not body:
                continue
            ann = body.get("metadata", {}).get("annotations", {})
            origin = yaml.safe_load(ann.pop(ORIGIN, "") or "") or {}
            if not ann:
                body["metadata"].pop("annotations", None)
            if "path" in origin:
                src = os.path.normpath(os.path.join(rel, origin["path"]))
                file = shown if src == "." else f"{shown}/{src}"
            else:
                file = f"{show}/{origin.get('configuredIn', 'kustomization.yaml')}"
                gen = (origin.get("configuredBy") or {}).get("kind")
                if gen:
                    file += f" ({gen})"
            docs.append(Doc(body, file))
        out[show] = docs
    return out


# ---------------------------------------------------------------- 3

def check_core(doc, problems, body=None, prefix="", note=""):
    import kubernetes_validate
    body = body if body is not None else doc.body
    try:
        kubernetes_validate.validate(body, K8S_VERSION, strict=True)
    except kubernetes_validate.utils.ValidationError as e:
        problems.append(Problem(doc.file, doc.id, prefix + dotted(e.path), e.message + note,
                                f"kubernetes-validate, Kubernetes {K8S_VERSION} strict"))
    except kubernetes_validate.utils.SchemaNotFoundError as e:
        problems.append(Problem(doc.file, doc.id, "", "no schema to validate it: " + e.message, "kubernetes-validate"))


def pod_of(ksvc):
    """The revision template of a Knative Service as a core Pod (probes get
    the port Knative defaults them to)."""
    tpl = ksvc.get("spec", {}).get("template", {})
    spec = copy.deepcopy(tpl.get("spec", {}))
    for f in KNATIVE_POD_FIELDS:
        spec.pop(f, None)
    for c in spec.get("containers", []):
        port = (c.get("ports") or [{}])[0].get("containerPort", 8080)
        for p in ("readinessProbe", "livenessProbe", "startupProbe"):
            for action in ("httpGet", "tcpSocket", "grpc"):
                a = (c.get(p) or {}).get(action)
                if isinstance(a, dict) and "port" not in a:
                    a["port"] = port
    meta = copy.deepcopy(tpl.get("metadata") or {})
    meta.setdefault("name", ksvc.get("metadata", {}).get("name", "x"))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


# ---------------------------------------------------------------- 4a

_crd_schemas = {}


@functools.lru_cache(maxsize=None)
def knative_models():
    warnings.simplefilter("ignore")  # cloudcoil's field-shadowing warnings
    from cloudcoil.models.knative_serving.serving import v1 as serving
    from cloudcoil.models.knative_eventing.eventing import v1 as eventing
    from cloudcoil.models.knative_eventing.sources import v1 as sources
    from cloudcoil.models.knative_eventing.messaging import v1 as messaging
    from cloudcoil.models.knative_eventing.flows import v1 as flows
    models = {}
    for api, mod in (("serving.knative.dev/v1", serving), ("eventing.knative.dev/v1", eventing),
                     ("sources.knative.dev/v1", sources), ("messaging.knative.dev/v1", messaging),
                     ("flows.knative.dev/v1", flows)):
        for kind in dir(mod):
            cls = getattr(mod, kind)
            fields = getattr(cls, "model_fields", {})
            if "api_version" in fields and "kind" in fields and fields["kind"].default == kind \
                    and fields["api_version"].default == api:
                models[(api, kind)] = cls
    return models


def strict(node):
    """The CRD schema as pydantic exported it, made strict: no null, and an
    object with declared properties takes no others (objects the CRD leaves
    open, such as a filter's attribute map, stay open). That is what a cluster
    enforces: kubectl's (default, strict) field validation rejects a field a
    CRD does not declare, and where Eventing's CRDs declare properties but
    also keep unknown fields (a Trigger's spec and delivery, a Broker's
    delivery), Eventing's admission webhooks decode with unknown fields
    disallowed. The exception, a revision template's metadata (kept by
    Serving's CRD, with no such webhook), is handled in check_knative_crd."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: strict(v) for k, v in node.items() if k not in ("default", "title", "description")}
    if "anyOf" in node:
        alts = [a for a in node["anyOf"] if a != {"type": "null"}]
        del node["anyOf"]
        if len(alts) == 1:
            node.update(alts[0])
        else:
            node["anyOf"] = alts
    if "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node


def crd_validator(api, kind):
    key = (api, kind)
    if key not in _crd_schemas:
        models = knative_models()
        if key not in models:
            _crd_schemas[key] = None
        else:
            schema = strict(models[key].model_json_schema(by_alias=True))
            _crd_schemas[key] = jsonschema.Draft202012Validator(schema)
    return _crd_schemas[key]


def check_knative_crd(doc, problems):
    tool = "Knative CRD schema (cloudcoil-models-knative), strict"
    v = crd_validator(doc.api, doc.kind)
    if v is None:
        problems.append(Problem(doc.file, doc.id, "apiVersion", f"no Knative CRD schema for {doc.api} {doc.kind}", tool))
        return
    body = doc.body
    if doc.kind == "Service" and doc.api == "serving.knative.dev/v1":
        # The CRD declares five fields of the revision template's metadata
        # but keeps the others (x-kubernetes-preserve-unknown-fields), which
        # the export lost: they are checked as a Pod's ObjectMeta instead.
        body = copy.deepcopy(body)
        meta = (body.get("spec") or {}).get("template", {}).get("metadata")
        if isinstance(meta, dict):
            for k in list(meta):
                if k not in ("annotations", "finalizers", "labels", "name", "namespace"):
                    del meta[k]
    for e in sorted(v.iter_errors(body), key=lambda e: list(map(str, e.path))):
        if e.context:
            e = jsonschema.exceptions.best_match(e.context)
        problems.append(Problem(doc.file, doc.id, dotted(e.absolute_path), e.message, tool))


# ---------------------------------------------------------------- 4b

def check_knative_go(docs, problems):
    tool = "@kubernetes-models/knative (Knative Go API types)"
    node_modules = os.environ.get("KEELSON_VALIDATE_NODE_MODULES")
    if not node_modules:
        problems.append(Problem("-", "-", "", "KEELSON_VALIDATE_NODE_MODULES is not set (run ./validate)", tool))
        return
    items = [{"i": i, "apiVersion": d.api, "kind": d.kind, "body": d.body} for i, d in enumerate(docs)]
    r = subprocess.run(["node", os.path.join(HERE, "knative-models.mjs"), node_modules],
                       input=json.dumps(items), capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(Problem("-", "-", "", "the node validator failed: " + r.stderr.strip(), tool))
        return
    for res in json.loads(r.stdout):
        d = docs[res["i"]]
        for e in res["errors"]:
            field = ".".join(p for p in e["path"].split("/") if p)
            field = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", field)
            if go_types_false_positive(d, field, e["message"]):
                continue
            problems.append(Problem(d.file, d.id, field, e["message"], tool))


def go_types_false_positive(doc, field, message):
    """Where the Go types are stricter than Knative's CRD and webhook: a
    resource's `status` (Go: not omitempty; set by the controller) and the
    port of an HTTP probe (core's HTTPGetAction requires it; Knative defaults
    it to the container port, and its docs leave it out)."""
    message = message.replace("'", "")
    if field == "" and message == "must have required property status":
        return True
    return (doc.kind == "Service" and message == "must have required property port"
            and re.fullmatch(r"spec\.template\.spec\.containers\[\d+\]\.(readiness|liveness|startup)Probe\.httpGet", field))


# ---------------------------------------------------------------- 5

def nats_match(pattern, subject):
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


def samples(pattern):
    """Concrete event types a pattern takes."""
    out = [""]
    for tok in pattern.split("."):
        if tok == "*":
            choices = ["dev", "delivery", "get-sli"]
        elif tok == ">":
            choices = ["deployment", "dev.delivery.triggered", "project.create.finished"]
        else:
            choices = [tok]
        out = [(o + "." if o else "") + c for o in out for c in choices]
    return out


class Unsupported(Exception):
    pass


def filter_matches(f, event):
    """One SubscriptionsAPIFilter (Knative Eventing's `filters` items)."""
    dialects = [k for k in f if f[k] is not None]
    if len(dialects) != 1:
        raise ValueError(f"a filter needs exactly one dialect, not {dialects}")
    d = dialects[0]
    v = f[d]
    if d in ("exact", "prefix", "suffix"):
        op = {"exact": lambda a, b: a == b, "prefix": str.startswith, "suffix": str.endswith}[d]
        return all(k in event and op(event[k], val) for k, val in v.items())
    if d == "all":
        return all(filter_matches(x, event) for x in v)
    if d == "any":
        return any(filter_matches(x, event) for x in v)
    if d == "not":
        return not filter_matches(v, event)
    raise Unsupported(f"cannot simulate the {d} dialect")


def trigger_matches(spec, event):
    if spec.get("filters"):
        return all(filter_matches(f, event) for f in spec["filters"])
    attrs = (spec.get("filter") or {}).get("attributes") or {}
    return all(v == "" or event.get(k) == v for k, v in attrs.items())


def rust_subscriptions():
    """The patterns in functions/<fn>/src/lib.rs, where they can be read."""
    out = {}
    for fn in SUBSCRIPTIONS:
        path = os.path.join(REPO, "functions", fn, "src", "lib.rs")
        try:
            src = open(path).read()
        except OSError:
            continue
        m = re.search(r"fn subscription\(\)[^{]*\{\s*Subscription::new\(\s*CONSUMER\s*,\s*&\[(.*?)\]", src, re.S)
        if m:
            out[fn] = re.findall(r'"([^"]*)"', m.group(1))
    return out


def env_ref(env):
    vf = env.get("valueFrom") or {}
    if "secretKeyRef" in vf:
        r = vf["secretKeyRef"]
        return ("secret", r.get("name"), r.get("key"))
    if "configMapKeyRef" in vf:
        r = vf["configMapKeyRef"]
        return ("configmap", r.get("name"), r.get("key"))
    return None


def check_semantics(docs, problems):
    tool = "policy"

    def bad(doc, field, msg):
        problems.append(Problem(doc.file, doc.id, field, msg, tool))

    by = {}
    for d in docs:
        by.setdefault((d.kind, d.api.split("/")[0]), {})[d.name] = d
    ksvcs = by.get(("Service", "serving.knative.dev"), {})
    if not ksvcs:
        return  # a kustomization without Keelson's functions (postgres-dev)
    secrets = by.get(("Secret", "v1"), {})
    configmaps = by.get(("ConfigMap", "v1"), {})
    brokers = by.get(("Broker", "eventing.knative.dev"), {})

    def data_keys(obj):
        b = obj.body
        return set((b.get("data") or {}).keys()) | set((b.get("stringData") or {}).keys())

    def check_ref(doc, field, ref):
        if ref.get("apiVersion") != "serving.knative.dev/v1" or ref.get("kind") != "Service":
            bad(doc, field, f"expected a reference to a Knative Service, got {ref.get('apiVersion')} {ref.get('kind')}")
        elif ref.get("name") not in ksvcs:
            bad(doc, field + ".name", f"no Knative Service {ref.get('name')!r} in the kustomization")

    def check_delivery(doc, field, delivery):
        for k, v in DELIVERY.items():
            if (delivery or {}).get(k) != v:
                bad(doc, f"{field}.{k}", f"must be {v!r}, is {(delivery or {}).get(k)!r}")
        ref = ((delivery or {}).get("deadLetterSink") or {}).get("ref") or {}
        check_ref(doc, f"{field}.deadLetterSink.ref", ref)
        if ref.get("name") != DEAD_LETTERS:
            bad(doc, f"{field}.deadLetterSink.ref.name", f"must be {DEAD_LETTERS}")

    # Services
    for name, (binary, min_scale, publishes, extra) in SERVICES.items():
        if name not in ksvcs:
            problems.append(Problem("-", f"Service/{name}", "", "missing from the kustomization", tool))
    for name, doc in ksvcs.items():
        if name not in SERVICES:
            bad(doc, "metadata.name", "unknown Knative Service (add it to SERVICES in check/validate.py)")
            continue
        binary, min_scale, publishes, extra = SERVICES[name]
        b = doc.body
        labels = b.get("metadata", {}).get("labels") or {}
        if (labels.get(SINK_LABEL[0]) == SINK_LABEL[1]) != publishes:
            bad(doc, f"metadata.labels.{SINK_LABEL[0]}",
                f"{'needs' if publishes else 'must not have'} {SINK_LABEL[0]}={SINK_LABEL[1]} (K_SINK from the SinkBinding)")
        tpl = b.get("spec", {}).get("template", {})
        ann = (tpl.get("metadata") or {}).get("annotations") or {}
        if ann.get("autoscaling.knative.dev/min-scale") != min_scale:
            bad(doc, "spec.template.metadata.annotations.autoscaling.knative.dev/min-scale",
                f"must be {min_scale!r}, is {ann.get('autoscaling.knative.dev/min-scale')!r}")
        spec = tpl.get("spec") or {}
        cc, to = spec.get("containerConcurrency"), spec.get("timeoutSeconds")
        if not isinstance(cc, int) or not 1 <= cc <= 1000:
            bad(doc, "spec.template.spec.containerConcurrency", f"must be 1..1000, is {cc!r}")
        if not isinstance(to, int) or not 1 <= to <= 600:
            bad(doc, "spec.template.spec.timeoutSeconds", f"must be 1..600 (Knative's default maximum), is {to!r}")
        cs = spec.get("containers") or []
        if len(cs) != 1:
            bad(doc, "spec.template.spec.containers", "must hold exactly one container")
            continue
        c, f = cs[0], "spec.template.spec.containers[0]"
        if not str(c.get("image", "")).startswith("ghcr.io/keelson/keelson"):
            bad(doc, f + ".image", f"must be the keelson image, is {c.get('image')!r}")
        if (c.get("command") or [None])[0] != binary:
            bad(doc, f + ".command", f"must run {binary}, is {c.get('command')!r}")
        if [p.get("containerPort") for p in c.get("ports") or []] != [8080]:
            bad(doc, f + ".ports", "must be one port, containerPort 8080")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
            if got != path:
                bad(doc, f"{f}.{probe}.httpGet.path", f"must be {path}, is {got!r}")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(part) or {}):
                    bad(doc, f"{f}.resources.{part}.{r}", "must be set")
        sc = c.get("securityContext") or {}
        for k, v in (("runAsNonRoot", True), ("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)):
            if sc.get(k) is not v:
                bad(doc, f"{f}.securityContext.{k}", f"must be {str(v).lower()}")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            bad(doc, f"{f}.securityContext.capabilities.drop", "must drop ALL")
        if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            bad(doc, f"{f}.securityContext.seccompProfile.type", "must be RuntimeDefault")
        envs = {e.get("name"): e for e in c.get("env") or []}
        if "K_SINK" in envs:
            bad(doc, f + ".env", "K_SINK comes from the SinkBinding: do not set it")
        want = {"KEELSON_DATABASE_URL": DB, **extra}
        for ename, ref in want.items():
            if ename not in envs or env_ref(envs[ename]) != ref:
                bad(doc, f"{f}.env.{ename}", f"must come from {ref[0]} {ref[1]} key {ref[2]}")
        for i, e in enumerate(c.get("env") or []):
            ref = env_ref(e)
            if not ref:
                continue
            pool = secrets if ref[0] == "secret" else configmaps
            if ref[1] not in pool:
                bad(doc, f"{f}.env[{i}].valueFrom", f"no {ref[0]} {ref[1]!r} in the kustomization")
            elif ref[2] not in data_keys(pool[ref[1]]):
                bad(doc, f"{f}.env[{i}].valueFrom", f"{ref[0]} {ref[1]!r} has no key {ref[2]!r}")

    # Broker
    if BROKER not in brokers:
        problems.append(Problem("-", f"Broker/{BROKER}", "", "missing from the kustomization", tool))
    else:
        check_delivery(brokers[BROKER], "spec.delivery", brokers[BROKER].body.get("spec", {}).get("delivery"))

    # SinkBinding: binds exactly the publishing services, to the broker
    bindings = list(by.get(("SinkBinding", "sources.knative.dev"), {}).values())
    bound = set()
    for sb in bindings:
        spec = sb.body.get("spec") or {}
        sink = (spec.get("sink") or {}).get("ref") or {}
        if sink.get("kind") != "Broker" or sink.get("name") not in brokers:
            bad(sb, "spec.sink.ref", f"must name the Broker {BROKER}")
        subj = spec.get("subject") or {}
        if subj.get("apiVersion") != "serving.knative.dev/v1" or subj.get("kind") != "Service":
            bad(sb, "spec.subject", "must select Knative Services")
            continue
        sel = (subj.get("selector") or {}).get("matchLabels") or {}
        for name, d in ksvcs.items():
            labels = d.body.get("metadata", {}).get("labels") or {}
            if (subj.get("name") == name) or (sel and all(labels.get(k) == v for k, v in sel.items())):
                bound.add(name)
    for name, (_, _, publishes, _) in SERVICES.items():
        if name in ksvcs and publishes != (name in bound):
            bad(ksvcs[name], "metadata.labels",
                "no SinkBinding selects it: it gets no K_SINK" if publishes else "a SinkBinding selects it: it must not publish")

    # Triggers
    triggers = list(by.get(("Trigger", "eventing.knative.dev"), {}).values())
    routes = []
    for t in triggers:
        spec = t.body.get("spec") or {}
        if spec.get("broker") not in brokers:
            bad(t, "spec.broker", f"no Broker {spec.get('broker')!r} in the kustomization")
        ref = (spec.get("subscriber") or {}).get("ref") or {}
        check_ref(t, "spec.subscriber.ref", ref)
        check_delivery(t, "spec.delivery", spec.get("delivery"))
        if ref.get("name") == DEAD_LETTERS:
            bad(t, "spec.subscriber.ref.name", "the dead-letter service takes only dead letters")
        if not spec.get("filters") and not ((spec.get("filter") or {}).get("attributes")):
            bad(t, "spec", "a trigger without a filter takes every event")
        for i, f in enumerate(spec.get("filters") or []):
            try:
                filter_matches(f, {"type": "sh.keptn.event.x"})
            except (ValueError, Unsupported) as e:
                bad(t, f"spec.filters[{i}]", str(e))
        routes.append((t, ref.get("name"), spec))

    # Routing: each subscription's event types reach its function
    parsed = rust_subscriptions()
    every = set()
    for fn, (svc, patterns) in SUBSCRIPTIONS.items():
        if fn in parsed and parsed[fn] != patterns:
            problems.append(Problem(f"functions/{fn}/src/lib.rs", fn, "subscription()",
                                    f"subscribes to {parsed[fn]}, but infra/knative expects {patterns}: "
                                    "update triggers.yaml and SUBSCRIPTIONS in infra/knative/check/validate.py", tool))
        for p in patterns:
            every.update(samples(p))
    over = 0
    for fn, (svc, patterns) in SUBSCRIPTIONS.items():
        subscribed = [s for s in sorted(every) if any(nats_match(p, s) for p in patterns)]
        for etype in subscribed:
            event = {"type": etype, "source": "keelson", "specversion": "1.0"}
            try:
                to = [s for (t, s, spec) in routes if trigger_matches(spec, event)]
            except (ValueError, Unsupported):
                continue  # reported above
            if svc not in to:
                problems.append(Problem("infra/knative/triggers.yaml", "-", "",
                                        f"no trigger delivers {etype} to {svc} (subscription {fn}: {patterns})", tool))
            if to.count(svc) > 1:
                problems.append(Problem("infra/knative/triggers.yaml", "-", "",
                                        f"{etype} reaches {svc} through {to.count(svc)} triggers (duplicates)", tool))
        for etype in sorted(every):
            if not any(nats_match(p, etype) for p in patterns):
                event = {"type": etype}
                try:
                    if any(s == svc and trigger_matches(spec, event) for (t, s, spec) in routes):
                        over += 1
                except (ValueError, Unsupported):
                    pass
    return over


# ---------------------------------------------------------------- run

def run_checks(root, shown, kubectl):
    """All checks of the tree at root (shown as `shown`); returns (problems, summary)."""
    problems = []
    check_listed(root, shown, problems)
    with tempfile.TemporaryDirectory(prefix="keelson-knative-") as tmp:
        scratch = os.path.join(tmp, "knative")
        shutil.copytree(root, scratch, ignore=shutil.ignore_patterns("check", ".*"))
        rendered = render(scratch, shown, kubectl, problems)
    summary = {"core": [], "pod": [], "crd": [], "go": [], "over": 0}
    all_knative = []
    for show, docs in rendered.items():
        for d in docs:
            if d.knative:
                check_knative_crd(d, problems)
                summary["crd"].append(d.id)
                all_knative.append(d)
                if d.kind == "Service":
                    check_core(d, problems, body=pod_of(d.body), prefix="spec.template.",
                               note=" (the revision template, checked as a core Pod)")
                    summary["pod"].append(d.id)
            else:
                check_core(d, problems)
                summary["core"].append(d.id)
        over = check_semantics(docs, problems)
        if over:
            summary["over"] += over
    check_knative_go(all_knative, problems)
    summary["go"] = [d.id for d in all_knative]
    return problems, summary


# (file under infra/knative, text, replacement, what must be reported:
#  (file, text in field or message, tool prefix))
BREAKAGES = [
    ("service-api.yaml", "containerConcurrency:", "containerConcurency:",
     ("service-api.yaml", "containerConcurency", "Knative CRD schema")),
    ("service-api.yaml", "containerConcurrency:", "containerConcurency:",
     ("service-api.yaml", "containerConcurency", "kubernetes-validate")),
    ("triggers.yaml", "retry: 5", "retry: five",
     ("triggers.yaml", "retry", "Knative CRD schema")),
    ("triggers.yaml", "retry: 5", "retry: five",
     ("triggers.yaml", "retry", "@kubernetes-models/knative")),
    ("broker.yaml", "deadLetterSink:", "deadLetterSinc:",
     ("broker.yaml", "deadLetterSinc", "Knative CRD schema")),
    ("sinkbinding.yaml", "matchLabels:", "matchLabel:",
     ("sinkbinding.yaml", "matchLabel", "Knative CRD schema")),
    ("triggers.yaml", "    - prefix:\n        type: sh.keptn.event.\n    - suffix:\n        type: .started",
     "    - prefixes:\n        type: sh.keptn.event.\n    - suffix:\n        type: .started",
     ("triggers.yaml", "prefixes", "Knative CRD schema")),
    ("service-shipyard.yaml", "            periodSeconds: 5", "            periodSeconds: often",
     ("service-shipyard.yaml", "periodSeconds", "@kubernetes-models/knative")),
    ("service-approval.yaml", "      annotations:\n", "      annotationz:\n",
     ("service-approval.yaml", "annotationz", "kubernetes-validate")),
    ("service-datastore.yaml", "            readOnlyRootFilesystem: true", "            readOnlyRootFileSystem: true",
     ("service-datastore.yaml", "readOnlyRootFileSystem", "kubernetes-validate")),
    ("config.yaml", "\ndata:", "\ndatas:",
     ("config.yaml", "datas", "kubernetes-validate")),
    ("namespace.yaml", "  labels:", "  label:",
     ("namespace.yaml", "label", "kubernetes-validate")),
    ("postgres-dev/postgres.yaml", "containerPort: 5432", "containerPort: [5432]",
     ("postgres-dev/postgres.yaml", "containerPort", "kubernetes-validate")),
    ("service-shipyard.yaml", 'min-scale: "1"', 'min-scale: "0"',
     ("service-shipyard.yaml", "min-scale", "policy")),
    ("triggers.yaml", "name: keelson-lighthouse", "name: keelson-lighthous",
     ("triggers.yaml", "keelson-lighthous", "policy")),
    ("triggers.yaml", "type: sh.keptn.event.approval.triggered", "type: sh.keptn.event.approval.trigered",
     ("triggers.yaml", "sh.keptn.event.approval.triggered", "policy")),
    ("kustomization.yaml", "  - service-prometheus.yaml\n", "",
     ("service-prometheus.yaml", "not listed", "completeness")),
    ("kustomization.yaml", "  - triggers.yaml", "  - trigger.yaml",
     ("kustomization.yaml", "kustomize failed", "kustomize")),
]


def self_test(kubectl):
    """Breaks a copy of the manifests in each way above; each must be reported
    (by the named tool, naming the file and the field)."""
    failures = 0
    groups = {}
    for file, old, new, expect in BREAKAGES:
        groups.setdefault((file, old, new), []).append(expect)
    for (file, old, new), expects in groups.items():
        with tempfile.TemporaryDirectory(prefix="keelson-selftest-") as tmp:
            root = os.path.join(tmp, "knative")
            shutil.copytree(BASE, root, ignore=shutil.ignore_patterns("check", ".*"))
            path = os.path.join(root, file)
            text = open(path).read()
            if old not in text:
                print(f"SELF-TEST BROKEN: {file} no longer contains {old!r}: update BREAKAGES in check/validate.py")
                failures += 1
                continue
            open(path, "w").write(text.replace(old, new, 1))
            problems, _ = run_checks(root, "infra/knative", kubectl)
        for (efile, token, tool) in expects:
            hit = [p for p in problems
                   if p.file.startswith("infra/knative/" + efile) or p.file == efile
                   if token in (p.field + " " + p.message) and p.tool.startswith(tool)]
            label = f"{file}: {old.strip()!r} -> {new.strip()!r}"
            if hit:
                print(f"ok   rejected by {tool}: {label}\n       {hit[0]}")
            else:
                failures += 1
                print(f"FAIL not rejected by {tool}: {label}")
                for p in problems:
                    print(f"       (got) {p}")
    total = len(BREAKAGES)
    print(f"self-test: {total - failures} of {total} broken manifests rejected as expected")
    return failures == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    kubectl = os.environ.get("KEELSON_VALIDATE_KUBECTL", "kubectl")
    start = time.time()
    if args.self_test:
        ok = self_test(kubectl)
        print(f"self-test took {time.time() - start:.1f} s")
        return 0 if ok else 1
    problems, s = run_checks(BASE, "infra/knative", kubectl)
    for p in problems:
        print(p)
    print(f"kustomize rendered: {', '.join(k for k in kustomization_dirs_shown())}")
    print(f"kubernetes-validate (Kubernetes {K8S_VERSION}, strict): {len(s['core'])} core resources: {', '.join(s['core'])}")
    print(f"kubernetes-validate (Kubernetes {K8S_VERSION}, strict): pod specs of {len(s['pod'])} Knative Services")
    print(f"Knative CRD schemas (strict): {len(s['crd'])} resources: {', '.join(s['crd'])}")
    print(f"Knative Go API types: {len(s['go'])} resources")
    print(f"subscriptions read from functions/*/src/lib.rs and compared: {len(rust_subscriptions())} of {len(SUBSCRIPTIONS)}")
    print(f"routing: every subscribed event type reaches its function; "
          f"{s['over']} sample deliveries outside a subscription (ignored by the function with 202)")
    if problems:
        print(f"infra/knative: {len(problems)} problem(s) ({time.time() - start:.1f} s)")
        return 1
    print(f"infra/knative: all checks passed ({time.time() - start:.1f} s)")
    return 0


def kustomization_dirs_shown():
    return ["infra/knative" + ("" if d == BASE else "/" + os.path.relpath(d, BASE)) for d in kustomization_dirs(BASE)]


if __name__ == "__main__":
    sys.exit(main())
