import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import pg from 'pg';
import { FixedClock } from '../../src/clock.ts';
import {
  createJwksCache,
  MemoryReplayStore,
  PostgresReplayStore,
  SqliteReplayStore,
  StepUpTokenError,
  verifyStepUpToken,
  type ReplayStore,
  type VerifierClock,
} from '../../src/verifier/index.ts';
import { TEST_DATABASE_URL, unavailable } from '../helpers/env.ts';
import { serveJwks, TEST_ACTION, TEST_AUDIENCE, TEST_CONTEXT, TEST_ISSUER, TEST_SUBJECT, TokenMinter } from '../helpers/token-minter.ts';

/**
 * One conformance suite every replay store runs: first use wins once, under concurrency, also
 * through two separately opened stores on the same database (two processes of the relying
 * service), and expired entries go away.
 */

type AnyStore = ReplayStore & { prune(): number | Promise<number> };

interface Env {
  /** Two handles on the same database (the same instance for the in-memory store). */
  a: AnyStore;
  b: AnyStore;
  cleanup(): Promise<void>;
}

const T0 = Date.UTC(2026, 2, 1, 8, 0, 0);
const at = (seconds: number): Date => new Date(T0 + seconds * 1000);

interface Backend {
  name: string;
  open(t: TestContext, clock: FixedClock): Promise<Env | undefined>;
}

const backends: Backend[] = [
  {
    name: 'memory',
    async open(_t, clock) {
      const store = new MemoryReplayStore({ clock });
      return { a: store, b: store, cleanup: async () => undefined };
    },
  },
  {
    name: 'sqlite',
    async open(_t, clock) {
      const dir = mkdtempSync(join(tmpdir(), 'stepgate-replay-'));
      const file = join(dir, 'replay.sqlite');
      const a = new SqliteReplayStore({ file, clock });
      const b = new SqliteReplayStore({ file, clock });
      return {
        a,
        b,
        async cleanup() {
          a.close();
          b.close();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 'postgres',
    async open(t, clock) {
      if (TEST_DATABASE_URL === '' && unavailable(t, 'STEPGATE_TEST_DATABASE_URL is not set')) return undefined;
      const schema = `replay_${process.pid}_${randomBytes(5).toString('hex')}`;
      // Separate pools: as two relying-service processes would have. No prune grace here, so
      // the shared suite sees rows go at their expiry (the grace has its own test below).
      const a = new PostgresReplayStore({ connectionString: TEST_DATABASE_URL, schema, clock, pruneGraceSeconds: 0 });
      const b = new PostgresReplayStore({ connectionString: TEST_DATABASE_URL, schema, clock, pruneGraceSeconds: 0 });
      return {
        a,
        b,
        async cleanup() {
          await a.close();
          await b.close();
          const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
          await client.connect();
          try {
            await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
          } finally {
            await client.end();
          }
        },
      };
    },
  },
];

async function withEnv(t: TestContext, backend: Backend, fn: (env: Env, clock: FixedClock) => Promise<void>): Promise<void> {
  const clock = new FixedClock(T0);
  const env = await backend.open(t, clock);
  if (env === undefined) return;
  try {
    await fn(env, clock);
  } finally {
    await env.cleanup();
  }
}

for (const backend of backends) {
  describe(`replay store: ${backend.name}`, () => {
    it('returns true on first use only', (t) =>
      withEnv(t, backend, async ({ a, b }) => {
        assert.equal(await a.consume('jti-1', at(120)), true);
        assert.equal(await a.consume('jti-1', at(120)), false);
        assert.equal(await b.consume('jti-1', at(120)), false);
        assert.equal(await b.consume('jti-2', at(120)), true);
        // Exact match: no case folding or trimming.
        assert.equal(await a.consume('JTI-1', at(120)), true);
        assert.equal(await a.consume('jti-1 ', at(120)), true);
      }));

    it('lets exactly one of 20 parallel consumes of one jti win', (t) =>
      withEnv(t, backend, async ({ a }) => {
        const results = await Promise.all(Array.from({ length: 20 }, () => a.consume('race', at(120))));
        assert.equal(results.filter(Boolean).length, 1);
      }));

    it('lets exactly one of 20 parallel consumes win across two separately opened stores', (t) =>
      withEnv(t, backend, async ({ a, b }) => {
        for (let round = 0; round < 3; round += 1) {
          const jti = `race-two-${round}`;
          const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).consume(jti, at(120))));
          assert.equal(results.filter(Boolean).length, 1, `round ${round}`);
        }
      }));

    it('prunes expired entries and keeps live ones', (t) =>
      withEnv(t, backend, async ({ a }, clock) => {
        assert.equal(await a.consume('short', at(10)), true);
        assert.equal(await a.consume('long', at(300)), true);
        clock.advance(11);
        assert.equal(await a.prune(), 1);
        assert.equal(await a.consume('long', at(300)), false);
        // The pruned jti is gone (its token is refused as expired long before this matters).
        assert.equal(await a.consume('short', at(400)), true);
      }));

    it('rejects misuse with a TypeError', (t) =>
      withEnv(t, backend, async ({ a }) => {
        await assert.rejects(a.consume('', at(10)), TypeError);
        await assert.rejects(a.consume(undefined as unknown as string, at(10)), TypeError);
        await assert.rejects(a.consume('x', new Date(Number.NaN)), TypeError);
        await assert.rejects(a.consume('x', 1 as unknown as Date), TypeError);
      }));
  });
}

