import { canonicalPolicy, sortPolicies } from './policy-file.ts';
import type { Policy } from './policy-schema.ts';

/**
 * What applying a new policy set changes, policy by policy (matched by id) and field by field —
 * what `stepgate policies apply` prints before (or, with --dry-run, instead of) applying.
 */

export interface PolicyFieldChange {
  /** Dotted path in the policy, e.g. `when.amount.lte`; lists are compared whole. */
  path: string;
  /** `undefined`: the field was absent before. */
  before?: unknown;
  /** `undefined`: the field is absent after. */
  after?: unknown;
}

export interface PolicyDiffEntry {
  id: string;
  action: string;
  /** For added policies every field (no `before`), for removed ones every field (no `after`). */
  changes: PolicyFieldChange[];
}

export interface PolicySetDiff {
  added: PolicyDiffEntry[];
  removed: PolicyDiffEntry[];
  changed: PolicyDiffEntry[];
  unchanged: string[];
}

function flatten(value: unknown, path: string, out: Map<string, unknown>): void {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, path === '' ? k : `${path}.${k}`, out);
  } else {
    out.set(path, value);
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepMerge(a: unknown, b: unknown): unknown {
  if (!isRecord(a) || !isRecord(b)) return b === undefined ? a : b;
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) out[k] = Object.hasOwn(a, k) ? deepMerge(a[k], v) : v;
  return out;
}

function leaves(p: Policy | undefined): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (p !== undefined) flatten(canonicalPolicy(p), '', out);
  return out;
}

function fieldChanges(before: Policy | undefined, after: Policy | undefined): PolicyFieldChange[] {
  const b = leaves(before);
  const a = leaves(after);
  // Paths in the documented key order, whichever side has them.
  const paths = leaves(deepMerge(before, after) as Policy).keys();
  const changes: PolicyFieldChange[] = [];
  for (const path of paths) {
    const bv = b.get(path);
    const av = a.get(path);
    if (JSON.stringify(bv) === JSON.stringify(av)) continue;
    changes.push({ path, ...(bv === undefined ? {} : { before: bv }), ...(av === undefined ? {} : { after: av }) });
  }
  return changes;
}

export function diffPolicySets(before: readonly Policy[], after: readonly Policy[]): PolicySetDiff {
  const oldById = new Map(before.map((p) => [p.id, p]));
  const newById = new Map(after.map((p) => [p.id, p]));
  const diff: PolicySetDiff = { added: [], removed: [], changed: [], unchanged: [] };
  for (const p of sortPolicies(after)) {
    const old = oldById.get(p.id);
    const changes = fieldChanges(old, p);
    if (old === undefined) diff.added.push({ id: p.id, action: p.action, changes });
    else if (changes.length > 0) diff.changed.push({ id: p.id, action: p.action, changes });
    else diff.unchanged.push(p.id);
  }
  for (const p of sortPolicies(before)) {
    if (!newById.has(p.id)) diff.removed.push({ id: p.id, action: p.action, changes: fieldChanges(p, undefined) });
  }
  return diff;
}

export function policySetDiffIsEmpty(diff: PolicySetDiff): boolean {
  return diff.added.length === 0 && diff.removed.length === 0 && diff.changed.length === 0;
}

const shown = (v: unknown): string => (v === undefined ? '(absent)' : JSON.stringify(v));

/**
 * The diff as text, one line per policy and one indented line per field:
 * ```
 * + large-payments (payment_code.issue)
 *     priority: 20
 * ~ small-payments (payment_code.issue)
 *     when.amount.lte: "1000.00" → "500.00"
 * - old-rule (payment_code.issue)
 * ```
 */
export function formatPolicyDiff(diff: PolicySetDiff): string {
  if (policySetDiffIsEmpty(diff)) return 'no changes\n';
  const lines: string[] = [];
  for (const e of diff.added) {
    lines.push(`+ ${e.id} (${e.action})`);
    for (const c of e.changes) if (c.path !== 'id') lines.push(`    ${c.path}: ${shown(c.after)}`);
  }
  for (const e of diff.changed) {
    lines.push(`~ ${e.id} (${e.action})`);
    for (const c of e.changes) lines.push(`    ${c.path}: ${shown(c.before)} → ${shown(c.after)}`);
  }
  for (const e of diff.removed) lines.push(`- ${e.id} (${e.action})`);
  const n = (k: number, word: string): string => `${k} ${word}`;
  lines.push(
    `${n(diff.added.length, 'added')}, ${n(diff.changed.length, 'changed')}, ${n(diff.removed.length, 'removed')}, ${n(diff.unchanged.length, 'unchanged')}`,
  );
  return `${lines.join('\n')}\n`;
}
