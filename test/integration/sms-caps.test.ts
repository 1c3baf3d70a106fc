import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { chargeSendCaps, type SmsCaps } from '../../src/sms/send-caps.ts';
import type { Store } from '../../src/store/database.ts';
import { createTestStore, type TestDatabase, testDialects } from '../helpers/stores.ts';

const BIG = { hour: 1000, day: 1000 };
const caps = (over: Partial<SmsCaps>): SmsCaps => ({ perNumber: BIG, perUser: BIG, perCountryCode: BIG, countryCodeOverrides: {}, global: BIG, ...over });
const HOUR = 3600_000;
// 10:20 UTC: 40 minutes to the end of the hour, 13 h 40 min to the end of the day.
const T0 = Date.UTC(2026, 4, 17, 10, 20, 0);
const subject = (n: string, u = 'usr_1', cc = '86') => ({ numberKey: n, userId: u, callingCode: cc });

for (const dialect of testDialects()) {
  describe(`SMS send caps (${dialect})`, () => {
    let store: Store;
    let database: TestDatabase;
    let cleanup: () => Promise<void>;
    before(async () => {
      ({ store, database, cleanup } = await createTestStore(dialect));
    });
    after(async () => {
      await cleanup();
    });

    it('per number per hour: the budget runs out, Retry-After is the end of the hour, the next hour has room', async () => {
      const c = caps({ perNumber: { hour: 2, day: 10 } });
      const at = new Date(T0);
      assert.deepEqual(await chargeSendCaps(store.db, c, subject('n-hour'), at), { ok: true });
      assert.deepEqual(await chargeSendCaps(store.db, c, subject('n-hour'), at), { ok: true });
      assert.deepEqual(await chargeSendCaps(store.db, c, subject('n-hour'), at), { ok: false, scope: 'number', window: 'hour', limit: 2, retryAfterSeconds: 40 * 60 });
      // Another number is not affected.
      assert.deepEqual(await chargeSendCaps(store.db, c, subject('n-other'), at), { ok: true });
      assert.deepEqual(await chargeSendCaps(store.db, c, subject('n-hour'), new Date(T0 + 40 * 60_000)), { ok: true });
    });

    it('per number per day, per user across numbers, per country code (with overrides) and global', async () => {
      const day = caps({ perNumber: { hour: 10, day: 3 } });
      for (let h = 0; h < 3; h++) assert.equal((await chargeSendCaps(store.db, day, subject('n-day'), new Date(T0 + h * HOUR))).ok, true);
      const refused = await chargeSendCaps(store.db, day, subject('n-day'), new Date(T0 + 3 * HOUR));
      assert.equal(refused.ok === false && `${refused.scope}/${refused.window}/${refused.retryAfterSeconds}`, `number/day/${(13 * 60 + 40 - 180) * 60}`);

      const user = caps({ perUser: { hour: 2, day: 5 } });
      assert.equal((await chargeSendCaps(store.db, user, subject('u-a', 'usr_u'), new Date(T0))).ok, true);
      assert.equal((await chargeSendCaps(store.db, user, subject('u-b', 'usr_u'), new Date(T0))).ok, true);
      const u = await chargeSendCaps(store.db, user, subject('u-c', 'usr_u'), new Date(T0));
      assert.equal(u.ok === false && u.scope, 'user');

      const country = caps({ perCountryCode: { hour: 1, day: 1 }, countryCodeOverrides: { '852': { hour: 3, day: 3 } } });
      assert.equal((await chargeSendCaps(store.db, country, subject('c-1', 'usr_c1', '44'), new Date(T0))).ok, true);
      const cc = await chargeSendCaps(store.db, country, subject('c-2', 'usr_c2', '44'), new Date(T0));
      assert.equal(cc.ok === false && cc.scope, 'country_code');
      for (let i = 0; i < 3; i++) assert.equal((await chargeSendCaps(store.db, country, subject(`hk-${i}`, `usr_h${i}`, '852'), new Date(T0))).ok, true);
      assert.equal((await chargeSendCaps(store.db, country, subject('hk-x', 'usr_hx', '852'), new Date(T0))).ok, false);

      const global = caps({ global: { hour: 1, day: 100 } });
      const later = new Date(T0 + 5 * HOUR);
      assert.equal((await chargeSendCaps(store.db, global, subject('g-1', 'usr_g1', '1'), later)).ok, true);
      const g = await chargeSendCaps(store.db, global, subject('g-2', 'usr_g2', '81'), later);
      assert.equal(g.ok === false && g.scope, 'global');
    });

    it('a budget of 0 allows nothing', async () => {
      const r = await chargeSendCaps(store.db, caps({ perCountryCode: { hour: 0, day: 10 } }), subject('z'), new Date(T0));
      assert.equal(r.ok === false && r.scope, 'country_code');
    });

    it('all or nothing: a refused send charges no budget', async () => {
      const c = caps({ perUser: { hour: 100, day: 100 }, global: { hour: 1, day: 100 } });
      const at = new Date(T0 + 10 * HOUR);
      assert.equal((await chargeSendCaps(store.db, c, subject('aon-1', 'usr_aon'), at)).ok, true);
      for (let i = 0; i < 3; i++) assert.equal((await chargeSendCaps(store.db, c, subject('aon-2', 'usr_aon'), at)).ok, false);
      const rows = await store.db.selectFrom('sms_send_counters').selectAll().where('key', 'like', `user:hour:%:usr_aon`).execute();
      assert.deepEqual(rows.map((r) => r.count), [1]);
      const num = await store.db.selectFrom('sms_send_counters').selectAll().where('key', 'like', `number:%:aon-2`).execute();
      assert.ok(num.every((r) => r.count === 0));
    });

    it('20 concurrent sends against a budget of 5 (PostgreSQL: from two pools, as two gateway processes): exactly 5 pass', async () => {
      // Two SQLite connections in one process would block each other's event loop on the
      // busy timeout (the driver is synchronous); across processes SQLite's own lock serialises them.
      const other = dialect === 'postgres' ? await database.open() : store;
      try {
        const c = caps({ perNumber: { hour: 5, day: 100 } });
        const at = new Date(T0 + 20 * HOUR);
        const results = await Promise.all(Array.from({ length: 20 }, (_, i) => chargeSendCaps(i % 2 === 0 ? store.db : other.db, c, subject('race'), at)));
        assert.equal(results.filter((r) => r.ok).length, 5);
        const row = await store.db.selectFrom('sms_send_counters').select('count').where('key', 'like', 'number:hour:%:race').executeTakeFirstOrThrow();
        assert.equal(row.count, 5);
      } finally {
        if (other !== store) await other.close();
      }
    });

    it('ended windows are pruned', async () => {
      const far = new Date(T0 + 72 * HOUR);
      await chargeSendCaps(store.db, caps({}), subject('prune'), far);
      const stale = await store.db.selectFrom('sms_send_counters').select('key').where('expires_at', '<=', far.getTime()).execute();
      assert.deepEqual(stale, []);
    });
  });
}
