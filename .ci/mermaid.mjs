// Parse every ```mermaid block of the given Markdown files with Mermaid itself, the
// renderer GitHub uses, so a diagram that would show as an error on GitHub fails CI.
//
//   NODE_PATH=<dir>/node_modules node .ci/mermaid.mjs README.md docs/*.md
//
// Mermaid needs a DOM even to parse: jsdom provides one.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

// ES modules ignore NODE_PATH; resolve through require, which honours it.
const require = createRequire(import.meta.url);
const load = async (name) => import(require.resolve(name));

const { JSDOM } = await load("jsdom");
const dom = new JSDOM("<!doctype html><html><body></body></html>");
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await load("mermaid");
mermaid.initialize({ startOnLoad: false });

let diagrams = 0;
let problems = 0;
for (const path of process.argv.slice(2)) {
  const lines = readFileSync(path, "utf8").split("\n");
  for (let start = 0; start < lines.length; start++) {
    if (lines[start].trim() !== "```mermaid") continue;
    const end = lines.indexOf("```", start + 1);
    const text = lines.slice(start + 1, end < 0 ? lines.length : end).join("\n");
    diagrams++;
    try {
      await mermaid.parse(text);
    } catch (error) {
      problems++;
      const message = String(error?.message ?? error).split("\n").join("\n    ");
      console.log(`${path}:${start + 1}: diagram does not parse:\n    ${message}`);
    }
    start = end < 0 ? lines.length : end;
  }
}
console.log(`mermaid: ${diagrams} diagram(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
