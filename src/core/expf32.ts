// float32 exp as PyTorch's CPU kernels compute it, so that the timestep embedding's frequencies match the official
// code bit for bit: a one-ulp difference in a frequency times t ≈ 999 moves the embedding by ~3e-5, above the
// 1e-5 tolerance of a faithful port (the golden README warns of this).
const f = Math.fround;

// Cody–Waite split of ln 2 and the minimax coefficients of SLEEF's single-precision exp (u10 variant).
// (Literals are the exact float32 values.)
const LN2_HI = 0.693145751953125;
const LN2_LO = 0.000001428606765330187;
const INV_LN2 = f(Math.LOG2E);
const EXP_POLY = [
  0.00019852761761285365, 0.0013930435525253415, 0.008333360776305199, 0.041666485369205475,
  0.1666666716337204, 0.5,
];

/** Round half to even, as the vector rounding instruction does. */
function rint(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * float32 exp as PyTorch's CPU kernels compute it (vectorised SLEEF expf_u10, no FMA): measured to reproduce the
 * reference's frequencies bit for bit, where the correctly rounded exp is off by one ulp for some of them.
 */
export function expf32(d: number): number {
  d = f(d);
  if (d < -104) return 0;
  if (d > 104) return Number.POSITIVE_INFINITY;
  const q = rint(f(d * INV_LN2));
  let s = f(d - f(q * LN2_HI));
  s = f(s - f(q * f(LN2_LO)));
  let u = EXP_POLY[0]!;
  for (let i = 1; i < EXP_POLY.length; i++) u = f(f(u * s) + EXP_POLY[i]!);
  u = f(f(f(f(s * s) * u) + s) + 1);
  return f(u * 2 ** q);
}
