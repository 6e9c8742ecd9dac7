// The embedded default world: procedurally generated captioned images whose ground truth is known exactly, so that
// a newcomer without GLIDE weights can train a small model zoo and score samples without a learned evaluator.
// Everything here is chosen for learnability by tiny models at 32x32: few, far-apart colours, fixed grid
// positions, two clearly different sizes, and a closed caption grammar with a word-level vocabulary.

import type { Rng } from "../util/rng.ts";

export const SHAPES = ["circle", "square", "triangle"] as const;
export type Shape = (typeof SHAPES)[number];

export const COLOURS = ["red", "orange", "yellow", "green", "cyan", "blue", "magenta", "white"] as const;
export type Colour = (typeof COLOURS)[number];

export type RGB = readonly [number, number, number];

/**
 * Saturated and far apart in RGB (closest pair, red/orange and orange/yellow, are still > 0.4 apart), so that
 * the oracle's nearest-palette decision survives noise and the colour drift of imperfect samples.
 */
export const PALETTE: Readonly<Record<Colour, RGB>> = {
  red: [0.9, 0.1, 0.1],
  orange: [1.0, 0.5, 0.0],
  yellow: [0.95, 0.95, 0.1],
  green: [0.1, 0.8, 0.15],
  cyan: [0.1, 0.85, 0.9],
  blue: [0.15, 0.3, 1.0],
  magenta: [0.85, 0.15, 0.9],
  white: [0.95, 0.95, 0.95],
};

export const SIZES = ["small", "large"] as const;
export type Size = (typeof SIZES)[number];

/**
 * Half-extent of an object as a fraction of a grid cell. Large objects leave a gap of 0.2 cell (> 2 px at 32x32)
 * between neighbours, so two objects never touch even after a 3x3 blur; small ones are still > 5 px across so
 * that their shape survives rasterisation.
 */
export const SIZE_HALF_EXTENT: Readonly<Record<Size, number>> = { small: 0.26, large: 0.4 };

export const GRID = 3;
/** Cell names, row-major from the top left; a cell is `row * GRID + col`. */
export const POSITIONS = [
  "top left",
  "top centre",
  "top right",
  "centre left",
  "centre",
  "centre right",
  "bottom left",
  "bottom centre",
  "bottom right",
] as const;
export type PositionName = (typeof POSITIONS)[number];

export const BACKGROUNDS = {
  dark: [0.12, 0.12, 0.12],
  black: [0.02, 0.02, 0.02],
  slate: [0.2, 0.22, 0.28],
} as const satisfies Record<string, RGB>;
export type BackgroundName = keyof typeof BACKGROUNDS;
export const DEFAULT_BACKGROUND: BackgroundName = "dark";

/** Relation of the first object to the second: "a red circle above a blue square" is `above`. */
export const RELATIONS = ["left of", "right of", "above", "below"] as const;
export type Relation = (typeof RELATIONS)[number];

export interface SceneObject {
  shape: Shape;
  colour: Colour;
  size: Size;
  /** 0 = top, 2 = bottom. */
  row: number;
  /** 0 = left, 2 = right. */
  col: number;
}

export interface Scene {
  objects: SceneObject[];
  background?: BackgroundName;
}

/** The attributes a caption or prompt constrains; absent fields are free. */
export interface ObjectSpec {
  shape?: Shape;
  colour?: Colour;
  size?: Size;
  row?: number;
  col?: number;
}

export interface SceneSpec {
  objects: ObjectSpec[];
  /** Relation of `objects[0]` to `objects[1]`. */
  relation?: Relation;
}

// ---------------------------------------------------------------------------------------------------------------
// Held-out compositions

/**
 * Colour-shape pairs never present in training scenes or captions (3 of the 24), for measuring compositional
 * generalisation: each colour and each shape is still seen in training, only the pairing is new.
 */
export const HELD_OUT: readonly { colour: Colour; shape: Shape }[] = [
  { colour: "blue", shape: "triangle" },
  { colour: "yellow", shape: "square" },
  { colour: "green", shape: "circle" },
];

export function isHeldOutPair(colour: Colour, shape: Shape): boolean {
  return HELD_OUT.some((p) => p.colour === colour && p.shape === shape);
}

