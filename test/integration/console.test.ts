import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Response } from 'supertest';
import { verifyAuditChain } from '../../src/audit/audit-log.ts';
import { createSession } from '../../src/flows/sessions.ts';
import { createUser, type Role } from '../../src/flows/users.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { needOathtool, needPskc, oathHotp, randomSeedHex, writePskc } from '../helpers/hardware-tokens.ts';
import { cookieFrom, hiddenField } from '../helpers/session.ts';
import { testDialects } from '../helpers/stores.ts';
import { DEFAULT_TOTP, insertActiveTotp, oathtoolTotp } from '../helpers/totp.ts';

/**
 * The admin console: the second-factor gate for staff sessions, each role's pages and
 * actions (403 and no state change where the role does not allow it), CSRF, and bad input
 * on each form (4xx, the field named, nothing written).
 */

const PASSWORD = 'console passphrase 7301';
const T0 = Date.UTC(2026, 11, 1, 9, 0, 0);

interface Staff {
  cookie: string;
  csrf: string;
  userId: string;
}

const POLICY_YAML = `policies:
  - id: small
    action: payment_code.issue
    priority: 10
    when:
      amount: { lte: "100.00", currency: CNY }
    require:
      anyOf: [[totp]]
    acr: urn:stepgate:aal2
  - id: large
    action: payment_code.issue
    priority: 20
    require:
      anyOf: [[webauthn]]
    acr: urn:stepgate:aal3
`;

