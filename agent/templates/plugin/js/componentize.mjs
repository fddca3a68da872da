// Builds {{name}}.wasm from plugin.js with componentize-js's API.
// Usage: node componentize.mjs MODULES_DIR, where MODULES_DIR/node_modules has componentize-js.
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = resolve(process.argv[2] ?? '.');
const api = join(modules, 'node_modules/@bytecodealliance/componentize-js/src/componentize.js');
const { componentize } = await import(pathToFileURL(api).href);
const { component } = await componentize({
  sourcePath: resolve('plugin.js'),
  witPath: resolve('wit'),
  worldName: 'transform',
  // No console, random numbers, clocks or fetch: each would add WASI imports. Remove one from
  // the list if the plugin needs it.
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile('{{name}}.wasm', component);
