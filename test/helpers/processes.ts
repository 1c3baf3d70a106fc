import { randomInt } from 'node:crypto';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import type { TestDatabase } from './stores.ts';

const BIN = fileURLToPath(new URL('../../bin/stepgate.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/**
 * A free port for a child process that must be told its port in advance (the demo, a
 * PostgreSQL server). Taken at random BELOW the kernel's ephemeral range (32768–60999 on
 * Linux): a port the kernel handed out for `listen(0)` could be handed to another test's
 * server, or to an outgoing connection, between this check and the child's bind — a port
 * outside that range is only ever taken by someone asking for it by number.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const port = 20_000 + randomInt(12_000);
    const server = createServer();
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (bound) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      return port;
    }
  }
  throw new Error('no free port below the ephemeral range after 50 tries');
}

/** The environment without any STEPGATE_* setting of the machine running the tests. */
export function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('STEPGATE_')) env[k] = v;
  return { ...env, ...extra };
}

export interface GatewayProcess {
  url: string;
  port: number;
  child: ChildProcess;
  stderr(): string;
  stop(): Promise<void>;
}

/**
 * `stepgate serve` as its own OS process on `database` (a second gateway process is a
 * second call). The public URL is shared so every process is the same issuer.
 */
export async function startGatewayProcess(database: TestDatabase, options: { masterKey: string; publicUrl?: string; env?: Record<string, string>; args?: string[] }): Promise<GatewayProcess> {
  // Port 0: the process binds a free port itself and logs it (no race with other tests).
  const child = spawn(process.execPath, [BIN, 'serve', ...(options.args ?? [])], {
    cwd: ROOT,
    env: cleanEnv({
      STEPGATE_HTTP_PORT: '0',
      STEPGATE_HTTP_HOST: '127.0.0.1',
      STEPGATE_PUBLIC_URL: options.publicUrl ?? 'http://localhost:8080',
      STEPGATE_DATA_DIR: database.dataDir,
      STEPGATE_DATABASE_URL: database.url,
      STEPGATE_DATABASE_SCHEMA: database.schema,
      STEPGATE_MASTER_KEY: options.masterKey,
      STEPGATE_LOG_LEVEL: 'info',
      // Tests fire many logins at once to test the lockout; the overload refusal has its own tests.
      STEPGATE_PASSWORD_MAX_CONCURRENT_HASHES: '64',
      ...options.env,
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  const exited = once(child, 'exit');
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      // A process left running would keep the test file from ever exiting.
      child.kill('SIGKILL');
      reject(new Error(`stepgate serve did not start: ${err}`));
    }, 60_000);
    const onData = (c: Buffer) => {
      out += c.toString('utf8');
      for (const line of out.split('\n')) {
        if (!line.includes('"stepgate listening"')) continue;
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        child.stdout!.resume();
        resolve(Number((JSON.parse(line) as { port: number }).port));
        return;
      }
    };
    child.stdout!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`stepgate serve exited with ${code}: ${err}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) assert.fail(`stepgate serve exited with ${child.exitCode}: ${err}`);
    try {
      const res = await fetch(`${url}/readyz`);
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      assert.fail(`stepgate serve did not get ready: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    port,
    child,
    stderr: () => err,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
    },
  };
}
