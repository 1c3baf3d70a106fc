// npm run bench [-- --smoke] [--pg] [--users N] [--duration S] [--connections C] [--only a,b] [--profile DIR]
//
// Measures the gateway against the same machine's own limits, in the same run: every
// scenario is reported next to the baseline it is a fraction of (see docs/performance.md).
// Not a test: it asserts nothing; --smoke runs every scenario for a moment so it cannot rot.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { exportJWK, SignJWT } from 'jose';
import { loadConfig } from '../src/config/load-config.ts';
import { createGateway } from '../src/gateway.ts';
import { createApiKey } from '../src/payment-code/api-keys.ts';
import { loadPaymentCodeConfig } from '../src/payment-code/config.ts';
import { createPaymentCodeLogger } from '../src/payment-code/logger.ts';
import { createPaymentCodeService } from '../src/payment-code/service.ts';
import { countingGateway } from './lib/commits.ts';
import { type FlowResult, type LoadResult, load, runFlows } from './lib/load.ts';
import { argon2VerifyRate, es256VerifyRate, joseSignRate, joseVerifyRate, pgInsertRate, type Rate, sqliteDurableInsertRate, sqliteInsertRate } from './lib/micro.ts';
import { type Child, freePort, ROOT, startScript, startStepgate } from './lib/processes.ts';
import { ACTION, BENCH_PASSWORD, benchTotpCode, benchUserId, CONTEXT, seedCompletedStepUps, seedGateway, seedPendingTotpStepUps, TOTP_CONTEXT } from './lib/seed.ts';
import { tokenWorkInProcess, totpWorkInProcess } from './lib/in-process.ts';
import { joseVerifyPerCpuSecond, verifierModuleRates } from './lib/verifier-module.ts';
import { webauthnAssertionRate } from './lib/webauthn.ts';

