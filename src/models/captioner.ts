/**
 * An image captioner in the manner of "Show and Tell" (Vinyals et al. 2015): a small CNN maps a 56×56
 * grayscale picture to the initial state of a recurrent decoder (`h0: 'external'`), which generates the
 * caption word by word (architecture: `crates/arflow-core/src/caption.rs`).
 *
 *   pixels → [3×3 conv → ReLU → 2×2 mean pool] × K → flatten (places kept) → tanh(W·f + b) = decoder s0
 *   words  → embedding → decoder (GRU/LSTM/RNN, L layers) → softmax over words
 *
 * Training is one native call per batch (teacher forcing, free running or scheduled sampling inside the
 * step); captioning is greedy or beam search over the native single-step decoder; `evaluate` scores
 * corpus BLEU-4 and exact match against every phrasing of each canvas's layout.
 *
 * ```ts
 * const train = loadCaptionCanvases('train', { count: 20000, seed: 0 });
 * const test = loadCaptionCanvases('test', { count: 1000, seed: 0 });
 * const model = Captioner.create({ cell: 'lstm' });
 * await model.fit(train, { seconds: 120, sampling: { feed: 'scheduled' } });
 * console.log(model.caption(test.images.subarray(0, 56 * 56), { beam: 3 })[0].text);
 * console.log(await model.evaluate(test, { beam: 3 }));   // { canvases, bleu4, exactMatch, bleu4Beam, … }
 * ```
 */
import { type CaptionShape, NativeCaptioner } from '../backend/native-caption.js';
import { CELL_KINDS, type CellKind, stateWidth } from '../backend/types.js';
import { CANVAS_SIZE, type CaptionCanvases, captionVocabulary } from '../data/canvases.js';
import { BOS, EOS, TokenVocabulary } from '../data/token-vocab.js';
import { CheckpointError, ConfigError } from '../errors.js';
import {
  applyOptimizerState,
  checkpointContents,
  expectTensors,
  isCheckpointOf,
  readOptimizerState,
  readTrainInfo,
} from '../io/checkpoint.js';
import { loadSafetensors, saveSafetensors } from '../io/safetensors.js';
import { corpusBleu, exactMatch } from '../metrics/bleu.js';
import { beamSearch, type Hypothesis, type LengthPenalty } from '../sample/beam.js';
import { decodeEach, greedyBatch, layeredStepper } from '../sample/decoder.js';
import { type CaptionTrainOptions, type CaptionTrainSummary, trainCaptioner } from '../train/caption-trainer.js';
import { Rng } from '../util/rng.js';

/** Architecture of a {@link Captioner}. */
export interface CaptionerConfig {
  /** Word embedding width. Default 32. */
  embed: number;
  /** Hidden units per decoder layer. Default 128. */
  hidden: number;
  /** Decoder layers (each gets its own bridge from the image features). Default 1. */
  layers: number;
  /** Default 'gru'. */
  cell: CellKind;
  /** Output channels of each conv block; one 2×2 pool per block. Default [8, 16, 32] (56 → 7). */
  channels: number[];
  /** Side of the square grayscale images. Default 56 (the caption canvases). */
  image: number;
}

/** The default captioner architecture. */
export const DEFAULT_CAPTIONER: CaptionerConfig = {
  embed: 32,
  hidden: 128,
  layers: 1,
  cell: 'gru',
  channels: [8, 16, 32],
  image: CANVAS_SIZE,
};

export const CAPTION_KIND = 'caption';

/** Longest caption generated unless asked otherwise, EOS included (the grammar's longest is 40 words). */
const DEFAULT_MAX_LENGTH = 48;

/** Options of {@link Captioner.caption}. */
export interface CaptionOptions {
  /** Beam width; 1 (default) is greedy decoding. */
  beam?: number;
  /** Longest output, EOS included. Default 48. */
  maxLength?: number;
  /** How beam search compares hypotheses of different lengths. Default 'average'. */
  lengthPenalty?: LengthPenalty;
}

/** One caption: its words, their text and its log-probability. */
export interface CaptionResult {
  words: string[];
  text: string;
  /** Natural log-probability of the caption, EOS included. */
  logProb: number;
}

