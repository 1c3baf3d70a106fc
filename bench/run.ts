// npm run bench [-- --smoke] [--pg] [--users N] [--duration S] [--connections C] [--only a,b] [--profile DIR]
//
// Measures the gateway against the same machine's own limits, in the same run: every
// scenario is reported next to the baseline it is a fraction of (see docs/performance.md).
// Not a test: it asserts nothing; --smoke runs every scenario for a moment so it cannot rot.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createLocalJWKSet, exportJWK, jwtVerify, SignJWT } from 'jose';
import { loadConfig } from '../src/config/load-config.ts';
import { createGateway } from '../src/gateway.ts';
import { MemoryReplayStore, verifyStepUpToken } from '../src/verifier/index.ts';
import { type LoadResult, load } from './lib/load.ts';
import { argon2VerifyRate, joseSignRate, joseVerifyRate, pgInsertRate, type Rate, sqliteInsertRate } from './lib/micro.ts';
import { type Child, freePort, ROOT, startScript, startStepgate } from './lib/processes.ts';
import { ACTION, BENCH_PASSWORD, CONTEXT, seedCompletedStepUps, seedGateway } from './lib/seed.ts';

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
}
const rows: Row[] = [];
const log = (line: string) => process.stderr.write(`${line}\n`);

function addLoad(scenario: string, r: LoadResult, proc: Child | undefined, cpu: number | undefined, extra: Partial<Row> = {}): Row {
  const row: Row = { scenario, rps: r.rps, p50: r.p50, p99: r.p99, errors: r.errors + r.non2xx, ...extra };
  if (cpu !== undefined && cpu > 0) row.perCpuSecond = (r.rps * r.durationSeconds) / cpu;
  if (proc !== undefined) row.rssMb = proc.rssMb();
  if (row.baselineRate !== undefined) row.ratio = (row.perCpuSecond ?? row.rps) / row.baselineRate;
  rows.push(row);
  log(`  ${scenario}: ${r.rps.toFixed(0)}/s p50 ${r.p50} ms p99 ${r.p99} ms${row.ratio === undefined ? '' : ` ratio ${(row.ratio * 100).toFixed(0)} %`}${row.errors ? ` errors ${row.errors}` : ''}`);
  return row;
}

