// npx node --disable-warning=ExperimentalWarning bench/hardware-tokens.ts
//   [--tokens N] [--users N] [--connections C] [--pg] [--only import,verify] [--smoke] [--profile DIR]
//   [--order hotp,totp,sm3,...] [--in-process]
//
// Hardware OTP tokens (issue 6), measured, not tested (it asserts nothing):
//   1. import: a PSKC file of N tokens (default 100,000; HOTP, PSK aes128-cbc + HMAC-SHA1
//      ValueMAC, written by python-pskc and cached in the temp dir) through
//      `stepgate tokens import` as an operator runs it. Target: < 30 s.
//   2. verify: step-up verifications per second through the HTTP API of a `stepgate serve`
//      process, for HOTP, TOTP and GM/T 0021 SM3 (time) tokens — each request a correct code
//      for a distinct user's pending step-up (POST /v1/stepup/{id}/verify), so every one is
//      the whole path: ticket, attempt charge, factor charge, unseal, code search, guarded
//      counter update, step-up completion, audit append.
import { spawn, spawnSync } from 'node:child_process';
import { createSecretKey, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config/load-config.ts';
import type { Config } from '../src/config/schema.ts';
import { hashToken, newId } from '../src/crypto/ids.ts';
import { importTokenFile } from '../src/flows/hardware-token-import.ts';
import { assignToken } from '../src/flows/hardware-tokens.ts';
import { savePolicySet } from '../src/flows/policies.ts';
import { createGateway } from '../src/gateway.ts';
import { tokenCodeGenerator, tokenStep, type TokenCodeParams } from '../src/otp/index.ts';
import { readTokenFile } from '../src/pskc/index.ts';
import type { StepUpsTable } from '../src/store/schema.ts';
import { otpWorkInProcess } from './lib/in-process.ts';
import { load } from './lib/load.ts';
import { type Child, freePort, ROOT, startStepgate } from './lib/processes.ts';
import { ACTION, CONTEXT, seedGateway } from './lib/seed.ts';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '100000' },
    users: { type: 'string', default: '2000' },
    connections: { type: 'string', default: '32' },
    pg: { type: 'boolean', default: false },
    only: { type: 'string' },
    smoke: { type: 'boolean', default: false },
    /** Also write the rows as JSON here (npm run bench folds them into its table). */
    json: { type: 'string' },
    /** The verifying gateway writes a V8 CPU profile here on exit (npm run bench -- --profile DIR passes DIR/hardware). */
    profile: { type: 'string' },
    /** The measured rounds in order, a family named more than once sharing its codes (default: each family in each place once). */
    order: { type: 'string' },
    /** Verify without HTTP, in this process (CPU time per verification): see verifyInProcess. */
    'in-process': { type: 'boolean', default: false },
  },
});
const SMOKE = values.smoke === true;
const TOKENS = SMOKE ? 1000 : Number(values.tokens);
const USERS = SMOKE ? 100 : Number(values.users);
const CONNECTIONS = Number(values.connections);
const PG_URL = process.env.STEPGATE_BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const ONLY = values.only === undefined ? undefined : new Set(values.only.split(','));
const wanted = (name: string) => ONLY === undefined || ONLY.has(name);
const log = (line: string) => process.stderr.write(`${line}\n`);
const PSK = '000102030405060708090a0b0c0d0e0f';

interface Row {
  scenario: string;
  value: number;
  unit: string;
  note?: string;
  /** Verification rows: the figures npm run bench puts in its table. */
  kind?: 'import' | 'echo' | Family;
  perCpuSecond?: number;
  p50?: number;
  p99?: number;
  errors?: number;
  rssMb?: number;
}
const rows: Row[] = [];

function baseEnv(dataDir: string, schema: string): Record<string, string> {
  return {
    STEPGATE_DATA_DIR: dataDir,
    STEPGATE_MASTER_KEY: randomBytes(32).toString('base64'),
    STEPGATE_LOG_LEVEL: 'warn',
    ...(values.pg ? { STEPGATE_DATABASE_URL: PG_URL, STEPGATE_DATABASE_SCHEMA: schema } : {}),
  };
}

async function dropSchema(schema: string): Promise<void> {
  if (!values.pg) return;
  const pg = (await import('pg')).default;
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    await client.query(`drop schema if exists ${schema} cascade`);
  } finally {
    await client.end();
  }
}

