import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../../src/config/load-config.ts';
import { deliverDueNotifications, retryDelayMs, startNotificationDelivery } from '../../src/notifications/delivery.ts';
import { cliEnv, runCli } from '../helpers/cli.ts';
import { fakeHttpServer, type FakeHttpServer } from '../helpers/fake-http.ts';
import { createTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { signIn } from '../helpers/session.ts';
import { makeUser, PASSWORD } from '../helpers/stepup-fixtures.ts';
import { testDialects } from '../helpers/stores.ts';

/**
 * Security notifications (src/notifications/delivery.ts): an audit event of a listed type is
 * queued with its audit row, in one transaction, and delivered, signed, to the operator's
 * webhook — at least once, retried with back-off, each row by one process at a time. The
 * signature is checked by Python's hmac, not by our own code.
 */

const SECRET = 'notification-webhook-secret-of-40-chars!';
const NEW_PASSWORD = 'an entirely new passphrase 42';

/** Python's hmac checks `X-Stepgate-Signature` over the raw body (exit status 0 when valid). */
function pythonAcceptsSignature(header: string, body: string, secret: string): boolean {
  const script = [
    'import hmac, hashlib, sys',
    'header, secret = sys.argv[1], sys.argv[2]',
    'body = sys.stdin.buffer.read()',
    "parts = dict(p.split('=', 1) for p in header.split(','))",
    "mac = hmac.new(secret.encode(), parts['t'].encode() + b'.' + body, hashlib.sha256).hexdigest()",
    "sys.exit(0 if hmac.compare_digest(mac, parts['v1']) else 1)",
  ].join('\n');
  try {
    execFileSync('/usr/bin/python3', ['-c', script, header, secret], { input: body });
    return true;
  } catch {
    return false;
  }
}

for (const dialect of testDialects()) {
  describe(`security notifications to the operator's webhook (${dialect})`, () => {
    let tg: TestGateway;
    let hook: FakeHttpServer;
    let status = 200;

    before(async () => {
      hook = await fakeHttpServer(() => ({ status }));
      tg = await createTestGateway({ dialect, config: { notifications: { webhook: { url: `${hook.url}/stepgate-events`, secret: SECRET, timeoutSeconds: 2 }, maxAttempts: 3, pollSeconds: 1 } } });
    });
    after(async () => {
      await tg?.close();
      await hook?.close();
    });

    const outbox = (userId: string) => tg.gw.store.db.selectFrom('notification_outbox').selectAll().where('user_id', '=', userId).orderBy('audit_seq').execute();
    async function drain(): Promise<void> {
      // Whatever earlier tests left due is delivered first, so each test sees only its own.
      status = 200;
      await deliverDueNotifications(tg.gw, 1000);
      hook.requests.length = 0;
    }

    it('a password change is notified once, signed, with who, when and from where, and no secret', async () => {
      await drain();
      const u = await makeUser(tg.gw, 'nora');
      const s = await signIn(tg, 'nora', PASSWORD);
      const changed = await tg.http().post('/v1/me/password').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ current_password: PASSWORD, new_password: NEW_PASSWORD });
      assert.equal(changed.status, 200);
      const queued = await outbox(u.id);
      assert.deepEqual(queued.map((r) => [r.type, r.state]), [['user.password_changed', 'pending']], 'sign-ins are not notified; the change is, queued with its audit row');
      const audit = await tg.gw.store.db.selectFrom('audit_log').select(['seq', 'type']).where('seq', '=', Number(queued[0]!.audit_seq)).executeTakeFirstOrThrow();
      assert.equal(audit.type, 'user.password_changed');

      const round = await deliverDueNotifications(tg.gw);
      assert.deepEqual(round, { delivered: 1, retried: 0, failed: 0 });
      assert.equal(hook.requests.length, 1);
      const [req] = hook.requests;
      assert.equal(req!.url, '/stepgate-events');
      assert.equal(req!.headers['content-type'], 'application/json');
      const signature = String(req!.headers['x-stepgate-signature']);
      assert.match(signature, /^t=\d+,v1=[0-9a-f]{64}$/);
      assert.equal(pythonAcceptsSignature(signature, req!.body, SECRET), true, 'Python verifies the signature');
      assert.equal(pythonAcceptsSignature(signature, req!.body.replace('nora', 'norb'), SECRET), false, 'a changed body fails it');
      assert.equal(pythonAcceptsSignature(signature, req!.body, `${SECRET}x`), false, 'another secret fails it');
      const body = JSON.parse(req!.body) as Record<string, unknown>;
      assert.equal(body.id, queued[0]!.id);
      assert.equal(body.type, 'user.password_changed');
      assert.deepEqual(body.user, { id: u.id, username: 'nora' });
      assert.equal(body.audit_seq, audit.seq);
      assert.equal(body.occurred_at, tg.clock.now().toISOString());
      assert.match(String(body.ip), /127\.0\.0\.1/);
      assert.ok(!req!.body.includes(PASSWORD) && !req!.body.includes(NEW_PASSWORD), 'no password in the notification');
      assert.deepEqual((await outbox(u.id)).map((r) => r.state), ['delivered']);
      // Delivered means done: nothing is sent again.
      assert.deepEqual(await deliverDueNotifications(tg.gw), { delivered: 0, retried: 0, failed: 0 });
      assert.equal(hook.requests.length, 1);
    });

    it('a change that rolls back is never notified; an event about no user, or of a type not listed, is not queued', async () => {
      await drain();
      const u = await makeUser(tg.gw, 'otto');
      await assert.rejects(
        tg.gw.store.db.transaction().execute(async (tx) => {
          await tg.gw.audit.append(tx, { type: 'factor.enrolled', actor: u.id, subject: u.id, data: { factorId: 'fac_x', type: 'totp' } });
          throw new Error('the enrolment failed after its audit record');
        }),
        /the enrolment failed/,
      );
      await tg.gw.audit.append(tg.gw.store.db, { type: 'login.locked', actor: null, subject: null, data: { username: 'nobody' } });
      await tg.gw.audit.append(tg.gw.store.db, { type: 'login.succeeded', actor: u.id, subject: u.id, data: {} });
      assert.deepEqual(await outbox(u.id), []);
      assert.equal(await tg.gw.store.db.selectFrom('notification_outbox').select('id').where('state', '=', 'pending').execute().then((r) => r.length), 0);
      // A lockout of a real account is notified (suspicious attempts): here, guessing the
      // current password on the change form (no sign-in delays to wait out).
      const s = await signIn(tg, 'otto', PASSWORD);
      for (let i = 0; i < tg.gw.config.login.maxFailures; i++) {
        const res = await tg.http().post('/v1/me/password').set('Cookie', s.cookie).set('X-CSRF-Token', s.csrf).send({ current_password: 'wrong password 123', new_password: NEW_PASSWORD });
        assert.equal(res.status, 401);
      }
      assert.deepEqual((await outbox(u.id)).map((r) => r.type), ['login.locked']);
    });

    it('retries a refused or unreachable delivery with back-off, and gives up after maxAttempts', async () => {
      await drain();
      const u = await makeUser(tg.gw, 'pia');
      await tg.gw.audit.append(tg.gw.store.db, { type: 'factor.removed', actor: u.id, subject: u.id, data: { factorId: 'fac_y', type: 'sms_otp' } });
      status = 503;
      assert.deepEqual(await deliverDueNotifications(tg.gw), { delivered: 0, retried: 1, failed: 0 });
      let [row] = await outbox(u.id);
      assert.equal(row!.attempts, 1);
      assert.equal(row!.last_error, 'HTTP 503');
      assert.equal(Number(row!.next_attempt_at), tg.clock.now().getTime() + retryDelayMs(1));
      assert.equal(row!.claim, null);
      // Not due yet: nothing is sent.
      assert.deepEqual(await deliverDueNotifications(tg.gw), { delivered: 0, retried: 0, failed: 0 });
      assert.equal(hook.requests.length, 1);
      tg.clock.advance(retryDelayMs(1) / 1000);
      assert.deepEqual(await deliverDueNotifications(tg.gw), { delivered: 0, retried: 1, failed: 0 });
      [row] = await outbox(u.id);
      assert.equal(Number(row!.next_attempt_at), tg.clock.now().getTime() + retryDelayMs(2));
      assert.equal(retryDelayMs(2), 2 * retryDelayMs(1));
      tg.clock.advance(retryDelayMs(2) / 1000);
      assert.deepEqual(await deliverDueNotifications(tg.gw), { delivered: 0, retried: 0, failed: 1 });
      [row] = await outbox(u.id);
      assert.equal(row!.state, 'failed');
      assert.equal(row!.attempts, 3);
      assert.match(tg.logs.text, /security notification given up/);
      assert.ok(!tg.logs.text.includes(SECRET), 'the secret is never logged');
      status = 200;
      tg.clock.advance(3600);
      assert.deepEqual(await deliverDueNotifications(tg.gw), { delivered: 0, retried: 0, failed: 0 }, 'a failed notification stays failed');
      assert.equal(retryDelayMs(40), 3_600_000, 'at most an hour between attempts');

      // The operator sees it, fixes the webhook and queues it again from the CLI.
      const env = cliEnv(tg, { STEPGATE_NOTIFICATIONS_WEBHOOK_URL: hook.url, STEPGATE_NOTIFICATIONS_WEBHOOK_SECRET: SECRET });
      const listed = await runCli(['notifications', 'list', '--state', 'failed', '--json'], env);
      assert.equal(listed.status, 0, listed.stderr);
      const failed = (JSON.parse(listed.stdout) as { id: string; type: string; attempts: number; last_error: string }[]).find((n) => n.id === row!.id);
      assert.deepEqual(failed && { type: failed.type, attempts: failed.attempts, last_error: failed.last_error }, { type: 'factor.removed', attempts: 3, last_error: 'HTTP 503' });
      assert.equal((await runCli(['notifications', 'retry'], env)).status, 2, 'retry needs --all-failed or --id');
      assert.equal((await runCli(['notifications', 'retry', '--id', 'x; drop table'], env)).status, 2);
      const retried = await runCli(['notifications', 'retry', '--id', row!.id], env);
      assert.equal(retried.status, 0, retried.stderr);
      assert.match(retried.stdout, /1 notification queued again/);
      [row] = await outbox(u.id);
      assert.deepEqual([row!.state, row!.attempts], ['pending', 0]);
      assert.ok((await tg.gw.store.db.selectFrom('audit_log').select('type').where('type', '=', 'notifications.requeued').execute()).length >= 1, 'audited');
      assert.deepEqual(await deliverDueNotifications(tg.gw), { delivered: 1, retried: 0, failed: 0 });
    });

    it('an unreachable webhook is a failed attempt, not an error', async () => {
      const dead = await fakeHttpServer(() => ({ status: 200 }));
      const deadUrl = dead.url;
      await dead.close();
      const other = await createTestGateway({ database: tg.database, clock: tg.clock, config: { notifications: { webhook: { url: deadUrl, secret: SECRET, timeoutSeconds: 1 }, maxAttempts: 3 } } });
      try {
        await drain();
        const u = await makeUser(other.gw, 'quinn');
        await other.gw.audit.append(other.gw.store.db, { type: 'user.factors_reset', actor: 'usr_helpdesk', subject: u.id, data: {} });
        assert.deepEqual(await deliverDueNotifications(other.gw), { delivered: 0, retried: 1, failed: 0 });
        assert.equal((await outbox(u.id))[0]!.last_error, 'network');
        // Not for the other tests' webhook.
        await tg.gw.store.db.deleteFrom('notification_outbox').where('user_id', '=', u.id).execute();
      } finally {
        await other.close();
      }
    });

    it('two gateway processes on one database deliver each notification exactly once', async () => {
      await drain();
      const second = await createTestGateway({ database: tg.database, clock: tg.clock, config: { notifications: { webhook: { url: `${hook.url}/stepgate-events`, secret: SECRET, timeoutSeconds: 2 } } } });
      try {
        const u = await makeUser(tg.gw, 'rosa');
        for (let i = 0; i < 12; i++) await tg.gw.audit.append(tg.gw.store.db, { type: 'factor.enrolled', actor: u.id, subject: u.id, data: { n: i } });
        const rounds = await Promise.all([deliverDueNotifications(tg.gw, 12), deliverDueNotifications(second.gw, 12), deliverDueNotifications(tg.gw, 12), deliverDueNotifications(second.gw, 12)]);
        assert.equal(rounds.reduce((n, r) => n + r.delivered, 0), 12);
        const ids = hook.requests.map((r) => (JSON.parse(r.body) as { id: string }).id);
        assert.equal(ids.length, 12, 'no notification sent twice');
        assert.equal(new Set(ids).size, 12);
        assert.deepEqual([...new Set((await outbox(u.id)).map((r) => r.state))], ['delivered']);
      } finally {
        await second.close();
      }
    });

    it('a claim keeps other processes off a row until it lapses (a process died mid-delivery)', async () => {
      await drain();
      const u = await makeUser(tg.gw, 'sven');
      await tg.gw.audit.append(tg.gw.store.db, { type: 'hardware_token.assigned', actor: u.id, subject: u.id, data: { serial: 'X1' } });
      const nowMs = tg.clock.now().getTime();
      await tg.gw.store.db.updateTable('notification_outbox').set({ claim: 'another-process', claimed_until: nowMs + 30_000 }).where('user_id', '=', u.id).execute();
      assert.deepEqual(await deliverDueNotifications(tg.gw), { delivered: 0, retried: 0, failed: 0 });
      tg.clock.advance(31);
      assert.deepEqual(await deliverDueNotifications(tg.gw), { delivered: 1, retried: 0, failed: 0 });
      assert.equal(hook.requests.length, 1);
    });

    it('every gateway process runs the delivery loop: a queued event arrives without anyone asking', async () => {
      await drain();
      const u = await makeUser(tg.gw, 'ulla');
      const stop = startNotificationDelivery(tg.gw);
      try {
        await tg.gw.audit.append(tg.gw.store.db, { type: 'factor.flagged', actor: null, subject: u.id, data: { factorId: 'fac_z', reason: 'sign_count_regressed' } });
        const deadline = Date.now() + 10_000;
        while (hook.requests.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        assert.equal(hook.requests.length, 1, 'delivered by the loop (notifications.pollSeconds)');
        assert.equal((JSON.parse(hook.requests[0]!.body) as { type: string }).type, 'factor.flagged');
      } finally {
        await stop();
      }
    });

    it('without a webhook nothing is queued; a webhook needs a long secret, and https in production', async () => {
      const off = await createTestGateway({ database: tg.database, clock: tg.clock });
      try {
        const u = await makeUser(off.gw, 'tilda');
        await off.gw.audit.append(off.gw.store.db, { type: 'user.password_changed', actor: u.id, subject: u.id, data: {} });
        assert.deepEqual(await outbox(u.id), []);
      } finally {
        await off.close();
      }
      assert.throws(() => loadConfig({ env: {}, overrides: { notifications: { webhook: { url: 'https://hooks.example/stepgate', secret: 'short' } } } }), /notifications\.webhook\.secret/);
      assert.throws(
        () => loadConfig({ env: { STEPGATE_MODE: 'production', STEPGATE_MASTER_KEY: Buffer.alloc(32, 1).toString('base64'), STEPGATE_PUBLIC_URL: 'https://mfa.example', STEPGATE_NOTIFICATIONS_WEBHOOK_URL: 'http://hooks.example/stepgate', STEPGATE_NOTIFICATIONS_WEBHOOK_SECRET: SECRET } }),
        /notifications\.webhook\.url/,
      );
      assert.throws(() => loadConfig({ env: {}, overrides: { notifications: { events: ['not an event'] } } }), /notifications\.events/);
    });
  });
}
