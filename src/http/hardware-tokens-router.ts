import express, { type Request, type RequestHandler, type Response, Router } from 'express';
import { z } from 'zod';
import { AppError } from '../errors/app-error.ts';
import type { Operator } from '../flows/admin-users.ts';
import { getImport, type ImportView, importTokenFile, listImports } from '../flows/hardware-token-import.ts';
import { assignToken, getToken, listTokens, replaceToken, reportTokenLost, resyncToken, revokeToken, type TokenActor, type TokenView, unassignToken } from '../flows/hardware-tokens.ts';
import { declaredLengthOver, tokenUploadByteLimit } from '../flows/upload-limit.ts';
import { getUser, ROLES, type Role } from '../flows/users.ts';
import type { Gateway } from '../gateway.ts';
import type { ApiHandler, ApiRegistry, RouteSpec } from './api-registry.ts';
import { authOf, requireRole, requireSession } from './authorize.ts';
import { locals } from './request-context.ts';

/**
 * The hardware-token inventory API under /v1/admin/hardware-tokens (admin console and
 * scripts): upload vendor files, list and search the inventory, the import history, and the
 * lifecycle — assign, unassign, lost, revoke, resync, replace — each with an audited reason.
 *
 *   admin     everything, including imports
 *   helpdesk  read, and every lifecycle change (not for staff accounts: admin, helpdesk, auditor)
 *   auditor   read only
 */

const tokenStateSchema = z.enum(['unassigned', 'assigned', 'locked', 'lost', 'revoked']);

export const tokenJsonSchema = z.object({
  id: z.string(),
  serial: z.string(),
  manufacturer: z.string(),
  model: z.string(),
  kind: z.enum(['hotp', 'totp']).describe('hotp: event-based (counter); totp: time-based (clock). SM3 tokens are either.'),
  algorithm: z.string().describe('SHA1, SHA256, SHA512 (RFC 4226/6238) or SM3 (GM/T 0021).'),
  digits: z.number().int(),
  period_seconds: z.number().int().describe('Time step of time tokens; 0 for event tokens.'),
  state: tokenStateSchema.describe('locked: assigned, but at its failure limit (a resync unlocks it).'),
  user_id: z.string().nullable(),
  username: z.string().nullable(),
  factor_id: z.string().nullable().describe('The user factor (type hardware_otp) while assigned.'),
  import_id: z.string(),
  drift_steps: z.number().int().describe('Learned clock drift of a time token, in steps.'),
  failures: z.number().int(),
  resync_failures: z.number().int().describe('Failed resynchronisations in a row; at hardwareTokens.resyncMaxFailures resync is refused (429) until resync_locked_until.'),
  resync_locked_until: z.iso.datetime().nullable().describe('Until when a resync is refused after too many failed ones; null when it is not.'),
  valid_from: z.iso.datetime().nullable(),
  valid_until: z.iso.datetime().nullable(),
  created_at: z.iso.datetime(),
  updated_at: z.iso.datetime(),
  assigned_at: z.iso.datetime().nullable(),
  last_used_at: z.iso.datetime().nullable(),
});

const iso = (d: Date | null): string | null => d?.toISOString() ?? null;

export function tokenToJson(t: TokenView): z.output<typeof tokenJsonSchema> {
  return {
    id: t.id,
    serial: t.serial,
    manufacturer: t.manufacturer,
    model: t.model,
    kind: t.kind,
    algorithm: t.algorithm,
    digits: t.digits,
    period_seconds: t.periodSeconds,
    state: t.state,
    user_id: t.userId,
    username: t.username,
    factor_id: t.factorId,
    import_id: t.importId,
    drift_steps: t.driftSteps,
    failures: t.failures,
    resync_failures: t.resyncFailures,
    resync_locked_until: iso(t.resyncLockedUntil),
    valid_from: iso(t.validFrom),
    valid_until: iso(t.validUntil),
    created_at: t.createdAt.toISOString(),
    updated_at: t.updatedAt.toISOString(),
    assigned_at: iso(t.assignedAt),
    last_used_at: iso(t.lastUsedAt),
  };
}

const importJsonSchema = z.object({
  id: z.string(),
  created_at: z.iso.datetime(),
  actor: z.string(),
  source: z.enum(['api', 'cli']),
  file_name: z.string(),
  file_sha256: z.string(),
  format: z.enum(['pskc', 'csv']),
  encryption: z.enum(['none', 'psk', 'pbkdf2']),
  status: z.enum(['completed', 'failed']),
  token_count: z.number().int(),
  problem_count: z.number().int(),
  error_code: z.string().nullable(),
});

