'use strict'
// The `scenario-matrix-cache` command (bin/scenario-matrix-cache.js): argument
// parsing (commander) and output only; every command is a call or two on the
// library (lib/index.js). Results go to stdout (JSON with --json, nothing
// else there), progress and notes to stderr, failures as one `error E_CODE:
// ...` line on stderr (lib/cli/errors.js). Passwords are never printed: the
// URLs given are handed to the addon, which redacts them in its messages, and
// never echoed here.

const fs = require('node:fs')
const path = require('node:path')
const { Command, InvalidArgumentError } = require('commander')

const { CliError, usageError, describeError, EXIT_FAILURE, EXIT_USAGE } = require('./errors.js')
const { formatOf, writeMatrix } = require('./export.js')
const { readConfig, readMany } = require('./inputs.js')
const { createProgress } = require('./progress.js')
const fmt = require('./format.js')

const NAME = 'scenario-matrix-cache'
const DEFAULT_SQLITE = './.scenario-matrix-cache/cache.db'

// ---- plumbing ---------------------------------------------------------------

let library
/** The package entry, loaded on first use so `--help` works without the addon. */
function lib() {
  if (!library) {
    try {
      library = require('../index.js')
    } catch (err) {
      const first = String(err && err.message).split('\n')[0]
      throw new CliError('E_ADDON', `cannot load the native addon: ${first}`, {
        hint: 'reinstall the package (npm ci) on this platform; its native binary is missing or does not fit',
      })
    }
  }
  return library
}

const print = (text = '') => process.stdout.write(`${text}\n`)
const printJson = (value) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`)
const note = (text) => process.stderr.write(`${text}\n`)

/** Opens the cache from the global options; the memory tier is off (one-shot process). */
async function openCache(opts) {
  const { ScenarioMatrixCache } = lib()
  if (opts.databaseUrl === undefined && !process.env.DATABASE_URL) {
    note(`note: no --database-url or DATABASE_URL given: using SQLite at ${DEFAULT_SQLITE}`)
  }
  return ScenarioMatrixCache.open({
    databaseUrl: opts.databaseUrl,
    redisUrl: opts.redisUrl,
    redisClusterNodes: opts.redisClusterNodes?.split(',').map((s) => s.trim()).filter(Boolean),
    redisKeyPrefix: opts.redisKeyPrefix,
    runMigrations: opts.migrations,
    memoryMaxBytes: 0,
  })
}

/** Runs `fn(cache)` and closes the cache whatever happens. */
async function withCache(opts, fn) {
  const cache = await openCache(opts)
  try {
    return await fn(cache)
  } finally {
    await cache.close().catch(() => {})
  }
}

/** A config error names the file it came from. */
function inFile(file, err) {
  if (err && err.code === 'E_CONFIG' && !(err instanceof CliError)) {
    err.message = `${file === '-' ? 'stdin' : file}: ${err.message}`
  }
  return err
}

function parseCount(name) {
  return (value) => {
    const n = Number(value)
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
      throw new InvalidArgumentError(`expected a whole number of at least 1 for ${name}`)
    }
    return n
  }
}

const UNITS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }
/** `30d`, `12h`, `90m`, `45s`, `2w` to milliseconds. */
function parseAge(value) {
  const m = /^(\d+(?:\.\d+)?)([smhdw])$/.exec(String(value).trim())
  const msValue = m ? Number(m[1]) * UNITS[m[2]] : NaN
  if (!(msValue > 0) || !Number.isSafeInteger(Math.round(msValue))) {
    throw usageError(`--older-than ${JSON.stringify(String(value))}: not an age`, 'give a positive age such as 30d, 12h, 90m, 45s or 2w')
  }
  return Math.round(msValue)
}

/** A usage error now, before any work, when the folder of an output file does not exist. */
function checkOutputFolder(option, file) {
  const folder = path.dirname(path.resolve(file))
  if (!fs.existsSync(folder) || !fs.statSync(folder).isDirectory()) {
    throw usageError(`${option} ${JSON.stringify(file)}: no folder ${folder}`, 'create the folder first, or write elsewhere')
  }
}

/** Writes a text file beside its target and renames it over it. */
function writeText(file, text) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`)
  try {
    fs.writeFileSync(tmp, text)
    fs.renameSync(tmp, file)
  } catch (err) {
    fs.rmSync(tmp, { force: true })
    throw new CliError('E_OUTPUT', `cannot write ${file}: ${err.message}`, { hint: 'check the path and that its folder exists and is writable' })
  }
  return Buffer.byteLength(text)
}

