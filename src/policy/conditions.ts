import { comparedAmountProblem } from '../verifier/money.ts';
import { absDecimal, addDecimals, compareDecimals, formatDecimal, parseDecimal } from './decimal.ts';
import type {
  AmountCondition,
  ContextScalar,
  FieldCondition,
  GroupsCondition,
  PolicyConditions,
  VelocityCondition,
} from './policy-schema.ts';

/**
 * Each condition kind answers "does it hold for this request?" with the reasons, in words an
 * admin reads in the dry-run evaluator. Conditions fail closed: data that is missing or
 * malformed (no amount, a non-decimal amount, no velocity figures) makes a condition not hold,
 * so a request falls through to a later — in a well-ordered set, stricter — policy. Nothing here
 * throws on request data.
 */

/** The caller-supplied history for one velocity window (see `velocityWindowsFor`). */
export interface VelocityWindowFacts {
  windowSeconds: number;
  /** The user's completed step-ups for this action in the rolling window. */
  count: number;
  /**
   * Their summed amounts by currency, as decimal strings. Must carry every currency
   * `velocityWindowsFor` names for the window ("0" when there were none): a missing total
   * makes the condition not hold rather than count as zero.
   */
  amountsByCurrency?: Readonly<Record<string, string>>;
}

export interface ConditionInput {
  context: Readonly<Record<string, unknown>>;
  groups: readonly string[];
  velocity: readonly VelocityWindowFacts[];
}

export interface ConditionResult {
  holds: boolean;
  because: string[];
}

/** The context keys the amount and velocity conditions read. */
export const AMOUNT_FIELD = 'amount';
export const CURRENCY_FIELD = 'currency';

const MAX_SHOWN = 64;

/** A context value as it appears in a reason: JSON, cut short (context is caller data). */
export function show(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN)}…` : text;
}

/** Like `show`, without the quotes around a string (currency codes). */
function showBare(value: unknown): string {
  if (typeof value !== 'string') return show(value);
  const text = JSON.stringify(value).slice(1, -1);
  return text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN)}…` : text;
}

function showList(values: readonly unknown[]): string {
  return `[${values.map(show).join(', ')}]`;
}

function isScalar(value: unknown): value is ContextScalar {
  return typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value));
}

function own(context: Readonly<Record<string, unknown>>, key: string): unknown {
  return Object.hasOwn(context, key) ? context[key] : undefined;
}

const BOUND_WORDS = {
  lt: { pass: '<', fail: '≥' },
  lte: { pass: '≤', fail: '>' },
  gt: { pass: '>', fail: '≤' },
  gte: { pass: '≥', fail: '<' },
  eq: { pass: '=', fail: '≠' },
} as const;
const BOUND_OPS = ['gt', 'gte', 'lt', 'lte', 'eq'] as const;

/** The context's amount and currency against the condition's bounds and currency. */
export function checkAmount(cond: AmountCondition, context: Readonly<Record<string, unknown>>): ConditionResult {
  const because: string[] = [];
  let holds = true;
  const rawCurrency = own(context, CURRENCY_FIELD);
  if (rawCurrency === undefined) {
    because.push('amount: context has no currency');
    holds = false;
  } else if (rawCurrency !== cond.currency) {
    because.push(`currency ${showBare(rawCurrency)} ≠ ${cond.currency}`);
    holds = false;
  } else {
    because.push(`currency ${cond.currency} = ${cond.currency}`);
  }
  const rawAmount = own(context, AMOUNT_FIELD);
  const amount = parseDecimal(rawAmount);
  if (rawAmount === undefined) {
    because.push('amount: context has no amount');
    return { holds: false, because };
  }
  if (amount === null) {
    because.push(`amount: context amount ${show(rawAmount)} is not a decimal string`);
    return { holds: false, because };
  }
  // Bounds in one currency say nothing about an amount in another.
  if (!holds) return { holds, because };
  // Finer than the currency's minor unit ("100.001" CNY) is no amount of it: fail closed.
  const precision = comparedAmountProblem(rawAmount as string, cond.currency);
  if (precision !== undefined) {
    because.push(`amount: ${precision.reason}`);
    return { holds: false, because };
  }
  for (const op of BOUND_OPS) {
    const text = cond[op];
    if (text === undefined) continue;
    const bound = parseDecimal(text);
    if (bound === null) {
      because.push(`amount: policy bound ${op} ${show(text)} is not a decimal string`);
      holds = false;
      continue;
    }
    const c = compareDecimals(amount, bound);
    const ok = op === 'lt' ? c < 0 : op === 'lte' ? c <= 0 : op === 'gt' ? c > 0 : op === 'gte' ? c >= 0 : c === 0;
    if (ok) because.push(`amount ${rawAmount as string} ${cond.currency} ${BOUND_WORDS[op].pass} ${text}`);
    else because.push(`amount ${rawAmount as string} ${cond.currency} ${BOUND_WORDS[op].fail} ${op} ${text}`);
    holds &&= ok;
  }
  return { holds, because };
}

