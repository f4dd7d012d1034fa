/**
 * An encoder–decoder over token sequences (Sutskever et al. 2014, "Sequence to Sequence Learning with
 * Neural Networks"; Cho et al. 2014), made for grapheme-to-phoneme conversion on CMUdict and any
 * `source → target` TSV data:
 *
 *   letters → embedding → encoder (GRU/LSTM/RNN, L layers, optionally bidirectional)
 *           → decoder h0 = tanh(W · [encoder final states] + b)        (the `h0: 'external'` policy)
 *   phonemes → embedding → decoder (L layers) → softmax over phonemes
 *
 * Training is one native call per batch (teacher forcing, free running or scheduled sampling inside the
 * step); decoding is greedy or beam search over the native single-step decoder.
 *
 * ```ts
 * const { train, test } = splitCmudict(loadCmudict());
 * const g2p = Seq2Seq.forEntries(train, { cell: 'lstm', bidirectional: true });
 * await g2p.fit(train, { steps: 4000, onProgress: (p) => console.log(p.step, p.loss) });
 * console.log(g2p.translate([...'ZUCCHINI'], { beam: 5 }));          // [{ tokens: ['Z','UW','K','IY','N','IY'], … }]
 * console.log(await g2p.evaluate(test, { beam: 5 }));                 // { per, wer, perBeam, werBeam, words }
 * ```
 */
import { NativeSeq2Seq, type Seq2SeqShape } from '../backend/native-seq2seq.js';
import { CELL_KINDS, type CellKind, type OptimMoment, stateWidth } from '../backend/types.js';
import type { PronEntry } from '../data/cmudict.js';
import { bucketBySourceLength, type EncodedPair } from '../data/seq2seq-batches.js';
import { BOS, EOS, type TokenUnknownPolicy, TokenVocabulary } from '../data/token-vocab.js';
import { CheckpointError, ConfigError } from '../errors.js';
import { checkpointContents, expectTensors, isCheckpointOf, OPTIM_PREFIX, readTrainInfo } from '../io/checkpoint.js';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import { phonemeErrorRate, wordErrorRate } from '../metrics/edit-distance.js';
import { beamSearch, type DecoderStep, type Hypothesis, type LengthPenalty } from '../sample/beam.js';
import { decodeEach, greedyBatch, layeredStepper } from '../sample/decoder.js';
import { type Seq2SeqTrainOptions, type Seq2SeqTrainSummary, trainSeq2Seq } from '../train/seq2seq-trainer.js';
import { Rng } from '../util/rng.js';

/** Architecture of a {@link Seq2Seq}. */
export interface Seq2SeqConfig {
  /** Embedding width of both vocabularies. Default 64. */
  embed: number;
  /** Hidden units per layer and direction. Default 256. */
  hidden: number;
  /** Layers of the encoder and of the decoder. Default 1. */
  layers: number;
  /** Default 'lstm'. */
  cell: CellKind;
  /** A bidirectional encoder (the decoder is always forward). Default false. */
  bidirectional: boolean;
}

/** The default encoder–decoder architecture: embed 64, one unidirectional LSTM layer of 256. */
export const DEFAULT_SEQ2SEQ: Seq2SeqConfig = { embed: 64, hidden: 256, layers: 1, cell: 'lstm', bidirectional: false };

export const SEQ2SEQ_KIND = 'seq2seq';

/** Most tokens a decoded output may have (EOS included) unless asked otherwise. */
const DEFAULT_MAX_LENGTH = 40;

/** Options of {@link Seq2Seq.translate} and {@link Seq2Seq.evaluate}. */
export interface DecodeOptions {
  /** Beam width; 1 (default) is greedy decoding. */
  beam?: number;
  /** Hypotheses to return, best first (≤ beam). Default 1. */
  nBest?: number;
  /** Longest output, EOS included. Default: 2 × the source length + 5, at most 40. */
  maxLength?: number;
  /** How beam search compares hypotheses of different lengths. Default 'average' (mean log-prob per token). */
  lengthPenalty?: LengthPenalty;
  /** Source tokens outside the vocabulary: 'error' (default, a VocabularyError naming them) or 'skip'. */
  unknown?: TokenUnknownPolicy;
}

/** One output sequence with its log-probability. */
export interface Translation {
  tokens: string[];
  /** Natural log-probability of the output, EOS included. */
  logProb: number;
  /** The score beam search ranked by (log-prob under the length penalty). */
  score: number;
}