/** What {@link Captioner.evaluate} returns: BLEU-4 and exact match of greedy (and beam) captions. */
export interface CaptionEval {
  canvases: number;
  /** Corpus BLEU-4 of greedy captions against every phrasing of each canvas. */
  bleu4: number;
  /** Share of canvases whose greedy caption is one of their phrasings. */
  exactMatch: number;
  bleu4Beam?: number;
  exactMatchBeam?: number;
  beam?: number;
}

/** What a checkpoint holds besides the weights: training progress for resume. */
export interface CaptionerTrainState {
  step: number;
  [key: string]: unknown;
}

function checkConfig(c: CaptionerConfig): void {
  for (const k of ['embed', 'hidden', 'layers', 'image'] as const) {
    const v = c[k];
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(`${k} must be a whole number ≥ 1, got ${v}`);
  }
  if (!CELL_KINDS.includes(c.cell)) {
    throw new ConfigError(`cell must be one of ${CELL_KINDS.join(', ')}, got ${JSON.stringify(c.cell)}`);
  }
  if (
    !Array.isArray(c.channels) ||
    c.channels.length === 0 ||
    !c.channels.every((v) => Number.isInteger(v) && v >= 1)
  ) {
    throw new ConfigError(`channels must list whole numbers ≥ 1, got ${JSON.stringify(c.channels)}`);
  }
  if (c.image % 2 ** c.channels.length !== 0) {
    throw new ConfigError(
      `image side ${c.image} is not divisible by 2^${c.channels.length} (one 2×2 pool per conv block)`,
    );
  }
}

const bridgeWeight = (name: string) => name.startsWith('bridge.') && name.endsWith('.weight');

/**
 * An image captioner ("Show and Tell"): a small CNN encodes a 56×56 picture into the initial state of
 * a recurrent decoder that writes the caption word by word.
 *
 * ```ts
 * import { Captioner, makeCanvases } from 'arflow';
 * const n = 10;   // stand-in for Fashion-MNIST: one 28×28 image per class
 * const source = { images: Uint8Array.from({ length: n * 28 * 28 }, (_, i) => (i * 31) % 256), labels: Uint8Array.from({ length: n }, (_, i) => i), n };
 * const train = makeCanvases(source, { count: 64, seed: 0 });
 * const model = Captioner.create({ embed: 16, hidden: 32 });
 * await model.fit(train, { steps: 5, batchSize: 16 });
 * console.log(model.caption(train.images.subarray(0, 56 * 56))[0].text);
 * ```
 */
export class Captioner {
  private constructor(
    readonly vocab: TokenVocabulary,
    readonly config: CaptionerConfig,
    readonly backend: NativeCaptioner,
  ) {}

  /** Whether the model holds AdamW state of earlier steps (trained here, or loaded with it). */
  hasOptimizerState = false;

  private static build(vocab: TokenVocabulary, config: CaptionerConfig, device: string): Captioner {
    const shape: CaptionShape = { vocab: vocab.size, ...config };
    return new Captioner(vocab, config, new NativeCaptioner(shape, device));
  }

  /**
   * A new model drawn from a seeded generator: the word embedding N(0, 1); conv weights He-uniform
   * U(±√6/√fan_in); conv biases and the bridge U(±1/√fan_in) like `nn.Conv2d`/`nn.Linear`; recurrent
   * layers and head U(±1/√H) like `nn.GRU`. The vocabulary defaults to every word of the canvas
   * grammar.
   */
  static create(
    config: Partial<CaptionerConfig> = {},
    opts: { seed?: number; device?: string; vocab?: TokenVocabulary } = {},
  ): Captioner {
    const cfg: CaptionerConfig = { ...DEFAULT_CAPTIONER, channels: [...DEFAULT_CAPTIONER.channels] };
    for (const k of Object.keys(DEFAULT_CAPTIONER) as (keyof CaptionerConfig)[]) {
      if (config[k] !== undefined) (cfg as unknown as Record<string, unknown>)[k] = config[k];
    }
    checkConfig(cfg);
    const model = Captioner.build(opts.vocab ?? captionVocabulary(), cfg, opts.device ?? 'cpu');
    const rng = new Rng(opts.seed ?? 0);
    for (const p of model.backend.paramInfo()) {
      const n = p.shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(n);
      if (p.name.endsWith('embedding.weight')) for (let i = 0; i < n; i++) data[i] = rng.normal();
      else {
        // He et al. (2015) for the ReLU convs' weights, √6/√fan_in: PyTorch's default 1/√fan_in shrinks
        // the features ~4× per block, and after three blocks the image barely moved the decoder's state.
        const conv = p.name.startsWith('encoder.conv');
        const fanIn = conv ? model.convFanIn(p.name) : p.name.startsWith('bridge.') ? model.features : cfg.hidden;
        // The bridge reads the features scaled by 1/√F (crates/arflow-core/src/caption.rs): weights
        // U(±1) give nn.Linear's initial outputs.
        const convWeight = conv && p.name.endsWith('.weight');
        const bound = convWeight ? Math.sqrt(6 / fanIn) : bridgeWeight(p.name) ? 1 : 1 / Math.sqrt(fanIn);
        for (let i = 0; i < n; i++) data[i] = rng.range(-bound, bound);
      }
      model.backend.setParam(p.name, data);
    }
    return model;
  }

