import { createHmac } from 'node:crypto';
import type { PublicKeyCredentialCreationOptionsJSON, PublicKeyCredentialRequestOptionsJSON } from '@simplewebauthn/server';
import { constantTimeEqual } from '../crypto/constant-time.ts';
import { hashToken } from '../crypto/ids.ts';
import { AppError } from '../errors/app-error.ts';
import type { LiveChallenge } from '../factors/factor.ts';
import {
  assertionCredentialId,
  authenticationOptions,
  newChallenge,
  paramsFromNewCredential,
  parseCredentialParams,
  pendingParamsSchema,
  registrationOptions,
  userHandleOf,
  verifyRegistration,
  type WebAuthnChange,
  type WebAuthnServices,
  webauthnServicesFor,
} from '../factors/webauthn/index.ts';
import type { Gateway } from '../gateway.ts';
import type { AcrFacts } from '../policy/acr.ts';
import { insertOnce } from '../store/primitives.ts';
import * as sessionsRepo from '../store/sessions-repository.ts';
import * as usersRepo from '../store/users-repository.ts';
import { activatePendingFactor, checkLabel, type FactorView, insertPendingFactor, pendingFactor, toFactorView } from './factors.ts';
import { type LoginContext, type LoginResult, signInDevice } from './login.ts';
import { recogniseDevice } from './known-devices.ts';
import { createSessionIn } from './sessions.ts';
import { passkeyThrottleKey, toUserView, type AuditActor } from './users.ts';
import { applySuccess } from './verify-stepup-factor.ts';

/**
 * WebAuthn use cases outside the step-up flow: enrolment from "my security" (register a
 * credential: options, then the authenticator's answer) and passkey sign-in on /login.
 * Both run the same checks as step-up (ceremony.ts), and write counters and flags with
 * the same guarded updates.
 */

export function webauthnServices(gw: Gateway): WebAuthnServices {
  return webauthnServicesFor(gw.config);
}

function requireAvailable(s: WebAuthnServices): void {
  if (s.settings.unavailable !== undefined) {
    throw new AppError('service_unavailable', { detail: 'WebAuthn is not configured on this gateway (set webauthn.rpId and webauthn.origins, or an https public URL).' });
  }
}

/** Whether /login offers passkey sign-in (configured on, and WebAuthn usable on this public URL). */
export function passkeyLoginOffered(gw: Gateway): boolean {
  return gw.config.webauthn.passkeyLogin && webauthnServices(gw).settings.unavailable === undefined;
}

/** How long a registration or sign-in challenge is accepted: the browser's timeout plus the round trip. */
function ceremonySeconds(s: WebAuthnServices): number {
  return s.settings.timeoutSeconds + 30;
}

// ---- policy facts --------------------------------------------------------------------------

/**
 * What the user's credentials can prove, for the policy engine: aal3 alternatives are only
 * offered to a user who holds at least one usable device-bound credential (otherwise the
 * step-up would be offered and could never complete).
 */
export async function webauthnAcrFacts(gw: Gateway, userId: string): Promise<AcrFacts> {
  const rows = await gw.store.db.selectFrom('factors').select(['params']).where('user_id', '=', userId).where('type', '=', 'webauthn').where('status', '=', 'active').execute();
  const refuseFlagged = gw.config.webauthn.counterRegression === 'refuse';
  const deviceBound = rows.some((r) => {
    const p = parseCredentialParams(JSON.parse(r.params) as Record<string, unknown>);
    return p !== undefined && !p.backupEligible && !(refuseFlagged && p.flaggedAt !== undefined);
  });
  return { webauthnUserVerified: true, webauthnDeviceBound: deviceBound };
}

// ---- enrolment -----------------------------------------------------------------------------

export interface RegistrationStart {
  factorId: string;
  options: PublicKeyCredentialCreationOptionsJSON;
  expiresInSeconds: number;
}

/**
 * Starts registering a credential: a pending factor row holding the challenge (public data;
 * replaced if the user starts again), and creation options that exclude the user's
 * registered credentials.
 */
