import { type Request, type Response, Router } from 'express';
import { isAppError } from '../errors/app-error.ts';
import { changeOwnPassword } from '../flows/change-password.ts';
import { CONFIRM_PATH } from '../flows/session-confirm.ts';
import { endOwnSession, endUserSessions, listOwnSessions } from '../flows/user-sessions.ts';
import { passwordServices } from '../flows/users.ts';
import type { Gateway } from '../gateway.ts';
import { isFreshLogin } from './authorize.ts';
import { createViews, localeOf, translator } from './pages-router.ts';
import { type AuthContext, locals } from './request-context.ts';
import { factorChangeDetour } from './session-confirm-router.ts';
import { SECURITY_PATH, reauthUrl } from './security-pages-router.ts';
import { clearSessionCookie, setSessionCookie } from './session.ts';
import { parseUserAgent } from '../flows/user-agent.ts';

/**
 * "My security" for the account itself, as pages (the JSON API has the same operations:
 * POST /v1/me/password, /v1/me/sessions):
 *
 * - `/security/password`: change the password with the current one. The same flow as the API
 *   (src/flows/change-password.ts): the attempt counts towards the sign-in lockout before the
 *   current password is compared; once the user has a second factor the session must have
 *   proven one (a stolen password alone cannot lock the owner out); success ends every session
 *   of the user and gives this browser a new one.
 * - `/security/sessions`: the user's live sessions ("signed-in devices"); ending one, or all the
 *   others, needs a fresh sign-in and, with a second factor, a confirmed session — as removing
 *   a factor does — so a session left open on a shared computer cannot sign its owner out
 *   everywhere else.
 *
 * Every form posts the session's CSRF token (`_csrf`, checked by csrfProtection before any
 * route runs).
 */

export const PASSWORD_PAGE = `${SECURITY_PATH}/password`;
export const SESSIONS_PAGE = `${SECURITY_PATH}/sessions`;

const HANDLE = /^[A-Za-z0-9_-]{22}$/;
/** Longer than any password the policy accepts; longer input is refused before anything else. */
const MAX_FIELD = 1024;

/** The RFC 8176 `amr` values a session can hold, by catalogue key. */
const AMR_KEYS: Readonly<Record<string, string>> = {
  pwd: 'amr.pwd',
  otp: 'amr.otp',
  sms: 'amr.sms',
  hwk: 'amr.hwk',
  swk: 'amr.swk',
  user: 'amr.user',
  pin: 'amr.pin',
  mfa: 'amr.mfa',
};

const SESSION_NOTICES = new Set(['ended', 'othersEnded', 'error']);

