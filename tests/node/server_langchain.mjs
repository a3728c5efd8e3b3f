// server_langchain.mjs -- LangChain JS (@langchain/openai ChatOpenAI and OpenAI) pointed at
// `pagellm serve`, used as a RAG pipeline uses it: a prompt built from retrieved documents.
// Reference: the same request sent as plain HTTP to the server, and `pagellm generate` for
// the completions model, so LangChain must only change the transport, not the result.
import { ChatOpenAI, OpenAI } from '@langchain/openai';
import { ChatPromptTemplate, PromptTemplate } from '@langchain/core/prompts';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { Document } from '@langchain/core/documents';
import { test, run, eq, assert, generate, http, auth, MODEL, BASE_URL, API_KEY } from './server_util.mjs';

const configuration = { baseURL: `${BASE_URL}/v1` };
const chat = new ChatOpenAI({ model: MODEL, apiKey: API_KEY, configuration, temperature: 0, maxTokens: 12, maxRetries: 0 });

// A tiny retriever: the documents sharing the most words with the question.
const docs = [
  new Document({ pageContent: 'Paged attention stores the KV cache in fixed-size blocks.', metadata: { id: 1 } }),
  new Document({ pageContent: 'Continuous batching admits new requests at every step.', metadata: { id: 2 } }),
  new Document({ pageContent: 'Bananas are yellow when ripe.', metadata: { id: 3 } }),
];
function retrieve(question, k = 2) {
  const words = new Set(question.toLowerCase().match(/[a-z]+/g));
  const score = (d) => d.pageContent.toLowerCase().match(/[a-z]+/g).filter((w) => words.has(w)).length;
  return [...docs].sort((a, b) => score(b) - score(a)).slice(0, k);
}

const ragPrompt = ChatPromptTemplate.fromMessages([
  ['system', 'Answer the question using only this context:\n{context}'],
  ['human', '{question}'],
]);

async function direct(messages, max_tokens = 12) {
  const r = await http('POST', '/v1/chat/completions', { model: MODEL, messages, max_tokens, temperature: 0 }, auth);
  eq(r.status, 200, r.text);
  return r.json.choices[0].message.content;
}

test('ChatOpenAI.invoke equals the plain HTTP chat completion', async () => {
  const msg = await chat.invoke([['system', 'Be brief.'], ['human', 'What is a KV cache?']]);
  const want = await direct([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'What is a KV cache?' }]);
  eq(msg.content, want);
  eq(msg.response_metadata?.finish_reason ?? msg.response_metadata?.finishReason, 'length');
  assert(msg.usage_metadata.output_tokens === 12, JSON.stringify(msg.usage_metadata));
});

test('RAG chain (retriever -> prompt -> ChatOpenAI -> parser) equals the direct request', async () => {
  const question = 'How does paged attention store the KV cache?';
  const context = retrieve(question).map((d) => d.pageContent).join('\n');
  assert(context.includes('fixed-size blocks') && !context.includes('Bananas'));
  const chain = ragPrompt.pipe(chat).pipe(new StringOutputParser());
  const answer = await chain.invoke({ context, question });
  const want = await direct([
    { role: 'system', content: `Answer the question using only this context:\n${context}` },
    { role: 'user', content: question },
  ]);
  eq(answer, want);
});

test('ChatOpenAI.stream concatenates to invoke', async () => {
  const input = [['human', 'Count to three.']];
  const full = await chat.invoke(input);
  let text = '';
  for await (const chunk of await chat.stream(input)) text += chunk.content;
  eq(text, full.content);
});

test('ChatOpenAI.batch runs several RAG prompts', async () => {
  const questions = ['What does continuous batching admit?', 'What colour are bananas?'];
  const chain = ragPrompt.pipe(chat).pipe(new StringOutputParser());
  const answers = await chain.batch(questions.map((q) => ({ context: retrieve(q).map((d) => d.pageContent).join('\n'), question: q })));
  eq(answers.length, 2);
  for (let i = 0; i < 2; i++) {
    const context = retrieve(questions[i]).map((d) => d.pageContent).join('\n');
    eq(answers[i], await direct([
      { role: 'system', content: `Answer the question using only this context:\n${context}` },
      { role: 'user', content: questions[i] },
    ]));
  }
});

test('OpenAI (completions LLM) equals pagellm generate', async () => {
  const llm = new OpenAI({ model: MODEL, apiKey: API_KEY, configuration, temperature: 0, maxTokens: 10, maxRetries: 0 });
  const template = PromptTemplate.fromTemplate('Context: {context}\nQuestion: {question}\nAnswer:');
  const question = 'What admits new requests?';
  const prompt = await template.format({ context: docs[1].pageContent, question });
  const text = await template.pipe(llm).invoke({ context: docs[1].pageContent, question });
  const [ref] = generate([{ text: prompt }], 10);
  eq(text, ref.outputs[0].text);
});

await run();
