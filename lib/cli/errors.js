'use strict'
// How the CLI fails: one line on stderr, `error E_CODE: message (what to fix)`,
// and an exit code (0 fine, 1 the work failed or found problems, 2 a usage
// mistake). Codes are the addon's (`E_CONFIG`, `E_DURABLE_UNAVAILABLE`, ...)
// plus a few of the CLI's own: E_USAGE (arguments), E_INPUT (a file that
// cannot be read or is not JSON), E_NOT_FOUND (a key no tier holds).
// No stack trace for any of them; an uncoded error is a bug, shown as
// E_INTERNAL, with its stack only when SCENARIO_MATRIX_CACHE_DEBUG is set.

const EXIT_FAILURE = 1
const EXIT_USAGE = 2

class CliError extends Error {
  /** `hint` says what to fix; `exitCode` 1 (failure) or 2 (usage). */
  constructor(code, message, { hint, exitCode = EXIT_FAILURE } = {}) {
    super(message)
    this.code = code
    this.hint = hint
    this.exitCode = exitCode
  }
}

const usageError = (message, hint) => new CliError('E_USAGE', message, { hint, exitCode: EXIT_USAGE })

/** What to do about each of the addon's codes, when its message alone does not say. */
const HINTS = {
  E_CONFIG: 'fix the config file; README "Config" lists the rules',
  E_INVALID_ARGUMENT: 'check the arguments and the --database-url / --redis-url values',
  E_CORRUPT: 'run `scenario-matrix-cache verify --repair`, or invalidate the key',
  E_DURABLE_UNAVAILABLE: 'check --database-url / DATABASE_URL and that the database is up',
  E_DURABLE_WRITE: 'check that the database is up and writable, then retry',
  E_INVALIDATION_INCOMPLETE: 'Redis could not be reached; retry once it is back',
  E_MIGRATION_BLOCKED: 'another session holds the table; retry, or pass --no-migrations after migrating at deploy time',
  E_TIMEOUT: 'retry; the work goes on in the background',
  E_ABORTED: 'the call was aborted',
  E_CLOSED: 'a bug in the CLI: please report it',
  E_INTERNAL: 'a bug: please report it with the command you ran',
}

/** One line: newlines and runs of blanks in a message become single spaces. */
function oneLine(text) {
  return String(text).replace(/\s*\n\s*/g, '; ').replace(/[ \t]+/g, ' ').trim()
}

/** The `error ...` line for any thrown value, and the exit code it means. */
function describeError(err) {
  if (err instanceof CliError) {
    return { line: formatLine(err.code, err.message, err.hint), exitCode: err.exitCode }
  }
  if (err instanceof Error && typeof err.code === 'string' && /^E_[A-Z_]+$/.test(err.code)) {
    return { line: formatLine(err.code, err.message, HINTS[err.code]), exitCode: EXIT_FAILURE }
  }
  const message = err instanceof Error ? err.message : String(err)
  return {
    line: formatLine('E_INTERNAL', message, 'a bug in the CLI: rerun with SCENARIO_MATRIX_CACHE_DEBUG=1 for the stack trace and report it'),
    exitCode: EXIT_FAILURE,
    stack: err instanceof Error ? err.stack : undefined,
  }
}

function formatLine(code, message, hint) {
  return `error ${code}: ${oneLine(message)}${hint ? ` (${hint})` : ''}`
}

module.exports = { CliError, usageError, describeError, oneLine, EXIT_FAILURE, EXIT_USAGE }
