// The two tokenizers of GLIDE: GPT-2's byte-level BPE for the diffusion model's text encoder
// (glide_text2im/tokenizer/bpe.py) and CLIP's BPE for the noised CLIP (glide_text2im/tokenizer/simple_tokenizer.py).
// The vocabularies are NOT shipped: they come with the released weights (GPT-2: encoder.json + vocab.bpe; CLIP:
// bpe_simple_vocab_16e6.txt.gz), and each constructor reads the files the user names, plain or gzipped. Nothing is
// ever downloaded.
import { existsSync, readFileSync, statSync } from "node:fs";
import { gunzipSync } from "node:zlib";

/** A vocabulary file that is missing, unreadable or not in the expected format. */
export class TokenizerFileError extends Error {}

/**
 * GPT-2's reversible byte → printable-character table (bytes_to_unicode): printable Latin-1 bytes map to
 * themselves, the rest to U+0100 onwards, so that BPE never sees whitespace or control characters. Index = byte.
 */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const out = new Array<string>(256);
  bs.forEach((b, i) => {
    out[b] = String.fromCodePoint(cs[i]!);
  });
  return out;
}

/** The official vocabulary order of the byte characters (dict(zip(bs, cs)).values()). */
function byteVocabOrder(): string[] {
  const table = bytesToUnicode();
  const order: number[] = [];
  for (let b = 33; b <= 126; b++) order.push(b);
  for (let b = 161; b <= 172; b++) order.push(b);
  for (let b = 174; b <= 255; b++) order.push(b);
  for (let b = 0; b < 256; b++) if (!order.includes(b)) order.push(b);
  return order.map((b) => table[b]!);
}

// Python's str.isspace() set, which the reference's `\s` matches; JS's \s differs (it has U+FEFF, lacks U+001C–1F
// and U+0085).
const WS = "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

function readVocabFile(path: string, what: string): string {
  if (!existsSync(path)) {
    throw new TokenizerFileError(
      `${what}: file not found: ${path} (the vocabulary files come with the released weights and are not shipped here)`,
    );
  }
  if (!statSync(path).isFile()) throw new TokenizerFileError(`${what}: ${path} is not a file`);
  let bytes: Buffer = readFileSync(path);
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = gunzipSync(bytes);
    } catch (err) {
      throw new TokenizerFileError(`${what}: ${path}: corrupt gzip data (${(err as Error).message})`);
    }
  }
  return bytes.toString("utf8");
}

/** Byte-pair merging of one pre-token (a sequence of symbols) by merge rank, as both references do it. */
class BytePairMerger {
  private readonly ranks = new Map<string, number>();
  private readonly cache = new Map<string, string[]>();

  constructor(merges: readonly (readonly [string, string])[]) {
    // A repeated merge keeps its last rank, as the reference's dict(zip(merges, range(...))) does.
    merges.forEach(([a, b], i) => {
      this.ranks.set(`${a} ${b}`, i);
    });
  }

  merge(key: string, symbols: string[]): string[] {
    const hit = this.cache.get(key);
    if (hit) return hit;
    let word = symbols;
    while (word.length > 1) {
      let best = Number.POSITIVE_INFINITY;
      let first = "";
      let second = "";
      for (let i = 0; i + 1 < word.length; i++) {
        const r = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < best) {
          best = r;
          first = word[i]!;
          second = word[i + 1]!;
        }
      }
      if (best === Number.POSITIVE_INFINITY) break;
      const next: string[] = [];
      for (let i = 0; i < word.length; ) {
        if (word[i] === first && i + 1 < word.length && word[i + 1] === second) {
          next.push(first + second);
          i += 2;
        } else {
          next.push(word[i]!);
          i++;
        }
      }
      word = next;
    }
    this.cache.set(key, word);
    return word;
  }
}

function parseMerges(lines: readonly string[], file: string, what: string, firstLine: number) {
  const merges: [string, string][] = [];
  lines.forEach((line, i) => {
    const parts = line.trim().split(/\s+/);
    if (parts.length !== 2 || parts[0] === "") {
      throw new TokenizerFileError(
        `${what}: ${file}: line ${i + firstLine + 1} is not a merge of two symbols: ${JSON.stringify(line.slice(0, 60))}`,
      );
    }
    merges.push([parts[0]!, parts[1]!]);
  });
  return merges;
}

function utf8Symbols(text: string, byteChars: readonly string[]): string[] {
  return Array.from(Buffer.from(text, "utf8"), (b) => byteChars[b]!);
}

