import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fdatasync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Kysely, sql } from 'kysely';
import { Writable } from 'node:stream';
import express from 'express';
import request from 'supertest';
import { errorHandler } from '../../src/payment-code/http/problem.ts';
import { createPaymentCodeLogger } from '../../src/payment-code/logger.ts';
import { isPaymentCodeDatabaseUnavailable, openPaymentCodeStore, type PaymentCodeStore } from '../../src/payment-code/store/database.ts';
import { type FdatasyncFn, type GroupCommitStats, openNodeSqlite } from '../../src/payment-code/store/sqlite-dialect.ts';
import { systemClock } from '../../src/verifier/index.ts';

/**
 * P's SQLite driver (src/payment-code/store/sqlite-dialect.ts, a copy of the gateway's design):
 * every transaction commits at once (WAL, synchronous = NORMAL), and a caller that wrote is
 * answered only after an fdatasync of the WAL that started after its commit; the commits of
 * one event-loop turn share one. The tests watch the file through a second, independent
 * connection and replace fdatasync to see when it runs and what it covers.
 */
interface TestDb {
  t: { id: string; n: number };
  parent: { id: string };
  child: { id: string; parent_id: string };
}

const SCHEMA = `CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER NOT NULL);
  CREATE TABLE parent (id TEXT PRIMARY KEY);
  CREATE TABLE child (id TEXT PRIMARY KEY, parent_id TEXT NOT NULL REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);`;

interface Opened {
  file: string;
  db: Kysely<TestDb>;
  raw: DatabaseSync;
  stats: GroupCommitStats;
  /** An independent connection to the same file: it sees only what is committed. */
  observer: DatabaseSync;
  committedIds(table?: string): string[];
  close(): Promise<void>;
}

