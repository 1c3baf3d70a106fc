import assert from 'node:assert/strict';
import { fdatasync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { openStore, type Store } from '../../src/store/database.ts';
import { Kysely } from 'kysely';
import { type FdatasyncFn, openNodeSqlite, withoutDurabilityWait } from '../../src/store/node-sqlite-dialect.ts';
import { consumeOnce } from '../../src/store/primitives.ts';
import { createTestGateway } from '../helpers/gateway.ts';
import { createTestDatabase, type TestDatabase } from '../helpers/stores.ts';

/**
 * The gateway's SQLite driver commits each transaction at once (synchronous = NORMAL, WAL)
 * and answers a caller that wrote only after an fdatasync of the WAL that started after its
 * commit; the commits of one event-loop turn share one fdatasync. These tests watch the file
 * through a second, independent connection, and replace fdatasync to see when it runs.
 */
describe('SQLite group fsync', () => {
  let dir: string;
  let file: string;
  let store: Store;
  let observer: DatabaseSync;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'stepgate-gc-'));
    file = join(dir, 'stepgate.sqlite');
    store = await openStore({ url: '', sqliteFile: file, sqliteBusyTimeoutMs: 2000 });
    await store.migrate();
    observer = new DatabaseSync(file, { readOnly: true });
  });
  after(async () => {
    observer.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const seen = (key: string): boolean => observer.prepare('select 1 from rate_limits where key = ?').get(key) !== undefined;
  const stats = () => ({ ...(store.commitStats ?? { flushes: Number.NaN, waited: Number.NaN }) });

  async function insert(key: string): Promise<void> {
    await store.db.insertInto('rate_limits').values({ key, count: 1, expires_at: Date.now() + 60_000 }).execute();
  }

  it('a write is committed (visible to another connection) by the time its caller is answered', async () => {
    const keys = Array.from({ length: 40 }, (_, i) => `durable-${i}`);
    await Promise.all(
      keys.map(async (k) => {
        await insert(k);
        assert.equal(seen(k), true, `${k} answered before it was committed`);
      }),
    );
  });

  it('concurrent writers share fsyncs: 60 transactions, a handful of WAL fdatasyncs', async () => {
    const before = stats();
    await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        store.db.transaction().execute(async (tx) => {
          await tx.insertInto('rate_limits').values({ key: `tx-${i}-a`, count: 1, expires_at: 1 }).execute();
          await tx.insertInto('rate_limits').values({ key: `tx-${i}-b`, count: 1, expires_at: 1 }).execute();
        }),
      ),
    );
    const after = stats();
    for (let i = 0; i < 60; i += 1) assert.equal(seen(`tx-${i}-a`) && seen(`tx-${i}-b`), true);
    const flushes = after.flushes - before.flushes;
    assert.ok(flushes >= 1 && flushes <= 10, `expected few fdatasyncs, got ${flushes}`);
    assert.equal(after.waited - before.waited, 60);
  });

  it('a transaction that fails is rolled back alone; the others of its turn commit', async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        store.db.transaction().execute(async (tx) => {
          await tx.insertInto('rate_limits').values({ key: `mixed-${i}`, count: 1, expires_at: 1 }).execute();
          if (i % 3 === 0) throw new Error(`abort ${i}`);
        }),
      ),
    );
    for (let i = 0; i < 10; i += 1) {
      assert.equal(results[i]?.status, i % 3 === 0 ? 'rejected' : 'fulfilled');
      assert.equal(seen(`mixed-${i}`), i % 3 !== 0, `mixed-${i}`);
    }
  });

  it('a COMMIT that fails fails its own transaction only, and leaves none of its writes', async () => {
    const now = Date.now();
    // A deferred foreign key violation is only detected at COMMIT.
    const bad = store.db.transaction().execute(async (tx) => {
      await tx.insertInto('rate_limits').values({ key: 'bad-tx-row', count: 1, expires_at: 1 }).execute();
      await sql`pragma defer_foreign_keys = on`.execute(tx);
      await tx
        .insertInto('factors')
        .values({ id: 'fac_gc_orphan', user_id: 'usr_gc_missing', type: 'password', label: '', status: 'active', secret_hash: null, secret_sealed: null, params: '{}', counter: 0, failures: 0, locked_until: null, created_at: now, updated_at: now, last_used_at: null })
        .execute();
    });
    const good = [insert('batch-a'), store.db.transaction().execute(async (tx) => tx.insertInto('rate_limits').values({ key: 'batch-b', count: 1, expires_at: 1 }).execute())];
    const [b, ...g] = await Promise.allSettled([bad, ...good]);
    assert.equal(b?.status, 'rejected');
    assert.match(String((b as PromiseRejectedResult).reason), /FOREIGN KEY constraint failed/);
    for (const r of g) assert.equal(r.status, 'fulfilled');
    assert.equal(seen('bad-tx-row'), false);
    assert.equal(observer.prepare("select 1 from factors where id = 'fac_gc_orphan'").get(), undefined);
    assert.equal(seen('batch-a') && seen('batch-b'), true);
    await insert('after-failure');
    assert.equal(seen('after-failure'), true);
  });

  it('a single-use row is consumed exactly once by 50 concurrent callers, durably', async () => {
    const now = Date.now();
    await store.db.insertInto('one_time_tokens').values({ id_hash: 'gc-token', purpose: 'admin_setup', subject: null, created_at: now, expires_at: now + 60_000, used_at: null }).execute();
    const wins = await Promise.all(
      Array.from({ length: 50 }, async () => {
        const won = await consumeOnce(store.db, { table: 'one_time_tokens', match: { id_hash: 'gc-token' }, now: new Date(), expiresColumn: 'expires_at' });
        // Whoever is told "consumed" is told so only once it is on disk.
        if (won) assert.notEqual((observer.prepare("select used_at from one_time_tokens where id_hash = 'gc-token'").get() as { used_at: number | null }).used_at, null);
        return won;
      }),
    );
    assert.equal(wins.filter(Boolean).length, 1);
  });

  it('a plain SELECT neither opens a batch nor waits for one', async () => {
    await insert('read-me');
    const before = stats();
    const row = await store.db.selectFrom('rate_limits').select('count').where('key', '=', 'read-me').executeTakeFirst();
    assert.equal(row?.count, 1);
    assert.deepEqual(stats(), before);
  });

  it('a transaction of SELECTs only does not wait for a sync; one with a write does, even when it changed no row', async () => {
    await insert('read-in-tx');
    const before = stats();
    const read = await store.db.transaction().execute((tx) => tx.selectFrom('rate_limits').select('count').where('key', '=', 'read-in-tx').executeTakeFirst());
    assert.equal(read?.count, 1);
    assert.equal(stats().waited, before.waited, 'read-only: answered without waiting');
    await store.db.transaction().execute(async (tx) => {
      await tx.selectFrom('rate_limits').select('count').where('key', '=', 'read-in-tx').executeTakeFirst();
      await tx.updateTable('rate_limits').set({ count: 5 }).where('key', '=', 'no-such-key').execute();
    });
    assert.equal(stats().waited, before.waited + 1, 'an UPDATE ran (no row matched): it waits, conservatively');
    await store.db.transaction().execute((tx) => tx.updateTable('rate_limits').set({ count: 7 }).where('key', '=', 'read-in-tx').execute());
    assert.equal(stats().waited, before.waited + 2);
    assert.equal(seen('read-in-tx'), true);
  });

  it('relaxed writes (rate-limit counters) are committed but do not wait for the WAL fsync', async () => {
    const before = stats();
    await withoutDurabilityWait(() => insert('relaxed'));
    assert.equal(seen('relaxed'), true, 'committed');
    assert.equal(stats().waited, before.waited, 'answered without waiting for an fdatasync');
    await insert('durable-after-relaxed');
    assert.equal(stats().waited, before.waited + 1);
  });

  it('a second store on the same file in this process shares the connection: no self-deadlock, closing one leaves the other open', async () => {
    const second = await openStore({ url: '', sqliteFile: file, sqliteBusyTimeoutMs: 2000 });
    try {
      await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? store : second).db.transaction().execute((tx) => tx.insertInto('rate_limits').values({ key: `shared-${i}`, count: 1, expires_at: 1 }).execute())));
      for (let i = 0; i < 20; i += 1) assert.equal(seen(`shared-${i}`), true);
    } finally {
      await second.close();
    }
    await insert('after-second-closed');
    assert.equal(seen('after-second-closed'), true);
  });

  describe('the WAL fdatasync (off the event loop)', () => {
    async function withDriver(fdatasync: FdatasyncFn, body: (db: Kysely<{ t: { k: string } }>) => Promise<void>): Promise<void> {
      const d = mkdtempSync(join(tmpdir(), 'stepgate-walsync-'));
      const { dialect, raw } = openNodeSqlite({ file: join(d, 'x.sqlite'), busyTimeoutMs: 1000, fdatasync });
      raw.exec('create table t (k text primary key)');
      const db = new Kysely<{ t: { k: string } }>({ dialect });
      try {
        await body(db);
      } finally {
        await db.destroy();
        rmSync(d, { recursive: true, force: true });
      }
    }

    it('a caller is answered only after the fdatasync of the WAL it wrote returned', async () => {
      const events: string[] = [];
      const slow: FdatasyncFn = (fd, cb) => {
        events.push('fdatasync called');
        setTimeout(() => {
          events.push('fdatasync returned');
          cb(null);
        }, 40);
        void fd;
      };
      await withDriver(slow, async (db) => {
        await Promise.all([
          db.insertInto('t').values({ k: 'a' }).execute().then(() => events.push('a answered')),
          db.insertInto('t').values({ k: 'b' }).execute().then(() => events.push('b answered')),
        ]);
        assert.deepEqual(events, ['fdatasync called', 'fdatasync returned', 'a answered', 'b answered']);
        // And the event loop was free meanwhile: a read ran while the fsync was in flight.
        events.length = 0;
        const write = db.insertInto('t').values({ k: 'c' }).execute().then(() => events.push('c answered'));
        while (!events.includes('fdatasync called')) await new Promise((resolve) => setImmediate(resolve));
        const rows = await db.selectFrom('t').select('k').execute();
        events.push(`read ${rows.length} rows`);
        await write;
        assert.deepEqual(events, ['fdatasync called', 'read 3 rows', 'fdatasync returned', 'c answered']);
      });
    });

    it('a failed fdatasync fails its callers (fail closed)', async () => {
      const failing: FdatasyncFn = (_fd, cb) => {
        const err = Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }) as NodeJS.ErrnoException;
        setImmediate(() => cb(err));
      };
      await withDriver(failing, async (db) => {
        await assert.rejects(db.insertInto('t').values({ k: 'x' }).execute(), /EIO/);
      });
    });

    it('after one failed fdatasync every later write is refused, even when the disk answers again; reads still work', async () => {
      let calls = 0;
      const failsOnce: FdatasyncFn = (_fd, cb) => {
        calls += 1;
        const err = calls === 1 ? (Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }) as NodeJS.ErrnoException) : null;
        setImmediate(() => cb(err));
      };
      await withDriver(failsOnce, async (db) => {
        await assert.rejects(db.insertInto('t').values({ k: 'a' }).execute(), /EIO/);
        // The kernel may have dropped the WAL pages of the failed sync: no later write may be
        // reported durable, whatever a later fdatasync would say. No further sync is even tried.
        await assert.rejects(db.insertInto('t').values({ k: 'b' }).execute(), /EIO/);
        await assert.rejects(db.transaction().execute((tx) => tx.insertInto('t').values({ k: 'c' }).execute()), /EIO/);
        assert.equal(calls, 1);
        const rows = await db.selectFrom('t').select('k').execute();
        assert.ok(rows.length >= 1, 'reads are still answered');
      });
    });
  });

  describe('over HTTP: a write the WAL fdatasync could not make durable', () => {
    it('is answered 503 problem+json (service_unavailable, Retry-After), as is every later write, not 500', async () => {
      let failing = false;
      let calls = 0;
      const disk: FdatasyncFn = (fd, cb) => {
        calls += 1;
        if (failing) setImmediate(() => cb(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO', errno: -5, syscall: 'fdatasync' }) as NodeJS.ErrnoException));
        else fdatasync(fd, cb);
      };
      const base = await createTestDatabase('sqlite');
      const database: TestDatabase = { ...base, open: () => openStore({ url: '', sqliteFile: base.sqliteFile, sqliteFdatasync: disk }) };
      // A refused sign-in writes (its audit record): a write every request can make.
      const tg = await createTestGateway({ database });
      try {
        const login = () => tg.http().post('/v1/login').send({ username: 'nobody', password: 'not the password' });
        assert.equal((await login()).status, 401, 'the disk works: an ordinary refusal');
        assert.ok(calls > 0, 'the writes went through the injected fdatasync');
        failing = true;
        for (const attempt of ['the write whose sync failed', 'a later write (refused until restart)']) {
          const res = await login();
          assert.equal(res.status, 503, `${attempt}: ${res.status} ${res.text}`);
          assert.match(String(res.headers['content-type']), /^application\/problem\+json/);
          assert.equal((JSON.parse(res.text) as { code: string }).code, 'service_unavailable');
          assert.ok(Number(res.headers['retry-after']) > 0, 'Retry-After');
          assert.doesNotMatch(res.text, /EIO|fdatasync|sqlite/i, 'no internals in the answer');
        }
        assert.equal(tg.gw.store.commitStats?.failedFlushes, 1, 'one sync failed; the later write was refused without another');
        assert.equal((await tg.http().get('/readyz')).status, 503);
        assert.match(tg.logs.text, /WAL fdatasync failed/, 'logged for the operator');
      } finally {
        await tg.close();
        await base.drop();
      }
    });
  });

  describe('WAL checkpoints in a thread of their own', () => {
    function openOn(checkpointThread: boolean) {
      const d = mkdtempSync(join(tmpdir(), 'stepgate-ckpt-'));
      const f = join(d, 'x.sqlite');
      const opened = openNodeSqlite({ file: f, busyTimeoutMs: 1000, checkpointThread });
      opened.raw.exec('create table t (k text primary key)');
      const db = new Kysely<{ t: { k: string } }>({ dialect: opened.dialect });
      return { file: f, dir: d, db, stats: opened.stats, raw: opened.raw };
    }

    it('copy the WAL into the database file off the event loop, keep every row, and end with the store', async () => {
      const withThread = openOn(true);
      const without = openOn(false);
      try {
        for (const s of [withThread, without]) {
          for (let round = 0; round < 20; round += 1) {
            await Promise.all(Array.from({ length: 40 }, (_, i) => s.db.insertInto('t').values({ k: `k-${round}-${i}-${'x'.repeat(200)}` }).execute()));
            // Like requests arriving over time: let the thread's checkpoints land in between.
            await new Promise((r) => setTimeout(r, 5));
          }
        }
        assert.ok(withThread.stats.checkpoints >= 1, 'the thread checkpointed');
        assert.equal(without.stats.checkpoints, 0);
        const dbSize = (s: { file: string }) => statSync(s.file).size;
        assert.ok(dbSize(withThread) > dbSize(without), `pages were copied into the database file (${dbSize(withThread)} vs ${dbSize(without)} bytes)`);
        // The event loop's own checkpoint waits for 4,000 pages now (only the rest is left to it).
        assert.equal(Object.values(withThread.raw.prepare('PRAGMA wal_autocheckpoint').get() ?? {})[0], 4000);
        // Every row is there, seen through an independent connection, and the file is sound.
        const check = new DatabaseSync(withThread.file, { readOnly: true });
        try {
          assert.equal((check.prepare('select count(*) as n from t').get() as { n: number }).n, 800);
          assert.equal((check.prepare('PRAGMA integrity_check').get() as { integrity_check: string }).integrity_check, 'ok');
        } finally {
          check.close();
        }
      } finally {
        for (const s of [withThread, without]) {
          // Closing waits for the thread: nothing is left running (node:test would hang on it).
          await s.db.destroy();
          rmSync(s.dir, { recursive: true, force: true });
        }
      }
    });
  });
});
