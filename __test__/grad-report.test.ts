/**
 * The gradient diagnostic ‖∂L_T/∂h_t‖ against T − t: equal to finite differences of the last step's
 * loss with respect to the top layer's state t steps back (reference cells in float64), the same on
 * the native and the TypeScript backends, and written by `train char --grad-report` as a PNG and JSON.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cellForward, cellParamNames } from '../src/backend/js/cells.js';
import { stateWidth } from '../src/backend/types.js';
import { Vocabulary } from '../src/data/vocab.js';
import { ConfigError } from '../src/errors.js';
import { CharLM } from '../src/models/char-lm.js';
import { gradReport } from '../src/models/grad-report.js';
import { jsonLines, runCli } from './helpers/cli.js';

const TEXT = 'a gradient that vanishes cannot carry a dependency across many steps of time. '.repeat(8);

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'arflow-grad-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** L_T of one window as a function of the top (only) layer's state after step t, in float64. */
function lastLoss(model: CharLM, ids: Uint32Array, T: number, t: number, st: Float64Array): number {
  const { cell, embed: E, hidden: H } = model.config;
  const S = stateWidth(cell) * H;
  const b = model.backend;
  const n = cellParamNames(cell, 0);
  const w = { wIh: b.getParam(n.wIh), wHh: b.getParam(n.wHh), bIh: b.getParam(n.bIh), bHh: b.getParam(n.bHh) };
  const emb = b.getParam('embedding.weight');
  const seq = T - 1 - t;
  let h: Float64Array = st.slice(0, H);
  if (seq > 0) {
    const x = new Float64Array(seq * E);
    for (let k = 0; k < seq; k++) x.set(emb.subarray(ids[t + 1 + k] * E, (ids[t + 1 + k] + 1) * E), k * E);
    const { out } = cellForward(cell, { batch: 1, seq, input: E, hidden: H }, x, st, w, { dtype: 'f64' });
    h = (out as Float64Array).slice((seq - 1) * S, (seq - 1) * S + H);
  }
  const hw = b.getParam('head.weight');
  const hb = b.getParam('head.bias');
  const V = model.vocab.size;
  const logits = Array.from({ length: V }, (_, v) => {
    let s = hb[v];
    for (let j = 0; j < H; j++) s += hw[v * H + j] * h[j];
    return s;
  });
  const max = Math.max(...logits);
  const lse = max + Math.log(logits.reduce((a, l) => a + Math.exp(l - max), 0));
  return lse - logits[ids[T]];
}

describe('gradReport', () => {
  for (const cell of ['gru', 'lstm', 'rnn'] as const) {
    it(`${cell}: each norm equals finite differences of L_T with respect to h_t`, () => {
      const model = CharLM.create(Vocabulary.fromText(TEXT), { hidden: 6, embed: 4, cell }, { backend: 'js', seed: 3 });
      const ids = model.vocab.encode(TEXT);
      const T = 7;
      const r = gradReport(model, ids, { length: T, batch: 1 });
      expect(r.distance).toEqual([0, 1, 2, 3, 4, 5, 6]);
      const { hidden: H } = model.config;
      const S = stateWidth(cell) * H;
      // The states of the top layer along the window, from a zero start.
      const n = cellParamNames(cell, 0);
      const b = model.backend;
      const w = { wIh: b.getParam(n.wIh), wHh: b.getParam(n.wHh), bIh: b.getParam(n.bIh), bHh: b.getParam(n.bHh) };
      const E = model.config.embed;
      const emb = b.getParam('embedding.weight');
      const x = new Float64Array(T * E);
      for (let k = 0; k < T; k++) x.set(emb.subarray(ids[k] * E, (ids[k] + 1) * E), k * E);
      const { out } = cellForward(cell, { batch: 1, seq: T, input: E, hidden: H }, x, new Float64Array(S), w, {
        dtype: 'f64',
      });
      for (let t = T - 1; t >= 0; t--) {
        const st = (out as Float64Array).slice(t * S, (t + 1) * S);
        let sq = 0;
        for (let j = 0; j < H; j++) {
          const up = st.slice();
          up[j] += 1e-6;
          const down = st.slice();
          down[j] -= 1e-6;
          sq += ((lastLoss(model, ids, T, t, up) - lastLoss(model, ids, T, t, down)) / 2e-6) ** 2;
        }
        const want = Math.sqrt(sq);
        const got = r.norm[T - 1 - t];
        expect(Math.abs(got - want), `distance ${T - 1 - t}: ${got} vs ${want}`).toBeLessThan(1e-4 * want + 1e-9);
      }
      expect(r.norm[0]).toBeGreaterThan(0);
    });
  }

  it('native and TypeScript backends give the same curve', () => {
    const a = CharLM.create(Vocabulary.fromText(TEXT), { hidden: 16, layers: 2, cell: 'lstm' }, { seed: 1 });
    const b = a.to('js');
    const ids = a.vocab.encode(TEXT);
    const ra = gradReport(a, ids, { length: 30, batch: 3 });
    const rb = gradReport(b, ids, { length: 30, batch: 3 });
    for (let d = 0; d < 30; d++) {
      expect(Math.abs(ra.norm[d] - rb.norm[d])).toBeLessThanOrEqual(1e-3 * rb.norm[d] + 1e-12);
    }
    expect(ra.loss).toBeCloseTo(rb.loss, 4);
    expect(() => gradReport(a, ids, { length: 1 })).toThrow(ConfigError);
    expect(() => gradReport(a, ids.subarray(0, 10), { length: 30 })).toThrow(ConfigError);
  });

  it('train char --grad-report prints the curve, writes a PNG and adds it to the JSON summary', () => {
    const png = join(dir, 'grads.png');
    const r = runCli(dir, [
      ...['train', 'char', '--cell', 'rnn', '--hidden', '32', '--steps', '5', '--val-every', '0'],
      ...['--out', join(dir, 'lm.safetensors'), '--grad-report', png, '--json'],
    ]);
    expect(r.status, r.stderr).toBe(0);
    const summary = jsonLines(r.stdout).at(-1) as { gradReport: { cell: string; distance: number[]; norm: number[] } };
    expect(summary.gradReport.cell).toBe('rnn');
    expect(summary.gradReport.distance).toHaveLength(100);
    expect(summary.gradReport.norm.every((v) => v >= 0 && Number.isFinite(v))).toBe(true);
    expect(existsSync(png)).toBe(true);
    expect(readFileSync(png).subarray(1, 4).toString()).toBe('PNG');
    const same = runCli(dir, ['train', 'char', '--steps', '1', '--out', png, '--grad-report', png, '--json']);
    expect(same.status).toBe(2);
  });
});