  /** Inputs of one output of conv block `encoder.conv{i}`: C_{i−1}·9. */
  private convFanIn(name: string): number {
    const i = Number(name.slice('encoder.conv'.length).split('.')[0]);
    return (i === 1 ? 1 : this.config.channels[i - 2]) * 9;
  }

  /** Features the bridge reads: (side / 2^K)² · C_K. */
  get features(): number {
    const side = this.config.image / 2 ** this.config.channels.length;
    return side * side * this.config.channels[this.config.channels.length - 1];
  }

  /** Trains on `train` (each canvas's drawn caption is its target); see {@link CaptionTrainOptions}. */
  async fit(train: CaptionCanvases, opts: CaptionTrainOptions = {}): Promise<CaptionTrainSummary> {
    const summary = await trainCaptioner(this, train, opts);
    if (summary.steps > 0) this.hasOptimizerState = true;
    return summary;
  }

  // ---- captioning --------------------------------------------------------------------------------

  private pixels(): number {
    return this.config.image * this.config.image;
  }

  /** Images `[n, side, side]` as n; ShapeError-like ConfigError for a size that is not whole images. */
  private count(images: Uint8Array): number {
    const px = this.pixels();
    if (!(images instanceof Uint8Array) || images.length === 0 || images.length % px !== 0) {
      throw new ConfigError(
        `images must be a Uint8Array of whole ${this.config.image}×${this.config.image} grayscale images (${px} bytes each), got ${images?.length} bytes`,
      );
    }
    return images.length / px;
  }

  private maxLength(given?: number): number {
    if (given === undefined) return DEFAULT_MAX_LENGTH;
    if (!Number.isInteger(given) || given < 1)
      throw new ConfigError(`maxLength must be a whole number ≥ 1, got ${given}`);
    return given;
  }

  private step = (state: Float32Array, tokens: Uint32Array) => this.backend.decodeStep(state, tokens);

  /** Greedy decoding of every image in `images` (batches of 256). */
  greedy(images: Uint8Array, maxLength?: number): Hypothesis[] {
    const n = this.count(images);
    const px = this.pixels();
    const limit = this.maxLength(maxLength);
    const out: Hypothesis[] = [];
    for (let at = 0; at < n; at += 256) {
      const m = Math.min(256, n - at);
      const state = this.backend.encode(images.subarray(at * px, (at + m) * px), m);
      out.push(...greedyBatch(this.step, state, m, this.vocab.size, { limit, bos: BOS, eos: EOS }));
    }
    return out;
  }

  /** Beam search for one image (width 1 is greedy); hypotheses best first. */
  beam(image: Uint8Array, opts: CaptionOptions & { nBest?: number } = {}): Hypothesis[] {
    if (this.count(image) !== 1) throw new ConfigError('beam decodes one image at a time');
    const S = stateWidth(this.config.cell) * this.config.hidden;
    return beamSearch(
      layeredStepper(this.config.layers, S, this.vocab.size, this.step),
      this.backend.encode(image, 1),
      {
        width: opts.beam ?? 1,
        nBest: opts.nBest ?? 1,
        maxLength: this.maxLength(opts.maxLength),
        bos: BOS,
        eos: EOS,
        lengthPenalty: opts.lengthPenalty ?? 'average',
      },
    );
  }

