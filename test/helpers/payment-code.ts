import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import pg from 'pg';
import type { Clock } from '../../src/clock.ts';
import { createApiKey } from '../../src/payment-code/api-keys.ts';
import { loadPaymentCodeConfig, type PaymentCodeConfig } from '../../src/payment-code/config.ts';
import { EventLog } from '../../src/payment-code/events.ts';
import { createPaymentCodeLogger } from '../../src/payment-code/logger.ts';
import { createPaymentCodeService, openConfiguredPaymentCodeStore, type PaymentCodeService } from '../../src/payment-code/service.ts';
import type { ApiKeyRole } from '../../src/payment-code/store/schema.ts';
import { systemClock } from '../../src/verifier/index.ts';
import type { DialectName } from '../../src/store/database.ts';
import { createTestGateway, LogCapture, type TestGateway } from './gateway.ts';
import { listen, makeClient, makeUser, PASSWORD, setPolicies } from './stepup-fixtures.ts';
import { TEST_DATABASE_URL } from './env.ts';

/**
 * Two services, as in production: the gateway (in this process, on a real port) and the
 * payment-code service P (in this process on its own port, or as a child process), each with
 * its own database, talking only over HTTP.
 */

export const BIN = fileURLToPath(new URL('../../bin/stepgate.js', import.meta.url));
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const ISSUE = 'payment_code.issue';
export const OFFLINE = 'payment_code.offline_seed';
const execFileAsync = promisify(execFile);

/** Password policies for both actions (WebAuthn, the demo's choice for offline seeds, is not installed yet). */
export const PASSWORD_POLICIES = [
  {
    id: 'codes-small',
    action: ISSUE,
    priority: 10,
    when: { amount: { lte: '1000.00', currency: 'CNY' } },
    require: { anyOf: [['password']] },
    acr: 'urn:stepgate:aal1' as const,
    tokenTtlSeconds: 120,
  },
  { id: 'codes-large', action: ISSUE, priority: 20, require: { anyOf: [['totp']] }, acr: 'urn:stepgate:aal2' as const },
  { id: 'offline-pwd', action: OFFLINE, priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' as const, tokenTtlSeconds: 120 },
];

export interface GatewayForP {
  tg: TestGateway;
  url: string;
  issuer: string;
  client: Awaited<ReturnType<typeof makeClient>>;
  alice: { id: string; username: string };
  close(): Promise<void>;
}

export async function startGatewayForP(dialect: DialectName, options: { clock?: Clock; redirectUris?: string[] } = {}): Promise<GatewayForP> {
  const tg = await createTestGateway({ dialect, ...(options.clock === undefined ? {} : { clock: options.clock }), config: { stepup: { pollIntervalSeconds: 1 } } });
  await setPolicies(tg.gw, PASSWORD_POLICIES);
  const alice = await makeUser(tg.gw, 'alice');
  const client = await makeClient(tg.gw, 'payment-code service', [ISSUE, OFFLINE], options.redirectUris ?? []);
  const server = await listen(tg.app);
  return {
    tg,
    url: server.url,
    issuer: tg.config.http.publicUrl,
    client,
    alice: { id: alice.id, username: 'alice' },
    async close() {
      await server.close();
      await tg.close();
    },
  };
}

/** P's own database: a temp SQLite file, or its own PostgreSQL schema. */
export interface PDatabase {
  dialect: DialectName;
  dataDir: string;
  url: string;
  schema: string;
  drop(): Promise<void>;
}

export function createPDatabase(dialect: DialectName): PDatabase {
  const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-pc-'));
  const schema = dialect === 'postgres' ? `pc_${process.pid}_${randomBytes(5).toString('hex')}` : 'payment_code';
  return {
    dialect,
    dataDir,
    url: dialect === 'postgres' ? TEST_DATABASE_URL : '',
    schema,
    async drop() {
      if (dialect === 'postgres') {
        const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
        await client.connect();
        try {
          await client.query(`drop schema if exists ${schema} cascade`);
        } finally {
          await client.end();
        }
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export const P_MASTER_KEY = randomBytes(32).toString('base64');

export function pConfig(g: Pick<GatewayForP, 'url' | 'issuer' | 'client'>, db: PDatabase, overrides: Record<string, unknown> = {}, mode: 'development' | 'production' = 'development'): PaymentCodeConfig {
  const base = {
    http: { port: 0, host: '127.0.0.1', publicUrl: 'http://localhost:8090' },
    dataDir: db.dataDir,
    database: { url: db.url, schema: db.schema },
    secrets: { masterKey: P_MASTER_KEY },
    log: { level: 'info' },
    gateway: { url: g.url, issuer: g.issuer, clientId: g.client.clientId, clientSecret: g.client.secret },
    stepUp: { issueAcr: 'urn:stepgate:aal1', offlineSeedAcr: 'urn:stepgate:aal1' },
  };
  return loadPaymentCodeConfig({ env: {}, overrides: { ...merge(base, overrides), mode } });
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] = typeof cur === 'object' && cur !== null && !Array.isArray(cur) && typeof v === 'object' && v !== null && !Array.isArray(v) ? merge(cur as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}

export interface InProcessP {
  svc: PaymentCodeService;
  url: string;
  logs: LogCapture;
  close(): Promise<void>;
}

export async function startInProcessP(config: PaymentCodeConfig, options: { clock?: Clock; fetch?: typeof fetch } = {}): Promise<InProcessP> {
  const logs = new LogCapture();
  const svc = await createPaymentCodeService(config, { clock: options.clock ?? systemClock, logger: createPaymentCodeLogger('debug', logs), ...(options.fetch === undefined ? {} : { fetch: options.fetch }) });
  const server = await listen(svc.app);
  return {
    svc,
    url: server.url,
    logs,
    async close() {
      await server.close();
      await svc.close();
    },
  };
}

/** API keys straight into P's database (what `stepgate payment-code api-keys create` does). */
export async function makeApiKeys(config: PaymentCodeConfig, keys: { name: string; role: ApiKeyRole }[]): Promise<string[]> {
  const store = await openConfiguredPaymentCodeStore(config);
  try {
    await store.migrate();
    const events = new EventLog(store.dialect, systemClock);
    const out: string[] = [];
    for (const k of keys) out.push((await createApiKey(store.db, events, systemClock, k, 'test')).key);
    return out;
  } finally {
    await store.close();
  }
}

export function pEnv(config: PaymentCodeConfig, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('STEPGATE_')) env[k] = v;
  return {
    ...env,
    STEPGATE_MODE: config.mode,
    STEPGATE_PAYMENT_CODE_HTTP_PORT: String(config.http.port),
    STEPGATE_PAYMENT_CODE_HTTP_HOST: config.http.host,
    STEPGATE_PAYMENT_CODE_PUBLIC_URL: config.http.publicUrl,
    STEPGATE_PAYMENT_CODE_DATA_DIR: config.dataDir,
    STEPGATE_PAYMENT_CODE_DATABASE_URL: config.database.url,
    STEPGATE_PAYMENT_CODE_DATABASE_SCHEMA: config.database.schema,
    STEPGATE_PAYMENT_CODE_MASTER_KEY: config.secrets.masterKey,
    STEPGATE_PAYMENT_CODE_GATEWAY_URL: config.gateway.url,
    STEPGATE_PAYMENT_CODE_GATEWAY_ISSUER: config.gateway.issuer,
    STEPGATE_PAYMENT_CODE_CLIENT_ID: config.gateway.clientId,
    STEPGATE_PAYMENT_CODE_CLIENT_SECRET: config.gateway.clientSecret,
    STEPGATE_PAYMENT_CODE_ISSUE_ACR: config.stepUp.issueAcr,
    STEPGATE_PAYMENT_CODE_OFFLINE_SEED_ACR: config.stepUp.offlineSeedAcr,
    STEPGATE_PAYMENT_CODE_LOG_LEVEL: 'info',
    ...extra,
  };
}

export interface SpawnedP {
  child: ChildProcess;
  url: string;
  stdout(): string;
  stderr(): string;
  stop(): Promise<number | null>;
}

/** `stepgate payment-code-service` as an operator runs it: a real process, configured through its environment. */
export async function spawnP(config: PaymentCodeConfig, timeoutMs = 60_000): Promise<SpawnedP> {
  const child = spawn(process.execPath, [BIN, 'payment-code-service'], { cwd: ROOT, env: pEnv(config), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (c: Buffer) => {
    err += c.toString('utf8');
  });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      // A process left running would keep the test file from ever exiting.
      child.kill('SIGKILL');
      reject(new Error(`P did not start in ${timeoutMs} ms: ${err}${out}`));
    }, timeoutMs);
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString('utf8');
      for (const line of out.split('\n')) {
        if (!line.includes('payment-code service listening')) continue;
        clearTimeout(timer);
        resolve((JSON.parse(line) as { url: string }).url);
      }
    });
    void exited.then(([code]) => {
      clearTimeout(timer);
      reject(new Error(`P exited with ${code}: ${err}${out}`));
    });
  });
  return {
    child,
    url,
    stdout: () => out,
    stderr: () => err,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      const [code] = await exited;
      return code;
    },
  };
}

