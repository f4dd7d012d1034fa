/**
 * The `--peers` report: the README block rewriter (only the marked block changes; missing, repeated or
 * swapped markers are refused), the generated table, and the chart's log-scale bar heights read back
 * from its pixels. The `--torch` report's pure parts: medians, speed ratios (rates and µs/token), the
 * Markdown table, its JSON shape and README block, and the path without PyTorch (an injected detector).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { NativeAddon } from '../src/backend/native.js';
import { type Bar, barChart, logAxis, logRow, ratioLabel } from '../src/bench/chart.js';
import { IMAGE_FLOWS } from '../src/bench/flows.js';
import type { PeersResult } from '../src/bench/peers.js';
import {
  type BenchResultFile,
  BLOCK_END,
  BLOCK_START,
  latestTorchResult,
  renderPeersBlock,
  renderTorchBlock,
  replaceMarkedBlock,
  TORCH_BLOCK_END,
  TORCH_BLOCK_START,
} from '../src/bench/readme.js';
import {
  benchTorch,
  median,
  renderTorchTable,
  speedRatio,
  spread,
  summarizeRow,
  TORCH_MISSING,
  type TorchResult,
  tensorMismatches,
  torchHeader,
} from '../src/bench/torch.js';
import { Vocabulary } from '../src/data/vocab.js';
import { realNvpImageSpec } from '../src/models/presets.js';

describe('README block', () => {
  const readme = `# arflow\n\n## Measured\n\nbefore\n${BLOCK_START}\nold table\n${BLOCK_END}\nafter\n`;

  it('replaces what lies between the markers and nothing else', () => {
    const out = replaceMarkedBlock(readme, '| new | table |\n');
    expect(out).toBe(`# arflow\n\n## Measured\n\nbefore\n${BLOCK_START}\n| new | table |\n${BLOCK_END}\nafter\n`);
    // Idempotent: rewriting with the same body changes nothing.
    expect(replaceMarkedBlock(out, '| new | table |')).toBe(out);
  });

  it('refuses a README without, with repeated or with swapped markers', () => {
    expect(() => replaceMarkedBlock('# no markers\n', 'x')).toThrow(/exactly once/);
    expect(() => replaceMarkedBlock(`${readme}${BLOCK_START}\n`, 'x')).toThrow(/exactly once/);
    expect(() => replaceMarkedBlock(`${BLOCK_END}\n${BLOCK_START}\n`, 'x')).toThrow(/before/);
  });

  it('renders every training, sampling and flow row with its ratio', () => {
    const peers: PeersResult = {
      versions: { '@tensorflow/tfjs-core': '4.22.0', 'brain.js': '1.6.1' },
      training: [row('arflow native', 32, 50_000, 1), row('tfjs cpu', 32, 100, 500), row('brain.js', 1, 250, 200)],
      sampling: [
        {
          workload: 'E64-H256-L1-B32-T64',
          engine: 'tfjs wasm',
          method: 'model.predict',
          tokens: 32,
          tokensPerSec: 40,
          msPerToken: 25,
          nativeOverThis: 1234.5,
        },
      ],
      flows: [{ workload: 'Real NVP', unit: 'samples/s', nativePerSec: 1400, tsPerSec: 100, nativeOverThis: 14 }],
      skipped: ['tfjs wasm E64-H512-L2-B32-T64: out of memory'],
    };
    const result: BenchResultFile = {
      date: '2031-02-03T04:05:06.000Z',
      machine: { cpu: 'Test CPU', cores: 2, node: 'v20' },
      peers,
    };
    const md = renderPeersBlock(result, 'x.json');
    expect(md).toContain('2031-02-03, Test CPU, 2 cores');
    expect(md).toMatch(
      /\| training, H 256 × 1 \(E 64, B 32, T 64\) \| arflow native .*\| 3 \+ 10 \| 50,000 \| \(reference\) \|/,
    );
    expect(md).toMatch(/\| tfjs cpu .*\| 100 \| 500× \|/);
    expect(md).toMatch(/\| brain\.js .*; batch 1\) \| 3 \+ 10 sequences \| 250 \| 200× \|/);
    expect(md).toMatch(/\| sampling, H 256 × 1 .*\| 40 \(25 ms\/token\) \| 1,235× \|/);
    expect(md).toMatch(/Real NVP, arflow TS reference .*\| 100 samples\/s \(native 1,400\) \| 14× \|/);
    expect(md).toContain('Not measured: tfjs wasm E64-H512-L2-B32-T64: out of memory.');
    expect(() => renderPeersBlock({ ...result, peers: undefined }, 'y.json')).toThrow(/y\.json has no --peers/);
  });
});

function row(engine: PeersResult['training'][number]['engine'], batch: number, tokensPerSec: number, ratio: number) {
  return {
    workload: 'E64-H256-L1-B32-T64',
    engine,
    api: 'api',
    batch,
    warmupSteps: 3,
    timedSteps: 10,
    tokensPerSec,
    msPerStep: 1,
    nativeOverThis: ratio,
  };
}

describe('ratio chart', () => {
  it('spans whole decades that include 1 and every ratio', () => {
    expect(logAxis([3, 250])).toEqual([0, 3]);
    expect(logAxis([1000])).toEqual([0, 3]);
    expect(logAxis([0.3, 20])).toEqual([-1, 2]);
    expect(logAxis([1])).toEqual([0, 1]);
    expect(logAxis([Number.NaN, 0, 5])).toEqual([0, 1]);
  });

  it('places values on a log scale', () => {
    // Axis 0..2 decades over rows 300 (value 1) up to 100 (value 100): 10 is halfway.
    expect(logRow(1, [0, 2], 100, 300)).toBe(300);
    expect(logRow(10, [0, 2], 100, 300)).toBe(200);
    expect(logRow(100, [0, 2], 100, 300)).toBe(100);
    expect(logRow(Math.sqrt(10), [0, 2], 100, 300)).toBe(250);
  });

  it('draws each bar from the baseline to its ratio’s row, below the baseline when under 1', () => {
    const red = [200, 0, 0] as const;
    const bars: Bar[] = [
      { group: 'a', ratio: 10, color: red },
      { group: 'a', ratio: 100, color: red },
      { group: 'b', ratio: 0.1, color: red },
    ];
    const height = 300;
    const { width, pixels } = barChart(bars, { height, barWidth: 20 });
    const isRed = (x: number, y: number) => {
      const o = (y * width + x) * 3;
      return pixels[o] === 200 && pixels[o + 1] === 0 && pixels[o + 2] === 0;
    };
    // Per column, the red rows: one run from the baseline to the value.
    const columns: [number, number][] = [];
    for (let x = 0; x < width; x++) {
      const rows = Array.from({ length: height }, (_, y) => y).filter((y) => isRed(x, y));
      if (rows.length > 0) columns.push([rows[0], rows[rows.length - 1]]);
    }
    const spans = [...new Set(columns.map(([a, b]) => `${a}-${b}`))].map((s) => s.split('-').map(Number));
    expect(spans).toHaveLength(3);
    expect(columns).toHaveLength(3 * 20);
    const axis = logAxis([10, 100, 0.1]);
    const [top, bottom] = [24, height - 14];
    const one = logRow(1, axis, top, bottom);
    expect(spans[0]).toEqual([logRow(10, axis, top, bottom), one]);
    expect(spans[1]).toEqual([logRow(100, axis, top, bottom), one]);
    expect(spans[2]).toEqual([one, logRow(0.1, axis, top, bottom)]);
    // Log scale: the 100× bar is twice as tall as the 10× one, and 0.1× as deep as 10× is tall.
    expect(spans[1][1] - spans[1][0]).toBeCloseTo(2 * (spans[0][1] - spans[0][0]), -0.5);
    expect(spans[2][1] - spans[2][0]).toBeCloseTo(spans[0][1] - spans[0][0], -0.5);
  });

  it('writes ratios with one decimal below 10', () => {
    expect(ratioLabel(7.25)).toBe('7.3');
    expect(ratioLabel(68.4)).toBe('68');
    expect(ratioLabel(1234.5)).toBe('1235');
  });
});

describe('--torch report', () => {
  it('takes medians, odd and even, and the extremes of every round', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(spread([5, 1, 3])).toEqual({ median: 3, min: 1, max: 5, rounds: [5, 1, 3] });
  });

  it('gives arflow’s speed ÷ PyTorch’s for rates and for times per token', () => {
    expect(speedRatio(300, 100, 'higher')).toBe(3);
    expect(speedRatio(10, 200, 'lower')).toBe(20);
  });

  it('pairs each arflow round with the PyTorch round after it for the ratio’s range', () => {
    const def = { id: 'x', workload: 'w', unit: 'tokens/s', better: 'higher' as const };
    const row = summarizeRow(def, [100, 200, 150], [50, 50, 100]);
    expect(row.arflow.median).toBe(150);
    expect(row.torch?.median).toBe(50);
    expect(row.ratio).toEqual({ median: 3, min: 1.5, max: 4 });
    const lower = summarizeRow({ ...def, better: 'lower' }, [10, 12, 11], [200, 240, 220]);
    expect(lower.ratio?.median).toBe(20);
    expect(lower.ratio?.min).toBe(20);
    expect(summarizeRow(def, [1, 2, 3], null)).toMatchObject({ torch: null, ratio: null });
  });

  it('renders one table row per workload, with the ratio bold, the checks and what failed', () => {
    const md = renderTorchTable(torchResult());
    const lines = md.split('\n');
    expect(lines[0]).toBe(
      '| workload | unit | parameters (arflow / PyTorch) | arflow | PyTorch | arflow ÷ PyTorch (speed) |',
    );
    expect(md).toContain(
      '| char-GRU training | tokens/s | 273,939 / 273,939 | 45,000 (40,000–50,000) | 15,000 (14,000–16,000) | ' +
        '**3.00×** (2.86×–3.13×) |',
    );
    expect(md).toContain(
      '| sampling | µs/token | 273,939 / 273,939 | 10.5 (10–11) | 210 (200–220) | **20×** (20×–20×) |',
    );
    expect(md).toContain('| fp32 GEMM | GFLOP/s | — | 300 (300–300) | — | — |');
    expect(md).toMatch(
      /- Glow: 191,392 \/ 191,392 parameters, every parameter name and shape matches; log p .* 1\.0e-3/,
    );
    expect(md).toContain('Not measured: PyTorch gemm: out of memory.');
    const header = torchHeader(torchResult());
    expect(header).toContain('PyTorch 2.15.0 (eager, no torch.compile; Python 3.11.7)');
    expect(header).toContain('(OMP_WAIT_POLICY=PASSIVE)');
    expect(header).toContain('Test CPU (AVX-512), 2 cores. 4 alternating rounds of 4 s per side');
  });

  it('survives a JSON round trip and makes a README block of the newest result with PyTorch figures', () => {
    const dir = mkdtempSync(join(tmpdir(), 'arflow-bench-'));
    try {
      const older: BenchResultFile = { date: '2031-01-01T00:00:00.000Z', machine, torch: torchResult() };
      const newer: BenchResultFile = { date: '2031-02-01T00:00:00.000Z', machine, torch: torchResult() };
      const noTorch: BenchResultFile = {
        date: '2031-03-01T00:00:00.000Z',
        machine,
        torch: { ...torchResult(), available: false, message: TORCH_MISSING, rows: [] },
      };
      writeFileSync(join(dir, 'a.json'), JSON.stringify(older));
      writeFileSync(join(dir, 'b.json'), JSON.stringify(newer));
      writeFileSync(join(dir, 'c.json'), JSON.stringify(noTorch));
      const { file, result } = latestTorchResult(dir);
      expect(file).toBe('b.json');
      expect(result).toEqual(newer);
      const block = renderTorchBlock(result, file);
      expect(block).toMatch(/^One `npm run bench -- --torch` run, 2031-02-01, Node v20/);
      expect(block).toContain('**3.00×**');
      expect(block).toContain('Source: `bench/results/b.json`');
      const readme = `# x\n${TORCH_BLOCK_START}\nold\n${TORCH_BLOCK_END}\n${BLOCK_START}\npeers\n${BLOCK_END}\n`;
      const out = replaceMarkedBlock(readme, block, TORCH_BLOCK_START, TORCH_BLOCK_END);
      expect(out).toContain(`${TORCH_BLOCK_START}\n${block}\n${TORCH_BLOCK_END}\n${BLOCK_START}\npeers\n`);
      expect(() => renderTorchBlock(noTorch, 'c.json')).toThrow(/c\.json has no --torch/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lists the tensors whose names or shapes differ', () => {
    const a: [string, number[]][] = [
      ['x', [2, 3]],
      ['y', [4]],
    ];
    expect(tensorMismatches(a, [...a].reverse())).toEqual([]);
    expect(
      tensorMismatches(a, [
        ['x', [3, 2]],
        ['z', [1]],
      ]),
    ).toEqual(['x: arflow [2×3], PyTorch [3×2]', 'y [4] missing in PyTorch', 'z [1] only in PyTorch']);
  });

  it('without PyTorch says so and runs nothing', async () => {
    const lines: string[] = [];
    const addon = {
      buildInfo: () => ({ version: '0', cuda: false, threads: 2 }),
      benchGemm: () => {
        throw new Error('measured without PyTorch');
      },
    } as unknown as NativeAddon;
    const vocab = Vocabulary.fromText('ab');
    const result = await benchTorch({
      quick: true,
      vocab,
      ids: vocab.encode('abab'),
      addon,
      detect: async () => null,
      log: (l) => lines.push(l),
    });
    expect(lines).toEqual([TORCH_MISSING]);
    expect(TORCH_MISSING).toBe("PyTorch not found (python3 -c 'import torch' failed): skipping the --torch rows");
    expect(result).toMatchObject({ available: false, message: TORCH_MISSING, torch: null, rows: [], checks: [] });
    expect(result.threads).toEqual({ arflow: 2, torch: null });
    expect(JSON.parse(JSON.stringify(result))).toEqual(result);
    expect(torchHeader(result)).toMatch(/^PyTorch not found .*arflow's own figures, 2 threads/);
  });
});

const machine = { cpu: 'Test CPU', cores: 2, node: 'v20' };

function torchResult(): TorchResult {
  const params = { arflow: 273_939, torch: 273_939 };
  return {
    available: true,
    cpu: 'Test CPU',
    cores: 2,
    avx512: true,
    python: '3.11.7',
    torch: '2.15.0',
    threads: { arflow: 2, torch: 2 },
    torchEnv: { OMP_WAIT_POLICY: 'PASSIVE' },
    quick: false,
    rounds: 4,
    secondsPerRound: 4,
    rows: [
      summarizeRow(
        { id: 'a', workload: 'char-GRU training', unit: 'tokens/s', better: 'higher', params },
        [40_000, 45_000, 45_000, 50_000],
        [14_000, 15_000, 15_000, 16_000],
      ),
      summarizeRow(
        { id: 'b', workload: 'sampling', unit: 'µs/token', better: 'lower', params },
        [10, 10.5, 10.5, 11],
        [200, 210, 210, 220],
      ),
      summarizeRow({ id: 'c', workload: 'fp32 GEMM', unit: 'GFLOP/s', better: 'higher' }, [300, 300, 300, 300], null),
    ],
    checks: [
      {
        model: 'Glow',
        params: { arflow: 191_392, torch: 191_392 },
        sameTensors: true,
        mismatches: [],
        quantity: 'log p of 16 images (nats)',
        arflow: [-1000, -2000],
        torch: [-1000.001, -2000],
        maxAbsDiff: 1e-3,
        maxRelDiff: 1e-6,
      },
    ],
    failures: ['PyTorch gemm: out of memory'],
  };
}

describe('bench/specs', () => {
  it('realnvp-fmnist.json is the bench’s Real NVP preset (the GPU bench builds it without Node)', () => {
    const file = JSON.parse(readFileSync(new URL('../bench/specs/realnvp-fmnist.json', import.meta.url), 'utf8'));
    expect(file).toEqual(realNvpImageSpec(IMAGE_FLOWS.realnvp.config));
  });
});
