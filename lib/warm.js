'use strict'
// `cache.warm(configs, { concurrency, onProgress })`: gets or generates many
// configs with a bounded number of calls in flight, built on the addon's
// `ensure` (no matrix bytes cross into JavaScript). One bad config never
// rejects the whole: each failure is reported by its index and the rest are
// warmed. Only a wrong `configs` or options argument rejects (with a coded
// E_INVALID_ARGUMENT, like every other promise of the package; never a
// synchronous throw).
//
// onProgress is called on the JS thread once per config, as each settles, with
// `done` counting 1..total. An exception it throws (or a promise it returns
// that rejects) does not stop warming or change the result: the first one
// becomes a process warning (like an `onEvent` listener's), later ones are
// ignored, and onProgress keeps being called.

const os = require('node:os')

const OPTION_NAMES = ['concurrency', 'onProgress']

function codedError(code, message) {
  const e = new Error(message)
  e.code = code
  return e
}

function describe(value) {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)
  if (typeof value === 'number') return String(value)
  return typeof value
}

/** The options, checked: `{ concurrency, onProgress }`; throws a coded error otherwise. */
function readOptions(options) {
  if (options === undefined || options === null) return { concurrency: defaultConcurrency(), onProgress: undefined }
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw codedError('E_INVALID_ARGUMENT', `warm options must be an object, got ${describe(options)}`)
  }
  for (const name of Object.keys(options)) {
    if (!OPTION_NAMES.includes(name)) {
      throw codedError('E_INVALID_ARGUMENT', `${name}: not a warm option; the options are ${OPTION_NAMES.join(', ')}`)
    }
  }
  let { concurrency, onProgress } = options
  if (concurrency === undefined) {
    concurrency = defaultConcurrency()
  } else if (!(Number.isSafeInteger(concurrency) && concurrency >= 1)) {
    throw codedError('E_INVALID_ARGUMENT', `concurrency: expected an integer of at least 1, got ${describe(concurrency)}`)
  }
  if (onProgress !== undefined && typeof onProgress !== 'function') {
    throw codedError('E_INVALID_ARGUMENT', `onProgress: expected a function, got ${describe(onProgress)}`)
  }
  return { concurrency, onProgress }
}

function defaultConcurrency() {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length || 1
}

/** `{code, message}` of whatever a call rejected with (uncoded errors become E_INTERNAL). */
function failure(err) {
  const code = err && typeof err.code === 'string' && err.code.startsWith('E_') ? err.code : 'E_INTERNAL'
  const message = err instanceof Error ? err.message : String(err)
  const out = { code, message }
  if (err && Array.isArray(err.issues)) out.issues = err.issues
  return out
}

async function warm(configs, options) {
  if (!Array.isArray(configs)) {
    throw codedError('E_INVALID_ARGUMENT', `configs: expected an array of configs, got ${describe(configs)}`)
  }
  const { concurrency, onProgress } = readOptions(options)
  const started = performance.now()
  const total = configs.length
  const failed = []
  let generated = 0
  let hits = 0
  let done = 0
  let warned = false

  const warnOnce = (err) => {
    if (warned) return
    warned = true
    const detail = err instanceof Error ? err.message : String(err)
    process.emitWarning(`warm: onProgress threw (${detail}); warming goes on and later exceptions are ignored`, {
      code: 'SCENARIO_MATRIX_CACHE_ON_PROGRESS',
    })
  }
  const report = (progress) => {
    if (!onProgress) return
    try {
      const r = onProgress(progress)
      if (r && typeof r.then === 'function') r.then(undefined, warnOnce)
    } catch (err) {
      warnOnce(err)
    }
  }

  let next = 0
  const worker = async () => {
    while (next < total) {
      const index = next++
      let progress
      try {
        const { source, joined } = await this.ensure(configs[index])
        // A call that joined another's generation found the matrix made, not by it.
        if (source === 'generated' && !joined) generated++
        else hits++
        progress = { done: ++done, total, index, source, joined }
      } catch (err) {
        const f = failure(err)
        failed.push({ index, ...f })
        progress = { done: ++done, total, index, error: { code: f.code, message: f.message } }
      }
      report(progress)
    }
  }
  const workers = []
  for (let i = 0; i < Math.min(concurrency, total); i++) workers.push(worker())
  await Promise.all(workers)

  failed.sort((a, b) => a.index - b.index)
  return { total, generated, hits, failed, durationMs: performance.now() - started }
}

/** Adds `warm` to the class (called by lib/index.js). */
function addWarm(ScenarioMatrixCache) {
  Object.defineProperty(ScenarioMatrixCache.prototype, 'warm', {
    value: warm,
    writable: true,
    configurable: true,
  })
}

module.exports = { addWarm, warm }