function open(fdatasyncFn?: FdatasyncFn, checkpointThread = true): Opened {
  const dir = mkdtempSync(join(tmpdir(), 'stepgate-pc-walsync-'));
  const file = join(dir, 'p.sqlite');
  const opened = openNodeSqlite({ file, busyTimeoutMs: 2000, checkpointThread, ...(fdatasyncFn === undefined ? {} : { fdatasync: fdatasyncFn }) });
  opened.raw.exec(SCHEMA);
  const db = new Kysely<TestDb>({ dialect: opened.dialect });
  const observer = new DatabaseSync(file, { readOnly: true });
  return {
    file,
    db,
    raw: opened.raw,
    stats: opened.stats,
    observer,
    committedIds: (table = 't') => (observer.prepare(`select id from ${table} order by id`).all() as { id: string }[]).map((r) => r.id),
    async close() {
      observer.close();
      await db.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const insert = (db: Kysely<TestDb>, id: string) =>
  db.transaction().execute(async (tx) => {
    await tx.insertInto('t').values({ id, n: 0 }).execute();
    return id;
  });

describe('payment-code SQLite: group WAL fsync', () => {
  /** What each fdatasync covered: the rows committed when it started, and whether it returned. */
  const syncs: { covers: Set<string>; returned: boolean }[] = [];
  let o: Opened;

  before(() => {
    // The real fdatasync, a little later: it covers what was committed when it started.
    const recording: FdatasyncFn = (fd, cb) => {
      const sync = { covers: new Set(o.committedIds()), returned: false };
      syncs.push(sync);
      setTimeout(
        () =>
          fdatasync(fd, (err) => {
            sync.returned = true;
            cb(err);
          }),
        5,
      );
    };
    o = open(recording);
  });
  after(async () => {
    await o?.close();
  });

  /** The writer of `id` may be answered: an fdatasync that started after its commit has returned. */
  const covered = (id: string) => syncs.some((s) => s.returned && s.covers.has(id));

  it('each transaction commits at once; its caller is answered only after an fdatasync started after its commit; a turn shares one', async () => {
    const before = { ...o.stats };
    const ids = Array.from({ length: 30 }, (_, i) => `a${String(i).padStart(2, '0')}`);
    const answers = await Promise.all(
      ids.map((id) =>
        insert(o.db, id).then((r) => {
          assert.ok(o.committedIds().includes(id), `${id} answered before it was committed`);
          assert.ok(covered(id), `${id} answered before a sync covering it returned`);
          assert.equal(o.raw.isTransaction, false);
          return r;
        }),
      ),
    );
    assert.deepEqual(answers, ids);
    const flushes = o.stats.flushes - before.flushes;
    assert.ok(flushes >= 1 && flushes <= 3, `expected one fdatasync or very few for one turn, got ${flushes}`);
    assert.equal(o.stats.waited - before.waited, 30);
  });

  it('single write statements wait for the sync too; reads neither sync nor wait', async () => {
    const before = { ...o.stats };
    const rows = await o.db.selectFrom('t').selectAll().execute();
    assert.ok(rows.length > 0);
    await sql`select count(*) as n from t`.execute(o.db);
    assert.deepEqual(o.stats, before, 'a read is not a write');
    await Promise.all([
      o.db.insertInto('t').values({ id: 'b1', n: 0 }).execute().then(() => assert.ok(covered('b1'))),
      sql`insert into t (id, n) values ('b2', 0) on conflict (id) do nothing`.execute(o.db).then(() => assert.ok(covered('b2'))),
      o.db.updateTable('t').set({ n: 1 }).where('id', '=', 'a00').execute(),
    ]);
    assert.equal(o.stats.waited - before.waited, 3);
  });

  it('a transaction of SELECTs only does not wait for a sync; one with a write does, even when it changed no row', async () => {
    const before = { ...o.stats };
    const rows = await o.db.transaction().execute((tx) => tx.selectFrom('t').selectAll().where('id', '=', 'a00').execute());
    assert.equal(rows.length, 1);
    assert.equal(o.stats.waited, before.waited, 'read-only: answered without waiting');
    await o.db.transaction().execute((tx) => tx.updateTable('t').set({ n: 2 }).where('id', '=', 'no-such-row').execute());
    assert.equal(o.stats.waited, before.waited + 1, 'an UPDATE ran (no row matched): it waits, conservatively');
  });

  it('the event loop is free while the fdatasync runs: a read is answered meanwhile', async () => {
    const events: string[] = [];
    const slow: FdatasyncFn = (_fd, cb) => {
      events.push('fdatasync called');
      setTimeout(() => {
        events.push('fdatasync returned');
        cb(null);
      }, 40);
    };
    const s = open(slow);
    try {
      await Promise.all([insert(s.db, 'x').then(() => events.push('x answered')), insert(s.db, 'y').then(() => events.push('y answered'))]);
      assert.deepEqual(events, ['fdatasync called', 'fdatasync returned', 'x answered', 'y answered']);
      events.length = 0;
      const write = insert(s.db, 'z').then(() => events.push('z answered'));
      while (!events.includes('fdatasync called')) await new Promise((r) => setImmediate(r));
      const rows = await s.db.selectFrom('t').select('id').execute();
      events.push(`read ${rows.length} rows`);
      await write;
      assert.deepEqual(events, ['fdatasync called', 'read 3 rows', 'fdatasync returned', 'z answered']);
    } finally {
      await s.close();
    }
  });

  it('a transaction that fails rolls back alone; the others of its turn commit', async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        o.db.transaction().execute(async (tx) => {
          await tx.insertInto('t').values({ id: `c${i}`, n: 0 }).execute();
          if (i % 3 === 0) throw new Error(`refused by its own check ${i}`);
        }),
      ),
    );
    const ids = o.committedIds();
    for (let i = 0; i < 10; i += 1) {
      const r = results[i];
      if (i % 3 === 0) {
        assert.equal(r?.status, 'rejected');
        assert.equal((r as PromiseRejectedResult).reason.message, `refused by its own check ${i}`, 'its own error');
      } else assert.equal(r?.status, 'fulfilled');
      assert.equal(ids.includes(`c${i}`), i % 3 !== 0, `c${i}`);
    }
  });

  it('a COMMIT that fails fails its own transaction only, and keeps none of its writes', async () => {
    // A deferred foreign key is checked at COMMIT.
    const orphan = o.db.transaction().execute(async (tx) => {
      await tx.insertInto('t').values({ id: 'd-orphan-row', n: 0 }).execute();
      await tx.insertInto('child').values({ id: 'orphan', parent_id: 'nobody' }).execute();
    });
    const [bad, ...good] = await Promise.allSettled([orphan, insert(o.db, 'd1'), o.db.insertInto('t').values({ id: 'd2', n: 0 }).execute()]);
    assert.equal(bad?.status, 'rejected');
    assert.match(String((bad as PromiseRejectedResult).reason), /FOREIGN KEY/);
    for (const r of good) assert.equal(r.status, 'fulfilled');
    const ids = o.committedIds();
    assert.ok(!ids.includes('d-orphan-row'));
    assert.deepEqual(o.committedIds('child'), []);
    assert.ok(ids.includes('d1') && ids.includes('d2'));
    assert.equal(o.raw.isTransaction, false);
    assert.equal(await insert(o.db, 'd3'), 'd3');
  });

  it('a consuming update has exactly one winner among 50 concurrent ones, and the winner hears so only once it is durable', async () => {
    await insert(o.db, 'once');
    const tries = await Promise.all(
      Array.from({ length: 50 }, () =>
        o.db.transaction().execute(async (tx) => {
          const r = await tx.updateTable('t').set({ n: 1 }).where('id', '=', 'once').where('n', '=', 0).executeTakeFirst();
          return Number(r.numUpdatedRows);
        }).then((n) => {
          if (n === 1) assert.equal((o.observer.prepare("select n from t where id = 'once'").get() as { n: number }).n, 1);
          return n;
        }),
      ),
    );
    assert.equal(tries.filter((n) => n === 1).length, 1);
    assert.equal(tries.filter((n) => n === 0).length, 49);
  });

  it('half a transaction is never committed: one waiting on something else holds the connection until it is done', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const slow = o.db.transaction().execute(async (tx) => {
      await tx.insertInto('t').values({ id: 'slow-1', n: 0 }).execute();
      await gate;
      await tx.insertInto('t').values({ id: 'slow-2', n: 0 }).execute();
    });
    const quick = insert(o.db, 'quick');
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(!o.committedIds().includes('slow-1'), 'half a transaction is never committed');
    release();
    await Promise.all([slow, quick]);
    const ids = o.committedIds();
    assert.ok(ids.includes('slow-1') && ids.includes('slow-2') && ids.includes('quick'));
  });

  it('a second store on the same file in this process shares the connection: no self-deadlock; closing one leaves the other open', async () => {
    const second = openNodeSqlite({ file: o.file, busyTimeoutMs: 2000 });
    const db2 = new Kysely<TestDb>({ dialect: second.dialect });
    try {
      await Promise.all(Array.from({ length: 20 }, (_, i) => insert(i % 2 === 0 ? o.db : db2, `shared-${i}`)));
      for (let i = 0; i < 20; i += 1) assert.ok(o.committedIds().includes(`shared-${i}`));
    } finally {
      await db2.destroy();
    }
    assert.equal(await insert(o.db, 'after-second-closed'), 'after-second-closed');
  });
});

