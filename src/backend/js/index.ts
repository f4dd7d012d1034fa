/**
 * The pure-TypeScript backend of the character LM (GRU, LSTM or tanh-RNN cell): the test oracle for the
 * native backend and the pure-JS baseline of the benchmarks. Parameters and optimizer moments are
 * stored in f32 like the native model's; activations too, while sums and gates are computed in doubles.
 * States (carry, `state` arguments and results, `dh0`) are `[layers, batch, stateWidth(cell)·hidden]`.
 */
import { ConfigError, ShapeError } from '../../errors.js';
import {
  type Carry,
  CELL_KINDS,
  type CharLmBackend,
  type CharLmShape,
  cellOf,
  charLmParamInfo,
  type LossGrads,
  type NllResult,
  type OptimConfig,
  type StepStats,
  stateWidth,
} from '../types.js';
import { lmLossAndGrads, lmNll, lmStep, stateShapeText } from './lm.js';
import { JsParameters } from './parameters.js';

function checkShape(shape: CharLmShape): void {
  for (const key of ['vocabSize', 'embed', 'hidden', 'layers'] as const) {
    const v = shape[key];
    if (!Number.isSafeInteger(v) || v < 1) {
      throw new ConfigError(`char LM shape: ${key} must be an integer ≥ 1, got ${v}`);
    }
  }
  if (shape.vocabSize < 2) {
    throw new ConfigError(`char LM shape: vocabSize must hold at least 2 symbols, got ${shape.vocabSize}`);
  }
  if (shape.cell !== undefined && !CELL_KINDS.includes(shape.cell)) {
    throw new ConfigError(
      `char LM shape: cell must be one of ${CELL_KINDS.join(', ')}, got ${JSON.stringify(shape.cell)}`,
    );
  }
  const n = shape.predictAhead;
  if (n !== undefined && (!Number.isSafeInteger(n) || n < 1)) {
    throw new ConfigError(`char LM shape: predictAhead must be an integer ≥ 1, got ${n}`);
  }
}

export class JsCharLm extends JsParameters implements CharLmBackend {
  readonly kind = 'js' as const;
  readonly shape: CharLmShape;
  private carry: Carry | null = null;

  /**
   * A model with every parameter zero; callers load an initialisation with `setParam`. `shape.cell` is
   * kept as given: absent (a GRU) stays absent, so the shape equals the caller's.
   */
  constructor(shape: CharLmShape) {
    checkShape(shape);
    const frozen: CharLmShape = Object.freeze({
      vocabSize: shape.vocabSize,
      embed: shape.embed,
      hidden: shape.hidden,
      layers: shape.layers,
      ...(shape.cell === undefined ? {} : { cell: shape.cell }),
      ...(shape.learnedH0 ? { learnedH0: true } : {}),
      ...(shape.predictAhead !== undefined && shape.predictAhead > 1 ? { predictAhead: shape.predictAhead } : {}),
    });
    super(charLmParamInfo(frozen), 'char LM');
    this.shape = frozen;
  }

  getCarry(): Carry | null {
    return this.carry === null ? null : { batch: this.carry.batch, state: this.carry.state.slice() };
  }

  setCarry(carry: Carry | null): void {
    if (carry !== null) {
      if (!Number.isSafeInteger(carry.batch) || carry.batch < 1) {
        throw new ShapeError(`carry: batch must be an integer ≥ 1, got ${carry.batch}`);
      }
      this.checkState(carry.state, carry.batch);
    }
    this.carry = carry === null ? null : { batch: carry.batch, state: carry.state.slice() };
  }

  private checkState(state: Float32Array | null, batch: number): void {
    const { layers: L, hidden: H } = this.shape;
    const cell = cellOf(this.shape);
    const want = L * batch * stateWidth(cell) * H;
    if (state !== null && state.length !== want) {
      throw new ShapeError(
        `hidden state holds ${state.length} values; ${stateShapeText(cell, L, batch, H)} needs ${want}`,
      );
    }
  }

  async trainStep(
    ids: Uint32Array,
    targets: Uint32Array,
    batch: number,
    seq: number,
    opt: OptimConfig,
  ): Promise<StepStats> {
    this.checkLr(opt);
    // Truncated BPTT: continue from the carried state when the batch size matches, else from zeros.
    const h0 = this.carry !== null && this.carry.batch === batch ? this.carry.state : null;
    const { loss, grads, state } = lmLossAndGrads(this.shape, this.params, ids, targets, batch, seq, h0, 'f32');
    const stats = this.optimizerStep(loss, grads, opt);
    this.carry = { batch, state };
    return stats;
  }

  async lossAndGrads(
    ids: Uint32Array,
    targets: Uint32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<LossGrads> {
    const { loss, grads, dh0 } = lmLossAndGrads(this.shape, this.params, ids, targets, batch, seq, state, 'f32');
    return { loss, grads, dh0 };
  }

  async nll(
    ids: Uint32Array,
    targets: Uint32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<NllResult> {
    return lmNll(this.shape, this.params, ids, targets, batch, seq, state, 'f32');
  }

  step(state: Float32Array | null, tokens: Uint32Array): { state: Float32Array; logits: Float32Array } {
    return lmStep(this.shape, this.params, state, tokens, 'f32');
  }
}
