import { z } from 'zod';
import { ACR_VALUES } from './acr.ts';
import { DECIMAL_PATTERN } from './decimal.ts';

/**
 * The shape of a factor policy — the same for the YAML file (`stepgate policies apply`) and
 * the admin API. This schema checks form only; `validatePolicySet` adds the checks that need
 * the whole set or the registered factor types (unknown types, unreachable policies, ACR the
 * factors cannot reach, empty amount ranges…).
 */

export const POLICY_ID_PATTERN = /^[a-z0-9-]{1,64}$/;
export const ACTION_PATTERN = /^[a-z0-9_]+(\.[a-z0-9_]+)*$/;
export const FACTOR_TYPE_PATTERN = /^[a-z][a-z0-9_]{0,31}$/;
export const CONTEXT_FIELD_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/** Longest step-up token lifetime a policy may ask for (DESIGN.md §1: ≤ 5 min). */
export const MAX_TOKEN_TTL_SECONDS = 300;
export const DEFAULT_TOKEN_TTL_SECONDS = 120;
/** A policy may accept an earlier authentication at most this old. */
export const MAX_MAX_AGE_SECONDS = 86_400;
/** Longest velocity window: a year (366 days). */
export const MAX_VELOCITY_WINDOW_SECONDS = 366 * 86_400;
export const MAX_POLICIES = 1000;

const decimal = z
  .string({ error: 'must be a decimal string such as "1000.00" (quote it in YAML)' })
  .regex(DECIMAL_PATTERN, 'must be a decimal string such as "1000.00": up to 15 digits, up to 6 decimals, no exponent');

const currency = z.string({ error: 'must be an ISO 4217 currency code' }).regex(/^[A-Z]{3}$/, 'must be an ISO 4217 currency code (3 capital letters)');

const scalar = z.union([z.string().max(256), z.number(), z.boolean()], { error: 'must be a string (≤ 256 chars), a number or a boolean' });

export const factorTypeIdSchema = z
  .string({ error: 'must be a factor type id' })
  .regex(FACTOR_TYPE_PATTERN, 'must be a snake_case factor type id such as "webauthn"');

/** `amount` and `currency` of the context: every given bound must hold, and the currency must be equal. */
export const amountConditionSchema = z.strictObject({
  lt: decimal.optional(),
  lte: decimal.optional(),
  gt: decimal.optional(),
  gte: decimal.optional(),
  eq: decimal.optional(),
  currency,
});

/** One context field: every given operator must hold. A field the context lacks never matches. */
export const fieldConditionSchema = z
  .strictObject({
    eq: scalar.optional(),
    neq: scalar.optional(),
    in: z.array(scalar).min(1, 'must list at least one value').max(100).optional(),
    notIn: z.array(scalar).min(1, 'must list at least one value').max(100).optional(),
  })
  .refine((c) => c.eq !== undefined || c.neq !== undefined || c.in !== undefined || c.notIn !== undefined, {
    error: 'must have one of eq, neq, in, notIn',
  });

export const groupsConditionSchema = z.strictObject({
  anyOf: z
    .array(z.string().min(1).max(64))
    .min(1, 'must list at least one group')
    .max(100),
});

/**
 * The policy applies while the user's completed step-ups for this action in the rolling window
 * are fewer than `maxCount` and their summed amount plus this one stays ≤ `maxAmount` (in
 * `currency`, or the amount condition's currency).
 */
export const velocityConditionSchema = z.strictObject({
  windowSeconds: z.number().int().min(1).max(MAX_VELOCITY_WINDOW_SECONDS),
  maxCount: z.number().int().min(1).max(1_000_000).optional(),
  maxAmount: decimal.optional(),
  currency: currency.optional(),
});

/**
 * zod drops a `__proto__` key from a record without a word, which would silently delete that
 * field's condition and widen the policy: reject it before the record sees it.
 */