const { values } = parseArgs({
  options: {
    smoke: { type: 'boolean', default: false },
    pg: { type: 'boolean', default: false },
    users: { type: 'string', default: '1000' },
    duration: { type: 'string' },
    connections: { type: 'string', default: '32' },
    only: { type: 'string' },
    out: { type: 'string' },
    profile: { type: 'string' },
    /** Tokens in the PSKC import scenario (bench/hardware-tokens.ts). */
    tokens: { type: 'string' },
  },
});
const SMOKE = values.smoke === true;
const DURATION = Number(values.duration ?? (SMOKE ? 1 : 10));
const MICRO_SECONDS = SMOKE ? 0.3 : 3;
const CONNECTIONS = Number(values.connections);
const USERS = Number(values.users);
const ONLY = values.only === undefined ? undefined : new Set(values.only.split(','));
const PG_URL = process.env.STEPGATE_BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const wanted = (name: string) => ONLY === undefined || ONLY.has(name);
// --profile DIR: every server process writes a V8 CPU profile there on exit (Chrome DevTools opens them).
const profileArgs = (name: string): string[] => [
  ...(values.profile === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${join(values.profile, name)}`]),
  // Experiments with V8 flags (heap sizes…) without editing the bench: STEPGATE_BENCH_NODE_ARGS="--max-old-space-size=128".
  ...(process.env.STEPGATE_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== ''),
];
const TOKENS = Number(values.tokens ?? (SMOKE ? 1000 : 100_000));
// Users with a TOTP factor (a fixed number whatever the table size, so both scale points do
// the same work): half verify pre-made step-ups, half run the whole flow; each code is used once.
const TOTP_USERS = Math.min(USERS, SMOKE ? 400 : 40_000);
// The in-process TOTP row needs users of its own (each code is used once): spare users beyond
// TOTP_USERS get a TOTP factor too; without enough of them it takes the top quarter of the
// TOTP scenario's half.
const SPARE_TOTP_USERS = USERS - TOTP_USERS >= (SMOKE ? 50 : 2_000) ? Math.min(SMOKE ? 100 : 8_000, USERS - TOTP_USERS) : 0;

interface Row {
  scenario: string;
  rps: number;
  perCpuSecond?: number;
  p50?: number;
  p99?: number;
  rssMb?: number;
  baseline?: string;
  baselineRate?: number;
  ratio?: number;
  target?: number;
  errors?: number;
  note?: string;
  /** A figure that is not a rate (commits per verification, seconds, MB) and the most it may be. */
  value?: number;
  unit?: string;
  max?: number;
}
const rows: Row[] = [];
const met = (r: Row): boolean | undefined =>
  r.max !== undefined && r.value !== undefined ? r.value <= r.max : r.target !== undefined && r.ratio !== undefined ? r.ratio >= r.target : undefined;
const log = (line: string) => process.stderr.write(`${line}\n`);

function addLoad(scenario: string, r: LoadResult | FlowResult, proc: Child | undefined, cpu: number | undefined, extra: Partial<Row> = {}): Row {
  const row: Row = { scenario, rps: r.rps, p50: r.p50, p99: r.p99, errors: r.errors + ('non2xx' in r ? r.non2xx : 0), ...extra };
  if (cpu !== undefined && cpu > 0) row.perCpuSecond = (r.rps * r.durationSeconds) / cpu;
  if (proc !== undefined) row.rssMb = proc.rssMb();
  if (row.baselineRate !== undefined && row.ratio === undefined) row.ratio = (row.perCpuSecond ?? row.rps) / row.baselineRate;
  rows.push(row);
  log(`  ${scenario}: ${r.rps.toFixed(0)}/s p50 ${r.p50} ms p99 ${r.p99} ms${row.ratio === undefined ? '' : ` ratio ${(row.ratio * 100).toFixed(0)} %`}${row.errors ? ` errors ${row.errors}` : ''}`);
  return row;
}

async function measured(proc: Child, run: () => Promise<LoadResult>): Promise<{ r: LoadResult; cpu: number }> {
  const before = proc.cpuSeconds();
  const r = await run();
  return { r, cpu: proc.cpuSeconds() - before };
}

const jsonHeaders = { 'content-type': 'application/json' };
async function post(url: string, headers: Record<string, string>, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', headers: { ...jsonHeaders, ...headers }, body: JSON.stringify(body) });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    parsed = { text };
  }
  return { status: res.status, body: parsed };
}

/** The sum and count of a Prometheus histogram series, scraped from /metrics. */
async function histogram(url: string, name: string, label: string): Promise<{ sum: number; count: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const find = (suffix: string) => {
    const line = text.split('\n').find((l) => l.startsWith(`${name}_${suffix}{`) && l.includes(label));
    return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
  };
  return { sum: find('sum'), count: find('count') };
}

function runNode(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${args[0]} exited with ${code}`))));
  });
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'stepgate-bench-'));
  const children: Child[] = [];
  try {
    log(`stepgate bench: ${SMOKE ? 'smoke' : 'full'} run, ${USERS} users, ${CONNECTIONS} connections, ${DURATION} s per scenario, ${values.pg ? 'PostgreSQL' : 'SQLite'}`);

    // ---- baselines, measured first in this run ------------------------------------------
    const config0 = loadConfig({ env: {} });
    const micro: Record<string, Rate> = {};
    log('baselines');
    micro.joseSign = await joseSignRate(MICRO_SECONDS);
    micro.joseVerify = await joseVerifyRate(MICRO_SECONDS);
    micro.argon2 = await argon2VerifyRate(Math.max(MICRO_SECONDS, SMOKE ? 0.3 : 5), config0.password.argon2);
    micro.sqliteInsert = await sqliteInsertRate(MICRO_SECONDS, work);
    micro.sqliteDurableInsert = await sqliteDurableInsertRate(MICRO_SECONDS, work);
    micro.es256Verify = await es256VerifyRate(MICRO_SECONDS);
    if (values.pg) micro.pgInsert = await pgInsertRate(MICRO_SECONDS, PG_URL, `bench_${process.pid}`);
    for (const [k, v] of Object.entries(micro)) {
      rows.push({ scenario: `baseline: ${k}`, rps: v.perSecond, perCpuSecond: v.perCpuSecond });
      log(`  ${k}: ${v.perSecond.toFixed(0)}/s (${v.perCpuSecond.toFixed(0)} per CPU-second)`);
    }
    const bare = await startScript(join(ROOT, 'bench/lib/baseline-server.ts'), [work]);
    children.push(bare);
    const echo = await measured(bare, () => load({ url: bare.url, connections: CONNECTIONS, durationSeconds: DURATION, requests: [{ method: 'POST', path: '/echo', headers: { 'content-type': 'application/json' }, body: '{"factor":"totp","code":"123456"}' }] }));
    addLoad('baseline: bare http JSON echo', echo.r, bare, echo.cpu);
    const hmacSign = await measured(bare, () => load({ url: bare.url, connections: CONNECTIONS, durationSeconds: DURATION, requests: [{ method: 'POST', path: '/work?hmac=1&sign=1', body: '{}' }] }));
    addLoad('baseline: bare http HMAC + ES256 sign', hmacSign.r, bare, hmacSign.cpu);
    // A full step-up at the gateway does 3 requests with ~6 durable writes (step-up, audit,
    // attempts, factor state, audit, token) and one signature; the bare server does that much.
    const flowBase = await measured(bare, () =>
      load({ url: bare.url, connections: CONNECTIONS, durationSeconds: DURATION, requests: [{ method: 'POST', path: '/work?hmac=1&writes=2', body: '{}' }, { method: 'POST', path: '/work?hmac=1&writes=3', body: '{}' }, { method: 'POST', path: '/work?sign=1&writes=2', body: '{}' }] }),
    );
    addLoad('baseline: bare http flow (3 requests, 7 writes, 1 sign)', flowBase.r, bare, flowBase.cpu);
    // The TOTP flow with the payment-code service: create (2 writes), verify (HMAC, 3 writes),
    // token (sign, 2 writes) at the gateway; begin (1 write) and complete (verify, 3 writes) at P.
    const pFlowBase = await measured(bare, () =>
      load({
        url: bare.url, connections: CONNECTIONS, durationSeconds: DURATION,
        requests: [
          { method: 'POST', path: '/work?writes=1', body: '{}' },
          { method: 'POST', path: '/work?writes=2', body: '{}' },
          { method: 'POST', path: '/work?hmac=1&writes=3', body: '{}' },
          { method: 'POST', path: '/work?sign=1&writes=2', body: '{}' },
          { method: 'POST', path: '/work?verify=1&writes=3', body: '{}' },
        ],
      }),
    );
    addLoad('baseline: bare http flow with P (5 requests, 11 writes, 1 HMAC, 1 sign, 1 verify)', pFlowBase.r, bare, pFlowBase.cpu, { note: `${(pFlowBase.r.rps / 5).toFixed(0)} flows/s` });
    // The store's durable single-row write rate: fsynced SQLite inserts, or PostgreSQL's
    // autocommitted inserts (each a WAL flush) with --pg.
    const durableName = values.pg ? 'PostgreSQL single-row insert (8 clients)' : 'SQLite durable single-row insert (synchronous=FULL)';
    const durableRate = values.pg ? micro.pgInsert!.perSecond : micro.sqliteDurableInsert!.perSecond;
    const perCpu = (m: { r: LoadResult; cpu: number }) => (m.r.rps * m.r.durationSeconds) / Math.max(m.cpu, 1e-6);
    const echoPerCpu = perCpu(echo);

    // ---- the gateway ---------------------------------------------------------------------
    const dataDir = join(work, 'gateway');
    mkdirSync(dataDir, { recursive: true });
    const port = await freePort();
    const schema = `bench_gw_${process.pid}`;
    const env: Record<string, string> = {
      STEPGATE_DATA_DIR: dataDir,
      STEPGATE_HTTP_PORT: String(port),
      STEPGATE_HTTP_HOST: '127.0.0.1',
      STEPGATE_PUBLIC_URL: `http://127.0.0.1:${port}`,
      STEPGATE_MASTER_KEY: randomBytes(32).toString('base64'),
      STEPGATE_LOG_LEVEL: 'warn',
      ...(values.pg ? { STEPGATE_DATABASE_URL: PG_URL, STEPGATE_DATABASE_SCHEMA: schema } : {}),
    };
    // Rate limits stay on (their counting is part of every request's cost) but so high that
    // one loopback address cannot hit them.
    const configFile = join(work, 'bench.yaml');
    writeFileSync(configFile, 'http:\n  echoRoute: true\nrateLimits:\n  perIp: 1000000000\n  loginPerIp: 1000000000\n  stepupUserPerIp: 1000000000\n  perClient: 1000000000\n');
    const config = loadConfig({ env, file: configFile });
    log(`seeding ${USERS} users`);
    const seedStarted = Date.now();
    const seeded = await seedGateway(config, USERS, log, { totpUsers: TOTP_USERS + SPARE_TOTP_USERS });
    log(`  seeded in ${((Date.now() - seedStarted) / 1000).toFixed(1)} s`);
    const gw = await startStepgate(['serve', '--config', configFile], env, { port, nodeArgs: profileArgs('gateway') });
    children.push(gw);
    const json = { 'content-type': 'application/json' };
    const pick = () => `u${Math.floor(Math.random() * USERS)}`;
    // "The same server's JSON-echo rate": POST /v1/echo on the gateway itself (config
    // http.echoRoute), through all of its middleware: helmet, the rate-limit counters, the body
    // parser, the session lookup. The OTP targets are ratios to this; the bare node:http echo
    // above is the machine's ceiling, reported next to it.
    const echoRequests = [{ method: 'POST' as const, path: '/v1/echo', headers: json, body: '{"factor":"totp","code":"123456"}' }];
    // A fresh process: let the JIT warm up the middleware first (unmeasured).
    await load({ url: gw.url, connections: CONNECTIONS, durationSeconds: Math.max(1, DURATION / 2), requests: echoRequests });
    const gwEcho = await measured(gw, () => load({ url: gw.url, connections: CONNECTIONS, durationSeconds: DURATION, requests: echoRequests }));
    addLoad('baseline: gateway JSON echo (same server, all middleware)', gwEcho.r, gw, gwEcho.cpu);
    const gwEchoPerCpu = perCpu(gwEcho);
    const storeCommits = async (): Promise<{ commits: number; waiters: number }> => {
      const text = await (await fetch(`${gw.url}/metrics`)).text();
      const metric = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
      return { commits: metric('stepgate_store_wal_syncs'), waiters: metric('stepgate_store_wal_sync_waiters') };
    };

    if (wanted('login')) {
      // As many connections as argon2 slots (password.maxConcurrentHashes = cores): beyond that
      // a login is refused by design (503 overloaded), which the flood row below measures.
      const slots = availableParallelism();
      log(`password login (${slots} connections = argon2 slots)`);
      const loginRequests = [{ method: 'POST' as const, path: '/v1/login', headers: json, setupRequest: (req: { body?: string }) => ({ ...req, path: '/v1/login', body: JSON.stringify({ username: pick(), password: BENCH_PASSWORD }) }) }];
      const { r, cpu } = await measured(gw, () => load({ url: gw.url, connections: slots, durationSeconds: DURATION, requests: loginRequests }));
      addLoad('gateway: password login', r, gw, cpu, { baseline: 'argon2id verify', baselineRate: micro.argon2!.perCpuSecond, target: 0.8, note: `${slots} connections` });
      log(`password login flood (${CONNECTIONS} connections)`);
      const flood = await measured(gw, () => load({ url: gw.url, connections: CONNECTIONS, durationSeconds: DURATION, requests: loginRequests }));
      const refused = flood.r.statuses['503'] ?? 0;
      const other = flood.r.requests - (flood.r.statuses['200'] ?? 0) - refused;
      addLoad('gateway: password login flood (beyond capacity)', flood.r, gw, flood.cpu, {
        errors: other,
        note: `${CONNECTIONS} connections; ${(refused / flood.r.durationSeconds).toFixed(0)} refusals/s (503 overloaded), p50 of all answers ${flood.r.p50} ms; ${other} neither 200 nor 503`,
      });
      // How fast a refusal is when the process is not itself saturated by refusals: the slots
      // kept busy by as many connections as slots, and one more connection probing alongside.
      log('password login refusal latency (slots busy, one probing connection)');
      const busy = load({ url: gw.url, connections: slots, durationSeconds: DURATION, requests: loginRequests });
      const refusals: number[] = [];
      let probes = 0;
      const until = performance.now() + DURATION * 1000;
      while (performance.now() < until) {
        const t0 = performance.now();
        const res = await fetch(`${gw.url}/v1/login`, { method: 'POST', headers: json, body: JSON.stringify({ username: pick(), password: BENCH_PASSWORD }) });
        await res.arrayBuffer();
        probes += 1;
        if (res.status === 503) refusals.push(performance.now() - t0);
      }
      await busy;
      refusals.sort((a, b) => a - b);
      const q = (p: number) => refusals[Math.min(refusals.length - 1, Math.ceil(p * refusals.length) - 1)] ?? 0;
      rows.push({
        scenario: 'gateway: login refusal latency beyond capacity (a probe while the slots are kept busy)', rps: refusals.length / DURATION, p50: q(0.5), p99: q(0.99), value: q(0.5), unit: 'ms', max: 5,
        note: `${refusals.length} of ${probes} probe logins refused with 503; latency of the refusals only, measured by the client (fetch) over loopback`,
      });
    }

    if (wanted('token')) {
      log('step-up token issuance');
      const opener = await createGateway(config);
      const expected = Math.ceil((SMOKE ? 2000 : 4000) * DURATION);
      const ids = await seedCompletedStepUps(opener, seeded.clientId, expected, USERS);
      await opener.close();
      let next = 0;
      const { r, cpu } = await measured(gw, () =>
        load({
          url: gw.url, connections: CONNECTIONS, durationSeconds: DURATION, amount: ids.length,
          requests: [{ method: 'POST', path: '/v1/stepup/x/token', headers: { authorization: seeded.basic }, setupRequest: (req) => ({ ...req, path: `/v1/stepup/${ids[next++ % ids.length]}/token` }) }],
        }),
      );
      const row = addLoad('gateway: token endpoint', r, gw, cpu, { baseline: 'jose ES256 sign', baselineRate: micro.joseSign!.perCpuSecond, target: 0.6 });
      // The same work without HTTP, in this process: what no HTTP layer could take away.
      const floorGw = await createGateway(config);
      try {
        const floorIds = await seedCompletedStepUps(floorGw, seeded.clientId, SMOKE ? 500 : 20_000, USERS);
        const f = await tokenWorkInProcess(floorGw, floorIds, seeded.basic, CONNECTIONS);
        rows.push({
          scenario: 'in process, no HTTP: the token endpoint\'s work (counters, client secret, hand-out + audit, signature)', rps: f.perSecond, perCpuSecond: f.perCpuSecond,
          baseline: 'jose ES256 sign', baselineRate: micro.joseSign!.perCpuSecond, ratio: f.perCpuSecond / micro.joseSign!.perCpuSecond,
          note: `${f.ops} tokens, ${CONNECTIONS} in flight; the HTTP layer's share of the endpoint: ${((1 - (row.perCpuSecond ?? 0) / f.perCpuSecond) * 100).toFixed(0)} % of its CPU`,
        });
        log(`  in process: ${f.perCpuSecond.toFixed(0)} per CPU-second (${((f.perCpuSecond / micro.joseSign!.perCpuSecond) * 100).toFixed(0)} % of jose sign)`);
      } finally {
        await floorGw.close();
      }
    }

    if (wanted('create')) {
      log('step-up creation');
      const { r, cpu } = await measured(gw, () =>
        load({ url: gw.url, connections: CONNECTIONS, durationSeconds: DURATION, requests: [{ method: 'POST', path: '/v1/stepup', headers: { ...json, authorization: seeded.basic }, setupRequest: (req) => ({ ...req, body: JSON.stringify({ subject: pick(), action: ACTION, context: CONTEXT }) }) }] }),
      );
      addLoad('gateway: create step-up', r, gw, cpu, { baseline: 'bare http JSON echo', baselineRate: echo.r.rps * echo.r.durationSeconds / echo.cpu });
    }

    if (wanted('flow-password')) {
      // As many connections as argon2 slots: more would be refused by design (503 overloaded).
      log(`full step-up with a password (argon2-bound, ${availableParallelism()} connections; the TOTP flow is the target scenario)`);
      const { r, cpu } = await measured(gw, () =>
        load({
          url: gw.url, connections: availableParallelism(), durationSeconds: DURATION,
          requests: [
            { method: 'POST', path: '/v1/stepup', headers: { ...json, authorization: seeded.basic }, setupRequest: (req) => ({ ...req, body: JSON.stringify({ subject: pick(), action: ACTION, context: CONTEXT }) }),
              onResponse: (_s, body, ctx) => { const b = JSON.parse(body) as { stepup_id: string; ticket: string }; ctx.id = b.stepup_id; ctx.ticket = b.ticket; } },
            { method: 'POST', path: '/v1/stepup/x/verify', headers: json, body: JSON.stringify({ factor: 'password', password: BENCH_PASSWORD }),
              setupRequest: (req, ctx) => ({ ...req, path: `/v1/stepup/${String(ctx.id)}/verify`, headers: { ...json, authorization: `Ticket ${String(ctx.ticket)}` } }) },
            { method: 'POST', path: '/v1/stepup/x/token', headers: { authorization: seeded.basic }, setupRequest: (req, ctx) => ({ ...req, path: `/v1/stepup/${String(ctx.id)}/token` }) },
          ],
        }),
      );
      addLoad('gateway: full step-up, password (requests)', r, gw, cpu, { note: `${(r.rps / 3).toFixed(0)} flows/s` });
    }

    if (wanted('verifier')) {
      log('verifier module (in process; warmed up, alternating rounds, median)');
      const v = await verifierModuleRates(SMOKE ? 500 : 10_000, SMOKE ? 1 : 7);
      rows.push({
        scenario: 'verifier: verifyStepUpToken (JWKS cache, memory replay store)', rps: v.verifierPerSecond, perCpuSecond: v.verifierPerCpuSecond,
        baseline: 'jose verify, same tokens, in-memory KeyObject', baselineRate: v.rawPerCpuSecond, ratio: v.ratio, target: 0.85,
        note: `median of ${v.rounds} rounds of ${v.tokens} tokens each; per-round ratios ${v.ratios.map((r) => `${(r * 100).toFixed(0)} %`).join(', ')}`,
      });
      log(`  verifier: ${v.verifierPerSecond.toFixed(0)}/s ratio ${(v.ratio * 100).toFixed(0)} % (rounds: ${v.ratios.map((r) => (r * 100).toFixed(0)).join(' ')})`);
    }

    const half = Math.floor(TOTP_USERS / 2);
    const floorRange = SPARE_TOTP_USERS > 0 ? [TOTP_USERS, TOTP_USERS + SPARE_TOTP_USERS] : [half - Math.floor(half / 4), half];
    const totpEnd = SPARE_TOTP_USERS > 0 ? half : (floorRange[0] as number);

    if (wanted('totp')) {
      log('TOTP verification (pending step-ups, one code per user, used once)');
      const opener = await createGateway(config);
      const pending = await seedPendingTotpStepUps(opener, seeded.clientId, 0, totpEnd);
      await opener.close();
      let next = 0;
      // The same server's echo right before and right after the verifications: the baseline of
      // this row is measured in the same minutes as the row itself, not at the start of the run.
      const echoAround = () => measured(gw, () => load({ url: gw.url, connections: CONNECTIONS, durationSeconds: Math.max(1, DURATION / 2), requests: echoRequests }));
      const echoBefore = await echoAround();
      const commits0 = values.pg ? undefined : await storeCommits();
      const { r, cpu } = await measured(gw, () =>
        load({
          url: gw.url, connections: CONNECTIONS, durationSeconds: DURATION, amount: pending.length,
          requests: [{ method: 'POST', path: '/x', headers: json, setupRequest: (req) => {
            const p = pending[next++ % pending.length]!;
            return { ...req, path: `/v1/stepup/${p.id}/verify`, headers: { ...json, authorization: `Ticket ${p.ticket}` }, body: JSON.stringify({ factor: 'totp', code: benchTotpCode(p.user) }) };
          } }],
        }),
      );
      const commitsAfter = values.pg ? undefined : await storeCommits();
      const echoAfter = await echoAround();
      const bracket = (echoBefore.r.rps * echoBefore.r.durationSeconds + echoAfter.r.rps * echoAfter.r.durationSeconds) / Math.max(echoBefore.cpu + echoAfter.cpu, 1e-6);
      const totpEchoPerCpu = bracket;
      addLoad('gateway: TOTP verification', r, gw, cpu, {
        baseline: `gateway JSON echo (same server), right before and after (${perCpu(echoBefore).toFixed(0)} / ${perCpu(echoAfter).toFixed(0)} per CPU-s; ${gwEchoPerCpu.toFixed(0)} at the start of the run)`,
        baselineRate: totpEchoPerCpu, target: 0.6,
        note: `${pending.length} step-ups; ${((perCpu({ r, cpu }) / echoPerCpu) * 100).toFixed(1)} % of the bare node:http echo`,
      });
      if (commits0 !== undefined && commitsAfter !== undefined) {
        const commits1 = commitsAfter;
        const verified = r.statuses['200'] ?? 0;
        rows.push({ scenario: `gateway: fsyncs per TOTP verification under load (${CONNECTIONS} connections; group fsync)`, rps: 0, value: (commits1.commits - commits0.commits) / Math.max(verified, 1), unit: 'fsyncs', max: 2, note: `${commits1.commits - commits0.commits} WAL fdatasyncs for ${verified} verifications; ${((commits1.waiters - commits0.waiters) / Math.max(commits1.commits - commits0.commits, 1)).toFixed(1)} callers answered per fsync` });
      }
      rows.push({ scenario: 'gateway: TOTP verification vs durable writes', rps: r.rps, baseline: `${durableName}, wall`, baselineRate: durableRate, ratio: r.rps / durableRate, target: 0.7 });
      if ((floorRange[1] as number) > (floorRange[0] as number)) {
        // The same work without HTTP, in this process: what no HTTP layer could take away.
        const floorGw = await createGateway(config);
        try {
          const floorPending = (await seedPendingTotpStepUps(floorGw, seeded.clientId, floorRange[0] as number, floorRange[1] as number)).map((p) => ({ id: p.id, ticket: p.ticket, code: benchTotpCode(p.user) }));
          const f = await totpWorkInProcess(floorGw, floorPending, CONNECTIONS);
          rows.push({
            scenario: 'in process, no HTTP: a TOTP verification\'s work (counters, ticket, verification + audit)', rps: f.perSecond, perCpuSecond: f.perCpuSecond,
            baseline: 'gateway JSON echo (same server), around the HTTP row', baselineRate: totpEchoPerCpu, ratio: f.perCpuSecond / totpEchoPerCpu,
            note: `${f.ops} verifications, ${CONNECTIONS} in flight; the HTTP layer's share of the endpoint: ${((1 - perCpu({ r, cpu }) / f.perCpuSecond) * 100).toFixed(0)} % of its CPU`,
          });
          log(`  in process: ${f.perCpuSecond.toFixed(0)} per CPU-second (${((f.perCpuSecond / totpEchoPerCpu) * 100).toFixed(0)} % of the gateway echo)`);
        } finally {
          await floorGw.close();
        }
      }
    }

    // Counted on SQLite (an instrumented store in this process); the transactions are the same
    // code on PostgreSQL, where each counted commit is one WAL flush.
    if (wanted('commits') && values.pg) log('durable commits per verification: counted on SQLite only (run without --pg)');
    if (wanted('commits') && !values.pg) {
      log('durable commits per factor verification (gateway in this process, instrumented store)');
      const n = SMOKE ? 20 : 200;
      const opener = await createGateway(config);
      const pending = await seedPendingTotpStepUps(opener, seeded.clientId, TOTP_USERS - n, TOTP_USERS);
      await opener.close();
      const local = await countingGateway(config);
      try {
        const before = local.counts();
        let ok = 0;
        for (const p of pending) {
          const res = await post(`${local.url}/v1/stepup/${p.id}/verify`, { authorization: `Ticket ${p.ticket}` }, { factor: 'totp', code: benchTotpCode(p.user) });
          if (res.status === 200) ok += 1;
        }
        const after = local.counts();
        const commits = (after.commits - before.commits) / Math.max(ok, 1);
        rows.push({ scenario: 'gateway: durable commits (fsyncs) per TOTP verification, one request at a time (the flow)', rps: 0, value: commits, unit: 'commits', max: 2, note: `${ok}/${pending.length} verified; rate-limit counters ride in the first commit; ${((after.statements - before.statements) / Math.max(ok, 1)).toFixed(1)} statements` });
        log(`  ${commits.toFixed(2)} durable commits (fsyncs) per verification`);
      } finally {
        await local.close();
      }
    }

    if (wanted('flow-totp') || wanted('verifier-http')) {
      // ---- the payment-code service P as its own process ---------------------------------
      const pPort = await freePort();
      const pUrl = `http://127.0.0.1:${pPort}`;
      const pMasterKey = randomBytes(32).toString('base64');
      const pSchema = `bench_pc_${process.pid}`;
      const pEnv: Record<string, string> = {
        STEPGATE_MODE: 'development',
        STEPGATE_PAYMENT_CODE_HTTP_PORT: String(pPort),
        STEPGATE_PAYMENT_CODE_HTTP_HOST: '127.0.0.1',
        STEPGATE_PAYMENT_CODE_PUBLIC_URL: pUrl,
        STEPGATE_PAYMENT_CODE_DATA_DIR: join(work, 'pc'),
        STEPGATE_PAYMENT_CODE_MASTER_KEY: pMasterKey,
        STEPGATE_PAYMENT_CODE_LOG_LEVEL: 'warn',
        STEPGATE_PAYMENT_CODE_GATEWAY_URL: gw.url,
        STEPGATE_PAYMENT_CODE_CLIENT_ID: seeded.clientId,
        STEPGATE_PAYMENT_CODE_CLIENT_SECRET: seeded.clientSecret,
        STEPGATE_PAYMENT_CODE_ISSUE_ACR: 'urn:stepgate:aal2',
        ...(values.pg ? { STEPGATE_PAYMENT_CODE_DATABASE_URL: PG_URL, STEPGATE_PAYMENT_CODE_DATABASE_SCHEMA: pSchema } : {}),
      };
      // The wallet's API key, made in P's store before P starts.
      const pConfig = loadPaymentCodeConfig({ env: pEnv });
      const opened = await createPaymentCodeService(pConfig, { logger: createPaymentCodeLogger('warn') });
      const wallet = await createApiKey(opened.store.db, opened.events, opened.clock, { name: 'bench wallet', role: 'wallet' }, 'bench');
      await opened.close();
      const pProc = await startStepgate(['payment-code-service'], pEnv, { port: pPort, readyPath: '/readyz', nodeArgs: profileArgs('payment-code') });
      children.push(pProc);

      if (wanted('flow-totp')) {
        log('full step-up flow with TOTP and the payment-code service (wallet → P → G → P)');
        const request = { amountLimit: TOTP_CONTEXT.amount, currency: TOTP_CONTEXT.currency, deviceId: TOTP_CONTEXT.deviceId, payee: TOTP_CONTEXT.payee };
        const walletAuth = { authorization: `Bearer ${wallet.key}` };
        let shown = 0;
        const fail = (what: string, res: { status: number; body: unknown }) => {
          if (shown++ < 3) log(`  ${what}: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
          return false;
        };
        const flow = async (i: number): Promise<boolean> => {
          const n = half + i;
          const subject = benchUserId(n);
          const begun = await post(`${pUrl}/v1/payment-codes`, walletAuth, { subject, context: request });
          if (begun.status !== 401 || typeof begun.body.stepup_id !== 'string') return fail('begin', begun);
          const id = begun.body.stepup_id;
          const verified = await post(`${gw.url}/v1/stepup/${id}/verify`, { authorization: `Ticket ${String(begun.body.ticket)}` }, { factor: 'totp', code: benchTotpCode(n) });
          if (verified.status !== 200) return fail('verify', verified);
          const issued = await post(`${pUrl}/v1/payment-codes`, walletAuth, { subject, context: request, stepup_id: id });
          if (issued.status !== 201) return fail('issue', issued);
          return true;
        };
        // P's group WAL sync (SQLite): fdatasyncs, and the writers answered after one.
        const pCommits = async () => {
          const text = await (await fetch(`${pUrl}/metrics`)).text();
          const read = (name: string) => {
            const line = text.split('\n').find((l) => l.startsWith(`${name} `));
            return line === undefined ? Number.NaN : Number(line.slice(name.length + 1));
          };
          return { commits: read('stepgate_payment_code_sqlite_wal_syncs_total'), writes: read('stepgate_payment_code_sqlite_wal_sync_waiters_total') };
        };
        const commits0 = await pCommits();
        const gwCpu0 = gw.cpuSeconds();
        const pCpu0 = pProc.cpuSeconds();
        const verif0 = await histogram(pUrl, 'stepgate_payment_code_phase_duration_seconds', 'phase="token_verification"');
        const r = await runFlows({ connections: CONNECTIONS, durationSeconds: DURATION, limit: TOTP_USERS - half - (SMOKE ? 20 : 200), flow, onError: (err) => log(`  flow error: ${String(err)}`) });
        const gwCpu = gw.cpuSeconds() - gwCpu0;
        const pCpu = pProc.cpuSeconds() - pCpu0;
        const commits1 = await pCommits();
        const pCommitNote = Number.isNaN(commits1.commits) ? '' : `; P: ${((commits1.commits - commits0.commits) / Math.max(r.ok, 1)).toFixed(2)} WAL fdatasyncs per flow, ${((commits1.writes - commits0.writes) / Math.max(commits1.commits - commits0.commits, 1)).toFixed(1)} writers answered per fdatasync`;
        const cpu = gwCpu + pCpu;
        const verif = await histogram(pUrl, 'stepgate_payment_code_phase_duration_seconds', 'phase="token_verification"');
        const baseFlowsPerCpu = perCpu(pFlowBase) / 5;
        const flowsPerCpu = (r.ok) / Math.max(cpu, 1e-6);
        const verifMs = verif.count > verif0.count ? ((verif.sum - verif0.sum) / (verif.count - verif0.count)) * 1000 : 0;
        addLoad('full step-up: TOTP + payment code at P (flows)', r, undefined, undefined, {
          perCpuSecond: flowsPerCpu, baseline: 'bare http flow with P', baselineRate: baseFlowsPerCpu, target: 0.4, rssMb: Math.max(gw.rssMb(), pProc.rssMb()),
          note: `gateway + P CPU: ${((gwCpu * 1000) / Math.max(r.ok, 1)).toFixed(2)} + ${((pCpu * 1000) / Math.max(r.ok, 1)).toFixed(2)} ms per flow${pCommitNote}; P token verification ${verifMs.toFixed(2)} ms per token; pictures on demand (not fetched); p99 target < 25 ms`,
        });
      }

      if (wanted('verifier-http')) {
        log('token verification over HTTP (verifier in its own process, SQLite replay store)');
        const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const jwk = { ...(await exportJWK(publicKey)), kid: 'bench-http', alg: 'ES256', use: 'sig' };
        let jwksFetches = 0;
        const jwksServer = createServer((_req, res) => {
          jwksFetches += 1;
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ keys: [jwk] }));
        });
        await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
        const jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/.well-known/jwks.json`;
        const verifierProc = await startScript(join(ROOT, 'bench/lib/verifier-server.ts'), [jwksUri, 'http://gw', 'cli_p', work], profileArgs('verifier'));
        children.push(verifierProc);
        try {
          const n = SMOKE ? 1000 : 40_000;
          const tokens: string[] = [];
          for (let i = 0; i < n; i += 1) {
            tokens.push(await new SignJWT({ txn: 'stp_x', auth_time: Math.floor(Date.now() / 1000), acr: 'urn:stepgate:aal2', amr: ['otp'], authorization_details: [{ type: ACTION, ...CONTEXT }] })
              .setProtectedHeader({ alg: 'ES256', kid: 'bench-http', typ: 'stepup+jwt' }).setIssuer('http://gw').setSubject('usr_1').setAudience('cli_p').setJti(randomUUID()).setIssuedAt().setExpirationTime('5m').sign(privateKey));
          }
          let next = 0;
          const body = JSON.stringify({ subject: 'usr_1' });
          // The baseline on these tokens, right before and right after the load (the machine is shared).
          const sample = tokens.slice(0, SMOKE ? 200 : 5000);
          const rawBefore = await joseVerifyPerCpuSecond(sample, publicKey);
          const { r, cpu } = await measured(verifierProc, () =>
            load({ url: verifierProc.url, connections: CONNECTIONS, durationSeconds: DURATION, amount: n, requests: [{ method: 'POST', path: '/verify', headers: json, body, setupRequest: (req) => ({ ...req, headers: { ...json, authorization: `Bearer ${tokens[next++ % n]}` } }) }] }),
          );
          const rawAfter = await joseVerifyPerCpuSecond(sample, publicKey);
          addLoad('verifier over HTTP (own process, SQLite replay store)', r, verifierProc, cpu, {
            baseline: 'jose verify, same tokens, in-memory key (mean of right before and right after)', baselineRate: (rawBefore + rawAfter) / 2, target: 0.6,
            note: `${jwksFetches} JWKS fetch(es) for ${r.requests} tokens; jose verify ${rawBefore.toFixed(0)} / ${rawAfter.toFixed(0)} per CPU-s before / after; vs the run's first baseline ${(((r.rps * r.durationSeconds) / cpu / micro.joseVerify!.perCpuSecond) * 100).toFixed(0)} %`,
          });
        } finally {
          jwksServer.close();
        }
      }
    }

    if (wanted('webauthn')) {
      log('WebAuthn assertion verification (in process)');
      const w = await webauthnAssertionRate(SMOKE ? 200 : 5000);
      rows.push({ scenario: 'WebAuthn assertion verification (ceremony, in process)', rps: w.perSecond, perCpuSecond: w.perCpuSecond, baseline: 'node:crypto ES256 verify, cached KeyObject', baselineRate: micro.es256Verify!.perCpuSecond, ratio: w.perCpuSecond / micro.es256Verify!.perCpuSecond, target: 0.4 });
      log(`  ${w.perCpuSecond.toFixed(0)} per CPU-s (${((w.perCpuSecond / micro.es256Verify!.perCpuSecond) * 100).toFixed(0)} %)`);
    }

    const gatewayRss = gw.rssMb();
    const metricsText = await (await fetch(`${gw.url}/metrics`)).text();
    const gauge = (name: string) => {
      const line = metricsText.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
      return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1)) / 2 ** 20;
    };
    const memoryNote = `at the end: V8 heap used ${gauge('stepgate_nodejs_heap_size_used_bytes').toFixed(0)} MB of ${gauge('stepgate_nodejs_heap_size_total_bytes').toFixed(0)} MB, external ${gauge('stepgate_nodejs_external_memory_bytes').toFixed(0)} MB, RSS ${gauge('stepgate_process_resident_memory_bytes').toFixed(0)} MB`;
    await gw.stop();

    if (wanted('hardware')) {
      log(`hardware tokens: PSKC import of ${TOKENS} and HOTP/TOTP/SM3 verification (bench/hardware-tokens.ts)`);
      const out = join(work, 'hardware.json');
      await runNode([join(ROOT, 'bench/hardware-tokens.ts'), '--json', out, '--tokens', String(TOKENS), '--connections', String(CONNECTIONS), ...(SMOKE ? ['--smoke'] : []), ...(values.pg ? ['--pg'] : []), ...(values.profile === undefined ? [] : ['--profile', join(values.profile, 'hardware')])]);
      const hw = JSON.parse(readFileSync(out, 'utf8')) as { rows: { kind?: string; value: number; scenario: string; perCpuSecond?: number; p50?: number; p99?: number; errors?: number; rssMb?: number; note?: string }[] };
      // The hardware bench's own server measures its echo between the families' rounds: the
      // same server, the same minutes. Older output without it: this gateway's echo.
      const hwEcho = hw.rows.find((h) => h.kind === 'echo')?.perCpuSecond;
      const hwEchoPerCpu = hwEcho ?? gwEchoPerCpu;
      const hwEchoName = hwEcho === undefined ? 'gateway JSON echo (same server)' : `gateway JSON echo, the same server, interleaved with the rounds (${hwEcho.toFixed(0)} per CPU-s)`;
      for (const h of hw.rows) {
        if (h.kind === 'echo') continue;
        if (h.kind === 'import') {
          rows.push({ scenario: `PSKC import of ${TOKENS} tokens (stepgate tokens import)`, rps: TOKENS / h.value, value: h.value, unit: 's', max: 30, ...(h.note === undefined ? {} : { note: h.note }) });
        } else if (h.kind !== undefined) {
          const name = h.kind === 'sm3' ? 'SM3 (GM/T 0021)' : h.kind.toUpperCase();
          rows.push({ scenario: `gateway: hardware token ${name} verification`, rps: h.value, ...(h.perCpuSecond === undefined ? {} : { perCpuSecond: h.perCpuSecond }), ...(h.p50 === undefined ? {} : { p50: h.p50 }), ...(h.p99 === undefined ? {} : { p99: h.p99 }), ...(h.rssMb === undefined ? {} : { rssMb: h.rssMb }), errors: h.errors ?? 0, baseline: hwEchoName, baselineRate: hwEchoPerCpu, ratio: (h.perCpuSecond ?? 0) / hwEchoPerCpu, target: 0.6 });
          rows.push({ scenario: `gateway: hardware token ${name} vs durable writes`, rps: h.value, baseline: `${durableName}, wall`, baselineRate: durableRate, ratio: h.value / durableRate, target: 0.7 });
        }
      }
    }

    const maxRss = Math.max(gatewayRss, ...rows.filter((r) => r.scenario.startsWith('gateway:')).map((r) => r.rssMb ?? 0));
    rows.push({ scenario: 'footprint: RSS of a gateway process under load (max seen)', rps: 0, value: maxRss, unit: 'MB', max: 250, note: memoryNote });

    // ---- report -------------------------------------------------------------------------
    const machine = { cpus: availableParallelism(), model: cpus()[0]?.model ?? '?', memoryGb: Math.round(totalmem() / 2 ** 30), node: process.version };
    printTable(machine);
    const stamp = new Date().toISOString().replace(/[:]/g, '-').slice(0, 19);
    // Smoke runs and partial runs (--only) are not results to keep: both names are gitignored.
    const out = values.out ?? join(ROOT, 'bench/results', `${stamp}${SMOKE ? '-smoke' : ONLY !== undefined ? '-partial' : ''}.json`);
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
    writeFileSync(out, `${JSON.stringify({ at: new Date().toISOString(), smoke: SMOKE, users: USERS, connections: CONNECTIONS, durationSeconds: DURATION, database: values.pg ? 'postgres' : 'sqlite', machine, load: loadAverage(), rows: rows.map((r) => ({ ...r, met: met(r) })) }, null, 2)}\n`);
    log(`written ${out}`);
  } finally {
    for (const c of children) await c.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

function loadAverage(): number[] {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
  } catch {
    return [];
  }
}

