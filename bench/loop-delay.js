'use strict'
// How long the event loop could not run while some work was in flight.

/**
 * Runs `fn` while a 1 ms interval timer ticks; returns the longest gap between
 * ticks beyond the interval (ms): how long the event loop could not run.
 */
async function withLoopDelay(fn) {
  let last = performance.now()
  let worst = 0
  const timer = setInterval(() => {
    const now = performance.now()
    worst = Math.max(worst, now - last - 1)
    last = now
  }, 1)
  try {
    await fn()
  } finally {
    clearInterval(timer)
  }
  worst = Math.max(worst, performance.now() - last - 1)
  return Math.max(0, worst)
}

module.exports = { withLoopDelay }
