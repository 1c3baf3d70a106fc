import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { Migrator } from 'kysely/migration';
import { AuditLog, verifyAuditChain } from '../../src/audit/audit-log.ts';
import { FixedClock } from '../../src/clock.ts';
import type { Store } from '../../src/store/database.ts';
import { migrations } from '../../src/store/migrations/index.ts';
import { createTestDatabase, testDialects, type TestDatabase } from '../helpers/stores.ts';

const MIGRATION = '045-audit-log-rowid';

/** Migrates `store` to the state before 045, as a database created by an earlier release. */
async function migrateBefore045(store: Store): Promise<void> {
  const earlier = Object.fromEntries(Object.entries(migrations).filter(([name]) => name !== MIGRATION));
  const migrator = new Migrator({
    db: store.db,
    provider: { getMigrations: async () => earlier },
    migrationTableName: 'stepgate_migrations',
    migrationLockTableName: 'stepgate_migrations_lock',
    allowUnorderedMigrations: true,
    ...(store.dialect === 'postgres' ? { migrationTableSchema: (await sql<{ s: string }>`select current_schema() as s`.execute(store.db)).rows[0]!.s } : {}),
  });
  const { error } = await migrator.migrateToLatest();
  if (error !== undefined) throw error;
}

async function allRows(store: Store): Promise<unknown[]> {
  const rows = await store.db.selectFrom('audit_log').selectAll().orderBy('seq').execute();
  return rows.map((r) => ({ ...r, seq: Number(r.seq), at: Number(r.at) }));
}

async function applied(store: Store): Promise<boolean> {
  const row = await sql<{ n: number }>`select count(*) as n from stepgate_migrations where name = ${MIGRATION}`.execute(store.db);
  return Number(row.rows[0]!.n) === 1;
}

for (const dialect of testDialects()) {
  describe(`migration ${MIGRATION} (${dialect})`, () => {
    let database: TestDatabase;
    let store: Store;
    const clock = new FixedClock(Date.UTC(2026, 2, 1));

    before(async () => {
      database = await createTestDatabase(dialect);
      store = await database.open();
      await migrateBefore045(store);
    });
    after(async () => {
      await store.close();
      await database.drop();
    });

    it('keeps every row and the chain, and the chain goes on after it', async () => {
      assert.equal(await applied(store), false);
      const audit = new AuditLog(store.dialect, clock);
      // Single appends, batches of several rows (one INSERT of up to four, then more), text that needs care.
      for (let i = 0; i < 1200; i += 1) await audit.append(store.db, { type: 'test.appended', actor: `a_${i}`, subject: i % 2 ? null : `u_${i}`, ip: '203.0.113.9', requestId: `r${i}`, data: { i, note: 'ü 中文 \u2028' } });
      await audit.appendAll(store.db, Array.from({ length: 9 }, (_, i) => ({ type: 'test.batched', data: { i } })));
      const before = await allRows(store);
      assert.equal(before.length, 1209);
      assert.deepEqual(await verifyAuditChain(store.db), { ok: true, rows: 1209, headHash: (before.at(-1) as { hash: string }).hash });

      assert.deepEqual(await store.migrate(), [MIGRATION]);
      assert.equal(await applied(store), true);
      assert.deepEqual(await allRows(store), before, 'every row as it was, column by column');
      assert.equal((await verifyAuditChain(store.db, 100)).ok, true);

      if (dialect === 'sqlite') {
        const ddl = await sql<{ sql: string }>`select sql from sqlite_master where type = 'table' and name = 'audit_log'`.execute(store.db);
        assert.match(ddl.rows[0]!.sql, /"seq" integer primary key/, 'seq is the rowid');
        const objects = await sql<{ name: string }>`select name from sqlite_master where tbl_name = 'audit_log' and type <> 'table'`.execute(store.db);
        assert.deepEqual(objects.rows, [], 'no second b-tree for the primary key');
        const leftover = await sql<{ name: string }>`select name from sqlite_master where name = 'audit_log_rowid'`.execute(store.db);
        assert.deepEqual(leftover.rows, []);
      } else {
        const indexes = await sql<{ indexname: string }>`select indexname from pg_indexes where schemaname = current_schema() and tablename = 'audit_log'`.execute(store.db);
        assert.deepEqual(indexes.rows.map((r) => r.indexname), ['audit_log_pkey'], 'PostgreSQL: unchanged');
      }

      // The chain continues; a duplicate sequence number is still refused; reads by seq still work.
      const next = await audit.append(store.db, { type: 'test.after' });
      assert.equal(next.seq, 1210);
      assert.equal(next.prev_hash, (before.at(-1) as { hash: string }).hash);
      await assert.rejects(sql`insert into audit_log (seq, at, type, data, prev_hash, hash) values (1210, 0, 'x', '{}', 'p', 'h')`.execute(store.db));
      const page = await store.db.selectFrom('audit_log').select('seq').where('seq', '<=', 1210).orderBy('seq', 'desc').limit(3).execute();
      assert.deepEqual(page.map((r) => Number(r.seq)), [1210, 1209, 1208]);
      assert.deepEqual(await verifyAuditChain(store.db), { ok: true, rows: 1210, headHash: next.hash });
    });
  });
}

describe(`migration ${MIGRATION} (sqlite): a row it cannot copy`, () => {
  it('fails as a whole: the old table, its rows and the migration record stay as they were', async () => {
    const database = await createTestDatabase('sqlite');
    const store = await database.open();
    try {
      await migrateBefore045(store);
      const audit = new AuditLog(store.dialect, new FixedClock(Date.UTC(2026, 2, 1)));
      for (let i = 0; i < 5; i += 1) await audit.append(store.db, { type: 'test.appended', data: { i } });
      // A sequence number that is not an integer (written around the gateway) cannot be a rowid.
      await sql`update audit_log set seq = 2.5 where seq = 2`.execute(store.db);
      const before = await allRows(store);
      await assert.rejects(store.migrate(), /datatype mismatch/);
      assert.equal(await applied(store), false);
      assert.deepEqual(await allRows(store), before);
      const ddl = await sql<{ sql: string }>`select sql from sqlite_master where type = 'table' and name = 'audit_log'`.execute(store.db);
      assert.match(ddl.rows[0]!.sql, /"seq" bigint primary key/);
      const leftover = await sql<{ name: string }>`select name from sqlite_master where name = 'audit_log_rowid'`.execute(store.db);
      assert.deepEqual(leftover.rows, []);
      // Put right, the migration goes through.
      await sql`update audit_log set seq = 2 where seq = 2.5`.execute(store.db);
      assert.deepEqual(await store.migrate(), [MIGRATION]);
      assert.equal((await verifyAuditChain(store.db)).ok, true);
    } finally {
      await store.close();
      await database.drop();
    }
  });
});