const fieldConditionsSchema = z.preprocess(
  (value, ctx) => {
    if (typeof value === 'object' && value !== null && Object.hasOwn(value, '__proto__')) {
      ctx.issues.push({ code: 'custom', message: '__proto__ is not a usable field name', path: ['__proto__'], input: value });
    }
    return value;
  },
  z.record(z.string().regex(CONTEXT_FIELD_PATTERN, 'must be a context field name'), fieldConditionSchema),
);

export const policyConditionsSchema = z.strictObject({
  amount: amountConditionSchema.optional(),
  fields: fieldConditionsSchema.optional(),
  groups: groupsConditionSchema.optional(),
  velocity: velocityConditionSchema.optional(),
});

export const policyRequirementSchema = z.strictObject({
  anyOf: z
    .array(z.array(factorTypeIdSchema).min(1, 'a factor set must name at least one factor type').max(8))
    .min(1, 'must list at least one alternative')
    .max(16),
});

/**
 * Which authenticator-app (TOTP) enrolments the policy accepts, e.g. `{algorithms: [SHA256,
 * SHA512], digits: [8]}` for a stricter action. A missing list accepts any value the
 * gateway's `totp` config allows. A user whose app does not qualify has no usable `totp` for
 * this policy: the alternative is not offered, as if it were not enrolled.
 */
export const totpConstraintSchema = z.strictObject({
  algorithms: z.array(z.enum(['SHA1', 'SHA256', 'SHA512'])).min(1).max(3).optional(),
  digits: z.array(z.union([z.literal(6), z.literal(8)], { error: 'must be 6 or 8' })).min(1).max(2).optional(),
  periodSeconds: z.array(z.union([z.literal(30), z.literal(60)], { error: 'must be 30 or 60' })).min(1).max(2).optional(),
});

export const policySchema = z.strictObject({
  id: z.string({ error: 'must be a policy id' }).regex(POLICY_ID_PATTERN, 'must be 1–64 of a-z, 0-9 and "-"'),
  action: z
    .string({ error: 'must be an action name' })
    .max(128)
    .regex(ACTION_PATTERN, 'must be dot-separated snake_case words, e.g. payment_code.issue'),
  priority: z.number({ error: 'must be an integer' }).int('must be an integer').min(0).max(1_000_000),
  description: z.string().max(500).optional(),
  when: policyConditionsSchema.optional(),
  require: policyRequirementSchema,
  acr: z.enum(ACR_VALUES, { error: `must be one of ${ACR_VALUES.join(', ')}` }),
  tokenTtlSeconds: z
    .number()
    .int()
    .min(1)
    .max(MAX_TOKEN_TTL_SECONDS, `must be at most ${MAX_TOKEN_TTL_SECONDS} seconds`)
    .default(DEFAULT_TOKEN_TTL_SECONDS),
  maxAgeSeconds: z.number().int().min(0, 'must not be negative').max(MAX_MAX_AGE_SECONDS).default(0),
  totp: totpConstraintSchema.optional(),
});

/** The file / admin API document: `{ policies: [...] }`. */
export const policyDocumentSchema = z.strictObject({
  policies: z.array(policySchema).max(MAX_POLICIES),
});

export type AmountCondition = z.output<typeof amountConditionSchema>;
export type FieldCondition = z.output<typeof fieldConditionSchema>;
export type GroupsCondition = z.output<typeof groupsConditionSchema>;
export type VelocityCondition = z.output<typeof velocityConditionSchema>;
export type PolicyConditions = z.output<typeof policyConditionsSchema>;
export type PolicyRequirement = z.output<typeof policyRequirementSchema>;
export type TotpConstraint = z.output<typeof totpConstraintSchema>;
/** A policy after parsing: defaults applied. */
export type Policy = z.output<typeof policySchema>;
/** A policy as written (defaults may be omitted). */
export type PolicyInput = z.input<typeof policySchema>;
export type ContextScalar = string | number | boolean;
