import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { AuditLog, verifyAuditChain } from '../../src/audit/audit-log.ts';
import { FixedClock } from '../../src/clock.ts';
import { activeFactorRows } from '../../src/flows/stepup-challenge.ts';
import { applySuccess, type FactorStateChange } from '../../src/flows/verify-stepup-factor.ts';
import type { Store, Tx } from '../../src/store/database.ts';
import type { FactorsTable } from '../../src/store/schema.ts';
import { createTestDatabase, testDialects, type TestDatabase } from '../helpers/stores.ts';

/**
 * The verification path's statements that became fixed SQL (src/flows/verify-stepup-factor.ts,
 * src/audit/audit-log.ts) against what they replaced: the same rows, on both databases.
 */

/** applySuccess as it was written with the query builder (the reference). */
async function applySuccessBuilt(tx: Tx, factorId: string, change: FactorStateChange | undefined, nowMs: number, paramsBefore?: string): Promise<boolean> {
  let q = tx
    .updateTable('factors')
    .set({
      failures: 0,
      locked_until: null,
      last_used_at: nowMs,
      updated_at: nowMs,
      ...(change?.secretHash === undefined ? {} : { secret_hash: change.secretHash }),
      ...(change?.counter === undefined ? {} : { counter: change.counter }),
      ...(change?.params === undefined ? {} : { params: JSON.stringify(change.params) }),
    })
    .where('id', '=', factorId)
    .where('status', '=', 'active');
  if (change?.counter !== undefined) q = q.where('counter', '<', change.counter);
  if (change?.params !== undefined && paramsBefore !== undefined) q = q.where('params', '=', paramsBefore);
  return (await q.returning('id').executeTakeFirst()) !== undefined;
}

const NOW = Date.UTC(2026, 2, 1);
const PARAMS = JSON.stringify({ algorithm: 'SHA1', digits: 6, period: 30 });

function factorRow(id: string, over: Partial<FactorsTable>): FactorsTable {
  return {
    id, user_id: 'usr_fixed', type: 'hardware_otp', label: '', status: 'active', secret_hash: 'old-hash', secret_sealed: 'sealed', params: PARAMS,
    counter: 7, failures: 3, locked_until: NOW + 60_000, created_at: NOW - 1000, updated_at: NOW - 1000, last_used_at: null, ...over,
  };
}

// Every shape applySuccess has, against rows it should and should not update.
const CHANGES: (FactorStateChange | undefined)[] = [
  undefined,
  {},
  { counter: 8 },
  { counter: 7 },
  { counter: 2 ** 40 },
  { secretHash: 'new-hash' },
  { secretHash: 'new-hash', counter: 9 },
  { params: { algorithm: 'SHA1', digits: 6, period: 30, driftSteps: 1 } },
  { counter: 8, params: { driftSteps: -2 } },
  { secretHash: 'h', counter: 8, params: { x: 1 } },
];
const ROWS: Partial<FactorsTable>[] = [{}, { status: 'disabled' }, { counter: 100 }, { params: '{"other":true}' }, { locked_until: null, failures: 0 }];
const PARAMS_BEFORE: (string | undefined)[] = [undefined, PARAMS, '{"stale":1}'];

