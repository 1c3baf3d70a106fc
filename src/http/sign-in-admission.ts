import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { overloadedError } from '../factors/password/index.ts';
import { passwordServices } from '../flows/users.ts';
import type { Gateway } from '../gateway.ts';

/**
 * `POST /v1/login` while every argon2 slot is busy is refused here, before the per-address
 * rate-limit counters (database writes: two round trips and commits on PostgreSQL) and before
 * the body is parsed, so a refusal beyond capacity costs microseconds and writes nothing. It
 * is a hint read without taking a slot: a login that passes may still be refused by the
 * hasher's own admission (`PasswordHasher.admit`), which decides; the rate limits still run
 * before every hash.
 */
export function refuseSignInBeyondCapacity(gw: Gateway): RequestHandler {
  const { hasher } = passwordServices(gw);
  return (req: Request, _res: Response, next: NextFunction): void => {
    if (req.method === 'POST' && req.path === '/v1/login' && hasher.saturated) {
      gw.metrics.logins.inc({ outcome: 'overloaded' });
      next(overloadedError());
      return;
    }
    next();
  };
}
