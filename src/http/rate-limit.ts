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

/**
 * On PostgreSQL the counter's transaction commits with `synchronous_commit = off`, the
 * counterpart of SQLite's `withoutDurabilityWait`: committed and visible to every process at
 * once, but the request does not wait for the WAL flush of its counter (a database crash can
 * forget at most the last fraction of a second of counts: a fresher window, never a
 * corruption). `set_config(…, true)` is local to the statement's own implicit transaction; the
 * CTE is joined so it is evaluated before the commit, and the setting ends with it.
 */
const RELAXED_PG = `with "relaxed" as (select set_config('synchronous_commit', 'off', true))`;
const UPSERT = 'on conflict ("key") do update set "count" = "rate_limits"."count" + 1';

/** Charges `budgets` counters in one statement (one round trip, one commit). */
function countStatement(budgets: number): FixedSql<{ key: string; count: number }> {
  const rows = (row: string) => Array.from({ length: budgets }, () => row).join(', ');
  return new FixedSql(`insert into "rate_limits" ("key", "count", "expires_at") values ${rows('(?, 1, ?)')} ${UPSERT} returning "key", "count"`, {
    postgres: `${RELAXED_PG} insert into "rate_limits" ("key", "count", "expires_at") select "v"."key", 1, "v"."expires_at" from (values ${rows('(?::text, ?::bigint)')}) as "v" ("key", "expires_at") cross join "relaxed" ${UPSERT} returning "key", "count"`,
  });
}

export const COUNT = countStatement(1);
/** Two budgets charged in one statement: the address and its sign-in or step-up budget. */
const COUNT_TWO = countStatement(2);

export interface Charge {
  bucket: RateBucket;
  subject: string;
  limit: number;
}

export async function consumeRate(gw: Gateway, bucket: RateBucket, subject: string, limit: number): Promise<RateDecision> {
  const [decision] = await consumeRates(gw, [{ bucket, subject, limit }]);
  return decision as RateDecision;
}

/** Charges one or two budgets at once; the decisions come back in the order asked. */
export async function consumeRates(gw: Gateway, charges: readonly [Charge] | readonly [Charge, Charge]): Promise<RateDecision[]> {
  const windowMs = gw.config.rateLimits.windowSeconds * 1000;
  const nowMs = gw.clock.now().getTime();
  const window = Math.floor(nowMs / windowMs);
  const expiresAt = (window + 1) * windowMs;
  // Bounded key size whatever the subject (addresses, client ids are short; be safe).
  const keys = charges.map((c) => `${c.bucket}:${c.subject.slice(0, 200)}:${window}`);
  let counts: number[];
  try {
    // A window's count lost in an OS crash costs nothing (a fresh window at worst), so the
    // request does not wait for the WAL fsync of its counter (SQLite: withoutDurabilityWait;
    // PostgreSQL: synchronous_commit off for the counter's own transaction, see COUNT); it is
    // still committed before the request goes on, and counted by every process on the database.
    const { rows } = await withoutDurabilityWait(() => (keys.length === 1 ? COUNT : COUNT_TWO).run(gw.store.db, keys.flatMap((key) => [key, expiresAt])));
    counts = keys.map((key) => {
      // RETURNING does not promise an order: match the rows by key.
      const row = rows.find((r) => r.key === key);
      if (row === undefined) throw new Error('rate-limit upsert returned no row');
      return Number(row.count);
    });
  } catch (err) {
    gw.logger.error({ err, buckets: charges.map((c) => c.bucket) }, 'rate-limit store unavailable: refusing');
    throw new AppError('service_unavailable', { retryAfterSeconds: 5, detail: 'Try again shortly.' });
  }
  const retryAfterSeconds = Math.max(1, Math.ceil((expiresAt - nowMs) / 1000));
  return charges.map((c, i) => {
    const count = counts[i] as number;
    return { allowed: count <= c.limit, limit: c.limit, remaining: Math.max(0, c.limit - count), retryAfterSeconds };
  });
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
    const address: Charge = { bucket: 'ip', subject: ip, limit: cfg.perIp };
    // A sign-in or a user-side step-up call charges its own budget too, in the same statement
    // (one round trip, one commit): both are charged even when the first is already spent,
    // as a refused request counts against every budget it falls under.
    const second: Charge | undefined =
      req.method === 'POST' && LOGIN.test(req.path)
        ? { bucket: 'login_ip', subject: ip, limit: cfg.loginPerIp }
        : isStepUpUserRequest(req)
          ? { bucket: 'stepup_user_ip', subject: ip, limit: cfg.stepupUserPerIp }
          : undefined;
    const decisions = await consumeRates(gw, second === undefined ? [address] : [address, second]);
    for (const d of decisions) enforce(res, d);
    next();
  };
}

/** Per-client budget, after the client authenticated (a client's many addresses count together). */
export async function rateLimitClient(gw: Gateway, res: Response, clientId: string): Promise<void> {
  if (!gw.config.rateLimits.enabled) return;
  enforce(res, await consumeRate(gw, 'client', clientId, gw.config.rateLimits.perClient));
}