for (const dialect of testDialects()) {
  describe(`admin console (${dialect})`, () => {
    let t: TestGateway;
    const secrets: Record<string, Buffer> = {};
    const ids: Record<string, string> = {};
    const sessions: Record<string, Staff> = {};
    /** A console session from the sign-in test; a missing one fails the test (never a silent pass). */
    const staff = (who: string): Staff => {
      const s = sessions[who];
      assert.ok(s !== undefined, `no console session for ${who}: the sign-in test failed`);
      return s;
    };
    let step = 0;

    /** A TOTP code for `who` at a fresh time step (each code is single-use). */
    function totpFor(who: string): string {
      step += 1;
      t.clock.set(T0 + step * 30_000);
      return oathtoolTotp(secrets[who] as Buffer, DEFAULT_TOTP, Math.floor(t.clock.now().getTime() / 1000));
    }

    async function passwordSession(username: string): Promise<Staff> {
      const res = await t.http().post('/v1/login').send({ username, password: PASSWORD });
      assert.equal(res.status, 200, res.text);
      return { cookie: `stepgate_session=${cookieFrom(res)}`, csrf: res.body.csrf_token as string, userId: res.body.user.id as string };
    }

    /** Password, then the console's second-factor form: the session that runs the console. */
    async function consoleSession(username: string): Promise<Staff> {
      const s = await passwordSession(username);
      const res = await t.http().post('/console/verify').set('Cookie', s.cookie).type('form').send({ _csrf: s.csrf, code: totpFor(username), next: '/console' });
      assert.equal(res.status, 303, res.text);
      assert.equal(res.headers.location, '/console');
      const sid = cookieFrom(res);
      assert.ok(sid !== undefined && `stepgate_session=${sid}` !== s.cookie, 'the session id is rotated');
      const page = await t.http().get('/console').set('Cookie', `stepgate_session=${sid}`);
      assert.equal(page.status, 200);
      return { cookie: `stepgate_session=${sid}`, csrf: hiddenField(page.text, '_csrf'), userId: s.userId };
    }

    function get(s: Staff, path: string) {
      return t.http().get(path).set('Cookie', s.cookie);
    }

    function post(s: Staff, path: string, form: Record<string, string> = {}) {
      return t.http().post(path).set('Cookie', s.cookie).type('form').send({ _csrf: s.csrf, ...form });
    }

    const count = async (type: string) => Number((await t.gw.store.db.selectFrom('audit_log').select((eb) => eb.fn.countAll<number>().as('n')).where('type', '=', type).executeTakeFirstOrThrow()).n);
    const policyVersion = async () => Number((await t.gw.store.db.selectFrom('policy_sets').select((eb) => eb.fn.max<number>('version').as('v')).executeTakeFirst())?.v ?? 0);

    before(async () => {
      t = await createTestGateway({ dialect, clock: new (await import('../../src/clock.ts')).FixedClock(T0) });
      const people: [string, Role[]][] = [['root', ['admin']], ['desk', ['helpdesk']], ['audit', ['auditor']], ['lena', []], ['nofactor', ['admin']]];
      for (const [username, roles] of people) {
        const u = await createUser(t.gw, { username, password: PASSWORD, roles }, { actor: null });
        ids[username] = u.id;
        if (username !== 'nofactor') secrets[username] = (await insertActiveTotp(t.gw, u.id)).secret;
      }
    });
    after(async () => t.close());

    it('a password-only staff session is sent to the second-factor page and refused on every action', async (tc) => {
      if (needOathtool(tc)) return;
      const s = await passwordSession('root');
      const page = await get(s, '/console/users');
      assert.equal(page.status, 303);
      assert.equal(page.headers.location, '/console/verify?next=%2Fconsole%2Fusers');
      const form = await get(s, '/console/verify?next=%2Fconsole%2Fusers');
      assert.equal(form.status, 200);
      assert.match(form.text, /name="code"/);
      const before = await policyVersion();
      const refused = await post(s, '/console/policies', { policies: POLICY_YAML, comment: 'try without mfa', baseVersion: '0' });
      assert.equal(refused.status, 403);
      assert.match(refused.text, /Complete your sign-in with a second factor first/);
      assert.equal(await policyVersion(), before);
      // The JSON session shows no `mfa` until the console form is completed.
      const me = await get(s, '/v1/me');
      assert.deepEqual(me.body.session.amr, ['pwd']);
    });

    it('a staff user without a second factor is sent to enrol one; a user without a staff role gets 403', async () => {
      const s = await passwordSession('nofactor');
      const res = await get(s, '/console');
      assert.equal(res.status, 303);
      assert.equal(res.headers.location, '/security?notice=consoleEnrol');
      const security = await get(s, '/security?notice=consoleEnrol');
      assert.match(security.text, /The console needs a second factor/);
      const verify = await get(s, '/console/verify');
      assert.equal(verify.status, 303);
      const lena = await passwordSession('lena');
      const denied = await get(lena, '/console');
      assert.equal(denied.status, 403);
      assert.match(denied.text, /<html lang="en">/);
      const anonymous = await t.http().get('/console/audit');
      assert.equal(anonymous.status, 303);
      assert.equal(anonymous.headers.location, '/login?next=%2Fconsole%2Faudit');
    });

    it('every /console route of the router, also spelled as express routes it the same (upper case, trailing slash): nobody, a role-less user and a password-only staff session get nowhere and change nothing', async () => {
      type Layer = { route?: { path: string; methods: Record<string, boolean> }; handle: { stack?: Layer[] } };
      const routes: { method: 'get' | 'post'; path: string }[] = [];
      const walk = (stack: Layer[]) => {
        for (const l of stack) {
          if (l.route !== undefined) {
            for (const m of ['get', 'post'] as const) if (l.route.methods[m] === true && l.route.path.startsWith('/console') && l.route.path !== '/console/verify') routes.push({ method: m, path: l.route.path });
          } else if (l.handle.stack !== undefined) walk(l.handle.stack);
        }
      };
      walk((t.app as unknown as { router: { stack: Layer[] } }).router.stack);
      assert.ok(routes.length >= 30 && routes.some((r) => r.method === 'post' && r.path === '/console/policies'), `${routes.length} console routes`);
      const lena = await passwordSession('lena');
      const root = await passwordSession('root');
      const auditBefore = Number((await t.gw.store.db.selectFrom('audit_log').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
      const versionBefore = await policyVersion();
      for (const route of routes) {
        const concrete = route.path.replace(/:[A-Za-z]+/g, (m) => (m === ':id' ? (ids.lena as string) : 'probe'));
        for (const path of [concrete, `${concrete.toUpperCase()}/`]) {
          const label = `${route.method.toUpperCase()} ${path}`;
          const form = { reason: 'probing the gate', comment: 'probe', policies: POLICY_YAML, name: 'probe', alg: 'ES256' };
          const anonymous = route.method === 'get' ? await t.http().get(path) : await t.http().post(path).type('form').send(form);
          if (route.method === 'get') {
            assert.equal(anonymous.status, 303, `${label} anonymous`);
            assert.match(String(anonymous.headers.location), /^\/login\?next=/, `${label} anonymous`);
          } else assert.equal(anonymous.status, 401, `${label} anonymous`);
          const plain = route.method === 'get' ? await get(lena, path) : await post(lena, path, form);
          assert.equal(plain.status, 403, `${label} role-less user`);
          const halfway = route.method === 'get' ? await get(root, path) : await post(root, path, form);
          if (route.method === 'get') {
            assert.equal(halfway.status, 303, `${label} password-only admin`);
            assert.match(String(halfway.headers.location), /^\/console\/verify\?next=/, `${label} password-only admin`);
          } else assert.equal(halfway.status, 403, `${label} password-only admin`);
        }
      }
      const auditAfter = Number((await t.gw.store.db.selectFrom('audit_log').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()).n);
      assert.equal(auditAfter, auditBefore, 'nothing audited');
      assert.equal(await policyVersion(), versionBefore);
    });

    it('the second factor: a wrong code is refused and audited, a used code cannot open a second session, the old session id is dead', async (tc) => {
      if (needOathtool(tc)) return;
      const s = await passwordSession('desk');
      const failedBefore = await count('session.second_factor_failed');
      const wrong = await post(s, '/console/verify', { code: '000000', next: '/console' });
      assert.equal(wrong.status, 401);
      assert.match(wrong.text, /The code is not valid/);
      assert.equal(await count('session.second_factor_failed'), failedBefore + 1);
      const bad = await post(s, '/console/verify', { code: 'abc', next: '/console' });
      assert.equal(bad.status, 400);
      assert.match(bad.text, /<code>code<\/code>/);

      const code = totpFor('desk');
      const ok = await post(s, '/console/verify', { code, next: '//evil.example' });
      assert.equal(ok.status, 303);
      assert.equal(ok.headers.location, '/console');
      const other = await passwordSession('desk');
      const replay = await post(other, '/console/verify', { code, next: '/console' });
      assert.equal(replay.status, 401);
      // The pre-second-factor session id no longer works at all.
      assert.equal((await get(s, '/v1/me')).status, 401);
      const elevated = `stepgate_session=${cookieFrom(ok)}`;
      const me = await t.http().get('/v1/me').set('Cookie', elevated);
      assert.deepEqual([...me.body.session.amr].sort(), ['mfa', 'otp', 'pwd']);
      assert.equal(await count('session.second_factor_verified') >= 1, true);
    });

    it('two concurrent uses of one code: exactly one session is completed', async (tc) => {
      if (needOathtool(tc)) return;
      const a = await passwordSession('audit');
      const b = await passwordSession('audit');
      const code = totpFor('audit');
      const results = await Promise.all([a, b].map((s) => post(s, '/console/verify', { code, next: '/console' })));
      assert.deepEqual(results.map((r) => r.status).sort(), [303, 401]);
    });

    it('a passkey sign-in (WebAuthn with user verification) opens the console without the code form', async () => {
      const session = await createSession(t.gw, ids.nofactor as string, ['hwk', 'user']);
      const res = await t.http().get('/console').set('Cookie', `stepgate_session=${session.sessionId}`);
      assert.equal(res.status, 200);
      const synced = await createSession(t.gw, ids.nofactor as string, ['swk', 'user']);
      assert.equal((await t.http().get('/console').set('Cookie', `stepgate_session=${synced.sessionId}`)).status, 200);
      // `otp` alone (a recovery code, say) is not a console second factor.
      const otpOnly = await createSession(t.gw, ids.nofactor as string, ['pwd', 'otp']);
      assert.equal((await t.http().get('/console').set('Cookie', `stepgate_session=${otpOnly.sessionId}`)).status, 303);
    });

    it('signs in the three roles with a second factor', async (tc) => {
      if (needOathtool(tc)) return;
      for (const who of ['root', 'desk', 'audit']) sessions[who] = await consoleSession(who);
    });

    it('each role sees only its pages; the navigation lists only those', async (tc) => {
      if (needOathtool(tc)) return;
      const allowed: Record<string, string[]> = {
        root: ['/console', '/console/users', '/console/tokens', '/console/policies', '/console/clients', '/console/keys', '/console/audit'],
        desk: ['/console', '/console/users', '/console/tokens', '/console/policies'],
        audit: ['/console', '/console/users', '/console/tokens', '/console/policies', '/console/clients', '/console/keys', '/console/audit'],
      };
      for (const [who, pages] of Object.entries(allowed)) {
        const s = staff(who);
        for (const page of allowed.root as string[]) {
          const res = await get(s, page);
          assert.equal(res.status, pages.includes(page) ? 200 : 403, `${who} ${page}`);
        }
        const nav = (await get(s, '/console')).text;
        for (const page of allowed.root as string[]) assert.equal(nav.includes(`href="${page}"`), pages.includes(page), `${who} nav ${page}`);
      }
      // Only an administrator gets the editor's save button; helpdesk and auditor read.
      assert.match((await get(staff('root'), '/console/policies')).text, /Save as a new version/);
      assert.doesNotMatch((await get(staff('desk'), '/console/policies')).text, /Save as a new version/);
      assert.doesNotMatch((await get(staff('audit'), '/console/users/' + ids.lena)).text, /Unlock sign-in/);
    });

    it('forbidden actions answer 403 and change nothing', async (tc) => {
      if (needOathtool(tc)) return;
      const desk = staff('desk');
      const audit = staff('audit');
      const v = await policyVersion();
      const auditRows = (await verifyAuditChain(t.gw.store.db)).rows;
      const attempts: [Staff, string, Record<string, string>][] = [
        [desk, '/console/policies', { policies: POLICY_YAML, comment: 'helpdesk edits', baseVersion: String(v) }],
        [desk, '/console/clients', { name: 'x', actions: 'payment_code.issue', authMethod: 'client_secret_basic', reason: 'helpdesk adds' }],
        [desk, '/console/keys/rotate', { alg: 'ES256', reason: 'helpdesk rotates' }],
        [desk, '/console/keys/revoke', { kid: 'any', reason: 'helpdesk revokes' }],
        [audit, '/console/policies', { policies: POLICY_YAML, comment: 'auditor edits', baseVersion: String(v) }],
        [audit, `/console/users/${ids.lena}/unlock`, { reason: 'auditor unlocks' }],
        [audit, `/console/users/${ids.lena}/disable`, { reason: 'auditor disables' }],
        [audit, `/console/users/${ids.lena}/factors/reset`, { reason: 'auditor resets' }],
        [audit, `/console/users/${ids.lena}/password-reset`, { reason: 'auditor resets' }],
        [audit, '/console/tokens/SN1/assign', { username: 'lena', code: '123456', reason: 'auditor assigns' }],
        [audit, '/console/tokens/SN1/revoke', { reason: 'auditor revokes' }],
        [audit, '/console/clients', { name: 'x', actions: 'payment_code.issue', authMethod: 'client_secret_basic', reason: 'auditor adds' }],
        [audit, '/console/keys/rotate', { alg: 'ES256', reason: 'auditor rotates' }],
        [audit, '/console/keys/revoke', { kid: 'any', reason: 'auditor revokes' }],
      ];
      const keysBefore = (await t.gw.keys.publishedKeys()).length;
      for (const [s, path, form] of attempts) {
        const res = await post(s, path, form);
        assert.equal(res.status, 403, `${path}: ${res.status}`);
      }
      const importRes = await t.http().post(`/console/tokens/import?_csrf=${encodeURIComponent(audit.csrf)}`).set('Cookie', audit.cookie).attach('file', Buffer.from('serial,secret\n'), 'x.csv');
      assert.equal(importRes.status, 403);
      assert.equal(await policyVersion(), v);
      assert.equal((await t.gw.keys.publishedKeys()).length, keysBefore);
      assert.equal((await t.gw.store.db.selectFrom('clients').select('client_id').execute()).length, 0);
      assert.equal((await t.gw.store.db.selectFrom('users').select('status').where('id', '=', ids.lena as string).executeTakeFirstOrThrow()).status, 'active');
      // Nothing but reads happened: no audit rows were appended by the refused requests.
      assert.equal((await verifyAuditChain(t.gw.store.db)).rows, auditRows);
    });

    it('CSRF: a console form without the session token is refused', async (tc) => {
      if (needOathtool(tc)) return;
      const root = staff('root');
      const res = await t.http().post(`/console/users/${ids.lena}/disable`).set('Cookie', root.cookie).type('form').send({ reason: 'no csrf token here' });
      assert.equal(res.status, 403);
      assert.equal(res.body.code, 'csrf_failed');
      const wrong = await t.http().post(`/console/users/${ids.lena}/disable`).set('Cookie', root.cookie).type('form').send({ _csrf: 'x'.repeat(43), reason: 'wrong csrf token' });
      assert.equal(wrong.status, 403);
      const upload = await t.http().post('/console/tokens/import').set('Cookie', root.cookie).attach('file', Buffer.from('a'), 'x.csv');
      assert.equal(upload.status, 403);
      assert.equal((await t.gw.store.db.selectFrom('users').select('status').where('id', '=', ids.lena as string).executeTakeFirstOrThrow()).status, 'active');
    });

    it('users: unlock, disable and enable with a reason, audited with who and why; a missing reason names the field and writes nothing', async (tc) => {
      if (needOathtool(tc)) return;
      const desk = staff('desk');
      const search = await get(desk, '/console/users?q=len');
      assert.match(search.text, /data-username="lena"/);
      assert.doesNotMatch(search.text, /data-username="root"/);
      const before = await count('user.disabled');
      const missing = await post(desk, `/console/users/${ids.lena}/disable`, { reason: ' ' });
      assert.equal(missing.status, 400);
      assert.match(missing.text, /<code>reason<\/code>/);
      assert.match(missing.text, /aria-invalid="true"/);
      assert.equal(await count('user.disabled'), before);
      const missingZh = await post(desk, `/console/users/${ids.lena}/disable`, { reason: '' }).set('Accept-Language', 'zh-CN');
      assert.equal(missingZh.status, 400);
      assert.match(missingZh.text, /请更正下列字段/);
      assert.match(missingZh.text, /请说明原因/);
      const disabled = await post(desk, `/console/users/${ids.lena}/disable`, { reason: 'phone stolen, ticket 4411' });
      assert.equal(disabled.status, 303);
      const row = await t.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', 'user.disabled').orderBy('seq', 'desc').executeTakeFirstOrThrow();
      assert.equal(row.actor, ids.desk);
      assert.equal(row.subject, ids.lena);
      assert.match(row.data, /phone stolen, ticket 4411/);
      const enabled = await post(desk, `/console/users/${ids.lena}/enable`, { reason: 'phone recovered' });
      assert.equal(enabled.status, 303);
      const unlock = await post(desk, `/console/users/${ids.lena}/unlock`, { reason: 'called the helpdesk' });
      assert.equal(unlock.status, 303);
      // Helpdesk may not act on an administrator's account (the same rule as the API).
      const onAdmin = await post(desk, `/console/users/${ids.root}/disable`, { reason: 'helpdesk on admin' });
      assert.equal(onAdmin.status, 403);
      const link = await post(desk, `/console/users/${ids.lena}/password-reset`, { reason: 'forgot the password' });
      assert.equal(link.status, 201);
      assert.match(link.text, /id="reset-link">http:\/\/localhost:8080\/reset-password\?token=/);
    });

    it('policies: a save is validated as a whole (400, nothing stored), needs a comment, and a stale editor gets 409; dry run, history and diff', async (tc) => {
      if (needOathtool(tc)) return;
      const root = staff('root');
      const v0 = await policyVersion();
      const invalid = await post(root, '/console/policies', { policies: POLICY_YAML.replace('anyOf: [[totp]]', 'anyOf: [[carrier_pigeon]]'), comment: 'bad factor', baseVersion: String(v0) });
      assert.equal(invalid.status, 400);
      assert.match(invalid.text, /<code>policies\/0\/require/);
      assert.match(invalid.text, /carrier_pigeon/, 'the operator text comes back');
      const notYaml = await post(root, '/console/policies', { policies: 'policies: [ {', comment: 'broken yaml', baseVersion: String(v0) });
      assert.equal(notYaml.status, 400);
      const noComment = await post(root, '/console/policies', { policies: POLICY_YAML, comment: '', baseVersion: String(v0) });
      assert.equal(noComment.status, 400);
      assert.match(noComment.text, /<code>comment<\/code>/);
      assert.equal(await policyVersion(), v0);

      const saved = await post(root, '/console/policies', { policies: POLICY_YAML, comment: 'small payments by TOTP', baseVersion: String(v0) });
      assert.equal(saved.status, 303);
      assert.equal(saved.headers.location, '/console/policies?notice=saved');
      assert.equal(await policyVersion(), v0 + 1);
      const stale = await post(root, '/console/policies', { policies: POLICY_YAML.replace('"100.00"', '"200.00"'), comment: 'from an old tab', baseVersion: String(v0) });
      assert.equal(stale.status, 409);
      assert.equal(await policyVersion(), v0 + 1);

      const dry = await post(staff('desk'), '/console/policies/evaluate', { action: 'payment_code.issue', context: 'amount: "50.00"\ncurrency: CNY', subject: 'lena' });
      assert.equal(dry.status, 200);
      assert.match(dry.text, /data-decision="allow"/);
      assert.match(dry.text, /Allowed by policy small/);
      const dryLarge = await post(staff('audit'), '/console/policies/evaluate', { action: 'payment_code.issue', context: '{"amount": "500.00", "currency": "CNY"}' });
      assert.match(dryLarge.text, /Allowed by policy large/);
      const proposed = await post(root, '/console/policies/evaluate', { action: 'payment_code.issue', context: 'amount: "50.00"\ncurrency: CNY', proposed: '1', policies: 'policies: []' });
      assert.match(proposed.text, /data-decision="deny"/);
      assert.match(proposed.text, /Evaluated against the text in the editor/);
      const badContext = await post(root, '/console/policies/evaluate', { action: '', context: 'amount: [' });
      assert.equal(badContext.status, 400);
      assert.equal(await policyVersion(), v0 + 1, 'a dry run stores nothing');

      const diff = await get(root, `/console/policies/diff?from=${v0}&to=${v0 + 1}`);
      assert.equal(diff.status, 200);
      assert.match(diff.text, /data-diff="added" data-policy="small"/);
      const version = await get(root, `/console/policies/versions/${v0 + 1}`);
      assert.match(version.text, /small payments by TOTP/);
      assert.equal((await get(root, '/console/policies/versions/999')).status, 404);
    });

    it('hardware tokens: import a PSKC file with the per-token report, assign by serial + code, refuse a bad code, revoke', async (tc) => {
      if (needOathtool(tc) || needPskc(tc)) return;
      const root = staff('root');
      const seed = randomSeedHex();
      const pskc = writePskc({ tokens: [{ serial: 'CONSOLE-1', secret_hex: seed, algorithm: 'hotp', counter: 0, digits: 6, manufacturer: 'Feitian' }, { serial: 'CONSOLE-2', secret_hex: randomSeedHex(), algorithm: 'hotp', counter: 0 }] });
      const imported = await t.http().post(`/console/tokens/import?_csrf=${encodeURIComponent(root.csrf)}`).set('Cookie', root.cookie).field('reason', 'March delivery from Feitian').attach('file', pskc, 'batch.pskc.xml');
      assert.equal(imported.status, 303, imported.text.slice(0, 500));
      assert.match(imported.headers.location as string, /^\/console\/tokens\/imports\/[\w-]+$/);
      const report = await get(root, imported.headers.location as string);
      assert.match(report.text, /2 tokens imported from batch.pskc.xml/);
      assert.match(report.text, /data-serial="CONSOLE-1"/);
      assert.match(report.text, /data-serial="CONSOLE-2"/);
      assert.match((await t.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'hardware_token.imported').executeTakeFirstOrThrow()).data, /March delivery from Feitian/);
      const noReason = await t.http().post(`/console/tokens/import?_csrf=${encodeURIComponent(root.csrf)}`).set('Cookie', root.cookie).attach('file', pskc, 'batch2.pskc.xml');
      assert.equal(noReason.status, 400);
      assert.match(noReason.text, /<code>reason<\/code>/);
      const again = await t.http().post(`/console/tokens/import?_csrf=${encodeURIComponent(root.csrf)}`).set('Cookie', root.cookie).field('reason', 'the same file again').attach('file', pskc, 'batch.pskc.xml');
      assert.equal(again.status, 400);
      assert.match(again.text, /CONSOLE-1/);
      const empty = await t.http().post(`/console/tokens/import?_csrf=${encodeURIComponent(root.csrf)}`).set('Cookie', root.cookie).field('password', '');
      assert.equal(empty.status, 400);
      assert.match(empty.text, /<code>file<\/code>/);

      const desk = staff('desk');
      const badCode = await post(desk, '/console/tokens/CONSOLE-1/assign', { username: 'lena', code: '12', reason: 'new token for lena' });
      assert.equal(badCode.status, 400);
      assert.match(badCode.text, /<code>code<\/code>/);
      const noUser = await post(desk, '/console/tokens/CONSOLE-1/assign', { username: 'nobody', code: oathHotp(seed, 0), reason: 'new token' });
      assert.equal(noUser.status, 400);
      assert.match(noUser.text, /<code>username<\/code>/);
      const wrong = await post(desk, '/console/tokens/CONSOLE-1/assign', { username: 'lena', code: oathHotp(seed, 0) === '111111' ? '222222' : '111111', reason: 'new token for lena' });
      assert.equal(wrong.status >= 400 && wrong.status < 500, true);
      assert.equal((await t.gw.store.db.selectFrom('hardware_tokens').select('state').where('serial', '=', 'CONSOLE-1').executeTakeFirstOrThrow()).state, 'unassigned');
      const assigned = await post(desk, '/console/tokens/CONSOLE-1/assign', { username: 'lena', code: oathHotp(seed, 0), reason: 'new token for lena' });
      assert.equal(assigned.status, 303, assigned.text.slice(0, 400));
      const page = await get(desk, '/console/tokens/CONSOLE-1');
      assert.match(page.text, /data-state="assigned"/);
      const revoked = await post(desk, '/console/tokens/CONSOLE-2/revoke', { reason: 'damaged in transit' });
      assert.equal(revoked.status, 303);
      assert.equal((await t.gw.store.db.selectFrom('hardware_tokens').select('state').where('serial', '=', 'CONSOLE-2').executeTakeFirstOrThrow()).state, 'revoked');
      assert.equal((await get(desk, '/console/tokens/NOPE')).status, 404);
    });

    it('clients and signing keys: a client secret is shown once; bad input is named; rotation is audited with the reason', async (tc) => {
      if (needOathtool(tc)) return;
      const root = staff('root');
      const bad = await post(root, '/console/clients', { name: '', actions: '', authMethod: 'client_secret_basic', reason: 'new wallet service' });
      assert.equal(bad.status, 400);
      assert.equal((await t.gw.store.db.selectFrom('clients').select('client_id').execute()).length, 0);
      const created = await post(root, '/console/clients', { name: 'Wallet', actions: 'payment_code.issue', redirectUris: '', authMethod: 'client_secret_basic', reason: 'new wallet service' });
      assert.equal(created.status, 201);
      assert.match(created.text, /id="client-secret"/);
      const listed = await get(root, '/console/clients');
      assert.doesNotMatch(listed.text, /id="client-secret"/);
      const clientId = (await t.gw.store.db.selectFrom('clients').select('client_id').executeTakeFirstOrThrow()).client_id;
      const rotated = await post(root, `/console/clients/${clientId}/rotate-secret`, { reason: 'secret leaked in a log' });
      assert.equal(rotated.status, 200);
      assert.match(rotated.text, /id="client-secret"/);
      const jwksOnSecretClient = await post(root, `/console/clients/${clientId}/jwks`, { jwks: '{"keys":[]', reason: 'register keys' });
      assert.equal(jwksOnSecretClient.status, 400);
      const ev = await t.gw.store.db.selectFrom('audit_log').selectAll().where('type', '=', 'client.secret_rotated').executeTakeFirstOrThrow();
      assert.equal(ev.actor, ids.root);
      assert.match(ev.data, /secret leaked in a log/);

      // A private_key_jwt client: its JWK Set at creation, then a new one registered (key rotation on the client side).
      const jwk = (kid: string) => ({ ...(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }) as object), kid, use: 'sig' });
      const privateJwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
      const leaked = await post(root, '/console/clients', { name: 'Signer', actions: 'payment_code.issue', authMethod: 'private_key_jwt', jwks: JSON.stringify({ keys: [privateJwk] }), reason: 'key-based client' });
      assert.equal(leaked.status, 400);
      assert.match(leaked.text, /<code>jwks\/keys\/0\/d<\/code>/);
      const signer = await post(root, '/console/clients', { name: 'Signer', actions: 'payment_code.issue', authMethod: 'private_key_jwt', jwks: JSON.stringify({ keys: [jwk('k1')] }), reason: 'key-based client' });
      assert.equal(signer.status, 201, signer.text.slice(0, 300));
      assert.doesNotMatch(signer.text, /id="client-secret"/, 'a key-based client has no secret to show');
      const signerId = (await t.gw.store.db.selectFrom('clients').select('client_id').where('name', '=', 'Signer').executeTakeFirstOrThrow()).client_id;
      const registered = await post(root, `/console/clients/${signerId}/jwks`, { jwks: JSON.stringify({ keys: [jwk('k2'), jwk('k3')] }), reason: 'quarterly key rotation' });
      assert.equal(registered.status, 303);
      const stored = JSON.parse((await t.gw.store.db.selectFrom('clients').select('jwks').where('client_id', '=', signerId).executeTakeFirstOrThrow()).jwks ?? '{}') as { keys: { kid: string }[] };
      assert.deepEqual(stored.keys.map((k) => k.kid), ['k2', 'k3']);
      // A member given twice in the pasted JWK Set is refused, naming it, and changes nothing.
      const twice = JSON.stringify({ keys: [jwk('k4')] }).replace('"kid":"k4"', '"kid":"k4","kid":"k2"');
      const duplicated = await post(root, `/console/clients/${signerId}/jwks`, { jwks: twice, reason: 'quarterly key rotation' });
      assert.equal(duplicated.status, 400, duplicated.text.slice(0, 300));
      assert.match(duplicated.text, /<code>jwks\/keys\/0\/kid<\/code>/);
      const unchanged = JSON.parse((await t.gw.store.db.selectFrom('clients').select('jwks').where('client_id', '=', signerId).executeTakeFirstOrThrow()).jwks ?? '{}') as { keys: { kid: string }[] };
      assert.deepEqual(unchanged.keys.map((k) => k.kid), ['k2', 'k3']);

      const keysBefore = await t.gw.keys.publishedKeys();
      const badAlg = await post(root, '/console/keys/rotate', { alg: 'RS256', reason: 'yearly rotation' });
      assert.equal(badAlg.status, 400);
      assert.match(badAlg.text, /<code>alg<\/code>/);
      const rotatedKey = await post(root, '/console/keys/rotate', { alg: 'ES256', reason: 'yearly rotation' });
      assert.equal(rotatedKey.status, 303);
      const keysAfter = await t.gw.keys.publishedKeys();
      assert.equal(keysAfter.length, keysBefore.length + 1);
      const keysPage = await get(staff('audit'), '/console/keys');
      for (const k of keysAfter) assert.match(keysPage.text, new RegExp(`data-kid="${k.kid}"`));
      assert.match((await t.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'signing_key.rotated').executeTakeFirstOrThrow()).data, /yearly rotation/);

      // A compromised key is revoked from the same page: out of the JWKS at once, audited.
      const retired = keysAfter.find((k) => k.status === 'retired');
      assert.ok(retired !== undefined);
      const unknownKid = await post(root, '/console/keys/revoke', { kid: 'no-such-kid', reason: 'key leaked in incident' });
      assert.equal(unknownKid.status, 400);
      assert.match(unknownKid.text, /<code>kid<\/code>/);
      const revokedKey = await post(root, '/console/keys/revoke', { kid: retired.kid, reason: 'key leaked in incident' });
      assert.equal(revokedKey.status, 303);
      assert.ok(!(await t.gw.keys.publishedKeys()).some((k) => k.kid === retired.kid));
      assert.ok(!(await t.http().get('/.well-known/jwks.json')).body.keys.some((k: { kid: string }) => k.kid === retired.kid));
      const revokedPage = await get(root, '/console/keys?notice=revoked');
      assert.doesNotMatch(revokedPage.text, new RegExp(`data-kid="${retired.kid}"`));
      assert.match(revokedPage.text, /role="status"/);
      assert.match((await t.gw.store.db.selectFrom('audit_log').select('data').where('type', '=', 'signing_key.revoked').executeTakeFirstOrThrow()).data, /key leaked in incident/);
    });

    it('audit log: filter, verify with a visible result, export NDJSON; a bad filter names the field', async (tc) => {
      if (needOathtool(tc)) return;
      const audit = staff('audit');
      const filtered = await get(audit, '/console/audit?type=user.*');
      assert.equal(filtered.status, 200);
      const types = [...filtered.text.matchAll(/<tr data-type="([^"]+)"/g)].map((m) => m[1]);
      assert.ok(types.length > 0 && types.every((x) => x?.startsWith('user.')), types.join());
      const badFilter = await get(audit, '/console/audit?since=yesterday');
      assert.equal(badFilter.status, 400);
      assert.match(badFilter.text, /<code>since<\/code>/);
      assert.match(badFilter.text, /a UTC date and time/);
      const badExport = await get(audit, '/console/audit/export.ndjson?since=yesterday&type=user.*');
      assert.equal(badExport.status, 303);
      assert.equal(badExport.headers.location, '/console/audit?since=yesterday&type=user.*');
      const verified = await post(audit, '/console/audit/verify');
      assert.equal(verified.status, 200);
      assert.match(verified.text, /data-chain-ok="true"/);
      assert.match(verified.text, /The chain is intact/);
      const exported = await get(audit, '/console/audit/export.ndjson?type=policy.*');
      assert.equal(exported.status, 200);
      assert.match(exported.headers['content-type'] as string, /application\/x-ndjson/);
      const lines = exported.text.trim().split('\n').map((l) => JSON.parse(l) as { type: string; hash: string });
      assert.ok(lines.length >= 1);
      assert.ok(lines.every((l) => l.type.startsWith('policy.') && /^[0-9a-f]{64}$/.test(l.hash)));
      assert.equal(await count('audit.exported'), 1);
      // Recorded before anything is sent, with the last event the export covers; newest first, no repeats.
      const record = await t.gw.store.db.selectFrom('audit_log').select(['seq', 'data']).where('type', '=', 'audit.exported').executeTakeFirstOrThrow();
      const upToSeq = (JSON.parse(record.data) as { upToSeq: number }).upToSeq;
      const seqs = (lines as unknown as { seq: number }[]).map((l) => l.seq);
      assert.ok(seqs.every((x, i) => x <= upToSeq && (i === 0 || x < (seqs[i - 1] as number))), `${seqs.join()} up to ${upToSeq}`);
      assert.ok(upToSeq < Number(record.seq));
      // An export whose record cannot be written sends nothing.
      const append = t.gw.audit.append;
      t.gw.audit.append = async (executor, event) => {
        if (event.type === 'audit.exported') throw new Error('audit store refused');
        return append.call(t.gw.audit, executor, event);
      };
      try {
        const refused = await get(audit, '/console/audit/export.ndjson?type=policy.*');
        assert.equal(refused.status, 500);
        assert.match(String(refused.headers['content-type']), /problem\+json/);
        assert.doesNotMatch(refused.text, /"hash"/);
      } finally {
        t.gw.audit.append = append;
      }
      assert.equal(await count('audit.exported'), 1);
    });

    it('the dashboard draws the activity as SVG from the audit log, and pages render in Chinese', async (tc) => {
      if (needOathtool(tc)) return;
      const root = staff('root');
      const res: Response = await get(root, '/console').set('Accept-Language', 'zh-CN');
      assert.equal(res.status, 200);
      assert.match(res.text, /<svg viewBox="0 0 720 240" role="img"/);
      assert.match(res.text, /<html lang="zh-CN">/);
      assert.match(res.text, /验证失败/);
      const failures = Number(/data-stat="failures">(\d+)</.exec(res.text)?.[1]);
      assert.ok(failures >= 0);
      for (const page of ['/console/users', '/console/tokens', '/console/policies', '/console/clients', '/console/keys', '/console/audit']) {
        const zh = await get(root, page).set('Accept-Language', 'zh-CN');
        assert.equal(zh.status, 200, page);
        assert.match(zh.text, /<html lang="zh-CN">/, page);
      }
    });

    it('a tampered audit log: verifying shows the first broken event, visibly', async (tc) => {
      if (needOathtool(tc)) return;
      const row = await t.gw.store.db.selectFrom('audit_log').select(['seq', 'data']).where('type', '=', 'user.disabled').executeTakeFirstOrThrow();
      await t.gw.store.db.updateTable('audit_log').set({ data: row.data.replace('phone stolen', 'phone found') }).where('seq', '=', row.seq).execute();
      try {
        const res = await post(staff('audit'), '/console/audit/verify');
        assert.equal(res.status, 200);
        assert.match(res.text, /data-chain-ok="false"/);
        assert.match(res.text, new RegExp(`The chain is BROKEN at event ${row.seq} \\(hash_mismatch\\)`));
      } finally {
        await t.gw.store.db.updateTable('audit_log').set({ data: row.data }).where('seq', '=', row.seq).execute();
      }
    });
  });
}
