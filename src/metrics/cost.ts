// Sampling cost, the x-axis that makes guidance strategies comparable at all: CFG doubles the network
// evaluations of a step, gradient guidance adds a backward pass, autoguidance a second (smaller) network.
// Batches differ in size (the last one of a cell is often short), so costs are weighted by images, not batches.

/** One measured sampling batch. */
export interface CostSample {
  /** Images the batch produced. */
  images: number;
  /** Network evaluations per image over the whole sampling run (Σ over steps of the strategy's `nfe`). */
  nfe: number;
  /** Wall-clock seconds of the batch (sampling only: model loading and metrics excluded). */
  seconds: number;
}

export interface Cost {
  images: number;
  /** Image-weighted mean NFE per image. */
  nfe: number;
  secondsPerImage: number;
  totalSeconds: number;
}

export function aggregateCost(batches: readonly CostSample[]): Cost {
  let images = 0;
  let nfe = 0;
  let seconds = 0;
  batches.forEach((b, i) => {
    if (!(b.images > 0) || !(b.nfe >= 0) || !(b.seconds >= 0)) {
      throw new Error(`cost: batch ${i} has images=${b.images}, nfe=${b.nfe}, seconds=${b.seconds}`);
    }
    images += b.images;
    nfe += b.nfe * b.images;
    seconds += b.seconds;
  });
  if (images === 0) throw new Error("cost: no batches");
  return { images, nfe: nfe / images, secondsPerImage: seconds / images, totalSeconds: seconds };
}
