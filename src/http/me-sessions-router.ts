import { Router } from 'express';
import { z } from 'zod';
import { AppError } from '../errors/app-error.ts';
import { endOwnSession, endUserSessions, listOwnSessions } from '../flows/user-sessions.ts';
import type { Gateway } from '../gateway.ts';
import type { ApiRegistry } from './api-registry.ts';
import { authOf, requireFreshLogin, requireSession } from './authorize.ts';
import { locals } from './request-context.ts';
import { clearSessionCookie } from './session.ts';
import { describeUserAgent } from '../flows/user-agent.ts';

/**
 * The user's own sessions (ASVS 5.0 V7.5.2): list them; end one, or all the others, after
 * a fresh sign-in (a session left open on a shared computer cannot sign its owner out
 * everywhere else, nor hide itself).
 */

const HANDLE = /^[A-Za-z0-9_-]{22}$/;

const sessionSchema = z.object({
  handle: z.string().describe('Names the session in DELETE /v1/me/sessions/{handle}; not the session id.'),
  created_at: z.string(),
  last_seen_at: z.string(),
  expires_at: z.string(),
  auth_time: z.string(),
  amr: z.array(z.string()),
  current: z.boolean().describe('The session this request was made with.'),
  user_agent: z.string().nullable().describe('The User-Agent it was opened from (at most 256 characters); null if unknown.'),
  device: z.string().nullable().describe('That User-Agent described, e.g. "Chrome 131 on Windows"; null if not recognised.'),
  ip: z.string().nullable().describe('The client address it was opened from; null if unknown.'),
});

export function meSessionsRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  const who = (req: { ip?: string | undefined }, res: Parameters<typeof authOf>[0]) => ({ actor: authOf(res).userId, ip: req.ip ?? null, requestId: locals(res).requestId });

  api.route(router, {
    method: 'get', path: '/v1/me/sessions', tag: 'session', summary: 'Your live sessions, most recently used first.',
    security: ['session'],
    responses: { 200: { description: 'The sessions.', schema: z.object({ sessions: z.array(sessionSchema) }) }, 401: { description: 'unauthorized' } },
  }, [requireSession], async (_req, res) => {
    const auth = authOf(res);
    const sessions = await listOwnSessions(gw, auth.userId, auth.sessionIdHash);
    res.json({
      sessions: sessions.map((s) => ({
        handle: s.handle,
        created_at: s.createdAt.toISOString(),
        last_seen_at: s.lastSeenAt.toISOString(),
        expires_at: s.expiresAt.toISOString(),
        auth_time: s.authTime.toISOString(),
        amr: s.amr,
        current: s.current,
        user_agent: s.userAgent,
        device: describeUserAgent(s.userAgent) ?? null,
        ip: s.ip,
      })),
    });
  });

  api.route(router, {
    method: 'delete', path: '/v1/me/sessions/:handle', tag: 'session', summary: 'End one of your sessions (yours only; ending the current one signs you out).',
    security: ['session'],
    responses: {
      204: { description: 'Ended.' },
      401: { description: 'unauthorized, fresh_login_required' },
      403: { description: 'csrf_failed, second_factor_required' },
      404: { description: 'not_found: no such session of yours' },
    },
  }, [requireSession, requireFreshLogin(gw)], async (req, res) => {
    const handle = String(req.params.handle);
    if (!HANDLE.test(handle)) throw new AppError('not_found', { detail: 'No such session of yours.', invalidParams: [{ pointer: '/handle', reason: 'not a session handle' }] });
    const { current } = await endOwnSession(gw, authOf(res).userId, authOf(res).sessionIdHash, handle, who(req, res));
    if (current) clearSessionCookie(res, gw.config);
    res.status(204).end();
  });

  api.route(router, {
    method: 'post', path: '/v1/me/sessions/end-others', tag: 'session', summary: 'End every session of yours but this one.',
    security: ['session'],
    responses: {
      200: { description: 'Ended.', schema: z.object({ sessions_ended: z.number().int() }) },
      401: { description: 'unauthorized, fresh_login_required' },
      403: { description: 'csrf_failed, second_factor_required' },
    },
  }, [requireSession, requireFreshLogin(gw)], async (req, res) => {
    const auth = authOf(res);
    res.json({ sessions_ended: await endUserSessions(gw, auth.userId, auth.sessionIdHash, who(req, res), { by: 'self' }) });
  });

  return router;
}
