import { Router } from 'express';
import { z } from 'zod';
import type { Gateway } from '../gateway.ts';
import { confirmSmsEnrolment, resendSmsEnrolmentCode, type StartedSmsEnrolment, startSmsEnrolment } from '../flows/sms-enrolment.ts';
import { MAX_LABEL_LENGTH } from '../flows/factors.ts';
import type { ApiRegistry } from './api-registry.ts';
import { authOf, requireFreshLogin, requireSession } from './authorize.ts';
import { factorIdOf, factorJsonSchema, factorToJson, whoOf } from './me-factors-router.ts';
import { localeOf } from './pages-router.ts';

/**
 * Enrolling a phone for SMS codes (session + X-CSRF-Token + a fresh sign-in): start with
 * the number, confirm with the code sent to it. Changing a number is a new enrolment.
 */

const startedSchema = z.object({
  factor_id: z.string().describe('The pending factor: confirm it with the code.'),
  destination: z.string().describe('The number, masked (+86 138****8000).'),
  expires_in: z.number().int().describe('Seconds the code stays valid.'),
  resend_after: z.number().int().describe('Seconds before another code may be requested.'),
});

function startedToJson(s: StartedSmsEnrolment): z.infer<typeof startedSchema> {
  return { factor_id: s.factorId, destination: s.destination, expires_in: s.expiresInSeconds, resend_after: s.resendAfterSeconds };
}

const sessionErrors = {
  401: { description: 'unauthorized, fresh_login_required, or factor_invalid (wrong code)' },
  403: { description: 'csrf_failed' },
} as const;

const sendErrors = {
  429: { description: 'challenge_cooldown or sms_limit_exceeded (Retry-After), challenge_attempts_exhausted' },
  503: { description: 'sms_unavailable: the provider failed or timed out (Retry-After); no code is usable' },
} as const;

export function meSmsOtpRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  const fresh = requireFreshLogin(gw);

  api.route(router, {
    method: 'post', path: '/v1/me/factors/sms_otp', tag: 'my factors', security: ['session'],
    summary: 'Enrol a phone: validates the number (E.164, mobile, allowed region) and texts it a code.',
    body: z.strictObject({
      phone: z.string().min(1).max(32).describe('E.164 (+8613800138000); spaces and dashes allowed; without "+" read in sms.defaultRegion.'),
      label: z.string().max(MAX_LABEL_LENGTH).optional().describe('Default: the masked number.'),
    }),
    responses: {
      201: { description: 'Code sent; the phone is pending until confirmed.', schema: startedSchema },
      400: { description: 'phone_invalid or sms_region_not_allowed (invalid_params points at /phone), validation_failed' },
      409: { description: 'conflict: the phone is already enrolled, or the per-type limit is reached' },
      ...sessionErrors,
      ...sendErrors,
    },
  }, [requireSession, fresh], async (req, res, { body }) => {
    const started = await startSmsEnrolment(gw, authOf(res).userId, { phone: body.phone, label: body.label }, localeOf(req), whoOf(req, res));
    res.setHeader('Cache-Control', 'no-store');
    res.status(201).json(startedToJson(started));
  });

  api.route(router, {
    method: 'post', path: '/v1/me/factors/sms_otp/:id/resend', tag: 'my factors', security: ['session'],
    summary: 'Send a new code for a pending phone (after the cooldown). The attempt count is kept.',
    responses: { 200: { description: 'A new code was sent; the previous one is void.', schema: startedSchema }, 404: { description: 'No such pending phone.' }, ...sessionErrors, ...sendErrors },
  }, [requireSession, fresh], async (req, res) => {
    const started = await resendSmsEnrolmentCode(gw, authOf(res).userId, factorIdOf(req), localeOf(req), whoOf(req, res));
    res.setHeader('Cache-Control', 'no-store');
    res.json(startedToJson(started));
  });

  api.route(router, {
    method: 'post', path: '/v1/me/factors/sms_otp/:id/confirm', tag: 'my factors', security: ['session'],
    summary: 'Confirm a pending phone with the code it received: it becomes an SMS factor.',
    body: z.strictObject({ code: z.string().min(1).max(64).describe('The 6 digits from the SMS.') }),
    responses: {
      200: { description: 'The phone is enrolled.', schema: factorJsonSchema },
      400: { description: 'challenge_required: the code expired or none was sent (ask for a new one)' },
      404: { description: 'No such pending phone (or it expired).' },
      429: { description: 'challenge_attempts_exhausted: start again' },
      ...sessionErrors,
    },
  }, [requireSession, fresh], async (req, res, { body }) => {
    const view = await confirmSmsEnrolment(gw, authOf(res).userId, factorIdOf(req), body.code, whoOf(req, res));
    res.json(factorToJson(view));
  });

  return router;
}
