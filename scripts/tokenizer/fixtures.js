// fixtures.js generates the tokenizer fixtures of tokenizer/testdata with
// Hugging Face's tokenizers library (the npm package "tokenizers" 0.23.x,
// its Rust implementation). It is run by hand; its output is committed so
// the tests need no network:
//
//   mkdir -p /tmp/hftok && (cd /tmp/hftok && npm install tokenizers@0.23)
//   NODE_PATH=/tmp/hftok/node_modules node scripts/tokenizer/fixtures.js tokenizer/testdata
//
// For each style (gpt2, gpt2-prefix, llama3, qwen2, paper) it trains a BPE on
// testdata/corpus.txt with that style's normalizer and pre-tokenizer, using
// the library's trainer, keeps the first merges, lays out the vocabulary
// (specials, the 256 byte-level symbols, then the merges in training
// order), writes <style>.json, and writes <style>.expect.json: for each
// text, the ids the library gives. If testdata/ours.json (written by
// `trainer tokenizer train`) exists, it gets an ours.expect.json too.
//
// The library takes only valid text. For a text with bytes that are not
// valid UTF-8, the expected ids are made the way the Go package defines
// them: each invalid byte stands as U+FFFD (a symbol) through
// normalization and pre-tokenization, and then as its own byte in BPE,
// which runs with the library's BPE model alone on the byte-level string.
'use strict';
const fs = require('fs');
const path = require('path');
const os = require('os');
const hf = require('tokenizers');

const out = process.argv[2];
if (!out) throw new Error('usage: fixtures.js OUTDIR');

const PAT_GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const PAT_CL100K = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const PAT_QWEN2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const PAT_PAPER = "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const byteLevel = (prefix, regex) => ({ type: 'ByteLevel', add_prefix_space: prefix, trim_offsets: true, use_regex: regex });
const split = (pat) => ({ type: 'Split', pattern: { Regex: pat }, behavior: 'Isolated', invert: false });
const tok = (id, content, special, o = {}) => ({
  id, content, single_word: false, lstrip: !!o.lstrip, rstrip: !!o.rstrip,
  normalized: !!o.normalized, special,
});
const template = (pieces, specials) => ({
  type: 'TemplateProcessing',
  single: pieces.map((p) => (p === '$A' ? { Sequence: { id: 'A', type_id: 0 } } : { SpecialToken: { id: p, type_id: 0 } })),
  pair: pieces.map((p) => (p === '$A' ? { Sequence: { id: 'A', type_id: 0 } } : { SpecialToken: { id: p, type_id: 0 } })),
  special_tokens: Object.fromEntries(specials.map(([s, id]) => [s, { id: s, ids: [id], tokens: [s] }])),
});

// The byte-level alphabet, in byte order.
const byteChar = [];
{
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const keep = (b >= 33 && b <= 126) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    byteChar.push(String.fromCodePoint(keep ? b : 256 + n++));
  }
}

const styles = {
  gpt2: {
    merges: 1700, normalizer: null, pre: byteLevel(false, true), ignore_merges: false,
    head: [], tail: (n) => [tok(n, '<|endoftext|>', true, { normalized: true })], post: byteLevel(true, true),
  },
  'gpt2-prefix': {
    merges: 1700, normalizer: null, pre: byteLevel(true, true), ignore_merges: false, trainAs: 'gpt2',
    head: [],
    tail: (n) => [tok(n, '<|endoftext|>', true), tok(n + 1, '<mask>', true, { lstrip: true }), tok(n + 2, '[SEP]', true, { rstrip: true })],
    post: byteLevel(true, true),
  },
  llama3: {
    merges: 2700, normalizer: null, ignore_merges: true,
    pre: { type: 'Sequence', pretokenizers: [split(PAT_CL100K), byteLevel(false, false)] },
    head: [],
    tail: (n) => ['<|begin_of_text|>', '<|end_of_text|>', '<|reserved_special_token_0|>', '<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>']
      .map((s, i) => tok(n + i, s, true)),
    post: (n) => ({ type: 'Sequence', processors: [byteLevel(true, false), template(['<|begin_of_text|>', '$A'], [['<|begin_of_text|>', n]])] }),
  },
  qwen2: {
    merges: 1500, normalizer: { type: 'NFC' }, ignore_merges: false,
    pre: { type: 'Sequence', pretokenizers: [split(PAT_QWEN2), byteLevel(false, false)] },
    head: [],
    tail: (n) => ['<|endoftext|>', '<|im_start|>', '<|im_end|>'].map((s, i) => tok(n + i, s, true)),
    post: byteLevel(false, false),
  },
  paper: {
    merges: 1200, normalizer: { type: 'NFC' }, ignore_merges: false,
    pre: { type: 'Sequence', pretokenizers: [split(PAT_PAPER), byteLevel(false, false)] },
    head: ['<|begin_of_text|>', '<|end_of_text|>', '<|padding|>', '<|mask|>'].map((s, i) => tok(i, s, true))
      .concat(Array.from({ length: 12 }, (_, i) => tok(4 + i, ' '.repeat(2 * (i + 1)), false))),
    tail: () => [],
    post: () => template(['<|begin_of_text|>', '$A', '<|end_of_text|>'], [['<|begin_of_text|>', 0], ['<|end_of_text|>', 1]]),
  },
};