export async function beginWebAuthnRegistration(gw: Gateway, user: { id: string; username: string; displayName: string }, label: string, who: AuditActor): Promise<RegistrationStart> {
  const services = webauthnServices(gw);
  requireAvailable(services);
  const clean = checkLabel(label);
  const challenge = newChallenge();
  const { factorId, exclude } = await gw.store.db.transaction().execute(async (tx) => {
    const existing = await tx.selectFrom('factors').select(['params']).where('user_id', '=', user.id).where('type', '=', 'webauthn').where('status', '=', 'active').execute();
    const id = await insertPendingFactor(gw, tx, { userId: user.id, type: 'webauthn', label: clean, params: { challenge } });
    await gw.audit.append(tx, { type: 'factor.enrolment_started', actor: who.actor, subject: user.id, ip: who.ip ?? null, requestId: who.requestId ?? null, data: { factorId: id, factorType: 'webauthn' } });
    return {
      factorId: id,
      exclude: existing.flatMap((r) => {
        const p = parseCredentialParams(JSON.parse(r.params) as Record<string, unknown>);
        return p === undefined ? [] : [{ credentialId: p.credentialId, transports: p.transports }];
      }),
    };
  });
  const options = await registrationOptions(services.settings, { userHandle: userHandleOf(user.id), userName: user.username, userDisplayName: user.displayName, challenge, exclude });
  return { factorId, options, expiresInSeconds: ceremonySeconds(services) };
}

/**
 * Finishes a registration: verifies the authenticator's answer against the pending
 * challenge, then — in one transaction — claims the credential id (unique across users)
 * and moves the factor pending → active (once). A refused answer ends the enrolment (the
 * challenge is single-use); the user starts again.
 */
export async function finishWebAuthnRegistration(gw: Gateway, userId: string, factorId: string, response: unknown, label: string | undefined, who: AuditActor): Promise<FactorView> {
  const services = webauthnServices(gw);
  requireAvailable(services);
  const clean = label === undefined ? undefined : checkLabel(label);
  const nowMs = gw.clock.now().getTime();
  const row = await pendingFactor(gw, gw.store.db, userId, factorId, 'webauthn');
  const pending = pendingParamsSchema.safeParse(JSON.parse(row.params));
  const fresh = row.created_at > nowMs - ceremonySeconds(services) * 1000;
  const audit = { actor: who.actor, subject: userId, ip: who.ip ?? null, requestId: who.requestId ?? null };

  const refuse = async (reason: string, error: AppError): Promise<never> => {
    await gw.store.db.transaction().execute(async (tx) => {
      const gone = await tx.deleteFrom('factors').where('id', '=', row.id).where('status', '=', 'pending').executeTakeFirst();
      if (Number(gone.numDeletedRows) === 1) await gw.audit.append(tx, { ...audit, type: 'factor.enrolment_failed', data: { factorId, factorType: 'webauthn', reason } });
    });
    throw error;
  };
  if (!pending.success || !fresh) return refuse('expired', new AppError('not_found', { detail: 'The registration expired: start again.' }));

  const outcome = await verifyRegistration(services.settings, { response, expectedChallenge: pending.data.challenge });
  if (!outcome.ok) {
    return refuse(outcome.reason, new AppError('registration_refused', { invalidParams: [{ pointer: '/credential', reason: 'the authenticator response was not accepted (start again)' }] }));
  }
  const credential = outcome.credential;
  const params = paramsFromNewCredential(credential);
  const activated = await gw.store.db.transaction().execute(async (tx) => {
    // Concurrent finishes of one registration also collide on webauthn_credentials.factor_id
    // (unique), which ON CONFLICT (credential_id) does not arbitrate on PostgreSQL: the loser
    // gets a unique violation, the same outcome as a claimed credential (caught below).
    const claimed = await insertOnce(tx, { table: 'webauthn_credentials', values: { credential_id: credential.credentialId, factor_id: row.id, user_id: userId, created_at: nowMs }, conflict: ['credential_id'] });
    if (!claimed) return 'exists' as const;
    const ok = await activatePendingFactor(gw, tx, userId, row.id, { params: { ...params }, counter: credential.counter, ...(clean === undefined ? {} : { label: clean }) }, who);
    if (!ok) throw new AppError('not_found', { detail: 'No such enrolment in progress (it may have been finished already).' });
    return 'ok' as const;
  }).catch((err: unknown) => {
    if (usersRepo.isUniqueViolation(err)) return 'exists' as const;
    throw err;
  });
  if (activated === 'exists') {
    return refuse('credential_exists', new AppError('conflict', { detail: 'This authenticator is already registered.', invalidParams: [{ pointer: '/credential', reason: 'credential already registered' }] }));
  }
  const done = await gw.store.db.selectFrom('factors').selectAll().where('id', '=', row.id).executeTakeFirstOrThrow();
  return toFactorView(done, nowMs);
}

// ---- passkey sign-in -----------------------------------------------------------------------

