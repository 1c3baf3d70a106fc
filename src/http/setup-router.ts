import { fileURLToPath } from 'node:url';
import { type NextFunction, type Request, type Response, Router } from 'express';
import { Eta } from 'eta';
import { z } from 'zod';
import { type AppError, isAppError } from '../errors/app-error.ts';
import { checkSetupFormCsrf, completeAdminSetup, setupFormCsrf, setupTokenUsable } from '../flows/admin-setup.ts';
import type { Gateway } from '../gateway.ts';
import { userJsonSchema, userToJson } from './auth-router.ts';
import type { ApiRegistry } from './api-registry.ts';
import { negotiateLocale, translator } from './pages-router.ts';
import { locals } from './request-context.ts';
import { parseInput } from './validate.ts';

/**
 * First-run set-up: the page behind the one-time link `serve` prints (`GET/POST /setup`)
 * and its JSON twin (`POST /v1/setup`) for scripted installs.
 */
const VIEWS = fileURLToPath(new URL('../../views', import.meta.url));

const TEXT = {
  en: {
    title: 'Create the first administrator',
    intro: 'This one-time link creates the first Stepgate administrator. Choose a username and a strong password; the link stops working once it is used.',
    invalid: 'This set-up link is invalid, has expired or has already been used. Restart the gateway to print a new one (it prints one only while no administrator exists), or run `stepgate admin create` on the server.',
    done: (username: string) => `Administrator "${username}" created. You can now sign in.`,
    toLogin: 'Go to sign-in',
    fix: 'Please correct the following:',
    username: 'Username',
    usernameHint: 'Lower-case letters, digits and . _ @ - (at most 64).',
    displayName: 'Display name (optional)',
    password: 'Password',
    passwordHint: 'At least 8 characters. Long passphrases are welcome; common passwords are refused.',
    passwordConfirm: 'Repeat the password',
    submit: 'Create administrator',
    mismatch: 'The two passwords differ.',
    csrf: 'The form is stale or was not produced by this link; reload the set-up link and try again.',
  },
  'zh-CN': {
    title: '创建第一个管理员',
    intro: '此一次性链接用于创建第一个 Stepgate 管理员。请选择用户名并设置强密码；链接使用后即失效。',
    invalid: '此设置链接无效、已过期或已被使用。重新启动网关可打印新的链接（仅在尚无管理员时打印），或在服务器上运行 `stepgate admin create`。',
    done: (username: string) => `管理员“${username}”已创建，现在可以登录。`,
    toLogin: '前往登录',
    fix: '请更正以下问题：',
    username: '用户名',
    usernameHint: '小写字母、数字及 . _ @ -（最多 64 个字符）。',
    displayName: '显示名称（可选）',
    password: '密码',
    passwordHint: '至少 8 个字符。欢迎使用较长的口令短语；常见密码会被拒绝。',
    passwordConfirm: '再次输入密码',
    submit: '创建管理员',
    mismatch: '两次输入的密码不一致。',
    csrf: '表单已过期或并非由此链接生成；请重新打开设置链接后再试。',
  },
} as const;

type Lang = keyof typeof TEXT;

function langOf(req: Request): Lang {
  return negotiateLocale(req.get('accept-language'));
}

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
  const eta = new Eta({ views: VIEWS, autoEscape: true, cache: gw.config.mode === 'production' });

  function render(req: Request, res: Response, status: number, page: PageState): void {
    const lang = langOf(req);
    // The shared layout (views/layout.eta) wants `t` (the page translator) and `title`.
    const html = eta.render('setup', {
      lang,
      t: translator(lang),
      title: TEXT[lang].title,
      s: TEXT[lang],
      state: page.state,
      token: page.token ?? '',
      csrf: page.token === undefined ? '' : setupFormCsrf(gw, page.token),
      errors: page.errors ?? [],
      values: page.values ?? { username: '', displayName: '' },
      username: page.username ?? '',
      sessionCsrf: locals(res).auth?.csrfToken ?? '',
    });
    // A page carrying a one-time secret must not be cached or leak through Referer.
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('Vary', 'Accept-Language');
    res.status(status).type('html').send(html);
  }

  function messagesOf(lang: Lang, err: AppError): string[] {
    const t = TEXT[lang];
    if (err.invalidParams === undefined || err.invalidParams.length === 0) return [err.detail ?? err.title];
    return err.invalidParams.map((p) => {
      const field = FIELD_OF_POINTER[p.pointer];
      return field === undefined ? p.reason : `${t[field]}: ${p.reason}`;
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
    const lang = langOf(req);
    let form: z.output<typeof setupForm>;
    try {
      form = parseInput(setupForm, req.body);
    } catch (err) {
      render(req, res, 400, { state: 'invalid', errors: isAppError(err) ? messagesOf(lang, err) : [] });
      return;
    }
    if (form.token === '' || form.csrf === '' || !checkSetupFormCsrf(gw, form.token, form.csrf)) {
      render(req, res, 403, { state: 'invalid', errors: [TEXT[lang].csrf] });
      return;
    }
    const values = { username: form.username, displayName: form.display_name ?? '' };
    if (form.password !== form.password_confirm) {
      render(req, res, 400, { state: 'form', token: form.token, values, errors: [TEXT[lang].mismatch] });
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
      else render(req, res, err.status, { state: 'form', token: form.token, values, errors: messagesOf(lang, err) });
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
