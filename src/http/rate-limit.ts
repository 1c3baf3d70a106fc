import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';
import { FixedSql } from '../store/fixed-sql.ts';
import { withoutDurabilityWait } from '../store/node-sqlite-dialect.ts';

/**
 * Fixed-window rate limits in the database: one atomic upsert-increment per budget per
 * request, so several gateway processes share the counts. Fails closed: a counter that
 * cannot be written refuses the request (503) rather than letting it through unmetered.
 */

export type RateBucket = 'ip' | 'login_ip' | 'stepup_user_ip' | 'client';

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  retryAfterSeconds: number;
}

const COUNT = new FixedSql<{ count: number }>(
  'insert into "rate_limits" ("key", "count", "expires_at") values (?, 1, ?) on conflict ("key") do update set "count" = "rate_limits"."count" + 1 returning "count"',
);

export async function consumeRate(gw: Gateway, bucket: RateBucket, subject: string, limit: number): Promise<RateDecision> {
  const windowMs = gw.config.rateLimits.windowSeconds * 1000;
  const nowMs = gw.clock.now().getTime();
  const window = Math.floor(nowMs / windowMs);
  const expiresAt = (window + 1) * windowMs;
  // Bounded key size whatever the subject (addresses, client ids are short; be safe).
  const key = `${bucket}:${subject.slice(0, 200)}:${window}`;
  let count: number;
  try {
    // A window's count lost in an OS crash costs nothing (a fresh window at worst), so the
    // request does not wait for the WAL fsync of its counter (SQLite); it is still committed
    // before the request goes on, and counted by every process on the same database.
    const { rows } = await withoutDurabilityWait(() => COUNT.run(gw.store.db, [key, expiresAt]));
    const row = rows[0];
    if (row === undefined) throw new Error('rate-limit upsert returned no row');
    count = Number(row.count);
  } catch (err) {
    gw.logger.error({ err, bucket }, 'rate-limit store unavailable: refusing');
    throw new AppError('service_unavailable', { retryAfterSeconds: 5, detail: 'Try again shortly.' });
  }
  return { allowed: count <= limit, limit, remaining: Math.max(0, limit - count), retryAfterSeconds: Math.max(1, Math.ceil((expiresAt - nowMs) / 1000)) };
}

function enforce(res: Response, d: RateDecision): void {
  res.setHeader('RateLimit-Limit', String(d.limit));
  res.setHeader('RateLimit-Remaining', String(d.remaining));
  res.setHeader('RateLimit-Reset', String(d.retryAfterSeconds));
  if (!d.allowed) throw new AppError('too_many_requests', { retryAfterSeconds: d.retryAfterSeconds, detail: 'Too many requests from here; slow down.' });
}

const UNCOUNTED = new Set(['/healthz', '/readyz', '/metrics']);
// Password sign-in and passkey sign-in (its options and its answer) share the sign-in budget.
const LOGIN = /^\/(v1\/)?login(\/webauthn(\/options)?)?$/;
const STEPUP_PAGE = /^\/stepup\//;
const STEPUP_USER_API = /^\/v1\/stepup\/[^/]+\/(verify|challenge)$/;
const STEPUP_STATUS_API = /^\/v1\/stepup\/[^/]+$/;

/** The user side of step-up (ticket-authorised); the client side is counted per client. */
function isStepUpUserRequest(req: Request): boolean {
  if (STEPUP_PAGE.test(req.path) || STEPUP_USER_API.test(req.path)) return true;
  return req.method === 'GET' && STEPUP_STATUS_API.test(req.path);
}

/** Per-address budgets, before any route runs (so before any password is hashed). */
export function rateLimitByAddress(gw: Gateway): RequestHandler {
  const cfg = gw.config.rateLimits;
  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    if (!cfg.enabled || UNCOUNTED.has(req.path) || req.path.startsWith('/static/')) {
      next();
      return;
    }
    const ip = req.ip ?? 'unknown';
    enforce(res, await consumeRate(gw, 'ip', ip, cfg.perIp));
    if (req.method === 'POST' && LOGIN.test(req.path)) {
      enforce(res, await consumeRate(gw, 'login_ip', ip, cfg.loginPerIp));
    } else if (isStepUpUserRequest(req)) {
      enforce(res, await consumeRate(gw, 'stepup_user_ip', ip, cfg.stepupUserPerIp));
    }
    next();
  };
}

/** Per-client budget, after the client authenticated (a client's many addresses count together). */
export async function rateLimitClient(gw: Gateway, res: Response, clientId: string): Promise<void> {
  if (!gw.config.rateLimits.enabled) return;
  enforce(res, await consumeRate(gw, 'client', clientId, gw.config.rateLimits.perClient));
}