function importToJson(i: ImportView): z.output<typeof importJsonSchema> {
  return {
    id: i.id,
    created_at: i.createdAt.toISOString(),
    actor: i.actor,
    source: i.source,
    file_name: i.fileName,
    file_sha256: i.fileSha256,
    format: i.format,
    encryption: i.encryption,
    status: i.status,
    token_count: i.tokenCount,
    problem_count: i.problemCount,
    error_code: i.errorCode,
  };
}

/** Query-string integers: digits only, within bounds. */
function queryInt(min: number, max: number, fallback: number) {
  return z
    .string()
    .regex(/^\d{1,7}$/, 'a non-negative integer')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))
    .optional()
    .transform((v) => v ?? fallback);
}

const listQuery = z.strictObject({
  serial: z.string().trim().min(1).max(64).optional().describe('A serial or the start of one.'),
  state: tokenStateSchema.optional(),
  user_id: z.string().min(1).max(64).optional(),
  username: z.string().min(1).max(256).optional(),
  import_id: z.string().min(1).max(64).optional(),
  limit: queryInt(1, 500, 50),
  offset: queryInt(0, 10_000_000, 0),
});

const pageQuery = z.strictObject({ limit: queryInt(1, 200, 50), offset: queryInt(0, 1_000_000, 0) });

const uploadQuery = z.strictObject({
  file_name: z.string().trim().min(1).max(200).optional().describe('Shown in the import history.'),
  format: z.enum(['pskc', 'csv']).optional().describe('Default: from the Content-Type, else PSKC when the file starts with "<".'),
});

const reason = z.string().trim().min(3, 'say why (at least 3 characters)').max(500);
const code = z.string().trim().regex(/^\d{6,8}$/, 'the 6–8 digits the token shows');

const assignBody = z.strictObject({
  user_id: z.string().min(1).max(64),
  code,
  next_code: code.optional().describe('The following code too: searched in the wide resync window (a token whose button was pressed many times, or whose clock wandered).'),
  reason,
});
const reasonBody = z.strictObject({ reason });
const resyncBody = z.strictObject({ code, next_code: code, reason });
const replaceBody = z.strictObject({
  new_serial: z.string().trim().min(1).max(64),
  code: code.describe('A current code of the NEW token.'),
  next_code: code.optional(),
  old_state: z.enum(['lost', 'revoked']).describe('What becomes of the old token.'),
  reason,
});

const CONTENT_FORMATS: Record<string, 'pskc' | 'csv' | undefined> = {
  'application/pskc+xml': 'pskc',
  'application/xml': 'pskc',
  'text/xml': 'pskc',
  'text/csv': 'csv',
  'application/octet-stream': undefined,
};

type RoleList = readonly [Role, ...Role[]];

function operatorOf(req: Request, res: Response): Operator {
  const auth = authOf(res);
  return { userId: auth.userId, roles: auth.roles, ip: req.ip ?? null, requestId: locals(res).requestId };
}

function actorOf(op: Operator): TokenActor {
  return { actor: op.userId, ip: op.ip, requestId: op.requestId, by: 'helpdesk' };
}

/**
 * Only an administrator may change a staff account's tokens (admin, helpdesk or auditor), as
 * for the accounts themselves (flows/admin-users.ts): a helpdesk operator must not put a
 * token they hold on an auditor's account, nor take a staff member's second factor away.
 */
export async function assertMayManageUser(gw: Gateway, op: Operator, userId: string | null): Promise<void> {
  if (userId === null || op.roles.includes('admin')) return;
  const user = await getUser(gw, userId);
  if (user?.roles.some((r) => (ROLES as readonly string[]).includes(r))) {
    throw new AppError('forbidden', { detail: user.roles.includes('admin') ? "Only an administrator can change an administrator's tokens." : "Only an administrator can change a staff account's tokens." });
  }
}

function secretHeader(req: Request, name: string): string | undefined {
  const v = req.get(name);
  return v === undefined || v === '' ? undefined : v;
}

