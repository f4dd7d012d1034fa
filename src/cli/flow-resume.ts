/**
 * `arflow train flow --resume FILE`: reading a flow checkpoint's training state (model, data, seed,
 * settings, architecture, steps and time spent), checking it and the command line's flags against each
 * other, and the text that says what a resumed run will do.
 */
import { CheckpointError, ConfigError } from '../errors.js';
import { checkpointKind, readTrainInfo } from '../io/checkpoint.js';
import { loadSafetensors, specialFileKind } from '../io/safetensors.js';
import { DEFAULT_FLOW, RealNVP } from '../models/flow.js';
import { FLOWNET_KIND, Flow } from '../models/flownet.js';
import { REALNVP_V0_KIND } from '../models/realnvp-v0.js';
import { canonicalJson } from '../util/canonical-json.js';
import type { Flags } from './args.js';
import { num, str } from './args.js';
import { ARCH_FLAGS, TRAIN_FLOW_DATA, TRAIN_FLOW_FLAGS } from './flow-flags.js';
import {
  FASHION_TEST_IMAGES,
  FASHION_TRAIN_IMAGES,
  FLOW_MODELS,
  type FlowModelName,
  flowSpec,
  MAX_POINTS,
} from './flownet.js';

const RUN_FLAGS = ['data', 'model', 'n', 'seed', 'batch', 'lr', 'clip'] as const;

/**
 * What `train flow` records in a checkpoint's `train` metadata besides `seconds` and `trainSec` (which
 * checkpoints written before time budgets were recorded lack: their runs resume without one). A file
 * saved through the API without them holds no run's settings to continue with.
 */
const RECORDED = ['data', 'model', 'n', 'seed', 'steps', 'totalSteps', 'batch', 'lr', 'clip', 'testN', 'arch'] as const;

/** A run to continue: its flow and how far it got, and the flags with the run's own settings filled in. */
export interface Resumed {
  from: string;
  step: number;
  /** The run's time budget in seconds (0: none, the schedule follows the steps). */
  seconds: number;
  /** Seconds of training the run has spent (what its budget counts). */
  trainSec: number;
  flags: Flags;
  /** What the checkpoint recorded of its architecture flags (those given to the run it continues). */
  arch: Record<string, string | number | boolean>;
  flow?: Flow;
  realnvp?: RealNVP;
}

const show = (v: unknown) => (typeof v === 'string' ? v : JSON.stringify(v));
/** A value read from a file, for a message: a string says that it is one. */
const shown = (v: unknown) => (typeof v === 'string' ? `${JSON.stringify(v)} (a string)` : JSON.stringify(v));
/** A flag as typed: `--conditional`, `--hidden 16`. */
const flagText = (k: string, v: unknown) => (v === true ? `--${k}` : `--${k} ${show(v)}`);
/** Seconds for a message, to 0.01 s. */
const secs = (s: number) => `${Number(s.toFixed(2))} s`;

/**
 * Opens the checkpoint of `--resume` (a FlowNet or 2-D Real NVP checkpoint saved by `train flow`, with
 * its optimizer state) and fills `f` with the settings of its run. A flag that contradicts them is a
 * ConfigError naming it; a checkpoint without training or optimizer state, or without the settings
 * `train flow` records (one saved through the API), a ConfigError that says so; a damaged one (a value
 * of its training state out of range, an architecture that is not the flow it holds, an optimizer
 * step that is not the run's) a CheckpointError naming the file and the field.
 */
