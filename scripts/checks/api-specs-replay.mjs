// Replays the wire the integration tests recorded (tests/common/wire.rs, RECORD_WIRE_DIR) against
// docs/api/asyncapi.yaml and docs/api/openapi.yaml, so that the documents cannot drift from the
// server. Run by scripts/checks/api-specs.sh:
//
//   node scripts/checks/api-specs-replay.mjs TOOLS_NODE_MODULES SPECS_DIR RECORDS_DIR
//
// WebSocket, server to client: every text frame must be an object whose `type` names a message
// the gateway sends (an operation's message or reply), and must validate against its payload;
// every close code must be in `info.x-close-codes`.
// WebSocket, client to server: the tests also send what the protocol refuses, on purpose. So a
// frame the spec refuses (unknown action, invalid payload) must have been refused by the server
// too (a later validation error on that connection, with its request_id when it had one), and a
// frame the spec accepts must not have been answered `invalid_request` or `unknown_action`.
// HTTP: every exchange must match a path and method of the OpenAPI document and a status it
// lists; a JSON body must validate against that response's schema, required headers must be
// there, and the request body of a successful call must validate against the request's schema.
// Exits 1 listing every mismatch (at most 50), 0 with a summary of what was covered.

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const [toolsModules, specsDir, recordsDir] = process.argv.slice(2);
if (!recordsDir) {
  console.error('usage: api-specs-replay.mjs TOOLS_NODE_MODULES SPECS_DIR RECORDS_DIR');
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(toolsModules), 'noop.js'));
const YAML = require('yaml');
const Ajv2020 = require('ajv/dist/2020').default;
const addFormats = require('ajv-formats').default;

const BASE = 'https://api-specs.invalid/';
const asyncapi = YAML.parse(fs.readFileSync(path.join(specsDir, 'asyncapi.yaml'), 'utf8'));
const openapi = YAML.parse(fs.readFileSync(path.join(specsDir, 'openapi.yaml'), 'utf8'));
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema(asyncapi, `${BASE}asyncapi.yaml`);
ajv.addSchema(openapi, `${BASE}openapi.yaml`);

const validators = new Map();
function validatorAt(document, pointer) {
  const id = `${BASE}${document}${pointer}`;
  if (!validators.has(id)) {
    const validate = ajv.getSchema(id);
    if (!validate) throw new Error(`no schema at ${id}`);
    validators.set(id, validate);
  }
  return validators.get(id);
}

function resolveLocal(document, node) {
  let current = node;
  while (current && current.$ref && current.$ref.startsWith('#/')) {
    current = current.$ref.slice(2).split('/').reduce((at, key) => at[key.replace(/~1/g, '/').replace(/~0/g, '~')], document);
  }
  return current;
}

function describeErrors(validate) {
  return ajv.errorsText(validate.errors, { separator: '; ' }).slice(0, 400);
}

// The AsyncAPI messages by name, split by direction: what the gateway receives and what it sends.
function messagesByName(refs) {
  const byName = new Map();
  for (const ref of refs) {
    const message = resolveLocal(asyncapi, ref);
    byName.set(message.name, message.payload.$ref);
  }
  return byName;
}
const operations = Object.values(asyncapi.operations);
const clientMessages = messagesByName(operations.filter((op) => op.action === 'receive').flatMap((op) => op.messages));
const serverMessages = messagesByName([
  ...operations.filter((op) => op.action === 'send').flatMap((op) => op.messages),
  ...operations.flatMap((op) => (op.reply ? op.reply.messages : [])),
]);
const closeCodes = new Set(asyncapi.info['x-close-codes']);
const VALIDATION_ERRORS = new Set(['invalid_json', 'invalid_request', 'invalid_project_id', 'unknown_action', 'unknown_message_type']);
const SPEC_TOO_LOOSE = new Set(['invalid_request', 'unknown_action']);

