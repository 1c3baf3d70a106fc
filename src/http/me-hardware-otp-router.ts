import { Router } from 'express';
import { z } from 'zod';
import { AppError } from '../errors/app-error.ts';
import { listUserFactors, MAX_LABEL_LENGTH } from '../flows/factors.ts';
import { bindOwnToken, releaseOwnToken, resyncOwnToken } from '../flows/hardware-tokens.ts';
import type { Gateway } from '../gateway.ts';
import { MAX_CODE_INPUT_LENGTH, normaliseOtpInput } from '../otp/code-input.ts';
import type { ApiRegistry } from './api-registry.ts';
import { authOf, requireFreshLogin, requireSession } from './authorize.ts';
import { factorIdOf, factorJsonSchema, factorToJson, whoOf } from './me-factors-router.ts';

/**
 * Self-service for hardware OTP tokens: bind a token by the serial printed on it plus a
 * current code, resynchronise it with two consecutive codes, report it lost. Session + CSRF
 * header, and a fresh sign-in (config session.freshSeconds) like every change of factors.
 * Giving a token back is `DELETE /v1/me/factors/{id}` (it returns to the inventory).
 */

// Full-width digits (a Chinese IME) and spaces are read like the factor reads them (normaliseOtpInput).
const code = z
  .string()
  .max(MAX_CODE_INPUT_LENGTH)
  .refine((v) => /^[0-9]{6,8}$/.test(normaliseOtpInput(v)), 'the 6–8 digits the token shows');

const bindBody = z.strictObject({
  serial: z.string().trim().min(1).max(64).describe('As printed on the back of the token.'),
  code,
  next_code: code.optional().describe('The code after it too, when one code is not accepted (the token was pressed many times or its clock drifted).'),
  label: z.string().min(1).max(MAX_LABEL_LENGTH).optional(),
});

const resyncBody = z.strictObject({ code, next_code: code });

const errors = {
  401: { description: 'unauthorized (no session) or fresh_login_required' },
  403: { description: 'csrf_failed' },
} as const;

export function meHardwareOtpRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  const fresh = requireFreshLogin(gw);

  async function factorJson(userId: string, factorId: string) {
    const f = (await listUserFactors(gw, userId)).find((x) => x.id === factorId);
    if (f === undefined) throw new AppError('not_found', { detail: 'No such factor.' });
    return factorToJson(f);
  }

  api.route(
    router,
    {
      method: 'post',
      path: '/v1/me/factors/hardware_otp',
      tag: 'my factors',
      security: ['session'],
      summary: 'Bind a hardware token from stock to yourself: its serial plus the code it shows now. An unknown serial, a token not in stock and a wrong code all answer token_bind_failed.',
      body: bindBody,
      responses: {
        201: { description: 'Bound: the new factor.', schema: z.object({ factor: factorJsonSchema }) },
        400: { description: 'token_bind_failed' },
        409: { description: 'conflict: the per-type limit of factors is reached' },
        429: { description: 'too_many_requests: too many wrong codes (Retry-After)' },
        ...errors,
      },
    },
    [requireSession, fresh],
    async (req, res, { body }) => {
      const userId = authOf(res).userId;
      const view = await bindOwnToken(gw, userId, { serial: body.serial, code: body.code, nextCode: body.next_code, label: body.label }, whoOf(req, res));
      res.status(201).json({ factor: await factorJson(userId, view.factorId ?? '') });
    },
  );

  api.route(
    router,
    {
      method: 'post',
      path: '/v1/me/factors/hardware_otp/:id/resync',
      tag: 'my factors',
      security: ['session'],
      summary: 'Resynchronise your token with two consecutive codes; also unlocks it after too many wrong codes.',
      body: resyncBody,
      responses: { 200: { description: 'Resynchronised.', schema: z.object({ factor: factorJsonSchema }) }, 400: { description: 'token_resync_failed' }, 404: { description: 'not one of your hardware tokens' }, 429: { description: 'too_many_requests' }, ...errors },
    },
    [requireSession, fresh],
    async (req, res, { body }) => {
      const userId = authOf(res).userId;
      const factorId = factorIdOf(req);
      await resyncOwnToken(gw, userId, factorId, { code: body.code, nextCode: body.next_code }, whoOf(req, res));
      res.json({ factor: await factorJson(userId, factorId) });
    },
  );

  api.route(
    router,
    {
      method: 'post',
      path: '/v1/me/factors/hardware_otp/:id/lost',
      tag: 'my factors',
      security: ['session'],
      summary: 'Report your token lost or stolen: it stops working at once, for good.',
      responses: { 204: { description: 'Reported; the factor is gone.' }, 404: { description: 'not one of your hardware tokens' }, ...errors },
    },
    [requireSession, fresh],
    async (req, res) => {
      await releaseOwnToken(gw, authOf(res).userId, factorIdOf(req), 'lost', whoOf(req, res));
      res.status(204).end();
    },
  );

  return router;
}
