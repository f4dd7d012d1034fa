/**
 * A character-level language model (Karpathy's char-rnn, with PyTorch's `nn.GRU`, `nn.LSTM` or
 * `nn.RNN` underneath): `Embedding → cell × layers → Linear`, trained with softmax cross-entropy.
 *
 * ```ts
 * const text = loadCorpus('moby-dick');
 * const lm = CharLM.create(Vocabulary.fromText(text), { hidden: 256 });
 * await lm.fit(text, { steps: 500, onProgress: (p) => console.log(p.step, p.loss) });
 * console.log(lm.sample({ prime: 'Call me ', length: 200, temperature: 0.8 }));
 * await lm.save('moby.safetensors');
 * ```
 */
import { type BackendName, createCharLmBackend, type DeviceName } from '../backend/index.js';
import {
  type Carry,
  CELL_KINDS,
  type CellKind,
  type CharLmBackend,
  type CharLmShape,
  checkPredictAhead,
  IGNORE_TARGET,
  type OptimMoment,
  type SamplerInit,
  stateWidth,
  type TokenSampler,
} from '../backend/types.js';
import type { UnknownPolicy } from '../data/vocab.js';
import { Vocabulary } from '../data/vocab.js';
import { CheckpointError, ConfigError } from '../errors.js';
import { checkpointContents, isCheckpointOf, OPTIM_PREFIX } from '../io/checkpoint.js';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import { type SamplingOptions, StepSampler, validateSampling } from '../sample/sampling.js';
import { type TrainOptions, type TrainSummary, trainCharLM } from '../train/char-trainer.js';
import { Rng } from '../util/rng.js';

/** Architecture of a {@link CharLM}. */
export interface CharLMConfig {
  /** Embedding width. Default 64. */
  embed: number;
  /** Hidden units per layer. Default 256. */
  hidden: number;
  /** Stacked recurrent layers. Default 1. */
  layers: number;
  /** The recurrent cell: 'gru' (default), 'lstm' or 'rnn' (vanilla tanh). */
  cell: CellKind;
  /**
   * The state a stream starts from (at the start of training, after each epoch's reset of the carried
   * state, and when sampling or evaluating): 'zero' (default); 'learned', a parameter `h0 [L, S]`
   * trained with the rest (initialised at zero); 'sampled', drawn from N(0, h0Sigma²) for every stream.
   * ('external', computed from a conditioning vector, is what the encoder–decoder's decoder uses; a
   * language model has no conditioning vector.)
   */
  h0: H0Policy;
  /** σ of the 'sampled' initial state. Default 0.1. */
  h0Sigma: number;
  /**
   * Joint prediction of the next n characters (default 1, the plain LM): heads k = 2..n on the same
   * hidden state predict the character k ahead, the joint factorised over the n steps; training
   * minimises Σ_k of their mean cross-entropies. Sampling and bits/char use the next-character head.
   */
  predictAhead: number;
}

/** How a char LM's initial hidden state is chosen: zeros, learned, sampled, or given from outside. */
export type H0Policy = 'zero' | 'learned' | 'sampled' | 'external';

/** Every {@link H0Policy}. */
export const H0_POLICIES: readonly H0Policy[] = ['zero', 'learned', 'sampled', 'external'];

/** The default char LM architecture: embed 64, one GRU layer of 256. */
export const DEFAULT_CHAR_LM: CharLMConfig = {
  embed: 64,
  hidden: 256,
  layers: 1,
  cell: 'gru',
  h0: 'zero',
  h0Sigma: 0.1,
  predictAhead: 1,
};

/** Options of {@link CharLM.create}: backend, device and seed. */
export interface CreateOptions {
  /** 'native' (Rust, default) or 'js' (pure TypeScript reference). */
  backend?: BackendName;
  device?: DeviceName;
  /** Seed of the initialisation. Default 0. */
  seed?: number;
}

