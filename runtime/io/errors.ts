/**
 * Error types of the checkpoint readers. Every message names the file (and the tensor or config key) so a user
 * holding a broken download knows exactly which file to fetch again.
 */

/** A checkpoint file is malformed, truncated, or does not match the config. */
export class CheckpointError extends Error {
  constructor(
    message: string,
    readonly file?: string,
    readonly tensor?: string,
  ) {
    super(message);
    this.name = 'CheckpointError';
  }
}

/** A torch pickle uses something outside the restricted subset we interpret (never executed). */
export class PickleError extends CheckpointError {
  constructor(message: string, file?: string) {
    super(message, file);
    this.name = 'PickleError';
  }
}

/** A locret bundle is corrupt, truncated or of an unknown format version. */
export class BundleError extends CheckpointError {
  constructor(message: string, file?: string, tensor?: string) {
    super(message, file, tensor);
    this.name = 'BundleError';
  }
}

/** A Hugging Face config asks for something locret would compute wrong; `key` is the offending config key. */
export class ConfigError extends Error {
  constructor(
    message: string,
    readonly key?: string,
    readonly file?: string,
  ) {
    super(file ? `${file}: ${message}` : message);
    this.name = 'ConfigError';
  }
}
