// The project's seeded noise: every sampler draws through a NoiseSource so that a seed gives the same trajectory on
// every backend and paired cells see the same noise.
import { hashSeed, Rng } from "../../util/rng.ts";
import { tf } from "../engine.ts";
import type { NoiseSource } from "../types.ts";

/**
 * Deterministic standard normal noise from a pure-JS PRNG, so that a seed gives the same trajectory on every
 * backend. Each iteration k has its own stream, which makes the noise independent of how many draws other steps made.
 */
export function seededNoise(seed: number | string): NoiseSource {
  return (k, shape) => {
    const rng = new Rng(hashSeed(seed, "sampler-noise", k));
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = rng.normal();
    return tf.tensor4d(data, shape as [number, number, number, number]);
  };
}
