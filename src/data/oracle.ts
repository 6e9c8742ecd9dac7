// Deterministic analyser that reads the world's objects back from pixels. Because the world's ground truth is
// known exactly, this replaces GenEval's learned detector: a sample is scored against the constraints its prompt
// states (count, shape, colour, size, position, relation) without any model in the loop.

import { hashSeed, Rng } from "../util/rng.ts";
import { SUITE_NAMES, type SuiteName, suite } from "./suites.ts";
import {
  COLOURS,
  type Colour,
  GRID,
  insideShape,
  PALETTE,
  type RGB,
  relationHolds,
  render,
  type SceneSpec,
  SHAPES,
  type Shape,
  SIZE_HALF_EXTENT,
  type Size,
  sceneForSpec,
} from "./world.ts";

export interface DetectedObject {
  shape: Shape;
  colour: Colour;
  size: Size;
  row: number;
  col: number;
  /** Pixels in the thresholded component. */
  area: number;
  /** Bounding box of the thresholded component, inclusive pixel indices. */
  x0: number;
  y0: number;
  x1: number;
  y1: number;
  /** Fitted centre and half-extent in pixels (the renderer's geometry: a triangle's centre is its box centre). */
  cx: number;
  cy: number;
  half: number;
  /** Robust (median) colour of the component's interior, in [0, 1]. */
  rgb: RGB;
  /** Distance from `rgb` to the chosen palette colour: large values flag off-palette samples. */
  colourDistance: number;
  /** Mean squared residual of the best shape template over the fitting window; large for malformed blobs. */
  residual: number;
}

export interface AnalyseOptions {
  /** Pixels are in [-1, 1] rather than [0, 1]. */
  signed?: boolean;
  /** Components smaller than this many pixels are specks and ignored (default scales with image size). */
  minArea?: number;
}

/** Per-channel median of the border pixels: objects never cover most of the border, so this is the background. */
function estimateBackground(px: Float32Array, size: number): RGB {
  const rs: number[] = [];
  const gs: number[] = [];
  const bs: number[] = [];
  const take = (x: number, y: number) => {
    const o = (y * size + x) * 3;
    rs.push(px[o]!);
    gs.push(px[o + 1]!);
    bs.push(px[o + 2]!);
  };
  for (let i = 0; i < size; i++) {
    take(i, 0);
    take(i, size - 1);
    if (i > 0 && i < size - 1) {
      take(0, i);
      take(size - 1, i);
    }
  }
  return [median(rs), median(gs), median(bs)];
}

