'use strict'
// Human output for an 80-column terminal: numbers, sizes, durations, tables.

const WIDTH = 80

const int = (n) => Number(n).toLocaleString('en-US')

function bytes(n) {
  if (n < 1024) return `${n} B`
  const units = ['KiB', 'MiB', 'GiB', 'TiB']
  let v = n / 1024
  let i = 0
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024
    i++
  }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`
}

function ms(n) {
  if (n < 1) return `${n.toFixed(2)} ms`
  if (n < 1000) return `${n.toFixed(n < 10 ? 1 : 0)} ms`
  if (n < 120_000) return `${(n / 1000).toFixed(1)} s`
  const s = Math.round(n / 1000)
  return `${Math.floor(s / 60)} min ${s % 60} s`
}

/** "3 days ago", "5 h ago" for an ISO date. */
function age(iso, now = Date.now()) {
  const d = now - Date.parse(iso)
  if (!Number.isFinite(d)) return ''
  if (d < 0) return 'in the future'
  const min = d / 60_000
  if (min < 1) return 'just now'
  if (min < 120) return `${Math.floor(min)} min ago`
  if (min < 48 * 60) return `${Math.floor(min / 60)} h ago`
  return `${Math.floor(min / 1440)} days ago`
}

/** `2026-11-30 11:42:05Z` (seconds, no milliseconds). */
function when(iso) {
  if (!iso) return '-'
  const t = new Date(iso)
  if (Number.isNaN(t.getTime())) return String(iso)
  return `${t.toISOString().slice(0, 19).replace('T', ' ')}Z`
}

/** At most `n` characters, an ellipsis marking what was cut. */
function clip(text, n) {
  const s = String(text)
  return s.length <= n ? s : `${s.slice(0, Math.max(0, n - 1))}…`
}

/** A number in a table cell: two decimals (so the points line up), exponent form when tiny or huge. */
function num(v) {
  if (v === null || v === undefined) return '-'
  if (!Number.isFinite(v)) return String(v)
  const a = Math.abs(v)
  if (a !== 0 && (a < 0.005 || a >= 1e6)) return v.toExponential(1)
  return v.toFixed(2)
}

/**
 * Columns padded to their widest cell; `align` per column 'l' or 'r'. The first
 * column is clipped so the table fits `WIDTH` when it can.
 */
function table(header, rows, align) {
  const widths = header.map((h, i) => Math.max(String(h).length, ...rows.map((r) => String(r[i]).length)))
  const rest = widths.slice(1).reduce((a, w) => a + w + 2, 0)
  if (widths[0] + rest > WIDTH) widths[0] = Math.max(String(header[0]).length, WIDTH - rest, 12)
  const line = (cells) =>
    cells
      .map((c, i) => {
        const s = i === 0 ? clip(c, widths[0]) : String(c)
        return (align[i] === 'r' ? s.padStart(widths[i]) : s.padEnd(widths[i]))
      })
      .join('  ')
      .trimEnd()
  return [line(header), ...rows.map(line)].join('\n')
}

/** `label  value` lines with the labels padded to one width. */
function fields(pairs) {
  const w = Math.max(...pairs.map(([k]) => k.length))
  return pairs.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n')
}

/** `1 row`, `3 rows` */
const count = (n, one, many = `${one}s`) => `${int(n)} ${n === 1 ? one : many}`

/** Words wrapped to `WIDTH`, every line after `indent` blanks. */
function wrap(text, indent) {
  const out = []
  let line = ''
  for (const word of String(text).split(/\s+/)) {
    if (line && indent + line.length + 1 + word.length > WIDTH) {
      out.push(line)
      line = word
    } else line = line ? `${line} ${word}` : word
  }
  if (line) out.push(line)
  return out.map((l) => ' '.repeat(indent) + l).join('\n')
}

module.exports = { WIDTH, count, wrap, int, bytes, ms, age, when, clip, num, table, fields }