/** True when any object names a held-out pair; an object with its colour or shape unspecified never does. */
export function isHeldOut(sceneOrSpec: Scene | SceneSpec): boolean {
  return sceneOrSpec.objects.some(
    (o) => o.colour !== undefined && o.shape !== undefined && isHeldOutPair(o.colour, o.shape),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Classifier labels: one class per (colour, shape) of a single-object scene

export const NUM_CLASSES = COLOURS.length * SHAPES.length;

export function classIndex(colour: Colour, shape: Shape): number {
  return COLOURS.indexOf(colour) * SHAPES.length + SHAPES.indexOf(shape);
}

export function classOf(index: number): { colour: Colour; shape: Shape } {
  if (!Number.isInteger(index) || index < 0 || index >= NUM_CLASSES) {
    throw new Error(`classOf: ${index} is not a class index in [0, ${NUM_CLASSES})`);
  }
  return { colour: COLOURS[Math.floor(index / SHAPES.length)]!, shape: SHAPES[index % SHAPES.length]! };
}

export const CLASS_NAMES: readonly string[] = Array.from({ length: NUM_CLASSES }, (_, i) => {
  const c = classOf(i);
  return `${c.colour} ${c.shape}`;
});

/** Labels of a scene's objects, in object order. */
export function sceneLabels(scene: Scene): number[] {
  return scene.objects.map((o) => classIndex(o.colour, o.shape));
}

/** The single class a spec pins down, or undefined when it has several objects or leaves colour or shape free. */
export function labelForSpec(spec: SceneSpec): number | undefined {
  if (spec.objects.length !== 1) return undefined;
  const o = spec.objects[0]!;
  return o.colour !== undefined && o.shape !== undefined ? classIndex(o.colour, o.shape) : undefined;
}

export function labelForPrompt(text: string): number | undefined {
  const spec = parseCaption(text);
  return spec ? labelForSpec(spec) : undefined;
}

// ---------------------------------------------------------------------------------------------------------------
// Constraints

export function relationHolds(
  a: { row: number; col: number },
  b: { row: number; col: number },
  rel: Relation,
) {
  switch (rel) {
    case "left of":
      return a.col < b.col;
    case "right of":
      return a.col > b.col;
    case "above":
      return a.row < b.row;
    case "below":
      return a.row > b.row;
  }
}

export function relationsBetween(a: SceneObject, b: SceneObject): Relation[] {
  return RELATIONS.filter((r) => relationHolds(a, b, r));
}

export function objectSatisfies(obj: SceneObject, spec: ObjectSpec): boolean {
  return (
    (spec.shape === undefined || spec.shape === obj.shape) &&
    (spec.colour === undefined || spec.colour === obj.colour) &&
    (spec.size === undefined || spec.size === obj.size) &&
    (spec.row === undefined || spec.row === obj.row) &&
    (spec.col === undefined || spec.col === obj.col)
  );
}

/** Same object count, and some one-to-one matching of spec objects to scene objects meets every constraint. */
export function satisfies(scene: Scene, spec: SceneSpec): boolean {
  const objs = scene.objects;
  if (objs.length !== spec.objects.length) return false;
  for (const perm of permutations(objs.length)) {
    const ok = spec.objects.every((s, i) => objectSatisfies(objs[perm[i]!]!, s));
    if (!ok) continue;
    if (spec.relation !== undefined) {
      const a = objs[perm[0]!];
      const b = objs[perm[1]!];
      if (!a || !b || !relationHolds(a, b, spec.relation)) continue;
    }
    return true;
  }
  return false;
}

export function permutations(n: number): number[][] {
  if (n <= 1) return [Array.from({ length: n }, (_, i) => i)];
  const out: number[][] = [];
  for (const rest of permutations(n - 1)) {
    for (let k = 0; k <= rest.length; k++) out.push([...rest.slice(0, k), n - 1, ...rest.slice(k)]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Sampling

export type HeldOutMode = "exclude" | "include" | "only";

export interface SampleOptions {
  /** Probability of a two-object scene (default 0.5); ignored when `numObjects` is given. */
  twoObjectProb?: number;
  numObjects?: 1 | 2;
  /** `exclude` (default) is the training distribution; `only` puts a held-out pair in every scene. */
  heldOut?: HeldOutMode;
  /** Backgrounds to draw from (default: the dark default only). */
  backgrounds?: readonly BackgroundName[];
}

const ALL_PAIRS: readonly { colour: Colour; shape: Shape }[] = COLOURS.flatMap((colour) =>
  SHAPES.map((shape) => ({ colour, shape })),
);
const TRAIN_PAIRS = ALL_PAIRS.filter((p) => !isHeldOutPair(p.colour, p.shape));

export function sampleScene(rng: Rng, opts: SampleOptions = {}): Scene {
  const mode = opts.heldOut ?? "exclude";
  const n = opts.numObjects ?? (rng.next() < (opts.twoObjectProb ?? 0.5) ? 2 : 1);
  const first = rng.int(GRID * GRID);
  let second = rng.int(GRID * GRID - 1);
  if (second >= first) second++;
  const cells = [first, second];
  const objects: SceneObject[] = [];
  for (let i = 0; i < n; i++) {
    const pool = mode === "exclude" ? TRAIN_PAIRS : mode === "only" && i === 0 ? HELD_OUT : ALL_PAIRS;
    const pair = rng.pick(pool);
    const cell = cells[i]!;
    objects.push({
      shape: pair.shape,
      colour: pair.colour,
      size: rng.pick(SIZES),
      row: Math.floor(cell / GRID),
      col: cell % GRID,
    });
  }
  // Under `only` the held-out object must not always come first, or captions would leak its slot.
  if (mode === "only" && n === 2 && rng.next() < 0.5) objects.reverse();
  const backgrounds = opts.backgrounds ?? [DEFAULT_BACKGROUND];
  const background = rng.pick(backgrounds);
  return background === DEFAULT_BACKGROUND ? { objects } : { objects, background };
}

/**
 * A random scene meeting `spec`, with unconstrained attributes drawn uniformly. Held-out pairs are avoided for
 * the free attributes unless `heldOut` is `include` or the spec itself leaves no other choice.
 */
export function sceneForSpec(
  spec: SceneSpec,
  rng: Rng,
  opts: { heldOut?: "exclude" | "include"; background?: BackgroundName } = {},
): Scene {
  const n = spec.objects.length;
  if (n < 1 || n > 2) throw new Error(`sceneForSpec: ${n} objects; the world has scenes of 1 or 2 objects`);
  const objects: SceneObject[] = [];
  const cellsFor = (s: ObjectSpec) =>
    Array.from({ length: GRID * GRID }, (_, c) => c).filter(
      (c) =>
        (s.row === undefined || Math.floor(c / GRID) === s.row) &&
        (s.col === undefined || c % GRID === s.col),
    );
  const cellPairs: number[][] = [];
  const c0 = cellsFor(spec.objects[0]!);
  if (n === 1) {
    for (const a of c0) cellPairs.push([a]);
  } else {
    const c1 = cellsFor(spec.objects[1]!);
    for (const a of c0) {
      for (const b of c1) {
        if (a === b) continue;
        const pa = { row: Math.floor(a / GRID), col: a % GRID };
        const pb = { row: Math.floor(b / GRID), col: b % GRID };
        if (spec.relation === undefined || relationHolds(pa, pb, spec.relation)) cellPairs.push([a, b]);
      }
    }
  }
  if (cellPairs.length === 0) throw new Error(`sceneForSpec: no placement satisfies ${JSON.stringify(spec)}`);
  const cells = rng.pick(cellPairs);
  for (let i = 0; i < n; i++) {
    const s = spec.objects[i]!;
    const fits = ALL_PAIRS.filter(
      (p) =>
        (s.colour === undefined || p.colour === s.colour) && (s.shape === undefined || p.shape === s.shape),
    );
    const allowed = opts.heldOut === "include" ? fits : fits.filter((p) => !isHeldOutPair(p.colour, p.shape));
    const pair = rng.pick(allowed.length > 0 ? allowed : fits);
    const cell = cells[i]!;
    objects.push({
      shape: pair.shape,
      colour: pair.colour,
      size: s.size ?? rng.pick(SIZES),
      row: Math.floor(cell / GRID),
      col: cell % GRID,
    });
  }
  const bg = opts.background ?? DEFAULT_BACKGROUND;
  return bg === DEFAULT_BACKGROUND ? { objects } : { objects, background: bg };
}

// ---------------------------------------------------------------------------------------------------------------
// Rendering

interface Mask {
  x0: number;
  y0: number;
  w: number;
  h: number;
  /** Coverage in [0, 1], row-major over the w x h box. */
  cov: Float32Array;
}

/** Supersamples per pixel side: 256 samples resolve coverage to 1/256, below 8-bit PNG quantisation. */
const SUPERSAMPLE = 16;
const maskCache = new Map<string, Mask>();

/** Centre and half-extent in pixels; shared with the oracle so that both agree on the geometry. */
export function objectGeometry(
  obj: { size: Size; row: number; col: number },
  imageSize: number,
): { cx: number; cy: number; half: number } {
  const cell = imageSize / GRID;
  return { cx: (obj.col + 0.5) * cell, cy: (obj.row + 0.5) * cell, half: SIZE_HALF_EXTENT[obj.size] * cell };
}

/** Whether offset (x, y) from an object's centre lies inside it; the single definition of each shape. */
export function insideShape(shape: Shape, x: number, y: number, half: number): boolean {
  switch (shape) {
    case "circle":
      return x * x + y * y <= half * half;
    case "square":
      return Math.abs(x) <= half && Math.abs(y) <= half;
    case "triangle":
      // Apex up, base down; as wide as it is tall so that its bounding box matches the other shapes'.
      return y <= half && Math.abs(x) <= (y + half) / 2;
  }
}

function maskFor(obj: SceneObject, imageSize: number): Mask {
  const key = `${obj.shape}|${obj.size}|${obj.row}|${obj.col}|${imageSize}`;
  const hit = maskCache.get(key);
  if (hit) return hit;
  const { cx, cy, half } = objectGeometry(obj, imageSize);
  const x0 = Math.max(0, Math.floor(cx - half));
  const y0 = Math.max(0, Math.floor(cy - half));
  const x1 = Math.min(imageSize, Math.ceil(cx + half));
  const y1 = Math.min(imageSize, Math.ceil(cy + half));
  const w = x1 - x0;
  const h = y1 - y0;
  const cov = new Float32Array(w * h);
  const step = 1 / SUPERSAMPLE;
  for (let py = 0; py < h; py++) {
    for (let px = 0; px < w; px++) {
      let hits = 0;
      for (let sy = 0; sy < SUPERSAMPLE; sy++) {
        const y = y0 + py + (sy + 0.5) * step - cy;
        for (let sx = 0; sx < SUPERSAMPLE; sx++) {
          if (insideShape(obj.shape, x0 + px + (sx + 0.5) * step - cx, y, half)) hits++;
        }
      }
      cov[py * w + px] = hits / (SUPERSAMPLE * SUPERSAMPLE);
    }
  }
  const mask = { x0, y0, w, h, cov };
  maskCache.set(key, mask);
  return mask;
}

/**
 * Render into `out` at `offset` (HWC RGB), so that training can fill a batch buffer without allocating.
 * `signed` writes [-1, 1] instead of [0, 1].
 */
export function renderInto(scene: Scene, out: Float32Array, offset = 0, size = 32, signed = false): void {
  const bg = BACKGROUNDS[scene.background ?? DEFAULT_BACKGROUND];
  const n = size * size;
  if (offset + n * 3 > out.length) throw new Error("renderInto: output buffer too small");
  const [br, bgc, bb] = bg;
  for (let i = 0, o = offset; i < n; i++, o += 3) {
    out[o] = br;
    out[o + 1] = bgc;
    out[o + 2] = bb;
  }
  // Objects never overlap, so blending each over the background in any order gives the same image.
  for (const obj of scene.objects) {
    const m = maskFor(obj, size);
    const [r, g, b] = PALETTE[obj.colour];
    for (let y = 0; y < m.h; y++) {
      const row = offset + ((m.y0 + y) * size + m.x0) * 3;
      for (let x = 0; x < m.w; x++) {
        const a = m.cov[y * m.w + x]!;
        if (a === 0) continue;
        const o = row + x * 3;
        out[o] = out[o]! + a * (r - out[o]!);
        out[o + 1] = out[o + 1]! + a * (g - out[o + 1]!);
        out[o + 2] = out[o + 2]! + a * (b - out[o + 2]!);
      }
    }
  }
  if (signed) {
    for (let i = offset, end = offset + n * 3; i < end; i++) out[i] = out[i]! * 2 - 1;
  }
}

/** HWC RGB in [0, 1], anti-aliased, deterministic. */
export function render(scene: Scene, size = 32): Float32Array {
  const out = new Float32Array(size * size * 3);
  renderInto(scene, out, 0, size);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Captions

/** Position phrases and the constraint each states. Partial phrases ("on the left") constrain one axis only. */
const POSITION_PHRASES: readonly { text: string; row?: number; col?: number }[] = [
  ...POSITIONS.map((name, cell) => ({
    text: `in the ${name}`,
    row: Math.floor(cell / GRID),
    col: cell % GRID,
  })),
  { text: "on the left", col: 0 },
  { text: "on the right", col: 2 },
  { text: "at the top", row: 0 },
  { text: "at the bottom", row: 2 },
];

export function positionPhrases(row: number, col: number): string[] {
  return POSITION_PHRASES.filter(
    (p) => (p.row === undefined || p.row === row) && (p.col === undefined || p.col === col),
  ).map((p) => p.text);
}

function positionPhrase(spec: ObjectSpec): string {
  if (spec.row === undefined && spec.col === undefined) return "";
  const hit = POSITION_PHRASES.find((p) => p.row === spec.row && p.col === spec.col);
  if (!hit) throw new Error(`no caption phrase for row=${spec.row} col=${spec.col}`);
  return hit.text;
}

const RELATION_TEXT: Readonly<Record<Relation, string>> = {
  "left of": "to the left of",
  "right of": "to the right of",
  above: "above",
  below: "below",
};

function withArticle(words: string[]): string {
  const first = words[0] ?? "";
  return `${/^[aeiou]/.test(first) ? "an" : "a"} ${words.join(" ")}`;
}

function nounPhrase(s: ObjectSpec, plural = false): string[] {
  const words: string[] = [];
  if (s.size) words.push(s.size);
  if (s.colour) words.push(s.colour);
  words.push(s.shape ? (plural ? `${s.shape}s` : s.shape) : plural ? "objects" : "object");
  return words;
}

/**
 * Canonical text of a spec; `parseCaption(specText(s))` gives back `s`. Two identical objects without positions
 * read "two red circles".
 */
export function specText(spec: SceneSpec): string {
  const [a, b] = spec.objects;
  if (!a) throw new Error("specText: a spec needs at least one object");
  const np = (s: ObjectSpec) => [withArticle(nounPhrase(s)), positionPhrase(s)].filter(Boolean).join(" ");
  if (!b) return np(a);
  if (spec.relation !== undefined) {
    return `${withArticle(nounPhrase(a))} ${RELATION_TEXT[spec.relation]} ${withArticle(nounPhrase(b))}`;
  }
  const samePhrase = a.shape === b.shape && a.colour === b.colour && a.size === b.size;
  if (samePhrase && positionPhrase(a) === "" && positionPhrase(b) === "") {
    return `two ${nounPhrase(a, true).join(" ")}`;
  }
  return `${np(a)} and ${np(b)}`;
}

/** Which attributes a caption level states. Levels grow in detail; 3 and 4 add positions or a relation. */
export const CAPTION_LEVELS = 5;

type AttrSet = readonly ("shape" | "colour" | "size")[];
const LEVEL_ATTRS: readonly AttrSet[] = [
  ["shape"],
  ["colour", "shape"],
  ["size", "colour", "shape"],
  ["colour", "shape"],
  ["size", "colour", "shape"],
];

function project(obj: SceneObject, attrs: AttrSet): ObjectSpec {
  const s: ObjectSpec = {};
  for (const k of attrs) (s as Record<string, unknown>)[k] = obj[k];
  return s;
}

/**
 * One caption of `scene` at a detail level in [0, CAPTION_LEVELS), random when omitted:
 * 0 "a circle", 1 "a red circle", 2 "a small red circle", 3 "a red circle on the left" or, for two objects,
 * a relation or per-object positions, 4 "a small red circle in the top left" / "... above a large blue square".
 */
export function caption(scene: Scene, rng: Rng, level?: number): string {
  const lv = level ?? rng.int(CAPTION_LEVELS);
  const attrs = LEVEL_ATTRS[lv];
  if (!attrs) throw new Error(`caption: level ${lv} outside [0, ${CAPTION_LEVELS})`);
  const objs = rng.next() < 0.5 ? scene.objects : [...scene.objects].reverse();
  const [a, b] = objs;
  if (!a) throw new Error("caption: scene has no objects");
  const withPos = (o: SceneObject): ObjectSpec => {
    const phrase = rng.pick(positionPhrases(o.row, o.col));
    const p = POSITION_PHRASES.find((x) => x.text === phrase)!;
    return {
      ...project(o, attrs),
      ...(p.row !== undefined && { row: p.row }),
      ...(p.col !== undefined && { col: p.col }),
    };
  };
  if (!b) return specText({ objects: [lv >= 3 ? withPos(a) : project(a, attrs)] });
  if (lv < 3) return specText({ objects: [project(a, attrs), project(b, attrs)] });
  // Per-object positions would overflow a 16-token context with sizes, so level 4 always uses a relation.
  if (lv === 3 && rng.next() < 0.5) return specText({ objects: [withPos(a), withPos(b)] });
  const relation = rng.pick(relationsBetween(a, b));
  return specText({ objects: [project(a, attrs), project(b, attrs)], relation });
}

/** Every caption the templates can produce for `scene`, deduplicated, in a fixed order. */
export function captionsFor(scene: Scene): string[] {
  const out = new Set<string>();
  const attrSets: AttrSet[] = [
    ["shape"],
    ["colour", "shape"],
    ["size", "shape"],
    ["size", "colour", "shape"],
  ];
  const posSpecs = (o: SceneObject, attrs: AttrSet): ObjectSpec[] =>
    POSITION_PHRASES.filter(
      (p) => (p.row === undefined || p.row === o.row) && (p.col === undefined || p.col === o.col),
    ).map((p) => ({
      ...project(o, attrs),
      ...(p.row !== undefined && { row: p.row }),
      ...(p.col !== undefined && { col: p.col }),
    }));
  const [a, b] = scene.objects;
  if (!a) return [];
  for (const attrs of attrSets) {
    if (!b) {
      out.add(specText({ objects: [project(a, attrs)] }));
      for (const s of posSpecs(a, attrs)) out.add(specText({ objects: [s] }));
      continue;
    }
    for (const [x, y] of [
      [a, b],
      [b, a],
    ] as const) {
      out.add(specText({ objects: [project(x, attrs), project(y, attrs)] }));
      for (const relation of relationsBetween(x, y)) {
        out.add(specText({ objects: [project(x, attrs), project(y, attrs)], relation }));
      }
      if (attrs.includes("size")) continue;
      for (const sx of posSpecs(x, attrs)) {
        for (const sy of posSpecs(y, attrs)) out.add(specText({ objects: [sx, sy] }));
      }
    }
  }
  return [...out];
}

// ---------------------------------------------------------------------------------------------------------------
// Parsing

/** Accepted spellings folded onto the canonical vocabulary, both by the parser and the tokenizer. */
const SYNONYMS: Readonly<Record<string, string>> = {
  an: "a",
  big: "large",
  tiny: "small",
  little: "small",
  center: "centre",
  middle: "centre",
  purple: "magenta",
  under: "below",
  beneath: "below",
  one: "a",
};

export function words(text: string): string[] {
  return text
    .toLowerCase()
    .split(/[^a-z]+/)
    .filter((w) => w.length > 0)
    .map((w) => SYNONYMS[w] ?? w);
}

const SHAPE_WORDS = new Map<string, Shape>(SHAPES.flatMap((s) => [[s, s] as const, [`${s}s`, s] as const]));

function parseNounPhrase(ws: string[]): ObjectSpec | undefined {
  const s: ObjectSpec = {};
  let left = false;
  let right = false;
  let top = false;
  let bottom = false;
  let centre = false;
  let any = false;
  for (const w of ws) {
    const shape = SHAPE_WORDS.get(w);
    if (shape) {
      s.shape = shape;
      any = true;
    } else if ((COLOURS as readonly string[]).includes(w)) {
      s.colour = w as Colour;
      any = true;
    } else if ((SIZES as readonly string[]).includes(w)) {
      s.size = w as Size;
      any = true;
    } else if (w === "left") left = true;
    else if (w === "right") right = true;
    else if (w === "top") top = true;
    else if (w === "bottom") bottom = true;
    else if (w === "centre") centre = true;
    else if (w === "object" || w === "objects" || w === "shape" || w === "shapes") any = true;
  }
  // "on the left" pins the column only; "centre" pins whichever axes the other position words leave open.
  const col = left ? 0 : right ? 2 : centre ? 1 : undefined;
  const row = top ? 0 : bottom ? 2 : centre ? 1 : undefined;
  if (col !== undefined) s.col = col;
  if (row !== undefined) s.row = row;
  if (left || right || top || bottom || centre) any = true;
  return any ? s : undefined;
}

const RELATION_PATTERNS: readonly { words: string[]; relation: Relation }[] = [
  { words: ["to", "the", "left", "of"], relation: "left of" },
  { words: ["to", "the", "right", "of"], relation: "right of" },
  { words: ["left", "of"], relation: "left of" },
  { words: ["right", "of"], relation: "right of" },
  { words: ["above"], relation: "above" },
  { words: ["below"], relation: "below" },
];

/**
 * Caption or prompt to the constraints it states: the inverse of the caption templates, lenient about filler
 * words and synonyms. Undefined when no object can be made out.
 */
export function parseCaption(text: string): SceneSpec | undefined {
  const ws = words(text);
  for (let i = 0; i < ws.length; i++) {
    for (const pat of RELATION_PATTERNS) {
      if (pat.words.every((w, k) => ws[i + k] === w)) {
        const a = parseNounPhrase(ws.slice(0, i));
        const b = parseNounPhrase(ws.slice(i + pat.words.length));
        if (!a || !b) return undefined;
        return { objects: [a, b], relation: pat.relation };
      }
    }
  }
  const and = ws.indexOf("and");
  if (and >= 0) {
    const a = parseNounPhrase(ws.slice(0, and));
    const b = parseNounPhrase(ws.slice(and + 1));
    if (!a || !b) return undefined;
    return { objects: [a, b] };
  }
  const one = parseNounPhrase(ws);
  if (!one) return undefined;
  return ws[0] === "two" ? { objects: [one, { ...one }] } : { objects: [one] };
}

// ---------------------------------------------------------------------------------------------------------------
// Vocabulary

export const PAD = "<pad>";
export const UNK = "<unk>";
export const END = "<end>";
export const PAD_ID = 0;
export const UNK_ID = 1;
export const END_ID = 2;

/** Every word the caption templates use, after synonym folding, behind the three special tokens. */
export const VOCAB: readonly string[] = [
  PAD,
  UNK,
  END,
  "a",
  "two",
  "and",
  "in",
  "on",
  "at",
  "to",
  "of",
  "the",
  "above",
  "below",
  "left",
  "right",
  "top",
  "bottom",
  "centre",
  ...SIZES,
  ...COLOURS,
  ...SHAPES,
  ...SHAPES.map((s) => `${s}s`),
  "object",
  "objects",
];
export const VOCAB_SIZE = VOCAB.length;
const WORD_ID = new Map(VOCAB.map((w, i) => [w, i]));

/** Word-level ids, then `<end>`, padded with `<pad>` (id 0) to `ctx`; overlong text is cut but keeps `<end>`. */
export function tokenize(text: string, ctx = 16): Int32Array {
  const ids = words(text).map((w) => WORD_ID.get(w) ?? UNK_ID);
  const out = new Int32Array(ctx);
  const n = Math.min(ids.length, ctx - 1);
  for (let i = 0; i < n; i++) out[i] = ids[i]!;
  if (ctx > 0) out[n] = END_ID;
  return out;
}

export function detokenize(ids: ArrayLike<number>): string {
  const out: string[] = [];
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (id === END_ID) break;
    if (id === PAD_ID) continue;
    out.push(VOCAB[id] ?? UNK);
  }
  return out.join(" ");
}