function formField(req: Request, name: string): string | undefined {
  const v = (req.body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v : undefined;
}

function minutesOf(seconds: number): number {
  return Math.max(1, Math.ceil(seconds / 60));
}

function deviceLabel(t: (key: string, params?: Record<string, string | number>) => string, userAgent: string | null): string {
  const { browser, system } = parseUserAgent(userAgent);
  if (browser !== undefined && system !== undefined) return t('sessions.device', { browser, system });
  return browser ?? system ?? t('sessions.unknownDevice');
}

function utc(at: Date): string {
  return at.toISOString().slice(0, 16).replace('T', ' ');
}

export function accountPagesRouter(gw: Gateway): Router {
  const router = Router();
  const views = createViews(gw);

  function signIn(res: Response, next: string): void {
    res.redirect(303, `/login?next=${encodeURIComponent(next)}`);
  }

  interface PasswordPage {
    errors?: string[];
    /** The field a refusal is about (focused and marked invalid). */
    invalid?: 'current_password' | 'new_password' | 'new_password_confirm';
  }

  async function renderPassword(req: Request, res: Response, status: number, page: PasswordPage): Promise<void> {
    const auth = locals(res).auth!;
    const { policy } = passwordServices(gw);
    views.render(req, res, status, 'security/password', {
      titleKey: 'password.title',
      csrf: auth.csrfToken,
      confirmNeeded: await auth.needsConfirmation(),
      confirmUrl: CONFIRM_PATH,
      minLength: policy.minLength,
      maxLength: policy.maxLength,
      errors: page.errors ?? [],
      invalid: page.invalid,
    });
  }

  router.get(PASSWORD_PAGE, async (req, res) => {
    if (locals(res).auth === undefined) return signIn(res, PASSWORD_PAGE);
    await renderPassword(req, res, 200, {});
  });

  router.post(PASSWORD_PAGE, async (req, res) => {
    const auth = locals(res).auth;
    if (auth === undefined) return signIn(res, PASSWORD_PAGE);
    const t = translator(localeOf(req));
    const current = formField(req, 'current_password') ?? '';
    const next = formField(req, 'new_password') ?? '';
    const repeat = formField(req, 'new_password_confirm') ?? '';
    // Refusals that compare no secret come first and charge nothing (as the flow's own order).
    if (await auth.needsConfirmation()) {
      res.redirect(303, CONFIRM_PATH);
      return;
    }
    if (current === '' || current.length > MAX_FIELD) {
      await renderPassword(req, res, 400, { errors: [t('password.currentMissing')], invalid: 'current_password' });
      return;
    }
    if (next.length > MAX_FIELD || repeat.length > MAX_FIELD) {
      await renderPassword(req, res, 400, { errors: [t('passwordRule.too_long', { max: passwordServices(gw).policy.maxLength })], invalid: 'new_password' });
      return;
    }
    if (next !== repeat) {
      await renderPassword(req, res, 400, { errors: [t('password.mismatch')], invalid: 'new_password_confirm' });
      return;
    }
    const { policy } = passwordServices(gw);
    const violation = policy.check(next, auth.username);
    if (violation !== undefined) {
      await renderPassword(req, res, 400, { errors: [t(`passwordRule.${violation.rule}`, { min: policy.minLength, max: policy.maxLength })], invalid: 'new_password' });
      return;
    }
    try {
      const session = await changeOwnPassword(gw, auth.userId, { currentPassword: current, newPassword: next }, { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId }, { userAgent: req.get('user-agent') ?? null, ip: req.ip ?? null });
      setSessionCookie(res, gw.config, session.sessionId);
      res.redirect(303, `${SECURITY_PATH}?notice=passwordChanged`);
    } catch (err) {
      if (!isAppError(err) || (err.status >= 500 && err.code !== 'overloaded')) throw err;
      if (err.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(err.retryAfterSeconds));
      switch (err.code) {
        case 'invalid_credentials':
          await renderPassword(req, res, 401, { errors: [t('password.wrongCurrent')], invalid: 'current_password' });
          return;
        case 'too_many_requests':
          await renderPassword(req, res, 429, { errors: [t('password.locked', { minutes: minutesOf(err.retryAfterSeconds ?? gw.config.login.lockSeconds) })] });
          return;
        case 'overloaded':
          await renderPassword(req, res, 503, { errors: [t('password.busy')] });
          return;
        case 'conflict':
          await renderPassword(req, res, 409, { errors: [t('password.conflict')] });
          return;
        case 'password_policy':
          await renderPassword(req, res, 400, { errors: [t('passwordRule.malformed')], invalid: 'new_password' });
          return;
        case 'unauthorized':
          signIn(res, PASSWORD_PAGE);
          return;
        default:
          throw err;
      }
    }
  });

  router.get(SESSIONS_PAGE, async (req, res) => {
    const auth = locals(res).auth;
    if (auth === undefined) return signIn(res, SESSIONS_PAGE);
    const t = translator(localeOf(req));
    const sessions = await listOwnSessions(gw, auth.userId, auth.sessionIdHash);
    const fresh = isFreshLogin(gw, auth);
    const confirmNeeded = fresh && (await auth.needsConfirmation());
    const notice = typeof req.query.notice === 'string' && SESSION_NOTICES.has(req.query.notice) ? req.query.notice : undefined;
    const count = typeof req.query.count === 'string' && /^\d{1,6}$/.test(req.query.count) ? Number(req.query.count) : 0;
    views.render(req, res, 200, 'security/sessions', {
      titleKey: 'sessions.title',
      csrf: auth.csrfToken,
      canEnd: fresh && !confirmNeeded,
      confirmNeeded,
      reauthUrl: confirmNeeded ? CONFIRM_PATH : reauthUrl(SESSIONS_PAGE),
      freshMinutes: minutesOf(gw.config.session.freshSeconds),
      notice,
      count,
      sessions: sessions.map((s) => ({
        handle: s.handle,
        current: s.current,
        createdAt: utc(s.createdAt),
        lastSeenAt: utc(s.lastSeenAt),
        expiresAt: utc(s.expiresAt),
        device: deviceLabel(t, s.userAgent),
        ip: s.ip,
        proven: s.amr.filter((a) => a !== 'mfa').map((a) => (AMR_KEYS[a] === undefined ? a : t(AMR_KEYS[a]))).join(', '),
      })),
      others: sessions.filter((s) => !s.current).length,
    });
  });

  /**
   * The session, when it may end devices now: signed in, freshly, and with a second factor
   * confirmed (as for changing factors). Otherwise the answer is a redirect to what is missing.
   */
  async function mayEndDevices(res: Response): Promise<AuthContext | undefined> {
    const auth = locals(res).auth;
    if (auth === undefined) {
      signIn(res, SESSIONS_PAGE);
      return undefined;
    }
    const detour = await factorChangeDetour(gw, auth, SESSIONS_PAGE);
    if (detour === undefined) return auth;
    res.redirect(303, detour);
    return undefined;
  }

  router.post(`${SESSIONS_PAGE}/:handle/end`, async (req, res) => {
    const auth = await mayEndDevices(res);
    if (auth === undefined) return;
    const handle = String(req.params.handle);
    if (!HANDLE.test(handle)) {
      res.redirect(303, `${SESSIONS_PAGE}?notice=error`);
      return;
    }
    try {
      const { current } = await endOwnSession(gw, auth.userId, auth.sessionIdHash, handle, { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId });
      if (current) {
        clearSessionCookie(res, gw.config);
        res.redirect(303, '/login');
        return;
      }
      res.redirect(303, `${SESSIONS_PAGE}?notice=ended`);
    } catch (err) {
      if (isAppError(err) && err.code === 'not_found') {
        res.redirect(303, `${SESSIONS_PAGE}?notice=error`);
        return;
      }
      throw err;
    }
  });

  router.post(`${SESSIONS_PAGE}/end-others`, async (req, res) => {
    const auth = await mayEndDevices(res);
    if (auth === undefined) return;
    const ended = await endUserSessions(gw, auth.userId, auth.sessionIdHash, { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId }, { by: 'self' });
    res.redirect(303, `${SESSIONS_PAGE}?notice=othersEnded&count=${ended}`);
  });

  return router;
}

