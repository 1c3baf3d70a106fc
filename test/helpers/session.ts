import assert from 'node:assert/strict';
import type { Response } from 'supertest';
import { hashToken } from '../../src/crypto/ids.ts';
import type { TestGateway } from './gateway.ts';

/** The value of a Set-Cookie header's cookie `name`, if set (non-empty). */
export function cookieFrom(res: Response, name = 'stepgate_session'): string | undefined {
  const raw = res.headers['set-cookie'] as unknown;
  const list = Array.isArray(raw) ? (raw as string[]) : [];
  const c = list.find((x) => x.startsWith(`${name}=`));
  const value = c?.split(';')[0]?.slice(name.length + 1);
  return value === undefined || value === '' ? undefined : value;
}

export interface SignedIn {
  /** `Cookie` header value carrying the session. */
  cookie: string;
  csrf: string;
  userId: string;
}

/** Signs in through the JSON API (a fresh login: auth_time = the test clock's now). */
export async function signIn(tg: TestGateway, username: string, password: string): Promise<SignedIn> {
  const res = await tg.http().post('/v1/login').send({ username, password });
  assert.equal(res.status, 200, res.text);
  const sid = cookieFrom(res);
  assert.ok(sid !== undefined, 'session cookie set');
  return { cookie: `stepgate_session=${sid}`, csrf: res.body.csrf_token as string, userId: res.body.user.id as string };
}

/** The value of a hidden form field in an HTML page. */
export function hiddenField(html: string, name: string): string {
  const m = new RegExp(`name="${name}" value="([^"]*)"`).exec(html);
  assert.ok(m, `hidden field ${name} in page`);
  return m[1]!;
}

/**
 * Marks a session as having proven a second factor, as "confirm it's you" does
 * (flows/session-confirm.ts), without going through it: a fixture for tests about something
 * else that change factors of a user who already has one. The confirmation itself is tested
 * end to end in test/integration/session-confirm.test.ts.
 */
export async function confirmForTest(tg: TestGateway, s: SignedIn): Promise<SignedIn> {
  const sid = decodeURIComponent(s.cookie.slice(s.cookie.indexOf('=') + 1).split(';')[0] as string);
  const row = await tg.gw.store.db.selectFrom('sessions').select(['amr']).where('id_hash', '=', hashToken(sid)).executeTakeFirst();
  assert.ok(row !== undefined, 'the session exists');
  const amr = [...new Set([...(JSON.parse(row.amr) as string[]), 'otp', 'mfa'])];
  await tg.gw.store.db.updateTable('sessions').set({ amr: JSON.stringify(amr) }).where('id_hash', '=', hashToken(sid)).execute();
  return s;
}
