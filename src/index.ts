/**
 * arflow: generative models with an exact likelihood for Node.js: character-level GRU language models
 * (fused GRU with its own backprop through time, in Rust) and normalizing flows (Real NVP, Glow, NICE,
 * MAF, IAF) — see README.md.
 */

export { couplingMask, type FlowBackend, type FlowShape, flowParamInfo } from './backend/flow-types.js';
export type { FlowNetSpec, LayerSpec, MaskKind, NetSpec, TensorInfo } from './backend/flownet-types.js';
export { type BackendName, createCharLmBackend, type DeviceName } from './backend/index.js';
export { checkFlowNetSpec, flowNetTensorInfo, JsFlowNet } from './backend/js/flownet.js';
export { JsCharLm } from './backend/js/index.js';
export { JsRealNvp } from './backend/js/realnvp.js';
export { loadNative, NativeCharLm, nativeAvailable } from './backend/native.js';
export { NativeRealNvp } from './backend/native-flow.js';
export { NativeFlowNet } from './backend/native-flownet.js';
export type { CharLmBackend, CharLmShape, OptimConfig, ParamInfo, StepStats } from './backend/types.js';
export { evalBatches, StreamBatcher, splitTrainVal } from './data/batches.js';
export { CORPORA, type CorpusName, loadCorpus, loadTextFile } from './data/corpora.js';
export { FASHION_MNIST_CLASSES, loadFashionMnist } from './data/fashion-mnist.js';
export { type UnknownPolicy, Vocabulary } from './data/vocab.js';
export {
  ArflowError,
  BackendError,
  CheckpointError,
  ConfigError,
  DataError,
  DivergenceError,
  ShapeError,
  VocabularyError,
} from './errors.js';
export { DENSITIES, type Density2dName, sample2d } from './flows/data2d.js';
export {
  bitsPerDim,
  dequantize,
  LOGIT_ALPHA,
  logitForward,
  logitInverse,
  preprocessImages,
} from './flows/preprocess.js';
export { encodePng, heatmapRgb, imageGrid, savePng, scatterRgb } from './io/png.js';
export { loadSafetensors, saveSafetensors } from './io/safetensors.js';
export {
  CharLM,
  type CharLMConfig,
  type CreateOptions,
  DEFAULT_CHAR_LM,
  type EvalResult,
  type SampleOptions,
  type TrainState,
} from './models/char-lm.js';
export { type FlowConfig, gaussianNll, RealNVP } from './models/flow.js';
export {
  type ContextInput,
  Flow,
  type FlowNetCondition,
  type FlowNetCreateOptions,
  type FlowNetSampleOptions,
  type FlowNetTrainOptions,
  Glow,
  IAF,
  MAF,
  NICE,
  RealNVPImage,
} from './models/flownet.js';
export {
  type GlowConfig,
  glowSpec,
  iafSpec,
  mafSpec,
  niceSpec,
  type RealNvpImageConfig,
  realNvpImageSpec,
  type VectorFlowConfig,
} from './models/presets.js';
export { type SamplingOptions, sampleLogits } from './sample/sampling.js';
export type { TrainOptions, TrainProgress, TrainSummary } from './train/char-trainer.js';
export { learningRate, type Schedule, type ScheduleOptions } from './train/options.js';
export { Rng } from './util/rng.js';
