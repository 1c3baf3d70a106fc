import { setTimeout as sleep } from 'node:timers/promises';
import { hashToken } from '../crypto/ids.ts';
import { AppError, isAppError } from '../errors/app-error.ts';
import type { FactorRecord } from '../factors/factor.ts';
import { overloadedError } from '../factors/password/index.ts';
import type { Gateway } from '../gateway.ts';
import * as sessionsRepo from '../store/sessions-repository.ts';
import * as repo from '../store/users-repository.ts';
import { createSessionIn, type NewSession } from './sessions.ts';
import { recogniseDevice, type SignInDevice } from './known-devices.ts';
import { loginThrottleKey, normaliseUsername, passwordServices, toUserView, type UserView } from './users.ts';

/**
 * Password login. The order is the security argument:
 *  0. take an argon2 slot without waiting, or refuse (503 `overloaded`) having written nothing;
 *  1. charge the attempt to the login name's throttle row (one conditional upsert), or
 *     refuse it without any comparison when the name is locked;
 *  2. look the user up and verify, against a dummy hash when there is no such user or no
 *     password, so both cases cost the same and answer the same;
 *  3. success: clear the throttle, rehash if the parameters changed, rotate the session;
 *     failure: audit, lock if this was the last allowed failure, then delay the answer.
 */

export interface LoginInput {
  username: string;
  password: string;
}

export interface LoginContext {
  ip?: string | null;
  requestId?: string | null;
  /** The User-Agent of the request, kept with the session for the user's device list. */
  userAgent?: string | null;
  /** The device cookie the request carried (src/flows/known-devices.ts). */
  deviceToken?: string | undefined;
  /** The session cookie the request carried, destroyed on success (session id rotation). */
  previousSessionId?: string;
  /**
   * Every argon2 slot was busy when the request arrived, so its rate-limit budgets were
   * charged without waiting (`shedSignIn`, src/http/rate-limit.ts): refuse it as `admit`
   * would, before anything is read, charged or compared.
   */
  shed?: boolean;
}

export interface LoginResult extends NewSession {
  user: UserView;
  /** The device cookie the browser is to keep (src/flows/known-devices.ts). */
  deviceToken: string;
}

/** The delay before answering the failure that brought the count to `failures`. */
export function failureDelaySeconds(gw: Gateway, failures: number): number {
  const { delayAfterFailures, delayBaseSeconds, delayMaxSeconds } = gw.config.login;
  if (failures <= delayAfterFailures || delayBaseSeconds <= 0) return 0;
  const delay = delayBaseSeconds * 2 ** (failures - delayAfterFailures - 1);
  // Never so long that the server's request timeout cuts the answer off.
  return Math.min(delay, delayMaxSeconds, gw.config.http.requestTimeoutSeconds / 2);
}

function toRecord(f: repo.FactorRow | undefined): FactorRecord | undefined {
  if (f === undefined) return undefined;
  return {
    id: f.id,
    userId: f.user_id,
    type: f.type,
    label: '',
    status: f.status,
    secretHash: f.secret_hash,
    secretSealed: null,
    params: {},
    counter: Number(f.counter),
  };
}

async function refuseLocked(gw: Gateway, key: string, username: string, ctx: LoginContext): Promise<never> {
  const db = gw.store.db;
  const nowMs = gw.clock.now().getTime();
  const row = await repo.findLoginThrottle(db, key);
  let lockedUntil = row?.locked_until == null ? null : Number(row.locked_until);
  if (lockedUntil === null) {
    lockedUntil = nowMs + gw.config.login.lockSeconds * 1000;
    await repo.lockIfUnlocked(db, key, lockedUntil);
  }
  const user = await repo.findUserByUsername(db, username);
  await gw.audit.append(db, {
    type: 'login.failed',
    actor: null,
    subject: user?.id ?? null,
    ip: ctx.ip ?? null,
    requestId: ctx.requestId ?? null,
    data: user === undefined ? { reason: 'locked', login_key: key.slice(0, 16) } : { reason: 'locked', username },
  });
  gw.metrics.logins.inc({ outcome: 'locked' });
  const retryAfterSeconds = Math.max(1, Math.ceil((lockedUntil - nowMs) / 1000));
  throw new AppError('too_many_requests', {
    detail: 'Too many failed sign-in attempts for this username. Try again later.',
    retryAfterSeconds,
  });
}

/** What the sign-in knows of the browser, for recogniseDevice. */
export function signInDevice(ctx: LoginContext): SignInDevice {
  return { token: ctx.deviceToken, userAgent: ctx.userAgent ?? null, ip: ctx.ip ?? null, requestId: ctx.requestId ?? null };
}