function decodeSymbols(text: string, byteChars: readonly string[]): string {
  const inverse = new Map(byteChars.map((c, b) => [c, b]));
  const bytes: number[] = [];
  for (const ch of text) {
    const b = inverse.get(ch);
    if (b !== undefined) bytes.push(b);
  }
  return Buffer.from(bytes).toString("utf8");
}

export interface GlideTokens {
  /** [B][ctx] ids, padded with the end token. */
  tokens: number[][];
  /** [B][ctx], true on real tokens. */
  mask: boolean[][];
}

/**
 * GPT-2's byte-level BPE as GLIDE uses it: lower-cased text, no start/end tokens, padded with the end token (50256)
 * to the text context, mask true on real tokens.
 */
export class Gpt2Tokenizer {
  private readonly encoder: Map<string, number>;
  private readonly decoder: Map<number, string>;
  private readonly merger: BytePairMerger;
  private readonly byteChars = bytesToUnicode();
  private readonly pattern = new RegExp(
    `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${WS}\\p{L}\\p{N}]+|[${WS}]+(?![^${WS}])|[${WS}]+`,
    "gu",
  );

  constructor(encoder: Record<string, number>, merges: readonly (readonly [string, string])[]) {
    this.encoder = new Map(Object.entries(encoder));
    this.decoder = new Map([...this.encoder].map(([k, v]) => [v, k]));
    this.merger = new BytePairMerger(merges);
  }

  /** Reads `encoder.json` and `vocab.bpe` (as shipped with GPT-2 / glide_text2im; `.gz` files are fine too). */
  static fromFiles(encoderJson: string, vocabBpe: string): Gpt2Tokenizer {
    const what = "GPT-2 tokenizer";
    const text = readVocabFile(encoderJson, what);
    let encoder: unknown;
    try {
      encoder = JSON.parse(text);
    } catch (err) {
      throw new TokenizerFileError(
        `${what}: ${encoderJson}: not valid JSON (${(err as Error).message}); expected encoder.json`,
      );
    }
    if (typeof encoder !== "object" || encoder === null || Array.isArray(encoder)) {
      throw new TokenizerFileError(`${what}: ${encoderJson}: expected an object mapping tokens to ids`);
    }
    const entries = Object.entries(encoder as Record<string, unknown>);
    const bad = entries.find(([, v]) => typeof v !== "number" || !Number.isInteger(v) || v < 0);
    if (bad) {
      throw new TokenizerFileError(
        `${what}: ${encoderJson}: token ${JSON.stringify(bad[0])} has id ${JSON.stringify(bad[1])}, not a non-negative integer`,
      );
    }
    const ids = new Set(entries.map(([, v]) => v as number));
    if (ids.size !== entries.length || [...ids].some((v) => v >= entries.length)) {
      throw new TokenizerFileError(`${what}: ${encoderJson}: ids are not 0..${entries.length - 1}, one each`);
    }
    const lines = readVocabFile(vocabBpe, what).split("\n");
    if (!lines[0]?.startsWith("#version")) {
      throw new TokenizerFileError(
        `${what}: ${vocabBpe}: expected vocab.bpe starting with '#version', got ${JSON.stringify(lines[0]?.slice(0, 40))}`,
      );
    }
    // The reference drops the header and the empty string after the final newline.
    const body = lines.slice(1).filter((l, i, all) => !(i === all.length - 1 && l.trim() === ""));
    const merges = parseMerges(body, vocabBpe, what, 1);
    const enc = encoder as Record<string, number>;
    const unknown = merges.find(([a, b]) => !(a + b in enc));
    if (unknown) {
      throw new TokenizerFileError(
        `${what}: merge '${unknown.join(" ")}' of ${vocabBpe} makes a token missing from ${encoderJson}: the files do not belong together`,
      );
    }
    return new Gpt2Tokenizer(enc, merges);
  }

  get nVocab(): number {
    return this.encoder.size;
  }

  /** The last id (GPT-2's <|endoftext|>), GLIDE's padding token. */
  get endToken(): number {
    return this.nVocab - 1;
  }

  encode(text: string): number[] {
    const out: number[] = [];
    for (const m of text.toLowerCase().matchAll(this.pattern)) {
      const piece = m[0];
      const symbols = utf8Symbols(piece, this.byteChars);
      for (const sym of this.merger.merge(symbols.join(""), symbols)) {
        const id = this.encoder.get(sym);
        if (id === undefined) throw new Error(`GPT-2 tokenizer: '${sym}' is not in the vocabulary`);
        out.push(id);
      }
    }
    return out;
  }

  decode(ids: readonly number[]): string {
    return decodeSymbols(ids.map((i) => this.decoder.get(i) ?? "").join(""), this.byteChars);
  }

