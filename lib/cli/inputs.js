'use strict'
// Reading configs: one JSON file (or `-` for stdin), or many from a JSONL file
// (one config per line, blank lines skipped) or a folder of .json files.
// Each of many carries a label (`line 7`, `fund-a.json`) to report it by; an
// entry that cannot be parsed carries its error instead of a config, so the
// others go on.

const fs = require('node:fs')
const path = require('node:path')
const { CliError } = require('./errors.js')

function readText(file) {
  try {
    return file === '-' ? fs.readFileSync(0, 'utf8') : fs.readFileSync(file, 'utf8')
  } catch (err) {
    const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EISDIR' ? 'a folder, not a file' : err.message
    throw new CliError('E_INPUT', `cannot read ${file === '-' ? 'stdin' : file}: ${why}`, { hint: 'give the path of a config .json file' })
  }
}

/** `JSON.parse` whose error message is short and names no internals. */
function parseJson(text) {
  try {
    return { value: JSON.parse(text) }
  } catch (err) {
    return { error: `not valid JSON (${err.message.replace(/^JSON\.parse: /, '')})` }
  }
}

/** One config from a file; throws E_INPUT when it is not JSON. */
function readConfig(file) {
  const { value, error } = parseJson(readText(file))
  if (error) throw new CliError('E_INPUT', `${file === '-' ? 'stdin' : file}: ${error}`, { hint: 'the file must hold one config as a JSON object' })
  return value
}

/**
 * The configs of a JSONL file or a folder of .json files (sorted by name):
 * `[{label, config} | {label, error}]`.
 */
function readMany(source) {
  let stat
  if (source !== '-') {
    try {
      stat = fs.statSync(source)
    } catch (err) {
      throw new CliError('E_INPUT', `cannot read ${source}: ${err.code === 'ENOENT' ? 'no such file or folder' : err.message}`, {
        hint: 'give a .jsonl file (one config per line) or a folder of .json files',
      })
    }
  }
  if (stat && stat.isDirectory()) {
    const names = fs
      .readdirSync(source, { withFileTypes: true })
      .filter((d) => d.name.toLowerCase().endsWith('.json') && (d.isFile() || d.isSymbolicLink()))
      .map((d) => d.name)
      .sort()
    if (names.length === 0) {
      throw new CliError('E_INPUT', `${source}: no .json files in this folder`, { hint: 'put one config per .json file, or give a .jsonl file' })
    }
    return names.map((name) => {
      let text
      try {
        text = fs.readFileSync(path.join(source, name), 'utf8')
      } catch (err) {
        return { label: name, file: name, error: `cannot read: ${err.message}` }
      }
      const { value, error } = parseJson(text)
      return error ? { label: name, file: name, error } : { label: name, file: name, config: value }
    })
  }
  const lines = readText(source).split('\n')
  const out = []
  lines.forEach((raw, i) => {
    const text = raw.trim()
    if (text === '') return
    const line = i + 1
    const { value, error } = parseJson(text)
    out.push(error ? { label: `line ${line}`, line, error } : { label: `line ${line}`, line, config: value })
  })
  if (out.length === 0) {
    throw new CliError('E_INPUT', `${source === '-' ? 'stdin' : source}: no configs (every line is blank)`, {
      hint: 'write one config as JSON per line',
    })
  }
  return out
}

module.exports = { readConfig, readMany }
