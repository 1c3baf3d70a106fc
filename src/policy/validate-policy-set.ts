import type { z } from 'zod';
import { acrAtLeast, acrForFactorSet, BEST_CASE_ACR_FACTS, POSSESSION_FACTOR_TYPES } from './acr.ts';
import { amountRangeOf, isEmptyRange, rangeContains } from './amount-range.ts';
import { velocityCurrencyOf } from './conditions.ts';
import { compareDecimals, parseDecimal } from './decimal.ts';
import { comparedAmountProblem, currencyProblem } from '../verifier/money.ts';
import { type FieldCondition, MAX_POLICIES, type Policy, type PolicyConditions, policySchema } from './policy-schema.ts';

/**
 * Validation on save: the schema, then what only the whole set or the registered factor types
 * can tell — duplicate ids, ambiguous order, unreachable policies, requirements that cannot
 * reach the promised ACR, empty ranges. Every problem is reported at once, each with a JSON
 * pointer (RFC 6901) into the `{ policies: [...] }` document and a stable `code`.
 */

export type PolicyValidationCode =
  /** The schema rejected the value (type, pattern, bounds, unknown field…). */
  | 'invalid'
  | 'duplicate_id'
  /** Two policies of one action share a priority: which runs first would be arbitrary. */
  | 'ambiguous_priority'
  /** An earlier policy of the action matches every request this one matches. */
  | 'unreachable'
  /** An alternative's factors cannot reach the policy's `acr`. */
  | 'acr_unreachable'
  | 'unknown_factor_type'
  | 'duplicate_factor'
  | 'duplicate_alternative'
  | 'empty_amount_range'
  /** A field condition no value can satisfy (eq outside in, in ⊆ notIn…). */
  | 'empty_field_condition'
  | 'velocity_without_limit'
  | 'velocity_currency'
  /** Not an ISO 4217 code, or one without minor units (XAU, XXX): no amount is ever in it. */
  | 'currency_unsupported'
  /** A bound or limit with more decimals than its currency has ("100.001" CNY). */
  | 'amount_precision_exceeded';

export interface PolicyValidationError {
  /** The policy's id when it has a string one. */
  policyId: string | null;
  pointer: string;
  reason: string;
  code: PolicyValidationCode;
}

export type PolicyValidationResult = { ok: true; policies: Policy[] } | { ok: false; errors: PolicyValidationError[] };

export interface PolicyValidationOptions {
  /** The registered factor types (the factor registry's list); anything else is rejected. */
  factorTypes: readonly string[];
  /** Which of them prove possession (aal2 on their own). Default: POSSESSION_FACTOR_TYPES. */
  possessionFactorTypes?: readonly string[];
  /** Pointer to the policies array in the caller's document. Default `/policies`. */
  pointerPrefix?: string;
}

function escapePointerToken(token: PropertyKey): string {
  return String(token).replaceAll('~', '~0').replaceAll('/', '~1');
}

function pointer(prefix: string, path: readonly PropertyKey[]): string {
  return prefix + path.map((p) => `/${escapePointerToken(p)}`).join('');
}

function schemaErrors(error: z.ZodError, prefix: string, policyId: string | null): PolicyValidationError[] {
  const out: PolicyValidationError[] = [];
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ policyId, pointer: pointer(prefix, [...issue.path, key]), reason: 'unknown field', code: 'invalid' });
    } else if (issue.code === 'invalid_key') {
      out.push({ policyId, pointer: pointer(prefix, issue.path), reason: 'must be a context field name: a letter or _, then letters, digits or _ (≤ 64)', code: 'invalid' });
    } else {
      out.push({ policyId, pointer: pointer(prefix, issue.path), reason: issue.message, code: 'invalid' });
    }
  }
  return out;
}

