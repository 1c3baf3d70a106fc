import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BIN = fileURLToPath(new URL('../../bin/stepgate.js', import.meta.url));

export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface Child {
  url: string;
  child: ChildProcess;
  /** Resident set size in MB, read from /proc (Linux). */
  rssMb(): number;
  /** CPU seconds (user + system, all threads) the process has used so far. */
  cpuSeconds(): number;
  stop(): Promise<void>;
}

function rssOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : 0;
  } catch {
    return 0;
  }
}

const CLOCK_TICKS = 100;

function cpuOf(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

async function waitReady(url: string, child: ChildProcess, stderr: () => string, path: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`process exited with ${child.exitCode}: ${stderr()}`);
    try {
      const res = await fetch(`${url}${path}`);
      if (res.status === 200) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`not ready: ${stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function wrap(child: ChildProcess, url: string): Child {
  const exited = once(child, 'exit');
  return {
    url,
    child,
    rssMb: () => rssOf(child.pid),
    cpuSeconds: () => cpuOf(child.pid),
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}

function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('STEPGATE_')) env[k] = v;
  return { ...env, ...extra };
}

/** `stepgate <command>` as its own process (serve, payment-code-service…), ready when `readyPath` answers 200. */
export async function startStepgate(command: string[], env: Record<string, string>, options: { port: number; readyPath?: string; nodeArgs?: string[] }): Promise<Child> {
  const child = spawn(process.execPath, [...(options.nodeArgs ?? []), BIN, ...command], { cwd: ROOT, env: cleanEnv(env), stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  const url = `http://127.0.0.1:${options.port}`;
  await waitReady(url, child, () => err, options.readyPath ?? '/readyz');
  return wrap(child, url);
}

/** A node script (a baseline server) as its own process; it must print its port on the first stdout line. */
export async function startScript(script: string, args: string[] = [], nodeArgs: string[] = []): Promise<Child> {
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', ...nodeArgs, script, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = (await Promise.race([
    new Promise<string[]>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve([d.toString().trim()]))),
    once(child, 'exit').then(() => {
      throw new Error(`${script} exited`);
    }),
  ])) as string[];
  const port = Number(line);
  if (!Number.isInteger(port)) throw new Error(`${script} printed ${line}`);
  return wrap(child, `http://127.0.0.1:${port}`);
}
