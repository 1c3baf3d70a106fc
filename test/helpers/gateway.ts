import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import request from 'supertest';
import type { Express } from 'express';
import { createApp } from '../../src/app.ts';
import { FixedClock, type Clock } from '../../src/clock.ts';
import { loadConfig } from '../../src/config/load-config.ts';
import type { Config } from '../../src/config/schema.ts';
import { createGateway, type Gateway } from '../../src/gateway.ts';
import { createLogger } from '../../src/logger.ts';
import type { DialectName } from '../../src/store/database.ts';
import { createTestDatabase, type TestDatabase } from './stores.ts';

/** Captures log lines so tests can assert that no secret was logged. */
export class LogCapture extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.lines.push(chunk.toString('utf8'));
    cb();
  }
  get text(): string {
    return this.lines.join('');
  }
}

export interface TestGateway {
  gw: Gateway;
  app: Express;
  config: Config;
  clock: FixedClock;
  logs: LogCapture;
  database: TestDatabase;
  /** A supertest agent keeps cookies between requests (a browser). */
  agent(): request.Agent;
  http(): ReturnType<typeof request>;
  close(): Promise<void>;
}

export interface TestGatewayOptions {
  dialect?: DialectName;
  /** Config overrides merged over config/default.yaml. */
  config?: Record<string, unknown>;
  clock?: Clock;
  /** Reuse a database (e.g. a second gateway process on the same PostgreSQL). */
  database?: TestDatabase;
  masterKey?: string;
}

export const TEST_MASTER_KEY = randomBytes(32).toString('base64');

export function testConfig(database: TestDatabase, overrides: Record<string, unknown> = {}, masterKey = TEST_MASTER_KEY): Config {
  return loadConfig({
    env: {},
    overrides: mergeDeep(
      {
        dataDir: database.dataDir,
        database: { url: database.url, schema: database.schema },
        secrets: { masterKey },
        log: { level: 'info' },
        http: { port: 0, host: '127.0.0.1', publicUrl: 'http://localhost:8080' },
        // Tests make many requests from one address; rate limits have their own tests.
        rateLimits: { enabled: false },
        // Admin API tests sign staff in with a password only; the second-factor gate has its
        // own tests (test/integration/admin-second-factor.test.ts, console.test.ts).
        admin: { apiRequiresSecondFactor: false },
        // Tests fire many logins at once to test the lockout; the overload refusal has its own tests.
        password: { maxConcurrentHashes: 64 },
      },
      overrides,
    ),
  });
}

function mergeDeep(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] =
      typeof cur === 'object' && cur !== null && !Array.isArray(cur) && typeof v === 'object' && v !== null && !Array.isArray(v)
        ? mergeDeep(cur as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

export async function createTestGateway(options: TestGatewayOptions = {}): Promise<TestGateway> {
  const ownDatabase = options.database === undefined;
  const database = options.database ?? (await createTestDatabase(options.dialect ?? 'sqlite'));
  const config = testConfig(database, options.config, options.masterKey);
  const clock = (options.clock ?? new FixedClock(Date.now())) as FixedClock;
  const logs = new LogCapture();
  const store = await database.open();
  let gw: Gateway;
  try {
    gw = await createGateway(config, { clock, logger: createLogger('debug', logs), store });
  } catch (err) {
    await store.close();
    if (ownDatabase) await database.drop();
    throw err;
  }
  const { app } = createApp(gw);
  return {
    gw,
    app,
    config,
    clock,
    logs,
    database,
    agent: () => request.agent(app),
    http: () => request(app),
    async close() {
      await gw.close();
      await store.close();
      if (ownDatabase) await database.drop();
    },
  };
}

/** A second gateway process on a test gateway's database: same config, clock and store file or schema. */
export interface SecondGateway {
  gw: Gateway;
  app: Express;
  close(): Promise<void>;
}

/**
 * On PostgreSQL, a second gateway process on `t`'s database (what two processes behind one
 * load balancer are); undefined on SQLite, where the tests use one process.
 */
export async function secondGatewayOnPostgres(t: TestGateway): Promise<SecondGateway | undefined> {
  if (t.database.dialect !== 'postgres') return undefined;
  const store = await t.database.open();
  const gw = await createGateway(t.config, { clock: t.clock, logger: createLogger('silent', new LogCapture()), store });
  return {
    gw,
    app: createApp(gw).app,
    async close() {
      await gw.close();
      await store.close();
    },
  };
}

/** The apps to spread parallel requests over: the test gateway's, and the second process's where there is one. */
export function appsOf(t: TestGateway, second: SecondGateway | undefined): Express[] {
  return second === undefined ? [t.app] : [t.app, second.app];
}
