import { type Request, type Response, Router } from 'express';
import { z } from 'zod';
import { createStepUpBody } from '../flows/create-stepup.ts';
import {
  addPolicy,
  type CurrentPolicySet,
  deletePolicy,
  diffPolicyVersions,
  evaluatePolicyDryRun,
  getCurrentPolicySet,
  getPolicySetVersion,
  MAX_COMMENT_LENGTH,
  policySetHistory,
  replacePolicy,
  type SavedPolicySet,
  savePolicySet,
} from '../flows/policies.ts';
import type { AuditActor, Role } from '../flows/users.ts';
import type { Gateway } from '../gateway.ts';
import { ACR_VALUES } from '../policy/acr.ts';
import { formatPolicyDiff } from '../policy/diff-policy-sets.ts';
import { factorTypeIdSchema, MAX_POLICIES, MAX_VELOCITY_WINDOW_SECONDS, POLICY_ID_PATTERN, policySchema } from '../policy/policy-schema.ts';
import { AppError } from '../errors/app-error.ts';
import type { ApiRegistry } from './api-registry.ts';
import { authOf, requireRole } from './authorize.ts';
import { locals } from './request-context.ts';

/**
 * `/v1/admin/policies`: the factor policies as versioned, audited data. Admins change them;
 * admins, auditors and helpdesk read them and use the dry-run evaluator. Every change stores
 * the whole resulting set as a new version (nothing is edited in place) after validating it
 * as a whole — a single added policy can make another one unreachable. Field names follow
 * the policy file (`stepgate policies apply`), hence camelCase here.
 *
 * Optimistic concurrency: a change may name the `baseVersion` it was made against and is
 * refused with 409 `conflict` when another version was stored since.
 */

const TAG = 'Policies';
const WRITE_ROLES: readonly [Role, ...Role[]] = ['admin'];
const READ_ROLES: readonly [Role, ...Role[]] = ['admin', 'auditor', 'helpdesk'];

// The policy shape for the OpenAPI document. Bodies take policies as `unknown` so that
// validatePolicySet — the same checks as `stepgate policies apply` — reports every problem
// with its pointer and code, not zod's first impression of it.
const { $schema: _ignored, ...policyJsonSchema } = z.toJSONSchema(policySchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;

const policyInput = z.unknown().meta({ description: 'A policy (see the policy file format).', ...policyJsonSchema });
const policiesInput = z.array(z.unknown()).max(MAX_POLICIES).meta({ description: 'The whole policy set.', items: policyJsonSchema });
const comment = z.string().max(MAX_COMMENT_LENGTH).optional().describe('Why; stored with the version and in the audit log.');
const baseVersion = z.number().int().min(0).optional().describe('The version this change was made against; 409 when another was stored since.');

/** Query-string integers: digits only (no `1e3`, no `-0`), within bounds. */
function queryInt(min: number, max: number) {
  return z
    .string()
    .regex(/^\d{1,9}$/, 'a non-negative integer')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));
}

const replaceSetBody = z.strictObject({ policies: policiesInput, comment, baseVersion });
const onePolicyBody = z.strictObject({ policy: policyInput, comment, baseVersion });
const deleteQuery = z.strictObject({ baseVersion: queryInt(0, 1e9).optional(), comment });
const historyQuery = z.strictObject({ limit: queryInt(1, 200).optional(), offset: queryInt(0, 1e9).optional() });
const diffQuery = z.strictObject({
  from: queryInt(0, 1e9).describe('Version to compare from; 0 is the empty set before the first version.'),
  to: queryInt(0, 1e9).optional().describe('Version to compare to; default the current one.'),
});

const velocityInput = z.strictObject({
  windowSeconds: z.number().int().min(1).max(MAX_VELOCITY_WINDOW_SECONDS),
  count: z.number().int().min(0).max(1e9).describe('Completed step-ups of the user for the action in the window.'),
  amountsByCurrency: z
    .record(z.string().regex(/^[A-Z]{3}$/, 'an ISO 4217 currency code'), z.string().regex(/^\d{1,30}(\.\d{1,6})?$/, 'a decimal string such as "800.00"'))
    .optional()
    .describe('Their summed amounts; a currency left out makes an amount limit in it not hold.'),
});

export const evaluateBody = z.strictObject({
  action: createStepUpBody.shape.action,
  context: createStepUpBody.shape.context,
  subject: z.string().min(1).max(128).optional().describe("A real user (id or username): their groups, enrolled factors and velocity figures, as POST /v1/stepup would see them."),
  user: z
    .strictObject({
      groups: z.array(z.string().min(1).max(64)).max(100).optional(),
      enrolledFactorTypes: z.array(factorTypeIdSchema).max(16).optional(),
    })
    .optional()
    .describe('A hypothetical user instead of subject.'),
  velocity: z.array(velocityInput).max(32).optional().describe("Velocity figures to assume (replace the subject's real ones)."),
  policies: policiesInput.optional().describe('Evaluate this proposed set instead of the current one (validated like a save).'),
});

// ---- responses ---------------------------------------------------------------------------