/** What {@link Seq2Seq.evaluate} returns: phoneme and word error rates of greedy (and beam) decoding. */
export interface Seq2SeqEval {
  words: number;
  /** Phoneme (token) error rate of greedy decoding: Σ edit distance / Σ reference length. */
  per: number;
  /** Share of words whose greedy output matches none of their references. */
  wer: number;
  perBeam?: number;
  werBeam?: number;
  beam?: number;
}

function checkConfig(c: Seq2SeqConfig): void {
  for (const k of ['embed', 'hidden', 'layers'] as const) {
    const v = c[k];
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(`${k} must be a whole number ≥ 1, got ${v}`);
  }
  if (!CELL_KINDS.includes(c.cell)) {
    throw new ConfigError(`cell must be one of ${CELL_KINDS.join(', ')}, got ${JSON.stringify(c.cell)}`);
  }
  if (typeof c.bidirectional !== 'boolean') throw new ConfigError('bidirectional must be true or false');
}

/** What a checkpoint holds besides the weights: training progress for resume. */
export interface Seq2SeqTrainState {
  step: number;
  [key: string]: unknown;
}

/**
 * An encoder–decoder over token sequences (grapheme-to-phoneme on CMUdict, or any `source → target`
 * pairs), trained with teacher forcing or scheduled sampling, decoded greedily or with beam search.
 *
 * ```ts
 * import { Seq2Seq, loadCmudict, splitCmudict } from 'arflow';
 * const { train, test } = splitCmudict(loadCmudict().slice(0, 2000));
 * const g2p = Seq2Seq.forEntries(train, { embed: 16, hidden: 32 });
 * await g2p.fit(train, { steps: 20, batchSize: 16 });
 * console.log(g2p.translate([...'CAT'], { beam: 3 })[0].tokens, await g2p.evaluate(test.slice(0, 50)));
 * ```
 */
export class Seq2Seq {
  private constructor(
    readonly src: TokenVocabulary,
    readonly tgt: TokenVocabulary,
    readonly config: Seq2SeqConfig,
    readonly backend: NativeSeq2Seq,
  ) {}

  /** The backend's view of the architecture (vocabulary sizes, widths, cell). */
  get shape(): Seq2SeqShape {
    return this.backend.shape;
  }

  /**
   * A new model with PyTorch's default initialisation drawn from a seeded generator: embeddings N(0, 1);
   * recurrent layers and head U(−1/√H, 1/√H); the bridge U(−1/√fan_in, 1/√fan_in) like `nn.Linear`.
   */
  static create(
    src: TokenVocabulary,
    tgt: TokenVocabulary,
    config: Partial<Seq2SeqConfig> = {},
    opts: { seed?: number; device?: string } = {},
  ): Seq2Seq {
    const cfg: Seq2SeqConfig = { ...DEFAULT_SEQ2SEQ };
    for (const k of Object.keys(DEFAULT_SEQ2SEQ) as (keyof Seq2SeqConfig)[]) {
      if (config[k] !== undefined) (cfg as unknown as Record<string, unknown>)[k] = config[k];
    }
    checkConfig(cfg);
    const backend = new NativeSeq2Seq({ srcVocab: src.size, tgtVocab: tgt.size, ...cfg }, opts.device ?? 'cpu');
    const rng = new Rng(opts.seed ?? 0);
    const bridgeFanIn = (cfg.bidirectional ? 2 : 1) * stateWidth(cfg.cell) * cfg.hidden;
    for (const p of backend.paramInfo()) {
      const n = p.shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(n);
      if (p.name.endsWith('embedding.weight')) for (let i = 0; i < n; i++) data[i] = rng.normal();
      else {
        const bound = 1 / Math.sqrt(p.name.startsWith('bridge.') ? bridgeFanIn : cfg.hidden);
        for (let i = 0; i < n; i++) data[i] = rng.range(-bound, bound);
      }
      backend.setParam(p.name, data);
    }
    return new Seq2Seq(src, tgt, cfg, backend);
  }

  /** A model whose vocabularies are those of `entries` (letters in, every pronunciation's tokens out). */
  static forEntries(entries: readonly PronEntry[], config: Partial<Seq2SeqConfig> = {}, opts = {}): Seq2Seq {
    const src = TokenVocabulary.fromSequences(entries.map((e) => e.letters));
    const tgt = TokenVocabulary.fromSequences(entries.flatMap((e) => e.prons));
    return Seq2Seq.create(src, tgt, config, opts);
  }

