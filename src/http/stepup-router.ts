import { stepUpTokenChallenges } from '../flows/hardware-tokens.ts';
import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import type { Gateway } from '../gateway.ts';
import { AppError } from '../errors/app-error.ts';
import { assertNoProtoField, createStepUp, createStepUpBody } from '../flows/create-stepup.ts';
import { cancelStepUp, pollStepUpToken } from '../flows/stepup-token.ts';
import { authorizeTicket, remainingSets, verifyStepUpFactor } from '../flows/verify-stepup-factor.ts';
import { startStepUpChallenge } from '../flows/stepup-challenge.ts';
import { effectiveStatus } from '../stepup/stepup-record.ts';
import { localeOf } from './pages-router.ts';
import type { ApiRegistry } from './api-registry.ts';
import { clientAssertionFields, clientOf, requireClient } from './client-auth.ts';
import { locals } from './request-context.ts';

const TICKET = /^Ticket +([A-Za-z0-9_-]{16,128})$/;

function ticketOf(req: Request): string | undefined {
  const m = TICKET.exec(req.get('authorization') ?? '');
  return m?.[1];
}

function who(req: Request, res: Response) {
  return { ip: req.ip ?? null, requestId: locals(res).requestId };
}

const idParam = z.string().regex(/^stp_[A-Za-z0-9_-]{10,64}$/);

function stepUpId(req: Request): string {
  const parsed = idParam.safeParse(req.params.id);
  if (!parsed.success) throw new AppError('stepup_not_found');
  return parsed.data;
}

const createdSchema = z.object({
  stepup_id: z.string(),
  ticket: z.string().describe('One-time ticket: hand it to the user app (Authorization: Ticket …) or send the user to user_url.'),
  user_url: z.string(),
  expires_in: z.number().int(),
  interval: z.number().int(),
  acr: z.string(),
  options: z.array(z.array(z.string())).describe('Alternatives of factor sets the user can complete.'),
});

const statusSchema = z.object({
  stepup_id: z.string(),
  status: z.enum(['pending', 'completed', 'token_issued', 'denied', 'cancelled', 'expired']),
  action: z.string(),
  binding_message: z.string().nullable(),
  context: z.record(z.string(), z.unknown()),
  options: z.array(z.array(z.string())),
  remaining: z.array(z.array(z.string())),
  proven: z.array(z.string()),
  attempts_left: z.number().int(),
  expires_at: z.string(),
  token_challenges: z
    .array(z.object({ factor_id: z.string(), serial: z.string(), challenge: z.string() }))
    .describe('Challenge-response hardware tokens (GM/T 0021): type `challenge` on the token with this serial, then send the code it shows as hardware_otp (with factorId). Good for this step-up only.'),
});

const verifyBody = z.discriminatedUnion('factor', [
  z.strictObject({ factor: z.literal('password'), password: z.string().min(1).max(1024) }),
  z.strictObject({ factor: z.enum(['totp', 'sms_otp', 'hardware_otp', 'recovery_code']), code: z.string().min(1).max(64), factorId: z.string().max(64).optional() }),
  z.strictObject({ factor: z.literal('webauthn'), credential: z.record(z.string(), z.unknown()), factorId: z.string().max(64).optional() }),
]);

const challengeBody = z.strictObject({
  factor: z.enum(['sms_otp', 'webauthn']).describe('A challenge factor the step-up accepts.'),
  factorId: z.string().max(64).optional().describe('Which of the user\'s factors of that type (a phone); default: the only one, or all (WebAuthn).'),
});

const challengeSchema = z
  .object({
    factor: z.string(),
    factor_id: z.string().nullable(),
    expires_in: z.number().int().describe('Seconds the challenge stays usable.'),
    resend_after: z.number().int().describe('Seconds before another challenge may be requested.'),
  })
  .catchall(z.unknown())
  .describe('Plus factor-specific fields: WebAuthn `options`, SMS `destination` (masked).');

const tokenBody = z.strictObject({ ...clientAssertionFields }).optional();

