// server_structured.mjs -- structured output through `pagellm serve` with real clients: the openai
// client's response_format json_schema (streaming and not, and its zod helper), json_object,
// vLLM's guided_* parameters, and LangChain's ChatOpenAI.withStructuredOutput(zodSchema). The
// served model has random weights, the hardest case for a constraint: only the grammar keeps
// its sampled output valid, so every output is parsed and checked against its schema here.
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { ChatOpenAI } from '@langchain/openai';
import { z } from 'zod';
import { test, run, eq, assert, http, auth, MODEL, BASE_URL, API_KEY } from './server_util.mjs';

const client = new OpenAI({ baseURL: `${BASE_URL}/v1`, apiKey: API_KEY, maxRetries: 0 });

// A JSON Schema check for the keywords these tests use (written here, not a library's).
function validate(schema, v, path = '$') {
  const fail = (why) => { throw new Error(`${path}: ${why} (value ${JSON.stringify(v)})`); };
  if ('const' in schema) { if (JSON.stringify(schema.const) !== JSON.stringify(v)) fail('const'); return; }
  if (schema.enum) { if (!schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(v))) fail('enum'); return; }
  if (schema.anyOf) {
    for (const s of schema.anyOf) { try { validate(s, v, path); return; } catch { /* next */ } }
    fail('anyOf');
  }
  const types = Array.isArray(schema.type) ? schema.type : schema.type ? [schema.type] : [];
  const typeOf = (x) => x === null ? 'null' : Array.isArray(x) ? 'array'
    : Number.isInteger(x) ? 'integer' : typeof x;
  if (types.length && !types.some((t) => t === typeOf(v) || (t === 'number' && typeof v === 'number'))) fail(`type ${types}`);
  if (typeof v === 'string') {
    const n = [...v].length;
    if (schema.maxLength !== undefined && n > schema.maxLength) fail('maxLength');
    if (schema.minLength !== undefined && n < schema.minLength) fail('minLength');
    if (schema.pattern && !new RegExp(schema.pattern).test(v)) fail('pattern');
    if (schema.format === 'date' && !/^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/.test(v)) fail('format');
  }
  if (typeof v === 'number') {
    if (schema.minimum !== undefined && v < schema.minimum) fail('minimum');
    if (schema.maximum !== undefined && v > schema.maximum) fail('maximum');
  }
  if (Array.isArray(v)) {
    if (schema.minItems !== undefined && v.length < schema.minItems) fail('minItems');
    if (schema.maxItems !== undefined && v.length > schema.maxItems) fail('maxItems');
    v.forEach((x, i) => schema.items && validate(schema.items, x, `${path}[${i}]`));
  }
  if (typeOf(v) === 'object') {
    const props = schema.properties ?? {};
    for (const k of schema.required ?? []) if (!(k in v)) fail(`required ${k}`);
    for (const [k, x] of Object.entries(v)) {
      if (props[k]) validate(props[k], x, `${path}.${k}`);
      else if (schema.additionalProperties === false || schema.additionalProperties === undefined) fail(`extra key ${k}`);
    }
  }
}

const person = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 10 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    born: { type: 'string', format: 'date' },
    role: { enum: ['admin', 'user', 'guest'] },
    tags: { type: 'array', items: { type: 'string', maxLength: 5 }, maxItems: 3 },
    boss: { anyOf: [{ type: 'null' }, { type: 'object', properties: { id: { type: 'integer' } }, required: ['id'], additionalProperties: false }] },
  },
  required: ['name', 'age', 'born', 'role', 'tags', 'boss'],
  additionalProperties: false,
};
const messages = [{ role: 'user', content: 'Describe a person as JSON.' }];
const rf = { type: 'json_schema', json_schema: { name: 'person', strict: true, schema: person } };

test('response_format json_schema: sampled outputs parse and validate (8 seeds)', async () => {
  for (let seed = 1; seed <= 8; seed++) {
    const r = await client.chat.completions.create({ model: MODEL, messages, response_format: rf, temperature: 1, seed, max_tokens: 400 });
    const c = r.choices[0];
    eq(c.finish_reason, 'stop', `seed ${seed}: ${c.message.content}`);
    validate(person, JSON.parse(c.message.content));
  }
});

test('response_format json_schema streamed equals the same request unstreamed', async () => {
  const body = { model: MODEL, messages, response_format: rf, temperature: 1, seed: 42, max_tokens: 400 };
  const full = await client.chat.completions.create(body);
  const stream = await client.chat.completions.create({ ...body, stream: true });
  let text = '', finish = null, n = 0;
  for await (const chunk of stream) {
    const ch = chunk.choices[0];
    if (!ch) continue;
    text += ch.delta?.content ?? '';
    finish = ch.finish_reason ?? finish;
    n++;
  }
  assert(n > 2, `only ${n} chunks`);
  eq(text, full.choices[0].message.content);
  eq(finish, 'stop');
  validate(person, JSON.parse(text));
});

