// Validate Kubernetes objects against the schemas the kubernetes-models packages carry:
// Kubernetes itself (kubernetes-models), prometheus-operator and KEDA (@kubernetes-models/*).
//
//   kubectl kustomize deploy/kubernetes | node validate.mjs -
//   node validate.mjs rendered.yaml other.yaml
//
// Two checks per object, both from the packages' generated models:
//   1. schema: the model's .validate() (JSON schema from the OpenAPI spec / CRD: types,
//      required fields, enums, patterns such as Prometheus durations);
//   2. fields: the same object as a TypeScript literal typed with the model's interface, so the
//      compiler's excess-property check rejects unknown or misplaced keys at any depth (the
//      schemas allow extra keys; an API server with strict field validation, kubectl's default,
//      does not).
// An apiVersion/kind without a model is an error, never a pass.
// Prints one JSON report on stdout ({"objects": [...], "errors": N}); exit 1 if any error.

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { parseAllDocuments } from "yaml";

const HERE = dirname(fileURLToPath(import.meta.url));

// API groups whose models live outside the core kubernetes-models package.
const THIRD_PARTY = {
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
  "keda.sh": "@kubernetes-models/keda",
};

function modulePath(apiVersion) {
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  return `${THIRD_PARTY[group] ?? "kubernetes-models"}/${apiVersion}`;
}

function readObjects(paths) {
  const objects = [];
  for (const path of paths) {
    const text = readFileSync(path === "-" ? 0 : path, "utf8");
    for (const doc of parseAllDocuments(text)) {
      if (doc.errors.length > 0) {
        throw new Error(`${path}: YAML: ${doc.errors[0].message}`);
      }
      const value = doc.toJS();
      if (value !== null && value !== undefined) objects.push({ source: path, value });
    }
  }
  return objects;
}

async function schemaErrors(object) {
  const { apiVersion, kind } = object;
  if (typeof apiVersion !== "string" || typeof kind !== "string") {
    return { errors: ["apiVersion and kind must be strings"], model: null };
  }
  const spec = modulePath(apiVersion);
  let models;
  try {
    models = await import(spec);
  } catch {
    return { errors: [`no schema for apiVersion ${apiVersion}`], model: null };
  }
  const Model = models[kind];
  if (typeof Model !== "function") {
    return { errors: [`no schema for ${apiVersion} ${kind}`], model: null };
  }
  const model = { spec: `${spec}/${kind}`, iface: `I${kind}` };
  try {
    new Model(object).validate();
    return { errors: [], model };
  } catch (error) {
    const lines = String(error.message ?? error).split("\n").filter((l) => l.trim());
    return { errors: lines.map((l) => `schema: ${l.trim()}`), model };
  }
}

// All objects in one program: compiling the model types once is what costs time.
function fieldErrors(checked) {
  if (checked.length === 0) return new Map();
  const fileName = join(HERE, "__rendered_objects__.ts");
  const starts = [];
  let source = "";
  checked.forEach(({ index, model }) => {
    source += `import type { ${model.iface} as T${index} } from ${JSON.stringify(model.spec)};\n`;
    starts.push([index, 0]);
  });
  checked.forEach(({ index, value }, n) => {
    starts[n][1] = source.length;
    source += `export const object${index}: T${index} = ${JSON.stringify(value, null, 1)};\n`;
  });
  const options = {
    noEmit: true,
    strict: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const readFile = host.readFile.bind(host);
  const getSourceFile = host.getSourceFile.bind(host);
  host.fileExists = (name) => name === fileName || ts.sys.fileExists(name);
  host.readFile = (name) => (name === fileName ? source : readFile(name));
  host.getSourceFile = (name, version) =>
    name === fileName
      ? ts.createSourceFile(name, source, version, true)
      : getSourceFile(name, version);
  const program = ts.createProgram([fileName], options, host);
  const byIndex = new Map();
  for (const diag of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(diag.messageText, " ");
    let owner = -1;
    if (diag.file?.fileName === fileName && diag.start !== undefined) {
      for (const [index, start] of starts) if (start <= diag.start) owner = index;
    }
    if (owner < 0) throw new Error(`TypeScript: ${message}`);
    const before = source.slice(starts.find(([i]) => i === owner)[1], diag.start);
    const line = before.split("\n").length;
    const text = `fields: ${message} (line ${line} of the object as JSON)`;
    byIndex.set(owner, [...(byIndex.get(owner) ?? []), text]);
  }
  return byIndex;
}

async function main(argv) {
  const paths = argv.length > 0 ? argv : ["-"];
  const objects = readObjects(paths);
  if (objects.length === 0) throw new Error(`no objects in ${paths.join(", ")}`);
  const report = [];
  const checked = [];
  for (const [index, { source, value }] of objects.entries()) {
    const { errors, model } = await schemaErrors(value);
    report.push({
      source,
      apiVersion: value?.apiVersion,
      kind: value?.kind,
      name: value?.metadata?.name,
      errors,
    });
    if (model) checked.push({ index, model, value });
  }
  for (const [index, errors] of fieldErrors(checked)) report[index].errors.push(...errors);
  const count = report.reduce((sum, r) => sum + r.errors.length, 0);
  for (const r of report) {
    for (const e of r.errors) console.error(`${r.source}: ${r.kind}/${r.name}: ${e}`);
  }
  process.stdout.write(JSON.stringify({ objects: report, errors: count }) + "\n");
  return count === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(`validate.mjs: ${error.message ?? error}`);
    process.exit(2);
  },
);
