// Guides that a sweep's strategies name (`{kind: clip, model: noised-clip-500}`, also inside `base` and as a grid
// axis `model: [a, b]`): listed with their config keys, checked before any sampling (the model exists, is the kind
// of guide its strategy takes, and is not the evaluation CLIP, by name or by weights: guidance that optimises the
// CLIP that scores the samples measures nothing), and reported so that run provenance covers them.
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type Tensor1D, type Tensor2D, type Tensor4D, tf } from "../core/engine.ts";
import { mapImageBatches } from "../metrics/embedders.ts";
import type { NoisedClipModel } from "../nets/clip.ts";
import type { EncoderUNet } from "../nets/encoder-unet.ts";
import type { EvalClip } from "../nets/eval-clip.ts";
import type { MetricModels } from "../onnx/metric-models.ts";
import { strategyDef } from "../strategies/registry.ts";
import { modelInfo } from "../zoo/registry.ts";
import { DEFAULT_ZOO, GUIDE_KEYS, type Zoo } from "../zoo/zoo.ts";

export interface NamedGuide {
  /** Config key path, e.g. `strategies.2.model` or `strategies.0.base.model.1`. */
  key: string;
  /** The strategy kind that names it. */
  kind: string;
  name: string;
}

/** Every guide named in raw strategy entries (grid lists expanded), with its key path. */
export function namedGuides(strategies: readonly unknown[]): NamedGuide[] {
  const out: NamedGuide[] = [];
  const walk = (entry: unknown, key: string) => {
    if (!entry || typeof entry !== "object" || Array.isArray(entry)) return;
    const e = entry as Record<string, unknown>;
    const kind = typeof e.kind === "string" ? e.kind : "?";
    const m = e.model;
    if (typeof m === "string") out.push({ key: `${key}.model`, kind, name: m });
    else if (Array.isArray(m))
      for (const [i, v] of m.entries()) {
        if (typeof v === "string") out.push({ key: `${key}.model.${i}`, kind, name: v });
      }
    if (Array.isArray(e.base)) for (const [i, b] of e.base.entries()) walk(b, `${key}.base.${i}`);
    else walk(e.base, `${key}.base`);
  };
  for (const [i, s] of strategies.entries()) walk(s, `strategies.${i}`);
  return out;
}

/** Whether any entry (or a base inside it) is of `kind` without naming its own guide. */
function usesDefaultGuide(strategies: readonly unknown[], kind: string): boolean {
  const walk = (entry: unknown): boolean => {
    if (!entry || typeof entry !== "object" || Array.isArray(entry)) return false;
    const e = entry as Record<string, unknown>;
    if (e.kind === kind && e.model === undefined) return true;
    return (Array.isArray(e.base) ? e.base : [e.base]).some(walk);
  };
  return strategies.some(walk);
}

/**
 * Config validation (no disk access): no guide may be the evaluation CLIP by name, including clean-clip's
 * default guide (the zoo's `clean-clip`) when models.evalClip names it.
 */
export function refuseEvalClipGuides(strategies: readonly unknown[], evalClip: string, source: string): void {
  for (const g of namedGuides(strategies)) {
    if (g.name === evalClip) {
      throw new Error(
        `${source}: ${g.key}: '${g.name}' is the evaluation CLIP (models.evalClip); guidance and evaluation never share a CLIP`,
      );
    }
  }
  if (evalClip === DEFAULT_ZOO.cleanClip && usesDefaultGuide(strategies, "clean-clip")) {
    throw new Error(
      `${source}: models.evalClip: '${evalClip}' is clean-clip's default guide; name another evaluation CLIP or give the clean-clip strategies a model`,
    );
  }
}

const weightsHash = (dir: string): string | undefined => {
  const f = join(dir, "model.safetensors");
  return existsSync(f) ? createHash("sha256").update(readFileSync(f)).digest("hex") : undefined;
};

/**
 * Before loading anything: every named guide exists in `dir`, is a guide its strategy kind takes, and does not
 * carry the evaluation CLIP's weights under another name.
 */
