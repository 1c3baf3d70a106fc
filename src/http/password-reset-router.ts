import { type NextFunction, type Request, type Response, Router } from 'express';
import { z } from 'zod';
import { isAppError } from '../errors/app-error.ts';
import { checkResetFormCsrf, completePasswordReset, resetFormCsrf, resetTokenUser } from '../flows/password-reset.ts';
import type { Gateway } from '../gateway.ts';
import type { ApiRegistry } from './api-registry.ts';
import { userJsonSchema, userToJson } from './auth-router.ts';
import { createViews, localeOf, translator } from './pages-router.ts';
import { locals } from './request-context.ts';
import { parseInput } from './validate.ts';

/**
 * The page behind a helpdesk password-reset link (`GET/POST /reset-password`) and its JSON
 * twin (`POST /v1/password-reset`) for native apps. See flows/password-reset.ts.
 */

const resetBody = z.strictObject({
  token: z.string().min(1).max(200),
  password: z.string().min(1).max(1024),
});

const resetForm = z.strictObject({
  token: z.string().max(200),
  csrf: z.string().max(200),
  // The hidden username field lets password managers store the new password under the right name.
  username: z.string().max(256).optional(),
  password: z.string().max(1024),
  password_confirm: z.string().max(1024),
  // The session CSRF field, present when the browser happens to be signed in (checked by the
  // global CSRF middleware before this router runs).
  _csrf: z.string().max(200).optional(),
});

interface PageState {
  state: 'form' | 'invalid' | 'done';
  token?: string;
  username?: string;
  errors?: string[];
}

export function passwordResetRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  const views = createViews(gw);

  function render(req: Request, res: Response, status: number, page: PageState): void {
    // A page carrying a one-time secret must not leak through Referer (no-store is set by views).
    res.setHeader('Referrer-Policy', 'no-referrer');
    views.render(req, res, status, 'password-reset', {
      titleKey: 'passwordReset.title',
      state: page.state,
      token: page.token ?? '',
      csrf: page.token === undefined ? '' : resetFormCsrf(gw, page.token),
      username: page.username ?? '',
      errors: page.errors ?? [],
      sessionCsrf: locals(res).auth?.csrfToken ?? '',
    });
  }

  router.get('/reset-password', async (req: Request, res: Response) => {
    const token = typeof req.query.token === 'string' ? req.query.token : '';
    const user = await resetTokenUser(gw, token);
    if (user === undefined) {
      render(req, res, 400, { state: 'invalid' });
      return;
    }
    render(req, res, 200, { state: 'form', token, username: user.username });
  });

  router.post('/reset-password', async (req: Request, res: Response, next: NextFunction) => {
    const t = translator(localeOf(req));
    let form: z.output<typeof resetForm>;
    try {
      form = parseInput(resetForm, req.body);
    } catch {
      render(req, res, 400, { state: 'invalid' });
      return;
    }
    const user = await resetTokenUser(gw, form.token);
    if (user === undefined) {
      render(req, res, 400, { state: 'invalid' });
      return;
    }
    const page = { state: 'form' as const, token: form.token, username: user.username };
    if (form.csrf === '' || !checkResetFormCsrf(gw, form.token, form.csrf)) {
      render(req, res, 403, { ...page, errors: [t('passwordReset.stale')] });
      return;
    }
    if (form.password !== form.password_confirm) {
      render(req, res, 400, { ...page, errors: [t('passwordReset.mismatch')] });
      return;
    }
    try {
      await completePasswordReset(gw, { token: form.token, password: form.password }, { ip: req.ip ?? null, requestId: locals(res).requestId });
      render(req, res, 200, { state: 'done' });
    } catch (err) {
      if (!isAppError(err)) {
        next(err);
        return;
      }
      if (err.code === 'reset_token_invalid') render(req, res, 400, { state: 'invalid' });
      else render(req, res, err.status, { ...page, errors: err.invalidParams?.map((p) => p.reason) ?? [err.detail ?? err.title] });
    }
  });

  api.route(
    router,
    {
      method: 'post',
      path: '/v1/password-reset',
      tag: 'session',
      summary: 'Set a new password with the token of a helpdesk password-reset link (single use; ends every session of the user and lifts the login lock).',
      security: ['none'],
      body: resetBody,
      responses: {
        200: { description: 'password changed; sign in with it', schema: z.object({ user: userJsonSchema }) },
        400: { description: 'reset_token_invalid (unknown, expired, used or superseded), password_policy or validation_failed' },
      },
    },
    [],
    async (req, res, { body }) => {
      const user = await completePasswordReset(gw, { token: body.token, password: body.password }, { ip: req.ip ?? null, requestId: locals(res).requestId });
      res.setHeader('Cache-Control', 'no-store');
      res.json({ user: userToJson(user) });
    },
  );

  return router;
}
