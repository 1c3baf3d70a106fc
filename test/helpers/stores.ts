import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { openStore, type DialectName, type Store } from '../../src/store/database.ts';
import { STRICT, TEST_DATABASE_URL } from './env.ts';

/**
 * Each test gets its own database: a temp SQLite file, or its own PostgreSQL schema, so
 * test files run in parallel without seeing each other's rows.
 */
export interface TestDatabase {
  dialect: DialectName;
  /** For a gateway config: '' (SQLite) or the PostgreSQL URL. */
  url: string;
  /** For a gateway config: PostgreSQL schema (PostgreSQL) or 'public'. */
  schema: string;
  /** The SQLite file (SQLite). */
  sqliteFile: string;
  /** The data directory to give a gateway. */
  dataDir: string;
  /** Opens one more store on the same database (a second gateway process, say). */
  open(): Promise<Store>;
  drop(): Promise<void>;
}

let reportedMissingPostgres = false;

/**
 * The dialects store tests must cover: SQLite always, PostgreSQL when configured (required
 * in strict mode). Without it the PostgreSQL variants do not vanish silently: the file
 * reports one skipped test saying they were not run and why.
 */
export function testDialects(): DialectName[] {
  if (TEST_DATABASE_URL !== '') return ['sqlite', 'postgres'];
  if (STRICT) throw new Error('strict mode: STEPGATE_TEST_DATABASE_URL must be set so store tests run on PostgreSQL');
  if (!reportedMissingPostgres) {
    reportedMissingPostgres = true;
    const file = relative(process.cwd(), process.argv[1] ?? '') || 'this file';
    test(`PostgreSQL variants of ${file}`, { skip: 'not run: STEPGATE_TEST_DATABASE_URL is not set (set it to run them; CI does)' }, () => {});
  }
  return ['sqlite'];
}

export async function createTestDatabase(dialect: DialectName): Promise<TestDatabase> {
  const dataDir = mkdtempSync(join(tmpdir(), 'stepgate-test-'));
  if (dialect === 'sqlite') {
    const sqliteFile = join(dataDir, 'stepgate.sqlite');
    return {
      dialect,
      url: '',
      schema: 'public',
      sqliteFile,
      dataDir,
      open: () => openStore({ url: '', sqliteFile }),
      async drop() {
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
  }
  if (TEST_DATABASE_URL === '') throw new Error('STEPGATE_TEST_DATABASE_URL is not set');
  const schema = `t_${process.pid}_${randomBytes(5).toString('hex')}`;
  return {
    dialect,
    url: TEST_DATABASE_URL,
    schema,
    sqliteFile: '',
    dataDir,
    open: () => openStore({ url: TEST_DATABASE_URL, sqliteFile: '', schema, poolMax: 30 }),
    async drop() {
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await client.connect();
      try {
        await client.query(`drop schema if exists ${schema} cascade`);
      } finally {
        await client.end();
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Opens a migrated store on a fresh database; `cleanup` closes and drops it. */
export async function createTestStore(dialect: DialectName): Promise<{ store: Store; database: TestDatabase; cleanup(): Promise<void> }> {
  const database = await createTestDatabase(dialect);
  const store = await database.open();
  await store.migrate();
  return {
    store,
    database,
    async cleanup() {
      await store.close();
      await database.drop();
    },
  };
}
