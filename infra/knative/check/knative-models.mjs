// Validates Knative resources with @kubernetes-models/knative (validators
// generated from Knative's Go API types). Reads a JSON array of
// {i, apiVersion, kind, body} on stdin, prints [{i, errors: [{path, message}]}].
// Usage: node knative-models.mjs <node_modules dir>
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const nodeModules = process.argv[2];
const pkg = join(nodeModules, "@kubernetes-models", "knative");
const items = JSON.parse(readFileSync(0, "utf8"));
const out = [];
for (const item of items) {
  const [group, version] = item.apiVersion.split("/");
  const file = join(pkg, group, version, `${item.kind}.js`);
  if (!existsSync(file)) {
    out.push({ i: item.i, errors: [{ path: "/apiVersion", message: `no model for ${item.apiVersion} ${item.kind}` }] });
    continue;
  }
  const mod = await import(pathToFileURL(file).href);
  const Model = mod[item.kind];
  const errors = [];
  try {
    new Model(item.body).validate();
  } catch (e) {
    // The validate package throws an error whose `errors` are ajv's.
    const list = Array.isArray(e.errors) && e.errors.length ? e.errors : [{ instancePath: "", message: e.message }];
    for (const err of list) {
      errors.push({ path: err.instancePath || "", message: err.message });
    }
  }
  out.push({ i: item.i, errors });
}
process.stdout.write(JSON.stringify(out));
