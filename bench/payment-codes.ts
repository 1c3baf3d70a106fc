// npx node --disable-warning=ExperimentalWarning bench/payment-codes.ts [--codes N] [--connections C] [--pg] [--smoke] [--out FILE]
//
// The payment-code scenario: issue + redeem codes with pre-completed step-ups. The gateway
// runs as its own process (`stepgate serve`) holding N step-ups a user has already completed;
// the payment-code service runs in this process (so each phase of a request can be timed)
// and is driven over HTTP by C concurrent wallets, each taking the next step-up and doing
//   POST /v1/payment-codes {stepup_id}   → P fetches the token from the gateway, verifies it,
//                                          writes the code (its pictures: on demand, from their URLs)
//   POST /v1/payment-codes/redeem        → P resolves the code to the payer, exactly once.
// Reports codes/s (issue + redeem pairs), p50/p99, and where issuance time goes — in
// particular the share spent in token verification (src/verifier). Not a test: asserts nothing.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { loadConfig } from '../src/config/load-config.ts';
import { createGateway } from '../src/gateway.ts';
import { createApiKey } from '../src/payment-code/api-keys.ts';
import { loadPaymentCodeConfig } from '../src/payment-code/config.ts';
import { canonicalJson } from '../src/payment-code/events.ts';
import { issueStepUpContext } from '../src/payment-code/issue-code.ts';
import { createPaymentCodeLogger } from '../src/payment-code/logger.ts';
import { createPaymentCodeService } from '../src/payment-code/service.ts';
import type { Phase } from '../src/payment-code/step-up.ts';
import { freePort, startStepgate } from './lib/processes.ts';
import { CONTEXT, seedCompletedStepUps, seedGateway } from './lib/seed.ts';

