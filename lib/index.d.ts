// The package entry's types: everything `../index.d.ts` (generated) declares,
// plus the error class and guard of lib/index.js.

import type { ConfigIssue, ErrorCode } from '../index.js'

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
