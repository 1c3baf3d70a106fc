import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { AppError } from '../errors/app-error.ts';
import type { Role } from '../flows/users.ts';
import type { Gateway } from '../gateway.ts';
import { type AuthContext, locals } from './request-context.ts';

/** 401 `unauthorized` unless the request carries a live session (`res.locals.auth`). */
export const requireSession: RequestHandler = (_req: Request, res: Response, next: NextFunction): void => {
  if (locals(res).auth === undefined) throw new AppError('unauthorized', { detail: 'Sign in first.' });
  next();
};

/**
 * 401 without a session; 403 `forbidden` unless the user holds at least one of `roles`; 403
 * `second_factor_required` when the staff user has a second factor this session has not
 * proven (a password alone does not run the admin API; see flows/session-confirm.ts). Fails
 * closed.
 */
export function requireRole(...roles: Role[]): RequestHandler {
  if (roles.length === 0) throw new TypeError('requireRole needs at least one role');
  return async (_req: Request, res: Response, next: NextFunction): Promise<void> => {
    const auth = locals(res).auth;
    if (auth === undefined) throw new AppError('unauthorized', { detail: 'Sign in first.' });
    if (!roles.some((r) => auth.roles.includes(r))) throw new AppError('forbidden', { detail: `Requires one of the roles: ${roles.join(', ')}.` });
    if (await auth.needsConfirmation()) throw new AppError('second_factor_required', { detail: 'Confirm with one of your factors first (POST /v1/me/session/confirmation).' });
    next();
  };
}

/** The session of a request behind `requireSession`/`requireRole` (a TypeError if used elsewhere). */
export function authOf(res: Response): AuthContext {
  const auth = locals(res).auth;
  if (auth === undefined) throw new TypeError('authOf used on a route without requireSession');
  return auth;
}

/**
 * Enrolling, removing or re-binding a factor needs a recent sign-in (config
 * `session.freshSeconds`), so a session left open on a shared computer cannot add the
 * attacker's authenticator: 401 `fresh_login_required` otherwise; sign in again to refresh.
 * And once the user has a factor besides the password, the session must have proven one of
 * them: 403 `second_factor_required` otherwise (flows/session-confirm.ts) — a stolen password
 * must not be enough to enrol the thief's own authenticator.
 */
export function requireFreshLogin(gw: Gateway): RequestHandler {
  return async (_req: Request, res: Response, next: NextFunction): Promise<void> => {
    const auth = locals(res).auth;
    if (auth === undefined) throw new AppError('unauthorized', { detail: 'Sign in first.' });
    if (!isFreshLogin(gw, auth)) {
      throw new AppError('fresh_login_required', { detail: `Sign in again (within the last ${gw.config.session.freshSeconds} s) to change your factors.` });
    }
    if (await auth.needsConfirmation()) {
      throw new AppError('second_factor_required', { detail: 'Confirm with one of your factors first (POST /v1/me/session/confirmation), then change your factors.' });
    }
    next();
  };
}

/**
 * Changing the password itself: the current password is asked for by the route, and once the
 * user has a factor besides the password this session must have proven one (403
 * `second_factor_required`) — whoever learned the password must not be able to lock its owner
 * out by changing it.
 */
export const requireConfirmedSession: RequestHandler = async (_req: Request, res: Response, next: NextFunction): Promise<void> => {
  const auth = locals(res).auth;
  if (auth === undefined) throw new AppError('unauthorized', { detail: 'Sign in first.' });
  if (await auth.needsConfirmation()) {
    throw new AppError('second_factor_required', { detail: 'Confirm with one of your factors first (POST /v1/me/session/confirmation).' });
  }
  next();
};

export function isFreshLogin(gw: Gateway, auth: AuthContext): boolean {
  const age = gw.clock.now().getTime() - auth.authTime.getTime();
  return age >= 0 && age <= gw.config.session.freshSeconds * 1000;
}