export function openResume(path: string, f: Flags): Resumed {
  const special = specialFileKind(path);
  if (special !== null) throw new CheckpointError(`--resume ${path} is ${special}, not a checkpoint file`);
  const kind = checkpointKind(path);
  if (kind === 'char-lm')
    throw new ConfigError(
      `--resume ${path} is a character-model checkpoint: continue it with arflow train char --resume ${path}`,
    );
  let flow: Flow | undefined;
  let realnvp: RealNVP | undefined;
  // A 2-D Real NVP run (train.model realnvp on points, or any vector Real NVP checkpoint of arflow ≤
  // 0.1.0) continues on the RealNVP model, with the backend the run used unless --backend says
  // otherwise; the checkpoint is read twice (small for 2-D data).
  const recorded =
    kind === REALNVP_V0_KIND || kind === FLOWNET_KIND ? readTrainInfo(path, loadSafetensors(path).metadata) : null;
  if (kind === REALNVP_V0_KIND || (recorded?.model === 'realnvp' && recorded.data !== 'fashion-mnist')) {
    const backend = str(f, 'backend') ?? (recorded?.backend === 'js' ? 'js' : undefined);
    realnvp = RealNVP.load(path, { backend: backend as 'native' | 'js' | undefined });
  } else {
    flow = Flow.load(path);
  }
  const model = (realnvp ?? flow) as RealNVP | Flow;
  const info = model.trainInfo;
  if (info === null)
    throw new ConfigError(
      `--resume ${path} holds no training state: it was not saved by arflow train flow, so there is no run to continue`,
    );
  if (!model.hasOptimizerState)
    throw new ConfigError(
      `--resume ${path} holds no optimizer state (it was saved without it: by an older arflow, or by Flow.save without { optimizer: true }), so its run cannot be continued exactly; start a new run`,
    );
  const missing = RECORDED.filter((k) => info[k] === undefined);
  if (missing.length > 0)
    throw new ConfigError(
      `--resume ${path}: its training state has no ${missing.join(', ')}: it was not saved by arflow train flow, so the settings of its run are unknown; continue it through the API (fit with resume and the run's own options), or start a new run`,
    );
  const bad = (key: string, what: string, v: unknown = info[key]) =>
    new CheckpointError(`${path}: train.${key} in its metadata is ${shown(v)}, not ${what}`);
  const whole = (key: string, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const v = info[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max)
      throw bad(key, max < Number.MAX_SAFE_INTEGER ? `a whole number in ${min}..${max}` : `a whole number ≥ ${min}`);
    return v;
  };
  const positive = (key: string, allowZero: boolean, fallback?: number): number => {
    const v = info[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0))
      throw bad(key, `a number ${allowZero ? '≥' : '>'} 0`);
    return v;
  };
  const data = info.data;
  if (typeof data !== 'string' || !(TRAIN_FLOW_DATA as readonly string[]).includes(data))
    throw bad('data', `one of ${TRAIN_FLOW_DATA.join(', ')}`);
  const image = data === 'fashion-mnist';
  const m = info.model;
  if (typeof m !== 'string' || !(FLOW_MODELS as readonly string[]).includes(m))
    throw bad('model', `one of ${FLOW_MODELS.join(', ')}`);
  const modelName = m as FlowModelName;
  if (realnvp) {
    if (modelName !== 'realnvp') throw bad('model', 'realnvp (a Real NVP checkpoint)');
    if (image || realnvp.config.dim !== 2)
      throw new CheckpointError(
        `${path}: a Real NVP of dim ${realnvp.config.dim} whose training state says data ${data}: train flow resumes 2-D Real NVPs on the 2-D densities`,
      );
  } else {
    const fl = flow as Flow;
    const fits = image
      ? fl.space === 'pixels' && fl.spec.shape.join(',') === '1,28,28'
      : fl.space === 'real' && fl.dim === 2 && modelName !== 'realnvp';
    if (!fits)
      throw new CheckpointError(
        `${path}: its training state says ${modelName} on ${data}, but it holds a ${fl.space === 'pixels' ? 'pixel' : 'vector'} flow of shape [${fl.spec.shape.join(', ')}]`,
      );
  }
  const step = whole('steps', 0);
  const n = whole('n', 1, image ? FASHION_TRAIN_IMAGES : MAX_POINTS);
  const seed = whole('seed', 0);
  const total = whole('totalSteps', 1);
  if (step > total) throw bad('steps', `a count of steps taken ≤ its totalSteps ${total}`);
  const batch = whole('batch', 1, image ? 4096 : 1_000_000);
  const testN = whole('testN', image ? 2 : 1, image ? FASHION_TEST_IMAGES : MAX_POINTS);
  const lr = positive('lr', false);
  const clip = positive('clip', true);
  const seconds = positive('seconds', true, 0);
  const trainSec = positive('trainSec', true, 0);
  // The optimizer state must be that of the run's last step: AdamW's bias correction counts its steps.
  const optimStep = model.backend.getOptimStep();
  if (optimStep !== step)
    throw new CheckpointError(
      `${path}: optimizer_step ${optimStep} in its metadata is not the ${step} steps its training state records (train.steps): its optimizer state is not that of the run's last step, so the run cannot be continued exactly`,
    );
  const arch = readArch(path, info.arch, modelName, image);
  // The architecture recorded must describe the flow in the file (and so must the model's name: a
  // MAF labelled glow is not a Glow).
  const describes = realnvp
    ? (['couplings', 'hidden', 'depth'] as const).every((k) => (arch[k] ?? DEFAULT_FLOW[k]) === realnvp.config[k])
    : canonicalJson(flowSpec(modelName, image, arch, 2)) === canonicalJson((flow as Flow).spec);
  if (!describes)
    throw new CheckpointError(
      `${path}: its training state (train.model ${modelName}, train.arch ${JSON.stringify(arch)}) does not describe the flow it holds: the metadata is not that of these tensors`,
    );
  const run: Record<string, unknown> = { data, model: modelName, n, seed, batch, lr, clip };
  for (const k of RUN_FLAGS) {
    if (f[k] === undefined || f[k] === run[k]) continue;
    throw new ConfigError(
      `${flagText(k, f[k])} contradicts --resume ${path}, whose run used ${flagText(k, run[k])}: a resumed run keeps its own settings (leave --${k} out, or start a new run)`,
    );
  }
  const flags: Flags = { ...f };
  const fill: Record<string, unknown> = { ...run, 'test-n': testN, ...arch, steps: total, seconds };
  for (const [k, v] of Object.entries(fill))
    if (flags[k] === undefined && v !== undefined) flags[k] = v as string | number | boolean;
  return { from: path, step, seconds, trainSec, flags, arch, flow, realnvp };
}