/** The python-pskc file, generated once per size (generation is not what is measured). */
function pskcFile(count: number): string {
  const file = join(tmpdir(), `stepgate-bench-pskc-${count}.xml`);
  if (existsSync(file)) return file;
  log(`generating ${count} tokens with python-pskc (cached as ${file})`);
  const started = Date.now();
  const r = spawnSync('/usr/bin/python3', [join(ROOT, 'test/fixtures/pskc-write.py')], {
    input: JSON.stringify({ encryption: 'psk', cipher: 'aes128-cbc', key_hex: PSK, generate: { count, prefix: 'BENCH', algorithm: 'hotp' }, out: `${file}.tmp` }),
    stdio: ['pipe', 'inherit', 'inherit'],
  });
  if (r.status !== 0) throw new Error('python-pskc failed (apt-get install python3-pskc)');
  spawnSync('mv', [`${file}.tmp`, file]);
  log(`  generated in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return file;
}

async function benchImport(work: string): Promise<void> {
  const file = pskcFile(TOKENS);
  const bytes = statSync(file).size;
  // Where the time goes: parse + MAC check + decrypt alone, in this process.
  const { readFileSync } = await import('node:fs');
  const data = readFileSync(file);
  const parseStarted = process.hrtime.bigint();
  const parsed = readTokenFile(data, { psk: Buffer.from(PSK, 'hex'), now: new Date(), maxBytes: 2 ** 31 - 1, maxTokens: 10_000_000, maxPbkdf2Iterations: 10_000_000 });
  const parseSeconds = Number(process.hrtime.bigint() - parseStarted) / 1e9;
  for (const t of parsed.tokens) t.seed.fill(0);

  const schema = `bench_hwi_${process.pid}`;
  const dataDir = join(work, 'import');
  const env = { ...baseEnv(dataDir, schema), BENCH_PSK: PSK };
  // Migrations first, so the measured run is the import and the process start only.
  const migrate = spawnSync(process.execPath, [join(ROOT, 'bin/stepgate.js'), 'migrate'], { cwd: ROOT, env: { ...cleanEnv(), ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
  if (migrate.status !== 0) throw new Error('migrate failed');
  log(`importing ${TOKENS} tokens (${(bytes / 1e6).toFixed(1)} MB) with stepgate tokens import (${values.pg ? 'PostgreSQL' : 'SQLite'})`);
  const started = process.hrtime.bigint();
  const out = await run([join(ROOT, 'bin/stepgate.js'), 'tokens', 'import', file, '--psk-hex-env', 'BENCH_PSK', '--json'], { ...cleanEnv(), ...env });
  const wall = Number(process.hrtime.bigint() - started) / 1e9;
  const reported = JSON.parse(out) as { import: { token_count: number; seconds: number } };
  rows.push({ scenario: `import ${TOKENS} tokens, PSKC aes128-cbc (${values.pg ? 'postgres' : 'sqlite'}): command wall time`, value: wall, unit: 's', note: `target < 30 s; ${(reported.import.token_count / wall).toFixed(0)} tokens/s`, kind: 'import' });
  rows.push({ scenario: '  of which the import itself (read, verify MACs, decrypt, seal, one transaction)', value: reported.import.seconds, unit: 's' });
  rows.push({ scenario: '  of which parse + MAC + decrypt only (in this process)', value: parseSeconds, unit: 's', note: `${(bytes / 1e6 / parseSeconds).toFixed(0)} MB/s` });
  await dropSchema(schema);
}

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('STEPGATE_')) env[k] = v;
  return env;
}

function run(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('utf8');
    });
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`exit ${code}`))));
  });
}

type Family = 'hotp' | 'totp' | 'sm3';
interface Planned {
  family: Family;
  userId: string;
  username: string;
  serial: string;
}
interface Pending {
  id: string;
  ticket: string;
  code: string;
}
const FAMILIES: Record<Family, { csv: (serial: string, seedHex: string) => string; params: TokenCodeParams }> = {
  hotp: { csv: (s, k) => `${s},${k},hotp,6,0,SHA1`, params: { kind: 'hotp', algorithm: 'SHA1', digits: 6, periodSeconds: 0 } },
  totp: { csv: (s, k) => `${s},${k},totp,6,30,SHA1`, params: { kind: 'totp', algorithm: 'SHA1', digits: 6, periodSeconds: 30 } },
  sm3: { csv: (s, k) => `${s},${k},totp,6,60,SM3`, params: { kind: 'totp', algorithm: 'SM3', digits: 6, periodSeconds: 60 } },
};

/**
 * A pending step-up for each planned user, straight into the database (creating them is the
 * create scenario of npm run bench), and the correct code for each.
 */
async function pendingCodes(config: Config, clientId: string, mine: Planned[], keys: Map<string, Buffer>): Promise<Pending[]> {
  const opener = await createGateway(config);
  const tickets: { id: string; ticket: string; p: Planned }[] = [];
  try {
    const nowMs = Date.now();
    const stepups: StepUpsTable[] = mine.map((p) => {
      const id = newId('stp');
      const ticket = randomBytes(32).toString('base64url');
      tickets.push({ id, ticket, p });
      return {
        id, client_id: clientId, user_id: p.userId, action: ACTION, context: JSON.stringify(CONTEXT), amount: CONTEXT.amount, currency: CONTEXT.currency,
        binding_message: null, redirect_uri: null, state: null, status: 'pending', policy_id: 'bench-hw', policy_version: 2, requirement: JSON.stringify({ anyOf: [['hardware_otp']] }),
        acr: 'urn:stepgate:aal2', token_ttl_seconds: 120, max_age_seconds: 0, ticket_hash: hashToken(ticket), attempts: 0, max_attempts: 5, proven: '[]', amr: '[]', version: 0,
        created_at: nowMs, expires_at: nowMs + 290_000, completed_at: null, auth_time: null, token_issued_at: null, token_jti: null, last_polled_at: null, poll_interval_seconds: 2,
      };
    });
    for (let i = 0; i < stepups.length; i += 500) await opener.store.db.insertInto('stepups').values(stepups.slice(i, i + 500)).execute();
  } finally {
    await opener.close();
  }
  const at = new Date();
  return tickets.map((t) => {
    const params = FAMILIES[t.p.family].params;
    const gen = tokenCodeGenerator(createSecretKey(keys.get(t.p.serial) as Buffer), params);
    return { id: t.id, ticket: t.ticket, code: params.kind === 'hotp' ? gen(1) : gen(tokenStep(params, at)) };
  });
}

/**
 * --order: the measured rounds in order (a family named n times gets 1/n of its codes in each).
 * By default each family is measured three times and takes each place once (a Latin square):
 * even after the warm-up, the first round measured costs more (GC, code still being optimised:
 * ~20 % more gateway CPU per verification for TOTP measured first), and measured first alone,
 * HOTP took that for its own cost.
 */
function measuredOrder(families: readonly Family[]): Family[] {
  const latin = families.flatMap((_, shift) => families.map((__, i) => families[(i + shift) % families.length] as Family));
  const order = (values.order?.split(',') ?? latin) as Family[];
  for (const f of order) if (!families.includes(f)) throw new Error(`--order: not a family: ${f}`);
  return order;
}

/**
 * --in-process: the same verifications without HTTP, through the flow functions the route
 * calls (bench/lib/in-process.ts), CPU time of this process: a family's own cost, free of
 * the HTTP layer and of the load generator sharing the two cores.
 */
async function verifyInProcess(config: Config, clientId: string, plan: Planned[], keys: Map<string, Buffer>, families: readonly Family[]): Promise<void> {
  const pendingOf = new Map<Family, Pending[]>();
  for (const family of families) pendingOf.set(family, await pendingCodes(config, clientId, plan.filter((p) => p.family === family), keys));
  const gw = await createGateway(config);
  try {
    // A quarter of every family's codes warm the JIT up, interleaved, unmeasured.
    const warmUp = families.flatMap((family) => (pendingOf.get(family) as Pending[]).splice(0, Math.floor((pendingOf.get(family) as Pending[]).length / 4)));
    log(`warming up with ${warmUp.length} verifications of all families (in process)`);
    await otpWorkInProcess(gw, 'hardware_otp', warmUp, CONNECTIONS, 0);
    const order = measuredOrder(families);
    const perRound = new Map<Family, { ops: number; cpu: number; wall: number; rounds: string[] }>();
    for (const [i, family] of order.entries()) {
      const left = order.slice(i).filter((f) => f === family).length;
      const all = pendingOf.get(family) as Pending[];
      const batch = all.splice(0, Math.ceil(all.length / left));
      const startedUs = process.hrtime.bigint() / 1000n;
      const cpu0 = process.cpuUsage();
      const r = await otpWorkInProcess(gw, 'hardware_otp', batch, CONNECTIONS, 0);
      const cpu = process.cpuUsage(cpu0);
      // The window in a profile of this process (node --cpu-prof: the same monotonic clock).
      log(`  ${family} window: ${startedUs}..${process.hrtime.bigint() / 1000n} µs; user ${(cpu.user / batch.length).toFixed(0)} µs, system ${(cpu.system / batch.length).toFixed(0)} µs each`);
      log(`  ${family}: ${r.ops} verifications, ${(1e6 / r.perCpuSecond).toFixed(0)} µs CPU each (${r.perCpuSecond.toFixed(0)} per CPU-second), ${r.perSecond.toFixed(0)}/s`);
      const acc = perRound.get(family) ?? { ops: 0, cpu: 0, wall: 0, rounds: [] };
      acc.ops += r.ops;
      acc.cpu += r.ops / r.perCpuSecond;
      acc.wall += r.ops / r.perSecond;
      acc.rounds.push((1e6 / r.perCpuSecond).toFixed(0));
      perRound.set(family, acc);
    }
    for (const [family, acc] of perRound) {
      rows.push({
        scenario: `in process: verify ${family === 'sm3' ? 'SM3 (GM/T 0021, time)' : family.toUpperCase()} (counters, ticket, verification; no HTTP)`,
        value: acc.ops / acc.cpu,
        unit: 'per CPU-second',
        perCpuSecond: acc.ops / acc.cpu,
        note: `${acc.ops} verifications, ${((acc.cpu / acc.ops) * 1e6).toFixed(0)} µs CPU each (rounds: ${acc.rounds.join(', ')} µs), ${(acc.ops / acc.wall).toFixed(0)}/s wall`,
      });
    }
  } finally {
    await gw.close();
  }
}

async function benchVerify(work: string): Promise<void> {
  const schema = `bench_hwv_${process.pid}`;
  const dataDir = join(work, 'verify');
  const port = await freePort();
  const env: Record<string, string> = { ...baseEnv(dataDir, schema), STEPGATE_HTTP_PORT: String(port), STEPGATE_HTTP_HOST: '127.0.0.1', STEPGATE_PUBLIC_URL: `http://127.0.0.1:${port}` };
  // The per-address budgets would measure themselves (one loopback address), not the tokens.
  const configFile = join(work, 'hardware-bench.yaml');
  // The echo route: the OTP target is a ratio to "the same server's JSON-echo rate", measured
  // here on this server between the families' rounds (see the echo rounds below).
  writeFileSync(configFile, 'http:\n  echoRoute: true\nrateLimits:\n  perIp: 1000000000\n  loginPerIp: 1000000000\n  stepupUserPerIp: 1000000000\n  perClient: 1000000000\n');
  const config = loadConfig({ env, file: configFile });
  const families = Object.keys(FAMILIES) as Family[];
  log(`seeding ${USERS * families.length} users with one token each`);
  const seeded = await seedGateway(config, USERS * families.length, log);
  const gw = await createGateway(config);
  const keys = new Map<string, Buffer>();
  const plan: Planned[] = [];
  try {
    await savePolicySet(gw, [{ id: 'bench-hw', action: ACTION, priority: 10, require: { anyOf: [['hardware_otp']] }, acr: 'urn:stepgate:aal2', tokenTtlSeconds: 120 }], { who: { actor: 'bench' } });
    const lines: string[] = [];
    families.forEach((family, f) => {
      for (let i = 0; i < USERS; i += 1) {
        const n = f * USERS + i;
        const serial = `V-${family.toUpperCase()}-${i}`;
        const seed = randomBytes(20);
        keys.set(serial, seed);
        lines.push(FAMILIES[family].csv(serial, seed.toString('hex')));
        plan.push({ family, userId: `usr_bench${String(n).padStart(8, '0')}`, username: `u${n}`, serial });
      }
    });
    await importTokenFile(gw, { data: Buffer.from(lines.join('\n')), fileName: 'bench.csv', source: 'cli' }, { actor: 'bench' });
    for (const p of plan) {
      const params = FAMILIES[p.family].params;
      const gen = tokenCodeGenerator(createSecretKey(keys.get(p.serial) as Buffer), params);
      // Time tokens are bound with the previous step's code, so the current one is still unused.
      // On a loaded machine a step can end between the code and the check: then once more.
      for (let attempt = 0; ; attempt += 1) {
        const code = params.kind === 'hotp' ? gen(0) : gen(tokenStep(params, new Date()) - 1);
        try {
          await assignToken(gw, { actor: 'bench', by: 'helpdesk' }, { serial: p.serial, userId: p.userId, code, reason: 'bench' });
          break;
        } catch (err) {
          if (attempt > 0 || params.kind === 'hotp' || (err as { code?: string }).code !== 'token_code_invalid') throw err;
        }
      }
    }
  } finally {
    await gw.close();
  }

  if (values['in-process'] === true) {
    await verifyInProcess(config, seeded.clientId, plan, keys, families);
    return;
  }
  const nodeArgs = values.profile === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${values.profile}`];
  const server: Child = await startStepgate(['serve', '--config', configFile], env, { port, nodeArgs });
  try {
    type Body = { path: string; ticket: string; body: string };
    const verifyAll = (list: Body[]) => {
      let next = 0;
      return load({
        url: server.url,
        // autocannon refuses more connections than requests (a smoke run's short rounds).
        connections: Math.min(CONNECTIONS, list.length),
        durationSeconds: 120,
        amount: list.length,
        requests: [
          {
            method: 'POST',
            path: '/x',
            headers: { 'content-type': 'application/json' },
            setupRequest: (req) => {
              const b = list[next++ % list.length] as Body;
              return { ...req, path: b.path, headers: { 'content-type': 'application/json', authorization: `Ticket ${b.ticket}` }, body: b.body };
            },
          },
        ],
      });
    };
    // Every family's step-ups and codes first (time codes stay good for a step either side).
    const bodiesOf = new Map<Family, Body[]>();
    for (const family of families) {
      const bodies = (await pendingCodes(config, seeded.clientId, plan.filter((p) => p.family === family), keys)).map((t) => ({
        path: `/v1/stepup/${t.id}/verify`, ticket: t.ticket, body: JSON.stringify({ factor: 'hardware_otp', code: t.code }),
      }));
      // One by hand first: a bench that measures refusals would measure the wrong thing.
      const first = bodies.shift();
      if (first !== undefined) {
        const res = await fetch(`${server.url}${first.path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Ticket ${first.ticket}` }, body: first.body });
        if (res.status !== 200) throw new Error(`${family}: a correct code was refused: ${res.status} ${await res.text()}`);
      }
      bodiesOf.set(family, bodies);
    }
    // A quarter of every family's codes warm the server up first, unmeasured, so no family
    // pays for compiling the request path: measured in a fresh process one after the other,
    // the first (HOTP) came out ~25 % below the last (SM3) for that alone.
    const warmUp = families.flatMap((family) => (bodiesOf.get(family) as Body[]).splice(0, Math.floor((bodiesOf.get(family) as Body[]).length / 4)));
    log(`warming up with ${warmUp.length} verifications of all families`);
    if (warmUp.length > 0) await verifyAll(warmUp);
    // The same server's JSON echo (all middleware), in a round of its own before every
    // family's round and after the last: a baseline taken minutes earlier in another process
    // drifts with the machine's load, one interleaved with the rounds does not.
    const echoBody = '{"factor":"hardware_otp","code":"123456"}';
    const echoRound = (amount: number) =>
      load({ url: server.url, connections: Math.min(CONNECTIONS, amount), durationSeconds: 120, amount, requests: [{ method: 'POST', path: '/v1/echo', headers: { 'content-type': 'application/json' }, body: echoBody }] });
    const echo = { ok: 0, cpu: 0, perRound: [] as string[] };
    const measureEcho = async (amount: number) => {
      const cpuBefore = server.cpuSeconds();
      const r = await echoRound(amount);
      const cpu = server.cpuSeconds() - cpuBefore;
      const ok = r.rps * r.durationSeconds;
      echo.ok += ok;
      echo.cpu += cpu;
      echo.perRound.push(cpu > 0 ? (ok / cpu).toFixed(0) : '?');
    };
    // --order (e.g. totp,hotp,sm3,hotp) tells a family's own cost from its place in the sequence.
    const order = measuredOrder(families);
    // ~1 s of echo a round: enough requests that the CPU clock's resolution does not show.
    const echoAmount = SMOKE ? CONNECTIONS : 3000;
    await echoRound(echoAmount); // warm-up, unmeasured
    const rounds = new Map<Family, { requests: number; ok: number; seconds: number; cpu: number; p50: number[]; p99: number[]; errors: number; perRound: string[] }>();
    for (const [i, family] of order.entries()) {
      const left = order.slice(i).filter((f) => f === family).length;
      const all = bodiesOf.get(family) as Body[];
      const bodies = all.splice(0, Math.ceil(all.length / left));
      await measureEcho(echoAmount);
      log(`verifying ${bodies.length} ${family} codes through the HTTP API`);
      const cpuBefore = server.cpuSeconds();
      const startedUs = process.hrtime.bigint() / 1000n;
      const r = await verifyAll(bodies);
      const cpu = server.cpuSeconds() - cpuBefore;
      // The same monotonic clock as the profile's sample times, to cut a family's window out of it.
      if (values.profile !== undefined) log(`  ${family} window in the profile: ${startedUs}..${process.hrtime.bigint() / 1000n} µs`);
      const ok = r.rps * r.durationSeconds;
      log(`  ${r.rps.toFixed(0)}/s, ${cpu > 0 ? (ok / cpu).toFixed(0) : '?'} per gateway CPU-second, p50 ${r.p50} ms, p99 ${r.p99} ms`);
      const acc = rounds.get(family) ?? { requests: 0, ok: 0, seconds: 0, cpu: 0, p50: [], p99: [], errors: 0, perRound: [] };
      acc.requests += r.requests;
      acc.ok += ok;
      acc.seconds += r.durationSeconds;
      acc.cpu += cpu;
      acc.p50.push(r.p50);
      acc.p99.push(r.p99);
      acc.errors += r.non2xx + r.errors;
      acc.perRound.push(cpu > 0 ? (ok / cpu).toFixed(0) : '?');
      rounds.set(family, acc);
    }
    await measureEcho(echoAmount);
    if (echo.cpu > 0) {
      const perCpuSecond = echo.ok / echo.cpu;
      log(`  same-server echo: ${perCpuSecond.toFixed(0)} per gateway CPU-second (rounds: ${echo.perRound.join(', ')})`);
      rows.push({ kind: 'echo', perCpuSecond, scenario: 'the same server\'s JSON echo (POST /v1/echo), interleaved with the rounds', value: perCpuSecond, unit: 'per CPU-second', note: `rounds: ${echo.perRound.join(', ')}` });
    }
    for (const [family, acc] of rounds) {
      const rps = acc.ok / acc.seconds;
      const p50 = Math.max(...acc.p50);
      const p99 = Math.max(...acc.p99);
      rows.push({
        kind: family,
        ...(acc.cpu > 0 ? { perCpuSecond: acc.ok / acc.cpu } : {}),
        p50,
        p99,
        errors: acc.errors,
        rssMb: server.rssMb(),
        scenario: `verify ${family === 'sm3' ? 'SM3 (GM/T 0021, time)' : family.toUpperCase()} through POST /v1/stepup/{id}/verify (${values.pg ? 'postgres' : 'sqlite'})`,
        value: rps,
        unit: 'verifications/s',
        note: `p50 ${p50} ms, p99 ${p99} ms, ${acc.requests} requests, ${acc.errors} not 2xx, ${acc.cpu > 0 ? (acc.ok / acc.cpu).toFixed(0) : '?'} per gateway CPU-second${acc.perRound.length > 1 ? ` (rounds: ${acc.perRound.join(', ')})` : ''}`,
      });
    }
  } finally {
    await server.stop();
    await dropSchema(schema);
  }
}

const work = mkdtempSync(join(tmpdir(), 'stepgate-bench-hw-'));
try {
  log(`machine: ${cpus()[0]?.model ?? 'unknown'}, ${availableParallelism()} CPUs; node ${process.version}`);
  if (wanted('import')) await benchImport(work);
  if (wanted('verify')) await benchVerify(work);
} finally {
  rmSync(work, { recursive: true, force: true });
}
if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify({ tokens: TOKENS, rows }, null, 2)}\n`);
const width = Math.max(...rows.map((r) => r.scenario.length));
for (const r of rows) process.stdout.write(`${r.scenario.padEnd(width)}  ${r.value.toFixed(r.unit === 's' ? 2 : 0).padStart(9)} ${r.unit}${r.note === undefined ? '' : `  (${r.note})`}\n`);
