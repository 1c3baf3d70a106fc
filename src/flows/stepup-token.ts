import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';
import { issueStepUpToken } from '../stepup/issue-token.ts';
import { achievedAcr, effectiveStatus, type StepUp } from '../stepup/stepup-record.ts';
import { loadClientStepUp, type Who } from './verify-stepup-factor.ts';
import { FixedSql } from '../store/fixed-sql.ts';

/** What one `slow_down` adds to the step-up's polling interval (RFC 8628 §3.5), and the ceiling. */
export const SLOW_DOWN_STEP_SECONDS = 5;
export const MAX_POLL_INTERVAL_SECONDS = 60;

/**
 * The relying service's token endpoint (CIBA-style polling). The token is handed out
 * exactly once: the move `completed → token_issued` is one conditional UPDATE, committed
 * with its audit event. The token is signed just before that transaction, not inside it:
 * signing is asynchronous (WebCrypto, on the libuv pool), and on SQLite an open transaction
 * holds the one connection, so every other request would wait for the signature. A signing
 * failure therefore still leaves the step-up completed, and a concurrent poll that loses the
 * UPDATE throws its signed token away unseen (its jti was never recorded or handed out).
 */
/**
 * The one winner of `completed → token_issued` (fixed SQL: every token request runs it). The
 * user must still be active at that moment: an account disabled after the user completed
 * (fraud lock) yields no token, also when the disable lands between the checks and this write.
 */
const HAND_OUT = new FixedSql<{ id: string }>(
  `update "stepups" set "status" = 'token_issued', "token_issued_at" = ?, "token_jti" = ? where "id" = ? and "status" = 'completed' and "expires_at" > ?` +
    ` and exists (select 1 from "users" where "users"."id" = "stepups"."user_id" and "users"."status" = 'active') returning "id"`,
);
const USER_STATUS = new FixedSql<{ status: string }>('select "status" from "users" where "id" = ?');

export interface IssuedToken {
  stepUpToken: string;
  expiresIn: number;
  stepUp: StepUp;
}

/**
 * The step-up, when it is this client's. Unknown and someone else's answer the same 404
 * `stepup_not_found` — the same body, the same single read (the owner is part of it, so the
 * other client's row is not even loaded), the same log line: whether a step-up id exists,
 * and so that another service's user is being asked to approve something right now, is not
 * another client's business.
 */
export async function loadStepUpForClient(gw: Gateway, id: string, clientId: string): Promise<StepUp> {
  const stepUp = await loadClientStepUp(gw, id, clientId);
  if (stepUp === undefined) {
    gw.logger.info({ stepupId: id, clientId }, 'step-up not found for this client');
    throw new AppError('stepup_not_found');
  }
  return stepUp;
}

async function markExpired(gw: Gateway, stepUp: StepUp, who: Who): Promise<void> {
  await gw.store.db.transaction().execute(async (tx) => {
    const moved = await tx
      .updateTable('stepups')
      .set({ status: 'expired' })
      .where('id', '=', stepUp.id)
      .where('status', 'in', ['pending', 'completed'])
      .returning('id')
      .executeTakeFirst();
    if (moved !== undefined) {
      await gw.audit.append(tx, { type: 'stepup.expired', actor: stepUp.clientId, subject: stepUp.userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { stepupId: stepUp.id } });
    }
  });
}

