import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';
import { type FactorView, listUserFactors, MAX_LABEL_LENGTH, removeFactor, renameFactor } from '../flows/factors.ts';
import type { ApiRegistry } from './api-registry.ts';
import { authOf, requireFreshLogin, requireSession } from './authorize.ts';
import { locals } from './request-context.ts';

/** The signed-in user's own factors: list, rename, remove. Enrolment routes live with each type. */

export const factorJsonSchema = z.object({
  id: z.string(),
  type: z.string().describe('password, totp, sms_otp, hardware_otp, webauthn, recovery_code'),
  label: z.string(),
  status: z.enum(['pending', 'active', 'disabled']),
  created_at: z.string(),
  last_used_at: z.string().nullable(),
  locked_until: z.string().nullable(),
  details: z.record(z.string(), z.unknown()).describe('Public parameters: algorithm, digits, masked phone, serial, AAGUID…'),
});

export function factorToJson(f: FactorView): z.infer<typeof factorJsonSchema> {
  return {
    id: f.id,
    type: f.type,
    label: f.label,
    status: f.status,
    created_at: f.createdAt.toISOString(),
    last_used_at: f.lastUsedAt?.toISOString() ?? null,
    locked_until: f.lockedUntil?.toISOString() ?? null,
    details: f.details,
  };
}

const factorIdParam = z.string().regex(/^fac_[A-Za-z0-9_-]{10,64}$/);

export function factorIdOf(req: Request): string {
  const parsed = factorIdParam.safeParse(req.params.id);
  if (!parsed.success) throw new AppError('not_found', { detail: 'No such factor.' });
  return parsed.data;
}

export function whoOf(req: Request, res: Response) {
  return { actor: authOf(res).userId, ip: req.ip ?? null, requestId: locals(res).requestId };
}

const sessionErrors = {
  401: { description: 'unauthorized (no session) or fresh_login_required' },
  403: { description: 'csrf_failed, or forbidden (the password cannot be removed)' },
} as const;

export function meFactorsRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  const fresh = requireFreshLogin(gw);

  api.route(router, {
    method: 'get', path: '/v1/me/factors', tag: 'my factors', security: ['session'],
    summary: 'The signed-in user\'s factors with their last use.',
    responses: { 200: { description: 'The factors.', schema: z.object({ factors: z.array(factorJsonSchema) }) }, ...sessionErrors },
  }, [requireSession], async (_req, res) => {
    const factors = await listUserFactors(gw, authOf(res).userId);
    res.setHeader('Cache-Control', 'no-store');
    res.json({ factors: factors.map(factorToJson) });
  });

  api.route(router, {
    method: 'patch', path: '/v1/me/factors/:id', tag: 'my factors', security: ['session'],
    summary: 'Rename a factor ("Work laptop fingerprint").',
    body: z.strictObject({ label: z.string().min(1).max(MAX_LABEL_LENGTH) }),
    responses: { 200: { description: 'Renamed.', schema: factorJsonSchema }, ...sessionErrors, 404: { description: 'No such factor.' } },
  }, [requireSession], async (req, res, { body }) => {
    const view = await renameFactor(gw, authOf(res).userId, factorIdOf(req), body.label, whoOf(req, res));
    res.json(factorToJson(view));
  });

  api.route(router, {
    method: 'delete', path: '/v1/me/factors/:id', tag: 'my factors', security: ['session'],
    summary: 'Remove a factor (needs a fresh sign-in). The password cannot be removed.',
    responses: { 204: { description: 'Removed.' }, ...sessionErrors, 404: { description: 'No such factor.' } },
  }, [requireSession, fresh], async (req, res) => {
    await removeFactor(gw, authOf(res).userId, factorIdOf(req), whoOf(req, res));
    res.status(204).end();
  });

  return router;
}
