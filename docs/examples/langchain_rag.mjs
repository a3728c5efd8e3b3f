// langchain_rag.mjs -- a small retrieval-augmented pipeline with LangChain JS on `pagellm serve`.
// Run: PAGELLM_BASE_URL=http://127.0.0.1:8000/v1 PAGELLM_API_KEY=... node langchain_rag.mjs
import { ChatOpenAI } from '@langchain/openai';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { StringOutputParser } from '@langchain/core/output_parsers';

const llm = new ChatOpenAI({
  model: process.env.PAGELLM_MODEL || 'tiny',
  apiKey: process.env.PAGELLM_API_KEY || 'EMPTY', // empty or unset: any string will do without --api-key
  configuration: { baseURL: process.env.PAGELLM_BASE_URL || 'http://127.0.0.1:8000/v1' },
  temperature: 0,
  maxTokens: 32,
});

// Stand-in for a vector store: the documents that share the most words with the question.
const documents = [
  'pagellm keeps the KV cache in fixed-size blocks (paged attention).',
  'Continuous batching admits new requests at every engine step.',
  'The server speaks the OpenAI API, so existing clients only change the base URL.',
];
const retrieve = (q, k = 2) => {
  const words = new Set(q.toLowerCase().match(/[a-z]+/g));
  const score = (d) => d.toLowerCase().match(/[a-z]+/g).filter((w) => words.has(w)).length;
  return [...documents].sort((a, b) => score(b) - score(a)).slice(0, k);
};

const prompt = ChatPromptTemplate.fromMessages([
  ['system', 'Answer the question using only this context:\n{context}'],
  ['human', '{question}'],
]);
const chain = prompt.pipe(llm).pipe(new StringOutputParser());

const question = 'How does pagellm store the KV cache?';
const answer = await chain.invoke({ context: retrieve(question).join('\n'), question });
console.log('answer:', JSON.stringify(answer));
