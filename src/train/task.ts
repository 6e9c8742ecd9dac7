// What the trainer needs from a model kind: build the model from its recipe, the examples of a slice of a step's
// global batch as plain arrays, and the mean loss as a pure function of the parameters and those arrays' tensors.
// Examples are a pure function of (recipe seed, step, index in batch), so the global batch is the same whatever
// the number of worker threads; so is training, except for contrastive tasks (CONTRASTIVE_TASKS), whose slices
// draw their negatives from their own examples only. Because the loss reads nothing but its inputs, one traced
// step (src/onnx/trace.ts) replays any other step on another runtime.
import { type Scalar, type Tensor, tf } from "../core/engine.ts";
import type { Module } from "../core/layers.ts";

export interface StepInput {
  data: Float32Array | Int32Array;
  shape: number[];
  dtype: "float32" | "int32";
}

/** A step's examples by name (images, noise, timesteps, tokens, ...). */
export type StepInputs = Record<string, StepInput>;

export const floats = (data: Float32Array, shape: number[]): StepInput => ({ data, shape, dtype: "float32" });
export const ints = (data: Int32Array, shape: number[]): StepInput => ({ data, shape, dtype: "int32" });

export function toTensors(inputs: StepInputs): Record<string, Tensor> {
  return Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, tf.tensor(v.data, v.shape, v.dtype)]));
}

export interface TaskInstance {
  model: Module;
  /** Examples [from, to) of the global batch of `step`. */
  inputs(step: number, from: number, to: number): StepInputs;
  /** Mean loss of those examples; reads nothing that varies between steps except `x`. */
  lossOf(x: Record<string, Tensor>): Scalar;
  /** lossOf(inputs(step, from, to)); called inside tf.variableGrads. */
  loss(step: number, from: number, to: number): Scalar;
  dispose(): void;
}

export function defineTask(model: Module, spec: Pick<TaskInstance, "inputs" | "lossOf">): TaskInstance {
  return {
    model,
    inputs: spec.inputs,
    lossOf: spec.lossOf,
    loss: (step, from, to) => tf.tidy(() => spec.lossOf(toTensors(spec.inputs(step, from, to)))),
    dispose: () => model.dispose(),
  };
}
