import { type Request, type Response, Router } from 'express';
import { z } from 'zod';
import {
  changeUserStatus,
  issuePasswordReset,
  listAuditEvents,
  type Operator,
  removeUserFactor,
  resetUserFactors,
  type UserDetail,
  endSessionsOfUser,
  unlockUser,
  userDetail,
  verifyAuditLog,
} from '../flows/admin-users.ts';
import { createUser, listUsers, ROLES, type Role } from '../flows/users.ts';
import type { Gateway } from '../gateway.ts';
import type { ApiHandler, ApiRegistry, RouteSpec } from './api-registry.ts';
import { userJsonSchema, userToJson } from './auth-router.ts';
import { authOf, requireRole, requireSession } from './authorize.ts';
import { locals } from './request-context.ts';

/**
 * The admin API under /v1/admin. Deny by default: a route can only be declared through
 * `adminRoute`, whose spec must name a non-empty role list, and the whole prefix requires a
 * session before any route is even matched.
 *
 *   admin     everything
 *   helpdesk  read users, unlock logins, disable / enable accounts, issue password-reset
 *             links, remove / reset factors, end sessions — of ordinary accounts only, not of staff
 *   auditor   read only: users and the audit log, verify the chain
 */

// ---- JSON shapes -------------------------------------------------------------------------

const roleSchema = z.enum(ROLES as [Role, ...Role[]]);

const userDetailSchema = userJsonSchema.extend({
  factors: z.array(z.object({ id: z.string(), type: z.string(), label: z.string(), status: z.string(), created_at: z.iso.datetime(), last_used_at: z.iso.datetime().nullable() })),
  login: z.object({ failures: z.number().int(), locked_until: z.iso.datetime().nullable() }),
});

function userDetailJson(d: UserDetail): z.output<typeof userDetailSchema> {
  return {
    ...userToJson(d),
    factors: d.factors.map((f) => ({ id: f.id, type: f.type, label: f.label, status: f.status, created_at: f.createdAt.toISOString(), last_used_at: f.lastUsedAt?.toISOString() ?? null })),
    login: { failures: d.login.failures, locked_until: d.login.lockedUntil?.toISOString() ?? null },
  };
}

const auditEventSchema = z.object({
  seq: z.number().int(),
  at: z.iso.datetime(),
  type: z.string(),
  actor: z.string().nullable(),
  subject: z.string().nullable(),
  ip: z.string().nullable(),
  request_id: z.string().nullable(),
  data: z.record(z.string(), z.unknown()),
  hash: z.string(),
});

const chainSchema = z.object({
  ok: z.boolean(),
  rows: z.number().int(),
  head_hash: z.string().optional(),
  broken_seq: z.number().int().optional(),
  reason: z.enum(['hash_mismatch', 'prev_hash_mismatch', 'sequence_gap', 'head_mismatch']).optional(),
});

// ---- inputs ------------------------------------------------------------------------------

/** Query-string integers: digits only (no `1e3`, no `-0`), within bounds. */
function queryInt(min: number, max: number, fallback: number) {
  return z
    .string()
    .regex(/^\d{1,7}$/, 'a non-negative integer')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))
    .optional()
    .transform((v) => v ?? fallback);
}

const listUsersQuery = z.strictObject({
  query: z.string().max(128).optional(),
  limit: queryInt(1, 200, 50),
  offset: queryInt(0, 1_000_000, 0),
});

const createUserBody = z.strictObject({
  username: z.string().min(1).max(256),
  display_name: z.string().max(256).optional(),
  password: z.string().min(1).max(1024),
  roles: z.array(roleSchema).max(ROLES.length).optional(),
  groups: z.array(z.string().min(1).max(64)).max(50).optional(),
});

/** Every change says why; the reason goes into the audit log. */
const reasonBody = z.strictObject({
  reason: z.string().trim().min(3, 'say why (at least 3 characters)').max(500),
});

const factorResetBody = z.strictObject({
  reason: reasonBody.shape.reason,
  types: z
    .array(z.string().regex(/^[a-z][a-z0-9_]{0,31}$/, 'a factor type such as totp or sms_otp'))
    .min(1)
    .max(20)
    .optional()
    .describe('Only these factor types (default: every type but the password).'),
});

const auditQuery = z.strictObject({
  type: z
    .string()
    .regex(/^[a-z0-9_.]{1,64}\*?$/, 'an event type like user.created, or a prefix ending in * (user.*)')
    .optional(),
  subject: z.string().min(1).max(128).optional(),
  actor: z.string().min(1).max(128).optional(),
  since: z.iso.datetime({ offset: true }).optional(),
  until: z.iso.datetime({ offset: true }).optional(),
  limit: queryInt(1, 500, 50),
  offset: queryInt(0, 10_000_000, 0),
});

