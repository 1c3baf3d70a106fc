import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createTestDatabase, type TestDatabase, testDialects } from '../helpers/stores.ts';

/**
 * `stepgate serve` as an operator runs it: a real process, configured only through the
 * public STEPGATE_* environment names, stopped with SIGTERM.
 */

const BIN = fileURLToPath(new URL('../../bin/stepgate.js', import.meta.url));
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** http.shutdownGraceSeconds in config/default.yaml. */
const DEFAULT_GRACE_SECONDS = 10;

/** The environment without any STEPGATE_* setting of the machine running the tests. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('STEPGATE_')) env[k] = v;
  return { ...env, ...extra };
}

interface Served {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<[number | null, NodeJS.Signals | null]>;
}

function serve(env: Record<string, string>, args: string[] = []): Served {
  const child = spawn(process.execPath, [BIN, 'serve', ...args], { cwd: ROOT, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (c: Buffer) => {
    out += c.toString('utf8');
  });
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  return { child, stdout: () => out, stderr: () => err, exited: once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]> };
}

function get(port: number, path: string, agent?: { keepAlive: boolean }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers: agent?.keepAlive ? { connection: 'keep-alive' } : {} }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => {
        body += c.toString('utf8');
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * Waits for the "stepgate listening" log line (the gateway is started with port 0 and picks
 * a free port itself: a port chosen by the test and closed again can be taken by another
 * process before the gateway binds it), then for /healthz; returns the port. Generous
 * timeout: a busy CI machine starting several gateways at once can take tens of seconds.
 */
