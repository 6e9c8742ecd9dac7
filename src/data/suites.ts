// Prompt suites in the manner of GenEval: each tests one compositional skill with prompts whose constraints are
// known exactly, so the oracle can score a sample without a learned detector.

import { hashSeed, Rng } from "../util/rng.ts";
import {
  COLOURS,
  type Colour,
  GRID,
  HELD_OUT,
  isHeldOut,
  isHeldOutPair,
  type ObjectSpec,
  POSITIONS,
  RELATIONS,
  type SceneSpec,
  SHAPES,
  type Shape,
  SIZES,
  specText,
} from "./world.ts";

export const SUITE_NAMES = [
  "single_object",
  "colour",
  "position",
  "two_objects",
  "attribute_binding",
  "relation",
  "held_out",
] as const;
export type SuiteName = (typeof SUITE_NAMES)[number];

export interface Prompt {
  /** `${suite}/${i}`, unique within one `suite()` result. */
  id: string;
  suite: SuiteName;
  text: string;
  spec: SceneSpec;
  /** Names a held-out colour-shape pair. */
  heldOut: boolean;
}

export interface SuiteOptions {
  /** Number of prompts; omitted gives every distinct prompt once, in canonical order. */
  n?: number;
  seed?: number;
  /** Keep prompts naming held-out pairs (always true for `held_out`, irrelevant where colour is unstated). */
  includeHeldOut?: boolean;
}

type Pair = { colour: Colour; shape: Shape };
const PAIRS: readonly Pair[] = COLOURS.flatMap((colour) => SHAPES.map((shape) => ({ colour, shape })));

/** Positions with a caption phrase: the nine cells plus the four one-axis phrases ("on the left"). */
const POSITION_SPECS: readonly Pick<ObjectSpec, "row" | "col">[] = [
  ...POSITIONS.map((_, cell) => ({ row: Math.floor(cell / GRID), col: cell % GRID })),
  { col: 0 },
  { col: GRID - 1 },
  { row: 0 },
  { row: GRID - 1 },
];

function distinctPairs(pool: readonly Pair[], bothDiffer: boolean): [Pair, Pair][] {
  const out: [Pair, Pair][] = [];
  for (const a of pool) {
    for (const b of pool) {
      const differ = bothDiffer
        ? a.colour !== b.colour && a.shape !== b.shape
        : a.colour !== b.colour || a.shape !== b.shape;
      if (differ) out.push([a, b]);
    }
  }
  return out;
}

/** Every distinct spec of a suite, in a fixed order. */
export function suiteSpecs(name: SuiteName, includeHeldOut = false): SceneSpec[] {
  const pairs = includeHeldOut ? PAIRS : PAIRS.filter((p) => !isHeldOutPair(p.colour, p.shape));
  switch (name) {
    case "single_object":
      return SHAPES.map((shape) => ({ objects: [{ shape }] }));
    case "colour":
      return pairs.map((p) => ({ objects: [{ ...p }] }));
    case "position":
      return pairs.flatMap((p) => POSITION_SPECS.map((pos) => ({ objects: [{ ...p, ...pos }] })));
    case "two_objects":
      return SHAPES.flatMap((a) =>
        SHAPES.filter((b) => b !== a).map((b) => ({ objects: [{ shape: a }, { shape: b }] })),
      );
    case "attribute_binding":
      // Both colour and shape differ, so a sample that swaps the attributes between objects is caught.
      return distinctPairs(pairs, true).map(([a, b]) => ({ objects: [{ ...a }, { ...b }] }));
    case "relation":
      return distinctPairs(pairs, false).flatMap(([a, b]) =>
        RELATIONS.map((relation) => ({ objects: [{ ...a }, { ...b }], relation })),
      );
    case "held_out": {
      const seen = PAIRS.filter((p) => !isHeldOutPair(p.colour, p.shape));
      const out: SceneSpec[] = [];
      for (const h of HELD_OUT) {
        out.push({ objects: [{ ...h }] });
        for (const size of SIZES) out.push({ objects: [{ size, ...h }] });
        for (const pos of POSITION_SPECS) out.push({ objects: [{ ...h, ...pos }] });
        for (const p of seen) {
          if (p.colour === h.colour || p.shape === h.shape) continue;
          out.push({ objects: [{ ...h }, { ...p }] }, { objects: [{ ...p }, { ...h }] });
          for (const relation of RELATIONS) out.push({ objects: [{ ...h }, { ...p }], relation });
        }
      }
      return out;
    }
  }
}

/**
 * A deterministic prompt list. Without `n`: every distinct prompt once, canonical order. With `n`: a seeded
 * shuffle, cycled (each cycle reshuffled) when `n` exceeds the number of distinct prompts.
 */
export function suite(name: SuiteName, opts: SuiteOptions = {}): Prompt[] {
  if (!(SUITE_NAMES as readonly string[]).includes(name)) {
    throw new Error(`unknown suite '${name}'; expected one of ${SUITE_NAMES.join(", ")}`);
  }
  const specs = suiteSpecs(name, name === "held_out" || (opts.includeHeldOut ?? false));
  let chosen: SceneSpec[] = specs;
  if (opts.n !== undefined) {
    const rng = new Rng(hashSeed(opts.seed ?? 0, "suite", name));
    chosen = [];
    while (chosen.length < opts.n) chosen.push(...rng.shuffle([...specs]).slice(0, opts.n - chosen.length));
  }
  return chosen.map((spec, i) => ({
    id: `${name}/${i}`,
    suite: name,
    text: specText(spec),
    spec,
    heldOut: isHeldOut(spec),
  }));
}