/** Validates a list of policies (the `policies` array of the file or request body). */
export function validatePolicySet(input: unknown, options: PolicyValidationOptions): PolicyValidationResult {
  if (!Array.isArray(options?.factorTypes) || !options.factorTypes.every((t) => typeof t === 'string')) {
    throw new TypeError('validatePolicySet: options.factorTypes must be an array of factor type ids');
  }
  const prefix = options.pointerPrefix ?? '/policies';
  if (!Array.isArray(input)) {
    return { ok: false, errors: [{ policyId: null, pointer: prefix, reason: 'must be a list of policies', code: 'invalid' }] };
  }
  if (input.length > MAX_POLICIES) {
    return { ok: false, errors: [{ policyId: null, pointer: prefix, reason: `at most ${MAX_POLICIES} policies`, code: 'invalid' }] };
  }
  const errors: PolicyValidationError[] = [];
  const parsed: { index: number; policy: Policy }[] = [];
  input.forEach((raw: unknown, index) => {
    const rawId = typeof raw === 'object' && raw !== null && typeof (raw as { id?: unknown }).id === 'string' ? (raw as { id: string }).id : null;
    const result = policySchema.safeParse(raw);
    if (!result.success) {
      errors.push(...schemaErrors(result.error, `${prefix}/${index}`, rawId));
      return;
    }
    parsed.push({ index, policy: result.data });
    errors.push(...checkPolicy(result.data, `${prefix}/${index}`, options));
  });
  errors.push(...checkDuplicateIds(input, prefix));
  errors.push(...checkOrder(parsed, prefix));
  if (errors.length > 0) return { ok: false, errors: sortErrors(errors) };
  return { ok: true, policies: parsed.map((p) => p.policy) };
}

function sortErrors(errors: PolicyValidationError[]): PolicyValidationError[] {
  const indexOf = (e: PolicyValidationError): number => Number(/\/(\d+)(?:\/|$)/.exec(e.pointer)?.[1] ?? -1);
  return errors
    .map((e, i) => ({ e, i }))
    .sort((a, b) => indexOf(a.e) - indexOf(b.e) || a.i - b.i)
    .map(({ e }) => e);
}

const HINTS: Record<string, string> = {
  'urn:stepgate:aal2': 'aal2 needs a possession factor or two different factors',
  'urn:stepgate:aal3': 'aal3 needs webauthn (user verification on a device-bound credential)',
};

/** Checks of one schema-valid policy on its own. */
function checkPolicy(policy: Policy, at: string, options: PolicyValidationOptions): PolicyValidationError[] {
  const errors: PolicyValidationError[] = [];
  const fail = (path: readonly PropertyKey[], code: PolicyValidationCode, reason: string): void => {
    errors.push({ policyId: policy.id, pointer: pointer(at, path), reason, code });
  };
  const facts = { ...BEST_CASE_ACR_FACTS, possessionFactorTypes: options.possessionFactorTypes ?? POSSESSION_FACTOR_TYPES };

  const seenAlternatives = new Map<string, number>();
  policy.require.anyOf.forEach((alt, j) => {
    const seen = new Set<string>();
    let known = true;
    alt.forEach((type, k) => {
      if (!options.factorTypes.includes(type)) {
        fail(['require', 'anyOf', j, k], 'unknown_factor_type', `unknown factor type ${type} (registered: ${options.factorTypes.join(', ')})`);
        known = false;
      } else if (seen.has(type)) {
        fail(['require', 'anyOf', j, k], 'duplicate_factor', `${type} appears twice in this factor set`);
      }
      seen.add(type);
    });
    const key = [...seen].sort().join(',');
    const earlier = seenAlternatives.get(key);
    if (earlier !== undefined) fail(['require', 'anyOf', j], 'duplicate_alternative', `same factor set as alternative ${earlier}`);
    else seenAlternatives.set(key, j);
    if (!known) return;
    const reached = acrForFactorSet(alt, facts);
    if (reached === null || !acrAtLeast(reached, policy.acr)) {
      const hint = HINTS[policy.acr];
      fail(
        ['require', 'anyOf', j],
        'acr_unreachable',
        `[${alt.join(', ')}] reaches at most ${reached ?? 'nothing'}, below acr ${policy.acr}${hint === undefined ? '' : ` (${hint})`}`,
      );
    }
  });

  const when = policy.when;
  checkMoney(when, fail);
  if (when?.amount !== undefined) {
    const range = amountRangeOf(when.amount);
    if (range !== null && isEmptyRange(range)) {
      const bounds = (['gt', 'gte', 'lt', 'lte', 'eq'] as const).filter((op) => when.amount?.[op] !== undefined).map((op) => `${op} ${when.amount?.[op]}`);
      fail(['when', 'amount'], 'empty_amount_range', `no amount satisfies ${bounds.join(' and ')}`);
    }
  }
  for (const [name, cond] of Object.entries(when?.fields ?? {})) {
    const values = fieldValueSet(cond);
    if (values.kind === 'only' && values.values.size === 0) fail(['when', 'fields', name], 'empty_field_condition', `no value of ${name} satisfies every operator`);
  }
  const velocity = when?.velocity;
  if (velocity !== undefined) {
    if (velocity.maxCount === undefined && velocity.maxAmount === undefined) {
      fail(['when', 'velocity'], 'velocity_without_limit', 'needs maxCount, maxAmount or both');
    }
    const amountCurrency = when?.amount?.currency;
    if (velocity.currency !== undefined && velocity.maxAmount === undefined) {
      fail(['when', 'velocity', 'currency'], 'velocity_currency', 'currency applies only with maxAmount');
    } else if (velocity.currency !== undefined && amountCurrency !== undefined && velocity.currency !== amountCurrency) {
      fail(['when', 'velocity', 'currency'], 'velocity_currency', `${velocity.currency} ≠ the amount condition's currency ${amountCurrency}`);
    } else if (velocity.maxAmount !== undefined && velocity.currency === undefined && amountCurrency === undefined) {
      fail(['when', 'velocity', 'maxAmount'], 'velocity_currency', 'maxAmount needs a currency: set velocity.currency or an amount condition');
    }
  }
  return errors;
}

