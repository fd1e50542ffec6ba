'use strict'
// Deadlines and cancellation for the lookup calls (`getOrGenerate`,
// `getMatrix`, `get`): `{ signal?: AbortSignal, timeoutMs?: number }` as a last
// argument. They bound how long the caller waits, not the work: a generation
// that other callers share goes on and is stored, and a lookup under way
// finishes in the background (its result is dropped). That is why this lives
// on the JS side: a caller stops waiting at once, whatever the runtime's
// threads are doing.

const OPTION_NAMES = ['signal', 'timeoutMs']
/** setTimeout's own limit (about 24.8 days); beyond it Node fires at once. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1

function codedError(code, message) {
  const e = new Error(message)
  e.code = code
  return e
}

/** The options, checked; a coded error when they are not what is documented. */
function readOptions(options) {
  if (options === undefined || options === null) return {}
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw codedError('E_INVALID_ARGUMENT', `call options must be an object, got ${typeof options}`)
  }
  for (const name of Object.keys(options)) {
    if (!OPTION_NAMES.includes(name)) {
      throw codedError('E_INVALID_ARGUMENT', `${name}: not a call option; the options are ${OPTION_NAMES.join(', ')}`)
    }
  }
  const { signal, timeoutMs } = options
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw codedError('E_INVALID_ARGUMENT', `signal: expected an AbortSignal, got ${typeof signal}`)
  }
  if (timeoutMs !== undefined && !(Number.isFinite(timeoutMs) && timeoutMs > 0 && timeoutMs <= MAX_TIMEOUT_MS)) {
    throw codedError('E_INVALID_ARGUMENT', `timeoutMs: expected a number above 0 and at most ${MAX_TIMEOUT_MS}, got ${String(timeoutMs)}`)
  }
  return { signal, timeoutMs }
}

function abortedError(signal) {
  const reason = signal.reason instanceof Error ? signal.reason.message : String(signal.reason)
  const e = codedError('E_ABORTED', `the call was aborted (${reason}); work it shares with other callers goes on`)
  e.cause = signal.reason
  return e
}

/** `start()`'s promise, settled early by the signal or the timeout. Never throws. */
function withDeadline(start, options) {
  let opts
  try {
    opts = readOptions(options)
  } catch (e) {
    return Promise.reject(e)
  }
  const { signal, timeoutMs } = opts
  if (!signal && timeoutMs === undefined) return start()
  if (signal?.aborted) return Promise.reject(abortedError(signal))
  return new Promise((resolve, reject) => {
    let timer
    const onAbort = () => {
      settle()
      reject(abortedError(signal))
    }
    // Every path removes the listener and the timer, so a long-lived signal
    // (a server's shutdown signal, say) does not collect one per call.
    const settle = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        settle()
        reject(codedError('E_TIMEOUT', `no result within timeoutMs (${timeoutMs} ms); work it shares with other callers goes on`))
      }, timeoutMs)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    let pending
    try {
      pending = start()
    } catch (e) {
      pending = Promise.reject(e)
    }
    pending.then(
      (value) => {
        settle()
        resolve(value)
      },
      (err) => {
        settle()
        reject(err)
      },
    )
  })
}

/** Gives the class's lookup calls their optional last argument. */
function addDeadlines(ScenarioMatrixCache) {
  const proto = ScenarioMatrixCache.prototype
  for (const name of ['getOrGenerate', 'getMatrix', 'get']) {
    const call = proto[name]
    Object.defineProperty(proto, name, {
      value: function (arg, options) {
        return withDeadline(() => call.call(this, arg), options)
      },
      writable: true,
      configurable: true,
    })
  }
}

module.exports = { addDeadlines }