function median(xs: number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Area of each shape in units of half-extent squared, to turn a measured area into a half-extent. */
const AREA_FACTOR: Readonly<Record<Shape, number>> = { circle: Math.PI, square: 4, triangle: 2 };
/** Centroid below the geometric centre, in half-extents: only the apex-up triangle is lopsided. */
const CENTROID_DROP: Readonly<Record<Shape, number>> = { circle: 0, square: 0, triangle: 1 / 3 };
const TEMPLATE_SAMPLES = 4;

/**
 * Detect the objects in an HWC RGB image.
 *
 * Segmentation: a pixel is foreground when it lies more than halfway from the background towards some palette
 * colour (projection onto that colour's direction). Unlike a plain distance threshold this treats dark and bright
 * colours alike and keeps the anti-aliased seam between two neighbours background.
 *
 * Description: hard-mask features (fill ratio, bounding box) flip with single edge pixels at 32x32, so each
 * component is described softly instead. Its coverage map (projection onto its own colour) is compared with each
 * shape's ideal coverage at the same area and centroid; the best fit gives the shape, and its half-extent the size.
 * Under Gaussian noise this least-squares choice is the likelihood-maximising one.
 */
export function analyse(img: Float32Array, size: number, opts: AnalyseOptions = {}): DetectedObject[] {
  const n = size * size;
  if (img.length !== n * 3)
    throw new Error(`analyse: expected ${n * 3} values for ${size}x${size}, got ${img.length}`);
  let px = img;
  if (opts.signed) {
    px = new Float32Array(img.length);
    for (let i = 0; i < img.length; i++) px[i] = (img[i]! + 1) / 2;
  }
  const bg = estimateBackground(px, size);
  const dirs: number[] = [];
  let minNorm = Number.POSITIVE_INFINITY;
  for (const c of COLOURS) {
    const d = colourDirection(PALETTE[c], bg);
    if (!d) continue;
    dirs.push(d[0], d[1], d[2]);
    minNorm = Math.min(minNorm, 1 / Math.hypot(d[0], d[1], d[2]));
  }
  // Only whether coverage exceeds 1/2 (and, inside objects, 0.8) matters below, so pixels too close to the
  // background to reach 1/2 along any colour skip the projections.
  const nearBg = (0.5 * minNorm) ** 2;
  const alpha = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const r = px[i * 3]! - bg[0];
    const g = px[i * 3 + 1]! - bg[1];
    const b = px[i * 3 + 2]! - bg[2];
    if (r * r + g * g + b * b < nearBg) continue;
    let best = 0;
    for (let k = 0; k < dirs.length; k += 3) {
      const a = r * dirs[k]! + g * dirs[k + 1]! + b * dirs[k + 2]!;
      if (a > best) best = a;
    }
    alpha[i] = best;
  }

  // Specks: under a quarter of the smallest object (a small triangle), so noise and sampling debris are dropped.
  const cell = size / GRID;
  const smallHalf = SIZE_HALF_EXTENT.small * cell;
  const minArea = opts.minArea ?? Math.max(3, Math.round(0.25 * 2 * smallHalf * smallHalf));
  const labels = new Int32Array(n).fill(-1);
  const stack = new Int32Array(n);
  const components: number[][] = [];
  let next = 0;
  for (let start = 0; start < n; start++) {
    if (labels[start] !== -1 || alpha[start]! <= 0.5) continue;
    // 4-connectivity: a noisy pixel in the gap between two objects can bridge them diagonally under 8.
    const members: number[] = [];
    let sp = 0;
    stack[sp++] = start;
    labels[start] = next;
    while (sp > 0) {
      const i = stack[--sp]!;
      members.push(i);
      const x = i % size;
      for (let k = 0; k < 4; k++) {
        const j =
          k === 0
            ? x > 0
              ? i - 1
              : -1
            : k === 1
              ? x < size - 1
                ? i + 1
                : -1
              : k === 2
                ? i - size
                : i + size;
        if (j >= 0 && j < n && labels[j] === -1 && alpha[j]! > 0.5) {
          labels[j] = next;
          stack[sp++] = j;
        }
      }
    }
    components[next] = members;
    next++;
  }
  const found: DetectedObject[] = [];
  components.forEach((members, id) => {
    if (members.length >= minArea) found.push(describe(members, id, labels, px, alpha, bg, size));
  });
  return found;
}

/** Direction scaled so that the projection of (pixel - background) reads as coverage: 0 background, 1 colour. */
function colourDirection(colour: RGB, bg: RGB): readonly [number, number, number] | undefined {
  const d = [colour[0] - bg[0], colour[1] - bg[1], colour[2] - bg[2]] as const;
  const norm2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
  // A palette colour indistinguishable from the background cannot be detected at all.
  return norm2 > 0.01 ? [d[0] / norm2, d[1] / norm2, d[2] / norm2] : undefined;
}

