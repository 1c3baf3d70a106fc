import { parseArgs } from 'node:util';
import { loadConfig } from '../config/load-config.ts';
import type { Config } from '../config/schema.ts';

/**
 * `stepgate serve` runs with a small V8 heap by default (config `runtime`). Left alone, V8
 * sizes a process's heap from the machine's memory (4 GB here) and, under sustained
 * allocation, lets the old space grow to several times the live data before it collects:
 * a gateway with ~40 MB of live objects sat at 400–460 MB resident under the benchmark.
 * Heap limits can only be set when the process starts, so `serve` replaces itself with the
 * same program plus the flags (execve: same pid, same stdio, same arguments), before it has
 * opened anything. Flags the operator gave (node options or NODE_OPTIONS) are kept and win.
 */

/** What the process should be restarted with, or undefined when it already runs with it. */
export interface RuntimeRestart {
  execArgv: string[];
  env: NodeJS.ProcessEnv;
}

/** `--max-old-space-size=…` and `--max_old_space_size …` name the same V8 flag. */
function hasFlag(args: readonly string[], flag: string): boolean {
  return args.some((a) => {
    const name = a.split('=')[0]?.replace(/_/g, '-');
    return name === flag;
  });
}

export function runtimeRestart(runtime: Config['runtime'], execArgv: readonly string[], env: NodeJS.ProcessEnv): RuntimeRestart | undefined {
  const given = [...execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/).filter((a) => a !== '')];
  const add: string[] = [];
  if (runtime.heap.maxOldSpaceMb > 0 && !hasFlag(given, '--max-old-space-size')) add.push(`--max-old-space-size=${runtime.heap.maxOldSpaceMb}`);
  if (runtime.heap.maxSemiSpaceMb > 0 && !hasFlag(given, '--max-semi-space-size')) add.push(`--max-semi-space-size=${runtime.heap.maxSemiSpaceMb}`);
  const setArenas = runtime.mallocArenaMax > 0 && (env.MALLOC_ARENA_MAX === undefined || env.MALLOC_ARENA_MAX === '');
  if (add.length === 0 && !setArenas) return undefined;
  return {
    execArgv: [...execArgv, ...add],
    env: setArenas ? { ...env, MALLOC_ARENA_MAX: String(runtime.mallocArenaMax) } : env,
  };
}

/**
 * Called by bin/stepgate.js for `serve` before anything else is loaded. Returns (and the
 * command runs as it is) when nothing needs changing, when the configuration does not load
 * (the command itself then reports why), or where execve is not available (Windows).
 */
export function restartWithRuntimeLimits(commandArgs: string[]): void {
  if (typeof process.execve !== 'function') return;
  let config: Config;
  try {
    const { values } = parseArgs({ args: commandArgs, options: { config: { type: 'string', short: 'c' } }, strict: false, allowPositionals: true });
    config = loadConfig({ file: typeof values.config === 'string' ? values.config : undefined });
  } catch {
    return;
  }
  const restart = runtimeRestart(config.runtime, process.execArgv, process.env);
  if (restart === undefined) return;
  try {
    process.execve(process.execPath, [process.execPath, ...restart.execArgv, ...process.argv.slice(1)], restart.env);
  } catch (err) {
    process.stderr.write(`stepgate serve: could not apply runtime.heap / runtime.mallocArenaMax (${(err as Error).message}); running with Node's defaults\n`);
  }
}
