/**
 * The `--peers` report: the README block rewriter (only the marked block changes; missing, repeated or
 * swapped markers are refused), the generated table, and the chart's log-scale bar heights read back
 * from its pixels.
 */
import { describe, expect, it } from 'vitest';
import { type Bar, barChart, logAxis, logRow, ratioLabel } from '../src/bench/chart.js';
import type { PeersResult } from '../src/bench/peers.js';
import {
  type BenchResultFile,
  BLOCK_END,
  BLOCK_START,
  renderPeersBlock,
  replaceMarkedBlock,
} from '../src/bench/readme.js';

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
