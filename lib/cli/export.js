'use strict'
// Writing a matrix to a file, chosen by the file's extension:
// - .npy: NumPy format 1.0, dtype '<f4', C order, shape (numScenarios, numBuckets);
//   the header is padded with spaces and ends in '\n' so the data starts at a
//   multiple of 64 bytes (what numpy itself writes);
// - .csv: a header row of the bucket names, then one row per scenario, each value
//   the shortest decimal that reads back as the same float32;
// - .f32: the raw little-endian float32 values, row-major.
// Each file is written beside its target and renamed over it at the end, so a
// failed or interrupted export never leaves half a file under the name asked for.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { usageError, CliError } = require('./errors.js')

const FORMATS = { '.npy': 'npy', '.csv': 'csv', '.f32': 'f32' }

/** The format for a path, or a usage error naming the extensions known. */
function formatOf(file) {
  const format = FORMATS[path.extname(file).toLowerCase()]
  if (!format) {
    throw usageError(`--out ${JSON.stringify(file)}: unknown file type`, 'name the file .npy, .csv or .f32')
  }
  return format
}

/** The float32 values as little-endian bytes (a view on little-endian machines). */
function littleEndianBytes(matrix) {
  const view = Buffer.from(matrix.buffer, matrix.byteOffset, matrix.byteLength)
  if (os.endianness() === 'LE') return view
  const copy = Buffer.from(view)
  copy.swap32()
  return copy
}

/** The .npy preamble (magic, version 1.0, header) for a float32 matrix. */
function npyHeader(numScenarios, numBuckets) {
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': (${numScenarios}, ${numBuckets}), }`
  const preamble = 10 // magic (6) + version (2) + header length (2)
  const unpadded = preamble + dict.length + 1 // + '\n'
  const total = Math.ceil(unpadded / 64) * 64
  const header = dict + ' '.repeat(total - unpadded) + '\n'
  const out = Buffer.alloc(preamble + header.length)
  out.write('\x93NUMPY', 0, 'latin1')
  out[6] = 1
  out[7] = 0
  out.writeUInt16LE(header.length, 8)
  out.write(header, preamble, 'latin1')
  return out
}

/** The shortest decimal that parses back to the same float32 as `v`. */
function float32Text(v) {
  if (v === 0) return '0'
  if (!Number.isFinite(v)) return String(v)
  // Six digits are enough to find the shortest for normal floats (any shorter decimal
  // that reads back as v has the same six-digit rounding); subnormals have fewer digits.
  for (let p = Math.abs(v) < 1.1754943508222875e-38 ? 1 : 6; p < 9; p++) {
    const d = Number(v.toPrecision(p))
    if (Math.fround(d) === v) return String(d)
  }
  return String(Number(v.toPrecision(9)))
}

function csvField(text) {
  return /[",\r\n]/.test(text) || /^\s|\s$/.test(text) ? `"${text.replace(/"/g, '""')}"` : text
}

function writeCsv(fd, matrix, numScenarios, numBuckets, names) {
  fs.writeSync(fd, `${names.map(csvField).join(',')}\n`)
  const ROWS = 2000
  for (let r0 = 0; r0 < numScenarios; r0 += ROWS) {
    const lines = []
    for (let r = r0; r < Math.min(numScenarios, r0 + ROWS); r++) {
      const cells = new Array(numBuckets)
      for (let c = 0; c < numBuckets; c++) cells[c] = float32Text(matrix[r * numBuckets + c])
      lines.push(cells.join(','))
    }
    fs.writeSync(fd, `${lines.join('\n')}\n`)
  }
}

function writeAll(fd, buf) {
  let off = 0
  while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off)
}

/**
 * Writes `matrix` (row-major float32, columns named by `names`) to `file` in
 * `format`; returns the number of bytes written.
 */
function writeMatrix(file, format, matrix, numScenarios, numBuckets, names) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`)
  let fd
  try {
    fd = fs.openSync(tmp, 'w')
    if (format === 'npy') {
      writeAll(fd, npyHeader(numScenarios, numBuckets))
      writeAll(fd, littleEndianBytes(matrix))
    } else if (format === 'f32') {
      writeAll(fd, littleEndianBytes(matrix))
    } else {
      writeCsv(fd, matrix, numScenarios, numBuckets, names)
    }
    fs.closeSync(fd)
    fd = undefined
    fs.renameSync(tmp, file)
    return fs.statSync(file).size
  } catch (err) {
    if (fd !== undefined) fs.closeSync(fd)
    fs.rmSync(tmp, { force: true })
    throw new CliError('E_OUTPUT', `cannot write ${file}: ${err.message}`, { hint: 'check the path and that its folder exists and is writable' })
  }
}

module.exports = { formatOf, writeMatrix, npyHeader, float32Text }