const { values } = parseArgs({
  options: {
    codes: { type: 'string' },
    connections: { type: 'string', default: '16' },
    users: { type: 'string', default: '200' },
    pg: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const SMOKE = values.smoke === true;
const CODES = Number(values.codes ?? (SMOKE ? 100 : 3000));
const CONNECTIONS = Number(values.connections);
const USERS = Number(values.users);
const PG_URL = process.env.STEPGATE_BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const log = (line: string) => process.stderr.write(`${line}\n`);

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

const ms = (seconds: number) => Math.round(seconds * 10_000) / 10;

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'stepgate-bench-pc-'));
  const schema = `bench_${randomBytes(4).toString('hex')}`;
  let stopGateway: (() => Promise<void>) | undefined;
  let closeP: (() => Promise<void>) | undefined;
  try {
    log(`payment-code bench: ${CODES} codes, ${CONNECTIONS} connections, ${values.pg ? 'PostgreSQL' : 'SQLite'} (both services)`);
    const gatewayPort = await freePort();
    const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
    const masterKey = randomBytes(32).toString('base64');
    const env: Record<string, string> = {
      STEPGATE_DATA_DIR: join(work, 'gateway'),
      STEPGATE_HTTP_PORT: String(gatewayPort),
      STEPGATE_HTTP_HOST: '127.0.0.1',
      STEPGATE_PUBLIC_URL: gatewayUrl,
      STEPGATE_MASTER_KEY: masterKey,
      STEPGATE_LOG_LEVEL: 'warn',
      ...(values.pg ? { STEPGATE_DATABASE_URL: PG_URL, STEPGATE_DATABASE_SCHEMA: `g${schema}` } : {}),
    };
    // The gateway's per-address and per-client budgets would measure themselves, not the codes.
    const configFile = join(work, 'gateway.yaml');
    writeFileSync(configFile, 'rateLimits:\n  perIp: 1000000000\n  loginPerIp: 1000000000\n  stepupUserPerIp: 1000000000\n  perClient: 1000000000\n');
    const gatewayConfig = loadConfig({ env, file: configFile });
    const seeded = await seedGateway(gatewayConfig, USERS, log);
    const opener = await createGateway(gatewayConfig);
    const stepupIds = await seedCompletedStepUps(opener, seeded.clientId, CODES, USERS);
    const userOf = new Map<string, string>();
    const rows = await opener.store.db.selectFrom('stepups').select(['id', 'user_id']).where('client_id', '=', seeded.clientId).execute();
    for (const r of rows) userOf.set(r.id, r.user_id);
    await opener.close();
    const gateway = await startStepgate(['serve', '--config', configFile], env, { port: gatewayPort });
    stopGateway = () => gateway.stop();
    log(`  gateway: ${gateway.url}, ${CODES} completed step-ups waiting for their token`);

    // ---- the payment-code service, in this process ----------------------------------------
    const phases = new Map<Phase, number[]>();
    const pConfig = loadPaymentCodeConfig({
      env: {},
      overrides: {
        mode: 'development',
        http: { port: 0, host: '127.0.0.1', publicUrl: 'http://127.0.0.1:8090' },
        dataDir: join(work, 'pc'),
        database: values.pg ? { url: PG_URL, schema: `p${schema}` } : { url: '' },
        secrets: { masterKey: randomBytes(32).toString('base64') },
        log: { level: 'warn' },
        gateway: { url: gatewayUrl, clientId: seeded.clientId, clientSecret: seeded.clientSecret },
        stepUp: { issueAcr: 'urn:stepgate:aal1' },
        codes: { ttlSeconds: 600 },
      },
    });
    const svc = await createPaymentCodeService(pConfig, {
      logger: createPaymentCodeLogger('warn'),
      observe: (phase, seconds) => {
        const list = phases.get(phase) ?? [];
        list.push(seconds);
        phases.set(phase, list);
      },
    });
    const wallet = await createApiKey(svc.store.db, svc.events, svc.clock, { name: 'bench wallet', role: 'wallet' }, 'bench');
    const till = await createApiKey(svc.store.db, svc.events, svc.clock, { name: 'bench till', role: 'acquirer' }, 'bench');
    // P's record of each step-up, as if the wallet had asked first (the 401 that starts one).
    const request = { amountLimit: CONTEXT.amount, currency: CONTEXT.currency, deviceId: CONTEXT.deviceId, payee: CONTEXT.payee };
    const now = Date.now();
    for (let i = 0; i < stepupIds.length; i += 500) {
      await svc.store.db
        .insertInto('pc_stepups')
        .values(stepupIds.slice(i, i + 500).map((id) => ({
          id, owner: wallet.id, action: 'payment_code.issue' as const, subject: userOf.get(id) as string, context: canonicalJson(issueStepUpContext(request)),
          status: 'pending' as const, token_sealed: null, failure: null, created_at: now, expires_at: now + 600_000, finished_at: null,
        })))
        .execute();
    }
    const server = createServer(svc.app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const pUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    closeP = async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await svc.close();
    };

    // ---- load: C wallets, each issue → redeem until the step-ups run out --------------------
    const issueLatency: number[] = [];
    const redeemLatency: number[] = [];
    const pairLatency: number[] = [];
    let errors = 0;
    let next = 0;
    const cpuBefore = process.cpuUsage();
    const gatewayCpuBefore = gateway.cpuSeconds();
    const started = process.hrtime.bigint();
    const post = async (path: string, key: string, body: unknown) => {
      const res = await fetch(`${pUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify(body) });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async () => {
        for (;;) {
          const i = next++;
          if (i >= stepupIds.length) return;
          const id = stepupIds[i] as string;
          const t0 = process.hrtime.bigint();
          const issued = await post('/v1/payment-codes', wallet.key, { subject: userOf.get(id), context: request, stepup_id: id });
          const t1 = process.hrtime.bigint();
          if (issued.status !== 201) {
            errors += 1;
            if (errors <= 3) log(`  issue failed: ${issued.status} ${JSON.stringify(issued.body)}`);
            continue;
          }
          const redeemed = await post('/v1/payment-codes/redeem', till.key, { code: issued.body.code, amount: '10.00', merchant: CONTEXT.payee });
          const t2 = process.hrtime.bigint();
          if (redeemed.status !== 200) {
            errors += 1;
            if (errors <= 3) log(`  redeem failed: ${redeemed.status} ${JSON.stringify(redeemed.body)}`);
            continue;
          }
          issueLatency.push(Number(t1 - t0) / 1e9);
          redeemLatency.push(Number(t2 - t1) / 1e9);
          pairLatency.push(Number(t2 - t0) / 1e9);
        }
      }),
    );
    const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9;
    const cpu = process.cpuUsage(cpuBefore);
    const pCpuSeconds = (cpu.user + cpu.system) / 1e6;
    const gatewayCpuSeconds = gateway.cpuSeconds() - gatewayCpuBefore;

    const sum = (xs: number[] | undefined) => (xs ?? []).reduce((a, b) => a + b, 0);
    const issueTotal = sum(issueLatency);
    const share = (phase: Phase) => (issueTotal === 0 ? 0 : sum(phases.get(phase)) / issueTotal);
    const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
    const verifications = sorted(phases.get('token_verification') ?? []);
    const result = {
      scenario: 'payment codes: issue + redeem with pre-completed step-ups',
      database: values.pg ? 'postgres' : 'sqlite',
      codes: pairLatency.length,
      errors,
      connections: CONNECTIONS,
      wallSeconds: Math.round(wallSeconds * 100) / 100,
      codesPerSecond: Math.round((pairLatency.length / wallSeconds) * 10) / 10,
      issueMs: { p50: ms(percentile(sorted(issueLatency), 50)), p99: ms(percentile(sorted(issueLatency), 99)) },
      redeemMs: { p50: ms(percentile(sorted(redeemLatency), 50)), p99: ms(percentile(sorted(redeemLatency), 99)) },
      issuePlusRedeemMs: { p50: ms(percentile(sorted(pairLatency), 50)), p99: ms(percentile(sorted(pairLatency), 99)) },
      tokenVerificationMs: { p50: ms(percentile(verifications, 50)), p99: ms(percentile(verifications, 99)) },
      // Shares of the wallet-observed issuance time (each request's wall time, summed). Under
      // concurrency the phases overlap with other requests' work, so they are shares of waiting
      // time as much as of CPU.
      shareOfIssueTime: {
        tokenVerification: Math.round(share('token_verification') * 1000) / 10,
        gatewayTokenFetch: Math.round(share('gateway_token') * 1000) / 10,
        codeWrite: Math.round(share('code_write') * 1000) / 10,
        renderImages: Math.round(share('render') * 1000) / 10,
      },
      cpuSeconds: { paymentCodeServiceAndLoad: Math.round(pCpuSeconds * 100) / 100, gateway: Math.round(gatewayCpuSeconds * 100) / 100 },
      machine: { cpus: availableParallelism(), model: cpus()[0]?.model ?? '' },
    };
    log(`  ${result.codes} codes in ${result.wallSeconds} s: ${result.codesPerSecond} codes/s (issue + redeem), errors ${errors}`);
    log(`  issue p50 ${result.issueMs.p50} ms p99 ${result.issueMs.p99} ms · redeem p50 ${result.redeemMs.p50} ms p99 ${result.redeemMs.p99} ms · pair p99 ${result.issuePlusRedeemMs.p99} ms`);
    log(`  share of issuance time: token verification ${result.shareOfIssueTime.tokenVerification} % (p50 ${result.tokenVerificationMs.p50} ms), gateway token fetch ${result.shareOfIssueTime.gatewayTokenFetch} %, code write ${result.shareOfIssueTime.codeWrite} %, images ${result.shareOfIssueTime.renderImages} %`);
    log(`  CPU: payment-code service + load generator ${result.cpuSeconds.paymentCodeServiceAndLoad} s, gateway ${result.cpuSeconds.gateway} s`);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    if (values.out !== undefined) {
      mkdirSync(join(values.out, '..'), { recursive: true });
      writeFileSync(values.out, `${JSON.stringify(result, null, 2)}\n`);
    }
  } finally {
    await closeP?.();
    await stopGateway?.();
    rmSync(work, { recursive: true, force: true });
    if (values.pg) {
      const pg = (await import('pg')).default;
      const client = new pg.Client({ connectionString: PG_URL });
      await client.connect();
      await client.query(`drop schema if exists g${schema} cascade`);
      await client.query(`drop schema if exists p${schema} cascade`);
      await client.end();
    }
  }
}

await main();
