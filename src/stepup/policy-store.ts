import type { Gateway } from '../gateway.ts';
import type { Executor } from '../store/database.ts';
import { insertOnce } from '../store/primitives.ts';
import { type Policy, policyDocumentSchema } from '../policy/policy-schema.ts';
import { sumDecimalStrings } from '../policy/decimal.ts';
import type { VelocityWindowFacts } from '../policy/conditions.ts';
import { velocityWindowsFor } from '../policy/evaluate-policies.ts';
import { FixedSql } from '../store/fixed-sql.ts';

/**
 * Policies are versioned as a whole set: every change stores a new version of the full set
 * (the old ones stay for the history and diffs). The newest version is in force. Versions
 * are numbered 1, 2, 3… by the writer: the primary key on `version` makes two concurrent
 * writers of the same number collide, so exactly one of them wins (see flows/policies.ts).
 */
export interface PolicySetVersion {
  version: number;
  policies: Policy[];
  createdAt: Date;
  createdBy: string;
  comment: string;
}

/** One entry of the history, without the document. */
export type PolicySetVersionInfo = Omit<PolicySetVersion, 'policies'>;

interface PolicySetRow {
  version: number;
  document: string;
  created_at: number;
  created_by: string;
  comment: string;
}

// A stored version never changes, so its parsed policies are kept: every step-up creation and
// completion reads the current version, and JSON.parse + schema validation of the document
// was a measurable share of those requests. Keyed by the document itself, so a row that did
// change (a restore by hand) is parsed afresh. The parsed policies are frozen: shared, read-only.
const parsed = new Map<string, Policy[]>();
const MAX_PARSED = 32;

function parsePolicies(document: string): Policy[] {
  let policies = parsed.get(document);
  if (policies === undefined) {
    policies = deepFreeze(policyDocumentSchema.parse(JSON.parse(document)).policies);
    if (parsed.size >= MAX_PARSED) parsed.delete(parsed.keys().next().value as string);
    parsed.set(document, policies);
  }
  return policies;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

function toVersion(row: PolicySetRow): PolicySetVersion {
  return {
    version: Number(row.version),
    policies: parsePolicies(row.document),
    createdAt: new Date(Number(row.created_at)),
    createdBy: row.created_by,
    comment: row.comment,
  };
}

/** Read by every step-up creation and completion (fixed SQL, see src/store/fixed-sql.ts). */
const CURRENT = new FixedSql<PolicySetRow>('select * from "policy_sets" order by "version" desc limit 1');

export async function currentPolicySet(ex: Executor): Promise<PolicySetVersion | undefined> {
  const row = await CURRENT.first(ex, []);
  return row === undefined ? undefined : toVersion(row);
}

/** One stored version, or undefined. */
export async function policySetAt(ex: Executor, version: number): Promise<PolicySetVersion | undefined> {
  const row = await ex.selectFrom('policy_sets').selectAll().where('version', '=', version).executeTakeFirst();
  return row === undefined ? undefined : toVersion(row);
}

/** The history, newest first. */
export async function listPolicySetVersions(ex: Executor, page: { limit: number; offset: number }): Promise<PolicySetVersionInfo[]> {
  const rows = await ex
    .selectFrom('policy_sets')
    .select(['version', 'created_at', 'created_by', 'comment'])
    .orderBy('version', 'desc')
    .limit(page.limit)
    .offset(page.offset)
    .execute();
  return rows.map((r) => ({ version: Number(r.version), createdAt: new Date(Number(r.created_at)), createdBy: r.created_by, comment: r.comment }));
}

export async function hasAnyPolicySet(ex: Executor): Promise<boolean> {
  return (await ex.selectFrom('policy_sets').select('version').limit(1).executeTakeFirst()) !== undefined;
}

/**
 * Stores `policies` as `version` unless that version exists: `INSERT … ON CONFLICT DO
 * NOTHING`, so false means another writer took the number first (on PostgreSQL the insert
 * waits for that writer's transaction and then reports the conflict).
 */
export async function insertPolicySetVersion(
  ex: Executor,
  entry: { version: number; policies: readonly Policy[]; createdAt: Date; createdBy: string; comment: string },
): Promise<boolean> {
  return insertOnce(ex, {
    table: 'policy_sets',
    values: {
      version: entry.version,
      document: JSON.stringify({ policies: entry.policies }),
      created_at: entry.createdAt.getTime(),
      created_by: entry.createdBy,
      comment: entry.comment,
    },
    conflict: ['version'],
  });
}

// Every creation and completion under a velocity policy reads them (fixed SQL, see src/store/fixed-sql.ts).
const VELOCITY_SQL = `select "amount", "currency", "completed_at" from "stepups" where "user_id" = ? and "action" = ? and "status" in ('completed', 'token_issued') and "completed_at" > ?`;
type VelocityRow = { amount: string | null; currency: string | null; completed_at: number | null };
const VELOCITY_ROWS = new FixedSql<VelocityRow>(VELOCITY_SQL);
const VELOCITY_ROWS_EXCEPT = new FixedSql<VelocityRow>(`${VELOCITY_SQL} and "id" <> ?`);

/**
 * Velocity figures for the windows the action's policies name: completed step-ups of this user.
 *
 * A currency total is left out of a window when any stored amount in that currency cannot be
 * read as a decimal: the velocity condition then does not hold (fails closed, see
 * src/policy/README.md) instead of treating the unreadable amount as zero, which would let a
 * user past an amount limit. Step-ups without an amount add nothing to the total (there is
 * nothing to add) but still count.
 */
export async function velocityFacts(
  gw: Gateway,
  policies: readonly Policy[],
  userId: string,
  action: string,
  options: { executor?: Executor; excludeStepUpId?: string } = {},
): Promise<VelocityWindowFacts[]> {
  const windows = velocityWindowsFor(policies, action);
  if (windows.length === 0) return [];
  const nowMs = gw.clock.now().getTime();
  const longest = Math.max(...windows.map((w) => w.windowSeconds));
  const executor = options.executor ?? gw.store.db;
  const since = nowMs - longest * 1000;
  const { rows } =
    options.excludeStepUpId === undefined
      ? await VELOCITY_ROWS.run(executor, [userId, action, since])
      : await VELOCITY_ROWS_EXCEPT.run(executor, [userId, action, since, options.excludeStepUpId]);
  return windows.map((w) => {
    const inWindow = rows.filter((r) => r.completed_at !== null && Number(r.completed_at) > nowMs - w.windowSeconds * 1000);
    const amountsByCurrency: Record<string, string> = {};
    for (const currency of w.currencies) {
      // Magnitudes: a completed step-up for "-5000.00" must not give back 5000 of the limit.
      const total = sumDecimalStrings(inWindow.filter((r) => r.currency === currency && r.amount !== null).map((r) => r.amount), { magnitudes: true });
      if (total !== null) amountsByCurrency[currency] = total;
    }
    return { windowSeconds: w.windowSeconds, count: inWindow.length, amountsByCurrency };
  });
}
