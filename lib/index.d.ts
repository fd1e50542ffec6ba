// The package entry's types: everything `../index.d.ts` (generated) declares,
// plus the error class and guard of lib/index.js.

import type { ConfigIssue, ErrorCode, MatrixSource, ScenarioConfig } from '../index.js'

export * from '../index.js'

/**
 * What every error this package throws or rejects with is. The addon's errors are
 * plain `Error`s, so this class does not construct them: `instanceof` recognises any
 * `Error` whose `code` is an `ErrorCode`, like `isScenarioMatrixCacheError`.
 */
export declare class ScenarioMatrixCacheError extends Error {
  /** For callers' own tests and doubles; the addon never calls it. */
  constructor(code: ErrorCode, message: string, issues?: Array<ConfigIssue>)
  code: ErrorCode
  /** With `E_CONFIG` only: every problem of the config, with its path. */
  issues?: Array<ConfigIssue>
}

/** True for any `Error` whose `code` is one of this package's codes (`catch (e: unknown)`). */
export declare function isScenarioMatrixCacheError(value: unknown): value is ScenarioMatrixCacheError

/** What `warm`'s `onProgress` receives, once per config as it settles. */
export interface WarmProgress {
  /** Configs settled so far, this one included: 1, 2, ... up to `total`. */
  done: number
  total: number
  /** This config's index in the array given to `warm`. */
  index: number
  /** Where its matrix came from (`generated` on a miss); absent when it failed. */
  source?: MatrixSource
  /** It waited for a lookup or generation another call of this process had started
   * (with `source: 'generated'`: counted in `hits`, not `generated`); absent when it failed. */
  joined?: boolean
  /** Why it failed; absent when it succeeded. */
  error?: { code: ErrorCode; message: string }
}

export interface WarmOptions {
  /** Calls in flight at once, an integer of at least 1. Default `os.availableParallelism()`. */
  concurrency?: number
  /** Called once per config. An exception it throws does not stop warming: the first one
   * becomes a process warning, later ones are ignored. */
  onProgress?: (progress: WarmProgress) => void
}

export interface WarmResult {
  total: number
  /** Configs whose matrix this call generated (a miss in every tier). A config listed twice
   * whose copies share one generation counts once here and once in `hits`. */
  generated: number
  /** Configs a tier already held. `generated + hits + failed.length === total`. */
  hits: number
  /** Each config that failed, by index (ascending); `issues` with `E_CONFIG`. */
  failed: Array<{ index: number; code: ErrorCode; message: string; issues?: Array<ConfigIssue> }>
  durationMs: number
}

declare module '../index.js' {
  interface ScenarioMatrixCache {
    /**
     * Gets or generates every config (no matrix is handed to JavaScript), at most
     * `concurrency` at a time. Never rejects because of a config: failures are listed in
     * `failed` and the others are warmed. Rejects with `E_INVALID_ARGUMENT` only when
     * `configs` is not an array or an option is wrong (lib/warm.js).
     */
    warm(configs: Array<ScenarioConfig>, options?: WarmOptions): Promise<WarmResult>
  }
}
