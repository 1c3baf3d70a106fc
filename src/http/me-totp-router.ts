import { Router } from 'express';
import { z } from 'zod';
import type { Gateway } from '../gateway.ts';
import { MAX_LABEL_LENGTH } from '../flows/factors.ts';
import { confirmTotpEnrolment, startTotpEnrolment, type TotpEnrolmentMaterial } from '../flows/totp-enrolment.ts';
import { OTP_ALGORITHMS } from '../otp/index.ts';
import type { ApiRegistry } from './api-registry.ts';
import { authOf, requireFreshLogin, requireSession } from './authorize.ts';
import { factorIdOf, factorJsonSchema, factorToJson, whoOf } from './me-factors-router.ts';

/** Enrolling an authenticator app (TOTP) through the JSON API: start, then confirm with a first code. */

const startBody = z
  .strictObject({
    label: z.string().min(1).max(MAX_LABEL_LENGTH).optional().describe('Shown in the factor list (default "Authenticator app").'),
    algorithm: z.enum(OTP_ALGORITHMS).optional().describe('Default from config totp.algorithm; must be in totp.allowedAlgorithms.'),
    digits: z.union([z.literal(6), z.literal(8)]).optional().describe('Default from config totp.digits.'),
    periodSeconds: z.union([z.literal(30), z.literal(60)]).optional().describe('Default from config totp.periodSeconds.'),
  })
  .optional();

const enrolmentSchema = z.object({
  factor_id: z.string(),
  status: z.literal('pending'),
  label: z.string(),
  algorithm: z.enum(OTP_ALGORITHMS),
  digits: z.number().int(),
  period: z.number().int(),
  secret: z.string().describe('The secret in base32, for typing into an app by hand. Shown only now.'),
  otpauth_uri: z.string().describe('otpauth://totp/… (the QR code\'s content).'),
  qr_png_base64: z.string().describe('The QR code as a PNG image, base64.'),
  qr_svg: z.string().describe('The QR code as an SVG document.'),
  expires_at: z.string().describe('Confirm before this time, or start again.'),
});

export function enrolmentToJson(m: TotpEnrolmentMaterial): z.infer<typeof enrolmentSchema> {
  return {
    factor_id: m.factorId,
    status: 'pending',
    label: m.label,
    algorithm: m.params.algorithm,
    digits: m.params.digits,
    period: m.params.period,
    secret: m.secret,
    otpauth_uri: m.uri,
    qr_png_base64: m.qr.png.toString('base64'),
    qr_svg: m.qr.svg,
    expires_at: m.expiresAt.toISOString(),
  };
}

const sessionErrors = {
  401: { description: 'unauthorized (no session) or fresh_login_required (sign in again first)' },
  403: { description: 'csrf_failed' },
} as const;

export function meTotpRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  const fresh = requireFreshLogin(gw);

  api.route(router, {
    method: 'post', path: '/v1/me/factors/totp', tag: 'my factors', security: ['session'],
    summary: 'Start enrolling an authenticator app: a new secret, its otpauth:// URI and QR code. Pending until confirmed.',
    body: startBody,
    responses: {
      201: { description: 'Scan the QR code (or type the secret), then confirm with the first code.', schema: enrolmentSchema },
      400: { description: 'validation_failed: a parameter the configuration does not allow' },
      ...sessionErrors,
      409: { description: 'conflict: the per-type factor limit is reached' },
    },
  }, [requireSession, fresh], async (req, res, { body }) => {
    const started = await startTotpEnrolment(gw, authOf(res).userId, body ?? {}, whoOf(req, res));
    res.setHeader('Cache-Control', 'no-store');
    res.status(201).json(enrolmentToJson(started));
  });

  api.route(router, {
    method: 'post', path: '/v1/me/factors/totp/:id/confirm', tag: 'my factors', security: ['session'],
    summary: 'Confirm an authenticator-app enrolment with the code the app shows. Replaces an older app. The code cannot be used again.',
    body: z.strictObject({ code: z.string().min(1).max(16).describe('The current code, e.g. "492039".') }),
    responses: {
      200: { description: 'The factor is active.', schema: factorJsonSchema },
      400: { description: 'validation_failed' },
      401: { description: 'factor_invalid (wrong code), unauthorized or fresh_login_required' },
      403: { description: 'csrf_failed' },
      404: { description: 'No such enrolment in progress (expired, or discarded after too many wrong codes).' },
      409: { description: 'conflict: already confirmed' },
      429: { description: 'enrolment_attempts_exhausted: the enrolment was discarded; start again' },
    },
  }, [requireSession, fresh], async (req, res, { body }) => {
    const view = await confirmTotpEnrolment(gw, authOf(res).userId, factorIdOf(req), body.code, whoOf(req, res));
    res.json(factorToJson(view));
  });

  return router;
}
