import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { AppError } from '../errors/app-error.ts';
import type { Role } from '../flows/users.ts';
import { type AuthContext, locals } from './request-context.ts';

/** 401 `unauthorized` unless the request carries a live session (`res.locals.auth`). */
export const requireSession: RequestHandler = (_req: Request, res: Response, next: NextFunction): void => {
  if (locals(res).auth === undefined) throw new AppError('unauthorized', { detail: 'Sign in first.' });
  next();
};

/** 401 without a session; 403 `forbidden` unless the user holds at least one of `roles`. Fails closed. */
export function requireRole(...roles: Role[]): RequestHandler {
  if (roles.length === 0) throw new TypeError('requireRole needs at least one role');
  return (_req: Request, res: Response, next: NextFunction): void => {
    const auth = locals(res).auth;
    if (auth === undefined) throw new AppError('unauthorized', { detail: 'Sign in first.' });
    if (!roles.some((r) => auth.roles.includes(r))) throw new AppError('forbidden', { detail: `Requires one of the roles: ${roles.join(', ')}.` });
    next();
  };
}

/** The session of a request behind `requireSession`/`requireRole` (a TypeError if used elsewhere). */
export function authOf(res: Response): AuthContext {
  const auth = locals(res).auth;
  if (auth === undefined) throw new TypeError('authOf used on a route without requireSession');
  return auth;
}
