import { type NextFunction, type Request, type Response, Router } from 'express';
import { z } from 'zod';
import { type AppError, isAppError } from '../errors/app-error.ts';
import { checkSetupFormCsrf, completeAdminSetup, setupFormCsrf, setupTokenUsable } from '../flows/admin-setup.ts';
import type { Gateway } from '../gateway.ts';
import { userJsonSchema, userToJson } from './auth-router.ts';
import type { ApiRegistry } from './api-registry.ts';
import { createViews, localeOf, translator } from './pages-router.ts';
import { locals } from './request-context.ts';
import { parseInput } from './validate.ts';

/**
 * First-run set-up: the page behind the one-time link `serve` prints (`GET/POST /setup`)
 * and its JSON twin (`POST /v1/setup`) for scripted installs.
 */



const setupBody = z.strictObject({
  token: z.string().min(1).max(200),
  username: z.string().min(1).max(256),
  password: z.string().min(1).max(1024),
  display_name: z.string().max(256).optional(),
});

const setupForm = z.strictObject({
  token: z.string().max(200),
  csrf: z.string().max(200),
  username: z.string().max(256),
  display_name: z.string().max(256).optional(),
  password: z.string().max(1024),
  password_confirm: z.string().max(1024),
  // The session CSRF field, present when the browser happens to be signed in already
  // (checked by the global CSRF middleware before this router runs).
  _csrf: z.string().max(200).optional(),
});

const FIELD_OF_POINTER: Record<string, 'username' | 'displayName' | 'password'> = {
  '/username': 'username',
  '/display_name': 'displayName',
  '/password': 'password',
  '/password_confirm': 'password',
};

interface PageState {
  state: 'form' | 'invalid' | 'done';
  token?: string;
  errors?: string[];
  values?: { username: string; displayName: string };
  username?: string;
}

export function setupRouter(gw: Gateway, api: ApiRegistry): Router {
  const router = Router();
  const views = createViews(gw);

  function render(req: Request, res: Response, status: number, page: PageState): void {
    // A page carrying a one-time secret must not leak through Referer.
    res.setHeader('Referrer-Policy', 'no-referrer');
    views.render(req, res, status, 'setup', {
      titleKey: 'setup.title',
      state: page.state,
      token: page.token ?? '',
      csrf: page.token === undefined ? '' : setupFormCsrf(gw, page.token),
      errors: page.errors ?? [],
      values: page.values ?? { username: '', displayName: '' },
      username: page.username ?? '',
      sessionCsrf: locals(res).auth?.csrfToken ?? '',
    });
  }

  function messagesOf(req: Request, err: AppError): string[] {
    const t = translator(localeOf(req));
    if (err.invalidParams === undefined || err.invalidParams.length === 0) return [err.detail ?? err.title];
    return err.invalidParams.map((p) => {
      const field = FIELD_OF_POINTER[p.pointer];
      return field === undefined ? p.reason : `${t(`setup.${field}`)}: ${p.reason}`;
    });
  }

  router.get('/setup', async (req: Request, res: Response) => {
    const token = typeof req.query.token === 'string' ? req.query.token : '';
    if (!(await setupTokenUsable(gw, token))) {
      render(req, res, 400, { state: 'invalid' });
      return;
    }
    render(req, res, 200, { state: 'form', token });
  });

  router.post('/setup', async (req: Request, res: Response, next: NextFunction) => {
    const t = translator(localeOf(req));
    let form: z.output<typeof setupForm>;
    try {
      form = parseInput(setupForm, req.body);
    } catch (err) {
      render(req, res, 400, { state: 'invalid', errors: isAppError(err) ? messagesOf(req, err) : [] });
      return;
    }
    if (form.token === '' || form.csrf === '' || !checkSetupFormCsrf(gw, form.token, form.csrf)) {
      render(req, res, 403, { state: 'invalid', errors: [t('setup.csrf')] });
      return;
    }
    const values = { username: form.username, displayName: form.display_name ?? '' };
    if (form.password !== form.password_confirm) {
      render(req, res, 400, { state: 'form', token: form.token, values, errors: [t('setup.mismatch')] });
      return;
    }
    try {
      const user = await completeAdminSetup(
        gw,
        { token: form.token, username: form.username, password: form.password, displayName: form.display_name === '' ? undefined : form.display_name },
        { ip: req.ip ?? null, requestId: locals(res).requestId },
      );
      render(req, res, 201, { state: 'done', username: user.username });
    } catch (err) {
      if (!isAppError(err)) {
        next(err);
        return;
      }
      if (err.code === 'setup_token_invalid') render(req, res, 400, { state: 'invalid' });
      else render(req, res, err.status, { state: 'form', token: form.token, values, errors: messagesOf(req, err) });
    }
  });

  api.route(
    router,
    {
      method: 'post',
      path: '/v1/setup',
      tag: 'admin',
      summary: 'Create the first administrator with the one-time set-up token printed on first start.',
      security: ['none'],
      body: setupBody,
      responses: {
        201: { description: 'administrator created', schema: z.object({ user: userJsonSchema }) },
        400: { description: 'setup_token_invalid (unknown, expired, used, or an administrator exists), password_policy or validation_failed' },
        409: { description: 'username taken' },
      },
    },
    [],
    async (req, res, { body }) => {
      const user = await completeAdminSetup(
        gw,
        { token: body.token, username: body.username, password: body.password, displayName: body.display_name },
        { ip: req.ip ?? null, requestId: locals(res).requestId },
      );
      res.status(201).json({ user: userToJson(user) });
    },
  );

  return router;
}
