/**
 * Typed errors: every failure a user can cause has a class and a stable `code`, and a message that says
 * what was wrong and what to do. Nothing is written or changed when one is thrown.
 */
export class ArflowError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** A configuration value out of range: zero hidden size, NaN learning rate, unknown option… */
export class ConfigError extends ArflowError {
  constructor(message: string) {
    super('E_CONFIG', message);
  }
}

/** Training or evaluation data that cannot be used: empty corpus, missing dataset, NaN values… */
export class DataError extends ArflowError {
  constructor(message: string) {
    super('E_DATA', message);
  }
}

/** Text containing characters outside a model's vocabulary, under the `error` policy. */
export class VocabularyError extends ArflowError {
  constructor(
    message: string,
    readonly unknown: string[],
  ) {
    super('E_VOCAB', message);
  }
}

/** A checkpoint that is truncated, not safetensors, not arflow's, or does not match the model. */
export class CheckpointError extends ArflowError {
  constructor(message: string) {
    super('E_CHECKPOINT', message);
  }
}

/** Wrong tensor shape or size passed to a kernel or model. */
export class ShapeError extends ArflowError {
  constructor(message: string) {
    super('E_SHAPE', message);
  }
}

/** Training produced a non-finite loss or gradient; parameters were left as they were. */
export class DivergenceError extends ArflowError {
  constructor(message: string) {
    super('E_DIVERGED', message);
  }
}

/** The native addon could not be loaded or lacks a requested feature (CUDA). */
export class BackendError extends ArflowError {
  constructor(message: string) {
    super('E_BACKEND', message);
  }
}