const policyOutput = z.record(z.string(), z.unknown()).describe('A policy, defaults written out.');

const setSchema = z.object({
  version: z.number().int().describe('0 before any set was stored (everything is denied).'),
  createdAt: z.iso.datetime().nullable(),
  createdBy: z.string().nullable(),
  comment: z.string(),
  policies: z.array(policyOutput),
});

const diffEntry = z.object({ id: z.string(), action: z.string(), changes: z.array(z.object({ path: z.string(), before: z.unknown().optional(), after: z.unknown().optional() })) });
const diffSchema = z.object({ added: z.array(diffEntry), removed: z.array(diffEntry), changed: z.array(diffEntry), unchanged: z.array(z.string()) });

const savedSchema = setSchema.extend({
  previousVersion: z.number().int(),
  changed: z.boolean().describe('False when the set sent equals the current one: no version was stored.'),
  diff: diffSchema,
});

const versionInfo = z.object({ version: z.number().int(), createdAt: z.iso.datetime(), createdBy: z.string(), comment: z.string() });

const evaluateResponse = z.object({
  source: z.enum(['current', 'proposed']),
  decision: z.enum(['allow', 'deny']),
  reason: z.literal('no_matching_policy').optional(),
  version: z.number().int().optional(),
  policyId: z.string().optional(),
  require: z.object({ anyOf: z.array(z.array(z.string())) }).optional(),
  acr: z.enum(ACR_VALUES).optional(),
  tokenTtlSeconds: z.number().int().optional(),
  maxAgeSeconds: z.number().int().optional(),
  satisfiable: z.array(z.array(z.string())).optional().describe('The alternatives this user could complete.'),
  enrollmentRequired: z.boolean().optional(),
  reasons: z.array(
    z.object({ policyId: z.string(), priority: z.number().int(), matched: z.boolean(), conditionsHold: z.boolean(), because: z.array(z.string()) }),
  ).describe("Every policy of the action in evaluation order: which one decided, and why the others did not."),
  user: z.object({ id: z.string().nullable(), status: z.string().nullable(), groups: z.array(z.string()), enrolledFactorTypes: z.array(z.string()) }),
  velocity: z.array(z.object({ windowSeconds: z.number().int(), count: z.number().int(), amountsByCurrency: z.record(z.string(), z.string()).optional() })),
});

const sessionErrors = {
  401: { description: 'No session (`unauthorized`).' },
  403: { description: 'Missing role (`forbidden`) or CSRF token (`csrf_failed`).' },
};
const saveErrors = {
  ...sessionErrors,
  400: { description: '`validation_failed`: one invalid_params entry per problem, pointer into the body and reason `<code>: …` (invalid, duplicate_id, ambiguous_priority, unreachable, acr_unreachable, unknown_factor_type…). Nothing is saved.' },
  409: { description: '`conflict`: baseVersion is stale, or (adding) the id exists.' },
};

// ---- helpers -----------------------------------------------------------------------------

function who(req: Request, res: Response): AuditActor {
  return { actor: authOf(res).userId, ip: req.ip ?? null, requestId: locals(res).requestId };
}

function setJson(set: CurrentPolicySet): z.output<typeof setSchema> {
  return { version: set.version, createdAt: set.createdAt?.toISOString() ?? null, createdBy: set.createdBy, comment: set.comment, policies: set.policies };
}

function savedJson(saved: SavedPolicySet): z.output<typeof savedSchema> {
  return { ...setJson(saved.set), previousVersion: saved.previousVersion, changed: saved.changed, diff: saved.diff };
}

function policyIdParam(req: Request): string {
  const id = String(req.params.id ?? '');
  if (!POLICY_ID_PATTERN.test(id)) throw new AppError('not_found', { detail: `No policy ${id.slice(0, 64)} in the current set.` });
  return id;
}

function versionParam(req: Request): number {
  const raw = String(req.params.version ?? '');
  if (!/^\d{1,9}$/.test(raw)) throw new AppError('not_found', { detail: 'No such policy set version.' });
  return Number(raw);
}

// ---- routes ------------------------------------------------------------------------------