/** Options of {@link CharLM.sample}. */
export interface SampleOptions extends SamplingOptions {
  /** Text the model reads before it starts writing; it is part of the returned string. */
  prime?: string;
  /** Characters to generate after the prime. Default 200. */
  length?: number;
  seed?: number;
  /** What to do with prime characters the model never saw (default 'error'; see Vocabulary). */
  unknown?: UnknownPolicy;
}

/** What {@link CharLM.evaluate} returns: bits and nats per character over the characters scored. */
export interface EvalResult {
  /** Bits per character. */
  bpc: number;
  /** Mean negative log-likelihood, nats per character. */
  nll: number;
  /** Characters scored (every character after the first). */
  chars: number;
  /**
   * A model predicting n ahead: bits per character of head k = 2..n (index k − 2), each over the
   * characters k ahead that exist. Empty for n = 1.
   */
  bpcAhead: number[];
}

const KIND = 'char-lm';
const CARRY_TENSOR = 'train.carry';
/** Characters `sample` takes from the sampler per call: bounds the ids held at once, not the length. */
const TAKE_CHUNK = 1 << 20;

function checkConfig(c: CharLMConfig): void {
  for (const k of ['embed', 'hidden', 'layers'] as const) {
    const v = c[k];
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(`${k} must be a whole number ≥ 1, got ${v}`);
  }
  if (!CELL_KINDS.includes(c.cell)) {
    throw new ConfigError(`cell must be one of ${CELL_KINDS.join(', ')}, got ${JSON.stringify(c.cell)}`);
  }
  if (c.h0 === 'external') {
    throw new ConfigError(
      "h0 'external' computes the initial state from a conditioning vector, which a language model does not have; " +
        "use 'zero', 'learned' or 'sampled' (the encoder–decoder's decoder is the model with an external h0)",
    );
  }
  if (!H0_POLICIES.includes(c.h0)) {
    throw new ConfigError(`h0 must be one of zero, learned, sampled; got ${JSON.stringify(c.h0)}`);
  }
  if (!(Number.isFinite(c.h0Sigma) && c.h0Sigma > 0)) {
    throw new ConfigError(`h0Sigma must be a finite number > 0, got ${c.h0Sigma}`);
  }
  checkPredictAhead(c.predictAhead);
}

/** The backend shape of a model of this vocabulary size and config. */
function shapeOf(vocabSize: number, c: CharLMConfig): CharLmShape {
  return {
    vocabSize,
    embed: c.embed,
    hidden: c.hidden,
    layers: c.layers,
    cell: c.cell,
    ...(c.h0 === 'learned' ? { learnedH0: true } : {}),
    ...(c.predictAhead > 1 ? { predictAhead: c.predictAhead } : {}),
  };
}

/** What a checkpoint holds besides the weights: training progress for exact resume. */
export interface TrainState {
  step: number;
  batcher?: unknown;
  [key: string]: unknown;
}

/**
 * A character-level language model: `Embedding → GRU/LSTM/RNN × layers → Linear`, trained with
 * truncated backprop through time.
 *
 * ```ts
 * import { CharLM, Vocabulary } from 'arflow';
 * const text = 'the quick brown fox jumps over the lazy dog. '.repeat(40);
 * const lm = CharLM.create(Vocabulary.fromText(text), { embed: 16, hidden: 32 }, { seed: 0 });
 * await lm.fit(text, { steps: 20, batchSize: 4, seqLen: 16 });
 * console.log(lm.sample({ prime: 'the ', length: 40, seed: 1 }), await lm.evaluate(text));
 * ```
 */
export class CharLM {
  private constructor(
    readonly vocab: Vocabulary,
    readonly config: CharLMConfig,
    readonly backend: CharLmBackend,
  ) {}

  /** The backend's view of the architecture (vocabulary size, widths, cell). */
  get shape(): CharLmShape {
    return this.backend.shape;
  }

  /** State values per layer and stream: H, or 2H for the LSTM's (h, c). */
  stateSize(): number {
    return stateWidth(this.config.cell) * this.config.hidden;
  }

