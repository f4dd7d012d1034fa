/**
 * The contract every backend of the character language model implements: the native one (Rust on
 * candle, through N-API) and the pure-TypeScript reference (the test oracle and the pure-JS baseline).
 *
 * Layout is batch-first: `ids`/`targets` are `[batch, seq]` row-major, recurrent states are
 * `[layers, batch, stateWidth(cell)·hidden]` (for the LSTM each row is h then c). Parameter names and
 * shapes are PyTorch's `state_dict` of `Embedding → {GRU, LSTM, RNN}(batch_first=True) → Linear`, the
 * recurrent module's attribute named after its cell (`gru`, `lstm` or `rnn`):
 *   embedding.weight [V, E]
 *   {cell}.weight_ih_l{l} [G·H, I]  {cell}.weight_hh_l{l} [G·H, H]  {cell}.bias_ih_l{l} [G·H]  {cell}.bias_hh_l{l} [G·H]
 *   head.weight [V, H]  head.bias [V]
 * with G = gateCount(cell), PyTorch's gate orders — GRU (r, z, n), LSTM (i, f, g, o), RNN tanh — and
 * I = E for layer 0, H above it.
 */
import { ConfigError } from '../errors.js';
import type { SamplingOptions } from '../sample/sampling.js';
import type { Rng } from '../util/rng.js';

/** The recurrent cell of the LM: PyTorch's `nn.GRU`, `nn.LSTM` or `nn.RNN` (nonlinearity tanh). */
export type CellKind = 'gru' | 'lstm' | 'rnn';

/** Every recurrent cell kind, in the order the CLI lists them. */
export const CELL_KINDS: readonly CellKind[] = ['gru', 'lstm', 'rnn'];

export interface CharLmShape {
  vocabSize: number;
  embed: number;
  hidden: number;
  layers: number;
  /** The recurrent cell; absent means 'gru' (models and checkpoints from before cells were selectable). */
  cell?: CellKind;
  /**
   * A learned initial state: a parameter `h0` `[L, W·H]` (every stream starts from it, and it receives
   * gradients) in place of zeros wherever no state is given. Absent or false: zeros.
   */
  learnedH0?: boolean;
  /**
   * Joint prediction of the next n characters (absent: 1). Heads `ahead.{k}.weight [V, H]`,
   * `ahead.{k}.bias [V]` for k = 2..n read the same top h_t as `head` and give p(x_{t+k} | x_{≤t}); the
   * joint is factorised, and the training loss is Σ_k (mean over scored positions of CE_k). Targets are
   * then n blocks `[n, B, T]`, block k−1 holding x_{t+k}; {@link IGNORE_TARGET} in blocks k ≥ 2 (past the
   * end of the text) is not scored.
   */
  predictAhead?: number;
}

/** A target that is not scored: a prediction k ≥ 2 steps ahead that runs past the end of the text. */
export const IGNORE_TARGET = 0xffffffff;

/** The number of heads of a shape, with the default applied. */
export function aheadOf(shape: { predictAhead?: number }): number {
  return shape.predictAhead ?? 1;
}

/** The most steps (characters, time steps) ahead a model predicts jointly. */
export const MAX_PREDICT_AHEAD = 64;

/** ConfigError unless `n` is a whole number in [1, {@link MAX_PREDICT_AHEAD}]. */
export function checkPredictAhead(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > MAX_PREDICT_AHEAD) {
    throw new ConfigError(`predictAhead must be a whole number in [1, ${MAX_PREDICT_AHEAD}], got ${JSON.stringify(n)}`);
  }
}

/** The cell of a shape, with the default applied. */
export function cellOf(shape: { cell?: CellKind }): CellKind {
  return shape.cell ?? 'gru';
}

function checkCell(cell: CellKind): void {
  if (!CELL_KINDS.includes(cell)) {
    throw new ConfigError(`unknown cell ${JSON.stringify(cell)}: expected one of ${CELL_KINDS.join(', ')}`);
  }
}

/** Rows of each weight matrix per hidden unit: 3 (r, z, n) for the GRU, 4 (i, f, g, o) for the LSTM, 1 for the RNN. */
export function gateCount(cell: CellKind): number {
  checkCell(cell);
  return cell === 'gru' ? 3 : cell === 'lstm' ? 4 : 1;
}

/** Values of recurrent state per layer and batch row, in units of H: 2 for the LSTM (h then c), else 1. */
export function stateWidth(cell: CellKind): number {
  checkCell(cell);
  return cell === 'lstm' ? 2 : 1;
}

/** One AdamW update (PyTorch semantics) after clipping the global gradient norm to `clip` (0: off). */
export interface OptimConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  clip: number;
}

export interface StepStats {
  /** Mean cross-entropy of the batch, nats per character. */
  loss: number;
  /** Global L2 norm of the gradient before clipping. */
  gradNorm: number;
}

export interface ParamInfo {
  name: string;
  shape: number[];
}

export type OptimMoment = 'exp_avg' | 'exp_avg_sq';

export interface Carry {
  batch: number;
  /** `[layers, batch, stateWidth·hidden]` */
  state: Float32Array;
}

export interface LossGrads {
  loss: number;
  grads: Record<string, Float32Array>;
  /** Gradient w.r.t. the initial state, `[layers, batch, stateWidth·hidden]`. */
  dh0: Float32Array;
}

