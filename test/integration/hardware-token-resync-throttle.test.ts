import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import supertest from 'supertest';
import { isAppError } from '../../src/errors/app-error.ts';
import { importTokenFile } from '../../src/flows/hardware-token-import.ts';
import { assignToken, bindOwnToken, resyncOwnToken } from '../../src/flows/hardware-tokens.ts';
import { createUser } from '../../src/flows/users.ts';
import { appsOf, createTestGateway, type SecondGateway, secondGatewayOnPostgres, type TestGateway } from '../helpers/gateway.ts';
import { needOathtool, oathHotp, randomSeedHex } from '../helpers/hardware-tokens.ts';
import { confirmForTest, type SignedIn, signIn } from '../helpers/session.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * A resync (two consecutive codes, helpdesk or self-service) is charged against the token
 * BEFORE the codes are compared: after resyncMaxFailures failures in a row it is refused
 * (429, Retry-After) without comparing anything — even the right codes — until
 * resyncLockSeconds have passed; every failure is audited, the lock too; the answer never
 * says which of the two codes was wrong. The count is one conditional UPDATE, so parallel
 * attempts (in two gateway processes on one PostgreSQL as well) compare exactly the limit.
 */

const PASSWORD = 'a long enough passphrase 7';
const LIMIT = 3;
const LOCK_SECONDS = 600;
const PARALLEL = 20;