  /** One encoded pair per pronunciation; tokens outside the vocabularies follow `unknown`. */
  encodePairs(entries: readonly PronEntry[], unknown: TokenUnknownPolicy = 'error'): EncodedPair[] {
    const out: EncodedPair[] = [];
    for (const e of entries) {
      const src = this.src.encode(e.letters, unknown);
      if (src.length === 0) continue;
      for (const p of e.prons) out.push({ src, tgt: this.tgt.encode(p, unknown) });
    }
    return out;
  }

  /** Trains on `entries` (every pronunciation is a pair); see {@link Seq2SeqTrainOptions}. */
  fit(entries: readonly PronEntry[], opts: Seq2SeqTrainOptions = {}): Promise<Seq2SeqTrainSummary> {
    return trainSeq2Seq(this, entries, opts);
  }

  // ---- decoding ----------------------------------------------------------------------------------

  private maxLength(srcLen: number, given?: number): number {
    if (given !== undefined) {
      if (!Number.isInteger(given) || given < 1)
        throw new ConfigError(`maxLength must be a whole number ≥ 1, got ${given}`);
      return given;
    }
    return Math.min(DEFAULT_MAX_LENGTH, 2 * srcLen + 5);
  }

  /** The decoder as beam search sees it: one state `[L, 1, S]` per hypothesis, batched per step. */
  private stepper(): DecoderStep<Float32Array> {
    const S = stateWidth(this.config.cell) * this.config.hidden;
    return layeredStepper(this.config.layers, S, this.tgt.size, (state, tokens) =>
      this.backend.decodeStep(state, tokens),
    );
  }

  /** Greedy decoding of many sources at once (batched by source length): the argmax token each step. */
  greedy(sources: readonly Uint32Array[], maxLength?: number): Hypothesis[] {
    const out: Hypothesis[] = new Array(sources.length);
    const indexed = sources.map((src, i) => ({ src, i }));
    const step = (state: Float32Array, tokens: Uint32Array) => this.backend.decodeStep(state, tokens);
    for (const bucket of bucketBySourceLength(indexed)) {
      for (let at = 0; at < bucket.length; at += 256) {
        const rows = bucket.slice(at, at + 256);
        const n = rows.length;
        const srcLen = rows[0].src.length;
        const src = new Uint32Array(n * srcLen);
        for (const [b, r] of rows.entries()) src.set(r.src, b * srcLen);
        const limit = this.maxLength(srcLen, maxLength);
        const hyps = greedyBatch(step, this.backend.encode(src, n, srcLen), n, this.tgt.size, {
          limit,
          bos: BOS,
          eos: EOS,
        });
        rows.forEach((r, b) => {
          out[r.i] = hyps[b];
        });
      }
    }
    return out;
  }

  /** Beam search for one encoded source (width 1 is greedy). */
  beam(src: Uint32Array, opts: DecodeOptions = {}): Hypothesis[] {
    const state = this.backend.encode(src, 1, src.length);
    return beamSearch(this.stepper(), state, {
      width: opts.beam ?? 1,
      nBest: opts.nBest ?? 1,
      maxLength: this.maxLength(src.length, opts.maxLength),
      bos: BOS,
      eos: EOS,
      lengthPenalty: opts.lengthPenalty ?? 'average',
    });
  }

  /** The output(s) for one source sequence (e.g. the letters of a word), best first. */
  translate(source: readonly string[], opts: DecodeOptions = {}): Translation[] {
    const src = this.src.encode(source, opts.unknown ?? 'error');
    if (src.length === 0) throw new ConfigError('the input has no token the model knows');
    return this.beam(src, opts).map((h) => ({ tokens: this.tgt.decode(h.tokens), logProb: h.logProb, score: h.score }));
  }

