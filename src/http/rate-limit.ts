import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';
import { passwordServices } from '../flows/users.ts';
import { locals } from './request-context.ts';
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

interface Window {
  keys: string[];
  nowMs: number;
  expiresAt: number;
}

/** The counter rows of `charges` in the current fixed window. */
function windowOf(gw: Gateway, charges: readonly Charge[]): Window {
  const windowMs = gw.config.rateLimits.windowSeconds * 1000;
  const nowMs = gw.clock.now().getTime();
  const window = Math.floor(nowMs / windowMs);
  // Bounded key size whatever the subject (addresses, client ids are short; be safe).
  const keys = charges.map((c) => `${c.bucket}:${c.subject.slice(0, 200)}:${window}`);
  return { keys, nowMs, expiresAt: (window + 1) * windowMs };
}

function decisionsOf(charges: readonly Charge[], counts: readonly number[], w: Window): RateDecision[] {
  const retryAfterSeconds = Math.max(1, Math.ceil((w.expiresAt - w.nowMs) / 1000));
  return charges.map((c, i) => {
    const count = counts[i] as number;
    return { allowed: count <= c.limit, limit: c.limit, remaining: Math.max(0, c.limit - count), retryAfterSeconds };
  });
}

/** Charges one or two budgets at once; the decisions come back in the order asked. */
export async function consumeRates(gw: Gateway, charges: readonly [Charge] | readonly [Charge, Charge]): Promise<RateDecision[]> {
  const w = windowOf(gw, charges);
  let counts: number[];
  try {
    // A window's count lost in an OS crash costs nothing (a fresh window at worst), so the
    // request does not wait for the WAL fsync of its counter (SQLite: withoutDurabilityWait;
    // PostgreSQL: synchronous_commit off for the counter's own transaction, see COUNT); it is
    // still committed before the request goes on, and counted by every process on the database.
    const { rows } = await withoutDurabilityWait(() => (w.keys.length === 1 ? COUNT : COUNT_TWO).run(gw.store.db, w.keys.flatMap((key) => [key, w.expiresAt])));
    counts = w.keys.map((key) => {
      // RETURNING does not promise an order: match the rows by key.
      const row = rows.find((r) => r.key === key);
      if (row === undefined) throw new Error('rate-limit upsert returned no row');
      return Number(row.count);
    });
  } catch (err) {
    gw.logger.error({ err, buckets: charges.map((c) => c.bucket) }, 'rate-limit store unavailable: refusing');
    throw new AppError('service_unavailable', { retryAfterSeconds: 5, detail: 'Try again shortly.' });
  }
  const decisions = decisionsOf(charges, counts, w);
  // A spent address or sign-in budget (no request left in its window) is remembered, so a
  // sign-in shed later in the window is answered 429, as its counter would answer.
  decisions.forEach((d, i) => {
    const bucket = (charges[i] as Charge).bucket;
    if (d.remaining === 0 && (bucket === 'ip' || bucket === 'login_ip')) shedOf(gw).spent(w.keys[i] as string, w.expiresAt);
  });
  return decisions;
}

/** Adds `n` to one counter (the charges of shed sign-ins, summed); the count after it. */
const COUNT_BY = new FixedSql<{ count: number }>(
  `insert into "rate_limits" ("key", "count", "expires_at") values (?, ?, ?) on conflict ("key") do update set "count" = "rate_limits"."count" + "excluded"."count" returning "count"`,
  {
    postgres: `${RELAXED_PG} insert into "rate_limits" ("key", "count", "expires_at") select "v"."key", "v"."count", "v"."expires_at" from (values (?::text, ?::integer, ?::bigint)) as "v" ("key", "count", "expires_at") cross join "relaxed" on conflict ("key") do update set "count" = "rate_limits"."count" + "excluded"."count" returning "count"`,
  },
);

/** Distinct counters a gateway keeps in memory for shed sign-ins (and spent budgets it knows of). */
const SHED_KEYS_MAX = 10_000;

/**
 * The budgets of sign-ins refused for capacity before their counters were written. A sign-in
 * that arrives while every argon2 slot is busy will be refused whatever its counters say, so
 * it is refused at once, without a round trip to the database (on PostgreSQL, under a flood,
 * that round trip waits for CPU the hashes hold). Its charges are still made, summed per
 * counter and written in the background, so a flood spends its own budgets as before. The
 * counts those writes return tell which budgets are spent: a later shed sign-in from such an
 * address is answered 429 (as it would have been), not 503. Bounded: beyond SHED_KEYS_MAX
 * distinct counters a shed charge is dropped (the request is refused all the same).
 */
class ShedCharges {
  readonly #gw: Gateway;
  #pending = new Map<string, { n: number; limit: number; expiresAt: number }>();
  readonly #spent = new Map<string, number>();
  #flushing = false;

  constructor(gw: Gateway) {
    this.#gw = gw;
  }

