import { type NextFunction, type Request, type Response, Router } from 'express';
import { z } from 'zod';
import { AppError } from '../errors/app-error.ts';
import { completeSessionSecondFactor, consoleSecondFactors, sessionHasSecondFactor } from '../flows/console-session.ts';
import { getUser } from '../flows/users.ts';
import type { Gateway } from '../gateway.ts';
import { MAX_CODE_INPUT_LENGTH, normaliseOtpInput } from '../otp/code-input.ts';
import type { ApiRegistry } from './api-registry.ts';
import { userJsonSchema, userToJson } from './auth-router.ts';
import { authOf, requireSession } from './authorize.ts';
import { isStaff } from './pages-router.ts';
import { locals } from './request-context.ts';
import { setSessionCookie } from './session.ts';

/**
 * The second factor for a signed-in session, over JSON (the console's own form is
 * /console/verify; both use src/flows/console-session.ts), and the gate that makes the admin
 * API (`/v1/admin/*`) answer staff sessions only once they have one (config
 * `admin.apiRequiresSecondFactor`, on by default).
 */

const body = z.strictObject({
  code: z.string().min(1).max(MAX_CODE_INPUT_LENGTH).describe('The 6 to 10 digits your authenticator app or hardware token shows; full-width digits, spaces and hyphens are read as typed by people.'),
  factor_id: z.string().min(1).max(64).optional().describe('Which factor (needed when you have several authenticator apps or tokens).'),
});

const response = z.object({
  user: userJsonSchema,
  csrf_token: z.string().describe('The new session has a new CSRF token.'),
  expires_at: z.string(),
  amr: z.array(z.string()),
});

/** 403 `second_factor_required` for a staff session without a second factor on /v1/admin/*. */
export function adminApiSecondFactorGate(gw: Gateway) {
  return (_req: Request, res: Response, next: NextFunction): void => {
    const auth = locals(res).auth;
    // No session: the routers answer 401; not staff: they answer 403.
    if (!gw.config.admin.apiRequiresSecondFactor || auth === undefined || !isStaff(auth.roles) || sessionHasSecondFactor(auth.amr)) {
      next();
      return;
    }
    throw new AppError('second_factor_required', { detail: 'Complete the session with a second factor first: POST /v1/session/second-factor with an authenticator or hardware-token code, or sign in with a passkey.' });
  };
}

export function secondFactorRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  api.route(
    router,
    {
      method: 'post',
      path: '/v1/session/second-factor',
      tag: 'session',
      summary:
        'Complete the signed-in session with a second factor (a TOTP or hardware-token code). The session is replaced: a new cookie and CSRF token; the old session id stops working. Staff need this (or a passkey sign-in) for the console and the admin API.',
      security: ['session'],
      body,
      responses: {
        200: { description: 'The session now records the second factor.', schema: response },
        400: { description: 'validation_failed; factor_not_allowed (no such factor, or several: name one with factor_id).' },
        401: { description: 'unauthorized (no session) or factor_invalid (wrong, replayed or expired code).' },
        403: { description: 'csrf_failed' },
        423: { description: 'factor_locked' },
      },
    },
    [requireSession],
    async (req, res, { body: input }) => {
      // Read as people type it (a Chinese IME types full-width digits), then checked: a
      // malformed code is refused before anything is looked up or charged.
      const code = normaliseOtpInput(input.code);
      if (!/^\d{6,10}$/.test(code)) throw new AppError('validation_failed', { invalidParams: [{ pointer: '/code', reason: 'the 6 to 10 digits your authenticator app or hardware token shows' }] });
      const auth = authOf(res);
      const { choices } = await consoleSecondFactors(gw, auth.userId);
      const chosen = input.factor_id === undefined ? (choices.length === 1 ? choices[0] : undefined) : choices.find((c) => c.id === input.factor_id);
      if (chosen === undefined) {
        throw new AppError('factor_not_allowed', {
          invalidParams: [{ pointer: '/factor_id', reason: choices.length === 0 ? 'no authenticator app or hardware token is enrolled' : input.factor_id === undefined ? 'several factors: name one' : 'not one of your authenticator apps or hardware tokens' }],
        });
      }
      const session = await completeSessionSecondFactor(
        gw,
        { idHash: auth.sessionIdHash, userId: auth.userId, amr: auth.amr },
        { factor: chosen.type, factorId: chosen.id, code },
        { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId },
      );
      const user = await getUser(gw, auth.userId);
      if (user === undefined) throw new AppError('unauthorized');
      setSessionCookie(res, gw.config, session.sessionId);
      res.setHeader('Cache-Control', 'no-store');
      res.json({ user: userToJson(user), csrf_token: session.csrfToken, expires_at: session.expiresAt.toISOString(), amr: session.amr });
    },
  );
  return router;
}
