// npx node --disable-warning=ExperimentalWarning bench/token-work.ts [--tokens N] [--rounds R] [--connections C] [--pg]
//   (add --cpu-prof --cpu-prof-dir=DIR before the script for a profile; the windows are logged)
//
// Where the token endpoint's CPU goes without HTTP (issue 9, token target): the work of
// `POST /v1/stepup/{id}/token` (bench/lib/in-process.ts tokenWorkInProcess) next to each of
// its parts run alone over the same number of tokens with the same number in flight, and a raw
// jose ES256 sign in this process as the baseline: the address counter, the client's Basic
// credentials (client row read, secret hash, constant-time compare), the client counter, the
// step-up read, the signature, and the whole poll (read, claims, signature, the guarded
// completed → token_issued UPDATE with its audit record in one transaction, its commit and
// WAL sync). Rounds are interleaved (A, B, A, B) on a shared machine; CPU time of this process
// (all threads: the WAL fdatasync and the signature run on the libuv pool), not wall time.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config/load-config.ts';
import { verifyClientSecret } from '../src/flows/clients.ts';
import { loadStepUpForClient, pollStepUpToken } from '../src/flows/stepup-token.ts';
import { createGateway } from '../src/gateway.ts';
import { parseBasicCredentials } from '../src/http/client-auth.ts';
import { consumeRate } from '../src/http/rate-limit.ts';
import { issueStepUpToken } from '../src/stepup/issue-token.ts';
import { inFlight, tokenWorkInProcess } from './lib/in-process.ts';
import { joseSignRate } from './lib/micro.ts';
import { seedCompletedStepUps, seedGateway } from './lib/seed.ts';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '4000' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '32' },
    pg: { type: 'boolean', default: false },
  },
});
const TOKENS = Number(values.tokens);
const ROUNDS = Number(values.rounds);
const CONNECTIONS = Number(values.connections);
const PG_URL = process.env.STEPGATE_BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const USERS = 1000;
const log = (line: string) => process.stderr.write(`${line}\n`);

