/**
 * The contract every Pixel-RNN backend keeps: the float64 TypeScript reference (`js/pixel-model.ts`)
 * and the native one on candle (`native-pixel.ts`). Shapes and parameter names are in
 * `pixel-types.ts`; the equations in `js/pixel.ts`.
 *
 * Layouts: `x [B, R, C]` model inputs (value/255 for the categorical head, 0/1 for the Bernoulli one,
 * `pixelInputValue`); `targets [B, R, C]` integer pixel values (0…255, or 0/1); `labels [B]` class ids,
 * given exactly when the model has classes (else null).
 */
import type { PixelRnnShape } from './pixel-types.js';
import type { OptimConfig, ParamAccess, StepStats } from './types.js';

export interface PixelLoss {
  /** Mean over the batch of each image's summed NLL: nats/image. */
  loss: number;
  /** dLoss/d(param) by name, in `pixelParamInfo` order; masked taps exactly 0. */
  grads: Record<string, Float32Array>;
}

export interface PixelSampleRequest {
  /** Images to draw. */
  n: number;
  /**
   * One uniform in [0, 1) per pixel, `[n, R, C]`: pixel (s, i, j) is drawn with `pixelDrawValue` from
   * `uniforms[(s·R + i)·C + j]`; entries of given rows are not used. Explicit so that every backend
   * draws the same images from the same numbers.
   */
  uniforms: Float32Array;
  /** `[n]` class ids, exactly when the model has classes. */
  labels: Int32Array | null;
  /** Completion: the first `topRows` rows of each image are given in `top [n, topRows, C]` (pixel values). */
  topRows: number;
  top: Uint8Array | null;
}

export interface PixelBackend extends ParamAccess {
  readonly kind: 'native' | 'js';
  readonly shape: PixelRnnShape;
  /**
   * Forward, the loss (nats/image, mean over the batch), backward, clipping and AdamW in one call. A
   * non-finite loss or gradient rejects with DivergenceError and leaves parameters and optimizer state
   * untouched.
   */
  trainStep(
    x: Float32Array,
    targets: Uint8Array,
    labels: Int32Array | null,
    batch: number,
    opt: OptimConfig,
  ): Promise<StepStats>;
  /** The loss and its gradients; changes nothing. */
  lossAndGrads(x: Float32Array, targets: Uint8Array, labels: Int32Array | null, batch: number): Promise<PixelLoss>;
  /** Each image's summed NLL in nats, `[B]`; changes nothing. */
  nll(x: Float32Array, targets: Uint8Array, labels: Int32Array | null, batch: number): Promise<Float64Array>;
  /** Logits `[B, R, C, O]` of every pixel, each from the pixels before it. */
  forward(x: Float32Array, labels: Int32Array | null, batch: number): Promise<Float32Array>;
  /** Images `[n, R, C]` of pixel values drawn in raster order (see PixelSampleRequest). */
  sample(req: PixelSampleRequest): Promise<Uint8Array>;
}
