import { Router } from 'express';
import { z } from 'zod';
import type { Gateway } from '../gateway.ts';
import { generateRecoveryCodeSet } from '../flows/recovery-codes.ts';
import type { ApiRegistry } from './api-registry.ts';
import { authOf, requireFreshLogin, requireSession } from './authorize.ts';
import { whoOf } from './me-factors-router.ts';

/** Recovery codes through the JSON API: generating a set (which replaces any older one). */

const generatedSchema = z.object({
  factor_id: z.string(),
  codes: z.array(z.string()).describe('Shown only now: each works once. Store them somewhere safe.'),
  created_at: z.string(),
  replaced: z.boolean().describe('Whether an older set was replaced: its codes stopped working.'),
});

export function meRecoveryCodeRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();

  api.route(router, {
    method: 'post', path: '/v1/me/factors/recovery_code', tag: 'my factors', security: ['session'],
    summary: 'Generate a new set of single-use recovery codes. The old set stops working at once.',
    responses: {
      201: { description: 'The codes, shown once.', schema: generatedSchema },
      401: { description: 'unauthorized (no session) or fresh_login_required' },
      403: { description: 'csrf_failed' },
      409: { description: 'conflict: another request generated a set at the same moment' },
    },
  }, [requireSession, requireFreshLogin(gw)], async (req, res) => {
    const set = await generateRecoveryCodeSet(gw, authOf(res).userId, whoOf(req, res));
    res.setHeader('Cache-Control', 'no-store');
    res.status(201).json({ factor_id: set.factorId, codes: set.codes, created_at: set.createdAt.toISOString(), replaced: set.replaced });
  });

  return router;
}
