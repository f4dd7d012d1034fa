#!/usr/bin/env node
/**
 * Kill -9 test: `arflow train char --checkpoint-every K` killed with SIGKILL at random (seeded)
 * moments must leave a checkpoint that loads, and `--resume` must continue from it to the same final
 * weights, bit for bit, as a run that was never killed.
 *
 *   node scripts/hardening/kill9.mjs [--kills 8] [--seed 1] [--steps 300] [--every 2] [--json]
 *
 * Runs the compiled CLI (dist/cli/main.js: `npx tsc -p tsconfig.json` first). Prints one line per kill
 * (with --json: one JSON object per line, then a summary object) and exits 1 on any failure.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const { CharLM } = await import(join(ROOT, 'dist', 'index.js'));
const { loadSafetensors } = await import(join(ROOT, 'dist', 'io', 'safetensors.js'));

const { values: opt } = parseArgs({
  options: {
    kills: { type: 'string', default: '8' },
    seed: { type: 'string', default: '1' },
    steps: { type: 'string', default: '300' },
    every: { type: 'string', default: '2' },
    json: { type: 'boolean', default: false },
  },
});
const KILLS = Number(opt.kills);
const STEPS = Number(opt.steps);
const EVERY = Number(opt.every);

function mulberry32(a) {
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(Number(opt.seed));

const TRAIN = ['train', 'char', '--corpus', 'names', '--embed', '16', '--hidden', '32', '--batch', '8', '--seq', '32'];
const TRAIN2 = ['--val-every', '100000', '--json', '--steps', String(STEPS), '--checkpoint-every', String(EVERY)];

/** Runs the CLI; `killAfterMs` sends SIGKILL that long after the spawn. */
function run(cwd, args, killAfterMs) {
  const t0 = performance.now();
  const child = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let firstOutMs;
  child.stdout.on('data', (d) => {
    firstOutMs ??= performance.now() - t0;
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  return new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const lines = stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .flatMap((l) => {
          try {
            return [JSON.parse(l)];
          } catch {
            return []; // a line cut short by the kill
          }
        });
      resolve({ code, signal, lines, stderr, ms: performance.now() - t0, firstOutMs });
    }),
  );
}

function tensorsEqual(pathA, pathB) {
  const a = loadSafetensors(pathA).tensors;
  const b = loadSafetensors(pathB).tensors;
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  if (ka.join() !== kb.join()) return `tensor names differ: ${ka.join()} vs ${kb.join()}`;
  for (const k of ka) {
    const x = a[k].data;
    const y = b[k].data;
    const bx = Buffer.from(x.buffer, x.byteOffset, x.byteLength);
    const by = Buffer.from(y.buffer, y.byteOffset, y.byteLength);
    if (!bx.equals(by)) return `tensor ${k} differs`;
  }
  return null;
}