  /**
   * The state `[L, streams, S]` a stream starts from under the model's h0 policy: N(0, h0Sigma²) from
   * `rng` for 'sampled'; null otherwise (the backend then uses zeros or the learned h0).
   */
  initialState(streams: number, rng: Rng): Float32Array | null {
    if (this.config.h0 !== 'sampled') return null;
    const s = new Float32Array(this.config.layers * streams * this.stateSize());
    for (let i = 0; i < s.length; i++) s[i] = this.config.h0Sigma * rng.normal();
    return s;
  }

  /**
   * A new model with PyTorch's default initialisation, drawn from a seeded generator so the native and
   * TypeScript backends start from identical weights: embedding N(0, 1); recurrent layers and head
   * U(−1/√H, 1/√H).
   */
  static create(
    vocab: Vocabulary,
    config: Partial<CharLMConfig> & { bidirectional?: boolean } = {},
    opts: CreateOptions = {},
  ): CharLM {
    if (config.bidirectional) {
      throw new ConfigError(
        'a language model cannot be bidirectional: its reverse direction would read the very characters it is asked ' +
          'to predict. Bidirectional layers are for encoders (arflow train seq2seq --bidirectional).',
      );
    }
    const cfg = { ...DEFAULT_CHAR_LM };
    if (config.embed !== undefined) cfg.embed = config.embed;
    if (config.hidden !== undefined) cfg.hidden = config.hidden;
    if (config.layers !== undefined) cfg.layers = config.layers;
    if (config.cell !== undefined) cfg.cell = config.cell;
    if (config.h0 !== undefined) cfg.h0 = config.h0;
    if (config.h0Sigma !== undefined) cfg.h0Sigma = config.h0Sigma;
    if (config.predictAhead !== undefined) cfg.predictAhead = config.predictAhead;
    checkConfig(cfg);
    const backend = createCharLmBackend(shapeOf(vocab.size, cfg), opts.backend, opts.device);
    const rng = new Rng(opts.seed ?? 0);
    const bound = 1 / Math.sqrt(cfg.hidden);
    for (const p of backend.paramInfo()) {
      const n = p.shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(n);
      if (p.name === 'h0') data.fill(0);
      else if (p.name === 'embedding.weight') for (let i = 0; i < n; i++) data[i] = rng.normal();
      else for (let i = 0; i < n; i++) data[i] = rng.range(-bound, bound);
      backend.setParam(p.name, data);
    }
    return new CharLM(vocab, cfg, backend);
  }

  /** A copy of this model's weights (not optimizer state) on another backend or device. */
  to(backend: BackendName, device: DeviceName = 'cpu'): CharLM {
    const other = createCharLmBackend(shapeOf(this.vocab.size, this.config), backend, device);
    for (const p of this.backend.paramInfo()) other.setParam(p.name, this.backend.getParam(p.name));
    return new CharLM(this.vocab, this.config, other);
  }

  // ---- checkpoints -------------------------------------------------------------------------------

  /**
   * Writes one safetensors file (atomically: temp file + rename). Weights carry PyTorch state_dict
   * names; with `optimizer`, AdamW moments go under `optimizer.exp_avg.<name>` /
   * `optimizer.exp_avg_sq.<name>` and the carried BPTT state under `train.carry`, for exact resume.
   * The config, vocabulary and `train` state live in the metadata.
   */
  async save(path: string, opts: { optimizer?: boolean; train?: TrainState } = {}): Promise<void> {
    const { tensors, metadata } = checkpointContents(
      this.backend,
      KIND,
      { config: JSON.stringify(this.config), vocab: JSON.stringify(this.vocab.toJSON()) },
      opts,
    );
    const carry = opts.optimizer ? this.backend.getCarry() : null;
    if (carry) {
      tensors[CARRY_TENSOR] = {
        dtype: 'F32',
        shape: [this.config.layers, carry.batch, this.stateSize()],
        data: carry.state,
      };
    }
    saveSafetensors(path, tensors, metadata);
  }