const failures = [];
const seen = { sent: new Map(), received: new Map(), closes: new Map(), routes: new Map() };
const count = (map, key) => map.set(key, (map.get(key) || 0) + 1);
const fail = (record, problem) => failures.push(`${record.test}: ${problem}`);
const sameId = (a, b) => JSON.stringify(a) === JSON.stringify(b);

function checkReceived(record) {
  if ('close' in record) {
    count(seen.closes, record.close);
    if (!closeCodes.has(record.close)) fail(record, `close code ${record.close} is not in x-close-codes`);
    return;
  }
  const frame = record.frame;
  const type = frame && typeof frame === 'object' && !Array.isArray(frame) ? frame.type : undefined;
  if (typeof type !== 'string' || !serverMessages.has(type)) {
    fail(record, `received a frame of no documented type: ${JSON.stringify(frame).slice(0, 200)}`);
    return;
  }
  count(seen.received, type);
  const validate = validatorAt('asyncapi.yaml', serverMessages.get(type));
  if (!validate(frame)) fail(record, `received ${type} does not match its schema (${describeErrors(validate)}): ${JSON.stringify(frame).slice(0, 300)}`);
}

// A sent frame against the answers that followed it on its connection.
function checkSent(record, later) {
  const frame = record.frame;
  const isObject = frame && typeof frame === 'object' && !Array.isArray(frame);
  const action = isObject ? frame.action : undefined;
  const hasId = isObject && 'request_id' in frame;
  const answers = later.filter((next) => next.direction === 'received' && next.frame && typeof next.frame === 'object');
  const answer = hasId ? answers.find((next) => sameId(next.frame.request_id, frame.request_id)) : undefined;
  let problem = null;
  if (typeof action !== 'string' || !clientMessages.has(action)) {
    problem = `an action the spec does not know (${JSON.stringify(action)})`;
  } else {
    const validate = validatorAt('asyncapi.yaml', clientMessages.get(action));
    if (!validate(frame)) problem = `not a valid ${action} (${describeErrors(validate)})`;
  }
  if (typeof action === 'string') count(seen.sent, clientMessages.has(action) ? action : `(unknown) ${action}`);
  const refused = (next) => next.frame.type === 'error' && VALIDATION_ERRORS.has(next.frame.code);
  if (problem) {
    const refusedToo = hasId ? answer && refused(answer) : answers.some(refused) || later.some((next) => 'close' in next);
    if (!refusedToo) fail(record, `sent a frame the spec refuses, ${problem}, and the server did not refuse it: ${JSON.stringify(frame).slice(0, 300)}`);
  } else if (
    answer &&
    answer.frame.type === 'error' &&
    SPEC_TOO_LOOSE.has(answer.frame.code) &&
    // A key given twice: JSON's data model (and so JSON Schema) cannot see it; the record holds the
    // object as parsed, with one of the two.
    !String(answer.frame.message).startsWith('Duplicate key')
  ) {
    fail(record, `the spec accepts a frame the server refused with ${answer.frame.code} (${answer.frame.message}): ${JSON.stringify(frame).slice(0, 300)}`);
  }
}

const routes = Object.entries(openapi.paths).map(([template, item]) => ({
  template,
  item,
  pattern: new RegExp(`^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\{[^}]+\}/g, '[^/]+')}$`),
}));

