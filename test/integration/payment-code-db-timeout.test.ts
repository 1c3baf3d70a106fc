import assert from 'node:assert/strict';
import { DatabaseSync } from 'node:sqlite';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import pg from 'pg';
import { FixedClock } from '../../src/clock.ts';
import type { PaymentCodeConfig } from '../../src/payment-code/config.ts';
import { sqliteFileFor } from '../../src/payment-code/service.ts';
import { TEST_DATABASE_URL } from '../helpers/env.ts';
import {
  type Answer,
  bearer,
  call,
  completeWithPassword,
  CONTEXT,
  createPDatabase,
  type GatewayForP,
  type InProcessP,
  makeApiKeys,
  type PDatabase,
  pConfig,
  startGatewayForP,
  startInProcessP,
} from '../helpers/payment-code.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * The payment-code service when its database does not answer in time, or refuses a write in
 * the middle of an issuance: it refuses the request (503 + Retry-After for a timeout), issues
 * no code, and leaves the step-up and its token unused, so the same request works once the
 * database does. PostgreSQL: a lock held by another connection, past `database.queryTimeoutMs`.
 */
const T0 = Date.UTC(2026, 2, 1, 8, 0, 10);
const QUERY_TIMEOUT_MS = 300;
/** A guard, not a measurement: without a statement timeout the request waits for the lock indefinitely. */
const HANG_GUARD_MS = 20_000;