/** One context field against eq / neq / in / notIn. Strict equality: "1" is not 1. */
export function checkField(name: string, cond: FieldCondition, context: Readonly<Record<string, unknown>>): ConditionResult {
  const value = own(context, name);
  if (value === undefined) return { holds: false, because: [`field ${name} is absent`] };
  if (!isScalar(value)) return { holds: false, because: [`field ${name} is not a string, number or boolean`] };
  const because: string[] = [];
  let holds = true;
  const v = show(value);
  if (cond.eq !== undefined) {
    const ok = value === cond.eq;
    because.push(ok ? `field ${name} = ${show(cond.eq)}` : `field ${name} ${v} ≠ ${show(cond.eq)}`);
    holds &&= ok;
  }
  if (cond.neq !== undefined) {
    const ok = value !== cond.neq;
    because.push(ok ? `field ${name} ${v} ≠ ${show(cond.neq)}` : `field ${name} = ${show(cond.neq)} (neq)`);
    holds &&= ok;
  }
  if (cond.in !== undefined) {
    const ok = cond.in.includes(value);
    because.push(ok ? `field ${name} ${v} in ${showList(cond.in)}` : `field ${name} ${v} not in ${showList(cond.in)}`);
    holds &&= ok;
  }
  if (cond.notIn !== undefined) {
    const ok = !cond.notIn.includes(value);
    because.push(ok ? `field ${name} ${v} not in ${showList(cond.notIn)} (notIn)` : `field ${name} ${v} in ${showList(cond.notIn)} (notIn)`);
    holds &&= ok;
  }
  return { holds, because };
}

export function checkGroups(cond: GroupsCondition, groups: readonly string[]): ConditionResult {
  const hit = cond.anyOf.find((g) => groups.includes(g));
  if (hit !== undefined) return { holds: true, because: [`group: user in ${hit}`] };
  return { holds: false, because: [`group: user not in any of [${cond.anyOf.join(', ')}]`] };
}

/** The currency a velocity condition sums in: its own, else the amount condition's. */
export function velocityCurrencyOf(when: PolicyConditions): string | undefined {
  return when.velocity?.currency ?? (when.velocity?.maxAmount !== undefined ? when.amount?.currency : undefined);
}

export function checkVelocity(
  cond: VelocityCondition,
  currency: string | undefined,
  input: ConditionInput,
): ConditionResult {
  const w = cond.windowSeconds;
  const facts = input.velocity.find((f) => f.windowSeconds === w);
  if (facts === undefined) return { holds: false, because: [`velocity: no data for the ${w} s window`] };
  const because: string[] = [];
  let holds = true;
  if (cond.maxCount !== undefined) {
    if (!Number.isSafeInteger(facts.count) || facts.count < 0) {
      because.push(`velocity: count for the ${w} s window is not a non-negative integer`);
      holds = false;
    } else if (facts.count >= cond.maxCount) {
      because.push(`velocity: ${facts.count} step-ups in ${w} s ≥ maxCount ${cond.maxCount}`);
      holds = false;
    } else {
      because.push(`velocity: ${facts.count} step-ups in ${w} s < maxCount ${cond.maxCount}`);
    }
  }
  if (cond.maxAmount !== undefined) {
    const r = checkVelocityAmount(cond.maxAmount, currency, w, facts, input.context);
    because.push(r.reason);
    holds &&= r.holds;
  }
  return { holds, because };
}

