#!/usr/bin/env node
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { benchCommand } from './bench.js';
import { chatCommand } from './chat.js';
import { evalCommands } from './eval.js';
import { generateCommand } from './generate.js';
import { planCommand } from './plan.js';
import { trainCommand } from './train.js';

// the tiny model shipped with the package, so `locret generate --prompt ...` works out of the box
const here = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_MODEL = path.resolve(here, here.includes(`${path.sep}dist${path.sep}`) ? '../../models/tiny-llama' : '../models/tiny-llama');

const program = new Command('locret').description('long-context LLM inference on WebGPU with a fixed-size KV cache (Locret)');
generateCommand(program, DEFAULT_MODEL);
chatCommand(program, DEFAULT_MODEL);
evalCommands(program, DEFAULT_MODEL);
planCommand(program);
benchCommand(program);
trainCommand(program, DEFAULT_MODEL);

await program.parseAsync();