test('openai zodResponseFormat with chat.completions.parse gives the parsed object', async () => {
  const Weather = z.object({
    city: z.string().max(12),
    celsius: z.number().int().min(-50).max(50),
    sky: z.enum(['sunny', 'cloudy', 'rain']),
    alerts: z.array(z.string().max(6)).max(2),
  });
  for (let seed = 1; seed <= 3; seed++) {
    const r = await client.chat.completions.parse({
      model: MODEL, messages: [{ role: 'user', content: 'Weather?' }], temperature: 1, seed, max_tokens: 300,
      response_format: zodResponseFormat(Weather, 'weather'),
    });
    const parsed = r.choices[0].message.parsed;
    assert(parsed && Weather.safeParse(parsed).success, JSON.stringify(r.choices[0].message));
  }
});

test('response_format json_object: the output is a JSON object', async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages, response_format: { type: 'json_object' }, temperature: 0.7, seed: 3, max_tokens: 500 });
  const c = r.choices[0];
  if (c.finish_reason === 'stop') {
    const v = JSON.parse(c.message.content);
    assert(v && typeof v === 'object' && !Array.isArray(v), c.message.content);
  } else {
    assert(c.message.content.startsWith('{'), c.message.content);
  }
});

test('vLLM guided_choice, guided_regex, guided_json (chat and completions), structured_outputs', async () => {
  const choices = ['positive', 'negative', 'neutral'];
  for (let seed = 1; seed <= 4; seed++) {
    const r = await client.chat.completions.create({ model: MODEL, messages, guided_choice: choices, temperature: 1, seed, max_tokens: 20 });
    assert(choices.includes(r.choices[0].message.content), r.choices[0].message.content);
  }
  const re = '[A-Z]{2}-[0-9]{3}';
  const r2 = await client.completions.create({ model: MODEL, prompt: 'Code:', guided_regex: re, temperature: 1, seed: 9, max_tokens: 20 });
  assert(new RegExp(`^${re}$`).test(r2.choices[0].text), r2.choices[0].text);
  const r3 = await client.completions.create({ model: MODEL, prompt: 'JSON:', guided_json: person, temperature: 1, seed: 5, max_tokens: 400 });
  validate(person, JSON.parse(r3.choices[0].text));
  const r4 = await http('POST', '/v1/chat/completions', {
    model: MODEL, messages, temperature: 1, seed: 6, max_tokens: 20,
    structured_outputs: { choice: ['yes', 'no'] },
  }, auth);
  eq(r4.status, 200, r4.text);
  assert(['yes', 'no'].includes(r4.json.choices[0].message.content), r4.text);
});

test('max_tokens cutting a constrained output gives finish_reason length', async () => {
  const r = await client.chat.completions.create({ model: MODEL, messages, response_format: rf, temperature: 1, seed: 1, max_tokens: 3 });
  eq(r.choices[0].finish_reason, 'length');
  assert(r.choices[0].message.content.startsWith('{'), r.choices[0].message.content);
});

test('a schema keyword the compiler cannot express is a 400 naming it', async () => {
  const bad = { type: 'object', properties: { n: { type: 'number', multipleOf: 5 } } };
  const r = await http('POST', '/v1/chat/completions', { model: MODEL, messages, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: bad } } }, auth);
  eq(r.status, 400, r.text);
  assert(r.json.error.message.includes('multipleOf') && r.json.error.param === 'response_format', r.text);
  const g = await http('POST', '/v1/completions', { model: MODEL, prompt: 'x', guided_grammar: 'root ::= item\n' }, auth);
  eq(g.status, 400, g.text);
  assert(g.json.error.message.includes("'item'"), g.text);
});

test('LangChain ChatOpenAI.withStructuredOutput(zodSchema) returns objects the schema accepts', async () => {
  const Movie = z.object({
    title: z.string().max(15).describe('the title'),
    year: z.number().int().min(1900).max(2030),
    genres: z.array(z.enum(['drama', 'comedy', 'horror'])).max(2),
    sequel: z.boolean(),
  });
  for (let seed = 1; seed <= 3; seed++) {
    const chat = new ChatOpenAI({ model: MODEL, apiKey: API_KEY, configuration: { baseURL: `${BASE_URL}/v1` },
                                  temperature: 1, maxTokens: 300, maxRetries: 0, modelKwargs: { seed } });
    const structured = chat.withStructuredOutput(Movie, { name: 'movie', method: 'jsonSchema' });
    const movie = await structured.invoke([['human', 'Recommend a movie.']]);
    const check = Movie.safeParse(movie);
    assert(check.success, `${JSON.stringify(movie)}: ${JSON.stringify(check.error?.issues)}`);
  }
  // includeRaw: the raw message is the JSON text of the parsed object
  const chat = new ChatOpenAI({ model: MODEL, apiKey: API_KEY, configuration: { baseURL: `${BASE_URL}/v1` },
                                temperature: 1, maxTokens: 300, maxRetries: 0, modelKwargs: { seed: 11 } });
  const both = await chat.withStructuredOutput(Movie, { name: 'movie', method: 'jsonSchema', includeRaw: true })
    .invoke([['human', 'Another one.']]);
  eq(JSON.parse(both.raw.content), both.parsed);
});

await run();
