// Loads official PyTorch state dicts (safetensors with the official parameter names) into our modules. Two things
// differ from the official checkpoints: names (per model family, all in FAMILIES below) and layouts (conv weights
// [out, in, kh, kw] → [kh, kw, in, out], 1-D 1×1 convs [out, in, 1] → [1, 1, in, out], Linear [out, in] → [in, out]).
// Every problem is collected before anything is assigned, so one error names every missing, unexpected and
// mis-shaped tensor, in official names and official layout, with the file.
import { type Tensor, tf } from "../core/engine.ts";
import type { Module } from "../core/layers.ts";
import { glideClipNameMap } from "./clip.ts";
import { readSafetensors } from "./safetensors.ts";

export type ModelFamily = "glide-unet" | "glide-clip" | "gd-unet" | "gd-classifier" | "openai-clip";

type Layout = "conv" | "conv1d" | "linear" | "asis";

interface FamilyRules {
  toOurs(official: string): string;
  toOfficial(ours: string): string;
  /** How the official tensor maps onto ours, from the official name and OUR parameter's rank. */
  layout(official: string, ourRank: number): Layout;
  /** Official entries that are not parameters (read past, never reported as unexpected). */
  ignore?(official: string): boolean;
}

// GLIDE keeps its text encoder at the top level of Text2ImUNet; the lead's UNet holds it under a child `text`.
const GLIDE_TEXT =
  /^(token_embedding|positional_embedding|padding_embedding|transformer|final_ln|transformer_proj)(\.|$)/;
// The lead's UNet wraps its first conv in a Sequential holding a ConvBlock (whose conv is its child "0"), one level
// deeper than the official TimestepEmbedSequential(conv); trained zoo checkpoints use that name, so map it here.
const FIRST_CONV_OFFICIAL = /^input_blocks\.0\.0\.(weight|bias)$/;
const FIRST_CONV_OURS = /^input_blocks\.0\.0\.0\.(weight|bias)$/;
// guided-diffusion's conv_nd(1, ...) layers: attention qkv/proj, GLIDE's encoder_kv, AttentionPool2d's projections.
const CONV1D = /(^|\.)(qkv|proj_out|encoder_kv|qkv_proj|c_proj)\.weight$/;
const EMBEDDING = /(^|\.)(label_emb|token_embedding)\.weight$/;
// OpenAI CLIP: nn.Linear and MultiheadAttention's fused in_proj are [out, in]; visual.proj and text_projection are
// already [in, out] (applied as x @ proj) and the embedding tables keep their layout.
const OPENAI_CLIP_LINEAR = /(^|\.)(in_proj_weight|out_proj\.weight|c_fc\.weight|c_proj\.weight)$/;
// Scalars the released JIT archives keep in their state dict; openai/CLIP's build_model deletes them.
const OPENAI_CLIP_META = new Set(["input_resolution", "context_length", "vocab_size"]);

function unetLayout(official: string, ourRank: number): Layout {
  if (ourRank === 4) return CONV1D.test(official) ? "conv1d" : "conv";
  if (ourRank === 2 && official.endsWith(".weight") && !EMBEDDING.test(official)) return "linear";
  return "asis";
}

const unetRules: FamilyRules = {
  toOurs: (n) => (GLIDE_TEXT.test(n) ? `text.${n}` : n.replace(FIRST_CONV_OFFICIAL, "input_blocks.0.0.0.$1")),
  toOfficial: (n) => (n.startsWith("text.") ? n.slice(5) : n.replace(FIRST_CONV_OURS, "input_blocks.0.0.$1")),
  layout: unetLayout,
};

/** The one table of name maps and layout rules per model family. */
export const FAMILIES: Record<ModelFamily, FamilyRules> = {
  "glide-unet": unetRules,
  "gd-unet": unetRules,
  // EncoderUNet mirrors the official tree exactly (its first block is the conv's own container).
  "gd-classifier": { toOurs: (n) => n, toOfficial: (n) => n, layout: unetLayout },
  "glide-clip": {
    toOurs: glideClipNameMap.toOurs,
    toOfficial: glideClipNameMap.toOfficial,
    layout: (official, ourRank) => {
      if (ourRank === 4) return "conv";
      // Official Affine weights are `.w`; the embedding tables (w_voc, w_t, w_pos) keep their layout.
      if (ourRank === 2 && official.endsWith(".w")) return "linear";
      return "asis";
    },
  },
  // OpenAIClip carries the official names (src/nets/openai-clip.ts).
  "openai-clip": {
    toOurs: (n) => n,
    toOfficial: (n) => n,
    layout: (official, ourRank) => {
      if (ourRank === 4) return "conv";
      return ourRank === 2 && OPENAI_CLIP_LINEAR.test(official) ? "linear" : "asis";
    },
    ignore: (official) => OPENAI_CLIP_META.has(official),
  },
};

