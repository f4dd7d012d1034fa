/**
 * Beam search and greedy decoding over any autoregressive model given as a batched step function.
 *
 * Each step expands every live hypothesis in one `step` call and keeps the `width` best of the N·V
 * continuations. Continuations that end in `eos` are set aside as finished and the others stay live, so the
 * live beam holds `width` minus the number that just finished, and refills at the next step. All
 * continuations of a step have the same length, so ranking them by log-probability is ranking them by score
 * under every length penalty here; the penalty matters when finished hypotheses of different lengths are
 * compared with each other and with the bound on live ones.
 */
import { ConfigError, DataError, ShapeError } from '../errors.js';

/** A decoder as {@link beamSearch} and {@link greedyDecode} see it: its start state and one step. */
export interface DecoderStep<S> {
  /**
   * For N hypotheses: their states and last tokens → new states and log-probabilities [N, V], row-major,
   * already log-softmaxed. States are treated as immutable: the children of one hypothesis share the state
   * object returned for it, so `step` must return new states instead of changing the ones it is given.
   */
  step(states: S[], tokens: Uint32Array): { states: S[]; logProbs: Float32Array | Float64Array };
  /**
   * The vocabulary size V, when the model knows it: bos and eos are then checked before the first step,
   * which a model might not survive with an out-of-range bos. Without it, V is read from the first step's
   * output (its length, as N = 1 there) and bos/eos are checked then.
   */
  readonly vocabSize?: number;
}

/**
 * How finished hypotheses of different lengths are compared; `score = logProb / norm(length)` where length
 * counts the generated tokens, eos included:
 * - 'none': norm = 1, the plain log-probability. Every token adds a term ≤ 0, so it favours short outputs,
 *   and wider beams find ever shorter ones (Koehn & Knowles, 2017, "Six Challenges for Neural Machine
 *   Translation"; Murray & Chiang, 2018, "Correcting Length Bias in Neural Machine Translation").
 * - 'average': norm = length, the mean log-probability per token.
 * - { alpha }: GNMT's lp = ((5 + length) / 6)^alpha (Wu et al., 2016, "Google's Neural Machine Translation
 *   System", without its coverage penalty); alpha = 0 is 'none', and alpha = 1 ranks long outputs nearly
 *   as 'average' does.
 *
 * The default, and the one the CLI should default to, is 'average': unlike 'none' it does not reward
 * stopping early, and unlike GNMT's alpha it has no parameter to tune on held-out data.
 */
export type LengthPenalty = 'none' | 'average' | { alpha: number };

/** Options of {@link beamSearch}. */
export interface BeamOptions {
  /** Hypotheses kept per step, a whole number ≥ 1; 1 is greedy decoding. */
  width: number;
  /** Most tokens generated per hypothesis, eos included, a whole number ≥ 1. */
  maxLength: number;
  /** Token fed at the first step. */
  bos: number;
  /** Token that ends a hypothesis (may equal `bos`). */
  eos: number;
  /** Hypotheses returned, best first, in [1, width]. Default 1. */
  nBest?: number;
  /** Default 'average'; see LengthPenalty. */
  lengthPenalty?: LengthPenalty;
}

/** One decoded sequence with its score. */
export interface Hypothesis {
  /** Generated tokens, without bos and eos. */
  tokens: number[];
  /** Sum of the log-probabilities of the generated tokens, eos included when finished. */
  logProb: number;
  /** `logProb` under the length penalty; what the hypotheses are ranked by. */
  score: number;
  /** Whether it ended with eos; false only for hypotheses cut at maxLength. */
  finished: boolean;
}

/** Options of {@link greedyDecode}. */
export type GreedyOptions = Pick<BeamOptions, 'maxLength' | 'bos' | 'eos' | 'lengthPenalty'>;

type ResolvedBeam = Required<BeamOptions>;

function checkWhole(name: string, v: unknown, min: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new ConfigError(`${name} must be a whole number ≥ ${min}, got ${v}`);
  }
}

function checkPenalty(p: unknown): LengthPenalty {
  if (p === 'none' || p === 'average') return p;
  if (typeof p === 'object' && p !== null && 'alpha' in p) {
    const alpha = (p as { alpha: unknown }).alpha;
    if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha < 0) {
      throw new ConfigError(`lengthPenalty.alpha must be a finite number ≥ 0 (GNMT uses 0.6 to 1), got ${alpha}`);
    }
    return { alpha };
  }
  throw new ConfigError(`lengthPenalty must be 'none', 'average' or { alpha: number }, got ${JSON.stringify(p)}`);
}

