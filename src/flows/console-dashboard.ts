import type { Gateway } from '../gateway.ts';

/**
 * The console dashboard's figures: per UTC day, completed step-ups, failed verifications
 * (step-up factor failures and failed sign-ins) and lockouts (sign-in locks and factors that
 * hit their failure limit), read from the audit log — the one record every process appends to.
 */

export const ACTIVITY_SERIES = ['stepups', 'failures', 'lockouts'] as const;
export type ActivitySeries = (typeof ACTIVITY_SERIES)[number];

export interface ActivityDay {
  /** YYYY-MM-DD (UTC). */
  day: string;
  stepups: number;
  failures: number;
  lockouts: number;
}

export interface ActivitySummary {
  days: ActivityDay[];
  totals: Record<ActivitySeries, number>;
  pendingStepUps: number;
}

const DAY_MS = 86_400_000;

function seriesOf(type: string, data: string): ActivitySeries | undefined {
  if (type === 'stepup.completed') return 'stepups';
  if (type === 'login.locked') return 'lockouts';
  if (type === 'stepup.factor_failed') return data.includes('"reason":"locked"') ? 'lockouts' : 'failures';
  if (type === 'login.failed') return data.includes('"reason":"locked"') ? undefined : 'failures';
  return undefined;
}

export async function activitySummary(gw: Gateway, dayCount = 14): Promise<ActivitySummary> {
  const nowMs = gw.clock.now().getTime();
  const todayStart = Math.floor(nowMs / DAY_MS) * DAY_MS;
  const since = todayStart - (dayCount - 1) * DAY_MS;
  const rows = await gw.store.db
    .selectFrom('audit_log')
    .select(['at', 'type', 'data'])
    .where('at', '>=', since)
    .where('type', 'in', ['stepup.completed', 'stepup.factor_failed', 'login.failed', 'login.locked'])
    .execute();
  const days: ActivityDay[] = Array.from({ length: dayCount }, (_, i) => ({ day: new Date(since + i * DAY_MS).toISOString().slice(0, 10), stepups: 0, failures: 0, lockouts: 0 }));
  const totals: Record<ActivitySeries, number> = { stepups: 0, failures: 0, lockouts: 0 };
  for (const r of rows) {
    const series = seriesOf(r.type, r.data);
    const day = days[Math.floor((Number(r.at) - since) / DAY_MS)];
    if (series === undefined || day === undefined) continue;
    day[series] += 1;
    totals[series] += 1;
  }
  const pending = await gw.store.db
    .selectFrom('stepups')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('status', '=', 'pending')
    .where('expires_at', '>', nowMs)
    .executeTakeFirst();
  return { days, totals, pendingStepUps: Number(pending?.n ?? 0) };
}
