import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AuditLog } from '../../src/audit/audit-log.ts';
import { FixedClock } from '../../src/clock.ts';
import type { Store } from '../../src/store/database.ts';
import { migrations } from '../../src/store/migrations/index.ts';
import { advanceCounter, consumeOnce, guardedUpdate, incrementBelow, insertOnce } from '../../src/store/primitives.ts';
import { createTestDatabase, createTestStore, type TestDatabase, testDialects } from '../helpers/stores.ts';

/**
 * The storage contract every database backend must meet (SQLite always, PostgreSQL when
 * STEPGATE_TEST_DATABASE_URL is set). The flows rely on exactly these behaviours for
 * single-use codes, counters and lockout; the concurrency cases are what keep an attacker's
 * parallel requests from getting more than one success.
 */

const NOW = new Date(Date.UTC(2026, 4, 17, 9, 30, 15, 123));
const RACERS = 20;
let seq = 0;

function probeId(label: string): string {
  seq += 1;
  return `${label}-${seq}`;
}

async function insertProbe(store: Store, id: string, value = 0, usedAt: number | null = null): Promise<void> {
  await store.db.insertInto('store_probe').values({ id, value, used_at: usedAt }).execute();
}

async function readProbe(store: Store, id: string) {
  return store.db.selectFrom('store_probe').selectAll().where('id', '=', id).executeTakeFirst();
}

