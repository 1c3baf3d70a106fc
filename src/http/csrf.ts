import { createHmac, randomBytes } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import type { Config } from '../config/schema.ts';
import { constantTimeEqual } from '../crypto/constant-time.ts';
import { AppError } from '../errors/app-error.ts';
import type { Gateway } from '../gateway.ts';
import { locals } from './request-context.ts';

/**
 * CSRF protection, two kinds:
 *
 * - With a session: every state-changing request (anything but GET/HEAD/OPTIONS) that
 *   carries a live session must present the session's token, in the `X-CSRF-Token` header
 *   (JSON clients: the `csrf_token` from login or /v1/me) or the `_csrf` field of an
 *   urlencoded form (pages: `res.locals.auth.csrfToken`). Multipart bodies are parsed
 *   later than this check, so they send the header or, from an HTML form, `?_csrf=`.
 * - Before a session exists (the login form): a signed double-submit token. The same value
 *   is in an HttpOnly cookie and in the form's `_login_csrf` field; it is an HMAC (key
 *   derived from the master key) over a nonce and its issue time, so a cookie planted by
 *   someone else is not accepted and an old one expires.
 */

export const CSRF_HEADER = 'x-csrf-token';
export const CSRF_FIELD = '_csrf';
export const LOGIN_CSRF_FIELD = '_login_csrf';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** The token a request presents: header first, then an urlencoded form field. */
export function presentedCsrfToken(req: Request): string | undefined {
  const header = req.get(CSRF_HEADER);
  if (header !== undefined && header !== '') return header;
  if (req.is('application/x-www-form-urlencoded')) {
    const field = (req.body as Record<string, unknown> | undefined)?.[CSRF_FIELD];
    if (typeof field === 'string' && field !== '') return field;
  }
  // A multipart form (the console's file upload) cannot send a header and is parsed only
  // after this check, so its form carries the token in the action URL instead.
  if (req.is('multipart/form-data')) {
    const query = req.query[CSRF_FIELD];
    if (typeof query === 'string' && query !== '') return query;
  }
  return undefined;
}

export function csrfProtection() {
  return (req: Request, res: Response, next: NextFunction): void => {
    const auth = locals(res).auth;
    if (auth === undefined || SAFE_METHODS.has(req.method)) {
      next();
      return;
    }
    const token = presentedCsrfToken(req);
    if (token === undefined || !constantTimeEqual(token, auth.csrfToken)) {
      throw new AppError('csrf_failed', { detail: `Send the session's CSRF token in the X-CSRF-Token header or the ${CSRF_FIELD} form field.` });
    }
    next();
  };
}

// ---- the login form's pre-session double-submit token ----------------------------------

/** How long a login form may sit open before it must be reloaded. */
export const LOGIN_CSRF_MAX_AGE_SECONDS = 2 * 60 * 60;

export function loginCsrfCookieName(config: Config): string {
  return config.mode === 'production' ? '__Host-stepgate_login_csrf' : 'stepgate_login_csrf';
}

function sign(gw: Gateway, body: string): string {
  return createHmac('sha256', gw.sealer.deriveKey('csrf')).update(`login-form:${body}`, 'utf8').digest('base64url');
}

/** Valid when well formed, signed by us and not older than the maximum age. */
export function isValidLoginCsrfToken(gw: Gateway, token: string): boolean {
  const parts = token.split('.');
  if (parts.length !== 3) return false;
  const [nonce, issued, sig] = parts as [string, string, string];
  if (!/^[A-Za-z0-9_-]{22}$/.test(nonce) || !/^\d{1,15}$/.test(issued)) return false;
  if (!constantTimeEqual(sig, sign(gw, `${nonce}.${issued}`))) return false;
  const ageMs = gw.clock.now().getTime() - Number(issued);
  return ageMs >= -60_000 && ageMs <= LOGIN_CSRF_MAX_AGE_SECONDS * 1000;
}

function loginCsrfCookie(req: Request, config: Config): string | undefined {
  const v = (req.cookies as Record<string, unknown> | undefined)?.[loginCsrfCookieName(config)];
  return typeof v === 'string' ? v : undefined;
}

/**
 * The token for a login form being rendered: the browser's current one while it is valid
 * and less than half its age (so several tabs keep working), otherwise a new one, set as
 * the cookie.
 */
export function issueLoginCsrf(gw: Gateway, req: Request, res: Response): string {
  // One token per response: the login form and the page header's language switch share it.
  const issued = (res.locals as { loginCsrf?: string }).loginCsrf;
  if (issued !== undefined) return issued;
  const token = chooseLoginCsrf(gw, req, res);
  (res.locals as { loginCsrf?: string }).loginCsrf = token;
  return token;
}

function chooseLoginCsrf(gw: Gateway, req: Request, res: Response): string {
  const current = loginCsrfCookie(req, gw.config);
  if (current !== undefined && isValidLoginCsrfToken(gw, current)) {
    const issued = Number(current.split('.')[1]);
    if (gw.clock.now().getTime() - issued < (LOGIN_CSRF_MAX_AGE_SECONDS * 1000) / 2) return current;
  }
  const body = `${randomBytes(16).toString('base64url')}.${gw.clock.now().getTime()}`;
  const token = `${body}.${sign(gw, body)}`;
  res.cookie(loginCsrfCookieName(gw.config), token, {
    httpOnly: true,
    sameSite: 'strict',
    path: '/',
    secure: gw.config.mode === 'production',
    maxAge: LOGIN_CSRF_MAX_AGE_SECONDS * 1000,
  });
  return token;
}

/** The login form's check: field and cookie present, equal, and a valid token of ours. */
export function checkLoginCsrf(gw: Gateway, req: Request): boolean {
  const cookie = loginCsrfCookie(req, gw.config);
  const field = (req.body as Record<string, unknown> | undefined)?.[LOGIN_CSRF_FIELD];
  if (cookie === undefined || typeof field !== 'string' || field === '') return false;
  return constantTimeEqual(cookie, field) && isValidLoginCsrfToken(gw, cookie);
}
