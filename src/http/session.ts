import type { NextFunction, Request, Response } from 'express';
import type { Gateway } from '../gateway.ts';

// PLACEHOLDER (owned by the login/session work): loads res.locals.auth from the session cookie.
export function loadSession(_gw: Gateway) {
  return (_req: Request, _res: Response, next: NextFunction): void => {
    next();
  };
}