  /**
   * Loads a checkpoint written by {@link CharLM.save}. Throws {@link CheckpointError} for a file that is
   * missing, truncated, not safetensors, not an arflow char-lm, or whose tensors do not match its config.
   */
  static load(path: string, opts: Omit<CreateOptions, 'seed'> = {}): { model: CharLM; train: TrainState | null } {
    const { tensors, metadata } = loadSafetensors(path);
    if (!isCheckpointOf(metadata, KIND)) {
      throw new CheckpointError(
        `${path} is a safetensors file but not an arflow char-lm checkpoint (metadata format=${metadata.format ?? 'none'}, kind=${metadata.kind ?? 'none'})`,
      );
    }
    let config: CharLMConfig;
    let vocab: Vocabulary;
    try {
      config = { ...DEFAULT_CHAR_LM, ...JSON.parse(metadata.config) };
      checkConfig(config);
      vocab = Vocabulary.fromJSON(JSON.parse(metadata.vocab));
    } catch (e) {
      throw new CheckpointError(`${path}: unreadable config or vocabulary in metadata (${(e as Error).message})`);
    }
    const shape = shapeOf(vocab.size, config);
    const backend = createCharLmBackend(shape, opts.backend, opts.device);
    const info = backend.paramInfo();
    const expected = new Set(info.map((p) => p.name));
    for (const name of Object.keys(tensors)) {
      if (!expected.has(name) && !name.startsWith(OPTIM_PREFIX) && name !== CARRY_TENSOR) {
        throw new CheckpointError(
          `${path}: unexpected tensor ${name} for a char-lm of config ${JSON.stringify(shape)}`,
        );
      }
    }
    const take = (name: string, want: number[]): Float32Array => {
      const t = tensors[name];
      if (!t) throw new CheckpointError(`${path}: tensor ${name} is missing`);
      if (t.dtype !== 'F32' || t.shape.join(',') !== want.join(',')) {
        throw new CheckpointError(
          `${path}: tensor ${name} is ${t.dtype}[${t.shape}] but the config ${JSON.stringify(shape)} needs F32[${want}] (config/vocabulary mismatch)`,
        );
      }
      return t.data as Float32Array;
    };
    // Check everything before touching the model: a bad file changes nothing.
    const finite = (name: string, data: Float32Array) => {
      if (!data.every(Number.isFinite)) throw new CheckpointError(`${path}: tensor ${name} holds NaN or Inf`);
      return data;
    };
    const params = info.map((p) => [p.name, finite(p.name, take(p.name, p.shape))] as const);
    let optim: { moments: [OptimMoment, string, Float32Array][]; step: number; carry: Carry | null } | null = null;
    if (metadata.optimizer_step !== undefined) {
      const step = Number(metadata.optimizer_step);
      if (!Number.isInteger(step) || step < 0) {
        throw new CheckpointError(
          `${path}: optimizer_step ${JSON.stringify(metadata.optimizer_step)} is not a whole number ≥ 0`,
        );
      }
      const moments: [OptimMoment, string, Float32Array][] = [];
      for (const which of ['exp_avg', 'exp_avg_sq'] as OptimMoment[]) {
        for (const p of info) {
          const name = `${OPTIM_PREFIX}${which}.${p.name}`;
          moments.push([which, p.name, finite(name, take(name, p.shape))]);
        }
      }
      let carry: Carry | null = null;
      const c = tensors[CARRY_TENSOR];
      if (c) {
        const [layers, batch, width] = c.shape;
        const want = stateWidth(config.cell) * config.hidden;
        if (c.shape.length !== 3 || layers !== config.layers || width !== want || !(batch >= 1)) {
          throw new CheckpointError(
            `${path}: ${CARRY_TENSOR} has shape [${c.shape}], expected [${config.layers}, batch, ${want}]`,
          );
        }
        carry = { batch, state: finite(CARRY_TENSOR, take(CARRY_TENSOR, c.shape)) };
      }
      optim = { moments, step, carry };
    }
    for (const [name, data] of params) backend.setParam(name, data);
    if (optim) {
      for (const [which, name, data] of optim.moments) backend.setOptimState(which, name, data);
      backend.setOptimStep(optim.step);
      backend.setCarry(optim.carry);
    }
    let train: TrainState | null = null;
    if (metadata.train) {
      try {
        train = JSON.parse(metadata.train) as TrainState;
      } catch {
        throw new CheckpointError(`${path}: unreadable training state in metadata`);
      }
    }
    return { model: new CharLM(vocab, config, backend), train };
  }