// ---- HTTP ------------------------------------------------------------------------------

export interface Answer {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
  text: string;
}

export async function call(url: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // not JSON
  }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

/** The user proves the password at the gateway through its native JSON API (the ticket P handed out). */
export async function completeWithPassword(gatewayUrl: string, stepupId: string, ticket: string, password = PASSWORD): Promise<Answer> {
  return call(gatewayUrl, 'POST', `/v1/stepup/${stepupId}/verify`, { factor: 'password', password }, { authorization: `Ticket ${ticket}` });
}

export const CONTEXT = { amountLimit: '120.00', currency: 'CNY', deviceId: 'phone-1', payee: 'shop-42' };

/** Both calls of an issuance: 401 with the step-up, the user completes it, 201 with the code. */
export async function issueWithStepUp(pUrl: string, gatewayUrl: string, walletKey: string, subject: string, context: Record<string, unknown> = CONTEXT, extra: Record<string, unknown> = {}): Promise<Answer> {
  const first = await call(pUrl, 'POST', '/v1/payment-codes', { subject, context }, bearer(walletKey));
  if (first.status !== 401 || first.body.code !== 'step_up_required') throw new Error(`expected step_up_required, got ${first.status} ${first.text}`);
  const done = await completeWithPassword(gatewayUrl, first.body.stepup_id as string, first.body.ticket as string);
  if (done.status !== 200) throw new Error(`step-up verify failed: ${done.text}`);
  return call(pUrl, 'POST', '/v1/payment-codes', { subject, context, stepup_id: first.body.stepup_id, ...extra }, bearer(walletKey));
}

/** zbarimg reads a PNG (independent decoder); returns the decoded texts. */
export async function zbar(png: Buffer, dir: string, name: string): Promise<string[]> {
  const file = join(dir, `${name}.png`);
  writeFileSync(file, png);
  const { stdout } = await execFileAsync('zbarimg', ['--quiet', '--raw', file]);
  return stdout.split('\n').filter((l) => l !== '');
}

export { PASSWORD };