function printTable(machine: Record<string, unknown>): void {
  const f = (n: number | undefined, d = 0) => (n === undefined ? '' : n.toFixed(d));
  const lines = [
    `machine: ${JSON.stringify(machine)}`,
    '| scenario | /s | per CPU-s | p50 ms | p99 ms | RSS MB | baseline | ratio / value | target | met | errors |',
    '|---|---:|---:|---:|---:|---:|---|---:|---:|:-:|---:|',
    ...rows.map((r) => {
      const value = r.value !== undefined ? `${r.value.toFixed(r.unit === 'MB' ? 0 : 2)} ${r.unit ?? ''}` : r.ratio === undefined ? '' : `${(r.ratio * 100).toFixed(0)} %`;
      const target = r.max !== undefined ? `≤ ${r.max} ${r.unit ?? ''}` : r.target === undefined ? '' : `≥ ${(r.target * 100).toFixed(0)} %`;
      const m = met(r);
      return `| ${r.scenario}${r.note ? ` (${r.note})` : ''} | ${r.rps ? f(r.rps) : ''} | ${f(r.perCpuSecond)} | ${f(r.p50)} | ${f(r.p99)} | ${f(r.rssMb)} | ${r.baseline ?? ''} | ${value} | ${target} | ${m === undefined ? '' : m ? 'yes' : 'no'} | ${r.errors ?? ''} |`;
    }),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();
