import { type Request, type Response, Router } from 'express';
import { isAppError } from '../errors/app-error.ts';
import { bindOwnToken, releaseOwnToken, resyncOwnToken } from '../flows/hardware-tokens.ts';
import type { Gateway } from '../gateway.ts';
import { factorIdOf } from './me-factors-router.ts';
import { locals } from './request-context.ts';
import { factorChangeDetour } from './session-confirm-router.ts';
import { SECURITY_PATH } from './security-pages-router.ts';

/**
 * The form routes of the "hardware token" section of /security (views/security/hardware_otp.eta):
 * bind, resync, report lost. Each answers with a redirect back to the page and a notice; the
 * session's CSRF token travels in the form (`_csrf`), checked by the session middleware.
 */

function field(req: Request, name: string): string {
  const v = (req.body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v.trim() : '';
}

export function hardwareOtpPagesRouter(gw: Gateway): Router {
  const router = Router();

  function handle(run: (req: Request, userId: string, who: { actor: string; ip: string | null; requestId: string | null }) => Promise<string>) {
    return async (req: Request, res: Response): Promise<void> => {
      const auth = locals(res).auth;
      if (auth === undefined) {
        res.redirect(303, `/login?next=${encodeURIComponent(SECURITY_PATH)}`);
        return;
      }
      const detour = await factorChangeDetour(gw, auth);
      if (detour !== undefined) {
        res.redirect(303, detour);
        return;
      }
      try {
        const notice = await run(req, auth.userId, { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId });
        res.redirect(303, `${SECURITY_PATH}?notice=${notice}#hardware-otp`);
      } catch (err) {
        if (isAppError(err) && err.status < 500) {
          const notice = err.code === 'too_many_requests' ? 'hwThrottled' : err.code === 'token_bind_failed' ? 'hwBindFailed' : err.code === 'token_resync_failed' ? 'hwResyncFailed' : 'error';
          res.redirect(303, `${SECURITY_PATH}?notice=${notice}#hardware-otp`);
          return;
        }
        throw err;
      }
    };
  }

  router.post(
    `${SECURITY_PATH}/hardware-otp/bind`,
    handle(async (req, userId, who) => {
      const next = field(req, 'next_code');
      await bindOwnToken(gw, userId, { serial: field(req, 'serial'), code: field(req, 'code'), nextCode: next === '' ? undefined : next, label: field(req, 'label') || undefined }, who);
      return 'enrolled';
    }),
  );

  router.post(
    `${SECURITY_PATH}/hardware-otp/:id/resync`,
    handle(async (req, userId, who) => {
      await resyncOwnToken(gw, userId, factorIdOf(req), { code: field(req, 'code'), nextCode: field(req, 'next_code') }, who);
      return 'hwResynced';
    }),
  );

  router.post(
    `${SECURITY_PATH}/hardware-otp/:id/lost`,
    handle(async (req, userId, who) => {
      await releaseOwnToken(gw, userId, factorIdOf(req), 'lost', who);
      return 'hwLost';
    }),
  );

  return router;
}
