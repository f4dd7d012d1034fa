/**
 * Checkpoints of the vector Real NVP as arflow ≤ 0.1.0 wrote them: metadata `kind` 'flow-realnvp' with
 * `config` {dim, couplings, hidden, depth}, tensors `couplings.{k}.net.{j}.weight|bias` and
 * `couplings.{k}.scale` (and their AdamW moments `optimizer.exp_avg.couplings.…`). That model computed
 * exactly what the FlowNet preset {@link realNvpVectorSpec} computes, coupling k being layer k, so such a
 * file is read as the FlowNet checkpoint it would be today: same values under `layers.{k}.…`, the spec
 * in the metadata, the training record and optimizer step as they were.
 */
import { CheckpointError, ConfigError } from '../errors.js';
import type { SafetensorsContents } from '../io/safetensors.js';
import { FLOWNET_KIND } from './flownet.js';
import { realNvpVectorSpec } from './presets.js';

/** `kind` of the vector Real NVP checkpoints of arflow ≤ 0.1.0. */
export const REALNVP_V0_KIND = 'flow-realnvp';

/** What an old checkpoint is, for messages. */
const OLD = `a vector Real NVP checkpoint of arflow ≤ 0.1.0 (kind ${REALNVP_V0_KIND})`;

/** `couplings.{k}.…` → `layers.{k}.…`, also under the optimizer's prefixes; other names as they are. */
function renamed(name: string): string {
  const m = /^(optimizer\.exp_avg(?:_sq)?\.)?couplings\.(\d+\..*)$/.exec(name);
  return m === null ? name : `${m[1] ?? ''}layers.${m[2]}`;
}

/**
 * The FlowNet checkpoint contents (kind 'flow-net', space 'real') of an old vector Real NVP checkpoint's
 * contents. Its config must be readable and valid (a CheckpointError that says what the file is and
 * what to do otherwise); its tensors are renamed, not checked: the FlowNet loader checks them against
 * the spec.
 */
export function realNvpV0Contents(path: string, { tensors, metadata }: SafetensorsContents): SafetensorsContents {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(metadata.config) as Record<string, unknown>;
    if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new Error('config is not an object');
    if (raw.dim === undefined) throw new Error('config has no dim');
  } catch (e) {
    throw new CheckpointError(
      `${path} is ${OLD}, but its config is unreadable (${(e as Error).message}): re-create the model and train it again`,
    );
  }
  let spec: ReturnType<typeof realNvpVectorSpec>;
  try {
    const { dim, couplings, hidden, depth } = raw as Record<string, number>;
    spec = realNvpVectorSpec({ dim, couplings, hidden, depth });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    throw new CheckpointError(`${path} is ${OLD}, but the config in its metadata is not a valid flow (${e.message})`);
  }
  const { config: _config, kind: _kind, ...rest } = metadata;
  const out: SafetensorsContents = {
    tensors: {},
    metadata: { ...rest, kind: FLOWNET_KIND, spec: JSON.stringify(spec), space: 'real' },
  };
  for (const [name, t] of Object.entries(tensors)) out.tensors[renamed(name)] = t;
  return out;
}