describe('replay store specifics', () => {
  it('memory: is bounded and refuses (fails closed) rather than forgetting a live jti', async () => {
    const clock = new FixedClock(T0);
    const store = new MemoryReplayStore({ clock, maxEntries: 3 });
    for (const jti of ['a', 'b', 'c']) assert.equal(await store.consume(jti, at(60)), true);
    await assert.rejects(store.consume('d', at(60)), /full/);
    assert.equal(await store.consume('a', at(60)), false);
    clock.advance(61);
    assert.equal(await store.consume('d', at(200)), true);
    assert.equal(store.size, 1);
  });

  it('memory: prunes on its own as the clock moves', async () => {
    const clock = new FixedClock(T0);
    const store = new MemoryReplayStore({ clock, pruneIntervalSeconds: 60 });
    for (let i = 0; i < 50; i += 1) await store.consume(`j${i}`, at(30));
    assert.equal(store.size, 50);
    clock.advance(61);
    await store.consume('late', at(200));
    assert.equal(store.size, 1);
  });

  it('sqlite: remembers across reopen and validates names', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stepgate-replay-'));
    try {
      const file = join(dir, 'r.sqlite');
      const clock = new FixedClock(T0);
      const first = new SqliteReplayStore({ file, clock, tableName: 'pay_replay' });
      assert.equal(await first.consume('persisted', at(120)), true);
      first.close();
      const again = new SqliteReplayStore({ file, clock, tableName: 'pay_replay' });
      assert.equal(await again.consume('persisted', at(120)), false);
      again.close();
      assert.throws(() => new SqliteReplayStore({ file, tableName: 'x; drop table y' }), TypeError);
      assert.throws(() => new SqliteReplayStore({}), TypeError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sqlite: consumes of one event-loop turn commit together, each answered after the commit, a jti twice in one batch wins once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stepgate-replay-'));
    try {
      const file = join(dir, 'r.sqlite');
      const clock = new FixedClock(T0);
      const store = new SqliteReplayStore({ file, clock });
      const jtis = Array.from({ length: 50 }, (_, i) => `batch-${i}`);
      // All issued in one turn: one batch, with three copies of batch-7 inside it.
      const answers = await Promise.all([...jtis, 'batch-7', 'batch-7'].map((j) => store.consume(j, at(120))));
      assert.deepEqual(answers.slice(0, 50), jtis.map(() => true));
      assert.deepEqual(answers.slice(50), [false, false]);
      // Committed (not merely answered): another connection on the file sees every one.
      const other = new SqliteReplayStore({ file, clock });
      for (const j of jtis) assert.equal(await other.consume(j, at(120)), false, j);
      other.close();
      // close() answers consumes still waiting for their turn, then closes.
      const pending = store.consume('at-close', at(120));
      store.close();
      assert.equal(await pending, true);
      const reopened = new SqliteReplayStore({ file, clock });
      assert.equal(await reopened.consume('at-close', at(120)), false);
      reopened.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sqlite: a batch is answered only after the WAL fdatasync returned; a failed sync refuses, and so does every consume after it (fails closed)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stepgate-replay-sync-'));
    try {
      const clock = new FixedClock(T0);
      const events: string[] = [];
      let fail = false;
      const store = new SqliteReplayStore({
        file: join(dir, 'r.sqlite'),
        clock,
        fdatasync: (fd, cb) => {
          events.push('sync started');
          setTimeout(() => {
            events.push('sync returned');
            cb(fail ? Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }) : null);
          }, 30);
          assert.ok(fd > 0);
        },
      });
      const first = await Promise.all(['s-1', 's-2'].map((j) => store.consume(j, at(120)).then((ok) => events.push(`${j} ${ok}`))));
      assert.equal(first.length, 2);
      assert.deepEqual(events, ['sync started', 'sync returned', 's-1 true', 's-2 true']);
      fail = true;
      await assert.rejects(store.consume('s-3', at(120)), /EIO/);
      fail = false;
      // Once a sync failed, nothing is reported consumed any more (a later sync proves nothing
      // about the WAL frames the failed one lost), and no further sync is tried.
      const syncs = events.filter((e) => e === 'sync started').length;
      await assert.rejects(store.consume('s-4', at(120)), /EIO/);
      assert.equal(events.filter((e) => e === 'sync started').length, syncs);
      store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sqlite: exactly one winner per jti across three processes on one file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'stepgate-replay-'));
    try {
      const file = join(dir, 'r.sqlite');
      const moduleUrl = new URL(`file://${resolve('src/verifier/replay-store-sqlite.ts')}`).href;
      // Enough work per process that they overlap even on a loaded machine.
      const count = 1500;
      // Each child opens its own store, says it is ready, waits for "go", then races through the
      // same jtis in its own random order, so the processes collide on many of them.
      const script = `
        const { SqliteReplayStore } = await import(${JSON.stringify(moduleUrl)});
        const store = new SqliteReplayStore({ file: ${JSON.stringify(file)} });
        const expiresAt = new Date(Date.now() + 600000);
        process.stdout.write('ready\\n');
        await new Promise((go) => process.stdin.once('data', go));
        const { randomInt } = await import('node:crypto');
        const order = Array.from({ length: ${count} }, (_, i) => i);
        for (let i = order.length - 1; i > 0; i -= 1) { const j = randomInt(i + 1); [order[i], order[j]] = [order[j], order[i]]; }
        let wins = 0;
        const startedAt = Date.now();
        for (const i of order) if (await store.consume('jti-' + i, expiresAt)) wins += 1;
        const endedAt = Date.now();
        store.close();
        process.stdout.write('wins=' + wins + ' ' + startedAt + ' ' + endedAt + '\\n');
        process.exit(0);
      `;
      // Create the table first so the children race on rows, not on the schema.
      new SqliteReplayStore({ file }).close();
      const children = Array.from({ length: 3 }, () => {
        const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', script], {
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        let out = '';
        let err = '';
        const ready = new Promise<void>((resolveReady) => {
          child.stdout.on('data', (chunk: Buffer) => {
            out += chunk.toString();
            if (out.includes('ready')) resolveReady();
          });
        });
        child.stderr.on('data', (chunk: Buffer) => {
          err += chunk.toString();
        });
        const done = new Promise<{ wins: number; startedAt: number; endedAt: number }>((resolveRun, reject) => {
          child.on('error', reject);
          child.on('close', (code) => {
            const m = /wins=(\d+) (\d+) (\d+)/.exec(out);
            if (code === 0 && m !== null) resolveRun({ wins: Number(m[1]), startedAt: Number(m[2]), endedAt: Number(m[3]) });
            else reject(new Error(`child exited ${code}: ${err}`));
          });
        });
        return { child, ready, done };
      });
      await Promise.all(children.map((c) => c.ready));
      for (const { child } of children) child.stdin.end('go\n');
      const runs = await Promise.all(children.map((c) => c.done));
      const wins = runs.map((r) => r.wins);
      assert.equal(
        wins.reduce((sum, n) => sum + n, 0),
        count,
        `wins per process: ${wins.join(', ')}`,
      );
      // The processes really ran at the same time (SQLite's lock may still let one of them win
      // every row: the others wait in the busy handler, which is exactly the serialisation we rely on).
      assert.ok(Math.max(...runs.map((r) => r.startedAt)) < Math.min(...runs.map((r) => r.endedAt)), 'the processes did not overlap');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('postgres: creates its table in the given schema, with an application-owned pool', async (t) => {
    if (TEST_DATABASE_URL === '' && unavailable(t, 'STEPGATE_TEST_DATABASE_URL is not set')) return;
    const schema = `replay_${process.pid}_${randomBytes(5).toString('hex')}`;
    const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 4 });
    try {
      const store = new PostgresReplayStore({ pool, schema, tableName: 'pay_replay' });
      await store.init();
      const { rows } = await pool.query('SELECT table_name FROM information_schema.tables WHERE table_schema = $1', [schema]);
      assert.deepEqual(
        rows.map((r: { table_name: string }) => r.table_name),
        ['pay_replay'],
      );
      assert.equal(await store.consume('pg-1', new Date(Date.now() + 60_000)), true);
      assert.equal(await store.consume('pg-1', new Date(Date.now() + 60_000)), false);
      await store.close(); // does not end the application's pool
      await pool.query('SELECT 1');
      assert.throws(() => new PostgresReplayStore({ pool, schema: 'Bad-Name' }), TypeError);
      assert.throws(() => new PostgresReplayStore({ pool, tableName: 'a"b' }), TypeError);
    } finally {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    }
  });

  it('postgres: a process whose clock runs ahead does not delete a jti another process still accepts the token for', async (t) => {
    if (TEST_DATABASE_URL === '' && unavailable(t, 'STEPGATE_TEST_DATABASE_URL is not set')) return;
    // Two hosts of one relying service on one table; host A's clock runs 10 s ahead of B's.
    const real = new FixedClock(T0);
    const ahead: VerifierClock = { now: () => new Date(real.now().getTime() + 10_000) };
    const minter = await TokenMinter.create({ now: () => real.now() });
    const server = await serveJwks(() => minter.jwks());
    const schema = `replay_${process.pid}_${randomBytes(5).toString('hex')}`;
    const a = new PostgresReplayStore({ connectionString: TEST_DATABASE_URL, schema, clock: ahead });
    const b = new PostgresReplayStore({ connectionString: TEST_DATABASE_URL, schema, clock: real });
    const verifyAt = (clock: VerifierClock, replayStore: PostgresReplayStore, token: string) =>
      verifyStepUpToken(token, {
        issuer: TEST_ISSUER,
        audience: TEST_AUDIENCE,
        jwks: createJwksCache({ jwksUri: server.url, clock }),
        expectedSubject: TEST_SUBJECT,
        expectedAction: TEST_ACTION,
        expectedContext: { ...TEST_CONTEXT },
        replayStore,
        clock,
      });
    try {
      const token = await minter.mint(); // exp = T0 + 120 s; remembered until exp + 5 + 1 s
      real.set(T0 + 100_000);
      await verifyAt(ahead, a, token);
      // A's clock reads past the row's expiry (B's does not), and A prunes.
      real.set(T0 + 117_000);
      await a.prune();
      // B, on time, still accepts the token's exp: only the remembered jti can refuse it.
      await assert.rejects(verifyAt(real, b, token), (err: unknown) => err instanceof StepUpTokenError && err.code === 'replayed');
      // Once every clock is past the grace, the row goes.
      real.set(T0 + (126 + 300 - 10) * 1000);
      assert.equal(await a.prune(), 1);
    } finally {
      await a.close();
      await b.close();
      await server.close();
      const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
      await client.connect();
      try {
        await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      } finally {
        await client.end();
      }
    }
  });

  it('postgres: a consume PostgreSQL does not answer, or that waits for a pooled connection, fails (closed) within queryTimeoutMs', async (t) => {
    if (TEST_DATABASE_URL === '' && unavailable(t, 'STEPGATE_TEST_DATABASE_URL is not set')) return;
    const schema = `replay_${process.pid}_${randomBytes(5).toString('hex')}`;
    const store = new PostgresReplayStore({ connectionString: TEST_DATABASE_URL, schema, queryTimeoutMs: 300 });
    const blocker = new pg.Client({ connectionString: TEST_DATABASE_URL });
    const pool = new pg.Pool({ connectionString: TEST_DATABASE_URL, max: 1 });
    // How a consume ends within `ms`: its answer, its failure, or 'still waiting'.
    const within = async (ms: number, consume: Promise<boolean>) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waiting = new Promise<string>((resolve) => {
        timer = setTimeout(() => resolve('still waiting'), ms);
      });
      try {
        return await Promise.race([consume.then((first) => `answered ${first}`, (err: Error) => `failed: ${err.message}`), waiting]);
      } finally {
        clearTimeout(timer);
      }
    };
    try {
      await store.init();
      // Another session holds the row's lock (an insert of the same jti, not committed): the
      // INSERT … ON CONFLICT waits for it, as it would for a server that stopped answering.
      await blocker.connect();
      await blocker.query('BEGIN');
      await blocker.query(`INSERT INTO "${schema}".stepup_replay (jti, expires_at) VALUES ('held', 0)`);
      const started = Date.now();
      assert.match(await within(3000, store.consume('held', at(120))), /^failed: the replay store did not answer within 300 ms/);
      assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
      await blocker.query('ROLLBACK');
      // The store works on (the stuck connection was discarded). The timed-out INSERT may
      // still have run once the lock was gone: then that jti reads as used — closed either way.
      assert.equal(await store.consume('after', at(120)), true);

      // An application-owned pool with no connection free: the wait is bounded too.
      const shared = new PostgresReplayStore({ pool, schema, queryTimeoutMs: 300 });
      await shared.init();
      const busy = await pool.connect();
      try {
        assert.match(await within(3000, shared.consume('pool-1', at(120))), /^failed: the replay store did not answer within 300 ms/);
      } finally {
        busy.release();
      }
      assert.equal(await shared.consume('pool-2', at(120)), true);
      assert.throws(() => new PostgresReplayStore({ pool, queryTimeoutMs: 0 }), TypeError);
    } finally {
      await blocker.end().catch(() => undefined);
      await store.close();
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await pool.end();
    }
  });
});
