// js-redact: replaces the values of configured fields in JSON payloads by "***".
//
// Config: `fields`, a comma-separated list of field names, e.g. "password,ssn" (required).
// Fields are matched by exact name at any depth (objects inside objects and arrays).
//
// Per event:
//   payload not UTF-8 JSON          -> fail("invalid JSON: ...")
//   nothing to redact               -> keep (a value already "***" does not count)
//   something redacted              -> replace with the redacted document as compact JSON
//                                      (JSON.stringify); key and headers are copied from
//                                      the input, topic and timestamp left to the host.
import { log, counterAdd } from 'kedge:transform/host@0.2.0';

let fields = new Set();
const MASK = '***';
const decoder = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

export function init(config) {
  let raw;
  for (const [name, value] of config) {
    if (name === 'fields') {
      raw = value;
    } else {
      throw { message: `unknown config key '${name}' (expected fields)` };
    }
  }
  if (raw === undefined) {
    throw { message: "config key 'fields' is required" };
  }
  fields = new Set(raw.split(',').map((f) => f.trim()).filter((f) => f.length > 0));
  if (fields.size === 0) {
    throw { message: "config 'fields' names no field" };
  }
  log('info', `js-redact: redacting ${[...fields].join(', ')}`);
}

// Redacts in place; returns how many values it replaced.
function redact(node) {
  let n = 0;
  if (Array.isArray(node)) {
    for (const item of node) n += redact(item);
  } else if (node !== null && typeof node === 'object') {
    for (const k of Object.keys(node)) {
      if (fields.has(k)) {
        if (node[k] !== MASK) {
          node[k] = MASK;
          n += 1;
        }
      } else {
        n += redact(node[k]);
      }
    }
  }
  return n;
}

export function process(info, batch) {
  const verdicts = [];
  let redacted = 0;
  let invalid = 0;
  for (const event of batch) {
    let doc;
    try {
      doc = JSON.parse(decoder.decode(event.value));
    } catch (e) {
      verdicts.push({ tag: 'fail', val: `invalid JSON: ${e.message}` });
      invalid += 1;
      continue;
    }
    const n = redact(doc);
    if (n === 0) {
      verdicts.push({ tag: 'keep' });
      continue;
    }
    redacted += n;
    verdicts.push({
      tag: 'replace',
      val: [
        {
          topic: undefined,
          key: event.key,
          value: encoder.encode(JSON.stringify(doc)),
          headers: event.headers,
          timestampMs: undefined,
        },
      ],
    });
  }
  if (redacted > 0) counterAdd('redacted_fields', BigInt(redacted));
  if (invalid > 0) counterAdd('invalid', BigInt(invalid));
  return verdicts;
}
