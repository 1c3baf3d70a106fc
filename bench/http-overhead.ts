// npm run bench:http-overhead [-- --rounds R --n N --connections C --only a,b --sql --layers --profile DIR --heap DIR]
// Where an endpoint's HTTP-layer cost goes. The gateway's HTTP server and the endpoint's work
// without HTTP (bench/lib/in-process.ts) run in ONE process on one store and are measured
// alternately, round after round, in CPU time of this process (per thread: main, V8's workers,
// libuv's pool, the checkpointer), with the load generator in a child process
// (bench/lib/load-child.ts). One process, so the JIT state, heap and connection are shared:
// what differs between two phases is the HTTP layer. Phases: echo (the gateway's JSON echo),
// totp-http / totp-inproc, token-http / token-inproc, totp-inproc-thrash (in process, each
// verification after a 2 MB memory walk, as if other work had run between two requests).
//   --sql      every SQLite call counted and timed (thread CPU) by statement
//   --layers   every express layer's synchronous time, exclusive of the layers it calls
//   --profile  a V8 CPU profile per phase; --heap a sampling heap profile per phase
// Instrumented runs (--sql, --layers, --profile, --heap) cost more; compare them to each other.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { PerformanceObserver } from 'node:perf_hooks';
import { loadConfig } from '../src/config/load-config.ts';
import { startServer } from '../src/cli/serve-command.ts';
import { createGateway } from '../src/gateway.ts';
import { benchTotpCode, seedCompletedStepUps, seedGateway, seedPendingTotpStepUps } from './lib/seed.ts';
import { tokenWorkInProcess, totpWorkInProcess } from './lib/in-process.ts';
import { type Child, freePort, ROOT, startStepgate } from './lib/processes.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, n: { type: 'string' }, connections: { type: 'string' }, profile: { type: 'string' }, sql: { type: 'boolean' }, layers: { type: 'boolean' }, heap: { type: 'string' }, serve: { type: 'boolean' }, only: { type: 'string' } } });
const ROUNDS = Number(values.rounds ?? 3);
const N = Number(values.n ?? 3000);
const CONNECTIONS = Number(values.connections ?? 32);
const ONLY = values.only === undefined ? undefined : new Set(values.only.split(','));
const log = (s: string) => process.stderr.write(`${s}\n`);

interface Req { method: string; path: string; headers: Record<string, string>; body?: string }

function drive(url: string, requests: Req[], file: string): Promise<{ ok: number; non2xx: number; errors: number }> {
  writeFileSync(file, JSON.stringify(requests));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', join(ROOT, 'bench/lib/load-child.ts'), url, file, String(CONNECTIONS)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`load child exited ${code}`))));
  });
}