/** Defaults filled in and every field checked; throws ConfigError naming the bad field. */
export function validateBeam(o: BeamOptions): ResolvedBeam {
  checkWhole('width', o.width, 1);
  checkWhole('maxLength', o.maxLength, 1);
  // Token ids travel in a Uint32Array; their upper bound, the vocabulary size, is checked against
  // model.vocabSize or the first step's output.
  checkWhole('bos', o.bos, 0);
  checkWhole('eos', o.eos, 0);
  const nBest = o.nBest ?? 1;
  checkWhole('nBest', nBest, 1);
  if (nBest > o.width) {
    throw new ConfigError(`nBest (${nBest}) must be ≤ width (${o.width}): a beam cannot return more than it keeps`);
  }
  const lengthPenalty = checkPenalty(o.lengthPenalty ?? 'average');
  if (o.bos > 0xffffffff || o.eos > 0xffffffff) throw new ConfigError('bos and eos must be below 2^32');
  return { width: o.width, maxLength: o.maxLength, bos: o.bos, eos: o.eos, nBest, lengthPenalty };
}

/** norm(length) of LengthPenalty: positive and non-decreasing in length. */
function lengthNorm(p: LengthPenalty, length: number): number {
  if (p === 'none') return 1;
  if (p === 'average') return length;
  return ((5 + length) / 6) ** p.alpha;
}

/** V from `model.vocabSize`, checked with bos and eos; 0 when the model does not say. */
function knownVocab<S>(model: DecoderStep<S>, o: Pick<ResolvedBeam, 'bos' | 'eos'>): number {
  const v = model.vocabSize;
  if (v === undefined) return 0;
  checkWhole('model.vocabSize', v, 1);
  checkTokens(o, v);
  return v;
}

function checkTokens(o: Pick<ResolvedBeam, 'bos' | 'eos'>, vocab: number): void {
  if (o.bos >= vocab || o.eos >= vocab) {
    throw new ConfigError(
      `bos (${o.bos}) and eos (${o.eos}) must be token ids below the model's vocabulary size ${vocab}`,
    );
  }
}

/** Runs one step and checks what it returned; `vocab` is 0 until known, then fixed by the first call. */
function runStep<S>(
  model: DecoderStep<S>,
  states: S[],
  tokens: Uint32Array,
  vocab: number,
  o: Pick<ResolvedBeam, 'bos' | 'eos'>,
): { states: S[]; logProbs: Float32Array | Float64Array; vocab: number } {
  const n = states.length;
  const out = model.step(states, tokens);
  if (!out || !Array.isArray(out.states) || out.states.length !== n) {
    throw new ShapeError(
      `model.step was given ${n} hypotheses and must return ${n} states, got ${out?.states?.length}`,
    );
  }
  const len = out.logProbs?.length;
  if (vocab === 0) {
    if (!Number.isInteger(len) || len < 1 || len % n !== 0) {
      throw new ShapeError(`model.step must return logProbs of length N·V (N = ${n}, V ≥ 1), got length ${len}`);
    }
    vocab = len / n;
    checkTokens(o, vocab);
  } else if (len !== n * vocab) {
    throw new ShapeError(
      `model.step must return logProbs of length N·V = ${n}·${vocab} = ${n * vocab} for ${n} hypotheses, got ${len}`,
    );
  }
  return { states: out.states, logProbs: out.logProbs, vocab };
}

/**
 * How far above 0 a log-probability may be: rounding can put the top entry of a float32 log-softmax a few
 * ulps above 0. Anything more means `step` does not return log-probabilities, and the stopping bound of
 * beamSearch would not hold.
 */
export const LOGPROB_SLACK = 1e-4;

function checkLogProb(x: number, row: number, token: number): void {
  if (x <= LOGPROB_SLACK) return;
  throw new DataError(
    Number.isNaN(x)
      ? `model.step returned NaN as the log-probability of token ${token} for hypothesis ${row}: the model's outputs are unusable (a diverged checkpoint?)`
      : `model.step returned ${x} as the log-probability of token ${token} for hypothesis ${row}: log-probabilities are ≤ 0; apply a log-softmax to the logits`,
  );
}

interface Live<S> {
  tokens: number[];
  logProb: number;
  state: S;
}

/** A candidate continuation: `parent`'s row and `token`. */
interface Candidate {
  logProb: number;
  parent: number;
  token: number;
}

/** Whether a ranks before b: higher logProb, then lower parent row, then lower token (deterministic ties). */
function before(a: Candidate, b: Candidate): boolean {
  if (a.logProb !== b.logProb) return a.logProb > b.logProb;
  if (a.parent !== b.parent) return a.parent < b.parent;
  return a.token < b.token;
}

function byScore(a: Hypothesis, b: Hypothesis): number {
  return a.score > b.score ? -1 : a.score < b.score ? 1 : 0;
}