function describe(
  members: number[],
  id: number,
  labels: Int32Array,
  px: Float32Array,
  alpha: Float32Array,
  bg: RGB,
  size: number,
): DetectedObject {
  let x0 = size;
  let y0 = size;
  let x1 = -1;
  let y1 = -1;
  for (const i of members) {
    const x = i % size;
    const y = (i - x) / size;
    if (x < x0) x0 = x;
    if (x > x1) x1 = x;
    if (y < y0) y0 = y;
    if (y > y1) y1 = y;
  }

  // Interior pixels carry the object's true colour; edge pixels are blends with the background.
  const interior = members.filter((i) => alpha[i]! >= 0.8);
  const use = interior.length >= 3 ? interior : members;
  const rgb: RGB = [
    median(use.map((i) => px[i * 3]!)),
    median(use.map((i) => px[i * 3 + 1]!)),
    median(use.map((i) => px[i * 3 + 2]!)),
  ];
  let colour: Colour = COLOURS[0];
  let colourDistance = Number.POSITIVE_INFINITY;
  for (const c of COLOURS) {
    const p = PALETTE[c];
    const d = Math.hypot(rgb[0] - p[0], rgb[1] - p[1], rgb[2] - p[2]);
    if (d < colourDistance) {
      colourDistance = d;
      colour = c;
    }
  }

  // Soft coverage in a window around the component, read along the chosen palette colour. (The measured colour
  // would forgive tinted samples, but on small blurred objects it is itself diluted and inflates the coverage.)
  // Pixels of other components are someone else's: zero.
  const dir = colourDirection(PALETTE[colour], bg) ?? colourDirection(rgb, bg) ?? [0, 0, 0];
  const pad = 2;
  const wx0 = Math.max(0, x0 - pad);
  const wy0 = Math.max(0, y0 - pad);
  const wx1 = Math.min(size - 1, x1 + pad);
  const wy1 = Math.min(size - 1, y1 + pad);
  const ww = wx1 - wx0 + 1;
  const wh = wy1 - wy0 + 1;
  const cov = new Float32Array(ww * wh);
  let m0 = 0;
  let mx = 0;
  let my = 0;
  for (let y = wy0; y <= wy1; y++) {
    for (let x = wx0; x <= wx1; x++) {
      const i = y * size + x;
      const lab = labels[i]!;
      let a = 0;
      if (lab === -1 || lab === id) {
        a =
          (px[i * 3]! - bg[0]) * dir[0] +
          (px[i * 3 + 1]! - bg[1]) * dir[1] +
          (px[i * 3 + 2]! - bg[2]) * dir[2];
      }
      cov[(y - wy0) * ww + (x - wx0)] = a;
      m0 += a;
      mx += a * (x + 0.5);
      my += a * (y + 0.5);
    }
  }
  // Guard against a window whose noise sums to nothing; the thresholded area is a fine fallback.
  const area = m0 > 1 ? m0 : members.length;
  const gx = m0 > 1 ? mx / m0 : (x0 + x1 + 1) / 2;
  const gy = m0 > 1 ? my / m0 : (y0 + y1 + 1) / 2;

  let best: { shape: Shape; half: number; cy: number; err: number } | undefined;
  for (const shape of SHAPES) {
    const half = Math.sqrt(area / AREA_FACTOR[shape]);
    const cy = gy - CENTROID_DROP[shape] * half;
    const err = templateError(cov, wx0, wy0, ww, wh, shape, gx, cy, half);
    if (!best || err < best.err) best = { shape, half, cy, err };
  }
  const fit = best!;
  const cell = size / GRID;
  // Midway between the two rendered half-extents, so the size call does not depend on the shape.
  const sizeThreshold = ((SIZE_HALF_EXTENT.small + SIZE_HALF_EXTENT.large) / 2) * cell;
  const clampCell = (v: number) => Math.min(GRID - 1, Math.max(0, Math.floor(v / cell)));
  return {
    shape: fit.shape,
    colour,
    size: fit.half >= sizeThreshold ? "large" : "small",
    row: clampCell(fit.cy),
    col: clampCell(gx),
    area: members.length,
    x0,
    y0,
    x1,
    y1,
    cx: gx,
    cy: fit.cy,
    half: fit.half,
    rgb,
    colourDistance,
    residual: fit.err / cov.length,
  };
}

/**
 * Squared error between measured coverage and a supersampled ideal shape over the window, taking the better of
 * the sharp template and its 3x3 box blur: small objects at 32x32 blur into each other's silhouettes (a soft
 * square reads as a circle against sharp templates alone), and diffusion samples are often slightly soft.
 */
function templateError(
  cov: Float32Array,
  wx0: number,
  wy0: number,
  ww: number,
  wh: number,
  shape: Shape,
  cx: number,
  cy: number,
  half: number,
): number {
  const step = 1 / TEMPLATE_SAMPLES;
  const norm = 1 / (TEMPLATE_SAMPLES * TEMPLATE_SAMPLES);
  const t = new Float32Array(ww * wh);
  let sharp = 0;
  for (let y = 0; y < wh; y++) {
    for (let x = 0; x < ww; x++) {
      let hits = 0;
      const px0 = wx0 + x - cx;
      const py0 = wy0 + y - cy;
      // Pixels wholly outside the shape's box cannot be covered; skip the supersampling there.
      if (px0 + 1 >= -half && px0 <= half && py0 + 1 >= -half && py0 <= half) {
        // All shapes are convex, so a pixel whose four corners are inside is wholly inside.
        if (
          insideShape(shape, px0, py0, half) &&
          insideShape(shape, px0 + 1, py0, half) &&
          insideShape(shape, px0, py0 + 1, half) &&
          insideShape(shape, px0 + 1, py0 + 1, half)
        ) {
          hits = TEMPLATE_SAMPLES * TEMPLATE_SAMPLES;
        } else
          for (let sy = 0; sy < TEMPLATE_SAMPLES; sy++) {
            const yy = py0 + (sy + 0.5) * step;
            for (let sx = 0; sx < TEMPLATE_SAMPLES; sx++) {
              if (insideShape(shape, px0 + (sx + 0.5) * step, yy, half)) hits++;
            }
          }
      }
      t[y * ww + x] = hits * norm;
      const d = cov[y * ww + x]! - hits * norm;
      sharp += d * d;
    }
  }
  let soft = 0;
  for (let y = 0; y < wh; y++) {
    for (let x = 0; x < ww; x++) {
      let sum = 0;
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= wh) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx;
          if (xx >= 0 && xx < ww) sum += t[yy * ww + xx]!;
        }
      }
      const d = cov[y * ww + x]! - sum / 9;
      soft += d * d;
    }
  }
  return Math.min(sharp, soft);
}