// --sql: every SQLite call counted and timed by statement (wall time of the synchronous call).
const sqlStats = new Map<string, { n: number; ns: bigint }>();
// Thread CPU time (ns), not wall: a call preempted by another process is not charged for it.
const cpuClock = (): bigint => {
  const u = process.threadCpuUsage();
  return BigInt(u.user + u.system) * 1000n;
};
if (values.sql === true) {
  const { DatabaseSync, StatementSync } = await import('node:sqlite');
  const wrap = (proto: Record<string, unknown>, method: string, key: (self: { sourceSQL?: string }, args: unknown[]) => string) => {
    const orig = proto[method] as (...a: unknown[]) => unknown;
    proto[method] = function (this: { sourceSQL?: string }, ...args: unknown[]) {
      const t0 = cpuClock();
      try {
        return orig.apply(this, args);
      } finally {
        const k = key(this, args);
        const e = sqlStats.get(k) ?? { n: 0, ns: 0n };
        e.n += 1;
        e.ns += cpuClock() - t0;
        sqlStats.set(k, e);
      }
    };
  };
  for (const m of ['all', 'run', 'get']) wrap(StatementSync.prototype as never, m, (self) => String(self.sourceSQL).slice(0, 90));
  wrap(DatabaseSync.prototype as never, 'exec', (_self, args) => `exec ${String(args[0]).slice(0, 60)}`);
}
// --layers: the synchronous time of every express layer (middleware, router, route handler),
// exclusive of the layers it calls; the continuation of an async handler after its first
// await is not in it (the flow work), res.json is timed on its own.
const layerStats = new Map<string, { n: number; ns: bigint }>();
const layerFrames: bigint[] = [];
function timed<F extends (...a: never[]) => unknown>(name: string, fn: F): F {
  return function (this: unknown, ...args: never[]) {
    const t0 = process.hrtime.bigint();
    layerFrames.push(0n);
    try {
      return fn.apply(this, args);
    } finally {
      const dt = process.hrtime.bigint() - t0;
      const child = layerFrames.pop() as bigint;
      const e = layerStats.get(name) ?? { n: 0, ns: 0n };
      e.n += 1;
      e.ns += dt - child;
      layerStats.set(name, e);
      if (layerFrames.length > 0) layerFrames[layerFrames.length - 1] = (layerFrames[layerFrames.length - 1] as bigint) + dt;
    }
  } as F;
}
interface LayerLike { name: string; handle: ((...a: never[]) => unknown) & { stack?: LayerLike[] }; route?: { path: string; stack: LayerLike[] } }
function instrumentStack(stack: LayerLike[], prefix: string): void {
  stack.forEach((layer, i) => {
    const label = `${prefix}${i}:${layer.route ? `route ${layer.route.path}` : layer.name}`;
    if (layer.route) instrumentStack(layer.route.stack, `${label} > `);
    else if (Array.isArray(layer.handle.stack)) instrumentStack(layer.handle.stack, `${label} > `);
    if (layer.handle.length <= 3) {
      const orig = layer.handle;
      layer.handle = timed(label, orig);
      if (orig.stack !== undefined) layer.handle.stack = orig.stack;
    }
  });
}
function instrumentLayers(app: ((...a: never[]) => unknown) & { router: { stack: LayerLike[] }; response: { json: (...a: never[]) => unknown } }): void {
  instrumentStack(app.router.stack, '');
  app.response.json = timed('res.json', app.response.json);
  const proto = Object.getPrototypeOf(app.response) as { end: (...a: never[]) => unknown; setHeader: (...a: never[]) => unknown };
  proto.end = timed('ServerResponse.end', proto.end);
  proto.setHeader = timed('ServerResponse.setHeader', proto.setHeader);
}
/** CPU ticks (1/100 s) of every thread of this process, by thread id, with its name. */
function threadTimes(): Map<string, { name: string; ticks: number }> {
  const out = new Map<string, { name: string; ticks: number }>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(tid, { name, ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      // the thread ended
    }
  }
  return out;
}
let lastThreads = new Map<string, number>();
// GC pauses on the main thread during a phase, by kind (minor = scavenge, major = mark-compact).
const gcStats = new Map<string, { n: number; ms: number }>();
const GC_KINDS: Record<number, string> = { 1: 'minor', 2: 'major', 4: 'incremental', 8: 'weakcb', 16: 'minor-ms' };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const kind = GC_KINDS[((e as unknown as { detail: { kind: number } }).detail).kind] ?? 'other';
    const g = gcStats.get(kind) ?? { n: 0, ms: 0 };
    g.n += 1;
    g.ms += e.duration;
    gcStats.set(kind, g);
  }
}).observe({ entryTypes: ['gc'] });
const session = new Session();
session.connect();
let profiling = false;
async function measure<T>(name: string, run: () => Promise<T>, wait: () => Promise<unknown> = async () => {}): Promise<{ cpuUs: number; mainUs: number; result: T }> {
  // The child starts before the clock does (its start-up is not ours to count).
  await wait();
  if (values.profile !== undefined) {
    await session.post('Profiler.enable');
    await session.post('Profiler.start');
    profiling = true;
  }
  sqlStats.clear();
  layerStats.clear();
  gcStats.clear();
  if (values.heap !== undefined) {
    await session.post('HeapProfiler.enable');
    await session.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  }
  const th0 = threadTimes();
  const c0 = process.cpuUsage();
  const t0 = process.threadCpuUsage();
  const result = await run();
  const c = process.cpuUsage(c0);
  const t = process.threadCpuUsage(t0);
  const th1 = threadTimes();
  if (values.heap !== undefined) {
    const { profile } = await session.post('HeapProfiler.stopSampling');
    mkdirSync(values.heap, { recursive: true });
    writeFileSync(join(values.heap, `${name}.heapprofile`), JSON.stringify(profile));
  }
  const byName = new Map<string, number>();
  for (const [tid, v] of th1) byName.set(v.name, (byName.get(v.name) ?? 0) + v.ticks - (th0.get(tid)?.ticks ?? 0));
  lastThreads = byName;
  if (profiling) {
    const { profile } = await session.post('Profiler.stop');
    mkdirSync(values.profile as string, { recursive: true });
    writeFileSync(join(values.profile as string, `${name}.cpuprofile`), JSON.stringify(profile));
    profiling = false;
  }
  return { cpuUs: c.user + c.system, mainUs: t.user + t.system, result };
}