  /** Truncates to `ctx`, pads with the end token, mask true on real tokens (padded_tokens_and_mask). */
  paddedTokensAndMask(tokens: readonly number[], ctx: number): { tokens: number[]; mask: boolean[] } {
    const kept = tokens.slice(0, ctx);
    const pad = ctx - kept.length;
    return {
      tokens: [...kept, ...Array<number>(pad).fill(this.endToken)],
      mask: [...Array<boolean>(kept.length).fill(true), ...Array<boolean>(pad).fill(false)],
    };
  }

  /** Prompts → GLIDE's model inputs (context 128 for the released models). */
  tokenize(prompts: readonly string[], ctx = 128): GlideTokens {
    const rows = prompts.map((p) => this.paddedTokensAndMask(this.encode(p), ctx));
    return { tokens: rows.map((r) => r.tokens), mask: rows.map((r) => r.mask) };
  }
}

// ------------------------------------------------------------------------------------------------- CLIP

/** Merges CLIP's vocabulary takes from bpe_simple_vocab_16e6.txt: 49152 − 256 − 2 (then 512 byte symbols + 2). */
export const CLIP_MERGES = 49152 - 256 - 2;

// Python's html.unescape knows all 2231 HTML5 names; prompts only ever carry a handful, so these (and numeric
// references, which follow Python's rules exactly) cover them. Names without ';' are HTML's legacy forms.
const NAMED: Record<string, string> = {
  "amp;": "&",
  amp: "&",
  "lt;": "<",
  lt: "<",
  "gt;": ">",
  gt: ">",
  "quot;": '"',
  quot: '"',
  "apos;": "'",
  "nbsp;": "\u00a0",
  nbsp: "\u00a0",
  "copy;": "©",
  copy: "©",
  "reg;": "®",
  reg: "®",
  "deg;": "°",
  deg: "°",
  "times;": "×",
  times: "×",
  "hellip;": "…",
  "mdash;": "—",
  "ndash;": "–",
  "lsquo;": "‘",
  "rsquo;": "’",
  "ldquo;": "“",
  "rdquo;": "”",
  "trade;": "™",
  "euro;": "€",
};

// Python's html._invalid_charrefs: C1 controls read as Windows-1252, NUL and CR specials.
const INVALID_CHARREFS: Record<number, string> = {
  0: "\ufffd",
  13: "\r",
  128: "\u20ac",
  129: "\x81",
  130: "\u201a",
  131: "\u0192",
  132: "\u201e",
  133: "\u2026",
  134: "\u2020",
  135: "\u2021",
  136: "\u02c6",
  137: "\u2030",
  138: "\u0160",
  139: "\u2039",
  140: "\u0152",
  141: "\x8d",
  142: "\u017d",
  143: "\x8f",
  144: "\x90",
  145: "\u2018",
  146: "\u2019",
  147: "\u201c",
  148: "\u201d",
  149: "\u2022",
  150: "\u2013",
  151: "\u2014",
  152: "\u02dc",
  153: "\u2122",
  154: "\u0161",
  155: "\u203a",
  156: "\u0153",
  157: "\x9d",
  158: "\u017e",
  159: "\u0178",
};

function isInvalidCodepoint(n: number): boolean {
  return (
    (n >= 0x1 && n <= 0x8) ||
    (n >= 0xe && n <= 0x1f) ||
    (n >= 0x7f && n <= 0x9f) ||
    (n >= 0xfdd0 && n <= 0xfdef) ||
    n === 0xb ||
    (n & 0xfffe) === 0xfffe
  );
}

/** Python's html.unescape (numeric references exactly; named ones from the table above). */
export function htmlUnescape(s: string): string {
  if (!s.includes("&")) return s;
  return s.replace(/&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/g, (whole, ref: string) => {
    if (ref[0] === "#") {
      const hex = ref[1] === "x" || ref[1] === "X";
      const n = Number.parseInt(ref.slice(hex ? 2 : 1).replace(/;$/, ""), hex ? 16 : 10);
      if (n in INVALID_CHARREFS) return INVALID_CHARREFS[n]!;
      if ((n >= 0xd800 && n <= 0xdfff) || n > 0x10ffff) return "\ufffd";
      if (isInvalidCodepoint(n)) return "";
      return String.fromCodePoint(n);
    }
    if (ref in NAMED) return NAMED[ref]!;
    for (let i = ref.length - 1; i > 1; i--) {
      const head = ref.slice(0, i);
      if (head in NAMED) return NAMED[head]! + ref.slice(i);
    }
    return whole;
  });
}

