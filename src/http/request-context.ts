import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';

/** What the pipeline learns about a request, kept in `res.locals`. */
export interface AuthContext {
  userId: string;
  username: string;
  roles: string[];
  sessionIdHash: string;
  csrfToken: string;
  authTime: Date;
  amr: string[];
  /** What the session was opened from (its User-Agent and address), for the device list. */
  device: { userAgent: string | null; ip: string | null };
  /**
   * Whether the user has factors besides the password that this session has not proven
   * (flows/session-confirm.ts). Looked up on first use, once per request.
   */
  needsConfirmation: () => Promise<boolean>;
}

export interface RequestLocals {
  requestId: string;
  auth?: AuthContext;
  /**
   * Set by the rate-limit middleware on a password sign-in that arrived while every argon2
   * slot was busy: its budgets are charged without the request waiting for them, and the
   * sign-in is refused with 503 `overloaded` without reaching the password check.
   */
  shedSignIn?: true;
}

export function locals(res: Response): RequestLocals {
  return res.locals as RequestLocals;
}

const REQUEST_ID = /^[A-Za-z0-9._-]{8,64}$/;

/** Honour a sane incoming X-Request-Id (from a proxy), otherwise mint one. */
export function requestId(req: Request, res: Response, next: NextFunction): void {
  const incoming = req.get('x-request-id');
  const id = incoming !== undefined && REQUEST_ID.test(incoming) ? incoming : randomUUID();
  locals(res).requestId = id;
  res.setHeader('X-Request-Id', id);
  next();
}