for (const dialect of testDialects()) {
  describe(`verification path fixed SQL (${dialect})`, () => {
    let database: TestDatabase;
    let store: Store;

    before(async () => {
      database = await createTestDatabase(dialect);
      store = await database.open();
      await store.migrate();
      await store.db.insertInto('users').values({ id: 'usr_fixed', username: 'fixed', display_name: 'Fixed', roles: '[]', groups: '[]', status: 'active', created_at: NOW, updated_at: NOW }).execute();
    });
    after(async () => {
      await store.close();
      await database.drop();
    });

    it('applySuccess writes and refuses exactly as the query-builder statement did', async () => {
      let n = 0;
      for (const change of CHANGES) {
        for (const over of ROWS) {
          for (const paramsBefore of PARAMS_BEFORE) {
            n += 1;
            const [a, b] = [`fac_built_${n}`, `fac_fixed_${n}`];
            await store.db.insertInto('factors').values([factorRow(a, over), factorRow(b, over)]).execute();
            const [built, fixed] = await store.db.transaction().execute(async (tx) => [await applySuccessBuilt(tx, a, change, NOW, paramsBefore), await applySuccess(tx, b, change, NOW, paramsBefore)]);
            const label = JSON.stringify({ change, over, paramsBefore });
            assert.equal(fixed, built, label);
            const rowA = await store.db.selectFrom('factors').selectAll().where('id', '=', a).executeTakeFirstOrThrow();
            const rowB = await store.db.selectFrom('factors').selectAll().where('id', '=', b).executeTakeFirstOrThrow();
            assert.deepEqual({ ...rowB, id: a }, { ...rowA }, label);
          }
        }
      }
    });

    it('activeFactorRows (the index named on SQLite) returns what the plain query returns', async () => {
      const rows: FactorsTable[] = [];
      for (const [i, type] of ['totp', 'hardware_otp', 'hardware_otp', 'recovery_code', 'webauthn', 'webauthn', 'webauthn', 'password'].entries()) {
        rows.push(factorRow(`fac_list_${i}`, { user_id: 'usr_fixed', type, status: i === 5 ? 'disabled' : 'active', created_at: NOW - (i % 3) * 1000 - i }));
      }
      await store.db.insertInto('users').values({ id: 'usr_other', username: 'other', display_name: 'Other', roles: '[]', groups: '[]', status: 'active', created_at: NOW, updated_at: NOW }).execute();
      rows.push(factorRow('fac_list_other', { user_id: 'usr_other', type: 'totp' }));
      await store.db.insertInto('factors').values(rows).execute();
      for (const user of ['usr_fixed', 'usr_other', 'usr_nobody']) {
        for (const type of ['totp', 'hardware_otp', 'recovery_code', 'webauthn', 'password', 'sms_otp']) {
          const expected = await store.db.selectFrom('factors').selectAll().where('user_id', '=', user).where('type', '=', type).where('status', '=', 'active').where('id', 'like', 'fac_list_%').orderBy('created_at').execute();
          const got = (await activeFactorRows(store.db, user, type)).filter((r) => r.id.startsWith('fac_list_'));
          assert.deepEqual(got.map((r) => ({ ...r })), expected.map((r) => ({ ...r })), `${user} ${type}`);
        }
      }
    });

    describe('audit appendAll', () => {
      const clock = new FixedClock(NOW);
      beforeEach(async () => {
        await store.db.deleteFrom('audit_log').execute();
        await store.db.updateTable('meta').set({ value: '0' }).where('key', '=', 'audit_head').execute();
      });

      const events = Array.from({ length: 6 }, (_, i) => ({ type: 'test.appended', actor: `a_${i}`, subject: 'usr_fixed', ip: i % 2 === 0 ? '10.0.0.1' : null, requestId: `req_${i}`, data: { i, nested: { z: i, a: [i] } } }));

      async function chain(): Promise<unknown[]> {
        const rows = await store.db.selectFrom('audit_log').selectAll().orderBy('seq').execute();
        return rows.map((r) => ({ ...r, seq: Number(r.seq), at: Number(r.at) }));
      }

      it('writes the rows and head one append after the other would (more rows than one INSERT takes too)', async () => {
        const audit = new AuditLog(store.dialect, clock);
        await audit.append(store.db, { type: 'test.first' });
        await store.db.transaction().execute(async (tx) => {
          for (const e of events) await audit.append(tx, e);
        });
        const one = await chain();
        const head = await store.db.selectFrom('meta').select('value').where('key', '=', 'audit_head').executeTakeFirstOrThrow();

        await store.db.deleteFrom('audit_log').execute();
        await store.db.updateTable('meta').set({ value: '0' }).where('key', '=', 'audit_head').execute();
        await audit.append(store.db, { type: 'test.first' });
        const returned = await store.db.transaction().execute((tx) => audit.appendAll(tx, events));
        assert.deepEqual(await chain(), one);
        assert.deepEqual(returned, one.slice(1));
        assert.deepEqual({ ...(await store.db.selectFrom('meta').select('value').where('key', '=', 'audit_head').executeTakeFirstOrThrow()) }, { ...head });
        assert.deepEqual(await audit.appendAll(store.db, []), []);
        const verified = await verifyAuditChain(store.db, 4);
        assert.ok(verified.ok && verified.rows === 7, JSON.stringify(verified));
      });

      it('keeps the chain unbroken with concurrent appendAll and append callers', async () => {
        const audit = new AuditLog(store.dialect, clock);
        await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? audit.appendAll(store.db, events.slice(0, 1 + (i % 5))) : audit.append(store.db, events[0]!))));
        const verified = await verifyAuditChain(store.db);
        const expected = [0, 2, 4, 6, 8, 10].reduce((sum, i) => sum + 1 + (i % 5), 0) + 6;
        assert.ok(verified.ok && verified.rows === expected, JSON.stringify(verified));
      });

      it('drops every row of a rolled-back appendAll', async () => {
        const audit = new AuditLog(store.dialect, clock);
        await assert.rejects(
          store.db.transaction().execute(async (tx) => {
            await audit.appendAll(tx, events);
            throw new Error('abort');
          }),
          /abort/,
        );
        assert.deepEqual(await chain(), []);
        assert.equal((await verifyAuditChain(store.db)).ok, true);
      });
    });
  });
}