export function checkGuides(
  strategies: readonly unknown[],
  evalClip: string | undefined,
  dir: string,
  source: string,
): void {
  const evalDir = evalClip ? join(dir, evalClip) : undefined;
  const evalHash = evalDir ? weightsHash(evalDir) : undefined;
  for (const g of namedGuides(strategies)) {
    const at = `${source}: ${g.key}`;
    let info: ReturnType<typeof modelInfo>;
    try {
      info = modelInfo(g.name, dir);
    } catch (e) {
      throw new Error(`${at}: ${(e as Error).message}`);
    }
    const provides = GUIDE_KEYS[info.task];
    if (!provides) throw new Error(`${at}: '${g.name}' is a ${info.task}, not a guide`);
    let wants: readonly string[] | undefined;
    try {
      wants = strategyDef(g.kind).guideKeys;
    } catch {
      continue; // the strategy's own validation names an unknown kind
    }
    if (!wants) throw new Error(`${at}: strategy '${g.kind}' takes no guide model`);
    if (!wants.every((k) => (provides as readonly string[]).includes(k))) {
      throw new Error(`${at}: '${g.name}' is a ${info.task}, which strategy '${g.kind}' cannot guide with`);
    }
    if (evalHash && weightsHash(info.dir) === evalHash) {
      throw new Error(
        `${at}: '${g.name}' has the evaluation CLIP's weights (${evalClip}); guidance and evaluation never share a CLIP`,
      );
    }
  }
  const cleanDefault = join(dir, DEFAULT_ZOO.cleanClip);
  if (evalHash && usesDefaultGuide(strategies, "clean-clip") && weightsHash(cleanDefault) === evalHash) {
    throw new Error(
      `${source}: strategies: clean-clip's default guide '${DEFAULT_ZOO.cleanClip}' has the evaluation CLIP's weights (${evalClip}); guidance and evaluation never share a CLIP`,
    );
  }
}

/** The distinct guide models the strategies name, sorted (for the run's provenance beside its default models). */
export function guideModelNames(strategies: readonly unknown[]): string[] {
  return [...new Set(namedGuides(strategies).map((g) => g.name))].sort();
}

// ---------------------------------------------------------------- the guides' own scores

/** The zoo's guides by strategy kind when a strategy names none. */
export interface DefaultGuides {
  classifier: string;
  clip: string;
  cleanClip: string;
}

/**
 * Every guide the strategies use, named or by default (a `clip` entry without `model` uses the zoo's noised CLIP),
 * sorted: the guides whose own scores each cell records.
 */
export function guidesUsed(strategies: readonly unknown[], defaults: DefaultGuides): string[] {
  const used = new Set(namedGuides(strategies).map((g) => g.name));
  const byKind: Record<string, string> = {
    classifier: defaults.classifier,
    clip: defaults.clip,
    "clean-clip": defaults.cleanClip,
  };
  for (const [kind, name] of Object.entries(byKind)) if (usesDefaultGuide(strategies, kind)) used.add(name);
  return [...used].sort();
}

const cosine = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return ab / Math.sqrt(aa * bb);
};

/**
 * The score a guide's gradient raises, per sample, on final images (HWC RGB in [0, 1]): for a noised CLIP (at
 * t = 0) or a clean CLIP, GLIDE's CLIP score 100·cos(z_image, z_text) with that guide's own towers; for a noised
 * classifier, log p(y | x, t = 0) with y the prompt's class (NaN for prompts without one). Recorded for every cell
 * (unguided ones too), so that a guided cell's gain in its guide's score pairs sample by sample with the
 * conditional model's cell on the same seeds. The forwards run where the metrics' do (`forwards`: traced graphs on
 * ONNX Runtime, shared with the metrics where the guide is their model).
 */
export function guideScores(
  zoo: Pick<Zoo, "guideModel" | "models">,
  forwards: Pick<MetricModels, "evalClip" | "noisedClip" | "classifier">,
  names: readonly string[],
  images: readonly Float32Array[],
  size: number,
  prompts: readonly string[],
): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  const t0 = (x: Tensor4D) => tf.zeros([x.shape[0]], "int32") as Tensor1D;
  const distinct = [...new Set(prompts)];
  for (const name of names) {
    const g = zoo.guideModel(name);
    if (g.task === "classifier") {
      const c = forwards.classifier(g.module as EncoderUNet);
      const logp = mapImageBatches(images, size, (x) => tf.logSoftmax(c.logits(x, t0(x))) as Tensor2D);
      out[name] = prompts.map((p, i) => {
        let y: number;
        try {
          y = zoo.models.classifierLabel!(p);
        } catch {
          return Number.NaN;
        }
        return logp[i]![y]!;
      });
      continue;
    }
    let imageRows: Float32Array[];
    let textRows: Tensor2D;
    if (g.task === "noised-clip") {
      const clip = forwards.noisedClip(g.module as NoisedClipModel);
      imageRows = mapImageBatches(images, size, (x) => clip.embedImage(x, t0(x)));
      textRows = g.bag.clipText!(distinct);
    } else {
      const clip = forwards.evalClip(g.module as EvalClip);
      imageRows = mapImageBatches(images, size, (x) => clip.embedImage(x));
      textRows = g.bag.cleanClipText!(distinct);
    }
    const flat = textRows.dataSync() as Float32Array;
    const dim = textRows.shape[1];
    textRows.dispose();
    const text = new Map(distinct.map((p, i) => [p, flat.subarray(i * dim, (i + 1) * dim)]));
    out[name] = prompts.map((p, i) => 100 * cosine(imageRows[i]!, text.get(p)!));
  }
  return out;
}
