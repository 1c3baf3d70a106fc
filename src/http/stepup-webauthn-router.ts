import { type Request, type Response, Router } from 'express';
import { z } from 'zod';
import type { Gateway } from '../gateway.ts';
import { constantTimeEqual } from '../crypto/constant-time.ts';
import { AppError } from '../errors/app-error.ts';
import { startStepUpChallenge } from '../flows/stepup-challenge.ts';
import { authorizeTicket, verifyStepUpFactor } from '../flows/verify-stepup-factor.ts';
import type { StepUp } from '../stepup/stepup-record.ts';
import type { ApiRegistry } from './api-registry.ts';
import { localeOf } from './pages-router.ts';
import { locals } from './request-context.ts';
import { returnUrl, STEPUP_CSRF_FIELD, stepUpCsrf, stepUpTicketCookieName } from './stepup-pages-router.ts';

/**
 * The step-up page's "Use fingerprint" button: the same challenge and verify flows as the
 * native API, authorised the way the page is — the ticket in its HttpOnly cookie (scoped to
 * /stepup/{id}) plus the page's own CSRF value in the body — because the page's script
 * never sees the ticket. Answers are JSON (problem+json on errors) for that script.
 */

const ID = /^stp_[A-Za-z0-9_-]{10,64}$/;
const TICKET = /^[A-Za-z0-9_-]{16,128}$/;
const csrfField = z.string().min(1).max(128).describe('The page\'s _stepup_csrf value.');

export function stepUpWebAuthnRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();

  async function load(req: Request, csrf: string): Promise<StepUp> {
    const id = req.params.id;
    const cookie = (req.cookies as Record<string, unknown> | undefined)?.[stepUpTicketCookieName(gw)];
    const ticket = typeof cookie === 'string' && TICKET.test(cookie) ? cookie : undefined;
    if (typeof id !== 'string' || !ID.test(id)) throw new AppError('invalid_ticket');
    const stepUp = await authorizeTicket(gw, id, ticket);
    if (!constantTimeEqual(csrf, stepUpCsrf(gw, stepUp))) throw new AppError('csrf_failed', { invalidParams: [{ pointer: `/${STEPUP_CSRF_FIELD}`, reason: 'reload the page' }] });
    return stepUp;
  }

  function who(req: Request, res: Response) {
    return { ip: req.ip ?? null, requestId: locals(res).requestId };
  }

  api.route(router, {
    method: 'post', path: '/stepup/:id/webauthn/challenge', tag: 'step-up page', security: ['ticket'],
    summary: 'Step-up page script: WebAuthn request options for this step-up (ticket from the page cookie).',
    body: z.strictObject({ [STEPUP_CSRF_FIELD]: csrfField }),
    responses: {
      200: { description: 'Options for startAuthentication({optionsJSON}).', schema: z.object({ options: z.record(z.string(), z.unknown()), expires_in: z.number().int() }) },
      400: { description: 'factor_not_allowed (no usable credential)' },
      401: { description: 'invalid_ticket' },
      403: { description: 'csrf_failed' },
      409: { description: 'stepup_not_pending' },
      410: { description: 'stepup_expired' },
      429: { description: 'challenge_cooldown, challenge_attempts_exhausted' },
    },
  }, [], async (req, res, { body }) => {
    const stepUp = await load(req, body[STEPUP_CSRF_FIELD]);
    const started = await startStepUpChallenge(gw, stepUp, { factor: 'webauthn', locale: localeOf(req) }, who(req, res));
    res.setHeader('Cache-Control', 'no-store');
    res.json({ options: started.publicData.options as Record<string, unknown>, expires_in: started.expiresInSeconds });
  });

  api.route(router, {
    method: 'post', path: '/stepup/:id/webauthn/verify', tag: 'step-up page', security: ['ticket'],
    summary: 'Step-up page script: the assertion from startAuthentication.',
    body: z.strictObject({ [STEPUP_CSRF_FIELD]: csrfField, credential: z.record(z.string(), z.unknown()).describe('AuthenticationResponseJSON') }),
    responses: {
      200: { description: 'Accepted. `redirect` is where the page goes next (the relying service, or the page itself).', schema: z.object({ completed: z.boolean(), redirect: z.string() }) },
      400: { description: 'challenge_required, factor_not_allowed (a credential this step-up did not offer)' },
      401: { description: 'invalid_ticket, factor_invalid' },
      403: { description: 'csrf_failed' },
      423: { description: 'factor_locked' },
      429: { description: 'attempts_exhausted, challenge_attempts_exhausted' },
    },
  }, [], async (req, res, { body }) => {
    const stepUp = await load(req, body[STEPUP_CSRF_FIELD]);
    const result = await verifyStepUpFactor(gw, stepUp, { factor: 'webauthn', input: { credential: body.credential } }, who(req, res));
    const target = result.completed ? returnUrl(result.stepUp, 'completed') : undefined;
    res.setHeader('Cache-Control', 'no-store');
    res.json({ completed: result.completed, redirect: target ?? `/stepup/${stepUp.id}` });
  });

  return router;
}
