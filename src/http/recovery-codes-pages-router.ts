import { type Request, type Response, Router } from 'express';
import type { Gateway } from '../gateway.ts';
import { isAppError } from '../errors/app-error.ts';
import { generateRecoveryCodeSet } from '../flows/recovery-codes.ts';
import { createViews } from './pages-router.ts';
import { locals } from './request-context.ts';
import { factorChangeDetour } from './session-confirm-router.ts';
import { SECURITY_PATH } from './security-pages-router.ts';

/** The "my security" page's recovery-code form: generate a set and show it once (never via a URL or redirect). */
export function recoveryCodesPagesRouter(gw: Gateway): Router {
  const router = Router();
  const views = createViews(gw);

  router.post(`${SECURITY_PATH}/recovery-codes`, async (req: Request, res: Response) => {
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
      const set = await generateRecoveryCodeSet(gw, auth.userId, { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId });
      views.render(req, res, 200, 'security/recovery-codes-shown', { titleKey: 'recoveryCodes.shown.heading', codes: set.codes, replaced: set.replaced });
    } catch (err) {
      if (isAppError(err) && err.status < 500) {
        res.redirect(303, `${SECURITY_PATH}?notice=error`);
        return;
      }
      throw err;
    }
  });

  return router;
}