/**
 * The sign-in challenge is stateless until used: `challenge.issuedMs.mac`, MACed with a key
 * derived from the master key, so anonymous option requests cost no storage. It is
 * consumed exactly once — an insert-once of its hash — before the assertion is checked.
 */
function loginMac(gw: Gateway, body: string): string {
  return createHmac('sha256', gw.sealer.deriveKey('webauthn-login')).update(body, 'utf8').digest('base64url');
}

export interface PasskeyLoginStart {
  loginToken: string;
  options: PublicKeyCredentialRequestOptionsJSON;
}

export async function passkeyLoginOptions(gw: Gateway): Promise<PasskeyLoginStart> {
  const services = webauthnServices(gw);
  requireAvailable(services);
  if (!gw.config.webauthn.passkeyLogin) throw new AppError('not_found', { detail: 'Passkey sign-in is disabled.' });
  const challenge = newChallenge();
  const body = `${challenge}.${gw.clock.now().getTime()}`;
  // No allowCredentials: the authenticator offers the user's discoverable credentials.
  const options = await authenticationOptions(services.settings, { challenge, allow: [] });
  return { loginToken: `${body}.${loginMac(gw, body)}`, options };
}

function openLoginToken(gw: Gateway, token: string, ttlSeconds: number): { challenge: string; issuedMs: number } | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  const [challenge, issued, mac] = parts as [string, string, string];
  if (!/^[A-Za-z0-9_-]{43}$/.test(challenge) || !/^\d{1,15}$/.test(issued)) return undefined;
  if (!constantTimeEqual(mac, loginMac(gw, `${challenge}.${issued}`))) return undefined;
  const age = gw.clock.now().getTime() - Number(issued);
  if (age < -60_000 || age > ttlSeconds * 1000) return undefined;
  return { challenge, issuedMs: Number(issued) };
}

export interface PasskeyLoginInput {
  loginToken: string;
  credential: unknown;
}

/**
 * Passkey sign-in: the challenge is consumed, the credential found by the id the assertion
 * names, its failure counter charged, and only then is the assertion checked — by the
 * step-up factor's own `verify`, so every check (UV, BE/BS, counter, user handle) is the
 * same. Every failure is the same 401 `invalid_credentials`.
 */
export type PasskeyLoginResult = LoginResult & { amr: string[] };

