// bench-hf.js times the Hugging Face tokenizers library on a directory of
// documents (one file each), for comparison with `trainer prepare
// --tokenizer` and `trainer tokenizer train` (scripts/tokenizer/bench.sh):
//
//   node bench-hf.js encode TOKENIZER.json DIR   batch encode, one thread if RAYON_NUM_THREADS=1
//                                                (DIR may be a .jsonl file: its "text" fields,
//                                                encoded in batches of 1000 documents)
//   node bench-hf.js train TOKENIZER.json DIR OUT  train a BPE with that file's pipeline
//
// The node binding's trainer takes no options: it trains to its default
// vocabulary of 30000, and reads files line by line.
'use strict';
const fs = require('fs');
const hf = require('tokenizers');

const [, , what, tokf, dir, out] = process.argv;
const jsonl = dir.endsWith('.jsonl');
const files = jsonl ? [] : fs.readdirSync(dir).sort().map((f) => `${dir}/${f}`);
const cpu = (c) => (c.user + c.system) / 1e6;

async function encode() {
  const t = hf.Tokenizer.fromFile(tokf);
  const docs = jsonl
    ? fs.readFileSync(dir, 'utf8').split('\n').filter((l) => l).map((l) => JSON.parse(l).text)
    : files.map((f) => fs.readFileSync(f, 'utf8'));
  const n = docs.reduce((a, d) => a + Buffer.byteLength(d), 0) / 1e6;
  const batch = jsonl ? 1000 : docs.length;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let toks = 0;
  for (let i = 0; i < docs.length; i += batch) {
    const encs = await t.encodeBatch(docs.slice(i, i + batch), { addSpecialTokens: false });
    toks += encs.reduce((a, e) => a + e.getLength(), 0);
  }
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = cpu(process.cpuUsage(c0));
  console.log(`hf encodeBatch: ${docs.length} documents, ${n.toFixed(2)} MB, ${toks} tokens; ` +
    `wall ${wall.toFixed(2)} s (${(n / wall).toFixed(2)} MB/s), cpu ${c.toFixed(2)} s (${(n / c).toFixed(2)} MB/s per core)`);
}

function train() {
  const j = JSON.parse(fs.readFileSync(tokf, 'utf8'));
  j.model.vocab = {};
  j.model.merges = [];
  j.added_tokens = [];
  j.post_processor = null;
  const t = hf.Tokenizer.fromString(JSON.stringify(j));
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  t.train(files);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = cpu(process.cpuUsage(c0));
  t.save(out);
  const v = Object.keys(JSON.parse(fs.readFileSync(out, 'utf8')).model.vocab).length;
  console.log(`hf train: ${files.length} files, vocab ${v}; wall ${wall.toFixed(2)} s, cpu ${c.toFixed(2)} s`);
}

if (what === 'encode') encode().catch((e) => { console.error(e); process.exit(1); });
else if (what === 'train') train();
else throw new Error('usage: bench-hf.js encode|train TOKENIZER.json DIR [OUT]');