function base(st) {
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: st.normalizer,
    pre_tokenizer: st.pre, post_processor: null, decoder: byteLevel(true, true),
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: st.ignore_merges, vocab: {}, merges: [],
    },
  };
}

// train runs the library's BPE trainer (its defaults: the binding offers no
// options) and returns the learned merges in order.
const trained = {};
function train(name, st) {
  if (trained[name]) return trained[name];
  const t = hf.Tokenizer.fromString(JSON.stringify(base(st)));
  t.train([path.join(out, 'corpus.txt')]);
  const tmp = path.join(os.tmpdir(), `hf-${name}-${process.pid}.json`);
  t.save(tmp);
  const j = JSON.parse(fs.readFileSync(tmp, 'utf8'));
  fs.unlinkSync(tmp);
  trained[name] = j.model.merges.map((m) => (typeof m === 'string' ? m.split(' ') : m));
  return trained[name];
}

function build(name, st) {
  const merges = train(st.trainAs || name, st).slice(0, st.merges);
  const j = base(st);
  const vocab = {};
  let n = 0;
  for (const a of st.head) vocab[a.content] = n++;
  for (const c of byteChar) vocab[c] = n++;
  const kept = [];
  for (const [a, b] of merges) {
    if (vocab[a + b] === undefined) vocab[a + b] = n++;
    kept.push([a, b]);
  }
  const tail = st.tail(n);
  j.added_tokens = st.head.concat(tail);
  j.model.vocab = vocab;
  // gpt2 keeps the older "a b" form of merges, the others the list form.
  j.model.merges = name === 'gpt2' ? kept.map((m) => m.join(' ')) : kept;
  j.post_processor = typeof st.post === 'function' ? st.post(n) : st.post;
  return j;
}

// The texts, as bytes in hex where they are not valid UTF-8.
const texts = [
  ['empty', ''],
  ['space', ' '],
  ['code', 'func (b *Reader) ReadRune() (r rune, size int, err error) {\n\tfor b.r+utf8.UTFMax > b.w {\n\t\tb.fill() // b.w-b.r < len(buf) => buffer is not full\n\t}\n\treturn\n}\n'],
  ['code2', 'if x:=m["key"];x!=nil&&len(x)>=0x1F{fmt.Printf("%q\\n",x)}  // TODO(gri): fix  \r\n'],
  ['whitespace', 'a  b   c    d\t\te \t \n\n\n  f   \n   \r\n\r\n\u00a0\u00a0g\u3000h  \u2003 i     '],
  ['lead', '   leading and trailing   '],
  ['digits', '1 12 123 1234 12345 1234567890 3.14159 -42 1e10 0x7fff ١٢٣٤٥ ½¾ Ⅻ ²³ ४२'],
  ['cjk', '漢字かなカナ、한국어 텍스트。人人生而自由，在尊严和权利上一律平等。'],
  ['emoji', '👍🏽 👨‍👩‍👧 🇺🇳❤️✨🎉😀😀😀 ok👍'],
  ['combining', 'e\u0301 cafe\u0301 A\u030a Å n\u0303o\u0308 \u1100\u1161\u11a8 q\u0307\u0323 \u0301start'],
  ['contractions', "I'm don't WE'LL you'D it's 'ſ 'S 'Re ''s ?'s x've"],
  ['specials', '<|endoftext|>hi <|begin_of_text|> x <|mask|>y<|end_of_text|><|padding|> <mask> z [SEP]  w <|endoftext'],
  ['spaces-tokens', 'x  y    z                          w\n        indented'],
  ['punct', '!!! ?? ... --> <=> (a)[b]{c} "quoted" \'single\' «guillemets» — – … ©®™ €$¥'],
  ['mixed', 'Die Würde des Menschen ist unantastbar. Все люди рождаются свободными. すべての人間は、'],
  ['newline-run', '\n\n\n\n'],
  ['only-spaces', '      '],
  ['digit-runs', 'x1234567y 98765\n2024-12-04T23:55:00Z 100000000 ١٢٣٤٥٦٧ 1½2 ²³⁴⁵'],
  ['contractions2', "'ſ 'S'T'RE'VE'M'LL'D 'sa 'tb ' s '' 'll's"],
  ['nfc', 'Cafe\u0301 vs Café, \u212b vs \u00c5, \u0065\u0301\u0301, \u1e9b\u0323'],
];
const invalid = [
  ['inv-ff', '61 62 ff 63 64'],
  ['inv-lone-cont', '80 20 80 80 41'],
  ['inv-trunc', 'e2 82 20 78 20 f0 9f 98'],
  ['inv-surrogate', 'ed a0 80 61'],
  ['inv-overlong', 'c0 af 2f c1 bf'],
  ['inv-mixed', '68 c3 a9 6c 6c 6f 80 20 77 c3 b6 72 6c 64 20 fe 20 31 32 33 ff 34'],
  ['inv-space', '20 ff 20 ff ff 0a 0a fe 09 20 0a ff'],
  ['inv-letters', 'ff 61 62 63 20 ff 31'],
];

