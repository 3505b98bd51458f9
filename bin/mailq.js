#!/usr/bin/env node
import { main } from '../dist/src/cli/main.js';

const code = await main(process.argv.slice(2));
// Let stdout drain, then exit even if a stray handle (a stuck job) would keep the process alive.
process.stdout.write('', () => process.exit(code));
