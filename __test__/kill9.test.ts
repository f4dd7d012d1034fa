/**
 * Kill -9: `arflow train char --checkpoint-every 2` killed with SIGKILL at three seeded random moments
 * leaves a checkpoint that loads, and `--resume` continues it to final weights bit-identical to a run
 * that was never killed. Runs `scripts/hardening/kill9.mjs` (the long version: `--kills 20`) on the
 * compiled CLI; compiles `dist/` first if the CLI is missing.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { CLI, jsonLines } from './helpers/cli.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const SCRIPT = join(ROOT, 'scripts', 'hardening', 'kill9.mjs');

beforeAll(() => {
  if (!existsSync(CLI)) {
    const r = spawnSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`tsc failed: ${r.stdout}${r.stderr}`);
  }
});

describe('kill -9 during training', () => {
  it('3 SIGKILLs at seeded random moments: each checkpoint loads and --resume ends bit-identical', () => {
    const r = spawnSync(process.execPath, [SCRIPT, '--kills', '3', '--seed', '3', '--steps', '300', '--json'], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = jsonLines(r.stdout);
    const kills = lines.filter((l) => l.type === 'kill');
    expect(kills).toHaveLength(3);
    for (const k of kills) expect(k.signal).toBe('SIGKILL');
    // Seed 3 kills mid-run every time: the test is void unless checkpoints were actually resumed.
    const resumed = kills.filter((k) => k.bitIdenticalToReference === true);
    expect(resumed.length).toBeGreaterThanOrEqual(2);
    const summary = lines.at(-1);
    expect(summary).toMatchObject({ type: 'summary', kills: 3, failures: [] });
  });
});
