import assert from 'node:assert/strict';
import { existsSync, fdatasync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { CompiledQuery, type KyselyPlugin, type QueryResult, SqliteAdapter } from 'kysely';
import { type Executor, isDatabaseUnavailable, openStore, type Tx } from '../../src/store/database.ts';
import { FixedSql } from '../../src/store/fixed-sql.ts';
import { type FdatasyncFn, WAL_SYNC_FAILED, withoutDurabilityWait } from '../../src/store/node-sqlite-dialect.ts';
import { isUniqueViolation } from '../../src/store/users-repository.ts';
import { createTestDatabase, createTestStore, testDialects } from '../helpers/stores.ts';

/**
 * On the gateway's SQLite store FixedSql runs below Kysely's query executor, straight on the
 * driver (src/store/fixed-sql.ts); on PostgreSQL through it. These tests hold both to what
 * Kysely's executor does: the caller's transaction, the same results, the same errors, the
 * same waits for the WAL sync, the same refusals.
 */

const TEXT = {
  insert: `insert into "meta" ("key", "value") values (?, ?)`,
  read: `select "value" from "meta" where "key" = ?`,
  update: `update "meta" set "value" = ? where "key" = ?`,
  upsert: `insert into "meta" ("key", "value") values (?, ?) on conflict ("key") do update set "value" = excluded."value" returning "key", "value"`,
  remove: `delete from "meta" where "key" = ?`,
};
const INSERT = new FixedSql(TEXT.insert);
const READ = new FixedSql<{ value: string }>(TEXT.read);
const UPDATE = new FixedSql(TEXT.update);

/** The text as Kysely's executor would be given it on `dialect` (FixedSql numbers PostgreSQL's placeholders). */
function referenceText(dialect: string, text: string): string {
  if (dialect === 'sqlite') return text;
  return text
    .split('?')
    .map((part, i) => (i === 0 ? part : `$${i}${part}`))
    .join('');
}

/**
 * SQLite: makes `executor.executeQuery` (Kysely's executor, as FixedSql used it) fail, to show
 * that a statement did not go through it. PostgreSQL: FixedSql goes through it; left alone.
 */
function withoutKyselyExecutor<E extends Executor>(executor: E): E {
  if (executor.getExecutor().adapter instanceof SqliteAdapter) (executor as { executeQuery: unknown }).executeQuery = () => Promise.reject(new Error('went through Kysely executeQuery'));
  return executor;
}

class RollBack extends Error {}

for (const dialect of testDialects()) {
  describe(`FixedSql ${dialect === 'sqlite' ? "below Kysely's executor" : "through Kysely's executor"} (${dialect})`, () => {
    let t: Awaited<ReturnType<typeof createTestStore>>;
    before(async () => {
      t = await createTestStore(dialect);
    });
    after(async () => {
      await t.cleanup();
    });

    it("runs in the caller's transaction: it sees the transaction's writes and they its own, a rollback undoes them, a commit keeps them", async () => {
      const db = t.store.db;
      await assert.rejects(
        db.transaction().execute(async (tx) => {
          withoutKyselyExecutor(tx);
          await tx.insertInto('meta').values({ key: 'tx-built', value: 'b' }).execute();
          assert.equal((await READ.first(tx, ['tx-built']))?.value, 'b', 'a builder write earlier in the transaction');
          await INSERT.run(tx, ['tx-fixed', 'f']);
          await UPDATE.run(tx, ['f2', 'tx-fixed']);
          assert.equal((await READ.first(tx, ['tx-fixed']))?.value, 'f2');
          const built = await tx.selectFrom('meta').select('value').where('key', '=', 'tx-fixed').executeTakeFirst();
          assert.equal(built?.value, 'f2', 'the builder on the same transaction sees the fixed statements');
          // PostgreSQL: another pooled connection does not see them before the commit. (SQLite has
          // one connection, which the transaction holds: anything else waits for it.)
          if (dialect === 'postgres') assert.equal(await READ.first(db, ['tx-fixed']), undefined);
          throw new RollBack();
        }),
        RollBack,
      );
      assert.equal(await READ.first(db, ['tx-fixed']), undefined, 'rolled back');
      assert.equal(await READ.first(db, ['tx-built']), undefined, 'rolled back');

      await db.transaction().execute(async (tx) => {
        withoutKyselyExecutor(tx);
        await INSERT.run(tx, ['tx-kept', 'k']);
      });
      assert.equal((await db.selectFrom('meta').select('value').where('key', '=', 'tx-kept').executeTakeFirst())?.value, 'k', 'committed');
    });

    it('runs on the database (on SQLite without Kysely executeQuery), each statement committed on its own', async () => {
      const db = (await t.database.open()).db;
      try {
        // Kysely initialises its driver at its first query (the direct path leaves that one to it).
        await db.selectFrom('meta').select('key').limit(1).execute();
        withoutKyselyExecutor(db);
        await INSERT.run(db, ['auto', 'a']);
        assert.equal((await READ.first(db, ['auto']))?.value, 'a');
        assert.equal((await READ.first(t.store.db, ['auto']))?.value, 'a', 'another store sees it: committed');
      } finally {
        await db.destroy();
      }
    });

    it('refuses a statement on a transaction that has ended, as Kysely does, even while another transaction is open', async () => {
      const db = t.store.db;
      let ended: Tx | undefined;
      await db.transaction().execute(async (tx) => {
        ended = tx;
        await READ.run(tx, ['none']);
      });
      if (ended === undefined) throw new Error('unreachable');
      const late = ended;
      await assert.rejects(INSERT.run(late, ['late-1', 'x']), /Transaction is already committed/);
      await db.transaction().execute(async (tx) => {
        await INSERT.run(tx, ['other-tx', 'x']);
        await assert.rejects(INSERT.run(late, ['late-2', 'x']), /Transaction is already committed/);
      });
      let rolledBack: Tx | undefined;
      await assert.rejects(
        db.transaction().execute(async (tx) => {
          rolledBack = tx;
          await READ.run(tx, ['none']);
          throw new RollBack();
        }),
        RollBack,
      );
      if (rolledBack === undefined) throw new Error('unreachable');
      await assert.rejects(INSERT.run(rolledBack, ['late-3', 'x']), /Transaction is already rolled back/);
      // One that never ran a fixed statement while it was open.
      let unused: Tx | undefined;
      await db.transaction().execute(async (tx) => {
        unused = tx;
      });
      if (unused === undefined) throw new Error('unreachable');
      const refused = INSERT.run(unused, ['late-4', 'x']);
      await assert.rejects(refused, /Transaction is already committed/);
      for (const key of ['late-1', 'late-2', 'late-3', 'late-4']) assert.equal(await READ.first(db, [key]), undefined, key);
      assert.equal((await READ.first(db, ['other-tx']))?.value, 'x');
    });

    it("gives the results Kysely's executor gave: rows, affected rows, insert ids, in and out of a transaction", async () => {
      const db = t.store.db;
      await db.insertInto('meta').values([{ key: 'shape-1', value: 'one' }, { key: 'shape-2', value: 'two' }]).execute();
      const cases: [keyof typeof TEXT, unknown[]][] = [
        ['read', ['shape-1']],
        ['read', ['shape-missing']],
        ['update', ['uno', 'shape-1']],
        ['update', ['nada', 'shape-missing']],
        ['insert', ['shape-3', 'three']],
        ['upsert', ['shape-2', 'dos']],
        ['upsert', ['shape-4', 'four']],
        ['remove', ['shape-2']],
        ['remove', ['shape-missing']],
      ];
      for (const [name, parameters] of cases) {
        const fixed = new FixedSql(TEXT[name]);
        // Each runs on the same state: the reference and the transaction's run are rolled back
        // (SQLite then hands out the same rowid again), the last one commits.
        const inRolledBack = async (run: (tx: Tx) => Promise<QueryResult<unknown>>) => {
          let result: QueryResult<unknown> | undefined;
          await assert.rejects(
            db.transaction().execute(async (tx) => {
              result = await run(tx);
              throw new RollBack();
            }),
            RollBack,
          );
          return result;
        };
        const reference = await inRolledBack((tx) => tx.executeQuery(CompiledQuery.raw(referenceText(dialect, TEXT[name]), parameters)));
        const inTransaction = await inRolledBack((tx) => fixed.run(tx, parameters));
        const alone = await fixed.run(db, parameters);
        assert.deepEqual(inTransaction, reference, `${name} ${parameters.join(',')} in a transaction`);
        assert.deepEqual(alone, reference, `${name} ${parameters.join(',')}`);
      }
    });

    it('passes errors on as the driver gave them: a unique violation, in and out of a transaction, and the transaction rolls back', async () => {
      const db = t.store.db;
      await INSERT.run(db, ['dup', 'a']);
      const failed = await INSERT.run(db, ['dup', 'b']).then(() => undefined, (err: unknown) => err);
      const reference = await db.executeQuery(CompiledQuery.raw(referenceText(dialect, TEXT.insert), ['dup', 'b'])).then(() => undefined, (err: unknown) => err);
      assert.ok(isUniqueViolation(failed), String(failed));
      const fields = (e: unknown) => {
        const { name, message, code, errcode, constraint } = e as Record<string, unknown>;
        return { name, message, code, errcode, constraint, type: (e as object).constructor };
      };
      assert.deepEqual(fields(failed), fields(reference));
      await assert.rejects(
        db.transaction().execute(async (tx) => {
          await INSERT.run(tx, ['dup-tx', 'a']);
          await INSERT.run(tx, ['dup', 'c']);
        }),
        (err) => isUniqueViolation(err),
      );
      assert.equal(await READ.first(db, ['dup-tx']), undefined, 'the transaction was rolled back');
      assert.equal((await READ.first(db, ['dup']))?.value, 'a');
    });

    it("goes through Kysely's executor where it has plugins (and applies them), and on a connection", { timeout: 10_000 }, async () => {
      const db = t.store.db;
      await INSERT.run(db, ['plugged', 'p']);
      const marker: KyselyPlugin = {
        transformQuery: (args) => args.node,
        transformResult: async (args) => ({ ...args.result, rows: args.result.rows.map((r) => ({ ...r, marked: true })) }),
      };
      assert.deepEqual(await READ.first(db.withPlugin(marker), ['plugged']), { value: 'p', marked: true });
      await db.withPlugin(marker).transaction().execute(async (tx) => {
        assert.deepEqual(await READ.first(tx, ['plugged']), { value: 'p', marked: true });
      });
      // A connection held with db.connection() (SQLite: the one connection's lock) runs it on itself.
      assert.equal(await db.connection().execute(async (c) => (await READ.first(c, ['plugged']))?.value), 'p');
    });

    if (dialect === 'sqlite') {
      it('a closed store refuses its statements while another store on the same file goes on; closing the last one closes the file', async () => {
        const second = await t.database.open();
        await READ.run(second.db, ['none']);
        await second.close();
        await assert.rejects(READ.run(second.db, ['none']), /driver has already been destroyed/);
        assert.equal((await READ.first(t.store.db, ['dup']))?.value, 'a');

        // A store that ran nothing but fixed statements still gives back its share of the driver.
        const base = await createTestDatabase('sqlite');
        try {
          const first = await base.open();
          await first.migrate();
          const only = await base.open();
          await INSERT.run(only.db, ['only-fixed', 'x']);
          assert.equal((await READ.first(only.db, ['only-fixed']))?.value, 'x');
          await only.close();
          await first.close();
          // SQLite removes the WAL when the last connection to the file closes.
          assert.equal(existsSync(`${base.sqliteFile}-wal`), false, 'the file was closed');
        } finally {
          await base.drop();
        }
      });

      it('waits for the WAL sync as before: writes after their fdatasync, reads and relaxed writes not; a failed sync is STEPGATE_WAL_SYNC_FAILED (503), in and out of a transaction', async () => {
        const events: string[] = [];
        let failing = false;
        const disk: FdatasyncFn = (fd, cb) => {
          events.push('fdatasync called');
          if (failing) {
            setImmediate(() => cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }) as NodeJS.ErrnoException));
            return;
          }
          setTimeout(() => {
            events.push('fdatasync returned');
            fdatasync(fd, cb);
          }, 20);
        };
        const base = await createTestDatabase('sqlite');
        const store = await openStore({ url: '', sqliteFile: base.sqliteFile, sqliteFdatasync: disk });
        try {
          await store.migrate();
          const db = withoutKyselyExecutor(store.db);
          const answered = (what: string) => () => void events.push(`${what} answered`);
          const settle = () => new Promise((resolve) => setTimeout(resolve, 50));
          await settle();
          events.length = 0;
          await INSERT.run(db, ['w-1', 'a']).then(answered('write'));
          await db.transaction().execute((tx) => INSERT.run(tx, ['w-2', 'a'])).then(answered('transaction'));
          assert.deepEqual(events, ['fdatasync called', 'fdatasync returned', 'write answered', 'fdatasync called', 'fdatasync returned', 'transaction answered']);
          events.length = 0;
          await READ.run(db, ['w-1']).then(answered('read'));
          await db.transaction().execute((tx) => READ.run(tx, ['w-1'])).then(answered('read-only transaction'));
          await withoutDurabilityWait(() => INSERT.run(db, ['w-3', 'a'])).then(answered('relaxed write'));
          assert.deepEqual(events.slice(0, 3), ['read answered', 'read-only transaction answered', 'relaxed write answered']);
          await settle();

          failing = true;
          const failed = await INSERT.run(db, ['w-4', 'a']).then(() => undefined, (err: unknown) => err);
          assert.equal((failed as { code?: unknown }).code, WAL_SYNC_FAILED);
          assert.equal(isDatabaseUnavailable(failed), true, 'answered 503');
          await assert.rejects(
            db.transaction().execute((tx) => INSERT.run(tx, ['w-5', 'a'])),
            (err) => (err as { code?: unknown }).code === WAL_SYNC_FAILED,
          );
          assert.equal((await READ.first(db, ['w-1']))?.value, 'a', 'reads are still answered');
        } finally {
          await store.close();
          await base.drop();
        }
      });
    }
  });
}
