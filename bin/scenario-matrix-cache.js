#!/usr/bin/env node
'use strict'
// The operators' command: `npx scenario-matrix-cache --help`. Everything is in
// lib/cli/main.js (commander for the arguments, cli-progress for the bars).
require('../lib/cli/main.js').main()