/**
 * The architecture flags a checkpoint's `train.arch` records, checked as the flags are (type and range)
 * and against the model and data (a flag the run would have refused): a CheckpointError naming the
 * file and the field otherwise.
 */
function readArch(
  path: string,
  raw: unknown,
  model: FlowModelName,
  image: boolean,
): Record<string, string | number | boolean> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new CheckpointError(`${path}: train.arch in its metadata is ${shown(raw)}, not an object`);
  const arch: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(raw)) {
    const a = ARCH_FLAGS[k];
    const spec = TRAIN_FLOW_FLAGS[k];
    const bad = (what: string) =>
      new CheckpointError(`${path}: train.arch.${k} in its metadata is ${shown(v)}, not ${what}`);
    if (a === undefined || spec === undefined) throw bad('an architecture flag (no such flag)');
    if (spec.type === 'int') {
      const min = k === 'blocks' ? 0 : 1;
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw bad(`a whole number ≥ ${min}`);
    } else if (spec.type === 'boolean') {
      if (v !== true) throw bad('true (a flag that was given)');
    } else if (typeof v !== 'string' || !(spec.choices ?? []).includes(v)) {
      throw bad(`one of ${(spec.choices ?? []).join(', ')}`);
    }
    if (!a.uses(model, image))
      throw new CheckpointError(
        `${path}: train.arch.${k} in its metadata is ${shown(v)}, but --${k} does not apply to ${model} on ${image ? 'fashion-mnist' : '2-D data'} (it is for ${a.for})`,
      );
    arch[k] = v as string | number | boolean;
  }
  return arch;
}

