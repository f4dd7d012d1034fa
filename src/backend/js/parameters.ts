/**
 * Parameter and AdamW-moment storage shared by the pure-TypeScript backends: f32 tensors by name,
 * copied in and out, checked for size and finiteness on the way in.
 */
import { ConfigError, DataError, DivergenceError, ShapeError } from '../../errors.js';
import type { OptimConfig, OptimMoment, ParamInfo, StepStats } from '../types.js';
import { type AdamWState, adamwState, clipScale, globalNorm, update } from './adamw.js';

export abstract class JsParameters {
  protected readonly params: Record<string, Float32Array> = {};
  protected readonly optim: AdamWState;

  /** Every parameter zero; `model` names the model in error messages. */
  constructor(
    protected readonly info: ParamInfo[],
    private readonly model: string,
  ) {
    for (const { name, shape: dims } of info) this.params[name] = new Float32Array(dims.reduce((a, d) => a * d, 1));
    this.optim = adamwState(info);
  }

  paramInfo(): ParamInfo[] {
    return this.info.map(({ name, shape }) => ({ name, shape: [...shape] }));
  }

  /** The stored tensor `name` of `record` (Object.hasOwn keeps names like `constructor` out). */
  private tensor(record: Record<string, Float32Array>, name: string): Float32Array {
    if (!Object.hasOwn(record, name)) {
      throw new ConfigError(`${this.model} has no parameter named ${JSON.stringify(name)}`);
    }
    return record[name];
  }

  private moments(which: OptimMoment): Record<string, Float32Array> {
    if (which === 'exp_avg') return this.optim.expAvg;
    if (which === 'exp_avg_sq') return this.optim.expAvgSq;
    throw new ConfigError(`unknown optimizer state ${JSON.stringify(which)}: expected exp_avg or exp_avg_sq`);
  }

  /** Copies `data` into `into` after checking its size and that every value is finite. */
  private write(name: string, into: Float32Array, data: Float32Array): void {
    if (data.length !== into.length) {
      const dims = this.info.find((p) => p.name === name)?.shape ?? [];
      throw new ShapeError(
        `${name}: expected ${into.length} values for shape [${dims.join(', ')}], got ${data.length}`,
      );
    }
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) throw new DataError(`${name}: value ${i} is not finite (${data[i]})`);
    }
    into.set(data);
  }

  getParam(name: string): Float32Array {
    return this.tensor(this.params, name).slice();
  }

  setParam(name: string, data: Float32Array): void {
    this.write(name, this.tensor(this.params, name), data);
  }

  getOptimState(which: OptimMoment, name: string): Float32Array {
    return this.tensor(this.moments(which), name).slice();
  }

  setOptimState(which: OptimMoment, name: string, data: Float32Array): void {
    this.write(name, this.tensor(this.moments(which), name), data);
  }

  getOptimStep(): number {
    return this.optim.step;
  }

  setOptimStep(step: number): void {
    if (!Number.isSafeInteger(step) || step < 0) {
      throw new ConfigError(`optimizer step must be an integer ≥ 0, got ${step}`);
    }
    this.optim.step = step;
  }

  /** Refuses a learning rate that is NaN, infinite or negative, before any work. */
  protected checkLr(opt: OptimConfig): void {
    if (!(Number.isFinite(opt.lr) && opt.lr >= 0)) {
      throw new ConfigError(`learning rate must be a finite number ≥ 0, got ${opt.lr}`);
    }
  }

  /**
   * The update of one training step from its mean loss and gradients: clipping and AdamW. A non-finite
   * loss or gradient is a DivergenceError that leaves parameters and optimizer state as they were.
   */
  protected optimizerStep(loss: number, grads: Record<string, Float32Array>, opt: OptimConfig): StepStats {
    if (!Number.isFinite(loss)) {
      throw new DivergenceError(`training diverged: the loss is ${loss}; parameters were left as they were`);
    }
    const gradNorm = globalNorm(grads);
    if (!Number.isFinite(gradNorm)) {
      throw new DivergenceError(
        `training diverged: the gradient norm is ${gradNorm}; parameters were left as they were`,
      );
    }
    update(this.optim, this.params, grads, opt, clipScale(gradNorm, opt.clip));
    return { loss, gradNorm };
  }
}
