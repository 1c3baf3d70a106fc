import assert from 'node:assert/strict';
import type { Response } from 'supertest';
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
