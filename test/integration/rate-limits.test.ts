import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { makeClient, makeUser, PASSWORD, setPolicies } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';
import { sql } from 'kysely';
import { COUNT } from '../../src/http/rate-limit.ts';

const ACTION = 'demo.confirm';

for (const dialect of testDialects()) {
  describe(`rate limits (${dialect})`, () => {
    let tg: TestGateway;
    let pay: Awaited<ReturnType<typeof makeClient>>;
    before(async () => {
      tg = await createTestGateway({
        dialect,
        config: { rateLimits: { enabled: true, windowSeconds: 60, perIp: 40, loginPerIp: 5, stepupUserPerIp: 8, perClient: 12 }, login: { delayBaseSeconds: 0 } },
      });
      await makeUser(tg.gw, 'kim');
      pay = await makeClient(tg.gw, 'pay', [ACTION]);
      await setPolicies(tg.gw, [{ id: 'p', action: ACTION, priority: 10, require: { anyOf: [['password']] }, acr: 'urn:stepgate:aal1' }]);
    });
    after(async () => {
      await tg.close();
    });

    it('sign-ins per address: the 6th in a window is 429 with Retry-After, before any password is checked', async () => {
      const statuses: number[] = [];
      for (let i = 0; i < 6; i += 1) statuses.push((await tg.http().post('/v1/login').send({ username: 'kim', password: 'wrong password here' })).status);
      assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429]);
      const refused = await tg.http().post('/v1/login').send({ username: 'kim', password: PASSWORD });
      assert.equal(refused.status, 429);
      assert.equal(refused.body.code, 'too_many_requests');
      assert.ok(Number(refused.headers['retry-after']) >= 1);
      assert.equal(refused.headers['ratelimit-limit'], '5');
      // The refused attempts did not reach the account's failure counter.
      const throttle = await tg.gw.store.db.selectFrom('login_throttle').select('failures').executeTakeFirstOrThrow();
      assert.equal(throttle.failures, 5);
      // Next window: allowed again.
      tg.clock.advance(60);
      assert.equal((await tg.http().post('/v1/login').send({ username: 'kim', password: PASSWORD })).status, 200);
    });

    it('one set of RateLimit headers, for the budget that binds: the fewest requests left, or the refused one', async () => {
      tg.clock.advance(60);
      // A sign-in is charged to the address budget (40) and the sign-in budget (5): the latter binds.
      const first = await tg.http().post('/v1/login').send({ username: 'kim', password: 'wrong password here' });
      assert.equal(first.status, 401);
      assert.deepEqual([first.headers['ratelimit-limit'], first.headers['ratelimit-remaining']], ['5', '4']);
      // Spend the address budget down to 2 with other requests: now it binds for a sign-in.
      for (let i = 0; i < 37; i += 1) await tg.http().get('/v1/me');
      const second = await tg.http().post('/v1/login').send({ username: 'kim', password: 'wrong password here' });
      assert.equal(second.status, 401);
      assert.deepEqual([second.headers['ratelimit-limit'], second.headers['ratelimit-remaining']], ['40', '1']);
      const third = await tg.http().post('/v1/login').send({ username: 'kim', password: 'wrong password here' });
      assert.deepEqual([third.status, third.headers['ratelimit-limit'], third.headers['ratelimit-remaining']], [401, '40', '0']);
      // Both spent or one spent: refused, with the refused budget's headers.
      const refused = await tg.http().post('/v1/login').send({ username: 'kim', password: PASSWORD });
      assert.equal(refused.status, 429);
      assert.deepEqual([refused.headers['ratelimit-limit'], refused.headers['ratelimit-remaining']], ['40', '0']);
    });

    it('a trailing slash or another case reaches the same routes, and is counted in the same budgets', async () => {
      tg.clock.advance(60);
      const statuses: number[] = [];
      for (const path of ['/v1/login/', '/V1/LOGIN', '/v1/Login', '/v1/login', '/v1/login/', '/V1/login']) {
        statuses.push((await tg.http().post(path).send({ username: 'kim', password: 'wrong password here' })).status);
      }
      // The sign-in budget is 5 a window, whatever the spelling of the path.
      assert.deepEqual(statuses, [401, 401, 401, 401, 401, 429]);
      tg.clock.advance(60);
      const created = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'kim', action: ACTION, context: {} });
      const { stepup_id: id, ticket } = created.body as { stepup_id: string; ticket: string };
      const user: number[] = [];
      for (let i = 0; i < 9; i += 1) user.push((await tg.http().get(`/V1/STEPUP/${id}/`).set('Authorization', `Ticket ${ticket}`)).status);
      assert.deepEqual(user, [...Array(8).fill(200), 429], 'the user side of step-up: 8 a window');
    });

    it('health, readiness and metrics are never counted', async () => {
      for (let i = 0; i < 50; i += 1) assert.equal((await tg.http().get('/healthz')).status, 200);
      assert.equal((await tg.http().get('/readyz')).status, 200);
    });

    it('a client\'s budget counts all its requests, after authentication', async () => {
      tg.clock.advance(60);
      const statuses: number[] = [];
      for (let i = 0; i < 13; i += 1) {
        statuses.push((await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'kim', action: ACTION, context: {} })).status);
      }
      assert.deepEqual(statuses.slice(0, 12), Array(12).fill(201));
      assert.equal(statuses[12], 429);
    });

    it('the user side of step-up per address', async () => {
      tg.clock.advance(60);
      const created = await tg.http().post('/v1/stepup').set('Authorization', pay.basic).send({ subject: 'kim', action: ACTION, context: {} });
      const { stepup_id: id, ticket } = created.body as { stepup_id: string; ticket: string };
      const statuses: number[] = [];
      for (let i = 0; i < 9; i += 1) statuses.push((await tg.http().get(`/v1/stepup/${id}`).set('Authorization', `Ticket ${ticket}`)).status);
      assert.deepEqual(statuses, [...Array(8).fill(200), 429]);
    });

    it('all requests per address, and 20 parallel requests over the limit: exactly the budget passes', async () => {
      tg.clock.advance(60);
      const results = await Promise.all(Array.from({ length: 60 }, () => tg.http().get('/v1/me')));
      assert.equal(results.filter((r) => r.status === 401).length, 40);
      assert.equal(results.filter((r) => r.status === 429).length, 20);
    });

    it('fails closed: when the counters cannot be written the request is refused, not let through', async () => {
      tg.clock.advance(60);
      const db = tg.gw.store.db;
      // The database itself refuses the counter's write (a trigger), whichever path the
      // statement takes to it (FixedSql runs below Kysely's executor).
      const down = dialect === 'postgres'
        ? [sql`create function rate_limits_down() returns trigger language plpgsql as $$ begin raise exception 'store down'; end $$`, sql`create trigger rate_limits_down before insert or update on rate_limits for each row execute function rate_limits_down()`]
        : [sql`create trigger rate_limits_down_i before insert on rate_limits begin select raise(abort, 'store down'); end`, sql`create trigger rate_limits_down_u before update on rate_limits begin select raise(abort, 'store down'); end`];
      const up = dialect === 'postgres'
        ? [sql`drop trigger rate_limits_down on rate_limits`, sql`drop function rate_limits_down()`]
        : [sql`drop trigger rate_limits_down_i`, sql`drop trigger rate_limits_down_u`];
      for (const statement of down) await statement.execute(db);
      try {
        const res = await tg.http().post('/v1/login').send({ username: 'kim', password: PASSWORD });
        assert.equal(res.status, 503);
        assert.equal(res.body.code, 'service_unavailable');
        assert.match(tg.logs.text, /rate-limit store unavailable: refusing/, 'the counter write was attempted and failed');
      } finally {
        for (const statement of up) await statement.execute(db);
      }
      const res = await tg.http().get('/v1/me');
      assert.equal(res.status, 401, 'counted again once the database takes the write');
    });

    it('the counter commits without waiting for durability, and only the counter', async () => {
      const db = tg.gw.store.db;
      const setting = async (executor: typeof db) => (await sql<{ s: string }>`select current_setting('synchronous_commit') as s`.execute(executor)).rows[0]?.s;
      const before = dialect === 'postgres' ? await setting(db) : 'on';
      await db.transaction().execute(async (trx) => {
        const { rows } = await COUNT.run(trx, ['test:relaxed:1', Date.now() + 60_000]);
        assert.equal(Number(rows[0]?.count), 1);
        // PostgreSQL: the statement switched its own transaction to synchronous_commit = off.
        if (dialect === 'postgres') assert.equal(await setting(trx), 'off');
      });
      if (dialect === 'postgres') {
        assert.equal(before, 'on');
        // ...and no pooled connection keeps it: every later transaction waits for its flush again.
        await Promise.all(Array.from({ length: 20 }, () => tg.http().get('/v1/me')));
        const after = await Promise.all(Array.from({ length: 12 }, () => setting(db)));
        assert.deepEqual(after, Array(12).fill('on'));
      }
      const row = await db.selectFrom('rate_limits').select('count').where('key', '=', 'test:relaxed:1').executeTakeFirstOrThrow();
      assert.equal(Number(row.count), 1);
    });
  });
}