// ---------------------------------------------------------------------------------------------------------------
// Scoring

export const ATTRIBUTES = ["count", "shape", "colour", "size", "position", "relation"] as const;
export type Attribute = (typeof ATTRIBUTES)[number];

export interface Score {
  /** Per attribute: every constraint of that kind holds (true when the spec states none). */
  count: boolean;
  shape: boolean;
  colour: boolean;
  size: boolean;
  position: boolean;
  relation: boolean;
  correct: boolean;
  detected: DetectedObject[];
}

/**
 * Score an image against a spec. Spec objects are matched one-to-one to detected objects by the assignment that
 * satisfies the most constraints, so attribute accuracies stay meaningful even when the count is wrong.
 */
export function score(
  img: Float32Array,
  spec: SceneSpec,
  opts: AnalyseOptions & { size?: number } = {},
): Score {
  const size = opts.size ?? Math.round(Math.sqrt(img.length / 3));
  const detected = analyse(img, size, opts);
  const m = spec.objects.length;
  let best: Omit<Score, "detected" | "count" | "correct"> | undefined;
  let bestHits = -1;
  for (const pick of assignments(m, detected.length)) {
    const assigned = pick.map((k) => (k < 0 ? undefined : detected[k]));
    let hits = 0;
    const ok = { shape: true, colour: true, size: true, position: true, relation: true };
    spec.objects.forEach((s, i) => {
      const d = assigned[i];
      const check = (key: "shape" | "colour" | "size", want: unknown, got: unknown) => {
        if (want === undefined) return;
        if (d && want === got) hits++;
        else ok[key] = false;
      };
      check("shape", s.shape, d?.shape);
      check("colour", s.colour, d?.colour);
      check("size", s.size, d?.size);
      for (const axis of ["row", "col"] as const) {
        if (s[axis] === undefined) continue;
        if (d && d[axis] === s[axis]) hits++;
        else ok.position = false;
      }
    });
    if (spec.relation !== undefined) {
      const [a, b] = assigned;
      if (a && b && relationHolds(a, b, spec.relation)) hits++;
      else ok.relation = false;
    }
    if (hits > bestHits) {
      bestHits = hits;
      best = ok;
    }
  }
  const attrs = best ?? { shape: true, colour: true, size: true, position: true, relation: true };
  const count = detected.length === m;
  const correct = count && attrs.shape && attrs.colour && attrs.size && attrs.position && attrs.relation;
  return { count, ...attrs, correct, detected };
}

/**
 * Injective maps from m spec objects into k detections, -1 meaning unmatched. Enumerated directly rather than
 * as permutations of all detections, which explode on noisy samples with many components.
 */