const work = mkdtempSync(join(tmpdir(), 'stepgate-bench-token-'));
const schema = `bench_tok_${process.pid}`;
try {
  const env = {
    STEPGATE_DATA_DIR: work,
    STEPGATE_MASTER_KEY: randomBytes(32).toString('base64'),
    STEPGATE_LOG_LEVEL: 'warn',
    STEPGATE_PUBLIC_URL: 'http://127.0.0.1:8080',
    ...(values.pg ? { STEPGATE_DATABASE_URL: PG_URL, STEPGATE_DATABASE_SCHEMA: schema } : {}),
  };
  // Rate limits on (their counting is part of the cost) but out of reach of one address.
  const configFile = join(work, 'token-bench.yaml');
  writeFileSync(configFile, 'rateLimits:\n  perIp: 1000000000\n  loginPerIp: 1000000000\n  stepupUserPerIp: 1000000000\n  perClient: 1000000000\n');
  const config = loadConfig({ env, file: configFile });
  const seeded = await seedGateway(config, USERS, log);
  const gw = await createGateway(config);
  const limits = gw.config.rateLimits;
  const who = { ip: '127.0.0.1', requestId: null };
  const credentials = parseBasicCredentials(seeded.basic);
  if (credentials === undefined) throw new Error('bench: bad Basic credentials');
  const key = await gw.keys.activeKey();
  const claims = (id: string) => {
    const iat = Math.floor(Date.now() / 1000);
    return {
      iss: 'http://127.0.0.1:8080', sub: 'usr_bench00000001', aud: seeded.clientId, iat, exp: iat + 120, jti: randomUUID(), txn: id, auth_time: iat,
      acr: 'urn:stepgate:aal1', amr: ['pwd'], authorization_details: [{ type: 'payment_code.issue', amount: '88.00', currency: 'CNY', payee: 'shop-bench', deviceId: 'dev-bench' }],
    };
  };
  // Each part over its own fresh completed step-ups (the poll consumes them; the reads do not mind).
  const parts: [string, (ids: string[]) => Promise<{ ops: number; perCpuSecond: number }>][] = [
    ['whole endpoint work (tokenWorkInProcess)', (ids) => tokenWorkInProcess(gw, ids, seeded.basic, CONNECTIONS)],
    ['  address counter (consumeRate ip)', (ids) => inFlight(ids, CONNECTIONS, async () => void (await consumeRate(gw, 'ip', '127.0.0.1', limits.perIp)))],
    ['  client secret (row read, SHA-256, constant-time compare)', (ids) => inFlight(ids, CONNECTIONS, async () => {
      const auth = await verifyClientSecret(gw, credentials.clientId, credentials.secret);
      if (!auth.ok) throw new Error(auth.reason);
    })],
    ['  client counter (consumeRate client)', (ids) => inFlight(ids, CONNECTIONS, async () => void (await consumeRate(gw, 'client', credentials.clientId, limits.perClient)))],
    ['  step-up read (loadStepUpForClient)', (ids) => inFlight(ids, CONNECTIONS, async (id) => void (await loadStepUpForClient(gw, id, credentials.clientId)))],
    ['  signature (issueStepUpToken, jose ES256)', (ids) => inFlight(ids, CONNECTIONS, async (id) => void (await issueStepUpToken(key, claims(id))))],
    ['  an audit record alone (AuditLog.append in its own transaction, commit)', (ids) => inFlight(ids, CONNECTIONS, async (id) => {
      await gw.audit.append(gw.store.db, { type: 'stepup.token_issued', actor: seeded.clientId, subject: 'usr_bench00000001', ip: '127.0.0.1', requestId: null, data: { stepupId: id, jti: randomUUID(), acr: 'urn:stepgate:aal1', expiresIn: 120 } });
    })],
    ['  poll: read + claims + signature + hand-out with audit, commit (pollStepUpToken)', (ids) => inFlight(ids, CONNECTIONS, async (id) => void (await pollStepUpToken(gw, id, credentials.clientId, who)))],
  ];
  const cost = new Map<string, number[]>();
  const joseSign: number[] = [];
  try {
    for (let round = 0; round < ROUNDS; round += 1) {
      const order = round % 2 === 0 ? parts : [...parts].reverse();
      for (const [name, run] of order) {
        const ids = await seedCompletedStepUps(gw, seeded.clientId, TOKENS, USERS);
        const startedUs = process.hrtime.bigint() / 1000n;
        const flushes = gw.store.commitStats?.flushes ?? 0;
        const cpu0 = process.cpuUsage();
        const r = await run(ids);
        const cpu = process.cpuUsage(cpu0);
        const us = 1e6 / r.perCpuSecond;
        const syncs = ((gw.store.commitStats?.flushes ?? 0) - flushes) / ids.length;
        log(`round ${round + 1} ${name}: ${us.toFixed(0)} µs CPU (user ${(cpu.user / ids.length).toFixed(0)}, system ${(cpu.system / ids.length).toFixed(0)}; ${syncs.toFixed(2)} WAL syncs per token; window ${startedUs}..${process.hrtime.bigint() / 1000n} µs)`);
        cost.set(name, [...(cost.get(name) ?? []), us]);
      }
      const sign = await joseSignRate(2);
      joseSign.push(1e6 / sign.perCpuSecond);
      log(`round ${round + 1} raw jose ES256 sign: ${(1e6 / sign.perCpuSecond).toFixed(0)} µs CPU`);
    }
  } finally {
    await gw.close();
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  const width = Math.max(...parts.map(([n]) => n.length));
  process.stdout.write(`\nCPU µs per token, median of ${ROUNDS} rounds (${TOKENS} tokens each, ${CONNECTIONS} in flight, ${values.pg ? 'PostgreSQL' : 'SQLite'}):\n`);
  for (const [name] of parts) process.stdout.write(`${name.padEnd(width)}  ${median(cost.get(name) ?? []).toFixed(0).padStart(5)}   (${(cost.get(name) ?? []).map((x) => x.toFixed(0)).join(', ')})\n`);
  process.stdout.write(`${'raw jose ES256 sign (SignJWT, one key object)'.padEnd(width)}  ${median(joseSign).toFixed(0).padStart(5)}   (${joseSign.map((x) => x.toFixed(0)).join(', ')})\n`);
} finally {
  rmSync(work, { recursive: true, force: true });
  if (values.pg) {
    const pg = (await import('pg')).default;
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    await client.query(`drop schema if exists ${schema} cascade`).finally(() => client.end());
  }
}