async function measured(proc: Child, run: () => Promise<LoadResult>): Promise<{ r: LoadResult; cpu: number }> {
  const before = proc.cpuSeconds();
  const r = await run();
  return { r, cpu: proc.cpuSeconds() - before };
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
    writeFileSync(configFile, 'rateLimits:\n  perIp: 1000000000\n  loginPerIp: 1000000000\n  stepupUserPerIp: 1000000000\n  perClient: 1000000000\n');
    const config = loadConfig({ env, file: configFile });
    log(`seeding ${USERS} users`);
    const seedStarted = Date.now();
    const seeded = await seedGateway(config, USERS, log);
    log(`  seeded in ${((Date.now() - seedStarted) / 1000).toFixed(1)} s`);
    // --profile DIR: the gateway writes a V8 CPU profile there on exit (open it in Chrome DevTools).
    const gw = await startStepgate(['serve', '--config', configFile], env, { port, ...(values.profile === undefined ? {} : { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${values.profile}`] }) });
    children.push(gw);
    const json = { 'content-type': 'application/json' };
    const pick = () => `u${Math.floor(Math.random() * USERS)}`;

    if (wanted('login')) {
      log('password login');
      const { r, cpu } = await measured(gw, () =>
        load({
          url: gw.url, connections: CONNECTIONS, durationSeconds: DURATION,
          requests: [{ method: 'POST', path: '/v1/login', headers: json, setupRequest: (req) => ({ ...req, body: JSON.stringify({ username: pick(), password: BENCH_PASSWORD }) }) }],
        }),
      );
      addLoad('gateway: password login', r, gw, cpu, { baseline: 'argon2id verify', baselineRate: micro.argon2!.perCpuSecond, target: 0.8 });
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
      addLoad('gateway: token endpoint', r, gw, cpu, { baseline: 'jose ES256 sign', baselineRate: micro.joseSign!.perCpuSecond, target: 0.6 });
    }

    if (wanted('create')) {
      log('step-up creation');
      const { r, cpu } = await measured(gw, () =>
        load({ url: gw.url, connections: CONNECTIONS, durationSeconds: DURATION, requests: [{ method: 'POST', path: '/v1/stepup', headers: { ...json, authorization: seeded.basic }, setupRequest: (req) => ({ ...req, body: JSON.stringify({ subject: pick(), action: ACTION, context: CONTEXT }) }) }] }),
      );
      addLoad('gateway: create step-up', r, gw, cpu, { baseline: 'bare http JSON echo', baselineRate: echo.r.rps * echo.r.durationSeconds / echo.cpu });
    }

    if (wanted('flow-password')) {
      log('full step-up with a password (argon2-bound; the TOTP flow is the target scenario)');
      const { r, cpu } = await measured(gw, () =>
        load({
          url: gw.url, connections: CONNECTIONS, durationSeconds: DURATION,
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
      log('verifier module (in process)');
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const jwk = { ...(await exportJWK(publicKey)), kid: 'bench', alg: 'ES256' };
      const jwks = createLocalJWKSet({ keys: [jwk] });
      const n = SMOKE ? 500 : 20_000;
      const tokens: string[] = [];
      for (let i = 0; i < n; i += 1) {
        tokens.push(await new SignJWT({ txn: 'stp_x', auth_time: Math.floor(Date.now() / 1000), acr: 'urn:stepgate:aal2', amr: ['otp'], authorization_details: [{ type: ACTION, ...CONTEXT }] })
          .setProtectedHeader({ alg: 'ES256', kid: 'bench', typ: 'stepup+jwt' }).setIssuer('http://gw').setSubject('usr_1').setAudience('cli_p').setJti(randomUUID()).setIssuedAt().setExpirationTime('2m').sign(privateKey));
      }
      const replayStore = new MemoryReplayStore();
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      for (const token of tokens) {
        await verifyStepUpToken(token, { issuer: 'http://gw', audience: 'cli_p', jwks, requiredAcr: 'urn:stepgate:aal2', expectedSubject: 'usr_1', expectedAction: ACTION, expectedContext: CONTEXT, replayStore });
      }
      const wall = (performance.now() - t0) / 1000;
      const c = process.cpuUsage(cpu0);
      const perCpu = n / ((c.user + c.system) / 1e6);
      const rawCpu0 = process.cpuUsage();
      for (const token of tokens) await jwtVerify(token, publicKey, { algorithms: ['ES256'] });
      const rc = process.cpuUsage(rawCpu0);
      const rawPerCpu = n / ((rc.user + rc.system) / 1e6);
      rows.push({ scenario: 'verifier: verifyStepUpToken (memory replay store)', rps: n / wall, perCpuSecond: perCpu, baseline: 'jose verify, same tokens', baselineRate: rawPerCpu, ratio: perCpu / rawPerCpu, target: 0.85 });
      log(`  verifier: ${(n / wall).toFixed(0)}/s ratio ${((perCpu / rawPerCpu) * 100).toFixed(0)} %`);
    }

    // ---- report -------------------------------------------------------------------------
    const machine = { cpus: availableParallelism(), model: cpus()[0]?.model ?? '?', memoryGb: Math.round(totalmem() / 2 ** 30), node: process.version };
    printTable(machine);
    const stamp = new Date().toISOString().replace(/[:]/g, '-').slice(0, 19);
    const out = values.out ?? join(ROOT, 'bench/results', `${stamp}${SMOKE ? '-smoke' : ''}.json`);
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
    writeFileSync(out, `${JSON.stringify({ at: new Date().toISOString(), smoke: SMOKE, users: USERS, connections: CONNECTIONS, durationSeconds: DURATION, database: values.pg ? 'postgres' : 'sqlite', machine, rows }, null, 2)}\n`);
    log(`written ${out}`);
  } finally {
    for (const c of children) await c.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

function printTable(machine: Record<string, unknown>): void {
  const f = (n: number | undefined, d = 0) => (n === undefined ? '' : n.toFixed(d));
  const lines = [
    `machine: ${JSON.stringify(machine)}`,
    '| scenario | /s | per CPU-s | p50 ms | p99 ms | RSS MB | baseline | ratio | target | errors |',
    '|---|---:|---:|---:|---:|---:|---|---:|---:|---:|',
    ...rows.map((r) => `| ${r.scenario}${r.note ? ` (${r.note})` : ''} | ${f(r.rps)} | ${f(r.perCpuSecond)} | ${f(r.p50)} | ${f(r.p99)} | ${f(r.rssMb)} | ${r.baseline ?? ''} | ${r.ratio === undefined ? '' : `${(r.ratio * 100).toFixed(0)} %`} | ${r.target === undefined ? '' : `≥ ${(r.target * 100).toFixed(0)} %`} | ${r.errors ?? ''} |`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();