const base = mkdtempSync(join(tmpdir(), 'arflow-kill9-'));
const failures = [];
const records = [];
const say = (o, text) => console.log(opt.json ? JSON.stringify(o) : text);
try {
  const ref = await run(base, [...TRAIN, ...TRAIN2, '--out', 'ref.safetensors']);
  if (ref.code !== 0) throw new Error(`reference run failed (${ref.code}): ${ref.stderr}`);
  const refPath = join(base, 'ref.safetensors');
  say(
    { type: 'reference', steps: STEPS, every: EVERY, ms: Math.round(ref.ms) },
    `reference run: ${STEPS} steps, checkpoint every ${EVERY}, ${Math.round(ref.ms)} ms`,
  );

  for (let i = 0; i < KILLS; i++) {
    const dir = join(base, `kill-${i}`);
    // A moment between just before training starts (the reference's first output) and ~95% of a
    // full run: before the first checkpoint, mid-write, between writes.
    const from = 0.8 * (ref.firstOutMs ?? 0);
    const delay = Math.round(from + rand() * (0.95 * ref.ms - from));
    const killed = await run(base, [...TRAIN, ...TRAIN2, '--out', join(dir, 'run.safetensors')], delay);
    const lastSeen = killed.lines.filter((l) => l.type === 'progress').at(-1)?.step ?? 0;
    const rec = { type: 'kill', i, delayMs: delay, signal: killed.signal, lastProgressStep: lastSeen };
    const fail = (why) => {
      rec.failure = why;
      failures.push(`kill ${i} (at ${delay} ms): ${why}`);
    };
    const files = readdirSync(base).includes(`kill-${i}`) ? readdirSync(dir) : [];
    rec.tmpFilesLeft = files.filter((f) => f.startsWith('.tmp-')).length;
    if (killed.signal !== 'SIGKILL') {
      rec.note = `run ended by itself (code ${killed.code}) before the kill`;
      if (killed.code !== 0) fail(`run exited ${killed.code}: ${killed.stderr.slice(-500)}`);
    } else if (!files.includes('run.safetensors')) {
      rec.note = 'no checkpoint written yet';
      if (lastSeen >= 2 * EVERY + 10) fail(`no checkpoint although progress reached step ${lastSeen}`);
    } else {
      const ckpt = join(dir, 'run.safetensors');
      try {
        const { train } = CharLM.load(ckpt);
        rec.checkpointStep = train?.step;
        if (!train || !(train.step > 0 && train.step <= STEPS && train.step % EVERY === 0))
          fail(`checkpoint train state has step ${train?.step}`);
      } catch (e) {
        fail(`checkpoint does not load: ${e.message}`);
      }
      if (rec.failure === undefined && rec.checkpointStep === STEPS) {
        // Killed after the last step's checkpoint (during the final validation or save): nothing to resume.
        rec.note = `killed after training ended: checkpoint at step ${STEPS} loads`;
        const diff = tensorsEqual(refPath, ckpt);
        rec.bitIdenticalToReference = diff === null;
        rec.note += diff === null ? ', bit-identical to the uninterrupted run' : '';
        if (diff !== null) fail(`final checkpoint differs from the uninterrupted run: ${diff}`);
      } else if (rec.failure === undefined) {
        const resumed = await run(base, [...TRAIN, ...TRAIN2, '--out', ckpt, '--resume', ckpt]);
        const firstStep = resumed.lines.find((l) => l.type === 'progress')?.step;
        const summary = resumed.lines.find((l) => l.type === 'summary');
        rec.resumedFirstProgressStep = firstStep;
        if (resumed.code !== 0) fail(`--resume exited ${resumed.code}: ${resumed.stderr.slice(-500)}`);
        else if (summary?.steps !== STEPS) fail(`resumed run summary steps ${summary?.steps}`);
        else if (!(firstStep > rec.checkpointStep)) fail(`resumed run started at step ${firstStep}`);
        else {
          const diff = tensorsEqual(refPath, ckpt);
          rec.bitIdenticalToReference = diff === null;
          if (diff !== null) fail(`resumed final weights differ from the uninterrupted run: ${diff}`);
        }
      }
    }
    records.push(rec);
    say(
      rec,
      `kill ${i}: SIGKILL at ${delay} ms (${rec.signal ?? 'no signal'}), last progress step ${lastSeen}, ` +
        (rec.note ??
          `checkpoint at step ${rec.checkpointStep} loads, resumed from ${rec.resumedFirstProgressStep} to ${STEPS}, ` +
            `final weights ${rec.bitIdenticalToReference ? 'bit-identical to' : 'DIFFERENT from'} the uninterrupted run`) +
        `; ${rec.tmpFilesLeft} temp file(s) left` +
        (rec.failure ? `  FAIL: ${rec.failure}` : ''),
    );
  }
} finally {
  rmSync(base, { recursive: true, force: true });
}
const resumed = records.filter((r) => r.bitIdenticalToReference).length;
say(
  { type: 'summary', kills: records.length, resumed, failures },
  `${records.length} kills, ${resumed} resumed bit-identically, ${failures.length} failure(s)`,
);
if (failures.length > 0) {
  for (const f of failures) console.error(`FAIL ${f}`);
  process.exit(1);
}