/**
 * Checks, once the flags are known good, that the architecture flags given with `--resume` describe
 * the flow in the checkpoint, and that `steps` (a total, counting the steps taken) and `seconds` (a
 * total budget, counting the training time spent) leave something to do. A run keeps the kind of
 * schedule it had: `--seconds` cannot give a step-driven run a budget, nor take a timed run's away.
 */
export function checkResume(
  r: Resumed,
  f: Flags,
  model: FlowModelName,
  image: boolean,
  steps: number,
  seconds: number,
): void {
  for (const k of Object.keys(ARCH_FLAGS)) {
    const v = f[k];
    if (v === undefined) continue;
    const was =
      r.arch[k] !== undefined
        ? `with ${flagText(k, r.arch[k])}`
        : TRAIN_FLOW_FLAGS[k].type === 'boolean'
          ? `without --${k}`
          : `with the default ${k}`;
    const fail = () =>
      new ConfigError(
        `${flagText(k, v)} contradicts --resume ${r.from}, whose flow was built ${was}: a resumed run keeps its architecture (leave --${k} out, or start a new run)`,
      );
    if (r.realnvp) {
      const c = r.realnvp.config as unknown as Record<string, unknown>;
      if (c[k] !== v) throw fail();
    } else if (r.flow) {
      const spec = flowSpec(model, image, { ...r.arch, [k]: v }, 2);
      if (canonicalJson(spec) !== canonicalJson(r.flow.spec)) throw fail();
    }
  }
  const given = num(f, 'seconds');
  if (given !== undefined && given > 0 !== r.seconds > 0)
    throw new ConfigError(
      r.seconds > 0
        ? `--seconds ${given} contradicts --resume ${r.from}, whose run had a time budget of ${secs(r.seconds)}: its learning-rate schedule follows the clock, and a step-driven one would not continue it (leave --seconds out, or give a larger total than the ${secs(r.trainSec)} spent)`
        : `--seconds ${given} contradicts --resume ${r.from}, whose run had no time budget: its learning-rate schedule follows its steps, and a clock-driven one would not continue it (leave --seconds out, or start a new run)`,
    );
  if (steps <= r.step) {
    if (f.steps === undefined)
      throw new ConfigError(
        `--resume ${r.from} has taken all ${r.step} steps of its run: give --steps with a larger total (it counts the ${r.step} taken)`,
      );
    throw new ConfigError(
      `--steps ${steps} leaves nothing to do: --resume ${r.from} has taken ${r.step} steps and --steps counts them; give a larger total`,
    );
  }
  if (seconds > 0 && seconds <= r.trainSec) {
    if (given === undefined)
      throw new ConfigError(
        `--resume ${r.from} has spent all ${secs(r.seconds)} of its time budget (it trained for ${secs(r.trainSec)}): give --seconds with a larger total (it counts the time spent)`,
      );
    throw new ConfigError(
      `--seconds ${given} leaves nothing to do: --resume ${r.from} has trained for ${secs(r.trainSec)} and --seconds counts that time; give a larger total`,
    );
  }
}

/** The line a resumed run starts with: where it stopped, of its steps and of its time budget. */
export function resumingText(r: Resumed, steps: number, seconds: number | undefined): string {
  const budget =
    seconds !== undefined && seconds > 0 ? `, ${secs(r.trainSec)} of its ${secs(seconds)} budget spent` : '';
  return `resuming ${r.from} at step ${r.step} of ${steps}${budget}`;
}

/** The architecture flags of a run, as given (what `--resume` checks new flags against). */
export function archOf(f: Flags): Record<string, string | number | boolean> {
  const arch: Record<string, string | number | boolean> = {};
  for (const k of Object.keys(ARCH_FLAGS)) if (f[k] !== undefined) arch[k] = f[k] as string | number | boolean;
  return arch;
}