async function waitForHealth(served: Served, timeoutMs = 60_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let port: number | undefined;
  for (;;) {
    if (served.child.exitCode !== null) assert.fail(`serve exited with ${served.child.exitCode}: ${served.stderr()}`);
    port ??= logLines(served.stdout()).find((l) => l.msg === 'stepgate listening')?.port as number | undefined;
    if (port !== undefined) {
      try {
        const res = await get(port, '/healthz');
        if (res.status === 200) return port;
      } catch {
        // not answering yet
      }
    }
    if (Date.now() > deadline) assert.fail(`serve did not answer /healthz within ${timeoutMs} ms: ${served.stderr()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** pino JSON lines from stdout. */
function logLines(text: string): { level: number; msg: string; [k: string]: unknown }[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { level: number; msg: string });
}

async function stopWithSigterm(served: Served): Promise<{ code: number | null; ms: number }> {
  const started = Date.now();
  served.child.kill('SIGTERM');
  const [code] = await served.exited;
  return { code, ms: Date.now() - started };
}

describe('stepgate serve', { concurrency: true }, () => {
  const dirs: string[] = [];
  const databases: TestDatabase[] = [];
  after(async () => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    for (const db of databases) await db.drop();
  });

  it('starts on embedded SQLite with no configuration, generates a 0600 development master key, and stops on SIGTERM', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-serve-'));
    dirs.push(dataDir);
    const served = serve({ STEPGATE_HTTP_PORT: '0', STEPGATE_HTTP_HOST: '127.0.0.1', STEPGATE_DATA_DIR: dataDir });
    try {
      const port = await waitForHealth(served);
      const ready = await get(port, '/readyz');
      assert.equal(ready.status, 200);
      assert.deepEqual(JSON.parse(ready.body), { status: 'ready', database: 'sqlite' });

      assert.ok(existsSync(join(dataDir, 'stepgate.sqlite')), 'SQLite database under the data dir');
      // They hold password hashes and sealed secrets: private to the gateway's user.
      assert.equal(statSync(dataDir).mode & 0o777, 0o700, 'data directory 0700');
      for (const f of ['stepgate.sqlite', 'stepgate.sqlite-wal', 'stepgate.sqlite-shm']) {
        assert.equal(statSync(join(dataDir, f)).mode & 0o777, 0o600, `${f} 0600`);
      }
      const keyFile = join(dataDir, 'master.key');
      assert.ok(existsSync(keyFile), 'development master key generated');
      assert.equal(statSync(keyFile).mode & 0o777, 0o600, 'master.key is readable by its owner only');

      const logs = logLines(served.stdout());
      const warning = logs.find((l) => l.level === 40 && /DEVELOPMENT MASTER KEY/.test(l.msg));
      assert.ok(warning, 'a loud warning about the development master key');
      assert.ok(logs.some((l) => l.msg === 'stepgate listening'), 'logs that it listens');
      // The key itself never reaches a log line.
      const key = readFileSync(keyFile, 'utf8').trim();
      assert.ok(!served.stdout().includes(key) && !served.stderr().includes(key), 'the master key is not logged');

      // An idle keep-alive connection must not hold the shutdown up.
      await get(port, '/healthz', { keepAlive: true });
      const { code, ms } = await stopWithSigterm(served);
      assert.equal(code, 0, `exit code (stderr: ${served.stderr()})`);
      // Nothing was in flight, so it stops at once rather than using up the grace period.
      assert.ok(ms < (DEFAULT_GRACE_SECONDS * 1000) / 2, `stopped promptly (${ms} ms)`);
      assert.ok(logLines(served.stdout()).some((l) => l.msg === 'shutting down' && l.signal === 'SIGTERM'));
    } finally {
      if (served.child.exitCode === null) served.child.kill('SIGKILL');
    }
  });

  it('SIGTERM lets an in-flight request run for http.shutdownGraceSeconds, then cuts it off and exits 0', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-serve-'));
    dirs.push(dataDir);
    const configFile = join(dataDir, 'stepgate.yaml');
    writeFileSync(configFile, 'http:\n  shutdownGraceSeconds: 1\n');
    const served = serve({ STEPGATE_HTTP_PORT: '0', STEPGATE_HTTP_HOST: '127.0.0.1', STEPGATE_DATA_DIR: dataDir }, ['--config', configFile]);
    try {
      const port = await waitForHealth(served);
      // A request whose body never finishes arriving stays in flight.
      const socket = connect(port, '127.0.0.1');
      await once(socket, 'connect');
      socket.write('POST /v1/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"user');
      const socketClosed = once(socket, 'close');
      socket.on('error', () => {});
      await new Promise((r) => setTimeout(r, 200));
      const { code, ms } = await stopWithSigterm(served);
      assert.equal(code, 0, `exit code (stderr: ${served.stderr()})`);
      assert.ok(ms >= 900, `waited for the in-flight request (${ms} ms)`);
      assert.ok(ms < 5000, `but no longer than the grace period (${ms} ms)`);
      await socketClosed;
    } finally {
      if (served.child.exitCode === null) served.child.kill('SIGKILL');
    }
  });

  it('runs with the configured V8 heap limits and MALLOC_ARENA_MAX: the same process (pid) restarted once with them', { skip: process.platform !== 'linux' && 'reads /proc' }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-serve-'));
    dirs.push(dataDir);
    // Empty: whatever the machine running the tests has set does not count (empty is unset).
    const env = { STEPGATE_HTTP_PORT: '0', STEPGATE_HTTP_HOST: '127.0.0.1', STEPGATE_DATA_DIR: dataDir, NODE_OPTIONS: '', MALLOC_ARENA_MAX: '' };
    const argvOf = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
    const environOf = (pid: number) => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').slice(0, -1);
    const served = serve(env);
    try {
      await waitForHealth(served);
      const pid = served.child.pid as number;
      const argv = argvOf(pid);
      assert.ok(argv.includes('--max-old-space-size=128'), argv.join(' '));
      assert.ok(argv.includes('--max-semi-space-size=16'), argv.join(' '));
      assert.deepEqual(argv.slice(-1), ['serve'], 'the command and its arguments are unchanged');
      assert.equal(argv.filter((a) => a.startsWith('--max-old-space-size')).length, 1, 'restarted once, not in a loop');
      assert.ok(environOf(pid).includes('MALLOC_ARENA_MAX=2'));
      // Logs still reach the same stdout, and SIGTERM to the pid the parent knows still stops it cleanly.
      assert.ok(logLines(served.stdout()).some((l) => l.msg === 'stepgate listening'));
      const { code } = await stopWithSigterm(served);
      assert.equal(code, 0, served.stderr());
    } finally {
      if (served.child.exitCode === null) served.child.kill('SIGKILL');
    }

    // 0 leaves them to Node and glibc: no restart, no flags.
    const configFile = join(dataDir, 'runtime.yaml');
    writeFileSync(configFile, 'runtime:\n  heap:\n    maxOldSpaceMb: 0\n    maxSemiSpaceMb: 0\n  mallocArenaMax: 0\n');
    const plain = serve(env, ['--config', configFile]);
    try {
      await waitForHealth(plain);
      const argv = argvOf(plain.child.pid as number);
      assert.ok(!argv.some((a) => a.startsWith('--max-old-space-size') || a.startsWith('--max-semi-space-size')), argv.join(' '));
      assert.deepEqual(environOf(plain.child.pid as number).filter((e) => e.startsWith('MALLOC_ARENA_MAX=')), ['MALLOC_ARENA_MAX=']);
      const { code } = await stopWithSigterm(plain);
      assert.equal(code, 0, plain.stderr());
    } finally {
      if (plain.child.exitCode === null) plain.child.kill('SIGKILL');
    }
  });

  it('prints a one-time admin set-up link on first start, to the terminal and not into the log', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-serve-'));
    dirs.push(dataDir);
    const served = serve({ STEPGATE_HTTP_PORT: '0', STEPGATE_HTTP_HOST: '127.0.0.1', STEPGATE_DATA_DIR: dataDir, STEPGATE_PUBLIC_URL: 'http://127.0.0.1:8080' });
    try {
      await waitForHealth(served);
      // The link is written right after listening; give stderr a moment to arrive.
      const deadline = Date.now() + 5000;
      while (!/\/setup\?token=/.test(served.stderr()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const match = /(http:\/\/127\.0\.0\.1:\d+\/setup\?token=[A-Za-z0-9_%-]+)/.exec(served.stderr());
      assert.ok(match, `set-up link printed to the terminal (stderr: ${served.stderr()})`);
      const token = new URL(match[1] as string).searchParams.get('token') as string;
      assert.ok(token.length >= 40, 'the token carries at least 256 bits');
      assert.ok(!served.stdout().includes(token), 'the one-time token is not in the log stream');
      const { code } = await stopWithSigterm(served);
      assert.equal(code, 0);
    } finally {
      if (served.child.exitCode === null) served.child.kill('SIGKILL');
    }
  });

  it('a SIGTERM right after it starts listening (while the set-up link is issued) is still a clean exit 0', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-serve-'));
    dirs.push(dataDir);
    const served = serve({ STEPGATE_HTTP_PORT: '0', STEPGATE_HTTP_HOST: '127.0.0.1', STEPGATE_DATA_DIR: dataDir });
    try {
      const deadline = Date.now() + 60_000;
      while (!logLines(served.stdout()).some((l) => l.msg === 'stepgate listening')) {
        if (served.child.exitCode !== null || Date.now() > deadline) assert.fail(`serve did not start: ${served.stderr()}`);
        await new Promise((r) => setTimeout(r, 10));
      }
      const { code } = await stopWithSigterm(served);
      assert.equal(code, 0, `graceful, not killed by the signal (stderr: ${served.stderr()})`);
    } finally {
      if (served.child.exitCode === null) served.child.kill('SIGKILL');
    }
  });

  it('in production mode without a master key it refuses to start: exit 2, one line naming secrets.masterKey', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-serve-'));
    dirs.push(dataDir);
    const served = serve({ STEPGATE_MODE: 'production', STEPGATE_PUBLIC_URL: 'https://mfa.example.com', STEPGATE_HTTP_PORT: '0', STEPGATE_DATA_DIR: dataDir });
    const [code] = await served.exited;
    assert.equal(code, 2);
    const lines = served.stderr().trim().split('\n');
    assert.equal(lines.length, 1, `exactly one line: ${served.stderr()}`);
    assert.match(lines[0] as string, /^config: secrets\.masterKey: /);
    assert.ok(!existsSync(join(dataDir, 'master.key')), 'no key was generated');
    assert.ok(!existsSync(join(dataDir, 'stepgate.sqlite')), 'no database was created');
  });

  it('an invalid environment value stops it with exit 2 naming the key', async () => {
    const served = serve({ STEPGATE_HTTP_PORT: 'eighty' });
    const [code] = await served.exited;
    assert.equal(code, 2);
    assert.equal(served.stderr().trim(), 'config: http.port: STEPGATE_HTTP_PORT must be an integer');
  });

  for (const dialect of testDialects().filter((d) => d === 'postgres')) {
    it('with STEPGATE_DATABASE_URL it runs on PostgreSQL and nothing else changes', async () => {
      const database = await createTestDatabase(dialect);
      databases.push(database);
      const served = serve({
        STEPGATE_HTTP_PORT: '0',
        STEPGATE_HTTP_HOST: '127.0.0.1',
        STEPGATE_DATA_DIR: database.dataDir,
        STEPGATE_DATABASE_URL: database.url,
        STEPGATE_DATABASE_SCHEMA: database.schema,
      });
      try {
        const port = await waitForHealth(served);
        const ready = await get(port, '/readyz');
        assert.deepEqual(JSON.parse(ready.body), { status: 'ready', database: 'postgres' });
        assert.ok(!existsSync(join(database.dataDir, 'stepgate.sqlite')), 'no SQLite file when PostgreSQL is configured');
        const listening = logLines(served.stdout()).find((l) => l.msg === 'stepgate listening');
        assert.ok(listening);
        assert.match(String(listening.database), /^postgres(ql)?:\/\//);
        const { code } = await stopWithSigterm(served);
        assert.equal(code, 0);
      } finally {
        if (served.child.exitCode === null) served.child.kill('SIGKILL');
      }
    });
  }
});

// Not in the concurrent group above: each starts gateways of its own, one after the other.
describe('stepgate serve: start-up failures and file modes', () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('a port in use is one line and exit 1, not a stack trace', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-serve-'));
    dirs.push(dataDir);
    const taken = createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const { port } = taken.address() as AddressInfo;
    const served = serve({ STEPGATE_HTTP_PORT: String(port), STEPGATE_HTTP_HOST: '127.0.0.1', STEPGATE_DATA_DIR: dataDir });
    try {
      const [code] = await served.exited;
      assert.equal(code, 1, served.stderr());
      const lines = served.stderr().trim().split('\n');
      assert.equal(lines.length, 1, `one line: ${served.stderr()}`);
      assert.match(lines[0] as string, new RegExp(`^stepgate serve: cannot listen on 127\\.0\\.0\\.1:${port}: .*address already in use`));
    } finally {
      if (served.child.exitCode === null) served.child.kill('SIGKILL');
      taken.close();
    }
  });

  it('creates the data directory 0700 and keeps an existing directory\'s and database\'s own modes', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'stepgate-serve-'));
    dirs.push(parent);
    const dataDir = join(parent, 'nested', 'data');
    const served = serve({ STEPGATE_HTTP_PORT: '0', STEPGATE_HTTP_HOST: '127.0.0.1', STEPGATE_DATA_DIR: dataDir });
    try {
      await waitForHealth(served);
      assert.equal(statSync(dataDir).mode & 0o777, 0o700);
      assert.equal(statSync(join(dataDir, 'stepgate.sqlite')).mode & 0o777, 0o600);
    } finally {
      await stopWithSigterm(served);
    }
    // An operator's tighter-or-other choice is not changed (never loosened).
    chmodSync(dataDir, 0o750);
    chmodSync(join(dataDir, 'stepgate.sqlite'), 0o640);
    const again = serve({ STEPGATE_HTTP_PORT: '0', STEPGATE_HTTP_HOST: '127.0.0.1', STEPGATE_DATA_DIR: dataDir });
    try {
      await waitForHealth(again);
      assert.equal(statSync(dataDir).mode & 0o777, 0o750);
      assert.equal(statSync(join(dataDir, 'stepgate.sqlite')).mode & 0o777, 0o640);
    } finally {
      await stopWithSigterm(again);
    }
  });
});