function checkHttp(record) {
  const route = routes.find(({ pattern }) => pattern.test(record.path));
  const method = record.method.toLowerCase();
  if (!route) return fail(record, `${record.method} ${record.path}: no such path in openapi.yaml`);
  const operation = route.item[method];
  if (!operation) return fail(record, `${record.method} ${route.template}: no such operation in openapi.yaml`);
  const status = String(record.status);
  count(seen.routes, `${record.method} ${route.template} ${status}`);
  const responseKey = status in operation.responses ? status : 'default';
  const responseRef = operation.responses[responseKey];
  if (!responseRef) return fail(record, `${record.method} ${route.template} answered ${status}, which openapi.yaml does not list`);
  const response = resolveLocal(openapi, responseRef);
  const responsePointer = responseRef.$ref ? responseRef.$ref.slice(1) : `#/paths/${route.template.replace(/~/g, '~0').replace(/\//g, '~1')}/${method}/responses/${responseKey}`.slice(1);
  const headers = Object.fromEntries(Object.entries(record.headers || {}).map(([name, value]) => [name.toLowerCase(), value]));
  for (const [name, header] of Object.entries(response.headers || {})) {
    if (resolveLocal(openapi, header).required && !(name.toLowerCase() in headers)) {
      fail(record, `${record.method} ${route.template} ${status} lacks the header ${name}`);
    }
  }
  const bodyIsEmpty = record.body === '' || record.body === null;
  if (!response.content) {
    if (!bodyIsEmpty) fail(record, `${record.method} ${route.template} ${status} has a body openapi.yaml does not describe`);
  } else {
    const mediaType = (headers['content-type'] || '').split(';')[0].trim();
    if (!(mediaType in response.content)) {
      fail(record, `${record.method} ${route.template} ${status} is ${mediaType || 'untyped'}, openapi.yaml says ${Object.keys(response.content).join(', ')}`);
    } else if (mediaType === 'application/json') {
      const validate = validatorAt('openapi.yaml', `#${responsePointer}/content/application~1json/schema`);
      if (!validate(record.body)) fail(record, `${record.method} ${route.template} ${status} body does not match (${describeErrors(validate)}): ${JSON.stringify(record.body).slice(0, 300)}`);
    }
  }
  const json = operation.requestBody && operation.requestBody.content['application/json'];
  if (json && status.startsWith('2') && record.request_body !== null && record.request_body !== undefined) {
    const pointer = `#/paths/${route.template.replace(/~/g, '~0').replace(/\//g, '~1')}/${method}/requestBody/content/application~1json/schema`;
    const validate = validatorAt('openapi.yaml', pointer);
    if (!validate(record.request_body)) fail(record, `${record.method} ${route.template} succeeded with a body openapi.yaml refuses (${describeErrors(validate)})`);
  }
}

const files = fs.readdirSync(recordsDir).filter((name) => name.endsWith('.jsonl'));
let records = 0;
for (const name of files) {
  const lines = fs.readFileSync(path.join(recordsDir, name), 'utf8').split('\n').filter(Boolean);
  const parsed = lines.map((line) => JSON.parse(line));
  records += parsed.length;
  const connections = new Map();
  for (const record of parsed) {
    if (record.kind === 'http') checkHttp(record);
    else if (record.kind === 'ws') {
      const key = record.connection ?? '?';
      if (!connections.has(key)) connections.set(key, []);
      connections.get(key).push(record);
    }
  }
  for (const frames of connections.values()) {
    frames.forEach((record, index) => {
      if (record.direction === 'received') checkReceived(record);
      else checkSent(record, frames.slice(index + 1));
    });
  }
}

const listed = (map) => [...map.entries()].sort().map(([key, n]) => `${key} ${n}`).join(', ');
console.log(`replayed ${records} records from ${files.length} test binaries`);
console.log(`  sent: ${listed(seen.sent)}`);
console.log(`  received: ${listed(seen.received)}`);
console.log(`  close codes: ${listed(seen.closes)}`);
console.log(`  HTTP: ${listed(seen.routes)}`);
const unseen = [...serverMessages.keys()].filter((type) => !seen.received.has(type));
if (unseen.length) console.log(`  server frames no recorded test produced: ${unseen.join(', ')}`);
if (records === 0) failures.push('nothing was recorded: is RECORD_WIRE_DIR honoured by tests/common?');
if (failures.length) {
  console.error(`${failures.length} mismatches between the wire and docs/api:`);
  for (const failure of failures.slice(0, 50)) console.error(`  - ${failure}`);
  process.exit(1);
}
console.log('every recorded frame and HTTP exchange matches docs/api');