  /** The caption of every image in `images` (`[n, side, side]` pixels, 0 = black), greedy or by beam search. */
  caption(images: Uint8Array, opts: CaptionOptions = {}): CaptionResult[] {
    const n = this.count(images);
    const px = this.pixels();
    const width = opts.beam ?? 1;
    const hyps =
      width === 1 && opts.lengthPenalty === undefined
        ? this.greedy(images, opts.maxLength)
        : Array.from({ length: n }, (_, i) => this.beam(images.subarray(i * px, (i + 1) * px), opts)[0]);
    return hyps.map((h) => {
      const words = this.vocab.decode(h.tokens);
      return { words, text: words.join(' '), logProb: h.logProb };
    });
  }

  /**
   * Corpus BLEU-4 and exact match of greedy captions on `canvases` (every phrasing of a canvas is a
   * reference), and of beam search when `beam` > 1.
   */
  async evaluate(
    canvases: CaptionCanvases,
    opts: { beam?: number; lengthPenalty?: LengthPenalty; onProgress?: (done: number, total: number) => void } = {},
  ): Promise<CaptionEval> {
    if (canvases.n === 0) throw new ConfigError('nothing to evaluate: no canvases');
    const refs = canvases.canvases.map((c) => c.captions);
    const greedy = this.caption(canvases.images).map((c) => c.words);
    const result: CaptionEval = {
      canvases: canvases.n,
      bleu4: corpusBleu(greedy, refs),
      exactMatch: exactMatch(greedy, refs),
    };
    const width = opts.beam ?? 1;
    if (width > 1) {
      const px = this.pixels();
      const one = (i: number) => canvases.images.subarray(i * px, (i + 1) * px);
      const hyps = await decodeEach(
        canvases.n,
        (i) => this.vocab.decode(this.beam(one(i), { beam: width, lengthPenalty: opts.lengthPenalty })[0].tokens),
        64,
        opts.onProgress,
      );
      result.bleu4Beam = corpusBleu(hyps, refs);
      result.exactMatchBeam = exactMatch(hyps, refs);
      result.beam = width;
    }
    return result;
  }

  // ---- checkpoints -------------------------------------------------------------------------------

  /**
   * Writes one safetensors file atomically: the weights under PyTorch names, the config and the
   * vocabulary in the metadata; with `optimizer`, the AdamW moments (`optimizer.exp_avg.<name>`, …).
   */
  async save(path: string, opts: { optimizer?: boolean; train?: CaptionerTrainState } = {}): Promise<void> {
    const { tensors, metadata } = checkpointContents(
      this.backend,
      CAPTION_KIND,
      { config: JSON.stringify(this.config), vocab: JSON.stringify(this.vocab.toJSON()) },
      opts,
    );
    saveSafetensors(path, tensors, metadata);
  }

  /**
   * Loads a checkpoint written by {@link Captioner.save}. CheckpointError for a file that is missing,
   * truncated, not an arflow caption checkpoint, or whose tensors do not match its config; nothing is
   * loaded then.
   */
  static load(path: string, opts: { device?: string } = {}): { model: Captioner; train: CaptionerTrainState | null } {
    const { tensors, metadata } = loadSafetensors(path);
    if (!isCheckpointOf(metadata, CAPTION_KIND)) {
      throw new CheckpointError(
        `${path} is not an arflow caption checkpoint (metadata format=${metadata.format ?? 'none'}, kind=${metadata.kind ?? 'none'})`,
      );
    }
    let config: CaptionerConfig;
    let vocab: TokenVocabulary;
    try {
      config = { ...DEFAULT_CAPTIONER, ...JSON.parse(metadata.config) };
      checkConfig(config);
      vocab = TokenVocabulary.fromJSON(metadata.vocab);
    } catch (e) {
      throw new CheckpointError(`${path}: unreadable config or vocabulary in metadata (${(e as Error).message})`);
    }
    const model = Captioner.build(vocab, config, opts.device ?? 'cpu');
    const info = model.backend.paramInfo();
    // Check everything before touching the model: a bad file changes nothing.
    const needs = `a captioner of config ${JSON.stringify(config)}`;
    const { rest, optimizer } = readOptimizerState(path, tensors, metadata, info, needs);
    const params = expectTensors(path, rest, info, needs);
    const train = readTrainInfo(path, metadata) as CaptionerTrainState | null;
    for (const [name, t] of params) model.backend.setParam(name, t);
    if (optimizer) applyOptimizerState(path, model.backend, optimizer);
    model.hasOptimizerState = optimizer !== null;
    return { model, train };
  }
}