/**
 * Currencies must be ISO 4217 codes with minor units, and bounds and limits no finer than the
 * currency's minor unit (src/verifier/money.ts, the rule step-up creation applies to amounts).
 * Checked on save only: a stored set keeps loading as it is.
 */
function checkMoney(when: PolicyConditions | undefined, fail: (path: readonly PropertyKey[], code: PolicyValidationCode, reason: string) => void): void {
  const amount = when?.amount;
  if (amount !== undefined) {
    const bad = currencyProblem(amount.currency);
    if (bad !== undefined) fail(['when', 'amount', 'currency'], 'currency_unsupported', bad.reason);
    else {
      for (const op of ['gt', 'gte', 'lt', 'lte', 'eq'] as const) {
        const text = amount[op];
        const problem = text === undefined ? undefined : comparedAmountProblem(text, amount.currency);
        if (problem !== undefined) fail(['when', 'amount', op], 'amount_precision_exceeded', problem.reason);
      }
    }
  }
  const velocity = when?.velocity;
  if (velocity?.currency !== undefined) {
    const bad = currencyProblem(velocity.currency);
    if (bad !== undefined) fail(['when', 'velocity', 'currency'], 'currency_unsupported', bad.reason);
  }
  const currency = when === undefined ? undefined : velocityCurrencyOf(when);
  if (velocity?.maxAmount !== undefined && currency !== undefined && currencyProblem(currency) === undefined) {
    const problem = comparedAmountProblem(velocity.maxAmount, currency);
    if (problem !== undefined) fail(['when', 'velocity', 'maxAmount'], 'amount_precision_exceeded', problem.reason);
  }
}

function checkDuplicateIds(input: readonly unknown[], prefix: string): PolicyValidationError[] {
  const errors: PolicyValidationError[] = [];
  const first = new Map<string, number>();
  input.forEach((raw, index) => {
    const id = typeof raw === 'object' && raw !== null ? (raw as { id?: unknown }).id : undefined;
    if (typeof id !== 'string') return;
    const earlier = first.get(id);
    if (earlier === undefined) first.set(id, index);
    else errors.push({ policyId: id, pointer: `${prefix}/${index}/id`, reason: `duplicate id: also policy ${earlier}`, code: 'duplicate_id' });
  });
  return errors;
}

