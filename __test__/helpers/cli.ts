/** Running the compiled `arflow` CLI from tests, and reading its `--json` output. */
import { type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The compiled CLI (`npm run build:ts` writes it). */
export const CLI = join(fileURLToPath(new URL('../../', import.meta.url)), 'dist', 'cli', 'main.js');

/** Runs `arflow ...args` in `cwd`, killed after `timeoutMs`; throws if it could not be started. */
export function runCli(cwd: string, args: string[], timeoutMs = 120_000): SpawnSyncReturns<string> {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: timeoutMs });
  if (r.error) throw r.error;
  return r;
}

/** Every line of `stdout` parsed as JSON; a line that is not JSON fails with its number and text. */
export function jsonLines(stdout: string): Record<string, unknown>[] {
  const lines = stdout.split('\n').filter((l) => l.length > 0);
  return lines.map((l, i) => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      throw new Error(`stdout line ${i + 1} is not JSON: ${l}`);
    }
  });
}