const PY_WS_RUN = new RegExp(`[${WS}]+`, "gu");
const PY_STRIP = new RegExp(`^[${WS}]+|[${WS}]+$`, "gu");

/** CLIP's basic_clean + whitespace_clean + lower(); ftfy.fix_text is the identity here (as in the reference run). */
export function clipCleanText(text: string): string {
  const cleaned = htmlUnescape(htmlUnescape(text)).replace(PY_STRIP, "");
  return cleaned.replace(PY_WS_RUN, " ").replace(PY_STRIP, "").toLowerCase();
}

export interface ClipTokens {
  /** [B][ctx]: [SOT] + bpe[:ctx-2] + [EOT], padded with 0. */
  tokens: number[][];
  /** Real length of each row including SOT and EOT (the text feature is read at position len-1). */
  lens: number[];
}

/** CLIP's BPE (simple_tokenizer): `</w>` marks word ends, ids = 256 bytes, 256 bytes+`</w>`, merges, SOT, EOT. */
export class ClipTokenizer {
  private readonly encoder = new Map<string, number>();
  private readonly decoder = new Map<number, string>();
  private readonly merger: BytePairMerger;
  private readonly byteChars = bytesToUnicode();
  private readonly pattern = new RegExp(
    `<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^${WS}\\p{L}\\p{N}]+`,
    "giu",
  );

  constructor(merges: readonly (readonly [string, string])[]) {
    const order = byteVocabOrder();
    const vocab = [...order, ...order.map((c) => `${c}</w>`), ...merges.map(([a, b]) => a + b)];
    vocab.push("<|startoftext|>", "<|endoftext|>");
    vocab.forEach((tok, i) => {
      this.encoder.set(tok, i);
      this.decoder.set(i, tok);
    });
    this.merger = new BytePairMerger(merges);
  }

  /**
   * Reads bpe_simple_vocab_16e6.txt(.gz): a header line, then merges, of which the first `merges` (CLIP: 48894)
   * are used. Fewer merges than that is an error, since every id after them would shift.
   */
  static fromFile(path: string, merges = CLIP_MERGES): ClipTokenizer {
    const what = "CLIP tokenizer";
    const lines = readVocabFile(path, what).split("\n");
    const body = lines.slice(1, 1 + merges);
    const parsed = parseMerges(
      body.filter((l) => l.trim() !== ""),
      path,
      what,
      1,
    );
    if (parsed.length < merges) {
      throw new TokenizerFileError(
        `${what}: ${path}: ${parsed.length} merges, expected at least ${merges} (is this bpe_simple_vocab_16e6.txt?)`,
      );
    }
    return new ClipTokenizer(parsed);
  }

  get nVocab(): number {
    return this.encoder.size;
  }

  get startToken(): number {
    return this.encoder.get("<|startoftext|>")!;
  }

  get endToken(): number {
    return this.encoder.get("<|endoftext|>")!;
  }

  encode(text: string): number[] {
    const out: number[] = [];
    for (const m of clipCleanText(text).matchAll(this.pattern)) {
      const piece = m[0];
      if (piece === "<|startoftext|>" || piece === "<|endoftext|>") {
        out.push(this.encoder.get(piece)!);
        continue;
      }
      const symbols = utf8Symbols(piece, this.byteChars);
      symbols[symbols.length - 1] += "</w>";
      for (const sym of this.merger.merge(piece, symbols)) {
        const id = this.encoder.get(sym);
        if (id === undefined) throw new Error(`CLIP tokenizer: '${sym}' is not in the vocabulary`);
        out.push(id);
      }
    }
    return out;
  }

  decode(ids: readonly number[]): string {
    const text = ids.map((i) => this.decoder.get(i) ?? "").join("");
    return decodeSymbols(text, this.byteChars).replaceAll("</w>", " ");
  }

  /** [SOT] + tokens[:ctx-2] + [EOT], padded with 0 (padded_tokens_and_len). */
  paddedTokensAndLen(tokens: readonly number[], ctx: number): { tokens: number[]; len: number } {
    const row = [this.startToken, ...tokens.slice(0, ctx - 2), this.endToken];
    return { tokens: [...row, ...Array<number>(ctx - row.length).fill(0)], len: row.length };
  }

  /** Prompts → the noised CLIP's text inputs (context 77). */
  tokenize(prompts: readonly string[], ctx = 77): ClipTokens {
    const rows = prompts.map((p) => this.paddedTokensAndLen(this.encode(p), ctx));
    return { tokens: rows.map((r) => r.tokens), lens: rows.map((r) => r.len) };
  }
}
