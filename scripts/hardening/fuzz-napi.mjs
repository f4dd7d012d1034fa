#!/usr/bin/env node
/**
 * Fuzzes the N-API boundary: every exported function of the native addon and every method of its
 * classes (constructors included) called with random argument types, shapes and sizes (0, negative,
 * huge, NaN, Infinity, wrong typed arrays, missing, objects, strings), seeded. Errors thrown or
 * rejected are fine; the process must not crash (abort, segfault, OOM) nor hang.
 *
 *   node scripts/hardening/fuzz-napi.mjs [--calls 100000] [--seed 1] [--timeout-ms 20000]
 *
 * Runs the fuzzing in a child process (itself with --child) that writes each call, before making it,
 * to a trace file; if the child dies or hangs, the parent prints that call (function and arguments)
 * and exits 1. Needs the compiled dist/ (`npx tsc -p tsconfig.json`) and the native addon.
 */
import { spawn } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const { values: opt } = parseArgs({
  options: {
    calls: { type: 'string', default: '100000' },
    seed: { type: 'string', default: '1' },
    'timeout-ms': { type: 'string', default: '20000' },
    child: { type: 'boolean', default: false },
    trace: { type: 'string' },
    'no-huge-layers': { type: 'boolean', default: false },
  },
});

if (!opt.child) {
  const dir = mkdtempSync(join(tmpdir(), 'arflow-fuzz-'));
  const trace = join(dir, 'trace');
  const args = [fileURLToPath(import.meta.url), '--child', '--calls', opt.calls, '--seed', opt.seed, '--trace', trace];
  if (opt['no-huge-layers']) args.push('--no-huge-layers');
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > 20_000) stderr = stderr.slice(-20_000);
  });
  // The child rewrites the trace file before every call: one unchanged for --timeout-ms is a hang.
  let lastTrace = '';
  let lastChange = Date.now();
  let hung = false;
  const watchdog = setInterval(() => {
    let t = '';
    try {
      t = readFileSync(trace, 'utf8');
    } catch {}
    if (t !== lastTrace) {
      lastTrace = t;
      lastChange = Date.now();
    } else if (Date.now() - lastChange > Number(opt['timeout-ms'])) {
      hung = true;
      child.kill('SIGKILL');
    }
  }, 250);
  child.on('exit', (code, signal) => {
    clearInterval(watchdog);
    let last = '';
    try {
      last = readFileSync(trace, 'utf8').replace(/\0+$/, '');
    } catch {}
    rmSync(dir, { recursive: true, force: true });
    if (code === 0) process.exit(0);
    const what = hung ? `hung for more than ${opt['timeout-ms']} ms` : `died (exit code ${code}, signal ${signal})`;
    console.error(`CRASH: the fuzzing process ${what} during\n  ${last}`);
    const tail = stderr.trim().split('\n').slice(-15).join('\n  ');
    if (tail) console.error(`its last stderr:\n  ${tail}`);
    process.exit(1);
  });
} else {
  await runChild();
}

