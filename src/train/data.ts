// Training examples from the embedded world. Example j of step s is a pure function of (seed, task, s, j): the
// batch is identical whatever the number of workers, and a resumed run sees exactly the data it would have seen.

import { caption, PAD_ID, renderInto, type Scene, sampleScene, tokenize } from "../data/world.ts";
import { hashSeed, Rng } from "../util/rng.ts";

export interface WorldBatch {
  /** NHWC in [-1, 1]. */
  images: Float32Array;
  tokens: Int32Array;
  mask: Float32Array;
  scenes: Scene[];
  captions: string[];
  /** Uniform timesteps in [0, T) (when `timesteps` is given). */
  t: Int32Array;
  /** Standard normal noise of the images' size. */
  noise: Float32Array;
  rngs: Rng[];
}

export interface BatchOptions {
  seed: number;
  task: string;
  step: number;
  from: number;
  to: number;
  size: number;
  ctx: number;
  twoObjectProb: number;
  captionDropout: number;
  timesteps?: number;
}

export function worldBatch(o: BatchOptions): WorldBatch {
  const n = o.to - o.from;
  const px = o.size * o.size * 3;
  const images = new Float32Array(n * px);
  const noise = new Float32Array(n * px);
  const tokens = new Int32Array(n * o.ctx);
  const mask = new Float32Array(n * o.ctx);
  const t = new Int32Array(n);
  const scenes: Scene[] = [];
  const captions: string[] = [];
  const rngs: Rng[] = [];
  for (let i = 0; i < n; i++) {
    const rng = new Rng(hashSeed(o.seed, o.task, o.step, o.from + i));
    const scene = sampleScene(rng, { twoObjectProb: o.twoObjectProb });
    const text = rng.next() < o.captionDropout ? "" : caption(scene, rng);
    renderInto(scene, images, i * px, o.size, true);
    const ids = tokenize(text, o.ctx);
    tokens.set(ids, i * o.ctx);
    for (let k = 0; k < o.ctx; k++) mask[i * o.ctx + k] = ids[k] === PAD_ID ? 0 : 1;
    if (o.timesteps) t[i] = rng.int(o.timesteps);
    for (let k = 0; k < px; k++) noise[i * px + k] = rng.normal();
    scenes.push(scene);
    captions.push(text);
    rngs.push(rng);
  }
  return { images, tokens, mask, scenes, captions, t, noise, rngs };
}
