/**
 * arflow: generative models with an exact likelihood for Node.js: character-level language models
 * (fused GRU, LSTM and tanh-RNN cells with their own backprop through time, in Rust), encoder–decoders
 * with scheduled sampling and beam search, Pixel-RNN image models (Row LSTM / Row GRU), an image
 * captioner, and normalizing flows (Real NVP, Glow, NICE, MAF, IAF) — see README.md.
 */

export type { FlowNetSpec, LayerSpec, MaskKind, NetSpec } from './backend/flownet-types.js';
export type { BackendName, DeviceName } from './backend/index.js';
export type { Likelihood, SeriesOutputs } from './backend/js/series.js';
export { nativeAvailable } from './backend/native.js';
export type { PixelOutput } from './backend/pixel-types.js';
export { CELL_KINDS, type CellKind } from './backend/types.js';
export { splitTrainVal } from './data/batches.js';
export {
  CANVAS_CELLS,
  CANVAS_SIZE,
  CAPTION_NOUNS,
  type CanvasLayout,
  type CanvasOptions,
  type CanvasSource,
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
  type CmudictOptions,
  type CmudictParse,
  cmudictAvailable,
  flattenPairs,
  loadCmudict,
  type Pair,
  type PronEntry,
  parseCmudict,
  type Split,
  type SplitOptions as CmudictSplitOptions,
  type StressMode,
  splitCmudict,
  wordFraction,
} from './data/cmudict.js';
export { CORPORA, type CorpusInfo, type CorpusName, loadCorpus, loadTextFile } from './data/corpora.js';
export {
  FASHION_MNIST_CLASSES,
  type FashionMnist,
  type FashionMnistOptions,
  type FashionMnistSplit,
  loadFashionMnist,
} from './data/fashion-mnist.js';
export { loadPairsTsv, type PairsTsvOptions, parsePairsTsv } from './data/pairs.js';
export {
  BINARIZE_TEST_SEED,
  BINARIZE_TRAIN_SEED,
  binarizeImages,
  fitPixelBaseline,
  type PixelBaseline,
  pixelBaselineNll,
} from './data/pixel-data.js';
export {
  type LoadSeriesOptions,
  loadSeries,
  loadSeriesCsv,
  Normalizer,
  type Series,
  type SeriesName,
  type SeriesSplit,
  type SplitOptions as SeriesSplitOptions,
  splitSeries,
} from './data/series.js';
export {
  BOS,
  EOS,
  PAD,
  type TokenUnknownPolicy,
  TokenVocabulary,
  type TokenVocabularyJSON,
} from './data/token-vocab.js';
export { type UnknownPolicy, Vocabulary, type VocabularyJSON } from './data/vocab.js';
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
export { DENSITIES, type Density2dInfo, type Density2dName, sample2d } from './flows/data2d.js';
export {
  bitsPerDim,
  type DequantizeOptions,
  dequantize,
  type FloatArray,
  LOGIT_ALPHA,
  type LogitResult,
  logitForward,
  logitInverse,
  logitLogDet,
  type Preprocessed,
  type PreprocessOptions,
  preprocessImages,
  quantize,
} from './flows/preprocess.js';
export { type PlotOptions, type PlotPanel, plotPanels } from './io/plot.js';
export {
  encodePng,
  type GridOptions,
  heatmapRgb,
  imageGrid,
  type PngChannels,
  type RawImage,
  savePng,
  scatterRgb,
} from './io/png.js';
export { PNG_MAX_PIXELS, readPngGray } from './io/png-read.js';
export { loadSafetensors, type SafetensorsContents, saveSafetensors, type TensorEntry } from './io/safetensors.js';
export {
  type BleuOptions,
  type BleuStatistics,
  bleuStatistics,
  closestReferenceLength,
  corpusBleu,
  exactMatch,
  type Tokens,
} from './metrics/bleu.js';
export { editDistance, phonemeErrorRate, wordErrorRate } from './metrics/edit-distance.js';
export { type BaselineOptions, baselineNll, type SeriesBaselines } from './metrics/series-baselines.js';
export {
  type CaptionEval,
  Captioner,
  type CaptionerConfig,
  type CaptionerTrainState,
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
export {
  type FlowConfig,
  type FlowCreateOptions,
  type FlowSampleOptions,
  gaussianNll,
  RealNVP,
} from './models/flow.js';
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
export { type GradReport, type GradReportOptions, gradReport } from './models/grad-report.js';
export { LetterBaseline, type LetterBaselineOptions } from './models/letter-baseline.js';
export {
  DEFAULT_PIXEL_RNN,
  type PixelCreateOptions,
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
  type RealNvpVectorConfig,
  realNvpImageSpec,
  realNvpVectorSpec,
  type Shape3,
  type VectorFlowConfig,
} from './models/presets.js';
export {
  DEFAULT_SEQ2SEQ,
  type DecodeOptions,
  Seq2Seq,
  type Seq2SeqConfig,
  type Seq2SeqEval,
  type Seq2SeqTrainState,
  type Translation,
} from './models/seq2seq.js';
export {
  type CreateSeriesOptions,
  DEFAULT_SERIES_MODEL,
  type SeriesEvalResult,
  type SeriesFitOptions,
  type SeriesInput,
  SeriesModel,
  type SeriesModelConfig,
  type SeriesSampleOptions,
  type SeriesScales,
} from './models/series.js';
export {
  type BeamOptions,
  beamSearch,
  type DecoderStep,
  type GreedyOptions,
  greedyDecode,
  type Hypothesis,
  type LengthPenalty,
} from './sample/beam.js';
export { type SamplingOptions, sampleLogits } from './sample/sampling.js';
export type { CaptionProgress, CaptionTrainOptions, CaptionTrainSummary } from './train/caption-trainer.js';
export type { TrainOptions, TrainProgress, TrainSummary } from './train/char-trainer.js';
export type { DecoderTrainOptions } from './train/decoder-loop.js';
export type { FlowTrainOptions, FlowTrainProgress, FlowTrainSummary } from './train/flow-trainer.js';
export {
  learningRate,
  type ResolvedSchedule,
  type RunOptions,
  type Schedule,
  type ScheduleOptions,
} from './train/options.js';
export {
  type Feed,
  type ResolvedScheduledSampling,
  type ScheduledSamplingOptions,
  type SsSchedule,
  teacherForcingProb,
} from './train/scheduled-sampling.js';
export type { Seq2SeqProgress, Seq2SeqTrainOptions, Seq2SeqTrainSummary } from './train/seq2seq-trainer.js';
export type { SeriesTrainProgress, SeriesTrainState, SeriesTrainSummary } from './train/series-trainer.js';
export { Rng } from './util/rng.js';
