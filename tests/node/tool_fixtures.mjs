// tool_fixtures.mjs -- the two function tools the tool-calling suites send (chat completions
// layout: {type, function: {name, description, parameters}}) and the check that a call's
// arguments validate against their schemas. Used by server_tools.mjs and
// server_responses_tools.mjs (which flattens them into the Responses layout).
import { assert, eq } from './server_util.mjs';

export const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The current weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string', maxLength: 12 }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
      required: ['city', 'unit'],
      additionalProperties: false,
    },
  },
};
export const clock = {
  type: 'function',
  function: { name: 'get_time', description: 'The time in a zone', parameters: { type: 'object', properties: { tz: { type: 'integer' } }, required: ['tz'], additionalProperties: false } },
};

// A call's arguments (JSON text) validate against its tool's schema (the two above).
export function checkArgs(name, args) {
  const a = JSON.parse(args);
  if (name === 'get_weather') {
    eq(Object.keys(a).sort(), ['city', 'unit'], `get_weather keys: ${args}`);
    assert(typeof a.city === 'string' && a.city.length <= 12, args);
    assert(['celsius', 'fahrenheit'].includes(a.unit), args);
  } else {
    eq(name, 'get_time');
    eq(Object.keys(a), ['tz'], args);
    assert(Number.isInteger(a.tz), args);
  }
}
