/**
 * The flags of `arflow train flow`, `sample` and `eval` on flow checkpoints, the data sets `--data`
 * accepts and which architecture flags each model uses.
 */
import { type FlagSpec, HELP_FLAG, JSON_FLAG, JSON_RESULT_FLAG } from './args.js';
import { FLOW_MODELS, type FlowModelName } from './flownet.js';

/** The densities `train flow --data` accepts. */
export const FLOW_DATA = ['moons', '8gaussians', 'checkerboard', 'pinwheel', 'rings'] as const;
/** What `train flow --data` accepts: the 2-D densities and Fashion-MNIST. */
export const TRAIN_FLOW_DATA = [...FLOW_DATA, 'fashion-mnist'] as const;

export const TRAIN_FLOW_FLAGS: Record<string, FlagSpec> = {
  data: { type: 'string', help: `2-D density or fashion-mnist (default moons)`, choices: TRAIN_FLOW_DATA },
  model: {
    type: 'string',
    help: 'realnvp (vector MLP couplings; multi-scale ResNet on images), glow, nice, maf or iaf (default realnvp)',
    choices: FLOW_MODELS,
  },
  n: {
    type: 'int',
    help: 'training examples: points (default 20000, at most 10000000) or images (default and at most all 60000)',
  },
  'test-n': {
    type: 'int',
    help: 'held-out examples scored at the end: points (default 5000, at most 10000000) or images (2 to 10000, default 10000)',
  },
  steps: { type: 'int', help: 'training steps (default 2000)' },
  batch: { type: 'int', help: 'examples per minibatch (default 256 points, at most 1000000; 64 images, at most 4096)' },
  lr: { type: 'number', help: 'peak learning rate, cosine schedule (default 0.001)' },
  clip: { type: 'number', help: 'clip the global gradient norm (default 1; 100 for images; 0 = off)' },
  couplings: { type: 'int', help: 'realnvp on points: affine couplings (default 8)' },
  hidden: { type: 'int', help: 'MLP conditioner width (default 64 on points; nice 256, maf 1024 on images)' },
  depth: { type: 'int', help: 'hidden layers per MLP conditioner (default 2; nice on images 4)' },
  layers: { type: 'int', help: 'nice: couplings (default 4); maf/iaf: MADE layers (default 5)' },
  channels: { type: 'int', help: 'realnvp/glow on images: ResNet width of the conditioners (default 32)' },
  blocks: { type: 'int', help: 'realnvp/glow on images: residual blocks per ResNet conditioner (default 1)' },
  scales: { type: 'int', help: 'realnvp on images: scales (default 2)' },
  norm: {
    type: 'string',
    help: 'realnvp on images: layer after each coupling (default actnorm)',
    choices: ['actnorm', 'batchnorm', 'none'],
  },
  'conv-norm': {
    type: 'string',
    help: 'realnvp on images: normalisation inside the ResNet conditioners (default weight)',
    choices: ['weight', 'batch', 'none'],
  },
  levels: { type: 'int', help: 'glow: levels (default 2 on images, 1 on points)' },
  'flow-steps': {
    type: 'int',
    help: 'glow: steps (actnorm, 1x1 conv, coupling) per level (default 4 on images, 8 on points)',
  },
  conditional: { type: 'boolean', help: 'fashion-mnist: condition on the class label (samples: one row per class)' },
  temperature: { type: 'number', help: 'temperature (> 0) of the sample picture (default 0.7 images, 1 points)' },
  seed: { type: 'int', help: 'seed (≥ 0) of data, initialisation and minibatches (default 0)' },
  backend: {
    type: 'string',
    help: 'native or js, js for realnvp on points only (default: native when available)',
    choices: ['native', 'js'],
  },
  seconds: {
    type: 'number',
    help: "stop after this many seconds of training; the schedule follows the clock (default 0 = no limit; with --resume: the run's own budget, and a new one is a total counting the time spent)",
  },
  out: {
    type: 'string',
    help: 'checkpoint path, saved with the optimizer state (default flow-<data>[-<model>].safetensors; with --resume, that file)',
  },
  resume: {
    type: 'string',
    help: 'continue the run saved in this checkpoint: model, data, seed, settings and time budget come from it; --steps and --seconds count its steps and training time too (default: the totals it was started with)',
  },
  png: {
    type: 'string',
    help: 'density + samples picture, or the image sample grid (default: the checkpoint path with .png; images also write <png>-interp.png)',
  },
  json: JSON_FLAG,
  help: HELP_FLAG,
};

export const SAMPLE_FLOW_FLAGS: Record<string, FlagSpec> = {
  n: { type: 'int', help: 'points (default 5000) or images (default 64, at most 10000) to sample' },
  temperature: {
    type: 'number',
    help: 'standard deviation (> 0) of the base samples (default 1 points, 0.7 images)',
  },
  seed: { type: 'int', help: 'sampling seed, ≥ 0 (default 0)' },
  label: {
    type: 'int',
    help: 'class of every sample, for a class-conditional image flow (default: cycle through classes)',
  },
  out: {
    type: 'string',
    help: 'scatter plot or image grid PNG, never the checkpoint (default: the checkpoint path with -samples.png)',
  },
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

export const EVAL_FLOW_FLAGS: Record<string, FlagSpec> = {
  data: {
    type: 'string',
    help: 'data to score: a 2-D density for a 2-D flow, fashion-mnist for an image flow (default: what it was trained on)',
    choices: TRAIN_FLOW_DATA,
  },
  n: {
    type: 'int',
    help: 'held-out points (default 5000, at most 10000000) or test images (default and at most all 10000)',
  },
  json: JSON_RESULT_FLAG,
  help: HELP_FLAG,
};

/** Architecture flags, the runs that use them and, for the message, which those are. */
export const ARCH_FLAGS: Record<string, { uses: (model: FlowModelName, image: boolean) => boolean; for: string }> = {
  couplings: { uses: (m, img) => m === 'realnvp' && !img, for: 'realnvp on 2-D data' },
  hidden: {
    uses: (m, img) => !img || m === 'nice' || m === 'maf',
    for: 'every model on 2-D data, and nice or maf on images',
  },
  depth: {
    uses: (m, img) => !img || m === 'nice' || m === 'maf',
    for: 'every model on 2-D data, and nice or maf on images',
  },
  layers: { uses: (m) => m === 'nice' || m === 'maf' || m === 'iaf', for: 'nice, maf and iaf' },
  channels: { uses: (m, img) => img && (m === 'realnvp' || m === 'glow'), for: 'realnvp and glow on images' },
  blocks: { uses: (m, img) => img && (m === 'realnvp' || m === 'glow'), for: 'realnvp and glow on images' },
  scales: { uses: (m, img) => img && m === 'realnvp', for: 'realnvp on images' },
  norm: { uses: (m, img) => img && m === 'realnvp', for: 'realnvp on images' },
  'conv-norm': { uses: (m, img) => img && m === 'realnvp', for: 'realnvp on images' },
  levels: { uses: (m) => m === 'glow', for: 'glow' },
  'flow-steps': { uses: (m) => m === 'glow', for: 'glow' },
  conditional: { uses: (_m, img) => img, for: 'labelled data: --data fashion-mnist' },
};