for (const dialect of testDialects()) {
  describe(`payment-code service: a database write that fails or times out mid-issuance (${dialect})`, () => {
    const clock = new FixedClock(T0);
    let g: GatewayForP;
    let db: PDatabase;
    let config: PaymentCodeConfig;
    let p: InProcessP;
    let wallet: string;

    before(async () => {
      g = await startGatewayForP(dialect, { clock });
      db = createPDatabase(dialect);
      config = pConfig(g, db, { database: { queryTimeoutMs: QUERY_TIMEOUT_MS } });
      [wallet] = (await makeApiKeys(config, [{ name: 'wallet', role: 'wallet' }])) as [string];
      p = await startInProcessP(config, { clock });
    });
    after(async () => {
      await p?.close();
      await g?.close();
      await db?.drop();
    });

    const issue = (stepupId?: string) => call(p.url, 'POST', '/v1/payment-codes', { subject: g.alice.id, context: CONTEXT, ...(stepupId === undefined ? {} : { stepup_id: stepupId }) }, bearer(wallet));

    /** A step-up the user has completed at the gateway; P has not fetched its token yet. */
    async function completedStepUp(): Promise<string> {
      const first = await issue();
      assert.equal(first.status, 401, first.text);
      assert.equal(first.body.code, 'step_up_required');
      assert.equal((await completeWithPassword(g.url, first.body.stepup_id as string, first.body.ticket as string)).status, 200);
      return first.body.stepup_id as string;
    }

    /** What an issuance writes, counted. */
    type Written = { codes: number; liveCodes: number; jtis: number; issuedEvents: number; usedStepUps: number };
    async function written(): Promise<Written> {
      const count = async (table: string, where = sql`1 = 1`) => Number((await sql<{ n: number | string }>`select count(*) as n from ${sql.table(table)} where ${where}`.execute(p.svc.store.db)).rows[0]?.n);
      return {
        codes: await count('pc_codes'),
        liveCodes: await count('pc_live_codes'),
        jtis: await count('pc_stepup_replay'),
        issuedEvents: await count('pc_events', sql`type = 'code.issued'`),
        usedStepUps: await count('pc_stepups', sql`status = 'used'`),
      };
    }

    function assertRefusedWithNothingWritten(answer: Answer, before: Written, after: Written): void {
      assert.match(answer.headers.get('content-type') ?? '', /^application\/problem\+json/);
      assert.equal(answer.headers.get('cache-control'), 'no-store');
      assert.equal(answer.body.code_display, undefined);
      assert.equal(answer.body.code_id, undefined);
      assert.deepEqual(after, before, 'no code, no live code, no jti, no event, no step-up used');
    }

    async function stepUpStatus(id: string): Promise<string> {
      return (await p.svc.store.db.selectFrom('pc_stepups').select('status').where('id', '=', id).executeTakeFirstOrThrow()).status;
    }

    if (dialect === 'postgres') {
      /** Holds a table lock on another connection while `send` runs, for at most the hang guard. */
      async function withLock(table: string, mode: string, send: () => Promise<Answer>): Promise<Answer> {
        const locker = new pg.Client({ connectionString: TEST_DATABASE_URL, options: `-c search_path=${db.schema}` });
        await locker.connect();
        let released = false;
        const release = async () => {
          if (released) return;
          released = true;
          await locker.query('ROLLBACK');
        };
        try {
          await locker.query('BEGIN');
          await locker.query(`LOCK TABLE ${table} IN ${mode} MODE`);
          const pending = send();
          let guard: ReturnType<typeof setTimeout> | undefined;
          const hung = new Promise<'hung'>((resolve) => {
            guard = setTimeout(() => resolve('hung'), HANG_GUARD_MS);
          });
          const first = await Promise.race([pending, hung]);
          clearTimeout(guard);
          if (first === 'hung') {
            await release();
            const late = await pending;
            assert.fail(`P was still waiting for the lock on ${table} after ${HANG_GUARD_MS} ms (queryTimeoutMs ${QUERY_TIMEOUT_MS}); once it was released it answered ${late.status}`);
          }
          return first;
        } finally {
          await release();
          await locker.end();
        }
      }

      // Each table an issuance touches, locked where it touches it: the read of the step-up,
      // then, in the issuing transaction, the jti, the live-code slot, the code, the event.
      for (const [table, mode, before] of [
        ['pc_stepups', 'ACCESS EXCLUSIVE', 'pending'],
        ['pc_stepup_replay', 'EXCLUSIVE', 'token_received'],
        ['pc_live_codes', 'EXCLUSIVE', 'token_received'],
        ['pc_codes', 'EXCLUSIVE', 'token_received'],
        ['pc_events', 'EXCLUSIVE', 'token_received'],
      ] as const) {
        it(`a lock on ${table} held past queryTimeoutMs: 503 problem+json with Retry-After, nothing issued or used up; the same request succeeds once it is gone`, async () => {
          const stepupId = await completedStepUp();
          const counts = await written();
          const refused = await withLock(table, mode, () => issue(stepupId));
          assert.equal(refused.status, 503, refused.text);
          assert.equal(refused.body.code, 'service_unavailable');
          assert.equal(refused.headers.get('retry-after'), '5');
          assertRefusedWithNothingWritten(refused, counts, await written());
          // The token is kept (sealed) for the retry, not used: not in the replay table, the step-up not used.
          assert.equal(await stepUpStatus(stepupId), before);
          assert.ok(p.logs.text.includes('service_unavailable'));

          const retried = await issue(stepupId);
          assert.equal(retried.status, 201, retried.text);
          assert.deepEqual(await written(), { ...counts, codes: counts.codes + 1, liveCodes: counts.liveCodes + 1, jtis: counts.jtis + 1, issuedEvents: counts.issuedEvents + 1, usedStepUps: counts.usedStepUps + 1 });
          assert.equal(await stepUpStatus(stepupId), 'used');
          // And the token is now used up: once.
          const again = await issue(stepupId);
          assert.equal(again.status, 401);
          assert.equal(again.body.code, 'step_up_used');
        });
      }

      it('a statement past queryTimeoutMs is ended by the server (statement_timeout), the connection stays usable', async () => {
        await assert.rejects(sql`select pg_sleep(2)`.execute(p.svc.store.db), (err: { code?: string }) => err.code === '57014');
        assert.equal(Number((await sql<{ one: number }>`select 1 as one`.execute(p.svc.store.db)).rows[0]?.one), 1);
        const setting = await sql<{ statement_timeout: string }>`show statement_timeout`.execute(p.svc.store.db);
        assert.equal(setting.rows[0]?.statement_timeout, `${QUERY_TIMEOUT_MS}ms`);
      });
    }

    it('a write of the issuing transaction that fails: no code, the step-up and its token unused, the same request then succeeds', async () => {
      const stepupId = await completedStepUp();
      const counts = await written();
      // Break the code insert in the database itself: the failure comes after the step-up was
      // marked used and the jti recorded, in the same transaction.
      if (dialect === 'sqlite') {
        const raw = new DatabaseSync(sqliteFileFor(config));
        try {
          raw.exec(`CREATE TRIGGER pc_codes_refuse BEFORE INSERT ON pc_codes BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;`);
        } finally {
          raw.close();
        }
      } else {
        await sql.raw(`CREATE FUNCTION pc_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
          CREATE TRIGGER pc_codes_refuse BEFORE INSERT ON pc_codes FOR EACH ROW EXECUTE FUNCTION pc_refuse()`).execute(p.svc.store.db);
      }
      let refused: Answer;
      try {
        refused = await issue(stepupId);
      } finally {
        if (dialect === 'sqlite') {
          const raw = new DatabaseSync(sqliteFileFor(config));
          try {
            raw.exec('DROP TRIGGER pc_codes_refuse');
          } finally {
            raw.close();
          }
        } else {
          await sql.raw('DROP TRIGGER pc_codes_refuse ON pc_codes; DROP FUNCTION pc_refuse()').execute(p.svc.store.db);
        }
      }
      assert.equal(refused.status, 500, refused.text);
      assert.equal(refused.body.code, 'internal_error');
      assertRefusedWithNothingWritten(refused, counts, await written());
      assert.equal(await stepUpStatus(stepupId), 'token_received');

      const retried = await issue(stepupId);
      assert.equal(retried.status, 201, retried.text);
      assert.equal((await written()).codes, counts.codes + 1);
    });
  });
}