  /** Charges of shed requests, written soon (dropped beyond SHED_KEYS_MAX pending counters). */
  add(charges: readonly Charge[], w: Window): void {
    w.keys.forEach((key, i) => {
      const p = this.#pending.get(key);
      if (p !== undefined) p.n += 1;
      else if (this.#pending.size < SHED_KEYS_MAX) this.#pending.set(key, { n: 1, limit: (charges[i] as Charge).limit, expiresAt: w.expiresAt });
      else this.#gw.metrics.shedCharges.inc({ outcome: 'dropped' });
    });
    if (!this.#flushing) {
      this.#flushing = true;
      setImmediate(() => void this.#flush());
    }
  }

  /** Remembers a budget as spent until its window ends. */
  spent(key: string, expiresAt: number): void {
    if (this.#spent.size >= SHED_KEYS_MAX) {
      const nowMs = this.#gw.clock.now().getTime();
      for (const [k, until] of this.#spent) if (until <= nowMs) this.#spent.delete(k);
      if (this.#spent.size >= SHED_KEYS_MAX) return;
    }
    this.#spent.set(key, expiresAt);
  }

  /** The first of `keys` known to be spent in its window, with the window's end. */
  spentOf(keys: readonly string[], nowMs: number): number | undefined {
    for (const key of keys) {
      const until = this.#spent.get(key);
      if (until !== undefined && until > nowMs) return until;
    }
    return undefined;
  }

  /** Pending charges written until none are left; one at a time. Never throws. */
  async #flush(): Promise<void> {
    try {
      while (this.#pending.size > 0) {
        const batch = this.#pending;
        this.#pending = new Map();
        for (const [key, p] of batch) {
          try {
            const { rows } = await withoutDurabilityWait(() => COUNT_BY.run(this.#gw.store.db, [key, p.n, p.expiresAt]));
            const count = Number(rows[0]?.count ?? 0);
            this.#gw.metrics.shedCharges.inc({ outcome: 'written' }, p.n);
            if (count >= p.limit) this.spent(key, p.expiresAt);
          } catch (err) {
            // The requests were refused already; only their counts are lost.
            this.#gw.metrics.shedCharges.inc({ outcome: 'failed' }, p.n);
            this.#gw.logger.warn({ err, counts: p.n }, 'rate-limit store unavailable: charges of refused sign-ins not written');
          }
        }
      }
    } finally {
      this.#flushing = false;
    }
  }
}

const sheds = new WeakMap<Gateway, ShedCharges>();
function shedOf(gw: Gateway): ShedCharges {
  let s = sheds.get(gw);
  if (s === undefined) {
    s = new ShedCharges(gw);
    sheds.set(gw, s);
  }
  return s;
}

/**
 * The budget that binds: the first refused one, else the one with the fewest requests left.
 * Its RateLimit-* headers are the ones a client sees (one set, not one per budget overwritten
 * by the next), and a refusal is a 429.
 */
function enforceAll(res: Response, decisions: readonly RateDecision[]): void {
  let binding = decisions[0] as RateDecision;
  for (const d of decisions) {
    if (!binding.allowed) break;
    if (!d.allowed || d.remaining < binding.remaining) binding = d;
  }
  enforce(res, binding);
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
// The sign-ins that hash a password (the form and the API), not the passkey ones.
const PASSWORD_LOGIN = /^\/(v1\/)?login$/;
const STEPUP_PAGE = /^\/stepup\//;
const STEPUP_USER_API = /^\/v1\/stepup\/[^/]+\/(verify|challenge)$/;
const STEPUP_STATUS_API = /^\/v1\/stepup\/[^/]+$/;

/**
 * The path as the routers match it: express routes case-insensitively and with an optional
 * trailing slash, so `/V1/Login/` reaches the sign-in route and must be counted as a sign-in.
 */
function routedPath(req: Request): string {
  return req.path.toLowerCase().replace(/\/+$/, '') || '/';
}

/** The user side of step-up (ticket-authorised); the client side is counted per client. */
function isStepUpUserRequest(method: string, path: string): boolean {
  if (STEPUP_PAGE.test(path) || STEPUP_USER_API.test(path)) return true;
  return method === 'GET' && STEPUP_STATUS_API.test(path);
}

/** Per-address budgets, before any route runs (so before any password is hashed). */
export function rateLimitByAddress(gw: Gateway): RequestHandler {
  const cfg = gw.config.rateLimits;
  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    const path = routedPath(req);
    if (!cfg.enabled || UNCOUNTED.has(path) || req.path.startsWith('/static/')) {
      next();
      return;
    }
    const ip = req.ip ?? 'unknown';
    const address: Charge = { bucket: 'ip', subject: ip, limit: cfg.perIp };
    // A sign-in or a user-side step-up call charges its own budget too, in the same statement
    // (one round trip, one commit): both are charged even when the first is already spent,
    // as a refused request counts against every budget it falls under.
    const second: Charge | undefined =
      req.method === 'POST' && LOGIN.test(path)
        ? { bucket: 'login_ip', subject: ip, limit: cfg.loginPerIp }
        : isStepUpUserRequest(req.method, path)
          ? { bucket: 'stepup_user_ip', subject: ip, limit: cfg.stepupUserPerIp }
          : undefined;
    if (second?.bucket === 'login_ip' && PASSWORD_LOGIN.test(path) && passwordServices(gw).hasher.saturated) {
      // Every argon2 slot is busy: the sign-in will be refused whatever its budgets say, so it
      // does not wait for them (see ShedCharges). Charged all the same; 429 when a budget is
      // known to be spent, otherwise the route answers 503 `overloaded` without any check.
      const charges = [address, second];
      const w = windowOf(gw, charges);
      const shed = shedOf(gw);
      const spentUntil = shed.spentOf(w.keys, w.nowMs);
      shed.add(charges, w);
      if (spentUntil !== undefined) {
        throw new AppError('too_many_requests', { retryAfterSeconds: Math.max(1, Math.ceil((spentUntil - w.nowMs) / 1000)), detail: 'Too many requests from here; slow down.' });
      }
      locals(res).shedSignIn = true;
      next();
      return;
    }
    enforceAll(res, await consumeRates(gw, second === undefined ? [address] : [address, second]));
    next();
  };
}

/** Per-client budget, after the client authenticated (a client's many addresses count together). */
export async function rateLimitClient(gw: Gateway, res: Response, clientId: string): Promise<void> {
  if (!gw.config.rateLimits.enabled) return;
  enforce(res, await consumeRate(gw, 'client', clientId, gw.config.rateLimits.perClient));
}