function assignments(m: number, k: number): number[][] {
  if (m === 0) return [[]];
  const out: number[][] = [];
  for (const rest of assignments(m - 1, k)) {
    for (let j = -1; j < k; j++) if (j < 0 || !rest.includes(j)) out.push([...rest, j]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Degradations and the accuracy report

export const DEGRADATIONS = ["clean", "noise0.05", "noise0.1", "blur3"] as const;
export type Degradation = (typeof DEGRADATIONS)[number];

/** Apply a degradation to a [0, 1] image (returns a new array; clean returns the input). */
export function degrade(img: Float32Array, size: number, kind: Degradation, rng: Rng): Float32Array {
  if (kind === "clean") return img;
  if (kind === "blur3") return boxBlur3(img, size);
  const sigma = kind === "noise0.05" ? 0.05 : 0.1;
  const out = new Float32Array(img.length);
  for (let i = 0; i < img.length; i++) out[i] = Math.min(1, Math.max(0, img[i]! + sigma * rng.normal()));
  return out;
}

/** 3x3 box blur with edge replication, as two separable passes. */
export function boxBlur3(img: Float32Array, size: number): Float32Array {
  const tmp = new Float32Array(img.length);
  const out = new Float32Array(img.length);
  const last = size - 1;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const l = (y * size + (x > 0 ? x - 1 : 0)) * 3;
      const m = (y * size + x) * 3;
      const r = (y * size + (x < last ? x + 1 : last)) * 3;
      for (let c = 0; c < 3; c++) tmp[m + c] = img[l + c]! + img[m + c]! + img[r + c]!;
    }
  }
  for (let y = 0; y < size; y++) {
    const u = (y > 0 ? y - 1 : 0) * size;
    const d = (y < last ? y + 1 : last) * size;
    for (let x = 0; x < size; x++) {
      const m = (y * size + x) * 3;
      const a = (u + x) * 3;
      const b = (d + x) * 3;
      for (let c = 0; c < 3; c++) out[m + c] = (tmp[a + c]! + tmp[m + c]! + tmp[b + c]!) / 9;
    }
  }
  return out;
}

export interface AccuracyRow {
  suite: SuiteName;
  degradation: Degradation;
  n: number;
  /** Fraction of images scored fully correct. */
  accuracy: number;
  /** Fraction of images passing each attribute check. */
  attributes: Record<Attribute, number>;
}

export interface AccuracyReport {
  size: number;
  n: number;
  seed: number;
  rows: AccuracyRow[];
}

export interface AccuracyReportOptions {
  /** Renders per suite (default 1000). */
  n?: number;
  /** Default is derived from a label no training stream uses, so report scenes are unseen. */
  seed?: number;
  size?: number;
  suites?: readonly SuiteName[];
  degradations?: readonly Degradation[];
}

/**
 * Oracle accuracy per suite x degradation, on ground-truth renders of each suite's prompts: how far the oracle
 * itself can be trusted as a scorer, reported next to model results.
 */
export function oracleAccuracyReport(opts: AccuracyReportOptions = {}): AccuracyReport {
  const n = opts.n ?? 1000;
  const seed = opts.seed ?? hashSeed("oracle-accuracy-report");
  const size = opts.size ?? 32;
  const rows: AccuracyRow[] = [];
  for (const name of opts.suites ?? SUITE_NAMES) {
    const prompts = suite(name, { n, seed: hashSeed(seed, name), includeHeldOut: true });
    const images = prompts.map((p, i) =>
      render(sceneForSpec(p.spec, new Rng(hashSeed(seed, name, "scene", i)), { heldOut: "include" }), size),
    );
    for (const deg of opts.degradations ?? DEGRADATIONS) {
      const rng = new Rng(hashSeed(seed, name, deg));
      const tally = Object.fromEntries(ATTRIBUTES.map((a) => [a, 0])) as Record<Attribute, number>;
      let correct = 0;
      prompts.forEach((p, i) => {
        const s = score(degrade(images[i]!, size, deg, rng), p.spec, { size });
        for (const a of ATTRIBUTES) if (s[a]) tally[a]++;
        if (s.correct) correct++;
      });
      const attributes = Object.fromEntries(ATTRIBUTES.map((a) => [a, tally[a] / prompts.length])) as Record<
        Attribute,
        number
      >;
      rows.push({
        suite: name,
        degradation: deg,
        n: prompts.length,
        accuracy: correct / prompts.length,
        attributes,
      });
    }
  }
  return { size, n, seed, rows };
}

/** Markdown table: suites as rows, degradations as columns, overall accuracy in percent. */
export function formatAccuracyReport(report: AccuracyReport): string {
  const degs = [...new Set(report.rows.map((r) => r.degradation))];
  const suites = [...new Set(report.rows.map((r) => r.suite))];
  const lines = [`| suite | ${degs.join(" | ")} |`, `|---|${degs.map(() => "---:").join("|")}|`];
  for (const s of suites) {
    const cells = degs.map((d) => {
      const r = report.rows.find((x) => x.suite === s && x.degradation === d);
      return r ? `${(100 * r.accuracy).toFixed(1)}%` : "";
    });
    lines.push(`| ${s} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}
