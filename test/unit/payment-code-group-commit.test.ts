import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Kysely, sql } from 'kysely';
import { openPaymentCodeStore, type PaymentCodeStore } from '../../src/payment-code/store/database.ts';
import { openNodeSqlite } from '../../src/payment-code/store/sqlite-dialect.ts';
import { systemClock } from '../../src/verifier/index.ts';

/**
 * P's SQLite group commit (src/payment-code/store/sqlite-dialect.ts): the writes of one
 * event-loop turn share one durable COMMIT; nobody is answered before it; a failed commit
 * fails every writer of its batch; single use still has exactly one winner.
 */
interface TestDb {
  t: { id: string; n: number };
  parent: { id: string };
  child: { id: string; parent_id: string };
}

describe('payment-code SQLite group commit', () => {
  let dir: string;
  let file: string;
  let db: Kysely<TestDb>;
  let stats: ReturnType<typeof openNodeSqlite>['stats'];
  let raw: DatabaseSync;
  let other: DatabaseSync;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'stepgate-pc-gc-'));
    file = join(dir, 'gc.sqlite');
    const opened = openNodeSqlite(file, 2000);
    db = new Kysely<TestDb>({ dialect: opened.dialect });
    stats = opened.stats;
    raw = opened.raw;
    raw.exec(`CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL);
      CREATE TABLE parent (id TEXT PRIMARY KEY);
      CREATE TABLE child (id TEXT PRIMARY KEY, parent_id TEXT NOT NULL REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);`);
    // Another connection to the same file: it sees only what is committed.
    other = new DatabaseSync(file, { readOnly: true });
  });
  after(async () => {
    other?.close();
    await db?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  const committedIds = (table: string) => (other.prepare(`select id from ${table} order by id`).all() as { id: string }[]).map((r) => r.id);
  const insert = (id: string) => db.transaction().execute(async (tx) => {
    await tx.insertInto('t').values({ id, n: 0 }).execute();
    return id;
  });

  it('the transactions of one turn share one COMMIT, and each caller is answered after it', async () => {
    const before = { ...stats };
    const ids = Array.from({ length: 20 }, (_, i) => `a${String(i).padStart(2, '0')}`);
    const seenAtAnswer: string[][] = [];
    const answers = await Promise.all(ids.map((id) => insert(id).then((r) => {
      // Answered: the row is durable, visible to another connection, and no transaction is open.
      seenAtAnswer.push(committedIds('t'));
      assert.equal(raw.isTransaction, false);
      return r;
    })));
    assert.deepEqual(answers, ids);
    for (const seen of seenAtAnswer) for (const id of ids) assert.ok(seen.includes(id), `${id} committed before any answer`);
    assert.equal(stats.commits - before.commits, 1, 'one COMMIT (one fsync) for the turn');
    assert.equal(stats.writes - before.writes, 20);
  });

  it('single write statements join the batch too; reads alone open none', async () => {
    const before = { ...stats };
    await db.selectFrom('t').selectAll().execute();
    assert.equal(stats.writes, before.writes, 'a read is not a write');
    const results = await Promise.all([
      db.insertInto('t').values({ id: 'b1', n: 0 }).execute(),
      db.updateTable('t').set({ n: 1 }).where('id', '=', 'a00').execute(),
      insert('b2'),
    ]);
    assert.equal(results.length, 3);
    assert.equal(stats.commits - before.commits, 1);
    assert.ok(committedIds('t').includes('b1') && committedIds('t').includes('b2'));
  });

  it('a transaction that fails rolls back alone; the others of its batch commit', async () => {
    const failing = db.transaction().execute(async (tx) => {
      await tx.insertInto('t').values({ id: 'c-undone', n: 0 }).execute();
      throw new Error('refused by its own check');
    });
    const [ok, bad, ok2] = await Promise.allSettled([insert('c-kept'), failing, insert('c-kept2')]);
    assert.equal(ok.status, 'fulfilled');
    assert.equal(ok2.status, 'fulfilled');
    assert.equal(bad.status, 'rejected');
    assert.equal((bad as PromiseRejectedResult).reason.message, 'refused by its own check', 'its own error, not a commit error');
    const ids = committedIds('t');
    assert.ok(ids.includes('c-kept') && ids.includes('c-kept2'));
    assert.ok(!ids.includes('c-undone'));
  });

  it('a failed COMMIT fails every writer of the batch, and none of their writes is kept; the next batch works', async () => {
    const before = { ...stats };
    // A deferred foreign key is checked at COMMIT: this child breaks the whole batch's commit.
    const orphan = db.transaction().execute(async (tx) => {
      await tx.insertInto('child').values({ id: 'orphan', parent_id: 'nobody' }).execute();
    });
    const results = await Promise.allSettled([insert('d1'), orphan, insert('d2'), db.insertInto('t').values({ id: 'd3', n: 0 }).execute()]);
    for (const r of results) {
      assert.equal(r.status, 'rejected', 'every writer of the batch hears the failure');
      assert.match(String((r as PromiseRejectedResult).reason), /FOREIGN KEY/);
    }
    assert.equal(stats.failedCommits - before.failedCommits, 1);
    const ids = committedIds('t');
    for (const id of ['d1', 'd2', 'd3']) assert.ok(!ids.includes(id), `${id} not kept`);
    assert.deepEqual(committedIds('child'), []);
    assert.equal(raw.isTransaction, false);
    // The next turn is a new batch.
    assert.equal(await insert('d4'), 'd4');
    assert.ok(committedIds('t').includes('d4'));
  });

  it('a consuming update has exactly one winner among 50 concurrent ones in one batch', async () => {
    await insert('once');
    const tries = await Promise.all(Array.from({ length: 50 }, () => db.transaction().execute(async (tx) => {
      const r = await tx.updateTable('t').set({ n: 1 }).where('id', '=', 'once').where('n', '=', 0).executeTakeFirst();
      return Number(r.numUpdatedRows);
    })));
    assert.equal(tries.filter((n) => n === 1).length, 1);
    assert.equal(tries.filter((n) => n === 0).length, 49);
  });

  it('a transaction waiting on something else keeps the batch open until it is done, then commits with it', async () => {
    const before = { ...stats };
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slow = db.transaction().execute(async (tx) => {
      await tx.insertInto('t').values({ id: 'slow-1', n: 0 }).execute();
      await gate;
      await tx.insertInto('t').values({ id: 'slow-2', n: 0 }).execute();
    });
    const quick = insert('quick');
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(!committedIds('t').includes('slow-1'), 'half a transaction is never committed');
    release();
    await Promise.all([slow, quick]);
    const ids = committedIds('t');
    assert.ok(ids.includes('slow-1') && ids.includes('slow-2') && ids.includes('quick'));
    assert.ok(stats.commits - before.commits >= 1);
  });
});