describe('payment-code SQLite: a failed WAL sync fails closed', () => {
  it('its callers are refused, and so is every later writer until the store is reopened; reads still work', async () => {
    let calls = 0;
    const failing: FdatasyncFn = (_fd, cb) => {
      calls += 1;
      const err = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }) as NodeJS.ErrnoException;
      setImmediate(() => cb(calls === 1 ? err : null));
    };
    const s = open(failing);
    try {
      const results = await Promise.allSettled([insert(s.db, 'e1'), s.db.insertInto('t').values({ id: 'e2', n: 0 }).execute()]);
      for (const r of results) {
        assert.equal(r.status, 'rejected', 'a writer whose sync failed is not told it succeeded');
        assert.match(String((r as PromiseRejectedResult).reason), /EIO/);
      }
      assert.equal(s.stats.failedFlushes, 1);
      // The next fdatasync would succeed, but what came before it may be lost: still refused.
      await assert.rejects(insert(s.db, 'e3'), /EIO/);
      assert.equal(calls, 1, 'no further sync is trusted');
      assert.ok((await s.db.selectFrom('t').select('id').execute()).length >= 0);
    } finally {
      await s.close();
    }
  });

  it('is answered 503 service_unavailable problem+json, not 500, by the service\'s error handler', async () => {
    const s = open((_fd, cb) => setImmediate(() => cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }) as NodeJS.ErrnoException)));
    try {
      const refusal = await insert(s.db, 'h1').then(
        () => assert.fail('the write was reported durable'),
        (err: unknown) => err,
      );
      assert.equal(isPaymentCodeDatabaseUnavailable(refusal), true);
      const app = express();
      app.post('/write', (_req, _res, next) => next(refusal));
      const logs: string[] = [];
      app.use(errorHandler(createPaymentCodeLogger('error', new Writable({ write: (c: Buffer, _e, cb) => cb(void logs.push(c.toString())) }))));
      const res = await request(app).post('/write');
      assert.equal(res.status, 503, res.text);
      assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
      assert.equal((JSON.parse(res.text) as { code: string }).code, 'service_unavailable');
      assert.ok(Number(res.headers['retry-after']) > 0);
      assert.doesNotMatch(res.text, /EIO|fdatasync/);
      assert.match(logs.join(''), /WAL fdatasync failed/);
    } finally {
      await s.close();
    }
  });

  it('the failure of one store does not leak into another file', async () => {
    const s = open((_fd, cb) => setImmediate(() => cb(Object.assign(new Error('EIO'), { code: 'EIO' }) as NodeJS.ErrnoException)));
    const healthy = open();
    try {
      await assert.rejects(insert(s.db, 'x'), /EIO/);
      assert.equal(await insert(healthy.db, 'x'), 'x');
    } finally {
      await s.close();
      await healthy.close();
    }
  });
});