const PERM: Record<Layout, number[] | undefined> = {
  conv: [2, 3, 1, 0],
  conv1d: undefined,
  linear: [1, 0],
  asis: undefined,
};

/** The official shape of a tensor whose shape is `ours` in our layout. */
export function officialShape(ours: readonly number[], layout: Layout): number[] {
  switch (layout) {
    case "conv":
      return [ours[3]!, ours[2]!, ours[0]!, ours[1]!];
    case "conv1d":
      return [ours[3]!, ours[2]!, 1];
    case "linear":
      return [ours[1]!, ours[0]!];
    default:
      return [...ours];
  }
}

/** Official-layout data → a tensor in our layout. */
export function toOurLayout(data: Float32Array, shape: readonly number[], layout: Layout): Tensor {
  return tf.tidy(() => {
    const t = tf.tensor(data, [...shape], "float32");
    if (layout === "conv1d") return tf.reshape(tf.transpose(t, [1, 0, 2]), [1, 1, shape[1]!, shape[0]!]);
    const perm = PERM[layout];
    return perm ? tf.transpose(t, perm) : t;
  });
}

const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;
const sameShape = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((d, i) => d === b[i]);

export interface LoadReport {
  file: string;
  family: ModelFamily;
  tensors: number;
  params: number;
}

/**
 * Loads an official-format .safetensors state dict (F32/F16/BF16) into `module`. Throws, assigning nothing, when
 * any official tensor is missing, unexpected, or of a shape that does not convert to ours.
 */
export function loadOfficial(module: Module, file: string, family: ModelFamily): LoadReport {
  const rules = FAMILIES[family];
  if (!rules) throw new Error(`loadOfficial: unknown model family '${family}'`);
  const st = readSafetensors(file);
  try {
    const ours = new Map(module.namedParameters().map(([n, v]) => [n, v.shape] as const));
    const missing: string[] = [];
    const unexpected: string[] = [];
    const misshaped: string[] = [];
    const plan: { official: string; ours: string; layout: Layout }[] = [];
    const covered = new Set<string>();
    for (const official of st.names()) {
      if (rules.ignore?.(official)) continue;
      // A module that already uses the official name (e.g. a UNet whose first block is no longer wrapped) wins.
      const mapped = rules.toOurs(official);
      const ourName = !ours.has(mapped) && ours.has(official) ? official : mapped;
      const ourShape = ours.get(ourName);
      const found = st.info(official).shape;
      if (!ourShape) {
        const note = ourName === official ? "" : `; no parameter '${ourName}'`;
        unexpected.push(`unexpected tensor '${official}' (shape ${fmt(found)}${note})`);
        continue;
      }
      covered.add(ourName);
      const dtype = st.info(official).dtype;
      if (dtype !== "F32" && dtype !== "F16" && dtype !== "BF16") {
        misshaped.push(`wrong dtype for '${official}': ${dtype}, expected a float (F32, F16 or BF16)`);
        continue;
      }
      const layout = rules.layout(official, ourShape.length);
      const expected = officialShape(ourShape, layout);
      if (!sameShape(found, expected)) {
        misshaped.push(`shape mismatch for '${official}': expected ${fmt(expected)}, found ${fmt(found)}`);
        continue;
      }
      plan.push({ official, ours: ourName, layout });
    }
    for (const [ourName, shape] of ours) {
      if (covered.has(ourName)) continue;
      const official = rules.toOfficial(ourName);
      const expected = officialShape(shape, rules.layout(official, shape.length));
      missing.push(`missing tensor '${official}' (expected shape ${fmt(expected)})`);
    }
    const problems = [...missing, ...unexpected, ...misshaped];
    if (problems.length > 0) {
      // A few of each kind, so that a long list of one kind never hides the others.
      const shown = [missing, unexpected, misshaped].flatMap((list) => list.slice(0, 12));
      const more = problems.length > shown.length ? `\n  ... and ${problems.length - shown.length} more` : "";
      throw new Error(
        `loadOfficial(${family}) from ${file} into ${module.constructor.name}: ${missing.length} missing, ` +
          `${unexpected.length} unexpected, ${misshaped.length} mis-shaped tensor(s)\n  ${shown.join("\n  ")}${more}`,
      );
    }
    const sd = new Map<string, Tensor>();
    try {
      for (const p of plan) {
        const t = st.get(p.official);
        sd.set(p.ours, toOurLayout(t.data, t.shape, p.layout));
      }
      module.loadStateDict(sd, { source: file });
    } finally {
      for (const t of sd.values()) t.dispose();
    }
    return { file, family, tensors: plan.length, params: module.numParams() };
  } finally {
    st.close();
  }
}