describe('payment-code SQLite group commit at close', () => {
  it('closing commits the open batch first, and its writers are answered', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stepgate-pc-gc-close-'));
    try {
      const file = join(dir, 'c.sqlite');
      const opened = openNodeSqlite(file, 2000);
      const db = new Kysely<TestDb>({ dialect: opened.dialect });
      opened.raw.exec('CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL)');
      const written = db.insertInto('t').values({ id: 'last', n: 0 }).execute();
      // Until the insert has run (its batch open), without letting the turn end.
      while (opened.stats.writes === 0) await Promise.resolve();
      assert.equal(opened.stats.commits, 0);
      await db.destroy();
      await written;
      const check = new DatabaseSync(file, { readOnly: true });
      try {
        assert.deepEqual(check.prepare('select id from t').all().map((r) => (r as { id: string }).id), ['last']);
      } finally {
        check.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('payment-code replay store on SQLite (group-committed)', () => {
  let dir: string;
  let store: PaymentCodeStore;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'stepgate-pc-replay-'));
    store = await openPaymentCodeStore({ url: '', sqliteFile: join(dir, 'p.sqlite') });
    await store.migrate();
  });
  after(async () => {
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('100 concurrent consumes of one jti: exactly one first use; distinct jtis all first; one commit for the turn', async () => {
    const replay = store.replayStore(systemClock);
    const expires = new Date(Date.now() + 60_000);
    const commits0 = store.commitStats?.commits ?? 0;
    const same = await Promise.all(Array.from({ length: 100 }, () => replay.consume('jti-once', expires)));
    assert.equal(same.filter(Boolean).length, 1);
    assert.equal(store.commitStats?.commits, commits0 + 1);
    const distinct = await Promise.all(Array.from({ length: 20 }, (_, i) => replay.consume(`jti-${i}`, expires)));
    assert.ok(distinct.every(Boolean));
    assert.equal(await replay.consume('jti-once', expires), false, 'still used after the batch');
    const rows = await sql<{ n: number }>`select count(*) as n from pc_stepup_replay`.execute(store.db);
    assert.equal(Number(rows.rows[0]?.n), 21);
  });

  it('misuse is a TypeError, not a verdict', async () => {
    const replay = store.replayStore(systemClock);
    await assert.rejects(replay.consume('', new Date()), TypeError);
    await assert.rejects(replay.consume('x', new Date(Number.NaN)), TypeError);
  });
});