  /**
   * Trains on `text` (or already-encoded ids) with truncated BPTT; see {@link TrainOptions}. Resolves
   * with a summary when done or stopped by `signal`. The event loop stays free while each batch runs.
   */
  fit(text: string | Uint32Array, opts: TrainOptions = {}): Promise<TrainSummary> {
    const ids = typeof text === 'string' ? this.vocab.encode(text) : text;
    return trainCharLM(this, ids, opts);
  }

  // ---- inference ---------------------------------------------------------------------------------

  /** Logits `[chars, V]` for every position of `text`, read as one sequence from the initial state. */
  logits(text: string, unknown: UnknownPolicy = 'error'): Float32Array {
    const ids = this.vocab.encode(text, unknown);
    const v = this.vocab.size;
    const out = new Float32Array(ids.length * v);
    let state: Float32Array | null = this.initialState(1, new Rng(0));
    for (let i = 0; i < ids.length; i++) {
      const r = this.backend.step(state, ids.subarray(i, i + 1));
      state = r.state;
      out.set(r.logits, i * v);
    }
    return out;
  }

  /**
   * The sampling loop of `count` generations, generation i with the generator `new Rng(seed + i)`:
   * its initial state (h0 'sampled' draws it from that generator), then its prime — or, with no
   * prime, a newline if the corpus has one (a natural "start of text"), else a random character —
   * read once (never re-fed), the hidden state carried from step to step. The backend's own sampler
   * when it has one (native: steps and draws in Rust), else {@link StepSampler} over `step`; both
   * draw the same ids.
   */
  private startSampling(opts: SampleOptions, count: number): { sampler: TokenSampler; length: number } {
    const sampling = validateSampling(opts);
    const length = opts.length ?? 200;
    if (!Number.isInteger(length) || length < 0)
      throw new ConfigError(`length must be a whole number ≥ 0, got ${length}`);
    const seed = opts.seed ?? 0;
    const prime = this.vocab.encode(opts.prime ?? '', opts.unknown ?? 'error');
    const p = Math.max(prime.length, 1);
    const primes = new Uint32Array(count * p);
    const rngs: Rng[] = [];
    const states: (Float32Array | null)[] = [];
    for (let i = 0; i < count; i++) {
      const rng = new Rng(seed + i);
      states.push(this.initialState(1, rng));
      if (prime.length > 0) primes.set(prime, i * p);
      else primes[i] = this.vocab.has('\n') ? this.vocab.encode('\n')[0] : rng.int(this.vocab.size);
      rngs.push(rng);
    }
    const init: SamplerInit = { state: this.stackStates(states), prime: primes, rngs, sampling };
    const sampler = this.backend.sampler ? this.backend.sampler(init) : new StepSampler(this.backend, init);
    return { sampler, length };
  }

  /** Per-stream states `[L, 1, S]` stacked into `[L, N, S]`; null when every stream starts from the backend's h0. */
  private stackStates(states: (Float32Array | null)[]): Float32Array | null {
    if (states[0] === null) return null;
    if (states.length === 1) return states[0];
    const { layers } = this.config;
    const s = this.stateSize();
    const n = states.length;
    const out = new Float32Array(layers * n * s);
    states.forEach((st, i) => {
      for (let l = 0; l < layers; l++) out.set((st as Float32Array).subarray(l * s, (l + 1) * s), (l * n + i) * s);
    });
    return out;
  }

  /** `prime` as `sample` returns it: with an `unknown` policy, what the model actually read. */
  private primeText(opts: SampleOptions): string {
    const out = opts.prime ?? '';
    return opts.unknown && opts.unknown !== 'error' ? this.vocab.decode(this.vocab.encode(out, opts.unknown)) : out;
  }