/** Runs `fn` over `items` with at most `limit` calls in flight. */
async function eachLimited(items, limit, fn) {
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      await fn(items[i], i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}

const cores = () => (typeof require('node:os').availableParallelism === 'function' ? require('node:os').availableParallelism() : 1)

let activeProgress
/** A progress display that Ctrl-C stops cleanly. */
function startProgress(options) {
  activeProgress = createProgress(options)
  return activeProgress
}
function stopProgress() {
  if (activeProgress) activeProgress.stop()
  activeProgress = undefined
}

// ---- commands ---------------------------------------------------------------

async function keyCommand(file, opts) {
  const config = readConfig(file)
  let key
  try {
    key = lib().canonicalKey(config)
  } catch (err) {
    throw inFile(file, err)
  }
  if (opts.json) printJson({ key })
  else print(key)
}

async function getCommand(file, opts, cmd) {
  const format = opts.out === undefined ? undefined : formatOf(opts.out)
  if (opts.out !== undefined) checkOutputFolder('--out', opts.out)
  const config = readConfig(file)
  try {
    lib().validateScenarioConfig(config)
  } catch (err) {
    throw inFile(file, err)
  }
  await withCache(cmd.optsWithGlobals(), async (cache) => {
    const started = performance.now()
    const result = await cache.getMatrix(config)
    const latencyMs = performance.now() - started
    const { matrix, numScenarios, numBuckets, metadata } = result
    const names = metadata.bucketNames ?? config.buckets.map((b) => b.name)
    let written = null
    if (format) {
      const size = writeMatrix(opts.out, format, matrix, numScenarios, numBuckets, names)
      written = { path: opts.out, format, bytes: size }
    }
    if (opts.json) {
      printJson({
        key: metadata.configHash,
        source: metadata.source,
        latencyMs: Math.round(latencyMs * 100) / 100,
        numScenarios,
        numBuckets,
        bytes: matrix.byteLength,
        bucketNames: names,
        out: written,
      })
      return
    }
    const rows = [
      ['key', metadata.configHash],
      ['source', metadata.source],
      ['latency', fmt.ms(latencyMs)],
      ['matrix', `${fmt.int(numScenarios)} scenarios x ${numBuckets} buckets, float32 (${fmt.bytes(matrix.byteLength)})`],
    ]
    if (written) {
      const what = { npy: `NumPy, shape (${numScenarios}, ${numBuckets})`, csv: 'CSV, a header row of bucket names', f32: 'raw little-endian float32, row-major' }[format]
      rows.push(['wrote', `${written.path} (${fmt.bytes(written.bytes)}, ${what})`])
    }
    print(fmt.fields(rows))
  })
}

async function warmCommand(source, opts, cmd) {
  const entries = readMany(source)
  const good = []
  const failures = []
  entries.forEach((e, i) => {
    if (e.error) failures.push({ entry: i, code: 'E_INPUT', message: e.error })
    else good.push(i)
  })
  const concurrency = opts.concurrency ?? cores()
  const result = await withCache(cmd.optsWithGlobals(), async (cache) => {
    const counts = { generated: 0, hits: 0, failed: failures.length }
    const progress = startProgress({
      label: 'warm',
      total: entries.length,
      detail: (c) => `${c.generated ?? 0} new, ${c.hits ?? 0} cached, ${c.failed ?? 0} failed`,
    })
    const parseFailures = failures.length
    progress.update(parseFailures, counts)
    try {
      return await cache.warm(
        good.map((i) => entries[i].config),
        {
          concurrency,
          onProgress: (p) => {
            if (p.error) counts.failed++
            else if (p.source === 'generated' && !p.joined) counts.generated++
            else counts.hits++
            progress.update(parseFailures + p.done, counts)
          },
        },
      )
    } finally {
      stopProgress()
    }
  })
  for (const f of result.failed) failures.push({ entry: good[f.index], code: f.code, message: f.message, issues: f.issues })
  failures.sort((a, b) => a.entry - b.entry)
  const failed = failures.map((f) => {
    const e = entries[f.entry]
    const where = e.line !== undefined ? { line: e.line } : { file: e.file }
    return { ...where, code: f.code, message: f.message, ...(f.issues ? { issues: f.issues } : {}) }
  })
  if (opts.json) {
    printJson({
      total: entries.length,
      generated: result.generated,
      hits: result.hits,
      failed,
      durationMs: Math.round(result.durationMs),
    })
  } else {
    const ok = result.generated + result.hits
    print(
      `warmed ${fmt.int(ok)} of ${fmt.int(entries.length)} configs in ${fmt.ms(result.durationMs)}: ` +
        `${fmt.int(result.generated)} generated, ${fmt.int(result.hits)} already cached, ${fmt.int(failed.length)} failed`,
    )
    for (const [i, f] of failures.entries()) {
      print(`  ${entries[f.entry].label}: ${f.code}: ${failed[i].message}`)
    }
  }
  if (failed.length) process.exitCode = EXIT_FAILURE
}

const PROBLEM_STATUSES = ['legacy', 'damaged', 'unreadable', 'missing']

async function verifyCommand(opts, cmd) {
  const concurrency = opts.concurrency ?? cores()
  const summary = await withCache(cmd.optsWithGlobals(), async (cache) => {
    const started = performance.now()
    const report = await cache.storeReport()
    const counts = { ok: 0, legacy: 0, damaged: 0, unreadable: 0, missing: 0 }
    const repaired = { rewritten: 0, regenerated: 0 }
    const problems = []
    let done = 0
    let total = report.rows
    const bad = () => counts.damaged + counts.unreadable
    const progress = startProgress({
      label: 'verify',
      total,
      detail: () => `${counts.ok} ok, ${counts.legacy} legacy, ${bad()} bad`,
    })
    try {
      let after
      for (;;) {
        const keys = await cache.rowKeys(after === undefined ? { limit: 200 } : { after, limit: 200 })
        if (keys.length === 0) break
        await eachLimited(keys, concurrency, async (key) => {
          const r = await cache.verifyRow(key, { repair: Boolean(opts.repair) })
          counts[r.status] = (counts[r.status] ?? 0) + 1
          if (r.repaired) repaired[r.repaired] = (repaired[r.repaired] ?? 0) + 1
          if (r.status !== 'ok') problems.push(r)
          done++
          if (done > total) {
            total = done
            progress.setTotal(total)
          }
          progress.update(done, {})
        })
        after = keys[keys.length - 1]
        if (keys.length < 200) break
      }
      if (done !== total) progress.setTotal(done)
      progress.update(done, {})
    } finally {
      stopProgress()
    }
    problems.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    return { store: report.store, rows: done, counts, repaired, problems, durationMs: performance.now() - started }
  })
  const { counts, repaired, problems } = summary
  const remaining = problems.filter((p) => (p.status === 'damaged' || p.status === 'unreadable') && !p.repaired)
  const repairFailed = problems.filter((p) => p.repairError).length
  if (opts.json) {
    printJson({
      store: summary.store,
      rows: summary.rows,
      durationMs: Math.round(summary.durationMs),
      ...counts,
      repaired,
      repairFailed,
      remaining: remaining.length,
      problems,
    })
  } else {
    print(`verified ${fmt.count(summary.rows, 'row')} of the ${summary.store} store in ${fmt.ms(summary.durationMs)}`)
    const fixedBy = (status) => problems.filter((p) => p.status === status && p.repaired).length
    const line = (label, n, extra = '') => `  ${label.padEnd(11)} ${fmt.int(n).padStart(9)}${extra ? `  ${extra}` : ''}`
    print(line('ok', counts.ok))
    for (const status of PROBLEM_STATUSES) {
      const n = counts[status]
      let extra = ''
      if (status === 'missing' && n) extra = 'deleted while verifying'
      else if (n && opts.repair && status !== 'missing') extra = `${fmt.int(fixedBy(status))} repaired`
      print(line(status, n, extra))
    }
    const shown = problems.filter((p) => p.status !== 'missing')
    if (shown.length) {
      print()
      for (const p of shown) {
        print(`${p.status.padEnd(11)} ${p.key}`)
        if (p.detail) print(fmt.wrap(p.detail, 12))
        if (p.repaired) print(fmt.wrap(`repaired: ${p.repaired}`, 12))
        if (p.repairError) print(fmt.wrap(`repair failed: ${p.repairError.code}: ${p.repairError.message}`, 12))
      }
    }
    const legacyLeft = problems.filter((p) => p.status === 'legacy' && !p.repaired).length
    if (remaining.length || legacyLeft) print()
    if (remaining.length) {
      print(
        opts.repair
          ? fmt.wrap(`${fmt.count(remaining.length, 'damaged or unreadable row')} left that --repair could not fix: invalidate each key (the next call with its config regenerates it)`, 0)
          : `${fmt.count(remaining.length, 'damaged or unreadable row')}; to repair what can be:\n  ${NAME} verify --repair`,
      )
    }
    if (legacyLeft && !opts.repair) {
      print(`${fmt.count(legacyLeft, 'legacy row')} (TypeScript-era, readable); to rewrite them in the current format:`)
      print(`  ${NAME} verify --repair`)
    }
  }
  if (remaining.length) process.exitCode = EXIT_FAILURE
}

async function statsCommand(opts, cmd) {
  const globals = cmd.optsWithGlobals()
  const report = await withCache(globals, (cache) => cache.storeReport())
  const { redisError } = report
  if (opts.json) {
    printJson(report)
    return
  }
  const prefix = JSON.stringify(globals.redisKeyPrefix ?? 'scenario-matrix:')
  const rows = [
    ['store', report.store],
    ['rows', `${fmt.int(report.rows)}${report.legacyRows ? ` (${fmt.int(report.legacyRows)} legacy)` : ''}`],
    ['bytes', `${fmt.bytes(report.bytes)} of payload`],
    ['oldest', report.oldest ? `${fmt.when(report.oldest)} (${fmt.age(report.oldest)})` : '-'],
    ['newest', report.newest ? `${fmt.when(report.newest)} (${fmt.age(report.newest)})` : '-'],
    [
      'redis keys',
      redisError !== null
        ? fmt.clip(`unknown (${redisError})`, fmt.WIDTH - 12)
        : report.redisKeys === null
          ? 'no Redis (none given)'
          : `${fmt.int(report.redisKeys)} under ${prefix}`,
    ],
  ]
  print(fmt.fields(rows))
  if (report.byFund.length) {
    print()
    print(
      fmt.table(
        ['FUND', 'TAXONOMY', 'ROWS', 'BYTES'],
        report.byFund.map((f) => [f.fundId ?? '(none)', fmt.clip(f.taxonomyVersion ?? '(none)', 16), fmt.int(f.rows), fmt.bytes(f.bytes)]),
        ['l', 'l', 'r', 'r'],
      ),
    )
  }
}

async function gcCommand(opts, cmd) {
  const args = { olderThanMs: parseAge(opts.olderThan), dryRun: Boolean(opts.dryRun) }
  if (opts.fund !== undefined) args.fundId = opts.fund
  const result = await withCache(cmd.optsWithGlobals(), (cache) => cache.gc(args))
  if (opts.json) {
    printJson(result)
    return
  }
  const scope = `older than ${opts.olderThan}${opts.fund !== undefined ? ` of fund ${JSON.stringify(opts.fund)}` : ''}`
  if (result.rows === 0 && result.keys.length === 0) {
    print(`no rows ${scope}: nothing to delete`)
  } else if (result.dryRun) {
    // redisKeys: the copies that exist now (0 also without Redis), null when Redis did not answer.
    const copies =
      result.redisKeys === null ? ', with their Redis copies (Redis did not answer)' : result.redisKeys ? `, with ${fmt.count(result.redisKeys, 'Redis key')}` : ''
    print(fmt.wrap(`dry run, nothing deleted: ${fmt.count(result.rows, 'row')} ${scope} would go${copies}`, 0))
  } else {
    print(fmt.wrap(`deleted ${fmt.count(result.rows, 'row')} ${scope} and ${fmt.count(result.redisKeys, 'Redis key')}`, 0))
  }
  for (const key of result.keys) print(`  ${key}`)
}

/** Correlation matrix in blocks of columns that fit 80 characters. */
function correlationText(names, m) {
  const n = names.length
  const digits = String(n).length
  const label = (i) => `${String(i + 1).padStart(digits)} ${names[i]}`
  const labelWidth = Math.min(18, Math.max(...names.map((_, i) => label(i).length)))
  const cell = 6
  const perBlock = Math.max(1, Math.floor((fmt.WIDTH - labelWidth) / cell))
  const out = []
  for (let c0 = 0; c0 < n; c0 += perBlock) {
    const cols = []
    for (let c = c0; c < Math.min(n, c0 + perBlock); c++) cols.push(c)
    if (c0 > 0) out.push('')
    out.push(''.padEnd(labelWidth) + cols.map((c) => String(c + 1).padStart(cell)).join(''))
    for (let r = 0; r < n; r++) {
      out.push(fmt.clip(label(r), labelWidth).padEnd(labelWidth) + cols.map((c) => (Number.isFinite(m[r][c]) ? m[r][c].toFixed(2) : '-').padStart(cell)).join(''))
    }
  }
  return out.join('\n')
}

async function inspectCommand(target, opts, cmd) {
  if (opts.plot !== undefined && path.extname(opts.plot).toLowerCase() !== '.svg') {
    throw usageError(`--plot ${JSON.stringify(opts.plot)}: the plot is an SVG`, 'name the file .svg')
  }
  if (opts.plot !== undefined) checkOutputFolder('--plot', opts.plot)
  let arg
  if (target === '-' || fs.existsSync(target)) {
    arg = readConfig(target)
    try {
      lib().validateScenarioConfig(arg)
    } catch (err) {
      throw inFile(target, err)
    }
  } else if (/^[0-9a-fA-F]{64}$/.test(target)) {
    arg = target.toLowerCase()
  } else {
    throw new CliError('E_INPUT', `${target}: neither a config file nor a canonical key`, {
      hint: 'give the path of a config .json file or a 64-character hex key (`scenario-matrix-cache key config.json` prints it)',
    })
  }
  const result = await withCache(cmd.optsWithGlobals(), (cache) => cache.inspect(arg, { plot: opts.plot !== undefined }))
  if (result === null) {
    throw new CliError('E_NOT_FOUND', `no tier holds key ${arg}`, {
      hint: `inspect the config file instead, or create it with \`${NAME} get config.json\``,
    })
  }
  let plot = null
  if (opts.plot !== undefined) {
    if (typeof result.svg !== 'string') {
      throw new CliError('E_INTERNAL', 'the addon returned no plot', { hint: 'a bug: please report it' })
    }
    plot = { path: opts.plot, bytes: writeText(opts.plot, result.svg) }
  }
  const { svg, ...rest } = result
  void svg
  if (opts.json) {
    printJson({ ...rest, plot })
    return
  }
  print(
    fmt.fields([
      ['key', result.key],
      ['source', result.source],
      ['scenarios', fmt.int(result.numScenarios)],
    ]),
  )
  print()
  print(
    fmt.table(
      ['BUCKET', 'MEAN', 'P10', 'P50', 'P90', 'P99', 'RECYCLING'],
      result.buckets.map((b) => [b.name, fmt.num(b.mean), fmt.num(b.p10), fmt.num(b.p50), fmt.num(b.p90), fmt.num(b.p99), b.recyclingMultiple === null ? '-' : fmt.num(b.recyclingMultiple)]),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
  )
  print()
  print('correlation of log-MOIC')
  print(correlationText(result.correlation.names, result.correlation.logMoic))
  if (plot) {
    print()
    print(`wrote ${plot.path} (${fmt.bytes(plot.bytes)}, the MOIC distribution of each bucket)`)
  }
}

// ---- the program ------------------------------------------------------------

const example = (lines) => `\nExample:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`

function buildProgram() {
  const version = require('../../package.json').version
  const program = new Command(NAME)
  program
    .description('Look inside, fill, check and clean the scenario matrix cache.')
    .version(version, '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help for a command')
    .option('--database-url <url>', `postgres://... or sqlite://path (default: env DATABASE_URL, else SQLite at ${DEFAULT_SQLITE})`)
    .option('--redis-url <url>', "redis://... or rediss://..., '' for none (default: env REDIS_URL, else no Redis)")
    .option('--redis-cluster-nodes <urls>', 'seed nodes of a Redis Cluster, comma-separated, instead of --redis-url (default: env REDIS_CLUSTER_NODES)')
    .option('--redis-key-prefix <prefix>', 'prefix of the Redis keys (default: scenario-matrix:)')
    .option('--no-migrations', 'do not apply the embedded migrations on open')
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureHelp({ helpWidth: 80, sortSubcommands: false })
    .addHelpText(
      'after',
      `
Environment:
  DATABASE_URL, REDIS_URL, REDIS_CLUSTER_NODES
                           used when --database-url / --redis-url /
                           --redis-cluster-nodes are not given
                           (better for passwords: the command line shows in ps)

Exit codes: 0 done, 1 the work failed or found problems, 2 a usage mistake.
Run \`${NAME} <command> --help\` for each command, with an example.`,
    )

  const command = (name) => {
    const cmd = program.command(name)
    cmd.configureOutput({
      outputError: (message, write) => write(`${usageLine(message, `${NAME} ${name} --help`)}\n`),
    })
    return cmd
  }
  program.configureOutput({
    outputError: (message, write) => write(`${usageLine(message, `${NAME} --help`)}\n`),
  })

  command('key')
    .summary('print the canonical key of a config')
    .description('Print the canonical cache key (v1.2) of a config. Needs no database.')
    .argument('<config>', 'a config .json file, or - for stdin')
    .option('--json', 'print {"key": ...} as JSON')
    .addHelpText('after', example([`${NAME} key fund-a.json`]))
    .action(keyCommand)

  command('get')
    .summary('get or generate a matrix, and export it')
    .description(
      'Get the matrix of a config from the cache, or generate and store it; print its source, ' +
        'latency, size and key, and with --out write it by the file extension: .npy (NumPy, ' +
        'float32, shape (scenarios, buckets)), .csv (a header row of bucket names) or .f32 ' +
        '(raw little-endian float32, row-major). Columns follow the config\'s bucket order.',
    )
    .argument('<config>', 'a config .json file, or - for stdin')
    .option('-o, --out <file>', 'write the matrix to a .npy, .csv or .f32 file')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', example([`${NAME} get fund-a.json --out fund-a.npy`, `python3 -c "import numpy; print(numpy.load('fund-a.npy').shape)"`]))
    .action(getCommand)

  command('warm')
    .summary('get or generate many configs')
    .description(
      'Get or generate every config of a JSONL file (one config per line) or of a folder of ' +
        '.json files, a few at a time, with a progress bar. A config that fails is reported by ' +
        'its line or file name and the others go on; the exit code is 1 if any failed.',
    )
    .argument('<configs>', 'a .jsonl file, a folder of .json files, or - for JSONL on stdin')
    .option('-c, --concurrency <n>', 'configs in flight at once (default: the number of cores)', parseCount('--concurrency'))
    .option('--json', 'print the summary as JSON')
    .addHelpText('after', example([`${NAME} warm nightly-configs.jsonl --concurrency 4`]))
    .action(warmCommand)

  command('verify')
    .summary('check every stored row')
    .description(
      'Decode every row of the durable store and check its checksums, with a progress bar; ' +
        'report damaged, legacy (TypeScript-era) and unreadable rows. With --repair, rewrite ' +
        'legacy rows in the current format and regenerate damaged ones whose config is known. ' +
        'The exit code is 1 while damaged or unreadable rows remain.',
    )
    .option('--repair', 'rewrite legacy rows and regenerate damaged ones')
    .option('-c, --concurrency <n>', 'rows checked at once (default: the number of cores)', parseCount('--concurrency'))
    .option('--json', 'print the report as JSON')
    .addHelpText('after', example([`${NAME} verify`, `${NAME} verify --repair`]))
    .action(verifyCommand)

  command('stats')
    .summary('what the store holds')
    .description('Rows and bytes of the durable store, by fund and taxonomy version; legacy rows; oldest and newest row; Redis keys under the prefix.')
    .option('--json', 'print the report as JSON')
    .addHelpText('after', example([`DATABASE_URL=postgres://app@db/app ${NAME} stats`]))
    .action(statsCommand)

  command('gc')
    .summary('delete old rows and their Redis keys')
    .description('Delete the rows created before the given age, and their Redis keys. Try --dry-run first.')
    .requiredOption('--older-than <age>', 'an age such as 30d, 12h, 90m, 45s or 2w')
    .option('--fund <id>', 'only the rows of this fund')
    .option('--dry-run', 'list what would be deleted; delete nothing')
    .option('--json', 'print the result as JSON')
    .addHelpText('after', example([`${NAME} gc --older-than 90d --dry-run`, `${NAME} gc --older-than 90d --fund fund-a`]))
    .action(gcCommand)

  command('inspect')
    .summary('statistics and a plot of one matrix')
    .description(
      "Each bucket's mean and quantiles (p10, p50, p90, p99) of MOIC, its recycling multiple, " +
        'and the correlation matrix of log-MOIC, for a config (got or generated) or a key ' +
        "(looked up only). With --plot, an SVG of each bucket's MOIC distribution.",
    )
    .argument('<target>', 'a config .json file (or - for stdin), or a canonical key')
    .option('--plot <file.svg>', "write an SVG of each bucket's MOIC distribution")
    .option('--json', 'print the statistics as JSON')
    .addHelpText('after', example([`${NAME} inspect fund-a.json --plot fund-a.svg`]))
    .action(inspectCommand)

  return program
}

/** Commander's `error: ...` as our one line. */
function usageLine(message, helpCommand) {
  const text = String(message)
    .trim()
    .replace(/^error: /, '')
    .replace(/\s*\n\(Did you mean (.*)\?\)/, ' (did you mean $1?)')
  return `error E_USAGE: ${text.replace(/\s*\n\s*/g, '; ')} (see \`${helpCommand}\`)`
}

async function main(argv = process.argv) {
  // `... | head`: a reader that goes away ends the output quietly.
  process.stdout.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0)
    throw err
  })
  process.once('SIGINT', () => {
    stopProgress()
    note('interrupted')
    process.exit(130)
  })
  const program = buildProgram()
  try {
    await program.parseAsync(argv)
  } catch (err) {
    stopProgress()
    if (err && typeof err.code === 'string' && err.code.startsWith('commander.')) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') {
        process.exitCode = 0
      } else {
        process.exitCode = EXIT_USAGE
      }
      return
    }
    const { line, exitCode, stack } = describeError(err)
    note(line)
    if (stack && process.env.SCENARIO_MATRIX_CACHE_DEBUG) note(stack)
    process.exitCode = exitCode
  }
}

module.exports = { main, buildProgram, parseAge, correlationText }