function checkVelocityAmount(
  maxAmountText: string,
  currency: string | undefined,
  w: number,
  facts: VelocityWindowFacts,
  context: Readonly<Record<string, unknown>>,
): { holds: boolean; reason: string } {
  if (currency === undefined) return { holds: false, reason: 'velocity: maxAmount has no currency' };
  const maxAmount = parseDecimal(maxAmountText);
  if (maxAmount === null) return { holds: false, reason: `velocity: maxAmount ${show(maxAmountText)} is not a decimal string` };
  const rawCurrency = own(context, CURRENCY_FIELD);
  if (rawCurrency !== currency) {
    const shown = rawCurrency === undefined ? 'absent' : showBare(rawCurrency);
    return { holds: false, reason: `velocity: currency ${shown} ≠ ${currency}` };
  }
  const rawAmount = own(context, AMOUNT_FIELD);
  const amount = parseDecimal(rawAmount);
  if (amount === null) {
    return {
      holds: false,
      reason: rawAmount === undefined ? 'velocity: context has no amount' : `velocity: context amount ${show(rawAmount)} is not a decimal string`,
    };
  }
  const precision = comparedAmountProblem(rawAmount as string, currency);
  if (precision !== undefined) return { holds: false, reason: `velocity: ${precision.reason}` };
  const totals = facts.amountsByCurrency;
  const rawTotal = totals !== undefined && Object.hasOwn(totals, currency) ? totals[currency] : undefined;
  if (rawTotal === undefined) return { holds: false, reason: `velocity: no ${currency} total for the ${w} s window` };
  const total = parseDecimal(rawTotal, { total: true });
  if (total === null) return { holds: false, reason: `velocity: ${currency} total for the ${w} s window is not a decimal string` };
  // Totals are sums of magnitudes: a negative one is not a total (it would widen the limit).
  if (total.units < 0n) return { holds: false, reason: `velocity: ${currency} total for the ${w} s window is negative` };
  // A negative amount is charged with its magnitude: it must not pass as "room left".
  const charged = absDecimal(amount);
  const sum = addDecimals(total, charged);
  const ok = compareDecimals(sum, maxAmount) <= 0;
  const shown = `${formatDecimal(total)} + ${formatDecimal(charged)} = ${formatDecimal(sum)} ${currency} in ${w} s`;
  return { holds: ok, reason: ok ? `velocity: ${shown} ≤ maxAmount ${maxAmountText}` : `velocity: ${shown} > maxAmount ${maxAmountText}` };
}

/** All of a policy's conditions; absent or empty `when` always holds. Every condition is checked, for the reasons. */
export function checkConditions(when: PolicyConditions | undefined, input: ConditionInput): ConditionResult {
  const because: string[] = [];
  let holds = true;
  const add = (r: ConditionResult): void => {
    because.push(...r.because);
    holds &&= r.holds;
  };
  if (when?.amount !== undefined) add(checkAmount(when.amount, input.context));
  if (when?.fields !== undefined) {
    for (const [name, cond] of Object.entries(when.fields)) add(checkField(name, cond, input.context));
  }
  if (when?.groups !== undefined) add(checkGroups(when.groups, input.groups));
  if (when?.velocity !== undefined) add(checkVelocity(when.velocity, velocityCurrencyOf(when), input));
  if (because.length === 0) because.push('no conditions');
  return { holds, because };
}
