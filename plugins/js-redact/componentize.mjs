// Builds a component from redact.js with componentize-js's API (the `jco componentize` CLI
// fails on Node 20). Usage: node componentize.mjs PEERS_JS_DIR WIT_DIR OUT.wasm
import { writeFile } from 'node:fs/promises';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const [peers, wit, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node componentize.mjs PEERS_JS_DIR WIT_DIR OUT.wasm');
  process.exit(2);
}
const api = join(resolve(peers), 'node_modules/@bytecodealliance/componentize-js/src/componentize.js');
const { componentize } = await import(pathToFileURL(api).href);

const { component } = await componentize({
  sourcePath: join(dirname(fileURLToPath(import.meta.url)), 'redact.js'),
  witPath: resolve(wit),
  worldName: 'transform',
  // No console, Math.random/crypto, clocks or fetch: the plugin needs none of them, and each
  // would add WASI imports.
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
