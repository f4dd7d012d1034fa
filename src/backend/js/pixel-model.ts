/**
 * The Pixel-RNN on the pure-TypeScript backend: {@link PixelBackend} over the float64 reference of
 * `pixel.ts`, with float32 parameters and AdamW like the other reference models. Slow; it is the
 * oracle the native model is tested against, and trains small models.
 */
import { ShapeError } from '../../errors.js';
import type { PixelBackend, PixelLoss, PixelSampleRequest } from '../pixel-backend.js';
import { type PixelRnnShape, pixelParamInfo } from '../pixel-types.js';
import type { OptimConfig, StepStats } from '../types.js';
import { JsParameters } from './parameters.js';
import { pixelForward, pixelLossAndGrads, pixelNll, pixelSampleReference } from './pixel.js';

export class JsPixelModel extends JsParameters implements PixelBackend {
  readonly kind = 'js' as const;
  readonly shape: PixelRnnShape;

  /** A model with every parameter zero; callers load an initialisation with `setParam`. */
  constructor(shape: PixelRnnShape) {
    const frozen: PixelRnnShape = Object.freeze({ ...shape });
    super(pixelParamInfo(frozen), 'pixel model');
    this.shape = frozen;
  }

  private checkBatch(fn: string, x: ArrayLike<number>, batch: number): void {
    const { rows, cols } = this.shape;
    if (!Number.isSafeInteger(batch) || batch < 1 || x.length !== batch * rows * cols) {
      throw new ShapeError(
        `${fn}: x holds ${x.length} values; [batch ${batch}, ${rows}, ${cols}] needs ${batch * rows * cols}`,
      );
    }
  }

  async trainStep(
    x: Float32Array,
    targets: Uint8Array,
    labels: Int32Array | null,
    batch: number,
    opt: OptimConfig,
  ): Promise<StepStats> {
    this.checkLr(opt);
    const { loss, grads } = await this.lossAndGrads(x, targets, labels, batch);
    return this.optimizerStep(loss, grads, opt);
  }

  async lossAndGrads(
    x: Float32Array,
    targets: Uint8Array,
    labels: Int32Array | null,
    batch: number,
  ): Promise<PixelLoss> {
    this.checkBatch('lossAndGrads', x, batch);
    const r = pixelLossAndGrads(this.shape, this.params, x, targets, labels);
    const grads: Record<string, Float32Array> = {};
    for (const [name, g] of Object.entries(r.grads)) grads[name] = Float32Array.from(g);
    return { loss: r.loss, grads };
  }

  async nll(x: Float32Array, targets: Uint8Array, labels: Int32Array | null, batch: number): Promise<Float64Array> {
    this.checkBatch('nll', x, batch);
    return pixelNll(this.shape, this.params, x, targets, labels).perImage;
  }

  async forward(x: Float32Array, labels: Int32Array | null, batch: number): Promise<Float32Array> {
    this.checkBatch('forward', x, batch);
    return pixelForward(this.shape, this.params, x, labels, 'f32');
  }

  async sample(req: PixelSampleRequest): Promise<Uint8Array> {
    const { rows: R, cols: C } = this.shape;
    const { n, uniforms, topRows } = req;
    if (uniforms.length !== n * R * C) {
      throw new ShapeError(`sample: uniforms hold ${uniforms.length} values; [n ${n}, ${R}, ${C}] needs ${n * R * C}`);
    }
    if (topRows > 0 && (req.top === null || req.top.length !== n * topRows * C)) {
      throw new ShapeError(`sample: top must hold [n ${n}, topRows ${topRows}, cols ${C}] pixel values`);
    }
    // The reference draws one uniform per sampled pixel in raster order, image by image, skipping the
    // given rows: walk the [n, R, C] array in that order.
    let s = 0;
    let p = topRows * C;
    const source = {
      uniform(): number {
        if (p === R * C) {
          s++;
          p = topRows * C;
        }
        return uniforms[s * R * C + p++];
      },
    };
    return pixelSampleReference(this.shape, this.params, n, source, {
      topRows: topRows > 0 && req.top !== null ? { rows: topRows, values: req.top } : undefined,
      label: req.labels ?? undefined,
    });
  }
}