for (const dialect of testDialects()) {
  describe(`hardware-token resync is throttled (${dialect})`, () => {
    let t: TestGateway;
    /** PostgreSQL: a second gateway process on the same database. */
    let second: SecondGateway | undefined;
    let desk: { cookie: string[]; csrf: string };
    let aliceId: string;
    const seeds: Record<string, string> = {};
    let n = 0;

    async function stock(): Promise<string> {
      n += 1;
      const serial = `RS-${n}`;
      seeds[serial] = randomSeedHex();
      await importTokenFile(t.gw, { data: Buffer.from(`${serial},${seeds[serial]},hotp,6,0`), fileName: `${serial}.csv`, source: 'cli' }, { actor: 'test' });
      return serial;
    }

    async function assigned(userId = aliceId): Promise<string> {
      const serial = await stock();
      await assignToken(t.gw, { actor: 'test', by: 'helpdesk' }, { serial, userId, code: oathHotp(seeds[serial] as string, 0), reason: 'issued' });
      return serial;
    }

    function resync(serial: string, code: string, nextCode: string, app = t.app) {
      return supertest(app).post(`/v1/admin/hardware-tokens/${serial}/resync`).set('Cookie', desk.cookie).set('X-CSRF-Token', desk.csrf).send({ code, next_code: nextCode, reason: 'user called' });
    }

    async function events(type: string, serial: string): Promise<Record<string, unknown>[]> {
      const rows = await t.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', type).orderBy('seq').execute();
      return rows.map((r) => JSON.parse(r.data) as Record<string, unknown>).filter((d) => d.serial === serial);
    }

    /** The console needs a session that proved a second factor (the API does not, for staff with none enrolled). */
    let consoleSession: SignedIn | undefined;
    async function consoleDesk(): Promise<SignedIn> {
      consoleSession ??= await confirmForTest(t, await signIn(t, 'desk', PASSWORD));
      return consoleSession;
    }

    async function tokenRow(serial: string) {
      return t.gw.store.db.selectFrom('hardware_tokens').select(['resync_failures', 'resync_locked_until', 'counter', 'factor_id']).where('serial', '=', serial).executeTakeFirstOrThrow();
    }

    before(async () => {
      t = await createTestGateway({ dialect, config: { hardwareTokens: { resyncMaxFailures: LIMIT, resyncLockSeconds: LOCK_SECONDS } } });
      await createUser(t.gw, { username: 'desk', password: PASSWORD, roles: ['helpdesk'] }, { actor: 'test' });
      aliceId = (await createUser(t.gw, { username: 'alice', password: PASSWORD }, { actor: 'test' })).id;
      const res = await t.http().post('/v1/login').send({ username: 'desk', password: PASSWORD }).expect(200);
      desk = { cookie: res.headers['set-cookie'] as unknown as string[], csrf: res.body.csrf_token as string };
      second = await secondGatewayOnPostgres(t);
    });
    after(async () => {
      await second?.close();
      await t.close();
    });

    it(`brute force: ${LIMIT} wrong pairs, then 429 without comparing — even the right codes — until the lock runs out`, async (tc) => {
      if (needOathtool(tc)) return;
      const serial = await assigned();
      const seed = seeds[serial] as string;
      const right = [oathHotp(seed, 40), oathHotp(seed, 41)] as const;
      // Wrong first code, wrong second code, both wrong: one answer, byte for byte.
      const wrong = [
        [oathHotp(seed, 30), oathHotp(seed, 32)],
        [String((Number(right[0]) + 1) % 1_000_000).padStart(6, '0'), right[1]],
        [right[0], String((Number(right[1]) + 1) % 1_000_000).padStart(6, '0')],
      ] as const;
      const answers: string[] = [];
      for (const [code, next] of wrong) {
        const r = await resync(serial, code, next);
        assert.equal(r.status, 400, r.text);
        assert.equal(r.body.code, 'token_resync_failed');
        assert.deepEqual(r.body.invalid_params.map((p: { pointer: string }) => p.pointer), ['/code', '/next_code']);
        answers.push(JSON.stringify({ ...r.body, request_id: undefined }));
      }
      assert.equal(new Set(answers).size, 1, 'the answer does not say which code was wrong');
      assert.equal(Number((await tokenRow(serial)).resync_failures), LIMIT);

      // Locked: the right pair is refused too, and not consumed (it works once the lock is over).
      const locked = await resync(serial, right[0], right[1]);
      assert.equal(locked.status, 429, locked.text);
      assert.equal(locked.body.code, 'too_many_requests');
      assert.equal(locked.headers['retry-after'], String(LOCK_SECONDS));
      const before = await tokenRow(serial);
      assert.equal(Number(before.counter), 1);
      const factor = await t.gw.store.db.selectFrom('factors').select('counter').where('id', '=', before.factor_id as string).executeTakeFirstOrThrow();
      assert.equal(Number(factor.counter), 1, 'the refused resync moved nothing');

      // The helpdesk sees the lock: the API's token view and the console's token page.
      const view = await supertest(t.app).get(`/v1/admin/hardware-tokens/${serial}`).set('Cookie', desk.cookie).expect(200);
      assert.equal(view.body.token.resync_failures, LIMIT);
      assert.equal(view.body.token.resync_locked_until, new Date(t.clock.now().getTime() + LOCK_SECONDS * 1000).toISOString());
      const page = await supertest(t.app).get(`/console/tokens/${serial}`).set('Cookie', (await consoleDesk()).cookie).expect(200);
      const shown = /<dd data-resync-locked>([^<]*)<\/dd>/.exec(page.text);
      assert.ok(shown, 'the token page shows the resync lock');
      assert.match(shown[1] as string, new RegExp(`${new Date(t.clock.now().getTime() + LOCK_SECONDS * 1000).toISOString().slice(0, 16).replace('T', ' ')} UTC.*${LIMIT}`));

      const failed = await events('hardware_token.resync_failed', serial);
      assert.deepEqual(failed.map((d) => d.failures), [1, 2, 3]);
      assert.equal((await events('hardware_token.resync_locked', serial)).length, 1);
      assert.equal((await events('hardware_token.resync_refused', serial)).length, 1);

      t.clock.advance(LOCK_SECONDS - 1);
      assert.equal((await resync(serial, right[0], right[1])).status, 429);
      t.clock.advance(1);
      // A lock that has run out is shown as none (the next attempt starts the count again).
      const ran = await supertest(t.app).get(`/v1/admin/hardware-tokens/${serial}`).set('Cookie', desk.cookie).expect(200);
      assert.deepEqual([ran.body.token.resync_failures, ran.body.token.resync_locked_until], [0, null]);
      assert.doesNotMatch((await supertest(t.app).get(`/console/tokens/${serial}`).set('Cookie', (await consoleDesk()).cookie).expect(200)).text, /data-resync-locked/);
      const ok = await resync(serial, right[0], right[1]);
      assert.equal(ok.status, 200, ok.text);
      const after = await tokenRow(serial);
      assert.deepEqual([Number(after.resync_failures), after.resync_locked_until], [0, null]);
      // A success clears the count: the limit is failures in a row.
      for (let i = 0; i < LIMIT; i += 1) assert.equal((await resync(serial, oathHotp(seed, 90), oathHotp(seed, 92))).status, 400);
      assert.equal((await resync(serial, oathHotp(seed, 60), oathHotp(seed, 61))).status, 429);
    });

    it(`${PARALLEL} parallel wrong resyncs${dialect === 'postgres' ? ' across two gateway processes' : ''}: exactly ${LIMIT} are compared, the rest refused`, async (tc) => {
      if (needOathtool(tc)) return;
      const serial = await assigned();
      const seed = seeds[serial] as string;
      const apps = appsOf(t, second);
      const results = await Promise.all(Array.from({ length: PARALLEL }, (_, i) => resync(serial, oathHotp(seed, 50 + 2 * i), oathHotp(seed, 52 + 2 * i), apps[i % apps.length])));
      const statuses = results.map((r) => r.status);
      assert.equal(statuses.filter((s) => s === 400).length, LIMIT, statuses.join());
      assert.equal(statuses.filter((s) => s === 429).length, PARALLEL - LIMIT, statuses.join());
      assert.equal(Number((await tokenRow(serial)).resync_failures), LIMIT);
      assert.equal((await events('hardware_token.resync_failed', serial)).length, LIMIT);
      assert.equal((await events('hardware_token.resync_locked', serial)).length, 1);
      assert.equal((await events('hardware_token.resync_refused', serial)).length, PARALLEL - LIMIT);
    });

    it('parallel right resyncs: one wins, the others are failures counted like any other', async (tc) => {
      if (needOathtool(tc)) return;
      const serial = await assigned();
      const seed = seeds[serial] as string;
      const apps = appsOf(t, second);
      const results = await Promise.all(Array.from({ length: LIMIT }, (_, i) => resync(serial, oathHotp(seed, 20), oathHotp(seed, 21), apps[i % apps.length])));
      assert.equal(results.filter((r) => r.status === 200).length, 1, results.map((r) => r.status).join());
      assert.equal(Number((await tokenRow(serial)).counter), 1);
    });

    it('a token in stock is throttled the same way', async (tc) => {
      if (needOathtool(tc)) return;
      const serial = await stock();
      const seed = seeds[serial] as string;
      for (let i = 0; i < LIMIT; i += 1) assert.equal((await resync(serial, oathHotp(seed, 10), oathHotp(seed, 12))).status, 400);
      assert.equal((await resync(serial, oathHotp(seed, 10), oathHotp(seed, 11))).status, 429);
      assert.equal(Number((await tokenRow(serial)).counter), 0);
    });

    it("self-service resync charges the token's count as well as the user's", async (tc) => {
      if (needOathtool(tc)) return;
      const bob = (await createUser(t.gw, { username: 'bob', password: PASSWORD }, { actor: 'test' })).id;
      const serial = await stock();
      const seed = seeds[serial] as string;
      const view = await bindOwnToken(t.gw, bob, { serial, code: oathHotp(seed, 0) }, { actor: bob });
      const codeOf = async (p: Promise<unknown>) => p.then(() => 'ok', (err: unknown) => (isAppError(err) ? err.code : Promise.reject(err)));
      for (let i = 0; i < LIMIT; i += 1) assert.equal(await codeOf(resyncOwnToken(t.gw, bob, view.factorId as string, { code: oathHotp(seed, 10), nextCode: oathHotp(seed, 12) }, { actor: bob })), 'token_resync_failed');
      assert.equal(await codeOf(resyncOwnToken(t.gw, bob, view.factorId as string, { code: oathHotp(seed, 10), nextCode: oathHotp(seed, 11) }, { actor: bob })), 'too_many_requests');
      // The helpdesk's resync of that token is refused too: the count is the token's.
      assert.equal((await resync(serial, oathHotp(seed, 10), oathHotp(seed, 11))).status, 429);
    });
  });
}