describe('payment-code SQLite: checkpoints in a thread of their own', () => {
  it('copy the WAL into the database file off the event loop; closing ends the thread', async () => {
    const withThread = open();
    const without = open(undefined, false);
    try {
      for (const s of [withThread, without]) {
        for (let round = 0; round < 20; round += 1) {
          await Promise.all(Array.from({ length: 40 }, (_, i) => insert(s.db, `k-${round}-${i}-${'x'.repeat(200)}`)));
          // Like requests arriving over time: let the thread's checkpoints land in between.
          await new Promise((r) => setTimeout(r, 5));
        }
      }
      assert.ok(withThread.stats.checkpoints >= 1, 'the thread checkpointed');
      assert.equal(without.stats.checkpoints, 0);
      const wal = (s: Opened) => statSync(`${s.file}-wal`).size;
      const db = (s: Opened) => statSync(s.file).size;
      assert.ok(db(withThread) > db(without), `pages were copied into the database file (${db(withThread)} vs ${db(without)} bytes)`);
      // The thread checkpoints every 64 commits, SQLite on its own every 1,000 pages.
      assert.ok(withThread.stats.checkpoints >= 5, `${withThread.stats.checkpoints} checkpoints`);
      assert.ok(wal(withThread) > 0);
      assert.equal(withThread.committedIds().length, 800);
    } finally {
      await withThread.close();
      await without.close();
    }
  });
});

describe('payment-code SQLite: closing', () => {
  it('waits for the transaction under way and its sync; its writer is answered', async () => {
    const s = open();
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let started = false;
    const written = s.db.transaction().execute(async (tx) => {
      await tx.insertInto('t').values({ id: 'last-1', n: 0 }).execute();
      started = true;
      await gate;
      await tx.insertInto('t').values({ id: 'last-2', n: 0 }).execute();
    });
    while (!started) await new Promise((r) => setImmediate(r));
    let closed = false;
    const closing = s.db.destroy().then(() => {
      closed = true;
    });
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(closed, false, 'closing waits for the transaction');
    release();
    await written;
    await closing;
    assert.equal(s.stats.waited, 1);
    assert.ok(s.stats.flushes >= 1, 'the writer waited for a sync before the store closed');
    const check = new DatabaseSync(s.file, { readOnly: true });
    try {
      assert.deepEqual(
        check.prepare('select id from t order by id').all().map((r) => (r as { id: string }).id),
        ['last-1', 'last-2'],
      );
    } finally {
      check.close();
      await s.close();
    }
  });
});

