/**
 * The N-API boundary under random arguments: `scripts/hardening/fuzz-napi.mjs` makes 1,000 seeded
 * calls of every exported native function and class method (constructors included) with random
 * types, shapes and sizes, in a child process; thrown errors are fine, a crash or a hang (the script
 * reports the call) fails. The long run is `node scripts/hardening/fuzz-napi.mjs` (10⁵ calls).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const SCRIPT = join(ROOT, 'scripts', 'hardening', 'fuzz-napi.mjs');

beforeAll(() => {
  if (!existsSync(join(ROOT, 'dist', 'backend', 'native.js'))) {
    const r = spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`tsc failed: ${r.stdout}${r.stderr}`);
  }
});

describe('N-API fuzz', () => {
  it('1,000 random calls of every native function and method: no crash, no hang', () => {
    const r = spawnSync(process.execPath, [SCRIPT, '--calls', '1000', '--seed', '11', '--timeout-ms', '10000'], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stderr, 'the call that crashed').toBe('');
    expect(r.status).toBe(0);
    const summary = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}');
    expect(summary).toMatchObject({ type: 'summary', calls: 1000 });
    // Both kinds of outcome must occur, or the fuzzing is not reaching past (or into) validation.
    expect(summary.ok).toBeGreaterThan(100);
    expect(summary.threw).toBeGreaterThan(100);
  });
});