export function stepUpRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  const client = requireClient(gw);

  api.route(router, {
    method: 'post', path: '/v1/stepup', tag: 'step-up', security: ['clientBasic'],
    summary: 'Relying service: request step-up for a user and the exact action/context.',
    body: createStepUpBody.extend(clientAssertionFields),
    responses: {
      201: { description: 'created', schema: createdSchema },
      400: { description: 'validation_failed; amount_precision_exceeded (more decimals than the currency has), amount_not_canonical (not exactly the currency\'s decimals: "10.10" CNY, "100" JPY), currency_unsupported (no ISO 4217 code with minor units): each with the pointer of the field' },
      401: { description: 'client authentication failed (invalid_client)' },
      403: { description: 'action not allowed for the client, or no policy allows it (access_denied)' },
      409: { description: 'enrollment_required: the user has no factor that satisfies the policy' },
    },
  }, [client], async (req, res, { body }) => {
    assertNoProtoField(req.body);
    const { client_assertion: _a, client_assertion_type: _t, client_id: _c, ...input } = body;
    const created = await createStepUp(gw, clientOf(res), input, who(req, res));
    res.status(201).json({
      stepup_id: created.stepupId,
      ticket: created.ticket,
      user_url: created.userUrl,
      expires_in: created.expiresIn,
      interval: created.interval,
      acr: created.acr,
      options: created.options,
    });
  });

  api.route(router, {
    method: 'get', path: '/v1/stepup/:id', tag: 'step-up', security: ['ticket'],
    summary: 'User app: what is being approved and which factors are still needed.',
    responses: { 200: { description: 'status', schema: statusSchema }, 401: { description: 'invalid_ticket' } },
  }, [], async (req, res) => {
    const s = await authorizeTicket(gw, stepUpId(req), ticketOf(req));
    res.setHeader('Cache-Control', 'no-store');
    res.json({
      stepup_id: s.id,
      status: effectiveStatus(s, gw.clock.now()),
      action: s.action,
      binding_message: s.bindingMessage,
      context: s.context,
      options: s.anyOf,
      remaining: remainingSets(s),
      proven: s.proven.map((p) => p.type),
      attempts_left: Math.max(0, s.maxAttempts - s.attempts),
      expires_at: s.expiresAt.toISOString(),
      token_challenges: s.anyOf.some((set) => set.includes('hardware_otp'))
        ? (await stepUpTokenChallenges(gw, s)).map((c) => ({ factor_id: c.factorId, serial: c.serial, challenge: c.challenge }))
        : [],
    });
  });

  api.route(router, {
    method: 'post', path: '/v1/stepup/:id/verify', tag: 'step-up', security: ['ticket'],
    summary: 'User app: prove one factor (password, code, or WebAuthn credential).',
    body: verifyBody,
    responses: {
      200: { description: 'factor accepted', schema: z.object({ status: z.string(), completed: z.boolean(), remaining: z.array(z.array(z.string())) }) },
      401: { description: 'invalid_ticket, or factor_invalid (the one answer for every wrong secret)' },
      409: { description: 'stepup_not_pending' },
      410: { description: 'stepup_expired' },
      423: { description: 'factor_locked' },
      429: { description: 'attempts_exhausted' },
      503: { description: 'overloaded: every argon2 slot is busy (password only); nothing was charged, retry after Retry-After' },
    },
  }, [], async (req, res, { body }) => {
    const stepUp = await authorizeTicket(gw, stepUpId(req), ticketOf(req));
    const { factor, ...rest } = body;
    const factorId = 'factorId' in rest ? rest.factorId : undefined;
    const input = factor === 'password' ? { password: body.password } : rest;
    const result = await verifyStepUpFactor(gw, stepUp, { factor, ...(factorId === undefined ? {} : { factorId }), input }, who(req, res));
    res.setHeader('Cache-Control', 'no-store');
    res.json({ status: result.stepUp.status, completed: result.completed, remaining: result.completed ? [] : result.remaining });
  });

  api.route(router, {
    method: 'post', path: '/v1/stepup/:id/challenge', tag: 'step-up', security: ['ticket'],
    summary: 'User app: start a challenge factor (send the SMS code, get WebAuthn options). A resend keeps the attempt count.',
    body: challengeBody,
    responses: {
      200: { description: 'challenge started', schema: challengeSchema },
      400: { description: 'factor_not_allowed' },
      401: { description: 'invalid_ticket' },
      409: { description: 'stepup_not_pending' },
      410: { description: 'stepup_expired' },
      429: { description: 'challenge_cooldown (Retry-After), challenge_attempts_exhausted, too_many_requests (send caps)' },
      503: { description: 'the challenge could not be sent (provider down); nothing usable was left behind' },
    },
  }, [], async (req, res, { body }) => {
    const stepUp = await authorizeTicket(gw, stepUpId(req), ticketOf(req));
    const started = await startStepUpChallenge(gw, stepUp, { factor: body.factor, ...(body.factorId === undefined ? {} : { factorId: body.factorId }), locale: localeOf(req) }, who(req, res));
    res.setHeader('Cache-Control', 'no-store');
    res.json({ ...started.publicData, factor: started.factor, factor_id: started.factorId, expires_in: started.expiresInSeconds, resend_after: started.resendAfterSeconds });
  });

  api.route(router, {
    method: 'post', path: '/v1/stepup/:id/token', tag: 'step-up', security: ['clientBasic'],
    summary: 'Relying service: fetch the step-up token (handed out once). CIBA-style polling errors.',
    body: tokenBody,
    responses: {
      200: { description: 'the token', schema: z.object({ step_up_token: z.string(), token_type: z.literal('stepup+jwt'), expires_in: z.number().int() }) },
      400: { description: 'authorization_pending, slow_down (each one adds 5 s to the interval, up to 60; Retry-After), expired_token, invalid_grant (already issued)' },
      403: { description: 'access_denied (the user refused, the client cancelled, or the user\'s account was disabled)' },
      404: { description: 'stepup_not_found: no step-up with this id for this client (one created by another client answers the same)' },
    },
  }, [client], async (req, res) => {
    const issued = await pollStepUpToken(gw, stepUpId(req), clientOf(res).clientId, who(req, res));
    res.setHeader('Cache-Control', 'no-store');
    res.json({ step_up_token: issued.stepUpToken, token_type: 'stepup+jwt', expires_in: issued.expiresIn });
  });

  api.route(router, {
    method: 'delete', path: '/v1/stepup/:id', tag: 'step-up', security: ['clientBasic'],
    summary: 'Relying service: cancel a step-up it created.',
    responses: {
      204: { description: 'cancelled' },
      404: { description: 'stepup_not_found: no step-up with this id for this client (one created by another client answers the same)' },
      409: { description: 'stepup_not_pending' },
      410: { description: 'stepup_expired' },
    },
  }, [client], async (req, res) => {
    await cancelStepUp(gw, stepUpId(req), clientOf(res).clientId, who(req, res));
    res.status(204).end();
  });

  return router;
}
