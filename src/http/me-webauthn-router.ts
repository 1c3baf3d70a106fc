import { Router } from 'express';
import { z } from 'zod';
import type { Gateway } from '../gateway.ts';
import { MAX_LABEL_LENGTH } from '../flows/factors.ts';
import { getUser } from '../flows/users.ts';
import { beginWebAuthnRegistration, finishWebAuthnRegistration, webauthnServices } from '../flows/webauthn.ts';
import { AppError } from '../errors/app-error.ts';
import type { ApiRegistry } from './api-registry.ts';
import { authOf, requireFreshLogin, requireSession } from './authorize.ts';
import { factorJsonSchema, factorToJson, whoOf } from './me-factors-router.ts';

/**
 * Enrolling a WebAuthn credential (fingerprint, face, device PIN, security key) for the
 * signed-in user: options first, then the browser's answer. Both need a fresh sign-in and
 * the session's CSRF token; the "my security" page's script calls exactly these.
 */

const factorId = z.string().regex(/^fac_[A-Za-z0-9_-]{10,64}$/);

export function meWebAuthnRouter(gw: Gateway, api: ApiRegistry): Router {
  // Built now so a bad webauthn section stops the start, not the first enrolment.
  webauthnServices(gw);
  const router = Router();
  const fresh = requireFreshLogin(gw);
  const errors = {
    401: { description: 'unauthorized, or fresh_login_required (sign in again first)' },
    403: { description: 'csrf_failed' },
    503: { description: 'WebAuthn is not configured on this gateway' },
  } as const;

  api.route(router, {
    method: 'post', path: '/v1/me/factors/webauthn/registration', tag: 'my factors', security: ['session'],
    summary: 'Start registering a WebAuthn credential: creation options for navigator.credentials.create (UV required).',
    body: z.strictObject({ label: z.string().min(1).max(MAX_LABEL_LENGTH).describe('The name the user gives it ("Work laptop fingerprint").') }),
    responses: {
      200: {
        description: 'Pass `options` to @simplewebauthn/browser startRegistration({optionsJSON}); then POST /v1/me/factors/webauthn.',
        schema: z.object({ factor_id: z.string(), expires_in: z.number().int(), options: z.record(z.string(), z.unknown()).describe('PublicKeyCredentialCreationOptionsJSON') }),
      },
      409: { description: 'conflict: the per-type limit is reached' },
      ...errors,
    },
  }, [requireSession, fresh], async (req, res, { body }) => {
    const auth = authOf(res);
    const user = await getUser(gw, auth.userId);
    if (user === undefined) throw new AppError('unauthorized');
    const started = await beginWebAuthnRegistration(gw, { id: user.id, username: user.username, displayName: user.displayName }, body.label, whoOf(req, res));
    res.setHeader('Cache-Control', 'no-store');
    res.json({ factor_id: started.factorId, expires_in: started.expiresInSeconds, options: started.options });
  });

  api.route(router, {
    method: 'post', path: '/v1/me/factors/webauthn', tag: 'my factors', security: ['session'],
    summary: 'Finish registering: the RegistrationResponseJSON from startRegistration. The credential becomes an active factor.',
    body: z.strictObject({
      factor_id: factorId,
      credential: z.record(z.string(), z.unknown()).describe('RegistrationResponseJSON'),
      label: z.string().min(1).max(MAX_LABEL_LENGTH).optional(),
    }),
    responses: {
      201: { description: 'Registered.', schema: factorJsonSchema },
      400: { description: 'registration_refused: the response failed a check (wrong origin or RP ID, no user verification, attestation policy…); start again' },
      404: { description: 'not_found: no such registration in progress (expired, or already finished)' },
      409: { description: 'conflict: this authenticator is already registered' },
      ...errors,
    },
  }, [requireSession, fresh], async (req, res, { body }) => {
    const view = await finishWebAuthnRegistration(gw, authOf(res).userId, body.factor_id, body.credential, body.label, whoOf(req, res));
    res.setHeader('Cache-Control', 'no-store');
    res.status(201).json(factorToJson(view));
  });

  return router;
}