export async function login(gw: Gateway, input: LoginInput, ctx: LoginContext = {}): Promise<LoginResult> {
  const db = gw.store.db;
  const { maxFailures, lockSeconds } = gw.config.login;
  const username = normaliseUsername(input.username);
  const key = loginThrottleKey(gw, username);
  const now = gw.clock.now();
  const nowMs = now.getTime();

  const { factor, hasher } = passwordServices(gw);
  if (ctx.shed === true) {
    gw.metrics.logins.inc({ outcome: 'overloaded' });
    throw overloadedError();
  }
  // An argon2 slot first: beyond capacity the login is refused (503 overloaded) before
  // anything is charged or written. The slot is held for the charge and the comparison only,
  // not for the failure delay below.
  const admitted = await hasher
    .admit(async () => {
      const charge = await repo.chargeLoginAttempt(db, key, { nowMs, maxFailures, lockUntilMs: nowMs + lockSeconds * 1000 });
      if (charge === undefined) return undefined;
      const found = await repo.findUserWithPassword(db, username);
      const outcome = await factor.verify(toRecord(found?.factor), { password: input.password }, { now });
      return { charge, found, outcome };
    })
    .catch((err: unknown) => {
      if (isAppError(err) && err.code === 'overloaded') gw.metrics.logins.inc({ outcome: 'overloaded' });
      throw err;
    });
  if (admitted === undefined) return refuseLocked(gw, key, username, ctx);
  const { charge, found, outcome } = admitted;
  const user = found?.user;

  if (outcome.ok && user !== undefined && user.status === 'active' && found?.factor !== undefined) {
    const verifiedFactor = found.factor;
    const session = await db.transaction().execute(async (tx) => {
      await repo.clearLoginThrottle(tx, key);
      const doneMs = gw.clock.now().getTime();
      let rehashed = false;
      if (outcome.change !== undefined && verifiedFactor.secret_hash !== null) {
        rehashed = await repo.rehashPassword(tx, verifiedFactor.id, verifiedFactor.secret_hash, outcome.change.secretHash, doneMs);
      } else {
        await repo.markFactorUsed(tx, verifiedFactor.id, doneMs);
      }
      if (ctx.previousSessionId !== undefined && ctx.previousSessionId !== '') {
        await sessionsRepo.deleteSession(tx, hashToken(ctx.previousSessionId));
      }
      await sessionsRepo.deleteExpiredUserSessions(tx, user.id, doneMs, doneMs - gw.config.session.idleSeconds * 1000);
      const created = await createSessionIn(gw, tx, user.id, [...outcome.amr], { device: { userAgent: ctx.userAgent ?? null, ip: ctx.ip ?? null } });
      await gw.audit.append(tx, {
        type: 'login.succeeded',
        actor: user.id,
        subject: user.id,
        ip: ctx.ip ?? null,
        requestId: ctx.requestId ?? null,
        data: { username, amr: [...outcome.amr], rehashed },
      });
      const deviceToken = await recogniseDevice(gw, tx, user.id, signInDevice(ctx), 'password');
      return { ...created, deviceToken };
    });
    gw.metrics.logins.inc({ outcome: 'success' });
    return { ...session, user: toUserView(user) };
  }

  // A failure. The attempt was charged before the comparison; record it, then slow down.
  const reason = user === undefined ? 'unknown_user' : user.status !== 'active' && outcome.ok ? 'user_disabled' : 'invalid_credentials';
  const auditIds = user === undefined ? { login_key: key.slice(0, 16) } : { username };
  await db.transaction().execute(async (tx) => {
    const base = { actor: null, subject: user?.id ?? null, ip: ctx.ip ?? null, requestId: ctx.requestId ?? null };
    await gw.audit.append(tx, { ...base, type: 'login.failed', data: { ...auditIds, reason, failures: charge.failures } });
    if (charge.lockedUntil !== null) {
      await gw.audit.append(tx, {
        ...base,
        type: 'login.locked',
        data: { ...auditIds, failures: charge.failures, lock_seconds: lockSeconds, locked_until: charge.lockedUntil },
      });
    }
  });
  gw.metrics.logins.inc({ outcome: 'invalid_credentials' });
  const delay = failureDelaySeconds(gw, charge.failures);
  if (delay > 0) await sleep(delay * 1000);
  throw new AppError('invalid_credentials', { detail: 'The username or password is incorrect.' });
}
