'use strict'
// The package entry (package.json `main`): everything the generated loader
// `../index.js` exports, plus `ScenarioMatrixCacheError` and
// `isScenarioMatrixCacheError`. The addon's errors are plain `Error`s carrying
// a `code`, so the class recognises them instead of constructing them.
//
// Each export is its own `exports.X = ...` line: that is the form Node's
// CommonJS-to-ESM detection sees, so `import { X } from 'scenario-matrix-cache'`
// works. __test__/types.spec.ts fails when a binding export is missing here.

const binding = require('../index.js')
const { addDeadlines } = require('./deadline.js')
const { addWarm } = require('./warm.js')

// `getOrGenerate`, `getMatrix` and `get` take `{ signal, timeoutMs }` (lib/deadline.js).
addDeadlines(binding.ScenarioMatrixCache)
// `warm(configs, { concurrency, onProgress })` (lib/warm.js), built on `ensure`.
addWarm(binding.ScenarioMatrixCache)

/** Every `code` the addon puts on its errors (`ErrorCode` in types/header.d.ts). */
const ERROR_CODES = new Set([
  'E_CONFIG',
  'E_INVALID_ARGUMENT',
  'E_CORRUPT',
  'E_DURABLE_UNAVAILABLE',
  'E_DURABLE_WRITE',
  'E_INVALIDATION_INCOMPLETE',
  'E_ABORTED',
  'E_TIMEOUT',
  'E_MIGRATION_BLOCKED',
  'E_CLOSED',
  'E_INTERNAL',
])

/** True for any `Error` whose `code` is one of this package's codes. */
function isScenarioMatrixCacheError(value) {
  return value instanceof Error && ERROR_CODES.has(value.code)
}

class ScenarioMatrixCacheError extends Error {
  /** For callers' own tests and doubles; the addon never calls it. */
  constructor(code, message, issues) {
    super(message)
    this.code = code
    if (issues !== undefined) this.issues = issues
  }

  /** `err instanceof ScenarioMatrixCacheError` is the guard. */
  static [Symbol.hasInstance](value) {
    return isScenarioMatrixCacheError(value)
  }
}

exports.ScenarioMatrixCacheError = ScenarioMatrixCacheError
exports.isScenarioMatrixCacheError = isScenarioMatrixCacheError

exports.ScenarioMatrixCache = binding.ScenarioMatrixCache
exports.canonicalKey = binding.canonicalKey
exports.compressMatrix = binding.compressMatrix
exports.decompressMatrix = binding.decompressMatrix
exports.generateScenarios = binding.generateScenarios
exports.validateScenarioConfig = binding.validateScenarioConfig
exports.MatrixCodec = binding.MatrixCodec
exports.MatrixLayout = binding.MatrixLayout
exports.MatrixSource = binding.MatrixSource
exports.__napiBindingTarget = binding.__napiBindingTarget
