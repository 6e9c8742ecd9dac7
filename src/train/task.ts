// What the trainer needs from a model kind: build the model from its recipe, and the mean loss of a slice of a
// step's global batch. Examples are a pure function of (recipe seed, step, index in batch), so the global batch is
// the same whatever the number of worker threads; so is training, except for contrastive tasks (CONTRASTIVE_TASKS),
// whose slices draw their negatives from their own examples only.
import type { Scalar } from "../core/engine.ts";
import type { Module } from "../core/layers.ts";

export interface TaskInstance {
  model: Module;
  /** Mean loss over examples [from, to) of the global batch of `step`; called inside tf.variableGrads. */
  loss(step: number, from: number, to: number): Scalar;
  dispose(): void;
}
