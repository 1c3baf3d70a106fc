import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { PaymentCodeConfig } from '../../src/payment-code/config.ts';
import { openConfiguredPaymentCodeStore } from '../../src/payment-code/service.ts';
import { STRICT, TEST_DATABASE_URL } from '../helpers/env.ts';
import { createTestGateway, TEST_MASTER_KEY, type TestGateway } from '../helpers/gateway.ts';
import { createPDatabase, makeApiKeys, type PDatabase, pConfig, spawnP, type SpawnedP } from '../helpers/payment-code.ts';
import { type GatewayProcess, startGatewayProcess } from '../helpers/processes.ts';
import { makeClient } from '../helpers/stepup-fixtures.ts';
import { type RoundRobinProxy, startRoundRobinProxy } from './round-robin-proxy.ts';

/**
 * The scale-out deployment of docs/scaling.md, on one machine: N `stepgate serve` processes
 * on one PostgreSQL schema behind a round-robin proxy, and M payment-code service processes
 * (P) on their own schema behind a second proxy, P talking to the gateways only through the
 * first proxy. `setup` is an in-process gateway on the same database for seeding and for
 * reading the tables afterwards.
 */
export interface Cluster {
  setup: TestGateway;
  gateways: GatewayProcess[];
  proxy: RoundRobinProxy;
  p: SpawnedP[];
  pProxy: RoundRobinProxy;
  pConfig: PaymentCodeConfig;
  pDatabase: PDatabase;
  pClient: Awaited<ReturnType<typeof makeClient>>;
  wallet: string;
  acquirer: string;
  /** Counts a P table (codes, redemptions…) straight from P's database. */
  pCount(table: 'pc_codes' | 'pc_redemptions', where?: { column: string; value: string }): Promise<number>;
  close(): Promise<void>;
}

export const PAYMENT_ACTION = 'payment_code.issue';

/** For `describe(…, { skip: needsPostgres() })`: the chaos tests run on PostgreSQL (strict mode: required). */
export function needsPostgres(): string | false {
  if (TEST_DATABASE_URL !== '') return false;
  if (STRICT) throw new Error('strict mode: the chaos tests need STEPGATE_TEST_DATABASE_URL');
  return 'not run: STEPGATE_TEST_DATABASE_URL is not set (the chaos tests run on PostgreSQL)';
}

export interface ClusterOptions {
  gateways?: number;
  paymentCodeServices?: number;
  /** Gateway settings over the chaos defaults (section → keys), written to their config file. */
  gatewayConfig?: Record<string, Record<string, unknown>>;
  /** Runs before the processes start (users, factors, policies in `setup`). */
  seed?(setup: TestGateway): Promise<void>;
}

const BASE_CONFIG: Record<string, Record<string, unknown>> = {
  rateLimits: { enabled: false },
  stepup: { pollIntervalSeconds: 1 },
  login: { delayBaseSeconds: 0 },
  database: { poolMax: 10 },
};

function gatewayConfigYaml(extra: Record<string, Record<string, unknown>>): string {
  const merged: Record<string, Record<string, unknown>> = { ...BASE_CONFIG };
  for (const [k, v] of Object.entries(extra)) merged[k] = { ...(merged[k] ?? {}), ...v };
  return stringify(merged);
}

export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const setup = await createTestGateway({ dialect: 'postgres', clock: { now: () => new Date() } });
  const started: { gateways: GatewayProcess[]; p: SpawnedP[]; proxies: RoundRobinProxy[] } = { gateways: [], p: [], proxies: [] };
  const pDatabase = createPDatabase('postgres');
  const stopAll = async () => {
    await Promise.all(started.p.map((x) => x.stop().catch(() => undefined)));
    await Promise.all(started.proxies.map((x) => x.close()));
    await Promise.all(started.gateways.map((x) => x.stop().catch(() => undefined)));
    await setup.close();
    await pDatabase.drop();
  };
  try {
    const pClient = await makeClient(setup.gw, 'payment-code service', [PAYMENT_ACTION]);
    await options.seed?.(setup);
    const configFile = join(setup.database.dataDir, 'chaos.yaml');
    writeFileSync(configFile, gatewayConfigYaml(options.gatewayConfig ?? {}));
    const processOptions = { masterKey: TEST_MASTER_KEY, args: ['--config', configFile] };
    const gateways = await Promise.all(Array.from({ length: options.gateways ?? 2 }, () => startGatewayProcess(setup.database, processOptions)));
    started.gateways.push(...gateways);
    const proxy = await startRoundRobinProxy(gateways);
    started.proxies.push(proxy);
    const config = pConfig({ url: proxy.url, issuer: setup.config.http.publicUrl, client: pClient }, pDatabase, { database: { poolMax: 10 } });
    const [wallet, acquirer] = (await makeApiKeys(config, [
      { name: 'wallet', role: 'wallet' },
      { name: 'till', role: 'acquirer' },
    ])) as [string, string];
    const p = await Promise.all(Array.from({ length: options.paymentCodeServices ?? 2 }, () => spawnP(config)));
    started.p.push(...p);
    const pProxy = await startRoundRobinProxy(p.map((x) => ({ port: Number(new URL(x.url).port) })));
    started.proxies.push(pProxy);
    return {
      setup,
      gateways,
      proxy,
      p,
      pProxy,
      pConfig: config,
      pDatabase,
      pClient,
      wallet,
      acquirer,
      async pCount(table, where) {
        const store = await openConfiguredPaymentCodeStore(config);
        try {
          let q = store.db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n'));
          if (where !== undefined) q = q.where(where.column as never, '=', where.value as never);
          return Number((await q.executeTakeFirstOrThrow()).n);
        } finally {
          await store.close();
        }
      },
      close: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** Runs `fn(i)` for i < n with at most `width` in flight. */
export async function pooled<T>(n: number, width: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async () => {
      while (next < n) {
        const i = next;
        next += 1;
        out[i] = await fn(i);
      }
    }),
  );
  return out;
}

export interface Answer {
  status: number;
  body: Record<string, unknown>;
}

/** One HTTP call that never throws: a network failure is status 0. */
export async function send(url: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  try {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    let parsed: Record<string, unknown> = {};
    try {
      parsed = JSON.parse(text) as Record<string, unknown>;
    } catch {
      parsed = { text };
    }
    return { status: res.status, body: parsed };
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    return { status: 0, body: { code: `network: ${cause?.code ?? cause?.message ?? String(err)}` } };
  }
}

/** `200×1 409×999` */
export function histogram(answers: Answer[]): string {
  const m = new Map<string, number>();
  for (const a of answers) {
    const k = (a.status >= 400 || a.status === 0) && typeof a.body.code === 'string' ? `${a.status} ${a.body.code}` : String(a.status);
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return [...m].sort().map(([k, n]) => `${k}×${n}`).join(', ');
}

/** Figures collected by the chaos tests, printed at the end and written for docs/scaling.md. */
export const figures: Record<string, unknown>[] = [];
export function record(entry: Record<string, unknown>): void {
  figures.push(entry);
  console.log(`chaos figure: ${JSON.stringify(entry)}`);
}