const work = mkdtempSync(join(tmpdir(), 'stepgate-http-overhead-'));
try {
  const env = { STEPGATE_DATA_DIR: join(work, 'data'), STEPGATE_HTTP_PORT: '0', STEPGATE_HTTP_HOST: '127.0.0.1', STEPGATE_PUBLIC_URL: 'http://127.0.0.1:1', STEPGATE_MASTER_KEY: randomBytes(32).toString('base64'), STEPGATE_LOG_LEVEL: 'warn' };
  const configFile = join(work, 'bench.yaml');
  writeFileSync(configFile, 'http:\n  echoRoute: true\nrateLimits:\n  perIp: 1000000000\n  loginPerIp: 1000000000\n  stepupUserPerIp: 1000000000\n  perClient: 1000000000\n');
  const config = loadConfig({ env, file: configFile });
  const totpUsers = N * (ROUNDS + 1) * 4 + 100;
  const seeded = await seedGateway(config, totpUsers, log, { totpUsers });
  const gw = await createGateway(config);
  const running = await startServer(config, gw);
  const url = running.url;
  if (values.layers === true) instrumentLayers(running.server.listeners('request')[0] as never);
  // --serve: also `stepgate serve` in its own process on the same database, as npm run bench
  // runs it; its phases (*-serve) count that process's CPU.
  let served: Child | undefined;
  if (values.serve === true) {
    const port = await freePort();
    served = await startStepgate(['serve', '--config', configFile], { ...env, STEPGATE_HTTP_PORT: String(port) }, { port });
  }
  const inChild = async (reqs: Req[]) => {
    const child = served as Child;
    const pid = child.child.pid as number;
    const mainTicks = () => {
      const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return Number(f[11]) + Number(f[12]);
    };
    lastThreads = new Map();
    gcStats.clear();
    const c0 = child.cpuSeconds();
    const m0 = mainTicks();
    const result = await drive(child.url, reqs, join(work, 'reqs.json'));
    if (result.non2xx > 0) log(`  ${result.non2xx} non-2xx`);
    return { cpuUs: (child.cpuSeconds() - c0) * 1e6, mainUs: (mainTicks() - m0) * 10_000, ops: result.ok };
  };
  const json = { 'content-type': 'application/json' };
  let user = 0;
  const pendingFor = async (n: number) => {
    const p = await seedPendingTotpStepUps(gw, seeded.clientId, user, user + n);
    user += n;
    return p;
  };
  const phases: Record<string, (n: number, name: string) => Promise<{ cpuUs: number; mainUs: number; ops: number }>> = {
    echo: async (n, name) => {
      const reqs = Array.from({ length: n }, () => ({ method: 'POST', path: '/v1/echo', headers: json, body: '{"factor":"totp","code":"123456"}' }));
      const m = await measure(name, () => drive(url, reqs, join(work, 'reqs.json')));
      return { ...m, ops: m.result.ok };
    },
    'totp-http': async (n, name) => {
      const pending = await pendingFor(n);
      const reqs = pending.map((p) => ({ method: 'POST', path: `/v1/stepup/${p.id}/verify`, headers: { ...json, authorization: `Ticket ${p.ticket}` }, body: JSON.stringify({ factor: 'totp', code: benchTotpCode(p.user) }) }));
      const m = await measure(name, () => drive(url, reqs, join(work, 'reqs.json')));
      if (m.result.non2xx > 0) log(`  ${name}: ${m.result.non2xx} non-2xx`);
      return { ...m, ops: m.result.ok };
    },
    'totp-inproc': async (n, name) => {
      const pending = (await pendingFor(n)).map((p) => ({ id: p.id, ticket: p.ticket, code: benchTotpCode(p.user) }));
      // totpWorkInProcess measures its last nine tenths itself; ours is the whole run, scaled.
      const m = await measure(name, () => totpWorkInProcess(gw, pending, CONNECTIONS));
      return { ...m, ops: n };
    },
    'totp-inproc-thrash': async (n, name) => {
      // Each op first walks 2 MB (more than L2): are SQLite's calls then as slow as over HTTP?
      const junk = new Float64Array(256 * 1024);
      const pending = (await pendingFor(n)).map((p) => ({ id: p.id, ticket: p.ticket, code: benchTotpCode(p.user) }));
      const m = await measure(name, () => totpWorkInProcess(gw, pending, CONNECTIONS, () => {
        for (let i = 0; i < junk.length; i += 8) junk[i] = (junk[i] as number) + 1;
      }));
      return { ...m, ops: n };
    },
    'token-http': async (n, name) => {
      const ids = await seedCompletedStepUps(gw, seeded.clientId, n, totpUsers);
      const reqs = ids.map((id) => ({ method: 'POST', path: `/v1/stepup/${id}/token`, headers: { authorization: seeded.basic } }));
      const m = await measure(name, () => drive(url, reqs, join(work, 'reqs.json')));
      if (m.result.non2xx > 0) log(`  ${name}: ${m.result.non2xx} non-2xx`);
      return { ...m, ops: m.result.ok };
    },
    'token-inproc': async (n, name) => {
      const ids = await seedCompletedStepUps(gw, seeded.clientId, n, totpUsers);
      const m = await measure(name, () => tokenWorkInProcess(gw, ids, seeded.basic, CONNECTIONS));
      return { ...m, ops: n };
    },
  };
  if (served !== undefined) {
    phases['echo-serve'] = async (n) => inChild(Array.from({ length: n }, () => ({ method: 'POST', path: '/v1/echo', headers: json, body: '{"factor":"totp","code":"123456"}' })));
    phases['totp-serve'] = async (n) => inChild((await pendingFor(n)).map((p) => ({ method: 'POST', path: `/v1/stepup/${p.id}/verify`, headers: { ...json, authorization: `Ticket ${p.ticket}` }, body: JSON.stringify({ factor: 'totp', code: benchTotpCode(p.user) }) })));
    phases['token-serve'] = async (n) => inChild((await seedCompletedStepUps(gw, seeded.clientId, n, totpUsers)).map((id) => ({ method: 'POST', path: `/v1/stepup/${id}/token`, headers: { authorization: seeded.basic } })));
  }
  const names = Object.keys(phases).filter((k) => ONLY === undefined || ONLY.has(k) || k === 'echo');
  // Warm-up (JIT), unmeasured.
  for (const k of names) await phases[k]!(Math.min(N, 1000), `warm-${k}`);
  const results: Record<string, { cpu: number[]; main: number[] }> = {};
  for (let r = 0; r < ROUNDS; r += 1) {
    for (const k of names) {
      const m = await phases[k]!(N, `${k}-${r}`);
      const entry = results[k] ?? { cpu: [], main: [] };
      results[k] = entry;
      entry.cpu.push(m.cpuUs / m.ops);
      entry.main.push(m.mainUs / m.ops);
      log(`round ${r} ${k}: ${(m.cpuUs / m.ops).toFixed(0)} µs CPU per op (main thread ${(m.mainUs / m.ops).toFixed(0)}), ${m.ops} ops`);
      log(`    gc: ${[...gcStats].map(([k, g]) => `${k} ${(g.n * 1000 / m.ops).toFixed(1)}/1000 ops, ${((g.ms * 1000) / m.ops).toFixed(1)} µs/op`).join('; ')}`);
      log(`    threads (µs/op): ${[...lastThreads].filter(([, v]) => v > 0).map(([k, v]) => `${k} ${((v * 10_000) / m.ops).toFixed(0)}`).join(', ')}`);
      if (values.sql === true) {
        let total = 0;
        for (const [sql, e] of [...sqlStats].sort((a, b) => Number(b[1].ns - a[1].ns))) {
          const us = Number(e.ns) / 1000 / m.ops;
          total += us;
          log(`    ${(e.n / m.ops).toFixed(2)}/op ${us.toFixed(1)} µs/op  ${sql}`);
        }
        log(`    SQLite total ${total.toFixed(0)} µs/op`);
      }
      if (values.layers === true) {
        let total = 0;
        for (const [layer, e] of [...layerStats].sort((a, b) => Number(b[1].ns - a[1].ns))) {
          const us = Number(e.ns) / 1000 / m.ops;
          total += us;
          if (us >= 0.5) log(`    ${(e.n / m.ops).toFixed(2)}/op ${us.toFixed(1)} µs/op  ${layer}`);
        }
        log(`    layers total ${total.toFixed(0)} µs/op`);
      }
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  process.stdout.write('| phase | µs CPU per op (median) | main thread µs | rounds |\n|---|---:|---:|---|\n');
  for (const [k, v] of Object.entries(results)) process.stdout.write(`| ${k} | ${median(v.cpu).toFixed(0)} | ${median(v.main).toFixed(0)} | ${v.cpu.map((x) => x.toFixed(0)).join(', ')} |\n`);
  await served?.stop();
  await running.stop();
} finally {
  session.disconnect();
  rmSync(work, { recursive: true, force: true });
}