export interface NllResult {
  nll: number;
  state: Float32Array;
  /** Heads 2..n, when their target blocks were given (else empty). */
  aheadNll: number[];
  /** The positions each of heads 2..n scored (the length of `aheadNll`). */
  aheadRows: number[];
}

/** Where a sampling loop starts: see {@link CharLmBackend.sampler}. */
export interface SamplerInit {
  /** `[L, N, stateWidth·H]`; null: the backend's initial state (zeros, or the learned h0). */
  state: Float32Array | null;
  /** `[N, P]`, P ≥ 1: what each of the N streams reads before its first draw (its last id conditions that draw). */
  prime: Uint32Array;
  /** One generator per stream. The sampler owns them from here on: do not draw from them again. */
  rngs: Rng[];
  sampling: Required<SamplingOptions>;
}

/** A sampling loop in progress over N streams: each stream draws with `sampleLogits` and its own generator. */
export interface TokenSampler {
  /** The next id of a one-stream sampler. */
  next(): number;
  /** The next `n` ids of every stream, `[N, n]` row-major. */
  take(n: number): Uint32Array;
}

/** What a backend offers of its optimizer (every model backend has it): AdamW moments and step count. */
export interface OptimizerAccess {
  getOptimState(which: OptimMoment, name: string): Float32Array;
  setOptimState(which: OptimMoment, name: string, data: Float32Array): void;
  getOptimStep(): number;
  setOptimStep(step: number): void;
}

/** Every model backend's named parameters and optimizer: what checkpoints read and write. */
export interface ParamAccess extends OptimizerAccess {
  /** Every parameter, in state_dict order. */
  paramInfo(): ParamInfo[];
  getParam(name: string): Float32Array;
  setParam(name: string, data: Float32Array): void;
}

export interface CharLmBackend extends ParamAccess {
  readonly kind: 'native' | 'js';
  readonly shape: CharLmShape;
  /** The detached final state of the last training batch, carried into the next (truncated BPTT). */
  getCarry(): Carry | null;
  setCarry(carry: Carry | null): void;
  /**
   * Forward, mean cross-entropy, backward through time, clipping and AdamW, in one call. Continues from
   * the carried state when its batch size matches, else from zeros; then carries the new final state.
   * A non-finite loss or gradient rejects and leaves parameters, optimizer state and carry untouched.
   */
  trainStep(ids: Uint32Array, targets: Uint32Array, batch: number, seq: number, opt: OptimConfig): Promise<StepStats>;
  /** Mean loss and its gradients; changes nothing. `state` null means zeros. */
  lossAndGrads(
    ids: Uint32Array,
    targets: Uint32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<LossGrads>;
  /**
   * Summed NLL in nats of the next characters and the final state (for the LSTM each row h_T then c_T);
   * changes nothing. `targets` is `[B, T]`, or for a model predicting n ahead optionally all n blocks,
   * and then `aheadNll[k − 2]` is head k's summed NLL over the positions its block scores.
   */
  nll(
    ids: Uint32Array,
    targets: Uint32Array,
    batch: number,
    seq: number,
    state: Float32Array | null,
  ): Promise<NllResult>;
  /** One step of N streams: feeds `tokens [N]` from `state [L, N, stateWidth·H]` (null: zeros). Logits `[N, V]`. */
  step(state: Float32Array | null, tokens: Uint32Array): { state: Float32Array; logits: Float32Array };
  /**
   * Optional: a sampling loop the backend runs itself (the native one: step and draw in Rust, no
   * per-token round trip). It must draw exactly what `StepSampler` (src/sample/sampling.ts) over this
   * backend's `step` draws: the same `sampleLogits` on the same logits. Without it, CharLM runs a StepSampler.
   */
  sampler?(init: SamplerInit): TokenSampler;
}

/** Parameter names and shapes of a model of this shape, in state_dict order. */
export function charLmParamInfo(s: CharLmShape): ParamInfo[] {
  const cell = cellOf(s);
  const g = gateCount(cell) * s.hidden;
  const info: ParamInfo[] = [{ name: 'embedding.weight', shape: [s.vocabSize, s.embed] }];
  for (let l = 0; l < s.layers; l++) {
    const input = l === 0 ? s.embed : s.hidden;
    info.push(
      { name: `${cell}.weight_ih_l${l}`, shape: [g, input] },
      { name: `${cell}.weight_hh_l${l}`, shape: [g, s.hidden] },
      { name: `${cell}.bias_ih_l${l}`, shape: [g] },
      { name: `${cell}.bias_hh_l${l}`, shape: [g] },
    );
  }
  info.push({ name: 'head.weight', shape: [s.vocabSize, s.hidden] }, { name: 'head.bias', shape: [s.vocabSize] });
  if (s.learnedH0) info.push({ name: 'h0', shape: [s.layers, stateWidth(cell) * s.hidden] });
  for (let k = 2; k <= aheadOf(s); k++) {
    info.push(
      { name: `ahead.${k}.weight`, shape: [s.vocabSize, s.hidden] },
      { name: `ahead.${k}.bias`, shape: [s.vocabSize] },
    );
  }
  return info;
}