// goDecode splits bytes as Go's utf8.DecodeRune does: a valid rune, or one
// invalid byte.
function goDecode(buf) {
  const out = [];
  for (let i = 0; i < buf.length;) {
    const b = buf[i];
    let n = 0, lo = 0x80, hi = 0xbf;
    if (b < 0x80) n = 1;
    else if (b >= 0xc2 && b <= 0xdf) n = 2;
    else if (b === 0xe0) { n = 3; lo = 0xa0; }
    else if (b >= 0xe1 && b <= 0xec) n = 3;
    else if (b === 0xed) { n = 3; hi = 0x9f; }
    else if (b >= 0xee && b <= 0xef) n = 3;
    else if (b === 0xf0) { n = 4; lo = 0x90; }
    else if (b >= 0xf1 && b <= 0xf3) n = 4;
    else if (b === 0xf4) { n = 4; hi = 0x8f; }
    let ok = n > 0 && i + n <= buf.length;
    for (let k = 1; ok && k < n; k++) {
      const c = buf[i + k];
      if (c < (k === 1 ? lo : 0x80) || c > (k === 1 ? hi : 0xbf)) ok = false;
    }
    if (ok) { out.push({ valid: true, s: buf.slice(i, i + n).toString('utf8') }); i += n; }
    else { out.push({ valid: false, b }); i++; }
  }
  return out;
}

async function expect(name, j) {
  const t = hf.Tokenizer.fromString(JSON.stringify(j));
  const bare = { ...j, normalizer: null, pre_tokenizer: null, added_tokens: [], post_processor: null };
  const m = hf.Tokenizer.fromString(JSON.stringify(bare));
  const cases = [];
  for (const [cname, text] of texts) {
    const enc = await t.encode(text, null, { addSpecialTokens: false });
    const encS = await t.encode(text, null, { addSpecialTokens: true });
    const ids = enc.getIds();
    const dec = await t.decode(ids, true);
    // The pre-tokenizer's pieces of the whole normalized text (added tokens
    // not taken out), as byte-level strings.
    const norm = j.normalizer ? t.getNormalizer().normalizeString(text) : text;
    const pieces = t.getPreTokenizer().preTokenizeString(norm).map(([p]) => p);
    cases.push({ name: cname, hex: Buffer.from(text, 'utf8').toString('hex'), ids, ids_special: encS.getIds(), decoded_hex: Buffer.from(dec, 'utf8').toString('hex'), pieces });
  }
  const fffd = byteChar[0xef] + byteChar[0xbf] + byteChar[0xbd];
  for (const [cname, hex] of invalid) {
    const buf = Buffer.from(hex.replace(/ /g, ''), 'hex');
    const runes = goDecode(buf);
    const bad = runes.filter((r) => !r.valid).map((r) => r.b);
    let s = runes.map((r) => (r.valid ? r.s : '\ufffd')).join('');
    if (bad.length === 0) throw new Error(`${cname}: no invalid byte`);
    for (const a of j.added_tokens) if (s.includes(a.content)) throw new Error(`${cname}: contains added token ${a.content}`);
    if (j.normalizer) s = t.getNormalizer().normalizeString(s);
    const pieces = t.getPreTokenizer().preTokenizeString(s);
    let k = 0;
    const ids = [];
    for (const [p] of pieces) {
      const word = p.split(fffd).reduce((acc, part, i) => (i === 0 ? part : acc + byteChar[bad[k++]] + part), '');
      ids.push(...(await m.encode(word, null, { addSpecialTokens: false })).getIds());
    }
    if (k !== bad.length) throw new Error(`${cname}: ${bad.length} invalid bytes, ${k} placed`);
    cases.push({ name: cname, hex: buf.toString('hex'), ids, ids_special: null, decoded_hex: null });
  }
  fs.writeFileSync(path.join(out, `${name}.expect.json`), JSON.stringify({ tokenizer: `${name}.json`, vocab: t.getVocabSize(true), library: 'tokenizers ' + require('tokenizers/package.json').version, cases }, null, 0) + '\n');
}

(async () => {
  for (const [name, st] of Object.entries(styles)) {
    const j = build(name, st);
    fs.writeFileSync(path.join(out, `${name}.json`), JSON.stringify(j, null, 1) + '\n');
    await expect(name, j);
    console.log(name, Object.keys(j.model.vocab).length, 'vocab', j.model.merges.length, 'merges');
  }
  const ours = path.join(out, 'ours.json');
  if (fs.existsSync(ours)) {
    await expect('ours', JSON.parse(fs.readFileSync(ours, 'utf8')));
    console.log('ours: expected ids written');
  }
})().catch((e) => { console.error(e); process.exit(1); });