// ---- routes ------------------------------------------------------------------------------

type RoleList = readonly [Role, ...Role[]];

function operatorOf(req: Request, res: Response): Operator {
  const auth = authOf(res);
  return { userId: auth.userId, roles: auth.roles, ip: req.ip ?? null, requestId: locals(res).requestId };
}

export function adminRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  // Nothing under /v1/admin is reachable without a session, declared route or not.
  router.use('/v1/admin', requireSession);

  function adminRoute<B extends z.ZodType | undefined, Q extends z.ZodType | undefined>(
    spec: Omit<RouteSpec<B, Q>, 'tag' | 'security'> & { roles: RoleList },
    handler: ApiHandler<B, Q>,
  ): void {
    const { roles, ...rest } = spec;
    if (roles.length === 0) throw new TypeError(`admin route ${spec.path} has no roles`);
    api.route(
      router,
      {
        ...rest,
        tag: 'admin',
        security: ['session'],
        summary: `${spec.summary} Roles: ${roles.join(', ')}.`,
        responses: { ...spec.responses, 401: { description: 'no session' }, 403: { description: `not one of: ${roles.join(', ')}` } },
      } as RouteSpec<B, Q>,
      [requireSession, requireRole(...roles)],
      handler,
    );
  }

  adminRoute(
    {
      method: 'get',
      path: '/v1/admin/users',
      roles: ['admin', 'helpdesk', 'auditor'],
      summary: 'List users, optionally matching `query` in the username or display name.',
      query: listUsersQuery,
      responses: { 200: { description: 'a page of users', schema: z.object({ users: z.array(userJsonSchema), limit: z.number(), offset: z.number(), has_more: z.boolean() }) } },
    },
    async (_req, res, { query }) => {
      const users = await listUsers(gw, { query: query.query, limit: query.limit + 1, offset: query.offset });
      res.json({ users: users.slice(0, query.limit).map(userToJson), limit: query.limit, offset: query.offset, has_more: users.length > query.limit });
    },
  );

  adminRoute(
    {
      method: 'post',
      path: '/v1/admin/users',
      roles: ['admin'],
      summary: 'Create a user with a password, roles and groups.',
      body: createUserBody,
      responses: {
        201: { description: 'created', schema: z.object({ user: userJsonSchema }) },
        409: { description: 'username taken' },
      },
    },
    async (req, res, { body }) => {
      const op = operatorOf(req, res);
      const { display_name: displayName, ...rest } = body;
      const user = await createUser(gw, { ...rest, displayName }, { actor: op.userId, ip: op.ip, requestId: op.requestId });
      res.status(201).location(`/v1/admin/users/${encodeURIComponent(user.id)}`).json({ user: userToJson(user) });
    },
  );

  adminRoute(
    {
      method: 'get',
      path: '/v1/admin/users/:id',
      roles: ['admin', 'helpdesk', 'auditor'],
      summary: 'One user with factor metadata (never secrets) and login-lock state.',
      responses: { 200: { description: 'the user', schema: z.object({ user: userDetailSchema }) }, 404: { description: 'no such user' } },
    },
    async (req, res) => {
      res.json({ user: userDetailJson(await userDetail(gw, String(req.params.id))) });
    },
  );

  adminRoute(
    {
      method: 'post',
      path: '/v1/admin/users/:id/sessions/end',
      roles: ['admin', 'helpdesk'],
      summary: 'End every session of the user (signed out everywhere at once); who and why are audited.',
      body: reasonBody,
      responses: { 200: { description: 'ended', schema: z.object({ sessions_ended: z.number().int() }) }, 403: { description: "forbidden (helpdesk on a staff account)" }, 404: { description: 'no such user' } },
    },
    async (req, res, { body }) => {
      res.json({ sessions_ended: await endSessionsOfUser(gw, operatorOf(req, res), String(req.params.id), body.reason) });
    },
  );

  adminRoute(
    {
      method: 'post',
      path: '/v1/admin/users/:id/unlock',
      roles: ['admin', 'helpdesk'],
      summary: "Clear the user's failed-login counter and lock.",
      body: reasonBody,
      responses: { 200: { description: 'unlocked', schema: z.object({ user: userDetailSchema }) }, 404: { description: 'no such user' } },
    },
    async (req, res, { body }) => {
      res.json({ user: userDetailJson(await unlockUser(gw, operatorOf(req, res), String(req.params.id), body.reason)) });
    },
  );

  for (const [action, status] of [['disable', 'disabled'], ['enable', 'active']] as const) {
    adminRoute(
      {
        method: 'post',
        path: `/v1/admin/users/:id/${action}`,
        roles: ['admin', 'helpdesk'],
        summary: action === 'disable' ? 'Disable the account and end its sessions.' : 'Re-enable a disabled account.',
        body: reasonBody,
        responses: {
          200: { description: `${status}`, schema: z.object({ user: userDetailSchema }) },
          404: { description: 'no such user' },
          409: { description: 'disabling your own account' },
        },
      },
      async (req, res, { body }) => {
        res.json({ user: userDetailJson(await changeUserStatus(gw, operatorOf(req, res), String(req.params.id), status, body.reason)) });
      },
    );
  }

  adminRoute(
    {
      method: 'post',
      path: '/v1/admin/users/:id/password-reset',
      roles: ['admin', 'helpdesk'],
      summary:
        'Issue a one-time password-reset link for the user (valid admin.passwordResetLinkSeconds; only the newest works). Hand it to the user over a trusted channel: whoever opens it sets the password. The operator never sees or sets the password.',
      body: reasonBody,
      responses: {
        201: { description: 'the link (shown once, never stored)', schema: z.object({ reset_url: z.string(), expires_at: z.iso.datetime() }) },
        404: { description: 'no such user' },
        409: { description: 'the account is disabled' },
      },
    },
    async (req, res, { body }) => {
      const link = await issuePasswordReset(gw, operatorOf(req, res), String(req.params.id), body.reason);
      res.setHeader('Cache-Control', 'no-store');
      res.status(201).json({ reset_url: link.url, expires_at: link.expiresAt.toISOString() });
    },
  );

  adminRoute(
    {
      method: 'post',
      path: '/v1/admin/users/:id/factors/:factorId/remove',
      roles: ['admin', 'helpdesk'],
      summary: "Remove one of the user's factors (a lost phone, a broken token); audited with who and why. The password is reset, not removed.",
      body: reasonBody,
      responses: {
        200: { description: 'removed', schema: z.object({ user: userDetailSchema }) },
        404: { description: 'no such user or factor' },
        409: { description: 'the password factor' },
      },
    },
    async (req, res, { body }) => {
      res.json({ user: userDetailJson(await removeUserFactor(gw, operatorOf(req, res), String(req.params.id), String(req.params.factorId), body.reason)) });
    },
  );

  adminRoute(
    {
      method: 'post',
      path: '/v1/admin/users/:id/factors/reset',
      roles: ['admin', 'helpdesk'],
      summary: "Reset the user's factors: remove all of them but the password (or only those of `types`) and end the user's sessions; audited with who and why.",
      body: factorResetBody,
      responses: {
        200: {
          description: 'what was removed',
          schema: z.object({ user: userDetailSchema, removed: z.array(z.object({ id: z.string(), type: z.string() })), sessions_ended: z.number().int() }),
        },
        404: { description: 'no such user' },
      },
    },
    async (req, res, { body }) => {
      const r = await resetUserFactors(gw, operatorOf(req, res), String(req.params.id), body.reason, body.types);
      res.json({ user: userDetailJson(r.user), removed: r.removed, sessions_ended: r.sessionsEnded });
    },
  );

  adminRoute(
    {
      method: 'get',
      path: '/v1/admin/audit',
      roles: ['admin', 'auditor'],
      summary: 'Audit events, newest first, filtered by type (or `prefix*`), subject, actor and time.',
      query: auditQuery,
      responses: { 200: { description: 'a page of events', schema: z.object({ events: z.array(auditEventSchema), limit: z.number(), offset: z.number(), has_more: z.boolean() }) } },
    },
    async (_req, res, { query }) => {
      const { events, hasMore } = await listAuditEvents(gw, {
        type: query.type,
        subject: query.subject,
        actor: query.actor,
        since: query.since === undefined ? undefined : new Date(query.since),
        until: query.until === undefined ? undefined : new Date(query.until),
        limit: query.limit,
        offset: query.offset,
      });
      res.json({
        events: events.map((e) => ({ seq: e.seq, at: e.at.toISOString(), type: e.type, actor: e.actor, subject: e.subject, ip: e.ip, request_id: e.requestId, data: e.data, hash: e.hash })),
        limit: query.limit,
        offset: query.offset,
        has_more: hasMore,
      });
    },
  );

  adminRoute(
    {
      method: 'post',
      path: '/v1/admin/audit/verify',
      roles: ['admin', 'auditor'],
      summary: 'Verify the audit hash chain; names the first broken row.',
      responses: { 200: { description: 'the verification result (ok false when broken)', schema: chainSchema } },
    },
    async (req, res) => {
      const r = await verifyAuditLog(gw, operatorOf(req, res));
      res.json(r.ok ? { ok: true, rows: r.rows, head_hash: r.headHash } : { ok: false, rows: r.rows, broken_seq: r.brokenSeq, reason: r.reason });
    },
  );

  return router;
}
