import { needsConfirmation } from '../flows/session-confirm.ts';
import type { CookieOptions, NextFunction, Request, Response } from 'express';
import type { Config } from '../config/schema.ts';
import { resolveSession } from '../flows/sessions.ts';
import { DEVICE_MEMORY_SECONDS } from '../flows/known-devices.ts';
import type { Gateway } from '../gateway.ts';
import { csrfProtection } from './csrf.ts';
import { locals } from './request-context.ts';

/**
 * The session cookie: `HttpOnly`, `SameSite=Lax`, `Path=/`, no Domain; in production
 * `Secure` with the `__Host-` prefix, which browsers only accept under exactly those
 * attributes (so a sibling subdomain cannot plant or shadow it). No Max-Age: it ends with
 * the browser session, and the server's idle/absolute deadlines end it earlier.
 */
export function sessionCookieName(config: Config): string {
  return config.mode === 'production' ? '__Host-stepgate_session' : 'stepgate_session';
}

export function sessionCookieOptions(config: Config): CookieOptions {
  return { httpOnly: true, sameSite: 'lax', path: '/', secure: config.mode === 'production' };
}

/** The session id the request carries, if any. */
export function sessionCookieOf(req: Request, config: Config): string | undefined {
  const cookies = req.cookies as Record<string, unknown> | undefined;
  const v = cookies?.[sessionCookieName(config)];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** The device cookie (src/flows/known-devices.ts): long-lived, HttpOnly; it recognises a browser, it authenticates nothing. */
export function deviceCookieName(config: Config): string {
  return config.mode === 'production' ? '__Host-stepgate_device' : 'stepgate_device';
}

const DEVICE_COOKIE_MAX_AGE_MS = DEVICE_MEMORY_SECONDS * 1000;

export function deviceCookieOf(req: Request, config: Config): string | undefined {
  const v = (req.cookies as Record<string, unknown> | undefined)?.[deviceCookieName(config)];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

export function setDeviceCookie(res: Response, config: Config, token: string): void {
  res.cookie(deviceCookieName(config), token, { ...sessionCookieOptions(config), maxAge: DEVICE_COOKIE_MAX_AGE_MS });
}

export function setSessionCookie(res: Response, config: Config, sessionId: string): void {
  res.cookie(sessionCookieName(config), sessionId, sessionCookieOptions(config));
}

export function clearSessionCookie(res: Response, config: Config): void {
  res.clearCookie(sessionCookieName(config), sessionCookieOptions(config));
}

/** Sets `res.locals.auth` when the request carries a live session cookie. */
async function attachAuth(gw: Gateway, req: Request, res: Response): Promise<void> {
  const sessionId = sessionCookieOf(req, gw.config);
  if (sessionId === undefined) return;
  const s = await resolveSession(gw, sessionId);
  if (s === undefined) {
    // A dead or forged cookie: forget it so the browser stops sending it.
    clearSessionCookie(res, gw.config);
    return;
  }
  let pending: Promise<boolean> | undefined;
  locals(res).auth = {
    userId: s.userId,
    username: s.username,
    roles: s.roles,
    sessionIdHash: s.idHash,
    csrfToken: s.csrfToken,
    authTime: s.authTime,
    amr: s.amr,
    device: s.device,
    needsConfirmation: () => {
      pending ??= needsConfirmation(gw, { userId: s.userId, amr: s.amr, authTime: s.authTime });
      return pending;
    },
  };
}

/**
 * Loads `res.locals.auth` from the session cookie, then enforces CSRF on every
 * state-changing request that carries a live session (before any router runs, so a
 * rejected request changes nothing).
 */
export function loadSession(gw: Gateway) {
  const csrf = csrfProtection();
  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    await attachAuth(gw, req, res);
    csrf(req, res, next);
  };
}