/** Ambiguous priorities and unreachable policies, per action. */
function checkOrder(parsed: readonly { index: number; policy: Policy }[], prefix: string): PolicyValidationError[] {
  const errors: PolicyValidationError[] = [];
  const byAction = new Map<string, { index: number; policy: Policy }[]>();
  for (const p of parsed) byAction.set(p.policy.action, [...(byAction.get(p.policy.action) ?? []), p]);
  for (const [action, list] of byAction) {
    const firstAtPriority = new Map<number, Policy>();
    for (const { index, policy } of list) {
      const other = firstAtPriority.get(policy.priority);
      if (other === undefined) firstAtPriority.set(policy.priority, policy);
      else {
        errors.push({
          policyId: policy.id,
          pointer: `${prefix}/${index}/priority`,
          reason: `same priority ${policy.priority} as ${other.id} for ${action}: their order would be ambiguous`,
          code: 'ambiguous_priority',
        });
      }
    }
    for (const { index, policy } of list) {
      const shadow = list
        .filter((e) => e.policy.priority < policy.priority && conditionsCover(e.policy.when, policy.when))
        .sort((a, b) => a.policy.priority - b.policy.priority)[0];
      if (shadow === undefined) continue;
      const why = isUnconditional(shadow.policy.when) ? 'has no conditions and is evaluated first' : 'matches every request this one matches and is evaluated first';
      errors.push({
        policyId: policy.id,
        pointer: `${prefix}/${index}`,
        reason: `unreachable: ${shadow.policy.id} (priority ${shadow.policy.priority}) ${why}`,
        code: 'unreachable',
      });
    }
  }
  return errors;
}

function isUnconditional(when: PolicyConditions | undefined): boolean {
  return (
    when === undefined ||
    (when.amount === undefined && when.groups === undefined && when.velocity === undefined && Object.keys(when.fields ?? {}).length === 0)
  );
}

/** The values a field condition admits: a finite list, or everything except a list. */
type ValueSet = { kind: 'only' | 'except'; values: Set<string> };

/** JSON keeps "1" and 1, "true" and true apart — the same strict equality evaluation uses. */
const valueKey = (v: unknown): string => JSON.stringify(v);

function fieldValueSet(c: FieldCondition): ValueSet {
  let only: Set<string> | null = c.eq === undefined ? null : new Set([valueKey(c.eq)]);
  if (c.in !== undefined) {
    const list = new Set(c.in.map(valueKey));
    only = only === null ? list : new Set([...only].filter((v) => list.has(v)));
  }
  const except = new Set([...(c.neq === undefined ? [] : [valueKey(c.neq)]), ...(c.notIn ?? []).map(valueKey)]);
  if (only !== null) return { kind: 'only', values: new Set([...only].filter((v) => !except.has(v))) };
  return { kind: 'except', values: except };
}

function valueSetWithin(inner: ValueSet, outer: ValueSet): boolean {
  if (inner.kind === 'only') {
    return [...inner.values].every((v) => (outer.kind === 'only' ? outer.values.has(v) : !outer.values.has(v)));
  }
  return outer.kind === 'except' && [...outer.values].every((v) => inner.values.has(v));
}

/**
 * Whether every request satisfying `later` also satisfies `earlier` (so `later` never decides
 * after it). Sound but incomplete: `true` only when each of earlier's conditions is implied by
 * a condition of the same kind in `later`; coverage by several earlier policies together is not
 * detected.
 */
export function conditionsCover(earlier: PolicyConditions | undefined, later: PolicyConditions | undefined): boolean {
  const e = earlier ?? {};
  const l = later ?? {};
  if (e.amount !== undefined) {
    if (l.amount === undefined || l.amount.currency !== e.amount.currency) return false;
    const er = amountRangeOf(e.amount);
    const lr = amountRangeOf(l.amount);
    if (er === null || lr === null || !rangeContains(er, lr)) return false;
  }
  for (const [name, ec] of Object.entries(e.fields ?? {})) {
    const lc = l.fields !== undefined && Object.hasOwn(l.fields, name) ? l.fields[name] : undefined;
    if (lc === undefined || !valueSetWithin(fieldValueSet(lc), fieldValueSet(ec))) return false;
  }
  if (e.groups !== undefined) {
    if (l.groups === undefined || !l.groups.anyOf.every((g) => e.groups?.anyOf.includes(g))) return false;
  }
  if (e.velocity !== undefined) {
    const ev = e.velocity;
    const lv = l.velocity;
    if (lv === undefined || lv.windowSeconds !== ev.windowSeconds) return false;
    if (ev.maxCount !== undefined && (lv.maxCount === undefined || lv.maxCount > ev.maxCount)) return false;
    if (ev.maxAmount !== undefined) {
      if (lv.maxAmount === undefined || velocityCurrencyOf(l) !== velocityCurrencyOf(e)) return false;
      const em = parseDecimal(ev.maxAmount);
      const lm = parseDecimal(lv.maxAmount);
      if (em === null || lm === null || compareDecimals(lm, em) > 0) return false;
    }
  }
  return true;
}
