// {{name}}: a kedge transform plugin in JavaScript (`kedge plugin new`). It adds the MQTT topic
// each JSON reading came from as member `subject` (config `field` renames it), drops empty
// readings, and sends readings that are not JSON objects to the dead-letter topic. Change
// `process` to do what you need.
//
// The API: kedge's plugins/API-js.md; the contract: wit/transform.wit.
import { counterAdd } from 'kedge:transform/host@0.2.0';

let field = 'subject';
const decoder = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

// Runs once per instance with the [plugin.config] table as [key, value] pairs; throwing
// { message } refuses the plugin.
export function init(config) {
  field = Object.fromEntries(config).field ?? 'subject';
}

// Returns exactly one verdict per event, in order.
export function process(info, batch) {
  const verdicts = [];
  let empty = 0;
  for (const event of batch) {
    if (event.value.length === 0) {
      empty += 1;
      verdicts.push({ tag: 'drop' });
      continue;
    }
    let reading;
    try {
      reading = JSON.parse(decoder.decode(event.value));
    } catch (e) {
      verdicts.push({ tag: 'fail', val: `invalid JSON: ${e.message}` });
      continue;
    }
    if (reading === null || typeof reading !== 'object' || Array.isArray(reading)) {
      verdicts.push({ tag: 'fail', val: 'the reading is not a JSON object' });
      continue;
    }
    reading[field] = info.subject;
    // Key, headers (the MQTT user properties) and timestamp from the event; the topic left to
    // kedge (undefined), which keeps the one the event is bound for.
    verdicts.push({
      tag: 'replace',
      val: [
        {
          topic: undefined,
          key: event.key,
          value: encoder.encode(JSON.stringify(reading)),
          headers: event.headers,
          timestampMs: event.timestampMs,
        },
      ],
    });
  }
  if (empty > 0) counterAdd('empty', BigInt(empty));
  return verdicts;
}