export function hardwareTokensRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  router.use('/v1/admin/hardware-tokens', requireSession);

  function adminRoute<B extends z.ZodType | undefined, Q extends z.ZodType | undefined>(
    spec: Omit<RouteSpec<B, Q>, 'tag' | 'security'> & { roles: RoleList },
    handler: ApiHandler<B, Q>,
    extra: express.RequestHandler[] = [],
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
      [requireSession, requireRole(...roles), ...extra],
      handler,
    );
  }

  // The file is read only after the session and role are checked, with its own size limit.
  // Its declared length is checked first, so an over-large upload is refused unread.
  const raw = express.raw({ type: () => true, limit: tokenUploadByteLimit(gw) });
  const fileBody: RequestHandler = (req, res, next) => {
    const over = declaredLengthOver(gw, req.get('content-length'));
    if (over !== undefined) {
      next(over);
      return;
    }
    raw(req, res, next);
  };

  adminRoute(
    {
      method: 'post',
      path: '/v1/admin/hardware-tokens/imports',
      roles: ['admin'],
      summary:
        'Import a vendor file (PSKC 1.0 or CSV) into the inventory: all tokens or none. An encrypted PSKC file needs the transport key in `X-Token-File-Key` (hex) or the password in `X-Token-File-Password`; a wrong key, a wrong password and a tampered file give the same `token_file_decryption_failed`.',
      rawBody: { contentTypes: Object.keys(CONTENT_FORMATS), description: 'The file as sent by the vendor.' },
      query: uploadQuery,
      responses: {
        201: { description: 'imported', schema: z.object({ import: importJsonSchema }) },
        400: { description: 'token_file_invalid, token_file_key_required, token_file_decryption_failed, token_import_rejected (invalid_params name each refused token by position: PSKC with its serial, CSV by line and column; never a value that could be a seed)' },
        413: { description: 'token_file_too_large / payload_too_large' },
        415: { description: 'a JSON or form body' },
      },
    },
    async (req, res, { query }) => {
      const body = req.body as unknown;
      if (!Buffer.isBuffer(body)) throw new AppError('unsupported_media_type', { detail: 'Send the file itself as the body (application/pskc+xml, text/csv or application/octet-stream).' });
      const type = (req.get('content-type') ?? 'application/octet-stream').split(';')[0]?.trim().toLowerCase() ?? '';
      if (!(type in CONTENT_FORMATS)) throw new AppError('unsupported_media_type', { detail: `Use one of: ${Object.keys(CONTENT_FORMATS).join(', ')}.` });
      const keyHex = secretHeader(req, 'x-token-file-key');
      if (keyHex !== undefined && !/^(?:[0-9a-fA-F]{2}){16,32}$/.test(keyHex)) {
        throw new AppError('validation_failed', { invalidParams: [{ pointer: '/headers/x-token-file-key', reason: '16 to 32 bytes as hex' }] });
      }
      const op = operatorOf(req, res);
      const result = await importTokenFile(
        gw,
        {
          data: body,
          fileName: query.file_name ?? 'upload',
          format: query.format ?? CONTENT_FORMATS[type],
          password: secretHeader(req, 'x-token-file-password'),
          psk: keyHex === undefined ? undefined : Buffer.from(keyHex, 'hex'),
          source: 'api',
        },
        { actor: op.userId, ip: op.ip, requestId: op.requestId },
      );
      res.status(201).location(`/v1/admin/hardware-tokens/imports/${encodeURIComponent(result.id)}`).json({ import: importToJson(result) });
    },
    [fileBody],
  );

  adminRoute(
    {
      method: 'get',
      path: '/v1/admin/hardware-tokens/imports',
      roles: ['admin', 'helpdesk', 'auditor'],
      summary: 'Import history, newest first: completed and failed imports with their counts.',
      query: pageQuery,
      responses: { 200: { description: 'a page of imports', schema: z.object({ imports: z.array(importJsonSchema), limit: z.number(), offset: z.number(), has_more: z.boolean() }) } },
    },
    async (_req, res, { query }) => {
      const { imports, hasMore } = await listImports(gw, query);
      res.json({ imports: imports.map(importToJson), limit: query.limit, offset: query.offset, has_more: hasMore });
    },
  );

  adminRoute(
    {
      method: 'get',
      path: '/v1/admin/hardware-tokens/imports/:id',
      roles: ['admin', 'helpdesk', 'auditor'],
      summary: 'One import.',
      responses: { 200: { description: 'the import', schema: z.object({ import: importJsonSchema }) }, 404: { description: 'no such import' } },
    },
    async (req, res) => {
      res.json({ import: importToJson(await getImport(gw, String(req.params.id))) });
    },
  );

  adminRoute(
    {
      method: 'get',
      path: '/v1/admin/hardware-tokens',
      roles: ['admin', 'helpdesk', 'auditor'],
      summary: 'The inventory by serial; filter by serial prefix, state, user (id or username) and import.',
      query: listQuery,
      responses: { 200: { description: 'a page of tokens', schema: z.object({ tokens: z.array(tokenJsonSchema), limit: z.number(), offset: z.number(), has_more: z.boolean() }) } },
    },
    async (_req, res, { query }) => {
      const { tokens, hasMore } = await listTokens(gw, { serial: query.serial, state: query.state, userId: query.user_id, username: query.username, importId: query.import_id, limit: query.limit, offset: query.offset });
      res.json({ tokens: tokens.map(tokenToJson), limit: query.limit, offset: query.offset, has_more: hasMore });
    },
  );

  adminRoute(
    {
      method: 'get',
      path: '/v1/admin/hardware-tokens/:serial',
      roles: ['admin', 'helpdesk', 'auditor'],
      summary: 'One token (never its seed).',
      responses: { 200: { description: 'the token', schema: z.object({ token: tokenJsonSchema }) }, 404: { description: 'token_not_found' } },
    },
    async (req, res) => {
      res.json({ token: tokenToJson(await getToken(gw, String(req.params.serial))) });
    },
  );

  const lifecycle = { 404: { description: 'token_not_found' }, 409: { description: 'token_state_conflict: not allowed from the current state' } };

  adminRoute(
    {
      method: 'post',
      path: '/v1/admin/hardware-tokens/:serial/assign',
      roles: ['admin', 'helpdesk'],
      summary: 'Bind an unassigned token to a user; `code` (a current code from the token in hand) proves it is that token and that it works.',
      body: assignBody,
      responses: {
        200: { description: 'assigned', schema: z.object({ token: tokenJsonSchema }) },
        400: { description: 'token_code_invalid' },
        429: { description: 'too_many_requests: hardwareTokens.assignMaxFailures wrong codes in a row for this token, or assignActorMaxFailures from this operator; Retry-After' },
        ...lifecycle,
      },
    },
    async (req, res, { body }) => {
      const op = operatorOf(req, res);
      await assertMayManageUser(gw, op, body.user_id);
      const token = await assignToken(gw, actorOf(op), { serial: String(req.params.serial), userId: body.user_id, code: body.code, nextCode: body.next_code, reason: body.reason });
      res.json({ token: tokenToJson(token) });
    },
  );

  for (const [action, summary, run] of [
    ['unassign', 'Take the token back from its user (it returns to stock; its counter is kept).', unassignToken],
    ['lost', 'Report the token lost: unusable at once, final, seed wiped.', reportTokenLost],
    ['revoke', 'Revoke the token: unusable at once, final, seed wiped.', revokeToken],
  ] as const) {
    adminRoute(
      {
        method: 'post',
        path: `/v1/admin/hardware-tokens/:serial/${action}`,
        roles: ['admin', 'helpdesk'],
        summary,
        body: reasonBody,
        responses: { 200: { description: 'done', schema: z.object({ token: tokenJsonSchema }) }, ...lifecycle },
      },
      async (req, res, { body }) => {
        const op = operatorOf(req, res);
        const serial = String(req.params.serial);
        await assertMayManageUser(gw, op, (await getToken(gw, serial)).userId);
        res.json({ token: tokenToJson(await run(gw, actorOf(op), serial, body.reason)) });
      },
    );
  }

  adminRoute(
    {
      method: 'post',
      path: '/v1/admin/hardware-tokens/:serial/resync',
      roles: ['admin', 'helpdesk'],
      summary: 'Resynchronise with two consecutive codes (wide window): re-aligns the counter or clock drift and unlocks a token locked by failures.',
      body: resyncBody,
      responses: {
        200: { description: 'resynchronised', schema: z.object({ token: tokenJsonSchema }) },
        400: { description: 'token_resync_failed (the same whichever code was wrong)' },
        429: { description: 'too_many_requests: hardwareTokens.resyncMaxFailures wrong pairs in a row for this token; Retry-After' },
        ...lifecycle,
      },
    },
    async (req, res, { body }) => {
      const op = operatorOf(req, res);
      const serial = String(req.params.serial);
      await assertMayManageUser(gw, op, (await getToken(gw, serial)).userId);
      res.json({ token: tokenToJson(await resyncToken(gw, actorOf(op), serial, { code: body.code, nextCode: body.next_code }, body.reason)) });
    },
  );

  adminRoute(
    {
      method: 'post',
      path: '/v1/admin/hardware-tokens/:serial/replace',
      roles: ['admin', 'helpdesk'],
      summary: "Replace a user's token: the old one becomes lost or revoked and the new one (proven by a current code) is assigned, in one step.",
      body: replaceBody,
      responses: {
        200: { description: 'the new token', schema: z.object({ token: tokenJsonSchema }) },
        400: { description: 'token_code_invalid' },
        429: { description: 'too_many_requests: hardwareTokens.assignMaxFailures wrong codes in a row for the new token, or assignActorMaxFailures from this operator; Retry-After' },
        ...lifecycle,
      },
    },
    async (req, res, { body }) => {
      const op = operatorOf(req, res);
      const serial = String(req.params.serial);
      await assertMayManageUser(gw, op, (await getToken(gw, serial)).userId);
      const token = await replaceToken(gw, actorOf(op), { serial, newSerial: body.new_serial, code: body.code, nextCode: body.next_code, oldState: body.old_state, reason: body.reason });
      res.json({ token: tokenToJson(token) });
    },
  );

  return router;
}

