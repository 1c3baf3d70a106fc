import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type NextFunction, type Request, type Response, Router } from 'express';
import { z } from 'zod';
import type { Gateway } from '../gateway.ts';
import { passkeyLogin, passkeyLoginOptions, webauthnServices } from '../flows/webauthn.ts';
import type { ApiRegistry } from './api-registry.ts';
import { userJsonSchema, userToJson } from './auth-router.ts';
import { locals } from './request-context.ts';
import { deviceCookieOf, sessionCookieOf, setDeviceCookie, setSessionCookie } from './session.ts';

/**
 * Passkey sign-in (an optional first factor on /login, with the browser's autofill —
 * "conditional UI") and the browser half of WebAuthn: @simplewebauthn/browser's ESM build,
 * served from node_modules under /static/vendor/simplewebauthn/ (no CDN, so the CSP stays
 * `script-src 'self'` and the code the user runs is the code we ship).
 */

export const SIMPLEWEBAUTHN_BROWSER_PATH = '/static/vendor/simplewebauthn';
const BROWSER_ESM_DIR = dirname(fileURLToPath(import.meta.resolve('@simplewebauthn/browser')));

/** Only the .js modules (no maps, no type declarations, no directory listings). */
function onlyModules(req: Request, res: Response, next: NextFunction): void {
  if (!/^\/[a-zA-Z0-9/_-]+\.js$/.test(req.path) || req.path.includes('..')) {
    res.status(404).end();
    return;
  }
  next();
}

const loginResponse = z.object({
  user: userJsonSchema,
  csrf_token: z.string(),
  expires_at: z.string(),
  amr: z.array(z.string()).describe('What the passkey proved: ["hwk","user"] (device-bound) or ["swk","user"] (synced).'),
});

export function webauthnLoginRouter(gw: Gateway, api: ApiRegistry): Router {
  webauthnServices(gw);
  const router = Router();

  router.use(SIMPLEWEBAUTHN_BROWSER_PATH, onlyModules, express.static(BROWSER_ESM_DIR, { index: false, maxAge: '1h', fallthrough: false }));

  api.route(router, {
    method: 'post', path: '/v1/login/webauthn/options', tag: 'session', security: ['none'],
    summary: 'Passkey sign-in, step 1: request options for a discoverable credential (no user named).',
    responses: {
      200: {
        description: 'Pass `options` to startAuthentication({optionsJSON, useBrowserAutofill}); send the answer with `login_token` to POST /v1/login/webauthn.',
        schema: z.object({ login_token: z.string(), options: z.record(z.string(), z.unknown()).describe('PublicKeyCredentialRequestOptionsJSON') }),
      },
      404: { description: 'passkey sign-in is disabled (webauthn.passkeyLogin)' },
      503: { description: 'WebAuthn is not configured on this gateway' },
    },
  }, [], async (_req, res) => {
    const started = await passkeyLoginOptions(gw);
    res.setHeader('Cache-Control', 'no-store');
    res.json({ login_token: started.loginToken, options: started.options });
  });

  api.route(router, {
    method: 'post', path: '/v1/login/webauthn', tag: 'session', security: ['none'],
    summary: 'Passkey sign-in, step 2: the assertion (UV required). Sets the session cookie like POST /v1/login.',
    body: z.strictObject({
      login_token: z.string().min(1).max(256),
      credential: z.record(z.string(), z.unknown()).describe('AuthenticationResponseJSON'),
    }),
    responses: {
      200: { description: 'Signed in.', schema: loginResponse },
      400: { description: 'challenge_required: the login_token expired or was already used; request new options' },
      401: { description: 'invalid_credentials: the passkey was not accepted (every reason looks the same)' },
      423: { description: 'factor_locked: too many failures with this credential' },
    },
  }, [], async (req, res, { body }) => {
    const result = await passkeyLogin(gw, { loginToken: body.login_token, credential: body.credential }, { ip: req.ip ?? null, userAgent: req.get('user-agent') ?? null, requestId: locals(res).requestId, previousSessionId: sessionCookieOf(req, gw.config), deviceToken: deviceCookieOf(req, gw.config) });
    setSessionCookie(res, gw.config, result.sessionId);
    setDeviceCookie(res, gw.config, result.deviceToken);
    res.setHeader('Cache-Control', 'no-store');
    res.json({ user: userToJson(result.user), csrf_token: result.csrfToken, expires_at: result.expiresAt.toISOString(), amr: result.amr });
  });

  return router;
}
