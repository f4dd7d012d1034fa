/**
 * What every training loop does when training diverges. The backends refuse a step whose loss or
 * gradient norm is not finite (a DivergenceError that changes nothing), and `checkpointContents`
 * refuses to save non-finite weights (an update that overflowed f32); the loops rethrow either naming
 * the step, counted from 1 as progress reports count it, and, for a loop that keeps a checkpoint, what
 * that file holds: the last good weights, never the broken ones.
 */
import { DivergenceError } from '../errors.js';

/** A loop's checkpoint: its path and the step of this run's last successful save (null: none yet). */
export interface CheckpointRecord {
  path: string;
  step: number | null;
}

/**
 * Runs `work` (training step `step`, or the checkpoint saved after it) and resolves with its result; a
 * DivergenceError from it is rethrown as one message line that starts `step <step>: ` and ends with
 * what `checkpoint` holds. Other errors pass through unchanged.
 */
export async function atStep<T>(
  step: number,
  work: () => Promise<T>,
  checkpoint?: CheckpointRecord | null,
): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (!(e instanceof DivergenceError)) throw e;
    let where = '';
    if (checkpoint)
      where =
        checkpoint.step === null
          ? `; this run saved no checkpoint to ${checkpoint.path}`
          : `; ${checkpoint.path} holds the checkpoint of step ${checkpoint.step}`;
    throw new DivergenceError(`step ${step}: ${e.message}${where}; try a lower learning rate`);
  }
}

/**
 * A loop's checkpoint saving: `save()` runs `write(path)` for the current step through
 * {@link atStep} (a refused save names the step and what the file still holds) and then records
 * that step; `record` is what to pass to `atStep` for the training steps (null without a path).
 */
export function checkpointSaver(
  path: string | undefined,
  step: () => number,
  write: (path: string) => Promise<void>,
): { record: CheckpointRecord | null; save: () => Promise<void> } {
  const record: CheckpointRecord | null = path === undefined ? null : { path, step: null };
  const save = () =>
    atStep(
      step(),
      async () => {
        if (!record) return;
        await write(record.path);
        record.step = step();
      },
      record,
    );
  return { record, save };
}