describe('payment-code SQLite: two processes on one file', () => {
  const OTHER = 50;
  it('a second process writing the same file is not starved while this one floods it with transactions', async () => {
    const s = open();
    try {
      const moduleUrl = new URL(`file://${resolve('src/payment-code/store/sqlite-dialect.ts')}`).href;
      // The other process: P's own driver on the same file, OTHER transactions one at a time. It
      // is starved if one of them waits out the 5 s busy timeout (an error). Counted, not timed:
      // on a loaded machine a time budget measures the machine, not the lock.
      const script = `
        const { openNodeSqlite } = await import(${JSON.stringify(moduleUrl)});
        const { Kysely } = await import('kysely');
        const { dialect } = openNodeSqlite({ file: ${JSON.stringify(s.file)}, busyTimeoutMs: 5000 });
        const db = new Kysely({ dialect });
        process.stdout.write('ready\\n');
        await new Promise((go) => process.stdin.once('data', go));
        let errors = 0, done = 0;
        for (let i = 0; i < ${OTHER}; i += 1) {
          try {
            await db.transaction().execute((tx) => tx.insertInto('t').values({ id: 'other-' + i, n: 0 }).execute());
            done += 1;
          } catch { errors += 1; }
        }
        await db.destroy();
        process.stdout.write('result ' + JSON.stringify({ errors, done }) + '\\n');
        process.exit(0);
      `;
      const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stderr.on('data', (c: Buffer) => {
        err += c.toString();
      });
      const ready = new Promise<void>((r) =>
        child.stdout.on('data', (c: Buffer) => {
          out += c.toString();
          if (out.includes('ready')) r();
        }),
      );
      const exited = new Promise<number | null>((r) => child.on('close', r));
      await Promise.race([ready, exited]);
      assert.ok(out.includes('ready'), `child failed: ${err}`);
      child.stdin.end('go\n');
      // Meanwhile this process: 32 concurrent writers, transaction after transaction.
      let flooding = true;
      let mine = 0;
      const writers = Array.from({ length: 32 }, async (_, w) => {
        for (let i = 0; flooding; i += 1) {
          await insert(s.db, `mine-${w}-${i}`);
          mine += 1;
        }
      });
      const code = await exited;
      flooding = false;
      await Promise.all(writers);
      const m = /result (.*)/.exec(out);
      assert.equal(code, 0, err);
      assert.ok(m !== null, out + err);
      const result = JSON.parse(m[1] as string) as { errors: number; done: number };
      assert.equal(result.errors, 0, 'the other process never timed out on the lock');
      assert.equal(result.done, OTHER);
      // The flood really ran meanwhile: rows of this process were committed between the other
      // process's first and last (rowid order is commit order here: nothing is deleted).
      const [span] = s.observer
        .prepare(`select count(*) as n from t where id like 'mine-%' and rowid > (select min(rowid) from t where id like 'other-%') and rowid < (select max(rowid) from t where id like 'other-%')`)
        .all() as { n: number }[];
      assert.ok(mine > 0 && (span?.n ?? 0) > 0, `the other process's transactions interleaved with the flood (${span?.n} of ${mine} in between)`);
    } finally {
      await s.close();
    }
  });
});

describe('payment-code replay store on SQLite', () => {
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

  it('100 concurrent consumes of one jti: exactly one first use, answered after a WAL sync; distinct jtis all first', async () => {
    const replay = store.replayStore(systemClock);
    const expires = new Date(Date.now() + 60_000);
    const before = { ...(store.commitStats as GroupCommitStats) };
    const same = await Promise.all(Array.from({ length: 100 }, () => replay.consume('jti-once', expires)));
    assert.equal(same.filter(Boolean).length, 1);
    const stats = store.commitStats as GroupCommitStats;
    assert.ok(stats.flushes - before.flushes >= 1 && stats.flushes - before.flushes <= 5, `${stats.flushes - before.flushes} fdatasyncs`);
    assert.ok(stats.waited - before.waited >= 100);
    const distinct = await Promise.all(Array.from({ length: 20 }, (_, i) => replay.consume(`jti-${i}`, expires)));
    assert.ok(distinct.every(Boolean));
    assert.equal(await replay.consume('jti-once', expires), false, 'still used');
    const rows = await sql<{ n: number }>`select count(*) as n from pc_stepup_replay`.execute(store.db);
    assert.equal(Number(rows.rows[0]?.n), 21);
  });

  it('after a failed WAL sync the store is not ready (every write would be refused)', async () => {
    await store.ping();
    const stats = store.commitStats as GroupCommitStats;
    stats.failedFlushes += 1;
    try {
      await assert.rejects(store.ping(), /WAL fdatasync/);
    } finally {
      stats.failedFlushes -= 1;
    }
    await store.ping();
  });

  it('misuse is a TypeError, not a verdict', async () => {
    const replay = store.replayStore(systemClock);
    await assert.rejects(replay.consume('', new Date()), TypeError);
    await assert.rejects(replay.consume('x', new Date(Number.NaN)), TypeError);
  });
});
