// openai_client.mjs -- the official `openai` npm client against `pagellm serve`.
// Run: PAGELLM_BASE_URL=http://127.0.0.1:8000/v1 PAGELLM_API_KEY=... node openai_client.mjs
import OpenAI from 'openai';

const client = new OpenAI({
  baseURL: process.env.PAGELLM_BASE_URL || 'http://127.0.0.1:8000/v1',
  apiKey: process.env.PAGELLM_API_KEY || 'EMPTY', // empty or unset: any string will do without --api-key
});

const [model] = (await client.models.list()).data.map((m) => m.id);

const completion = await client.completions.create({
  model, prompt: 'The capital of France is', max_tokens: 16, temperature: 0,
});
console.log('completion:', JSON.stringify(completion.choices[0].text));

const stream = await client.chat.completions.create({
  model,
  messages: [{ role: 'user', content: 'Say hello in three words.' }],
  max_tokens: 16,
  stream: true,
  stream_options: { include_usage: true },
});
let reply = '';
for await (const chunk of stream) {
  reply += chunk.choices[0]?.delta?.content ?? '';
  if (chunk.usage) console.log('usage:', chunk.usage);
}
console.log('chat:', JSON.stringify(reply));
