import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { verifyAuditChain } from '../../src/audit/audit-log.ts';
import { hashToken } from '../../src/crypto/ids.ts';
import { adminExists, createAdminDirectly, firstRunSetupLink } from '../../src/flows/admin-setup.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { testDialects } from '../helpers/stores.ts';

const PASSWORD = 'correct horse battery staple 42';

function tokenOf(link: string): string {
  const token = new URL(link).searchParams.get('token');
  assert.ok(token !== null && token.length >= 43, link);
  return token;
}

function hiddenField(html: string, name: string): string {
  const m = new RegExp(`name="${name}" value="([^"]*)"`).exec(html);
  assert.ok(m?.[1] !== undefined, `no hidden ${name} in the page`);
  return m[1];
}

for (const dialect of testDialects()) {
  describe(`first-run admin set-up (${dialect})`, () => {
    let t: TestGateway;
    before(async () => {
      t = await createTestGateway({ dialect, config: { admin: { setupLinkSeconds: 3600 }, http: { publicUrl: 'https://mfa.example.com/' } } });
    });
    after(async () => {
      await t.close();
    });
    beforeEach(async () => {
      // Each case starts from an empty gateway: no users, no tokens.
      await t.gw.store.db.deleteFrom('sessions').execute();
      await t.gw.store.db.deleteFrom('factors').execute();
      await t.gw.store.db.deleteFrom('users').execute();
      await t.gw.store.db.deleteFrom('one_time_tokens').execute();
    });

    async function userCount(): Promise<number> {
      return (await t.gw.store.db.selectFrom('users').select('id').execute()).length;
    }

    it('issues a one-time link stored only as a hash, expiring after admin.setupLinkSeconds', async () => {
      const link = await firstRunSetupLink(t.gw);
      assert.ok(link !== undefined);
      assert.match(link, /^https:\/\/mfa\.example\.com\/setup\?token=[A-Za-z0-9_-]{43}$/);
      const token = tokenOf(link);
      const rows = await t.gw.store.db.selectFrom('one_time_tokens').selectAll().execute();
      assert.equal(rows.length, 1);
      const row = rows[0]!;
      assert.equal(row.id_hash, hashToken(token));
      assert.equal(row.purpose, 'admin_setup');
      assert.equal(row.used_at, null);
      assert.equal(Number(row.expires_at) - Number(row.created_at), 3600 * 1000);
      assert.equal(Number(row.created_at), t.clock.now().getTime());
      // The raw token is nowhere in the database or the logs.
      const audit = await t.gw.store.db.selectFrom('audit_log').select('data').execute();
      assert.ok(!audit.some((r) => r.data.includes(token)));
      assert.ok(!t.logs.text.includes(token));
    });

    it('creates the first admin over JSON; the token then works no more and no new link is printed', async () => {
      const token = tokenOf((await firstRunSetupLink(t.gw))!);
      const res = await t.http().post('/v1/setup').send({ token, username: 'Root.Admin', password: PASSWORD, display_name: 'Root' });
      assert.equal(res.status, 201, JSON.stringify(res.body));
      assert.equal(res.body.user.username, 'root.admin');
      assert.equal(res.body.user.display_name, 'Root');
      assert.deepEqual(res.body.user.roles, ['admin']);
      assert.equal(JSON.stringify(res.body).includes(PASSWORD), false);

      const again = await t.http().post('/v1/setup').send({ token, username: 'second', password: PASSWORD });
      assert.equal(again.status, 400);
      assert.equal(again.body.code, 'setup_token_invalid');
      assert.equal(await userCount(), 1);
      assert.equal(await firstRunSetupLink(t.gw), undefined);

      // The new administrator can sign in.
      const login = await t.http().post('/v1/login').send({ username: 'root.admin', password: PASSWORD });
      assert.equal(login.status, 200);
      assert.deepEqual(login.body.user.roles, ['admin']);

      const events = await t.gw.store.db.selectFrom('audit_log').select(['type', 'actor', 'subject', 'data']).orderBy('seq').execute();
      const created = events.find((e) => e.type === 'user.created');
      assert.equal(created?.actor, 'setup');
      assert.equal(created?.subject, res.body.user.id);
      assert.ok(events.some((e) => e.type === 'admin_setup.completed' && e.subject === res.body.user.id));
      assert.ok(!events.some((e) => e.data.includes(PASSWORD) || e.data.includes(token)));
      assert.ok(!t.logs.text.includes(PASSWORD));
      assert.equal((await verifyAuditChain(t.gw.store.db)).ok, true);
    });

    it('names the wire field display_name when the display name is refused', async () => {
      const token = tokenOf((await firstRunSetupLink(t.gw))!);
      for (const display_name of ['a\u0007', 'a\u0085b', 'x'.repeat(200)]) {
        const res = await t.http().post('/v1/setup').send({ token, username: 'root', password: PASSWORD, display_name });
        assert.equal(res.status, 400, JSON.stringify(res.body));
        assert.equal(res.body.code, 'validation_failed');
        assert.deepEqual(res.body.invalid_params.map((p: { pointer: string }) => p.pointer), ['/display_name']);
      }
      assert.equal(await userCount(), 0);
    });

    it('refuses unknown, expired and superseded tokens and creates nothing', async () => {
      const first = tokenOf((await firstRunSetupLink(t.gw))!);
      const second = tokenOf((await firstRunSetupLink(t.gw))!);
      for (const token of [first, 'x'.repeat(43), 'short']) {
        const res = await t.http().post('/v1/setup').send({ token, username: 'eve', password: PASSWORD });
        assert.equal(res.status, 400, token);
        assert.equal(res.body.code, 'setup_token_invalid');
        assert.match(res.headers['content-type'] ?? '', /application\/problem\+json/);
      }
      t.clock.advance(3600);
      const expired = await t.http().post('/v1/setup').send({ token: second, username: 'eve', password: PASSWORD });
      assert.equal(expired.status, 400);
      assert.equal(expired.body.code, 'setup_token_invalid');
      assert.equal(await userCount(), 0);
      assert.equal(await adminExists(t.gw.store.db), false);
    });

    it('keeps the token when the input is refused, so the operator can correct it', async () => {
      const token = tokenOf((await firstRunSetupLink(t.gw))!);
      const cases: [Record<string, unknown>, number, string, string][] = [
        [{ token, username: 'root', password: 'password' }, 400, 'password_policy', '/password'],
        [{ token, username: 'root', password: 'short' }, 400, 'password_policy', '/password'],
        [{ token, username: 'bad name!', password: PASSWORD }, 400, 'validation_failed', '/username'],
        [{ token, username: 'root', password: PASSWORD, roles: ['admin'] }, 400, 'validation_failed', '/roles'],
        [{ token, username: 'root', password: 12345678 }, 400, 'validation_failed', '/password'],
        [{ token, password: PASSWORD }, 400, 'validation_failed', '/username'],
        [{ username: 'root', password: PASSWORD }, 400, 'validation_failed', '/token'],
      ];
      for (const [body, status, code, pointer] of cases) {
        const res = await t.http().post('/v1/setup').send(body);
        assert.equal(res.status, status, JSON.stringify(body));
        assert.equal(res.body.code, code, JSON.stringify(res.body));
        assert.ok((res.body.invalid_params as { pointer: string }[]).some((p) => p.pointer === pointer), JSON.stringify(res.body));
      }
      const malformed = await t.http().post('/v1/setup').set('Content-Type', 'application/json').send('{"token": ');
      assert.equal(malformed.status, 400);
      assert.equal(malformed.body.code, 'invalid_json');
      const huge = await t.http().post('/v1/setup').send({ token, username: 'root', password: 'x'.repeat(200_000) });
      assert.equal(huge.status, 413);
      const form = await t.http().post('/v1/setup').type('form').send({ token, username: 'root', password: PASSWORD });
      assert.equal(form.status, 415);
      assert.equal(await userCount(), 0);

      const ok = await t.http().post('/v1/setup').send({ token, username: 'root', password: PASSWORD });
      assert.equal(ok.status, 201);
    });

    it('lets exactly one of many concurrent submissions win', async () => {
      const token = tokenOf((await firstRunSetupLink(t.gw))!);
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) => t.http().post('/v1/setup').send({ token, username: `admin${i}`, password: PASSWORD })),
      );
      const statuses = results.map((r) => r.status).sort();
      assert.deepEqual(statuses, [201, 400, 400, 400, 400, 400, 400, 400]);
      for (const r of results) if (r.status === 400) assert.equal(r.body.code, 'setup_token_invalid');
      assert.equal(await userCount(), 1);
      const used = await t.gw.store.db.selectFrom('one_time_tokens').select('used_at').execute();
      assert.ok(used.every((r) => r.used_at !== null));
    });

    it('voids pending links once an administrator exists (stepgate admin create)', async () => {
      const token = tokenOf((await firstRunSetupLink(t.gw))!);
      await createAdminDirectly(t.gw, { username: 'ops', password: PASSWORD }, { actor: 'cli:test' });
      const res = await t.http().post('/v1/setup').send({ token, username: 'late', password: PASSWORD });
      assert.equal(res.status, 400);
      assert.equal(res.body.code, 'setup_token_invalid');
      assert.equal(await userCount(), 1);
      assert.equal(await firstRunSetupLink(t.gw), undefined);
    });

    it('also refuses a live token once an admin exists by other means', async () => {
      const token = tokenOf((await firstRunSetupLink(t.gw))!);
      // An admin inserted without going through the set-up flows (e.g. restored backup).
      const now = t.clock.now().getTime();
      await t.gw.store.db
        .insertInto('users')
        .values({ id: 'usr_x', username: 'restored', display_name: 'x', roles: '["admin"]', groups: '[]', status: 'active', created_at: now, updated_at: now })
        .execute();
      const res = await t.http().post('/v1/setup').send({ token, username: 'late', password: PASSWORD });
      assert.equal(res.body.code, 'setup_token_invalid');
      assert.equal(await userCount(), 1);
      const page = await t.http().get(`/setup?token=${token}`);
      assert.equal(page.status, 400);
    });

    describe('the set-up page', () => {
      it('shows a form bound to the link and creates the admin', async () => {
        const token = tokenOf((await firstRunSetupLink(t.gw))!);
        const page = await t.http().get(`/setup?token=${encodeURIComponent(token)}`);
        assert.equal(page.status, 200);
        assert.match(page.headers['content-type'] ?? '', /text\/html/);
        assert.equal(page.headers['cache-control'], 'no-store');
        assert.equal(page.headers['referrer-policy'], 'no-referrer');
        assert.equal(hiddenField(page.text, 'token'), token);
        const csrf = hiddenField(page.text, 'csrf');

        const done = await t.http().post('/setup').type('form').send({ token, csrf, username: 'boss', display_name: 'The Boss', password: PASSWORD, password_confirm: PASSWORD });
        assert.equal(done.status, 201, done.text);
        assert.match(done.text, /href="\/login"/);
        const user = await t.gw.store.db.selectFrom('users').selectAll().executeTakeFirstOrThrow();
        assert.equal(user.username, 'boss');
        assert.equal(user.display_name, 'The Boss');
        assert.equal(user.roles, '["admin"]');

        const reused = await t.http().get(`/setup?token=${encodeURIComponent(token)}`);
        assert.equal(reused.status, 400);
        assert.ok(!reused.text.includes('name="password"'));
      });

      it('speaks Chinese when the browser asks for it', async () => {
        const token = tokenOf((await firstRunSetupLink(t.gw))!);
        const page = await t.http().get(`/setup?token=${token}`).set('Accept-Language', 'zh-CN,zh;q=0.9,en;q=0.5');
        assert.equal(page.status, 200);
        assert.match(page.text, /lang="zh-CN"/);
        assert.match(page.text, /创建第一个管理员/);
      });

      it('refuses a form without the matching CSRF field, creating nothing', async () => {
        const token = tokenOf((await firstRunSetupLink(t.gw))!);
        const other = tokenOf((await firstRunSetupLink(t.gw))!);
        const page = await t.http().get(`/setup?token=${other}`);
        const csrfOfOther = hiddenField(page.text, 'csrf');
        for (const csrf of ['', 'forged', csrfOfOther]) {
          const res = await t.http().post('/setup').type('form').send({ token, csrf, username: 'boss', password: PASSWORD, password_confirm: PASSWORD });
          assert.equal(res.status, 403, csrf);
        }
        // Unknown fields and missing fields are refused too.
        const extra = await t.http().post('/setup').type('form').send({ token: other, csrf: csrfOfOther, username: 'boss', password: PASSWORD, password_confirm: PASSWORD, roles: 'admin' });
        assert.equal(extra.status, 400);
        assert.equal(await userCount(), 0);
      });

      it('re-renders the form with the reasons, escaping what was typed', async () => {
        const token = tokenOf((await firstRunSetupLink(t.gw))!);
        const csrf = hiddenField((await t.http().get(`/setup?token=${token}`)).text, 'csrf');
        const mismatch = await t.http().post('/setup').type('form').send({ token, csrf, username: 'boss', password: PASSWORD, password_confirm: `${PASSWORD}!` });
        assert.equal(mismatch.status, 400);
        assert.match(mismatch.text, /name="password"/);

        const xss = '"><script>alert(1)</script>';
        const bad = await t.http().post('/setup').type('form').send({ token, csrf, username: xss, password: PASSWORD, password_confirm: PASSWORD });
        assert.equal(bad.status, 400);
        assert.ok(!bad.text.includes('<script>alert(1)</script>'));
        assert.match(bad.text, /&lt;script&gt;/);
        assert.ok(!bad.text.includes(PASSWORD), 'the password is never echoed');

        const weak = await t.http().post('/setup').type('form').send({ token, csrf, username: 'boss', password: 'password', password_confirm: 'password' });
        assert.equal(weak.status, 400);
        assert.equal(await userCount(), 0);

        // Still usable after the refusals.
        const ok = await t.http().post('/setup').type('form').send({ token, csrf, username: 'boss', password: PASSWORD, password_confirm: PASSWORD });
        assert.equal(ok.status, 201);
      });

      it('shows the invalid-link page for unknown, missing or expired tokens', async () => {
        const token = tokenOf((await firstRunSetupLink(t.gw))!);
        for (const path of ['/setup', '/setup?token=', '/setup?token=nope', `/setup?token=${token}&token=${token}`]) {
          const res = await t.http().get(path);
          assert.equal(res.status, 400, path);
          assert.ok(!res.text.includes('name="password"'), path);
        }
        t.clock.advance(3601);
        assert.equal((await t.http().get(`/setup?token=${token}`)).status, 400);
      });
    });
  });
}