/**
 * The `nBest` best hypotheses found by beam search, best first by score; fewer only when fewer sequences
 * exist within maxLength.
 *
 * Stopping: the search ends when no hypothesis is live, at maxLength (live hypotheses are then returned
 * too, with finished = false, ranked with the finished ones by score), or as soon as it is provable that
 * going on cannot change the answer: at least nBest hypotheses are finished and no live hypothesis can
 * reach the score of the nBest-th best of them. Log-probabilities are ≤ 0 (up to LOGPROB_SLACK, for
 * rounding), so a live hypothesis of log-probability L after step t can only end with log-probability
 * ≤ U = L + (maxLength − t)·LOGPROB_SLACK and length ≤ maxLength; norm being positive and non-decreasing,
 * its score is at most U / norm(maxLength) when U ≤ 0 ('none': U; 'average': U / maxLength), and at most
 * U / norm(t + 1) otherwise. That bound is tight without knowing the model, so under 'average' the search
 * often runs to maxLength or until the beam empties; either way the answer is that of running to the end
 * (up to the order of exact ties). Stopping on nBest rather than `width` finished hypotheses gives the same
 * answer sooner, as only the nBest best are returned.
 *
 * Throws ConfigError for bad options or bos/eos outside the vocabulary, ShapeError when `step` returns the
 * wrong number of states or log-probabilities, DataError when it returns NaN or a log-probability above
 * LOGPROB_SLACK.
 */
export function beamSearch<S>(model: DecoderStep<S>, initial: S, opts: BeamOptions): Hypothesis[] {
  const o = validateBeam(opts);
  const finished: Hypothesis[] = [];
  let live: Live<S>[] = [{ tokens: [], logProb: 0, state: initial }];
  let vocab = knownVocab(model, o);
  const kept: Candidate[] = [];
  for (let t = 1; t <= o.maxLength && live.length > 0; t++) {
    const tokens = Uint32Array.from(live, (h) => (t === 1 ? o.bos : h.tokens[h.tokens.length - 1]));
    const states = live.map((h) => h.state);
    const out = runStep(model, states, tokens, vocab, o);
    vocab = out.vocab;
    const lp = out.logProbs;
    // Partial selection of the `width` best of N·V by insertion into a sorted list: width is small.
    kept.length = 0;
    for (let row = 0; row < live.length; row++) {
      const base = live[row].logProb;
      for (let v = 0; v < vocab; v++) {
        const x = lp[row * vocab + v];
        checkLogProb(x, row, v);
        const c: Candidate = { logProb: base + x, parent: row, token: v };
        if (kept.length === o.width && !before(c, kept[kept.length - 1])) continue;
        let at = kept.length;
        while (at > 0 && before(c, kept[at - 1])) at--;
        kept.splice(at, 0, c);
        if (kept.length > o.width) kept.pop();
      }
    }
    const next: Live<S>[] = [];
    for (const c of kept) {
      const parent = live[c.parent];
      if (c.token === o.eos) {
        finished.push({
          tokens: parent.tokens.slice(),
          logProb: c.logProb,
          score: c.logProb / lengthNorm(o.lengthPenalty, t),
          finished: true,
        });
      } else {
        next.push({ tokens: [...parent.tokens, c.token], logProb: c.logProb, state: out.states[c.parent] });
      }
    }
    live = next;
    if (t === o.maxLength) {
      for (const h of live) {
        finished.push({
          tokens: h.tokens,
          logProb: h.logProb,
          score: h.logProb / lengthNorm(o.lengthPenalty, t),
          finished: false,
        });
      }
      live = [];
    } else if (finished.length >= o.nBest && live.length > 0) {
      finished.sort(byScore);
      const threshold = finished[o.nBest - 1].score;
      const slack = (o.maxLength - t) * LOGPROB_SLACK;
      let best = Number.NEGATIVE_INFINITY;
      for (const h of live) {
        const u = h.logProb + slack;
        best = Math.max(best, u / lengthNorm(o.lengthPenalty, u <= 0 ? o.maxLength : t + 1));
      }
      if (best <= threshold) live = [];
    }
  }
  return finished.sort(byScore).slice(0, o.nBest);
}

/**
 * Greedy decoding: the most likely token at every step (the lowest id on ties) until eos or maxLength.
 * The same answer as `beamSearch` with width 1, computed on its own; `lengthPenalty` (default 'average')
 * only sets `score`.
 */
export function greedyDecode<S>(model: DecoderStep<S>, initial: S, opts: GreedyOptions): Hypothesis {
  const o = validateBeam({ ...opts, width: 1, nBest: 1 });
  let state = initial;
  let token = o.bos;
  let vocab = knownVocab(model, o);
  let logProb = 0;
  const tokens: number[] = [];
  for (let t = 1; ; t++) {
    const out = runStep(model, [state], Uint32Array.of(token), vocab, o);
    vocab = out.vocab;
    const lp = out.logProbs;
    let best = 0;
    for (let v = 0; v < vocab; v++) {
      checkLogProb(lp[v], 0, v);
      if (lp[v] > lp[best]) best = v;
    }
    logProb += lp[best];
    const score = logProb / lengthNorm(o.lengthPenalty, t);
    if (best === o.eos) return { tokens, logProb, score, finished: true };
    tokens.push(best);
    token = best;
    state = out.states[0];
    if (t === o.maxLength) return { tokens, logProb, score, finished: false };
  }
}
