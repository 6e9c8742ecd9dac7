// `guidance-lab glide`: GLIDE text-to-image from the user's converted checkpoints (base, optional upsampler) under
// any registry strategy that needs no extra model, on ONNX Runtime or TensorFlow.js; writes PNGs of both stages.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Tensor4D } from "../core/engine.ts";
import { Init } from "../core/layers.ts";
import type { ScheduleName } from "../core/samplers.ts";
import { writeGrid, writePng } from "../data/png.ts";
import { GLIDE_BASE_FLAGS, GLIDE_UPSAMPLER_FLAGS, glideConfigFromOfficial } from "../nets/configs.ts";
import { loadOfficial } from "../nets/convert.ts";
import { Gpt2Tokenizer } from "../nets/tokenizers.ts";
import { UNet } from "../nets/unet.ts";
import { type RuntimeChoice, resolveRuntime } from "../onnx/choice.ts";
import { glideText2Im } from "../pipelines/glide.ts";
import { readImages } from "../pipelines/sampling.ts";
import { checkedStrategy } from "./sample.ts";

export interface GlideArgs {
  /** The base model's converted checkpoint (safetensors with the official parameter names). */
  base: string;
  /** JSON of official flags overriding GLIDE's base defaults (model_and_diffusion_defaults keys). */
  baseFlags?: string;
  upsampler?: string;
  upsamplerFlags?: string;
  /** Directory with GPT-2's encoder.json and vocab.bpe (as in glide_text2im/tokenizer, .gz accepted). */
  bpe: string;
  prompt: string;
  strategy: string;
  scale?: number;
  strategyConfig?: string;
  /** Base respacing, e.g. "100" (the notebooks'), "ddim50", "fast27". */
  respacing: string;
  upsampleRespacing: string;
  sampler: string;
  schedule?: ScheduleName;
  eta?: number;
  n: number;
  seed: number;
  out: string;
  runtime?: RuntimeChoice;
}

function readFlags(path: string | undefined, flag: string): Record<string, unknown> {
  if (path === undefined) return {};
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`${flag} ${path}: cannot read a JSON object of GLIDE flags (${(e as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw new Error(`${flag} ${path}: expected a JSON object of GLIDE flags, e.g. {"num_channels": 192}`);
  return raw as Record<string, unknown>;
}

function vocabFile(dir: string, name: string): string {
  for (const f of [name, `${name}.gz`]) if (existsSync(join(dir, f))) return join(dir, f);
  throw new Error(
    `--bpe ${dir}: no ${name} or ${name}.gz (GPT-2's tokenizer files, as in glide_text2im/tokenizer)`,
  );
}

function loadGlide(file: string, flags: Record<string, unknown>, flag: string): UNet {
  if (!existsSync(file)) throw new Error(`${flag} ${file}: file not found (a converted GLIDE checkpoint)`);
  const unet = new UNet(Init.forLoading(), glideConfigFromOfficial(flags));
  try {
    loadOfficial(unet, file, "glide-unet");
  } catch (e) {
    unet.dispose();
    throw new Error(`${flag} ${file}: ${(e as Error).message}`);
  }
  return unet;
}

export async function runGlide(a: GlideArgs): Promise<{ base: string[]; upsampled: string[] }> {
  const text = Gpt2Tokenizer.fromFiles(vocabFile(a.bpe, "encoder.json"), vocabFile(a.bpe, "vocab.bpe"));
  // A schedule or strategy the sampler cannot serve fails before the checkpoints load.
  const { raw } = checkedStrategy(a);
  const runtime = await resolveRuntime(a.runtime);
  const base = loadGlide(
    a.base,
    { ...GLIDE_BASE_FLAGS, ...readFlags(a.baseFlags, "--base-flags") },
    "--base",
  );
  let up: UNet | undefined;
  try {
    if (a.upsampler)
      up = loadGlide(
        a.upsampler,
        { ...GLIDE_UPSAMPLER_FLAGS, ...readFlags(a.upsamplerFlags, "--upsampler-flags") },
        "--upsampler",
      );
    const t0 = performance.now();
    const r = glideText2Im({
      base,
      text,
      prompts: Array.from({ length: a.n }, () => a.prompt),
      strategy: raw,
      respacing: a.respacing,
      sampler: a.sampler,
      ...(a.schedule ? { schedule: a.schedule } : {}),
      ...(a.eta !== undefined ? { eta: a.eta } : {}),
      seed: a.seed,
      runtime,
      onStep: (stage, info) => process.stderr.write(`\r[glide] ${stage} step ${info.k + 1}/${info.total}   `),
      ...(up ? { upsample: { model: up, respacing: a.upsampleRespacing } } : {}),
    });
    const write = async (x: Tensor4D, stem: string) => {
      const s = x.shape[1];
      const images = await readImages(x);
      const paths = images.map((img, i) => {
        const p = join(a.out, `${stem}-${String(i).padStart(3, "0")}.png`);
        writePng(p, img, s);
        return p;
      });
      writeGrid(join(a.out, `${stem}-grid.png`), images, s, Math.min(a.n, 8));
      return paths;
    };
    try {
      const written = {
        base: await write(r.base, "base"),
        upsampled: r.upsampled ? await write(r.upsampled, "upsampled") : [],
      };
      const seconds = (performance.now() - t0) / 1000;
      process.stderr.write("\n");
      process.stdout.write(
        `${a.n} image(s) of "${a.prompt}" with ${JSON.stringify(raw)} on ${runtime}: base ${a.respacing} (NFE ${r.nfe.base} per image)${up ? `, upsampler ${a.upsampleRespacing} (NFE ${r.nfe.upsampler})` : ""}, ${seconds.toFixed(1)} s → ${a.out}\n`,
      );
      return written;
    } finally {
      r.dispose();
    }
  } finally {
    base.dispose();
    up?.dispose();
  }
}
