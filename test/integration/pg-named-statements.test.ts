import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { AuditLog, verifyAuditChain } from '../../src/audit/audit-log.ts';
import { FixedClock } from '../../src/clock.ts';
import { type Executor, openStore, type Store } from '../../src/store/database.ts';
import { FixedSql } from '../../src/store/fixed-sql.ts';
import { namedStatementFor } from '../../src/store/pg-named-statements.ts';
import { isUniqueViolation } from '../../src/store/users-repository.ts';
import { createTestDatabase, testDialects, type TestDatabase } from '../helpers/stores.ts';

/**
 * PostgreSQL: FixedSql's texts run as named prepared statements (src/store/pg-named-statements.ts),
 * prepared once per connection; texts returning `*` and everything else run unnamed; the switch
 * `database.preparedStatements: false` turns it off.
 */

const READ_TEXT = 'select "value" from "meta" where "key" = $1';
const READ = new FixedSql<{ value: string }>('select "value" from "meta" where "key" = ?');
const INSERT = new FixedSql('insert into "meta" ("key", "value") values (?, ?)');
const STAR = new FixedSql<Record<string, unknown>>('select * from "meta" where "key" = ?');
const RETURNING_STAR = new FixedSql<Record<string, unknown>>('update "meta" set "value" = ? where "key" = ? returning *');

async function prepared(executor: Executor): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`select name from pg_prepared_statements order by name`.execute(executor);
  return rows.map((r) => r.name);
}

for (const dialect of testDialects().filter((d) => d === 'postgres')) {
  describe(`named prepared statements (${dialect})`, () => {
    let database: TestDatabase;
    let store: Store;
    const open = (preparedStatements?: boolean) =>
      openStore({ url: database.url, sqliteFile: '', schema: database.schema, poolMax: 1, ...(preparedStatements === undefined ? {} : { preparedStatements }) });

    before(async () => {
      database = await createTestDatabase(dialect);
      store = await open();
      await store.migrate();
    });
    after(async () => {
      await store.close();
      await database.drop();
    });

    it('names one statement per distinct text, never a text that returns *', () => {
      const name = namedStatementFor(READ_TEXT);
      assert.match(name ?? '', /^stepgate_[0-9a-f]{24}$/);
      assert.equal(namedStatementFor(READ_TEXT), name);
      assert.notEqual(namedStatementFor('insert into "meta" ("key", "value") values ($1, $2)'), name);
      assert.equal(namedStatementFor('select * from "meta" where "key" = $1'), undefined);
      assert.equal(namedStatementFor('update "meta" set "value" = $1 where "key" = $2 returning *'), undefined);
      assert.equal(namedStatementFor('select "value" from "meta"'), undefined, 'a text no FixedSql has');
    });

    it('prepares a fixed statement once on the connection, in and out of a transaction', async () => {
      await INSERT.run(store.db, ['named.a', 'one']);
      assert.deepEqual((await READ.run(store.db, ['named.a'])).rows, [{ value: 'one' }]);
      await store.db.transaction().execute(async (tx) => {
        assert.deepEqual((await READ.run(tx, ['named.a'])).rows, [{ value: 'one' }]);
        assert.deepEqual((await STAR.run(tx, ['named.a'])).rows, [{ key: 'named.a', value: 'one' }]);
        assert.deepEqual((await RETURNING_STAR.run(tx, ['two', 'named.a'])).rows, [{ key: 'named.a', value: 'two' }]);
        const names = await prepared(tx);
        assert.ok(names.includes(namedStatementFor(READ_TEXT) as string), 'the read is prepared on the transaction\'s connection');
        assert.ok(names.includes(namedStatementFor('insert into "meta" ("key", "value") values ($1, $2)') as string));
        assert.ok(names.every((n) => n.startsWith('stepgate_')), 'nothing else is named');
        assert.equal(names.length, new Set(names).size);
      });
      // Kysely's own queries (builder, raw sql) are not named; the * texts neither.
      const { rows } = await sql<{ statement: string }>`select statement from pg_prepared_statements`.execute(store.db);
      assert.ok(rows.every((r) => !r.statement.includes('*')), rows.map((r) => r.statement).join('\n'));
    });

    it('a failed statement and a rolled-back transaction leave the statements usable', async () => {
      await assert.rejects(
        store.db.transaction().execute(async (tx) => {
          await INSERT.run(tx, ['named.b', 'x']);
          await INSERT.run(tx, ['named.b', 'again']);
        }),
        (err: unknown) => isUniqueViolation(err),
      );
      assert.deepEqual((await READ.run(store.db, ['named.b'])).rows, [], 'rolled back');
      await INSERT.run(store.db, ['named.b', 'y']);
      assert.deepEqual((await READ.run(store.db, ['named.b'])).rows, [{ value: 'y' }]);
    });

    it('keeps working when another process adds a column to the table (a rolling upgrade)', async () => {
      await INSERT.run(store.db, ['named.c', 'before']);
      assert.deepEqual((await READ.run(store.db, ['named.c'])).rows, [{ value: 'before' }]);
      assert.equal((await STAR.run(store.db, ['named.c'])).rows.length, 1);
      const other = await open();
      try {
        await sql`alter table "meta" add column "perf2_note" text`.execute(other.db);
        assert.deepEqual((await READ.run(store.db, ['named.c'])).rows, [{ value: 'before' }], 'a named statement is re-planned');
        assert.deepEqual((await STAR.run(store.db, ['named.c'])).rows, [{ key: 'named.c', value: 'before', perf2_note: null }], 'the * text is unnamed and sees the new column');
      } finally {
        await sql`alter table "meta" drop column "perf2_note"`.execute(other.db);
        await other.close();
      }
    });

    it('the audit chain appends as before (the rows and the head in one statement)', async () => {
      const audit = new AuditLog(store.dialect, new FixedClock(Date.UTC(2026, 2, 1)));
      for (let i = 0; i < 3; i += 1) await audit.append(store.db, { type: 'test.appended', data: { i } });
      await audit.appendAll(store.db, Array.from({ length: 6 }, (_, i) => ({ type: 'test.batched', data: { i } })));
      const chain = await verifyAuditChain(store.db);
      assert.equal(chain.ok, true);
      assert.equal(chain.rows, 9);
    });

    it('database.preparedStatements: false prepares nothing', async () => {
      const plain = await open(false);
      try {
        await plain.db.transaction().execute(async (tx) => {
          assert.deepEqual((await READ.run(tx, ['named.a'])).rows, [{ value: 'two' }]);
          await INSERT.run(tx, ['named.d', 'z']);
          assert.deepEqual(await prepared(tx), []);
        });
      } finally {
        await plain.close();
      }
    });
  });
}
