// PNG I/O for Float32Array HWC RGB images in [0, 1], the format every part of the data pipeline uses.

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { PNG } from "pngjs";

export interface DecodedImage {
  /** HWC RGB in [0, 1]; alpha is dropped. */
  data: Float32Array;
  width: number;
  height: number;
}

function toByte(v: number): number {
  // NaN (a diverged sample) becomes black rather than poisoning the file.
  return v > 0 ? (v < 1 ? Math.round(v * 255) : 255) : 0;
}

export function encodePng(img: Float32Array, width: number, height = width): Buffer {
  if (img.length !== width * height * 3) {
    throw new Error(`encodePng: ${img.length} values for ${width}x${height}x3`);
  }
  const png = new PNG({ width, height, colorType: 2 });
  for (let i = 0, n = width * height; i < n; i++) {
    png.data[i * 4] = toByte(img[i * 3]!);
    png.data[i * 4 + 1] = toByte(img[i * 3 + 1]!);
    png.data[i * 4 + 2] = toByte(img[i * 3 + 2]!);
    png.data[i * 4 + 3] = 255;
  }
  return PNG.sync.write(png, { colorType: 2 });
}

export function decodePng(buf: Buffer): DecodedImage {
  const png = PNG.sync.read(buf);
  const { width, height } = png;
  const data = new Float32Array(width * height * 3);
  for (let i = 0, n = width * height; i < n; i++) {
    data[i * 3] = png.data[i * 4]! / 255;
    data[i * 3 + 1] = png.data[i * 4 + 1]! / 255;
    data[i * 3 + 2] = png.data[i * 4 + 2]! / 255;
  }
  return { data, width, height };
}

/** Write a square (or `height`-tall) image, creating parent directories. */
export function writePng(path: string, img: Float32Array, size: number, height = size): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, encodePng(img, size, height));
}

export function readPng(path: string): DecodedImage {
  return decodePng(readFileSync(path));
}

/** Tile square images of side `size` into a grid, `pad` pixels of `padValue` grey between and around them. */
export function gridImage(
  images: readonly Float32Array[],
  size: number,
  cols: number,
  pad = 2,
  padValue = 1,
): DecodedImage {
  const c = Math.max(1, Math.min(cols, images.length));
  const rows = Math.max(1, Math.ceil(images.length / c));
  const width = c * size + (c + 1) * pad;
  const height = rows * size + (rows + 1) * pad;
  const data = new Float32Array(width * height * 3).fill(padValue);
  images.forEach((img, k) => {
    if (img.length !== size * size * 3) throw new Error(`gridImage: image ${k} is not ${size}x${size}x3`);
    const ox = pad + (k % c) * (size + pad);
    const oy = pad + Math.floor(k / c) * (size + pad);
    for (let y = 0; y < size; y++) {
      data.set(img.subarray(y * size * 3, (y + 1) * size * 3), ((oy + y) * width + ox) * 3);
    }
  });
  return { data, width, height };
}

export function writeGrid(
  path: string,
  images: readonly Float32Array[],
  size: number,
  cols: number,
  pad = 2,
  padValue = 1,
): void {
  const g = gridImage(images, size, cols, pad, padValue);
  writePng(path, g.data, g.width, g.height);
}

/** Nearest-neighbour enlargement by an integer factor (README figures of 32×32 samples). */
export function upscaleNearest(img: DecodedImage, f: number): DecodedImage {
  const w = img.width * f;
  const h = img.height * f;
  const data = new Float32Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let c = 0; c < 3; c++)
        data[(y * w + x) * 3 + c] = img.data[(Math.floor(y / f) * img.width + Math.floor(x / f)) * 3 + c]!;
  return { data, width: w, height: h };
}
