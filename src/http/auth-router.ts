import { Router } from 'express';
import { z } from 'zod';
import { AppError } from '../errors/app-error.ts';
import { changeOwnPassword } from '../flows/change-password.ts';
import { login } from '../flows/login.ts';
import { endSession, sessionExpiresAt } from '../flows/sessions.ts';
import { getUser, passwordServices, type UserView } from '../flows/users.ts';
import type { Gateway } from '../gateway.ts';
import type { ApiRegistry } from './api-registry.ts';
import { authOf, requireSession, requireConfirmedSession } from './authorize.ts';
import { locals } from './request-context.ts';
import { clearSessionCookie, deviceCookieOf, sessionCookieOf, setDeviceCookie, setSessionCookie } from './session.ts';

/** A user on the wire (snake_case, ISO instants). Shared by the admin API. */
export const userJsonSchema = z.object({
  id: z.string(),
  username: z.string(),
  display_name: z.string(),
  roles: z.array(z.enum(['admin', 'helpdesk', 'auditor'])),
  groups: z.array(z.string()),
  status: z.enum(['active', 'disabled']),
  created_at: z.string().describe('ISO 8601'),
});

export function userToJson(u: UserView): z.infer<typeof userJsonSchema> {
  return {
    id: u.id,
    username: u.username,
    display_name: u.displayName,
    roles: u.roles,
    groups: u.groups,
    status: u.status,
    created_at: u.createdAt.toISOString(),
  };
}

// Generous bounds: the policy applies when a password is set, not when one is tried (an
// old password may predate today's policy); the bound only keeps argon2 work finite.
const loginBody = z.strictObject({
  username: z.string().min(1).max(256),
  password: z.string().min(1).max(1024),
});

const loginResponse = z.object({
  user: userJsonSchema,
  csrf_token: z.string().describe('Send as X-CSRF-Token on every state-changing request of this session.'),
  expires_at: z.string().describe('Absolute end of the session (ISO 8601); idle sessions end earlier.'),
});

const changePasswordBody = z.strictObject({
  current_password: z.string().min(1).max(1024),
  new_password: z.string().min(1).max(1024),
});

const changePasswordResponse = z.object({
  csrf_token: z.string().describe('The new session\'s CSRF token.'),
  expires_at: z.string().describe('Absolute end of the new session (ISO 8601).'),
});

const meResponse = z.object({
  user: userJsonSchema,
  csrf_token: z.string(),
  session: z.object({ auth_time: z.string(), expires_at: z.string(), amr: z.array(z.string()) }),
});

export function authRouter(gw: Gateway, api: ApiRegistry): Router {
  // Built now so a bad password configuration (unreadable blocklist file) stops start-up.
  passwordServices(gw);
  const router = Router();

  api.route(router, {
    method: 'post', path: '/v1/login', tag: 'session', summary: 'Sign in with username and password; sets the session cookie.',
    security: ['none'],
    body: loginBody,
    responses: {
      200: { description: 'Signed in. A new session id is issued (any previous session of this browser is ended).', schema: loginResponse },
      401: { description: 'invalid_credentials: unknown username or wrong password (indistinguishable).' },
      403: { description: 'csrf_failed: the request carried a live session but not its CSRF token.' },
      429: { description: 'too_many_requests: too many failures for this username; see Retry-After.' },
      503: { description: 'overloaded: every argon2 slot is busy; refused at once, nothing was charged or written; see Retry-After.' },
    },
  }, [], async (req, res, { body }) => {
    const result = await login(gw, body, { ip: req.ip ?? null, userAgent: req.get('user-agent') ?? null, requestId: locals(res).requestId, previousSessionId: sessionCookieOf(req, gw.config), deviceToken: deviceCookieOf(req, gw.config), shed: locals(res).shedSignIn === true });
    setSessionCookie(res, gw.config, result.sessionId);
    setDeviceCookie(res, gw.config, result.deviceToken);
    res.setHeader('Cache-Control', 'no-store');
    res.json({ user: userToJson(result.user), csrf_token: result.csrfToken, expires_at: result.expiresAt.toISOString() });
  });

  api.route(router, {
    method: 'post', path: '/v1/logout', tag: 'session', summary: 'End the current session (idempotent).',
    security: ['session'],
    responses: { 204: { description: 'Signed out (or was not signed in).' }, 403: { description: 'csrf_failed' } },
  }, [], async (req, res) => {
    const auth = locals(res).auth;
    if (auth !== undefined) await endSession(gw, auth.sessionIdHash, auth.userId, { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId });
    clearSessionCookie(res, gw.config);
    res.status(204).end();
  });

  api.route(router, {
    method: 'get', path: '/v1/me', tag: 'session', summary: 'The signed-in user and session.',
    security: ['session'],
    responses: { 200: { description: 'The current session.', schema: meResponse }, 401: { description: 'unauthorized: no live session.' } },
  }, [requireSession], async (_req, res) => {
    const auth = authOf(res);
    const [user, expiresAt] = await Promise.all([getUser(gw, auth.userId), sessionExpiresAt(gw, auth.sessionIdHash)]);
    if (user === undefined || expiresAt === undefined) throw new AppError('unauthorized');
    res.setHeader('Cache-Control', 'no-store');
    res.json({
      user: userToJson(user),
      csrf_token: auth.csrfToken,
      session: { auth_time: auth.authTime.toISOString(), expires_at: expiresAt.toISOString(), amr: auth.amr },
    });
  });

  api.route(router, {
    method: 'post', path: '/v1/me/password', tag: 'session', summary: 'Change your own password: the current one and the new one. Ends every session of the user and starts a new one for this browser.',
    security: ['session'],
    body: changePasswordBody,
    responses: {
      200: { description: 'Changed. Every session of the user has ended; this browser has a new session (cookie) with a new CSRF token.', schema: changePasswordResponse },
      400: { description: 'password_policy: the new password is refused (pointer /new_password); nothing was charged or changed.' },
      401: { description: 'invalid_credentials: the current password is wrong (pointer /current_password); the attempt counts towards the sign-in lockout. unauthorized: no session.' },
      403: { description: 'csrf_failed; second_factor_required: the user has a second factor this session has not proven (POST /v1/me/session/confirmation first).' },
      409: { description: 'conflict: the password was changed concurrently.' },
      429: { description: 'too_many_requests: the sign-in name is locked; see Retry-After.' },
      503: { description: 'overloaded: every argon2 slot is busy; nothing was charged or written; see Retry-After.' },
    },
  }, [requireSession, requireConfirmedSession], async (req, res, { body }) => {
    const auth = authOf(res);
    const session = await changeOwnPassword(gw, auth.userId, { currentPassword: body.current_password, newPassword: body.new_password }, { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId }, { userAgent: req.get('user-agent') ?? null, ip: req.ip ?? null });
    setSessionCookie(res, gw.config, session.sessionId);
    res.setHeader('Cache-Control', 'no-store');
    res.json({ csrf_token: session.csrfToken, expires_at: session.expiresAt.toISOString() });
  });

  return router;
}