async function runChild() {
  const { loadNative } = await import(join(ROOT, 'dist', 'backend', 'native.js'));
  const { niceSpec, mafSpec, realNvpVectorSpec } = await import(join(ROOT, 'dist', 'models', 'presets.js'));
  const N = loadNative();
  const CALLS = Number(opt.calls);
  const traceFd = openSync(opt.trace, 'w');

  let a = Number(opt.seed) >>> 0;
  const rnd = () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n) => Math.floor(rnd() * n);
  const pick = (xs) => xs[int(xs.length)];
  const chance = (p) => rnd() < p;

  // --- values -------------------------------------------------------------------------------------
  const HUGE = [2 ** 31, 2 ** 32 - 1];
  const ODD_NUMBERS = [0, -1, -(2 ** 31), 2 ** 32, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY, -0.5, 1.5, 1e300];
  const ODD = () =>
    pick([
      undefined,
      null,
      true,
      'x',
      '3',
      {},
      [],
      [1, 2, 3],
      () => 0,
      10n,
      Symbol('s'),
      new ArrayBuffer(8),
      new DataView(new ArrayBuffer(8)),
      pick(ODD_NUMBERS),
      pick(HUGE),
      typed(pick(['f32', 'f64', 'u32', 'i32', 'u8', 'u16', 'i8']), int(9)),
    ]);
  /** A count: mostly small, sometimes 0, negative, huge, fractional, NaN, or not a number at all. */
  const count = (small = [1, 2, 3, 4]) =>
    chance(0.75) ? pick(small) : chance(0.5) ? pick([0, ...HUGE, ...ODD_NUMBERS]) : ODD();
  /**
   * A count of layers, couplings, depth or heads: as {@link count}. Huge ones (2³¹, or −1 read as
   * 2³² − 1) once hung the constructors; the core now refuses more than MAX_LAYERS (4096) at once.
   * --no-huge-layers leaves them out.
   */
  const layerCount = (small) => {
    const v = count(small);
    // N-API reads -1 as a u32 as 4294967295: negatives are huge too.
    return opt['no-huge-layers'] && typeof v === 'number' && (v >= 2 ** 31 || v < 0) ? pick(small) : v;
  };
  const floatVal = () =>
    chance(0.9)
      ? rnd() * 4 - 2
      : pick([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 3e38, -3e38, 1e-45, 0]);
  function typed(kind, n) {
    switch (kind) {
      case 'f32':
        return Float32Array.from({ length: n }, floatVal);
      case 'f64':
        return Float64Array.from({ length: n }, floatVal);
      case 'u32':
        return Uint32Array.from({ length: n }, () => (chance(0.9) ? int(6) : pick([2 ** 32 - 1, 2 ** 31, 1000])));
      case 'i32':
        return Int32Array.from({ length: n }, () => (chance(0.9) ? int(4) : pick([-1, 2 ** 31 - 1, -(2 ** 31)])));
      case 'u8':
        return Uint8Array.from({ length: n }, () => int(256));
      case 'u16':
        return new Uint16Array(n);
      case 'i8':
        return new Int8Array(n);
    }
  }
  /** A typed array of `kind`, of length `n` most of the time; else another length, kind or no array. */
  const arr = (kind, n) => {
    if (chance(0.8)) return typed(kind, Number.isSafeInteger(n) && n >= 0 && n <= 1 << 16 ? n : int(8));
    if (chance(0.6))
      return typed(kind, pick([0, 1, int(64), (Number.isSafeInteger(n) && n >= 0 && n <= 1 << 16 ? n : 3) + 1]));
    if (chance(0.5))
      return typed(
        pick(['f32', 'f64', 'u32', 'i32', 'u8', 'u16', 'i8']),
        Number.isSafeInteger(n) && n <= 1 << 16 && n >= 0 ? n : 4,
      );
    return ODD();
  };
  /** The product of sizes, any odd one (not a small whole number) read as 2. */
  const sz = (...xs) => xs.reduce((acc, v) => acc * (Number.isSafeInteger(v) && v >= 0 && v < 1 << 10 ? v : 2), 1);
  const maybe = (v, p = 0.9) => (chance(p) ? v : ODD());
  const optArr = (kind, n) => (chance(0.3) ? pick([null, undefined]) : arr(kind, n));
  const str = (good) =>
    chance(0.85) ? pick(good) : chance(0.5) ? pick(['', 'nope', 'GRU', 'cuda:99', 'cuda']) : ODD();
  const optim = () =>
    maybe({
      lr: chance(0.9) ? 1e-3 : pick(ODD_NUMBERS),
      beta1: chance(0.9) ? 0.9 : pick(ODD_NUMBERS),
      beta2: chance(0.9) ? 0.999 : pick(ODD_NUMBERS),
      eps: chance(0.9) ? 1e-8 : pick(ODD_NUMBERS),
      weightDecay: chance(0.9) ? 0 : pick(ODD_NUMBERS),
      clip: chance(0.9) ? 1 : pick(ODD_NUMBERS),
      ...(chance(0.1) ? { lr: undefined } : {}),
    });
  const device = () => (chance(0.95) ? 'cpu' : str(['cpu']));

  // --- instances (small, valid) ---------------------------------------------------------------------
  const V = 6; // vocabulary of the LM, seq2seq and captioner
  const lmShape = () => ({
    vocabSize: count([V]),
    embed: count([3, 4]),
    hidden: count([4, 5]),
    layers: layerCount([1, 2]),
    cell: maybe(str(['gru', 'lstm', 'rnn'])),
    learnedH0: maybe(chance(0.5)),
    predictAhead: chance(0.7) ? undefined : layerCount([1, 2]),
  });
  const s2sShape = () => ({
    srcVocab: count([V]),
    tgtVocab: count([V]),
    embed: count([3]),
    hidden: count([4]),
    layers: layerCount([1, 2]),
    cell: maybe(str(['gru', 'lstm', 'rnn'])),
    bidirectional: maybe(chance(0.5)),
  });
  const capShape = () => ({
    vocab: count([V]),
    embed: count([3]),
    hidden: count([4]),
    layers: layerCount([1]),
    cell: maybe(str(['gru', 'lstm'])),
    image: count([8]),
    channels: maybe(chance(0.8) ? [count([2]), count([2])] : [count([2])]),
  });
  const seriesShape = () => ({
    dim: count([1, 2]),
    hidden: count([4]),
    layers: layerCount([1]),
    cell: maybe(str(['gru', 'lstm', 'rnn'])),
    likelihood: str(['gaussian', 'mdn']),
    components: chance(0.5) ? undefined : count([2, 3]),
    predictAhead: chance(0.7) ? undefined : layerCount([1, 2]),
    outputs: chance(0.7) ? undefined : str(['every', 'last']),
  });
  const pixelShape = () => ({
    cell: str(['lstm', 'gru']),
    hidden: count([4]),
    layers: layerCount([1]),
    rows: count([3, 4]),
    cols: count([3, 4]),
    output: str(['categorical', 'bernoulli']),
    classes: chance(0.5) ? undefined : count([2, 3]),
  });
  const specs = [
    realNvpVectorSpec({ dim: 2, couplings: 2, hidden: 4, depth: 1 }),
    niceSpec({ dim: 4, layers: 2, hidden: 4, depth: 1 }),
    mafSpec({ dim: 4, layers: 2, hidden: 4, depth: 1 }),
    mafSpec({ dim: 3, layers: 1, hidden: 4, depth: 1, context: 2 }),
  ];
  const flowSpec = () => {
    if (chance(0.7)) return JSON.stringify(pick(specs));
    if (chance(0.5)) {
      // A valid spec with one number replaced by an odd or huge one.
      const s = JSON.stringify(pick(specs));
      const nums = [...s.matchAll(/\d+/g)];
      const m = pick(nums);
      return (
        s.slice(0, m.index) +
        String(pick([0, -1, 2 ** 31, 2 ** 32 - 1, 1e300, 1e6, 'null'])) +
        s.slice(m.index + m[0].length)
      );
    }
    return chance(0.5) ? pick(['', '{', 'null', '[]', '{"layers":[]}', '1e999']) : ODD();
  };

  const instances = {
    NativeCharLm: [
      { vocabSize: V, embed: 3, hidden: 4, layers: 1 },
      { vocabSize: V, embed: 3, hidden: 4, layers: 2, cell: 'lstm', learnedH0: true, predictAhead: 2 },
      { vocabSize: V, embed: 3, hidden: 4, layers: 1, cell: 'rnn' },
    ].map((s) => ({ m: new N.NativeCharLm(s, 'cpu'), s })),
    NativeSeq2Seq: [
      { srcVocab: V, tgtVocab: V, embed: 3, hidden: 4, layers: 1 },
      { srcVocab: V, tgtVocab: V, embed: 3, hidden: 4, layers: 2, cell: 'lstm', bidirectional: true },
    ].map((s) => ({ m: new N.NativeSeq2Seq(s, 'cpu'), s })),
    NativeCaptioner: [{ vocab: V, embed: 3, hidden: 4, layers: 1, image: 8, channels: [2, 2] }].map((s) => ({
      m: new N.NativeCaptioner(s, 'cpu'),
      s,
    })),
    NativeSeriesModel: [
      { dim: 2, hidden: 4, layers: 1, likelihood: 'gaussian' },
      { dim: 1, hidden: 4, layers: 1, likelihood: 'mdn', components: 2, predictAhead: 2, cell: 'lstm' },
    ].map((s) => ({ m: new N.NativeSeriesModel(s, 'cpu'), s })),
    NativePixelModel: [
      { cell: 'lstm', hidden: 4, layers: 1, rows: 3, cols: 4, output: 'categorical' },
      { cell: 'gru', hidden: 4, layers: 1, rows: 4, cols: 3, output: 'bernoulli', classes: 3 },
    ].map((s) => ({ m: new N.NativePixelModel(s, 'cpu'), s })),
    NativeFlowNet: specs.map((s) => ({ m: new N.NativeFlowNet(JSON.stringify(s), 1, 'cpu'), s })),
  };
  // Char-LM sampling loops in progress (they have no constructor: NativeCharLm.sampler makes them).
  instances.NativeLmSampler = instances.NativeCharLm.map(({ m, s }, k) => ({
    m: m.sampler(
      null,
      Uint32Array.of(1, 2, 3, 4),
      1 + (k % 2),
      new Uint32Array(4 + 4 * (k % 2)).fill(k + 1),
      1,
      k,
      0.9,
    ),
    s,
  }));
  for (const list of Object.values(instances))
    for (const inst of list) inst.names = inst.m.paramInfo?.().map((p) => p.name) ?? [];
  /** A sampling option: mostly valid, sometimes negative, NaN, infinite or huge. */
  const samplingArgs = () => [
    chance(0.8) ? rnd() * 2 : pick(ODD_NUMBERS),
    chance(0.8) ? int(8) : count(),
    chance(0.8) ? rnd() : pick([...ODD_NUMBERS, 1]),
  ];

  // --- argument makers per method -------------------------------------------------------------------
  const B = () => count([1, 2, 3]);
  const T = () => count([1, 2, 5]);
  const nameOf = (inst) => (chance(0.85) ? pick(inst.names) : str(['', 'nope', 'h0', 'embed.weight']));
  const statesOf = (n) => (chance(0.5) ? null : arr('f32', n));
  const common = {
    paramInfo: () => [],
    getParam: (i) => [nameOf(i)],
    setParam: (i) => [nameOf(i), arr('f32', chance(0.5) ? i.m.getParam(i.names[0]).length : int(40))],
    getOptimState: (i) => [str(['exp_avg', 'exp_avg_sq']), nameOf(i)],
    setOptimState: (i) => [
      str(['exp_avg', 'exp_avg_sq']),
      nameOf(i),
      arr('f32', chance(0.5) ? i.m.getParam(i.names[0]).length : int(40)),
    ],
    getOptimStep: () => [],
    setOptimStep: () => [chance(0.8) ? int(100) : count()],
  };
  const carry = {
    getCarry: () => [],
    setCarry: () => [chance(0.3) ? null : maybe({ batch: B(), state: arr('f32', int(40)) })],
  };
  const seqBatch = (_i) => {
    const b = B();
    const tl = T();
    const sl = T();
    return maybe({
      src: arr('u32', sz(b, sl)),
      decIn: arr('u32', sz(b, tl)),
      targets: arr('u32', sz(b, tl)),
      batch: b,
      srcLen: sl,
      tgtLen: tl,
      flips: chance(0.7) ? undefined : optArr('u8', sz(b, tl)),
      uniforms: chance(0.7) ? undefined : optArr('f32', sz(b, tl)),
    });
  };
  const capBatch = (i) => {
    const b = B();
    const tl = T();
    const img = i.s.image;
    return maybe({
      images: arr('u8', sz(b, img, img)),
      decIn: arr('u32', sz(b, tl)),
      targets: arr('u32', sz(b, tl)),
      batch: b,
      tgtLen: tl,
      flips: chance(0.7) ? undefined : optArr('u8', sz(b, tl)),
      uniforms: chance(0.7) ? undefined : optArr('f32', sz(b, tl)),
    });
  };
  const decodeStep = (_i) => [arr('f32', sz(B(), int(3) + 1, 4)), arr('u32', B())];
  const methods = {
    NativeCharLm: {
      ...common,
      ...carry,
      trainStep: () => {
        const b = B();
        const t = T();
        return [arr('u32', sz(b, t)), arr('u32', sz(b, t)), b, t, optim()];
      },
      lossAndGrads: () => {
        const b = B();
        const t = T();
        return [arr('u32', sz(b, t)), arr('u32', sz(b, t)), b, t, statesOf(sz(b, 8))];
      },
      nll: () => {
        const b = B();
        const t = T();
        return [arr('u32', sz(b, t)), arr('u32', sz(b, t)), b, t, statesOf(sz(b, 8))];
      },
      step: () => {
        const b = B();
        return [statesOf(sz(b, 4)), arr('u32', b)];
      },
      sampler: () => {
        const b = B();
        return [statesOf(sz(b, 4)), arr('u32', sz(b, count([1, 2]))), b, arr('u32', sz(b, 4)), ...samplingArgs()];
      },
    },
    NativeLmSampler: {
      next: () => [],
      take: () => [count([0, 1, 5])],
    },
    NativeSeq2Seq: {
      ...common,
      trainStep: (i) => [seqBatch(i), optim()],
      lossAndGrads: (i) => [seqBatch(i)],
      nll: (i) => [seqBatch(i)],
      encode: () => {
        const b = B();
        const t = T();
        return [arr('u32', sz(b, t)), b, t];
      },
      decodeStep,
    },
    NativeCaptioner: {
      ...common,
      trainStep: (i) => [capBatch(i), optim()],
      lossAndGrads: (i) => [capBatch(i)],
      nll: (i) => [capBatch(i)],
      encode: (_i) => {
        const b = B();
        return [arr('u8', sz(b, 64)), b];
      },
      decodeStep,
    },
    NativeSeriesModel: {
      ...common,
      ...carry,
      trainStep: (i) => {
        const b = B();
        const t = T();
        return [arr('f32', sz(b, t, i.s.dim)), arr('f32', sz(b, t, i.s.dim)), b, t, optim()];
      },
      lossAndGrads: (i) => {
        const b = B();
        const t = T();
        return [arr('f32', sz(b, t, i.s.dim)), arr('f32', sz(b, t, i.s.dim)), b, t, statesOf(sz(b, 8))];
      },
      nll: (i) => {
        const b = B();
        const t = T();
        return [arr('f32', sz(b, t, i.s.dim)), arr('f32', sz(b, t, i.s.dim)), b, t, statesOf(sz(b, 8))];
      },
      step: (i) => {
        const b = B();
        return [statesOf(sz(b, 4)), arr('f32', sz(b, i.s.dim))];
      },
    },
    NativePixelModel: {
      ...common,
      trainStep: (i) => {
        const b = B();
        const n = sz(b, i.s.rows, i.s.cols);
        return [arr('f32', n), arr('u8', n), optArr('i32', b), b, optim()];
      },
      lossAndGrads: (i) => {
        const b = B();
        const n = sz(b, i.s.rows, i.s.cols);
        return [arr('f32', n), arr('u8', n), optArr('i32', b), b];
      },
      nll: (i) => {
        const b = B();
        const n = sz(b, i.s.rows, i.s.cols);
        return [arr('f32', n), arr('u8', n), optArr('i32', b), b];
      },
      forward: (i) => {
        const b = B();
        return [arr('f32', sz(b, i.s.rows, i.s.cols)), optArr('i32', b), b];
      },
      sample: (i) => {
        const b = B();
        const tr = count([0, 1]);
        return [b, arr('f32', sz(b, i.s.rows, i.s.cols)), optArr('i32', b), tr, optArr('u8', sz(b, tr, i.s.cols))];
      },
    },
    NativeFlowNet: (() => {
      const xs = (i) => {
        const b = B();
        const d = i.s.shape ? i.s.shape.reduce((x, y) => x * y, 1) : 4;
        return [arr('f32', sz(b, d)), optArr('f32', sz(b, 2)), b];
      };
      return {
        ...common,
        bufferInfo: () => [],
        getBuffer: (i) => [str(['', 'nope', ...(i.m.bufferInfo().map((x) => x.name) || [])])],
        setBuffer: (i) => [str(['nope', ...i.m.bufferInfo().map((x) => x.name)]), arr('f32', int(16))],
        dataInit: xs,
        trainStep: (i) => [...xs(i), optim()],
        lossAndGrads: xs,
        logProb: xs,
        encode: xs,
        decode: xs,
      };
    })(),
  };
  const ctorArgs = {
    NativeCharLm: () => [maybe(lmShape()), device()],
    NativeSeq2Seq: () => [maybe(s2sShape()), device()],
    NativeCaptioner: () => [maybe(capShape()), device()],
    NativeSeriesModel: () => [maybe(seriesShape()), device()],
    NativePixelModel: () => [maybe(pixelShape()), device()],
    NativeFlowNet: () => [flowSpec(), chance(0.9) ? int(10) : pick(ODD_NUMBERS), device()],
  };
  // Sizes for the benchmarks, which refuse what a benchmark does not need (N-API reads -1 as 4294967295).
  const small = () => (chance(0.8) ? int(16) + 1 : pick([0, Number.NaN, 1.5, 'x', undefined]));
  const sized = () => (chance(0.9) ? small() : pick([65_536, 1 << 20, 4_294_967_295, -1]));
  const reps = () => (chance(0.8) ? int(3) + 1 : pick([0, Number.NaN, 1_000_000, 4_294_967_295]));
  const coupling = () => {
    const n = count([1, 2, 3]);
    const d = count([2, 4]);
    const k = Number.isSafeInteger(n) && Number.isSafeInteger(d) && n > 0 && d > 0 && n * d < 1 << 16 ? n * d : 4;
    return [n, d, k];
  };
  const functions = {
    buildInfo: () => [],
    sampleLogitsRow: () => [arr('f32', int(9)), ...samplingArgs(), arr('u32', chance(0.9) ? 4 : int(6))],
    v8ExpOf: () => [arr('f64', int(9))],
    // Benchmarks refuse sizes and repetitions past what a benchmark needs: probe those bounds too.
    benchGemm: () => [sized(), sized(), sized(), reps()],
    benchCoupling: () => [sized(), sized(), reps()],
    rnnLayerGrads: () => {
      const dims = {
        cell: maybe(str(['gru', 'lstm', 'rnn'])),
        batch: B(),
        seq: T(),
        input: count([2, 3]),
        hidden: count([3, 4]),
      };
      const ok = (v) => (Number.isSafeInteger(v) && v > 0 && v < 64 ? v : 2);
      const [b, t, ii, h] = [ok(dims.batch), ok(dims.seq), ok(dims.input), ok(dims.hidden)];
      const sl = dims.cell === 'lstm' ? 2 * h : h;
      const g = dims.cell === 'lstm' ? 4 : dims.cell === 'rnn' ? 1 : 3;
      return [
        maybe(dims),
        arr('f32', sz(b, t, ii)),
        arr('f32', sz(b, sl)),
        arr('f32', g * h * (ii + h) + 2 * g * h),
        arr('f32', sz(b, t, sl)),
      ];
    },
    seriesHeadNll: () => {
      const d = count([1, 2]);
      const k = chance(0.5) ? undefined : count([2]);
      return [str(['gaussian', 'mdn']), d, k, arr('f64', int(5) * 4), arr('f64', int(5) * 2)];
    },
    couplingForward: () => {
      const [n, d, k] = coupling();
      return [
        n,
        d,
        arr('f32', k),
        arr('f32', Number.isSafeInteger(d) && d > 0 && d < 1 << 16 ? d : 2),
        arr('f32', k),
        arr('f32', k),
        arr('f32', Number.isSafeInteger(d) && d > 0 && d < 1 << 16 ? d : 2),
        maybe(chance(0.5)),
      ];
    },
    couplingBackward: () => {
      const [n, d, k] = coupling();
      const dd = Number.isSafeInteger(d) && d > 0 && d < 1 << 16 ? d : 2;
      return [
        n,
        d,
        arr('f32', k),
        arr('f32', dd),
        arr('f32', k),
        arr('f32', dd),
        arr('f32', k),
        arr('f32', Number.isSafeInteger(n) && n > 0 && n < 1 << 16 ? n : 2),
      ];
    },
  };

  // --- the loop -------------------------------------------------------------------------------------
  const show = (v) => {
    if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
      const head = Array.from(v.slice(0, 4), (x) => (typeof x === 'number' ? Number(x.toPrecision(4)) : x));
      return `${v.constructor.name}(${v.length})[${head.join(',')}${v.length > 4 ? ',…' : ''}]`;
    }
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'symbol' || typeof v === 'function') return String(v);
    if (v === undefined) return 'undefined';
    if (Array.isArray(v)) return `[${v.map(show).join(', ')}]`;
    if (v && typeof v === 'object')
      return v.constructor === Object
        ? `{${Object.entries(v)
            .map(([k, x]) => `${k}: ${show(x)}`)
            .join(', ')}}`
        : v.constructor.name;
    if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v);
    return JSON.stringify(v);
  };
  const traced = (text) => {
    const buf = Buffer.from(text);
    ftruncateSync(traceFd, 0);
    writeSync(traceFd, buf, 0, buf.length, 0);
  };

  const targets = [];
  for (const f of Object.keys(functions)) targets.push({ kind: 'fn', name: f });
  for (const c of Object.keys(ctorArgs)) targets.push({ kind: 'ctor', name: c });
  for (const [c, ms] of Object.entries(methods))
    for (const m of Object.keys(ms)) targets.push({ kind: 'method', cls: c, name: m });

  const stats = { calls: 0, threw: 0, ok: 0 };
  const perTarget = new Map();
  const t0 = performance.now();
  for (let k = 0; k < CALLS; k++) {
    const tg = pick(targets);
    let label;
    let call;
    if (tg.kind === 'fn') {
      const args = functions[tg.name]();
      label = `${tg.name}(${args.map(show).join(', ')})`;
      call = () => N[tg.name](...args);
    } else if (tg.kind === 'ctor') {
      const args = ctorArgs[tg.name]();
      label = `new ${tg.name}(${args.map(show).join(', ')})`;
      call = () => new N[tg.name](...args);
    } else {
      const list = instances[tg.cls];
      const idx = int(list.length);
      const inst = list[idx];
      const args = methods[tg.cls][tg.name](inst);
      label = `${tg.cls}#${idx} ${JSON.stringify(inst.s)} .${tg.name}(${args.map(show).join(', ')})`;
      call = () => inst.m[tg.name](...args);
    }
    traced(`call ${k} (seed ${opt.seed}): ${label}`);
    const key = tg.kind === 'method' ? `${tg.cls}.${tg.name}` : tg.name;
    const pt = perTarget.get(key) ?? { ok: 0, threw: 0 };
    perTarget.set(key, pt);
    try {
      const r = call();
      if (r && typeof r.then === 'function') await r;
      stats.ok++;
      pt.ok++;
    } catch (e) {
      if (!(e instanceof Error)) throw new Error(`non-Error thrown by ${label}: ${String(e)}`);
      stats.threw++;
      pt.threw++;
    }
    stats.calls++;
  }
  const s = (performance.now() - t0) / 1000;
  closeSync(traceFd);
  console.log(
    JSON.stringify({
      type: 'summary',
      seed: Number(opt.seed),
      calls: stats.calls,
      ok: stats.ok,
      threw: stats.threw,
      seconds: Number(s.toFixed(2)),
      callsPerSec: Math.round(stats.calls / s),
      targets: targets.length,
      neverOk: [...perTarget].filter(([, v]) => v.ok === 0).map(([k]) => k),
    }),
  );
}
