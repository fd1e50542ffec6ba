'use strict'
// Progress on stderr: a cli-progress bar when stderr is a terminal, otherwise
// plain lines (at every tenth of the way, at least every 5 s, and at the end),
// so logs of a cron job or CI stay readable. stdout is left to the results.

const cliProgress = require('cli-progress')

const PLAIN_EVERY_MS = 5000

/**
 * `label` names the work ("warm", "verify"); `detail(state)` renders the
 * counters shown beside the count. Returns `{update(done, state), setTotal(n),
 * log(line), stop()}`.
 */
function createProgress({ label, total, detail, stream = process.stderr, tty = Boolean(stream.isTTY) }) {
  if (tty) return barProgress({ label, total, detail, stream })
  return plainProgress({ label, total, detail, stream })
}

/** 42s, 3:05, 1:02:03 */
function clock(seconds) {
  const s = Math.max(0, Math.round(seconds))
  if (s < 60) return `${s}s`
  const hms = [Math.floor(s / 3600), Math.floor(s / 60) % 60, s % 60]
  const [h, m, sec] = hms
  return h ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}` : `${m}:${String(sec).padStart(2, '0')}`
}

function barProgress({ label, total, detail, stream }) {
  // One line that fits 80 columns: label, bar, count, the caller's counters, then the
  // estimated time left (the time taken once complete).
  const format = (options, params, payload) => {
    const bar = cliProgress.Format.BarFormat(params.progress, options)
    const elapsed = ((params.stopTime || Date.now()) - params.startTime) / 1000
    const time =
      params.value >= params.total
        ? `in ${clock(elapsed)}`
        : params.value > 0 && Number.isFinite(params.eta)
          ? `eta ${clock(params.eta)}`
          : ''
    return `${label.padEnd(6)} ${bar} ${params.value}/${params.total}  ${payload.detail}  ${time}`.trimEnd()
  }
  const multi = new cliProgress.MultiBar({
    stream,
    format,
    barCompleteChar: '\u2588',
    barIncompleteChar: '\u2591',
    barsize: 16,
    hideCursor: false,
    clearOnComplete: false,
    stopOnComplete: false,
    etaBuffer: 50,
    fps: 10,
  })
  const bar = multi.create(total, 0, { detail: detail({}) })
  return {
    update(done, state) {
      bar.update(done, { detail: detail(state) })
    },
    setTotal(n) {
      bar.setTotal(n)
    },
    log(line) {
      multi.log(`${line}\n`)
    },
    stop() {
      multi.stop()
    },
  }
}

function plainProgress({ label, total, detail, stream }) {
  let lastAt = Date.now()
  let lastTenth = 0
  let lastDone = -1
  const print = (done, state) => {
    const pct = total ? Math.floor((done / total) * 100) : 100
    stream.write(`${label}: ${done}/${total} (${pct}%) ${detail(state)}\n`)
    lastAt = Date.now()
    lastDone = done
  }
  let last = { done: 0, state: {} }
  return {
    update(done, state) {
      last = { done, state }
      const tenth = total ? Math.floor((done / total) * 10) : 10
      if (done === lastDone) return
      if (done >= total || tenth > lastTenth || Date.now() - lastAt >= PLAIN_EVERY_MS) {
        lastTenth = tenth
        print(done, state)
      }
    },
    setTotal(n) {
      total = n
    },
    log(line) {
      stream.write(`${line}\n`)
    },
    stop() {
      if (last.done !== lastDone) print(last.done, last.state)
    },
  }
}

module.exports = { createProgress }