export async function pollStepUpToken(gw: Gateway, id: string, clientId: string, who: Who): Promise<IssuedToken> {
  const started = process.hrtime.bigint();
  const now = gw.clock.now();
  const nowMs = now.getTime();
  const stepUp = await loadStepUpForClient(gw, id, clientId);
  const status = effectiveStatus(stepUp, now);
  switch (status) {
    case 'expired':
      if (stepUp.status !== 'expired') {
        await markExpired(gw, stepUp, who);
        gw.metrics.stepups.inc({ event: 'expired' });
      }
      throw new AppError('expired_token');
    case 'denied':
    case 'cancelled':
      throw new AppError('access_denied', { detail: `The step-up was ${status}.` });
    case 'token_issued':
      throw new AppError('invalid_grant', { detail: 'The token for this step-up was already handed out.' });
    case 'pending': {
      // `slow_down` when polled faster than the interval; the poll time moves only when
      // the interval was respected, so a fast poller cannot push it ahead forever.
      const minGapMs = stepUp.pollIntervalSeconds * 1000;
      const polled = await gw.store.db
        .updateTable('stepups')
        .set({ last_polled_at: nowMs })
        .where('id', '=', stepUp.id)
        .where((eb) => eb.or([eb('last_polled_at', 'is', null), eb('last_polled_at', '<=', nowMs - minGapMs)]))
        .returning('id')
        .executeTakeFirst();
      if (polled === undefined) {
        // RFC 8628 §3.5 / CIBA §11: after slow_down the interval grows by 5 s for this and every
        // later poll. Enforced here, not left to the client: a poller that ignores it is
        // answered ever more rarely (up to once a minute). A completed step-up's token is still
        // handed out on the next poll, whatever the interval.
        const slowed = await gw.store.db
          .updateTable('stepups')
          .set({ poll_interval_seconds: sql<number>`case when "poll_interval_seconds" + ${sql.lit(SLOW_DOWN_STEP_SECONDS)} > ${sql.lit(MAX_POLL_INTERVAL_SECONDS)} then ${sql.lit(MAX_POLL_INTERVAL_SECONDS)} else "poll_interval_seconds" + ${sql.lit(SLOW_DOWN_STEP_SECONDS)} end` })
          .where('id', '=', stepUp.id)
          .where('status', '=', 'pending')
          .returning('poll_interval_seconds')
          .executeTakeFirst();
        throw new AppError('slow_down', { retryAfterSeconds: Number(slowed?.poll_interval_seconds ?? stepUp.pollIntervalSeconds) });
      }
      throw new AppError('authorization_pending', { retryAfterSeconds: stepUp.pollIntervalSeconds });
    }
    case 'completed':
      break;
  }

  const jti = randomUUID();
  const acr = achievedAcr(stepUp);
  const iat = Math.floor(nowMs / 1000);
  const key = await gw.keys.activeKey();
  const signed = await issueStepUpToken(key, {
    iss: gw.config.http.publicUrl.replace(/\/$/, ''),
    sub: stepUp.userId,
    aud: stepUp.clientId,
    iat,
    exp: iat + stepUp.tokenTtlSeconds,
    jti,
    txn: stepUp.id,
    auth_time: Math.floor((stepUp.authTime?.getTime() ?? nowMs) / 1000),
    acr,
    amr: stepUp.amr,
    authorization_details: [{ ...stepUp.context, type: stepUp.action }],
  });
  const token = await gw.store.db.transaction().execute(async (tx) => {
    const won = await HAND_OUT.first(tx, [nowMs, jti, stepUp.id, nowMs]);
    if (won === undefined) return undefined;
    await gw.audit.append(tx, {
      type: 'stepup.token_issued',
      actor: stepUp.clientId,
      subject: stepUp.userId,
      ip: who.ip ?? null,
      requestId: who.requestId ?? null,
      // The jti identifies the token for investigations; the token itself is never stored or logged.
      data: { stepupId: stepUp.id, jti, acr, expiresIn: stepUp.tokenTtlSeconds },
    });
    return signed;
  });
  if (token === undefined) {
    const user = await USER_STATUS.first(gw.store.db, [stepUp.userId]);
    if (user?.status !== 'active') {
      await denyForDisabledUser(gw, stepUp, who);
      throw new AppError('access_denied', { detail: 'The user\'s account is disabled.' });
    }
    throw new AppError('invalid_grant', { detail: 'The token for this step-up was already handed out.' });
  }
  gw.metrics.stepups.inc({ event: 'token_issued' });
  gw.metrics.tokenIssueDuration.observe(Number(process.hrtime.bigint() - started) / 1e9);
  return { stepUpToken: token, expiresIn: stepUp.tokenTtlSeconds, stepUp: { ...stepUp, status: 'token_issued' } };
}

/** Ends a completed step-up whose user was disabled before the token was collected (guarded, audited once). */
async function denyForDisabledUser(gw: Gateway, stepUp: StepUp, who: Who): Promise<void> {
  const denied = await gw.store.db.transaction().execute(async (tx) => {
    const moved = await tx.updateTable('stepups').set({ status: 'denied' }).where('id', '=', stepUp.id).where('status', '=', 'completed').returning('id').executeTakeFirst();
    if (moved === undefined) return false;
    await gw.audit.append(tx, { type: 'stepup.denied', actor: stepUp.clientId, subject: stepUp.userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { stepupId: stepUp.id, reason: 'user_disabled' } });
    return true;
  });
  if (denied) gw.metrics.stepups.inc({ event: 'denied' });
}

export async function cancelStepUp(gw: Gateway, id: string, clientId: string, who: Who): Promise<void> {
  const stepUp = await loadStepUpForClient(gw, id, clientId);
  const nowMs = gw.clock.now().getTime();
  if (effectiveStatus(stepUp, gw.clock.now()) === 'expired') {
    // Already over: it expired, it was not cancelled (and the log says so).
    if (stepUp.status !== 'expired') {
      await markExpired(gw, stepUp, who);
      gw.metrics.stepups.inc({ event: 'expired' });
    }
    throw new AppError('stepup_expired');
  }
  await gw.store.db.transaction().execute(async (tx) => {
    const moved = await tx
      .updateTable('stepups')
      .set({ status: 'cancelled' })
      .where('id', '=', stepUp.id)
      .where('status', 'in', ['pending', 'completed'])
      .where('expires_at', '>', nowMs)
      .returning('id')
      .executeTakeFirst();
    if (moved === undefined) throw new AppError('stepup_not_pending', { detail: `The step-up is ${stepUp.status}.` });
    await gw.audit.append(tx, { type: 'stepup.cancelled', actor: clientId, subject: stepUp.userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { stepupId: stepUp.id } });
  });
  gw.metrics.stepups.inc({ event: 'cancelled' });
}

/**
 * The user refuses the request ("I did not start this payment"): the client gets access_denied.
 * False when it was no longer pending (completed meanwhile, say from the app): nothing changed.
 */
export async function denyStepUpByUser(gw: Gateway, stepUp: StepUp, who: Who): Promise<boolean> {
  const denied = await gw.store.db.transaction().execute(async (tx) => {
    const moved = await tx
      .updateTable('stepups')
      .set({ status: 'denied' })
      .where('id', '=', stepUp.id)
      .where('status', '=', 'pending')
      .where('expires_at', '>', gw.clock.now().getTime())
      .returning('id')
      .executeTakeFirst();
    if (moved === undefined) return false;
    await gw.audit.append(tx, { type: 'stepup.denied', actor: stepUp.userId, subject: stepUp.userId, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { stepupId: stepUp.id, reason: 'user_refused' } });
    return true;
  });
  if (denied) gw.metrics.stepups.inc({ event: 'denied' });
  return denied;
}
