/**
 * arflow: generative models with an exact likelihood for Node.js: character-level language models
 * (fused GRU, LSTM and tanh-RNN cells with their own backprop through time, in Rust), encoder–decoders
 * with scheduled sampling and beam search, Pixel-RNN image models (Row LSTM / Row GRU), an image
 * captioner, and normalizing flows (Real NVP, Glow, NICE, MAF, IAF) — see README.md.
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
export { NativeSeq2Seq, type Seq2SeqBatch, type Seq2SeqShape } from './backend/native-seq2seq.js';
export {
  CELL_KINDS,
  type CellKind,
  type CharLmBackend,
  type CharLmShape,
  gateCount,
  type OptimConfig,
  type ParamInfo,
  type StepStats,
  stateWidth,
} from './backend/types.js';
export { evalBatches, StreamBatcher, splitTrainVal } from './data/batches.js';
export {
  CANVAS_CELLS,
  CANVAS_SIZE,
  CAPTION_NOUNS,
  type CanvasLayout,
  type CaptionCanvas,
  type CaptionCanvases,
  captionPhrasings,
  captionVocabulary,
  captionWords,
  loadCaptionCanvases,
  makeCanvases,
  mostCommonCaptionBaseline,
  parseCaption,
} from './data/canvases.js';
export {
  CMUDICT_PHONEMES,
  cmudictAvailable,
  flattenPairs,
  loadCmudict,
  type Pair,
  type PronEntry,
  parseCmudict,
  type StressMode,
  splitCmudict,
} from './data/cmudict.js';
export { CORPORA, type CorpusName, loadCorpus, loadTextFile } from './data/corpora.js';
export { FASHION_MNIST_CLASSES, loadFashionMnist } from './data/fashion-mnist.js';
export { loadPairsTsv, parsePairsTsv } from './data/pairs.js';
export {
  BINARIZE_TEST_SEED,
  BINARIZE_TRAIN_SEED,
  binarizeImages,
  fitPixelBaseline,
  type PixelBaseline,
  pixelBaselineNll,
} from './data/pixel-data.js';
export { BucketBatcher, type EncodedPair, makeBatch } from './data/seq2seq-batches.js';
export { loadSeries, loadSeriesCsv, Normalizer, splitSeries } from './data/series.js';
export { BOS, EOS, PAD, TokenVocabulary } from './data/token-vocab.js';
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
export { plotPanels } from './io/plot.js';
export { encodePng, heatmapRgb, imageGrid, savePng, scatterRgb } from './io/png.js';
export { expectSize, PNG_MAX_PIXELS, readPngGray } from './io/png-read.js';
export { loadSafetensors, saveSafetensors } from './io/safetensors.js';
export { bleuStatistics, closestReferenceLength, corpusBleu, exactMatch } from './metrics/bleu.js';
export { editDistance, phonemeErrorRate, wordErrorRate } from './metrics/edit-distance.js';
export { baselineNll } from './metrics/series-baselines.js';
export {
  type CaptionEval,
  Captioner,
  type CaptionerConfig,
  type CaptionOptions,
  type CaptionResult,
  DEFAULT_CAPTIONER,
} from './models/captioner.js';
export {
  CharLM,
  type CharLMConfig,
  type CreateOptions,
  DEFAULT_CHAR_LM,
  type EvalResult,
  H0_POLICIES,
  type H0Policy,
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
export { type GradReport, gradReport } from './models/grad-report.js';
export { LetterBaseline } from './models/letter-baseline.js';
export {
  DEFAULT_PIXEL_RNN,
  type PixelEvalResult,
  PixelRNN,
  type PixelRNNConfig,
  type PixelSampleOptions,
  type PixelTrainOptions,
} from './models/pixel-rnn.js';
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
export {
  DEFAULT_SEQ2SEQ,
  type DecodeOptions,
  Seq2Seq,
  type Seq2SeqConfig,
  type Seq2SeqEval,
  type Translation,
} from './models/seq2seq.js';
export {
  DEFAULT_SERIES_MODEL,
  type SeriesEvalResult,
  SeriesModel,
  type SeriesModelConfig,
  type SeriesSampleOptions,
} from './models/series.js';
export { type BeamOptions, beamSearch, type DecoderStep, greedyDecode, type Hypothesis } from './sample/beam.js';
export { type SamplingOptions, sampleLogits } from './sample/sampling.js';
export type { TrainOptions, TrainProgress, TrainSummary } from './train/char-trainer.js';
export { learningRate, type Schedule, type ScheduleOptions } from './train/options.js';
export {
  coinFlips,
  type Feed,
  type ScheduledSamplingOptions,
  type SsSchedule,
  teacherForcingProb,
} from './train/scheduled-sampling.js';
export type { Seq2SeqProgress, Seq2SeqTrainOptions, Seq2SeqTrainSummary } from './train/seq2seq-trainer.js';
export { Rng } from './util/rng.js';
