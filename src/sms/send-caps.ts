import type { Config } from '../config/schema.ts';
import type { Db } from '../store/database.ts';
import { incrementBelow, insertOnce } from '../store/primitives.ts';

/**
 * SMS send budgets against SMS pumping (fraudsters making us text expensive ranges they
 * earn from) and runaway costs: per destination number, per user, per country calling code
 * and overall, each per clock hour and per UTC day.
 *
 * Each budget is a counter row per fixed window, charged with one conditional increment
 * (`count = count + 1 WHERE count < limit`), all budgets of one send in one transaction:
 * either every budget had room and all are charged, or the first full one refuses and
 * nothing is charged. Concurrent sends, in one process or several on one PostgreSQL,
 * cannot exceed a limit. Rows are locked in one fixed order, so two sends never deadlock.
 */
export type SmsCaps = Config['sms']['caps'];
export type CapScope = 'number' | 'user' | 'country_code' | 'global';
export type CapWindow = 'hour' | 'day';

export interface CapSubject {
  /** A keyed hash of the E.164 number (the counters never hold the number itself). */
  numberKey: string;
  userId: string;
  /** Country calling code without "+", e.g. "86". */
  callingCode: string;
}

export type CapsOutcome =
  | { ok: true }
  | { ok: false; scope: CapScope; window: CapWindow; limit: number; retryAfterSeconds: number };

const WINDOW_MS: Record<CapWindow, number> = { hour: 3600_000, day: 86_400_000 };
const PRUNE_EVERY_MS = 60_000;
const lastPrune = new WeakMap<Db, number>();

interface Budget {
  scope: CapScope;
  window: CapWindow;
  subject: string;
  limit: number;
}

function budgetsFor(caps: SmsCaps, subject: CapSubject): Budget[] {
  const perCountry = caps.countryCodeOverrides[subject.callingCode] ?? caps.perCountryCode;
  const scoped: [CapScope, string, { hour: number; day: number }][] = [
    ['number', subject.numberKey, caps.perNumber],
    ['user', subject.userId, caps.perUser],
    ['country_code', subject.callingCode, perCountry],
    ['global', '*', caps.global],
  ];
  return scoped.flatMap(([scope, key, budget]) =>
    (['hour', 'day'] as const).map((window) => ({ scope, window, subject: key, limit: budget[window] })),
  );
}

class Refused extends Error {
  readonly outcome: CapsOutcome;
  constructor(outcome: CapsOutcome) {
    super('sms budget exhausted');
    this.outcome = outcome;
  }
}

/** Charges one message against every budget, or none when any is exhausted (then says which, and until when). */
export async function chargeSendCaps(db: Db, caps: SmsCaps, subject: CapSubject, now: Date): Promise<CapsOutcome> {
  const nowMs = now.getTime();
  await pruneExpired(db, nowMs);
  try {
    await db.transaction().execute(async (tx) => {
      for (const b of budgetsFor(caps, subject)) {
        const length = WINDOW_MS[b.window];
        const start = Math.floor(nowMs / length) * length;
        const key = `${b.scope}:${b.window}:${start}:${b.subject}`;
        await insertOnce(tx, { table: 'sms_send_counters', values: { key, count: 0, expires_at: start + length }, conflict: ['key'] });
        const charged = await incrementBelow(tx, { table: 'sms_send_counters', match: { key }, column: 'count', max: b.limit });
        if (charged === undefined) {
          throw new Refused({ ok: false, scope: b.scope, window: b.window, limit: b.limit, retryAfterSeconds: Math.max(1, Math.ceil((start + length - nowMs) / 1000)) });
        }
      }
    });
  } catch (err) {
    if (err instanceof Refused) return err.outcome;
    throw err;
  }
  return { ok: true };
}

/** Windows that have ended are deleted now and then (at most once a minute per process). */
async function pruneExpired(db: Db, nowMs: number): Promise<void> {
  const last = lastPrune.get(db) ?? 0;
  if (nowMs - last < PRUNE_EVERY_MS && nowMs >= last) return;
  lastPrune.set(db, nowMs);
  await db.deleteFrom('sms_send_counters').where('expires_at', '<=', nowMs).execute();
}