  /**
   * PER and WER of greedy decoding on `entries` (and of beam search when `beam` > 1); a word with several
   * pronunciations counts as right if the output matches any (see `src/metrics/edit-distance.ts`).
   * Source tokens the model never saw are skipped.
   */
  async evaluate(
    entries: readonly PronEntry[],
    opts: { beam?: number; lengthPenalty?: LengthPenalty; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<Seq2SeqEval> {
    const sources = entries.map((e) => this.src.encode(e.letters, 'skip'));
    const kept = entries.filter((_, i) => sources[i].length > 0);
    const srcs = sources.filter((s) => s.length > 0);
    if (kept.length === 0) throw new ConfigError('nothing to evaluate: no entry has a token the model knows');
    const refs = kept.map((e) => e.prons);
    const greedy = this.greedy(srcs).map((h) => this.tgt.decode(h.tokens));
    const result: Seq2SeqEval = {
      words: kept.length,
      per: phonemeErrorRate(greedy, refs),
      wer: wordErrorRate(greedy, refs),
    };
    const width = opts.beam ?? 1;
    if (width > 1) {
      const hyps = await decodeEach(
        srcs.length,
        (i) => this.tgt.decode(this.beam(srcs[i], { beam: width, lengthPenalty: opts.lengthPenalty })[0].tokens),
        256,
        opts.onProgress,
      );
      result.perBeam = phonemeErrorRate(hyps, refs);
      result.werBeam = wordErrorRate(hyps, refs);
      result.beam = width;
    }
    return result;
  }

  // ---- checkpoints -------------------------------------------------------------------------------

  /**
   * Writes one safetensors file atomically: the weights under PyTorch names, the config and both
   * vocabularies in the metadata; with `optimizer`, the AdamW moments (`optimizer.exp_avg.<name>`, …).
   */
  async save(path: string, opts: { optimizer?: boolean; train?: Seq2SeqTrainState } = {}): Promise<void> {
    const { tensors, metadata } = checkpointContents(
      this.backend,
      SEQ2SEQ_KIND,
      {
        config: JSON.stringify(this.config),
        src_vocab: JSON.stringify(this.src.toJSON()),
        tgt_vocab: JSON.stringify(this.tgt.toJSON()),
      },
      opts,
    );
    saveSafetensors(path, tensors, metadata);
  }

  /**
   * Loads a checkpoint written by {@link Seq2Seq.save}. CheckpointError for a file that is missing,
   * truncated, not an arflow seq2seq checkpoint, or whose tensors do not match its config; nothing is
   * loaded then.
   */
  static load(path: string, opts: { device?: string } = {}): { model: Seq2Seq; train: Seq2SeqTrainState | null } {
    const { tensors, metadata } = loadSafetensors(path);
    if (!isCheckpointOf(metadata, SEQ2SEQ_KIND)) {
      throw new CheckpointError(
        `${path} is not an arflow seq2seq checkpoint (metadata format=${metadata.format ?? 'none'}, kind=${metadata.kind ?? 'none'})`,
      );
    }
    let config: Seq2SeqConfig;
    let src: TokenVocabulary;
    let tgt: TokenVocabulary;
    try {
      config = { ...DEFAULT_SEQ2SEQ, ...JSON.parse(metadata.config) };
      checkConfig(config);
      src = TokenVocabulary.fromJSON(metadata.src_vocab);
      tgt = TokenVocabulary.fromJSON(metadata.tgt_vocab);
    } catch (e) {
      throw new CheckpointError(`${path}: unreadable config or vocabularies in metadata (${(e as Error).message})`);
    }
    const backend = new NativeSeq2Seq({ srcVocab: src.size, tgtVocab: tgt.size, ...config }, opts.device ?? 'cpu');
    const info = backend.paramInfo();
    // Check everything before touching the model: a bad file changes nothing.
    let step: number | null = null;
    if (metadata.optimizer_step !== undefined) {
      step = Number(metadata.optimizer_step);
      if (!Number.isInteger(step) || step < 0)
        throw new CheckpointError(`${path}: optimizer_step is not a whole number ≥ 0`);
    }
    const moments = step === null ? [] : (['exp_avg', 'exp_avg_sq'] as OptimMoment[]);
    const expected = [
      ...info,
      ...moments.flatMap((which) => info.map((p) => ({ name: `${OPTIM_PREFIX}${which}.${p.name}`, shape: p.shape }))),
    ];
    const data = expectTensors(path, tensors, expected, `a seq2seq of config ${JSON.stringify(config)}`);
    const params = data.slice(0, info.length);
    const train = readTrainInfo(path, metadata) as Seq2SeqTrainState | null;
    for (const [name, t] of params) backend.setParam(name, t);
    moments.forEach((which, m) => {
      for (const [i, p] of info.entries()) backend.setOptimState(which, p.name, data[info.length * (m + 1) + i][1]);
    });
    if (step !== null) backend.setOptimStep(step);
    return { model: new Seq2Seq(src, tgt, config, backend), train };
  }
}