async function countRows(store: Store, table: 'store_probe' | 'audit_log'): Promise<number> {
  const row = await store.db.selectFrom(table).select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

const DATABASE_MODULE = fileURLToPath(new URL('../../src/store/database.ts', import.meta.url));
const PRIMITIVES_MODULE = fileURLToPath(new URL('../../src/store/primitives.ts', import.meta.url));

function storeOptionsOf(database: TestDatabase) {
  return database.dialect === 'sqlite'
    ? { url: '', sqliteFile: database.sqliteFile, sqliteBusyTimeoutMs: 10000 }
    : { url: database.url, sqliteFile: '', schema: database.schema, poolMax: 10 };
}

/**
 * A separate OS process that opens the same database, prints "ready", waits for "go" on
 * stdin, runs `body` (JavaScript with `store` and `input` in scope) and prints its JSON
 * result. Real processes are what production has: SQLite's locking between two processes
 * on one file, several gateways on one PostgreSQL.
 */
function childProcess(database: TestDatabase, body: string, input: unknown) {
  const code = `
    const { openStore } = await import(${JSON.stringify(DATABASE_MODULE)});
    const { consumeOnce } = await import(${JSON.stringify(PRIMITIVES_MODULE)});
    const input = JSON.parse(process.env.CHILD_INPUT);
    const store = await openStore(JSON.parse(process.env.CHILD_STORE));
    process.stdout.write('ready\\n');
    await new Promise((resolve) => process.stdin.once('data', resolve));
    let result;
    try {
      result = await (async () => { ${body} })();
    } finally {
      await store.close();
    }
    process.stdout.write(JSON.stringify(result) + '\\n');
  `;
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', code], {
    env: { ...process.env, CHILD_STORE: JSON.stringify(storeOptionsOf(database)), CHILD_INPUT: JSON.stringify(input) },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit') as Promise<[number | null]>;
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return {
    async ready(): Promise<void> {
      assert.equal((await lines.next()).value, 'ready');
    },
    go(): void {
      child.stdin!.end('go\n');
    },
    async result<R>(): Promise<R> {
      const line = await lines.next();
      const [exitCode] = await exited;
      assert.equal(exitCode, 0, 'child process failed (its stderr is above)');
      return JSON.parse(String(line.value)) as R;
    },
  };
}

/** Starts the children, releases them at the same moment, and collects their results. */
async function race<R>(children: ReturnType<typeof childProcess>[]): Promise<R[]> {
  await Promise.all(children.map((c) => c.ready()));
  for (const c of children) c.go();
  return Promise.all(children.map((c) => c.result<R>()));
}

const CONSUME_ALL = `
  const won = [];
  await Promise.all(input.map(async (id) => {
    const ok = await store.db.transaction().execute((tx) => consumeOnce(tx, { table: 'store_probe', match: { id }, now: new Date(${NOW.getTime()}) }));
    if (ok) won.push(id);
  }));
  return won;
`;

for (const dialect of testDialects()) {
  describe(`store conformance: ${dialect}`, () => {
    let store: Store;
    let database: TestDatabase;
    let cleanup: () => Promise<void>;

    before(async () => {
      ({ store, database, cleanup } = await createTestStore(dialect));
    });
    after(async () => {
      await cleanup();
    });

    describe('create and read', () => {
      it('round-trips integer epoch milliseconds, JSON text and NULL', async () => {
        const id = probeId('rt');
        const note = JSON.stringify({ amount: '12.30', payee: 'Café 北京', nested: [1, { ok: true }] });
        await store.db.insertInto('store_probe').values({ id, value: NOW.getTime(), used_at: null, note }).execute();
        const row = await readProbe(store, id);
        assert.ok(row);
        // Epoch ms exceed 32 bits: they must come back as exact JS numbers, not strings or bigints.
        assert.equal(typeof row.value, 'number');
        assert.equal(row.value, NOW.getTime());
        assert.equal(new Date(row.value).toISOString(), NOW.toISOString());
        assert.equal(row.used_at, null);
        assert.deepEqual(JSON.parse(row.note), JSON.parse(note));
      });

      it('applies column defaults and the largest safe integer', async () => {
        const id = probeId('rt');
        await insertProbe(store, id, Number.MAX_SAFE_INTEGER);
        const row = await readProbe(store, id);
        assert.equal(row?.note, '');
        assert.equal(row?.value, Number.MAX_SAFE_INTEGER);
      });

      it('rejects a duplicate primary key', async () => {
        const id = probeId('rt');
        await insertProbe(store, id);
        await assert.rejects(insertProbe(store, id));
        assert.equal((await readProbe(store, id))?.value, 0);
      });
    });

    describe('consume once', () => {
      it('the first consume wins, every later one loses and changes nothing', async () => {
        const id = probeId('c');
        await insertProbe(store, id);
        assert.equal(await consumeOnce(store.db, { table: 'store_probe', match: { id }, now: NOW }), true);
        const later = new Date(NOW.getTime() + 60_000);
        assert.equal(await consumeOnce(store.db, { table: 'store_probe', match: { id }, now: later }), false);
        assert.equal((await readProbe(store, id))?.used_at, NOW.getTime());
      });

      it('an absent row is not consumed', async () => {
        assert.equal(await consumeOnce(store.db, { table: 'store_probe', match: { id: 'no-such-row' }, now: NOW }), false);
      });

      it('honours the expiry column: expired rows stay unconsumed', async () => {
        const expired = probeId('exp');
        const live = probeId('exp');
        await insertProbe(store, expired, NOW.getTime()); // expires exactly now: too late
        await insertProbe(store, live, NOW.getTime() + 1);
        const consume = (id: string) => consumeOnce(store.db, { table: 'store_probe', match: { id }, now: NOW, expiresColumn: 'value' });
        assert.equal(await consume(expired), false);
        assert.equal((await readProbe(store, expired))?.used_at, null);
        assert.equal(await consume(live), true);
      });

      it('every match condition must hold', async () => {
        const id = probeId('m');
        await store.db.insertInto('store_probe').values({ id, value: 0, used_at: null, note: 'purpose-a' }).execute();
        assert.equal(await consumeOnce(store.db, { table: 'store_probe', match: { id, note: 'purpose-b' }, now: NOW }), false);
        assert.equal(await consumeOnce(store.db, { table: 'store_probe', match: { id, note: 'purpose-a' }, now: NOW }), true);
      });

      it('refuses an empty match (it would consume the whole table)', async () => {
        await assert.rejects(consumeOnce(store.db, { table: 'store_probe', match: {}, now: NOW }), TypeError);
        await assert.rejects(consumeOnce(store.db, { table: 'store_probe', match: { id: undefined }, now: NOW }), TypeError);
      });
    });

    describe('guarded update', () => {
      it('a stale writer loses (compare-and-set)', async () => {
        const id = probeId('g');
        await insertProbe(store, id, 5);
        // Both writers read value 5, then each tries to write its own successor.
        const read = (await readProbe(store, id))!.value;
        const first = await guardedUpdate(store.db, { table: 'store_probe', match: { id }, guard: { column: 'value', op: '=', value: read }, set: { value: 6 } });
        const stale = await guardedUpdate(store.db, { table: 'store_probe', match: { id }, guard: { column: 'value', op: '=', value: read }, set: { value: 7, note: 'stale' } });
        assert.equal(first, 1);
        assert.equal(stale, 0);
        const row = await readProbe(store, id);
        assert.equal(row?.value, 6);
        assert.equal(row?.note, '');
      });

      it('a monotonic counter only moves forward (replays and stale values are refused)', async () => {
        const id = probeId('adv');
        await insertProbe(store, id, 0);
        const advance = (value: number) => advanceCounter(store.db, { table: 'store_probe', match: { id }, column: 'value', value });
        assert.equal(await advance(10), true);
        assert.equal(await advance(10), false, 'same value again (a replayed code)');
        assert.equal(await advance(9), false, 'older value (a stale writer)');
        assert.equal(await advance(11), true);
        assert.equal((await readProbe(store, id))?.value, 11);
      });

      it('of 20 parallel writers advancing to the same value exactly one wins', async () => {
        const id = probeId('adv');
        await insertProbe(store, id, 0);
        const results = await Promise.all(
          Array.from({ length: RACERS }, () => advanceCounter(store.db, { table: 'store_probe', match: { id }, column: 'value', value: 42 })),
        );
        assert.equal(results.filter(Boolean).length, 1);
      });
    });

    describe('increment below a bound', () => {
      it('counts up to the bound and then refuses', async () => {
        const id = probeId('inc');
        await insertProbe(store, id, 0);
        const charge = () => incrementBelow(store.db, { table: 'store_probe', match: { id }, column: 'value', max: 3, set: { note: 'charged' } });
        assert.deepEqual([await charge(), await charge(), await charge(), await charge()], [1, 2, 3, undefined]);
        const row = await readProbe(store, id);
        assert.equal(row?.value, 3);
        assert.equal(row?.note, 'charged');
      });

      it('an absent row is not charged', async () => {
        assert.equal(await incrementBelow(store.db, { table: 'store_probe', match: { id: 'no-such-row' }, column: 'value', max: 3 }), undefined);
      });

      it('20 parallel charges against a bound of 5: exactly 5 succeed, each with its own value', async () => {
        const id = probeId('inc');
        await insertProbe(store, id, 0);
        const results = await Promise.all(
          Array.from({ length: RACERS }, () =>
            store.db.transaction().execute((tx) => incrementBelow(tx, { table: 'store_probe', match: { id }, column: 'value', max: 5 })),
          ),
        );
        const charged = results.filter((r) => r !== undefined).sort((a, b) => a - b);
        assert.deepEqual(charged, [1, 2, 3, 4, 5]);
        assert.equal((await readProbe(store, id))?.value, 5);
      });
    });

    describe('insert once', () => {
      it('of 20 parallel inserts of the same key exactly one lands', async () => {
        const id = probeId('ins');
        const results = await Promise.all(
          Array.from({ length: RACERS }, (_, i) => insertOnce(store.db, { table: 'store_probe', values: { id, value: i, used_at: null, note: `racer ${i}` }, conflict: ['id'] })),
        );
        assert.equal(results.filter(Boolean).length, 1);
        const winner = results.indexOf(true);
        assert.equal((await readProbe(store, id))?.note, `racer ${winner}`);
      });
    });

    describe('transactions', () => {
      it('a throw inside transaction().execute leaves nothing behind, audit event included', async () => {
        const kept = probeId('tx');
        const created = probeId('tx');
        await insertProbe(store, kept, 1);
        const auditBefore = await countRows(store, 'audit_log');
        const audit = new AuditLog(store.dialect, new FixedClock(NOW));
        await assert.rejects(
          store.db.transaction().execute(async (tx) => {
            await tx.insertInto('store_probe').values({ id: created, value: 1, used_at: null }).execute();
            assert.equal(await consumeOnce(tx, { table: 'store_probe', match: { id: kept }, now: NOW }), true);
            await incrementBelow(tx, { table: 'store_probe', match: { id: kept }, column: 'value', max: 10 });
            await audit.append(tx, { type: 'probe.changed', subject: kept });
            throw new Error('boom');
          }),
          /boom/,
        );
        assert.equal(await readProbe(store, created), undefined);
        const row = await readProbe(store, kept);
        assert.equal(row?.used_at, null);
        assert.equal(row?.value, 1);
        assert.equal(await countRows(store, 'audit_log'), auditBefore);
        // The connection is usable afterwards and a committed transaction does persist.
        await store.db.transaction().execute((tx) => consumeOnce(tx, { table: 'store_probe', match: { id: kept }, now: NOW }));
        assert.equal((await readProbe(store, kept))?.used_at, NOW.getTime());
      });

      it('a database error inside a transaction rolls back the earlier statements', async () => {
        const first = probeId('tx');
        const existing = probeId('tx');
        await insertProbe(store, existing);
        await assert.rejects(
          store.db.transaction().execute(async (tx) => {
            await tx.insertInto('store_probe').values({ id: first, value: 1, used_at: null }).execute();
            await tx.insertInto('store_probe').values({ id: existing, value: 1, used_at: null }).execute();
          }),
        );
        assert.equal(await readProbe(store, first), undefined);
      });
    });

    describe('concurrency', () => {
      it('20 parallel consumes of the same row: exactly one winner', async () => {
        const id = probeId('race');
        await insertProbe(store, id);
        const results = await Promise.all(Array.from({ length: RACERS }, () => consumeOnce(store.db, { table: 'store_probe', match: { id }, now: NOW })));
        assert.equal(results.filter(Boolean).length, 1);
      });

      it('20 parallel consumes, each in its own transaction: exactly one winner', async () => {
        const id = probeId('race');
        await insertProbe(store, id);
        const results = await Promise.all(
          Array.from({ length: RACERS }, () => store.db.transaction().execute((tx) => consumeOnce(tx, { table: 'store_probe', match: { id }, now: NOW }))),
        );
        assert.equal(results.filter(Boolean).length, 1);
      });

      // On SQLite two stores of one process on one file share one connection (see
      // openNodeSqlite); two connections are two OS processes, the test after this one.
      it('20 parallel consumes split across two separately opened stores: exactly one winner', async () => {
        const other = await database.open();
        try {
          for (let round = 0; round < 5; round += 1) {
            const id = probeId('race2');
            await insertProbe(store, id);
            const results = await Promise.all(
              Array.from({ length: RACERS }, (_, i) => consumeOnce((i % 2 === 0 ? store : other).db, { table: 'store_probe', match: { id }, now: NOW })),
            );
            assert.equal(results.filter(Boolean).length, 1, `round ${round}`);
          }
          // Both "processes" see the same counter: 20 charges against a bound of 7 across both.
          const id = probeId('inc2');
          await insertProbe(store, id, 0);
          const charged = await Promise.all(
            Array.from({ length: RACERS }, (_, i) => incrementBelow((i % 2 === 0 ? store : other).db, { table: 'store_probe', match: { id }, column: 'value', max: 7 })),
          );
          assert.equal(charged.filter((c) => c !== undefined).length, 7);
          assert.equal((await readProbe(other, id))?.value, 7);
        } finally {
          await other.close();
        }
      });

      it('two OS processes racing over 40 rows: every row has exactly one winner', async () => {
        const ids = Array.from({ length: 40 }, () => probeId('proc'));
        for (const id of ids) await insertProbe(store, id);
        const [wonA = [], wonB = []] = await race<string[]>([childProcess(database, CONSUME_ALL, ids), childProcess(database, CONSUME_ALL, [...ids].reverse())]);
        assert.equal(wonA.length + wonB.length, ids.length);
        assert.deepEqual([...wonA, ...wonB].sort(), [...ids].sort());
        const used = await store.db.selectFrom('store_probe').select('used_at').where('id', 'in', ids).execute();
        assert.ok(used.every((r) => r.used_at === NOW.getTime()));
      });
    });

    describe('migrations', () => {
      it('running the migrations again changes nothing', async () => {
        const before = await countRows(store, 'store_probe');
        assert.deepEqual(await store.migrate(), []);
        assert.deepEqual(await store.migrate(), []);
        assert.equal(await countRows(store, 'store_probe'), before);
      });

      // node:sqlite is synchronous: a second connection in the same thread that waits for
      // the first one's lock blocks the very thread that would release it. One process holds
      // one SQLite store, so this case exists for PostgreSQL only; SQLite is covered by the
      // two-process test below. (Not a skip: nothing may skip in strict mode.)
      const postgresOnly = dialect === 'postgres' ? it : undefined;
      postgresOnly?.('two stores in one process migrating the same fresh database concurrently both succeed', async () => {
        const fresh = await createTestDatabase(dialect);
        const [a, b] = [await fresh.open(), await fresh.open()];
        try {
          const [appliedA, appliedB] = await Promise.all([a.migrate(), b.migrate()]);
          // Every migration ran exactly once, whichever store ran it.
          assert.deepEqual([...appliedA, ...appliedB].sort(), Object.keys(migrations).sort());
          assert.deepEqual(await a.migrate(), []);
          await insertProbe(a, 'after-migrate');
          assert.ok(await readProbe(b, 'after-migrate'));
        } finally {
          await a.close();
          await b.close();
          await fresh.drop();
        }
      });

      // SQLite: Kysely would run SQLite migrations outside a transaction; our dialect runs
      // them in one BEGIN IMMEDIATE transaction (node-sqlite-dialect.ts), so the second
      // process waits for the first and then finds nothing left to apply.
      it('two OS processes migrating the same fresh database at once both succeed', async () => {
        const fresh = await createTestDatabase(dialect);
        try {
          const applied = await race<string[]>([0, 1].map(() => childProcess(fresh, 'return store.migrate();', null)));
          assert.deepEqual(applied.flat().sort(), Object.keys(migrations).sort());
          const check = await fresh.open();
          try {
            assert.deepEqual(await check.migrate(), []);
          } finally {
            await check.close();
          }
        } finally {
          await fresh.drop();
        }
      });
    });
  });
}
