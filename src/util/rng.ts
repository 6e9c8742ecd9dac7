// Small seeded PRNG. Math.random cannot be seeded, and every data stream (training scenes, suites, oracle checks)
// must be reproducible from a config seed alone, so all randomness in src/data goes through here.

/** murmur3's finaliser: full avalanche so that neighbouring seeds give unrelated streams. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Derive a 32-bit seed from any mix of strings and numbers, e.g. `hashSeed(seed, "train", epoch)`. Parts are
 * tagged with their type and separated, so ("a", 1) and ("a1") and (1, "a") all differ.
 */
export function hashSeed(...parts: (string | number)[]): number {
  let h = 0x811c9dc5;
  for (const part of parts) {
    const text = typeof part === "number" ? `n${part}` : `s${part}`;
    for (let i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 0x01000193);
    }
    h = fmix32(h ^ 0x9e3779b9);
  }
  return h >>> 0;
}

/** mulberry32: 32 bits of state, fast, and plenty for sampling scenes (not for cryptography). */
export class Rng {
  private state: number;
  private spare: number | undefined;

  constructor(seed: number | string = 0) {
    this.state = typeof seed === "number" && Number.isInteger(seed) ? seed >>> 0 : hashSeed(seed);
    // A zero or tiny seed would start in a low-entropy region of the sequence; one mixing step avoids that.
    this.state = fmix32(this.state ^ 0x6d2b79f5);
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (!(n > 0)) throw new Error(`Rng.int: n must be positive, got ${n}`);
    return Math.floor(this.next() * n);
  }

  pick<T>(arr: readonly T[]): T {
    if (arr.length === 0) throw new Error("Rng.pick: empty array");
    return arr[this.int(arr.length)]!;
  }

  /** Standard normal via Box-Muller; the second value of each pair is kept for the next call. */
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** In-place Fisher-Yates; returns the same array for chaining. */
  shuffle<T>(arr: T[]): T[] {
    for (let i = arr.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = arr[i]!;
      arr[i] = arr[j]!;
      arr[j] = tmp;
    }
    return arr;
  }

  /** An independent child stream, so that adding draws to one consumer does not shift another's sequence. */
  fork(...parts: (string | number)[]): Rng {
    return new Rng(hashSeed(this.state, ...parts));
  }
}