  /**
   * Generates text, one character per iteration. The hidden state is carried from step to step (the
   * prime is read once, never re-fed), and a fixed `seed` gives the same text every time — the same
   * characters as {@link CharLM.sample}.
   */
  *stream(opts: SampleOptions = {}): Generator<string> {
    const { sampler, length } = this.startSampling(opts, 1);
    for (let i = 0; i < length; i++) yield this.vocab.decode([sampler.next()]);
  }

  /** `prime` followed by `length` generated characters: what {@link CharLM.stream} yields, in one call. */
  sample(opts: SampleOptions = {}): string {
    let out = this.primeText(opts);
    const { sampler, length } = this.startSampling(opts, 1);
    for (let done = 0; done < length; done += TAKE_CHUNK) {
      out += this.vocab.decode(sampler.take(Math.min(TAKE_CHUNK, length - done)));
    }
    return out;
  }

  /**
   * `count` generations at once, all streams stepping together (on the native backend each step is
   * one GEMM per weight for all of them): generation i is exactly
   * `sample({ ...opts, seed: (opts.seed ?? 0) + i })`.
   */
  sampleMany(count: number, opts: SampleOptions = {}): string[] {
    if (!Number.isInteger(count) || count < 1) throw new ConfigError(`count must be a whole number ≥ 1, got ${count}`);
    const prefix = this.primeText(opts);
    const { sampler, length } = this.startSampling(opts, count);
    const out = new Array<string>(count).fill(prefix);
    const chunk = Math.max(1, Math.floor(TAKE_CHUNK / count));
    for (let done = 0; done < length; done += chunk) {
      const n = Math.min(chunk, length - done);
      const ids = sampler.take(n);
      for (let i = 0; i < count; i++) out[i] += this.vocab.decode(ids.subarray(i * n, (i + 1) * n));
    }
    return out;
  }

  /**
   * Bits per character of `text`, read as one sequence from a zero state, each character predicted from
   * those before it. Long texts are scored in chunks with the state carried, which is exact.
   */
  async evaluate(text: string, opts: { unknown?: UnknownPolicy; chunk?: number } = {}): Promise<EvalResult> {
    const ids = this.vocab.encode(text, opts.unknown ?? 'error');
    return this.evaluateIds(ids, opts.chunk);
  }

  /** Like {@link CharLM.evaluate}, on text already encoded with this model's vocabulary; `chunk` characters per backend call. */
  async evaluateIds(ids: Uint32Array, chunk = 4096): Promise<EvalResult> {
    if (ids.length < 2) throw new ConfigError('evaluation needs at least 2 characters of text');
    // A 'sampled' h0 draws the starting state from a fixed seed, so evaluation is repeatable.
    let state: Float32Array | null = this.initialState(1, new Rng(0));
    let total = 0;
    const n = ids.length - 1;
    const ahead = this.config.predictAhead;
    const aheadTotal = new Array<number>(ahead - 1).fill(0);
    for (let at = 0; at < n; at += chunk) {
      const len = Math.min(chunk, n - at);
      // Block k − 1 holds the character k after each input, IGNORE_TARGET past the end of the text.
      const targets = new Uint32Array(ahead * len).fill(IGNORE_TARGET);
      for (let k = 1; k <= ahead; k++) targets.set(ids.subarray(at + k, at + k + len), (k - 1) * len);
      const r = await this.backend.nll(ids.subarray(at, at + len), targets, 1, len, state);
      total += r.nll;
      r.aheadNll.forEach((v, i) => {
        aheadTotal[i] += v;
      });
      state = r.state;
    }
    const nll = total / n;
    // Head k scores the n + 1 − k characters that have one k before them.
    const bpcAhead = aheadTotal.map((v, i) => (n - 1 - i > 0 ? v / (n - 1 - i) / Math.LN2 : Number.NaN));
    return { bpc: nll / Math.LN2, nll, chars: n, bpcAhead };
  }
}
