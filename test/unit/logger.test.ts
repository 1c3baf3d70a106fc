import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { createLogger, isSecretLogKey } from '../../src/logger.ts';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8');
    cb();
  }
}

/** Every secret gets a unique marker so a leak names itself. */
const S = (name: string) => `SECRET-${name}-9f2c`;

describe('log redaction', () => {
  it('censors secret-named values at any depth, in objects, arrays, Maps, child bindings and errors', () => {
    const out = new Capture();
    const logger = createLogger('trace', out);
    logger.info(
      {
        password: S('password'),
        a: { b: { password: S('nested-password'), c: [{ newPassword: S('array-password') }] } },
        body: {
          client_assertion: S('client-assertion'),
          client_secret: S('client-secret'),
          ticket: S('ticket'),
          code: S('code'),
          token: S('token'),
          step_up_token: S('step-up-token'),
          seed: S('seed'),
          secret: S('secret'),
          recoveryCodes: [S('recovery-1'), S('recovery-2')],
          deep: { deeper: { deepest: { otp: S('otp'), 'X-CSRF-Token': S('csrf') } } },
        },
        req: { headers: { authorization: `Basic ${S('basic')}`, cookie: `stepgate_session=${S('cookie')}`, 'user-agent': 'curl/8' } },
        res: { headers: { 'set-cookie': [`stepgate_session=${S('set-cookie')}`] } },
        map: new Map([['masterKey', S('master-key')]]),
        requestId: 'req-visible-1',
        statusCode: 401,
        keyId: 'key-id-visible',
      },
      'a request',
    );
    logger.child({ session: { csrfToken: S('child-binding') } }).warn({ privateKey: S('private-key') }, 'child');
    const err = Object.assign(new Error('boom'), { code: 'ECONNREFUSED', config: { headers: { Authorization: `Bearer ${S('error-header')}` }, password: S('error-password') } });
    logger.error({ err, requestId: 'req-visible-2' }, 'failed');

    const leaked = [...out.text.matchAll(/SECRET-([a-z0-9-]+)-9f2c/g)].map((m) => m[1]);
    assert.deepEqual(leaked, [], `leaked: ${leaked.join(', ')}`);
    const lines = out.text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 3);
    // What is not secret stays readable.
    const first = lines[0] as { requestId: string; statusCode: number; keyId: string; req: { headers: Record<string, string> }; a: { b: { password: string } } };
    assert.equal(first.requestId, 'req-visible-1');
    assert.equal(first.statusCode, 401);
    assert.equal(first.keyId, 'key-id-visible');
    assert.equal(first.req.headers['user-agent'], 'curl/8');
    assert.equal(first.a.b.password, '[redacted]');
    const third = lines[2] as { err: { message: string; code: string; type: string }; requestId: string };
    assert.equal(third.err.message, 'boom');
    assert.equal(third.err.code, 'ECONNREFUSED', "an error's own code stays readable");
    assert.equal(third.requestId, 'req-visible-2');
  });

  it('knows the secret names', () => {
    for (const k of ['password', 'new_password', 'client_secret', 'clientSecret', 'client_assertion', 'ticket', 'code', 'otp', 'token', 'step_up_token', 'seed', 'secret', 'authorization', 'Cookie', 'set-cookie', 'masterKey', 'smsCode', 'recovery_codes']) {
      assert.ok(isSecretLogKey(k), k);
    }
    for (const k of ['requestId', 'statusCode', 'keyId', 'kid', 'userId', 'route', 'method', 'status', 'countryCode', 'factor']) assert.ok(!isSecretLogKey(k), k);
  });

  it('handles cycles and absurd depth without throwing', () => {
    const out = new Capture();
    const logger = createLogger('info', out);
    const cyclic: Record<string, unknown> = { name: 'loop' };
    cyclic.self = cyclic;
    let deep: Record<string, unknown> = { password: S('bottom') };
    for (let i = 0; i < 100; i += 1) deep = { next: deep };
    logger.info({ cyclic, deep }, 'odd shapes');
    assert.doesNotMatch(out.text, /SECRET-/);
    assert.match(out.text, /\[circular\]/);
  });
});