export async function passkeyLogin(gw: Gateway, input: PasskeyLoginInput, ctx: LoginContext = {}): Promise<PasskeyLoginResult> {
  const services = webauthnServices(gw);
  requireAvailable(services);
  if (!gw.config.webauthn.passkeyLogin) throw new AppError('not_found', { detail: 'Passkey sign-in is disabled.' });
  const now = gw.clock.now();
  const nowMs = now.getTime();
  const ttl = ceremonySeconds(services);
  const base = { ip: ctx.ip ?? null, requestId: ctx.requestId ?? null };

  const opened = openLoginToken(gw, input.loginToken, ttl);
  if (opened === undefined) throw new AppError('challenge_required', { detail: 'The sign-in challenge expired: try again.', invalidParams: [{ pointer: '/login_token', reason: 'unknown or expired' }] });
  const consumed = await insertOnce(gw.store.db, {
    table: 'one_time_tokens',
    values: { id_hash: hashToken(`webauthn-login:${opened.challenge}`), purpose: 'webauthn_login', subject: null, created_at: nowMs, expires_at: opened.issuedMs + ttl * 1000, used_at: nowMs },
    conflict: ['id_hash'],
  });
  if (!consumed) throw new AppError('challenge_required', { detail: 'This sign-in challenge was already used: try again.', invalidParams: [{ pointer: '/login_token', reason: 'already used' }] });

  const fail = async (reason: string, subject: string | null, data: Record<string, unknown> = {}): Promise<never> => {
    await gw.audit.append(gw.store.db, { ...base, type: 'login.failed', actor: null, subject, data: { method: 'webauthn', reason, ...data } });
    gw.metrics.logins.inc({ outcome: 'invalid_credentials' });
    throw new AppError('invalid_credentials', { detail: 'The passkey was not accepted.' });
  };

  const credentialId = assertionCredentialId(input.credential);
  if (credentialId === undefined) return fail('malformed', null);
  const found = await gw.store.db
    .selectFrom('webauthn_credentials')
    .innerJoin('factors', 'factors.id', 'webauthn_credentials.factor_id')
    .innerJoin('users', 'users.id', 'webauthn_credentials.user_id')
    .selectAll('factors')
    .select(['users.status as user_status'])
    .where('webauthn_credentials.credential_id', '=', credentialId)
    .where('factors.status', '=', 'active')
    .where('factors.type', '=', 'webauthn')
    .executeTakeFirst();
  if (found === undefined) return fail('unknown_credential', null);
  const { user_status: userStatus, ...row } = found;
  // Charged before the assertion is checked, to a sign-in throttle of this credential's own —
  // not to the factor's failure count, which step-ups charge: this endpoint is anonymous, and
  // a credential id is no secret (every WebAuthn step-up lists it), so anyone could otherwise
  // lock the fingerprint a user approves payments with. A factor that step-ups locked stays
  // refused here too.
  const { maxFailures, lockSeconds } = gw.config.login;
  const throttleKey = passkeyThrottleKey(gw, row.id);
  const factorLocked = Number(row.failures) >= gw.config.factors.maxFailures && (row.locked_until === null || Number(row.locked_until) > nowMs);
  const charge = factorLocked ? undefined : await usersRepo.chargeLoginAttempt(gw.store.db, throttleKey, { nowMs, maxFailures, lockUntilMs: nowMs + lockSeconds * 1000 });
  if (charge === undefined) {
    await gw.audit.append(gw.store.db, { ...base, type: 'login.failed', actor: null, subject: row.user_id, data: { method: 'webauthn', reason: 'locked', factorId: row.id } });
    gw.metrics.logins.inc({ outcome: 'locked' });
    throw new AppError('factor_locked');
  }

  const record = { id: row.id, userId: row.user_id, type: row.type, label: row.label, status: row.status, secretHash: null, secretSealed: null, params: JSON.parse(row.params) as Record<string, unknown>, counter: row.counter };
  const challenge: LiveChallenge = { state: { challenge: opened.challenge, allowed: [credentialId] }, factorId: row.id, createdAt: new Date(opened.issuedMs), expiresAt: new Date(opened.issuedMs + ttl * 1000) };
  const outcome = await services.factor.verify(record, { credential: input.credential }, { now, challenge });
  if (!outcome.ok) {
    const change = outcome.change;
    if (change?.params !== undefined) {
      await gw.store.db.transaction().execute(async (tx) => {
        const written = await tx.updateTable('factors').set({ params: JSON.stringify(change.params), updated_at: nowMs }).where('id', '=', row.id).where('params', '=', row.params).returning('id').executeTakeFirst();
        if (written !== undefined && change.audit !== undefined) await gw.audit.append(tx, { ...base, type: change.audit.type, actor: null, subject: row.user_id, data: { factorId: row.id, ...change.audit.data } });
      });
    }
    return fail(outcome.detail ?? outcome.reason, row.user_id, { factorId: row.id });
  }
  // Checked after the proof so a disabled account answers exactly like a wrong passkey.
  if (userStatus !== 'active') return fail('user_disabled', row.user_id, { factorId: row.id });

  const change: WebAuthnChange | undefined = outcome.change;
  const session = await gw.store.db.transaction().execute(async (tx) => {
    if (!(await applySuccess(tx, row.id, change, nowMs, row.params))) return undefined;
    await usersRepo.clearLoginThrottle(tx, throttleKey);
    if (change?.audit !== undefined) await gw.audit.append(tx, { ...base, type: change.audit.type, actor: null, subject: row.user_id, data: { factorId: row.id, ...change.audit.data } });
    if (ctx.previousSessionId !== undefined && ctx.previousSessionId !== '') await sessionsRepo.deleteSession(tx, hashToken(ctx.previousSessionId));
    await sessionsRepo.deleteExpiredUserSessions(tx, row.user_id, nowMs, nowMs - gw.config.session.idleSeconds * 1000);
    const created = await createSessionIn(gw, tx, row.user_id, [...outcome.amr], { device: { userAgent: ctx.userAgent ?? null, ip: ctx.ip ?? null } });
    await gw.audit.append(tx, { ...base, type: 'login.succeeded', actor: row.user_id, subject: row.user_id, data: { method: 'webauthn', factorId: row.id, amr: [...outcome.amr] } });
    const deviceToken = await recogniseDevice(gw, tx, row.user_id, signInDevice(ctx), 'webauthn');
    return { ...created, deviceToken };
  });
  // The guarded counter update lost: the same assertion was used concurrently.
  if (session === undefined) return fail('replayed', row.user_id, { factorId: row.id });
  const user = await usersRepo.findUserById(gw.store.db, row.user_id);
  if (user === undefined) throw new AppError('invalid_credentials');
  gw.metrics.logins.inc({ outcome: 'success' });
  return { ...session, user: toUserView(user), amr: [...outcome.amr] };
}