export function policiesRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  const writer = requireRole(...WRITE_ROLES);
  const reader = requireRole(...READ_ROLES);

  api.route(
    router,
    { method: 'get', path: '/v1/admin/policies', summary: 'The policy set in force, with its version.', tag: TAG, security: ['session'], responses: { 200: { description: 'The current set.', schema: setSchema }, ...sessionErrors } },
    [reader],
    async (_req, res) => {
      res.json(setJson(await getCurrentPolicySet(gw)));
    },
  );

  api.route(
    router,
    {
      method: 'put',
      path: '/v1/admin/policies',
      summary: 'Replace the whole policy set: validated as a whole, stored as a new version, audited. Sending the current set again stores nothing.',
      tag: TAG,
      security: ['session'],
      body: replaceSetBody,
      responses: { 200: { description: 'Saved (or unchanged).', schema: savedSchema }, ...saveErrors },
    },
    [writer],
    async (req, res, { body }) => {
      res.json(savedJson(await savePolicySet(gw, body.policies, { who: who(req, res), comment: body.comment, baseVersion: body.baseVersion })));
    },
  );

  api.route(
    router,
    {
      method: 'post',
      path: '/v1/admin/policies',
      summary: 'Add one policy (a new id); the resulting set is validated and stored as a new version.',
      tag: TAG,
      security: ['session'],
      body: onePolicyBody,
      responses: { 201: { description: 'Added.', schema: savedSchema }, ...saveErrors },
    },
    [writer],
    async (req, res, { body }) => {
      res.status(201).json(savedJson(await addPolicy(gw, body.policy, { who: who(req, res), comment: body.comment, baseVersion: body.baseVersion })));
    },
  );

  // Literal paths before `/:id`-style ones; policy ids can never clash with them on the same method.
  api.route(
    router,
    {
      method: 'get',
      path: '/v1/admin/policies/versions',
      summary: 'The history of policy set versions, newest first.',
      tag: TAG,
      security: ['session'],
      query: historyQuery,
      responses: { 200: { description: 'A page of versions.', schema: z.object({ versions: z.array(versionInfo), limit: z.number(), offset: z.number(), hasMore: z.boolean() }) }, ...sessionErrors },
    },
    [reader],
    async (_req, res, { query }) => {
      const limit = query.limit ?? 50;
      const offset = query.offset ?? 0;
      const { versions, hasMore } = await policySetHistory(gw, { limit, offset });
      res.json({
        versions: versions.map((v) => ({ version: v.version, createdAt: v.createdAt.toISOString(), createdBy: v.createdBy, comment: v.comment })),
        limit,
        offset,
        hasMore,
      });
    },
  );

  api.route(
    router,
    {
      method: 'get',
      path: '/v1/admin/policies/versions/:version',
      summary: 'One stored version of the policy set.',
      tag: TAG,
      security: ['session'],
      responses: { 200: { description: 'The version.', schema: setSchema }, ...sessionErrors, 404: { description: 'No such version.' } },
    },
    [reader],
    async (req, res) => {
      res.json(setJson(await getPolicySetVersion(gw, versionParam(req))));
    },
  );

  api.route(
    router,
    {
      method: 'get',
      path: '/v1/admin/policies/diff',
      summary: 'What changed between two versions, policy by policy and field by field.',
      tag: TAG,
      security: ['session'],
      query: diffQuery,
      responses: {
        200: { description: 'The difference, structured and as text.', schema: z.object({ from: z.number().int(), to: z.number().int(), diff: diffSchema, text: z.string() }) },
        ...sessionErrors,
        404: { description: 'No such version.' },
      },
    },
    [reader],
    async (_req, res, { query }) => {
      const to = query.to ?? (await getCurrentPolicySet(gw)).version;
      const diff = await diffPolicyVersions(gw, query.from, to);
      res.json({ from: query.from, to, diff, text: formatPolicyDiff(diff) });
    },
  );

  api.route(
    router,
    {
      method: 'post',
      path: '/v1/admin/policies/evaluate',
      summary:
        'Dry run: the decision for an action and context, with the reasons for every policy of the action (which matched, why the others did not). For a real user (subject) or a hypothetical one, against the current or a proposed set. Writes nothing.',
      tag: TAG,
      security: ['session'],
      body: evaluateBody,
      responses: { 200: { description: 'The decision and its reasons.', schema: evaluateResponse }, ...sessionErrors, 400: { description: 'validation_failed (also for an invalid proposed set).' } },
    },
    [reader],
    async (_req, res, { body }) => {
      const result = await evaluatePolicyDryRun(gw, body);
      res.json({ ...result.decision, source: result.source, user: result.user, velocity: result.velocity });
    },
  );

  api.route(
    router,
    {
      method: 'put',
      path: '/v1/admin/policies/:id',
      summary: 'Replace one policy (the body may leave out its id); the resulting set is validated and stored as a new version.',
      tag: TAG,
      security: ['session'],
      body: onePolicyBody,
      responses: { 200: { description: 'Saved (or unchanged).', schema: savedSchema }, ...saveErrors, 404: { description: 'No such policy.' } },
    },
    [writer],
    async (req, res, { body }) => {
      res.json(savedJson(await replacePolicy(gw, policyIdParam(req), body.policy, { who: who(req, res), comment: body.comment, baseVersion: body.baseVersion })));
    },
  );

  api.route(
    router,
    {
      method: 'delete',
      path: '/v1/admin/policies/:id',
      summary: 'Remove one policy; the resulting set is stored as a new version. Requests it decided then fall to the next policy, or are denied.',
      tag: TAG,
      security: ['session'],
      query: deleteQuery,
      responses: { 200: { description: 'Removed.', schema: savedSchema }, ...sessionErrors, 404: { description: 'No such policy.' }, 409: { description: '`conflict`: baseVersion is stale.' } },
    },
    [writer],
    async (req, res, { query }) => {
      res.json(savedJson(await deletePolicy(gw, policyIdParam(req), { who: who(req, res), comment: query.comment, baseVersion: query.baseVersion })));
    },
  );

  return router;
}
