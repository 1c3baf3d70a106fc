import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import express, { type Request, type Response, Router } from 'express';
import { Eta } from 'eta';
import { AppError, isAppError } from '../errors/app-error.ts';
import { login } from '../flows/login.ts';
import { endSession } from '../flows/sessions.ts';
import { getUser } from '../flows/users.ts';
import { passkeyLoginOffered } from '../flows/webauthn.ts';
import type { Gateway } from '../gateway.ts';
import { CSRF_FIELD, checkLoginCsrf, issueLoginCsrf, LOGIN_CSRF_FIELD } from './csrf.ts';
import { locals } from './request-context.ts';
import { clearSessionCookie, deviceCookieOf, sessionCookieOf, setDeviceCookie, setSessionCookie } from './session.ts';

/**
 * Server-rendered pages (Eta, auto-escaped) in English and Simplified Chinese. For now: the
 * login page and the sign-out form target. Other pages reuse `renderPage`.
 */

const VIEWS_DIR = fileURLToPath(new URL('../../views/', import.meta.url));
const PUBLIC_DIR = fileURLToPath(new URL('../../public/', import.meta.url));

export const LOCALES = ['en', 'zh-CN'] as const;
export type Locale = (typeof LOCALES)[number];

type Catalogue = Record<string, string>;

function loadCatalogue(locale: Locale): Catalogue {
  const parsed: unknown = JSON.parse(readFileSync(`${VIEWS_DIR}i18n/${locale}.json`, 'utf8'));
  if (typeof parsed !== 'object' || parsed === null) throw new TypeError(`views/i18n/${locale}.json must be an object`);
  return parsed as Catalogue;
}

let catalogues: Record<Locale, Catalogue> | undefined;

export function messageCatalogues(): Record<Locale, Catalogue> {
  catalogues ??= { en: loadCatalogue('en'), 'zh-CN': loadCatalogue('zh-CN') };
  return catalogues;
}

/** Translator for a locale: `{name}` placeholders filled from params; falls back to English, then the key. */
export function translator(locale: Locale): (key: string, params?: Record<string, string | number>) => string {
  const all = messageCatalogues();
  return (key, params) => {
    const text = all[locale][key] ?? all.en[key] ?? key;
    return params === undefined ? text : text.replace(/\{(\w+)\}/g, (m, name: string) => (params[name] === undefined ? m : String(params[name])));
  };
}

/** The language-preference cookie set by the switch in the page header (`POST /lang`). */
export const LANG_COOKIE = 'stepgate_lang';

function isLocale(v: unknown): v is Locale {
  return typeof v === 'string' && (LOCALES as readonly string[]).includes(v);
}

/** The page language: the switch's cookie when it names a supported locale, otherwise Accept-Language. */
export function localeOf(req: Request): Locale {
  const chosen = (req.cookies as Record<string, unknown> | undefined)?.[LANG_COOKIE];
  return isLocale(chosen) ? chosen : negotiateLocale(req.get('accept-language'));
}

/** Picks the best supported locale from Accept-Language (q-values honoured); English by default. */
export function negotiateLocale(acceptLanguage: string | undefined): Locale {
  if (acceptLanguage === undefined || acceptLanguage === '') return 'en';
  const ranges = acceptLanguage
    .split(',')
    .slice(0, 20)
    .map((part, index) => {
      const [tag = '', ...params] = part.trim().split(';');
      const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
      const weight = q === undefined ? 1 : Number(q.slice(2));
      return { tag: tag.trim().toLowerCase(), weight: Number.isFinite(weight) ? weight : 0, index };
    })
    .filter((r) => r.weight > 0)
    .sort((a, b) => b.weight - a.weight || a.index - b.index);
  for (const r of ranges) {
    if (r.tag === 'zh' || r.tag.startsWith('zh-')) return 'zh-CN';
    if (r.tag === 'en' || r.tag.startsWith('en-')) return 'en';
  }
  return 'en';
}

/** `next` only when it is a same-site relative path: never another origin, `//host` or `/\host`. */
export function safeNext(value: unknown, publicUrl: string): string | undefined {
  if (typeof value !== 'string' || value === '' || value.length > 2048) return undefined;
  if (!value.startsWith('/') || value.startsWith('//') || value.includes('\\')) return undefined;
  if (/\p{Cc}/u.test(value)) return undefined;
  let url: URL;
  let base: URL;
  try {
    base = new URL(publicUrl);
    url = new URL(value, base);
  } catch {
    return undefined;
  }
  if (url.origin !== base.origin) return undefined;
  // The result is checked again: dot segments collapse on parsing, so `/.//evil.example` or
  // `/x/..//evil.example` came out as `//evil.example`, a protocol-relative URL to another host.
  const path = `${url.pathname}${url.search}${url.hash}`;
  if (path.startsWith('//') || path.includes('\\')) return undefined;
  return path;
}

/** Roles that may open the admin console (src/http/console-*.ts). */
export const STAFF_ROLES: readonly string[] = ['admin', 'helpdesk', 'auditor'];

export function isStaff(roles: readonly string[]): boolean {
  return roles.some((r) => STAFF_ROLES.includes(r));
}

/** Where the language switch sends the browser back to: this page for a GET, the referring page otherwise. */
function returnPathOf(req: Request, publicUrl: string): string {
  if (req.method === 'GET') return safeNext(req.originalUrl, publicUrl) ?? '/';
  const referer = req.get('referer');
  if (referer !== undefined) {
    try {
      const url = new URL(referer);
      if (url.origin === new URL(publicUrl).origin) return safeNext(`${url.pathname}${url.search}`, publicUrl) ?? '/';
    } catch {
      // not a URL: fall through
    }
  }
  return '/';
}

/** What the layout needs on every page: who is signed in, the navigation and the language switch. */
function chromeOf(gw: Gateway, req: Request, res: Response, lang: Locale) {
  const auth = locals(res).auth;
  const path = req.path;
  const staff = auth !== undefined && isStaff(auth.roles);
  const userNav = auth === undefined ? [] : [{ href: '/security', key: 'nav.security' }, ...(staff ? [{ href: '/console', key: 'nav.console' }] : [])];
  return {
    nav: {
      signedIn: auth === undefined ? undefined : { username: auth.username },
      items: userNav.map((i) => ({ ...i, current: path === i.href || path.startsWith(`${i.href}/`) })),
      csrf: auth?.csrfToken,
    },
    langSwitch: {
      to: lang === 'en' ? 'zh-CN' : 'en',
      next: returnPathOf(req, gw.config.http.publicUrl),
      // With a session the global CSRF check covers POST /lang; without one, the login form's double-submit token.
      field: auth === undefined ? LOGIN_CSRF_FIELD : CSRF_FIELD,
      token: auth === undefined ? issueLoginCsrf(gw, req, res) : auth.csrfToken,
    },
  };
}

export interface Views {
  /** Renders `template` with `data` plus `lang`, `t` (translator) and `title`, and sends it. */
  render(req: Request, res: Response, status: number, template: string, data: Record<string, unknown> & { titleKey: string }): void;
}

export function createViews(gw: Gateway): Views {
  const eta = new Eta({ views: VIEWS_DIR, autoEscape: true, cache: gw.config.mode === 'production' });
  messageCatalogues();
  return {
    render(req, res, status, template, data) {
      const lang = localeOf(req);
      const t = translator(lang);
      const html = eta.render(template, { ...chromeOf(gw, req, res, lang), ...data, lang, t, title: t(data.titleKey) });
      res.setHeader('Vary', 'Accept-Language, Cookie');
      res.setHeader('Cache-Control', 'no-store');
      res.status(status).type('html').send(html);
    },
  };
}

function field(body: unknown, name: string): string | undefined {
  const v = (body as Record<string, unknown> | undefined)?.[name];
  return typeof v === 'string' ? v : undefined;
}

export function pagesRouter(gw: Gateway): Router {
  const router = Router();
  const views = createViews(gw);
  const publicUrl = gw.config.http.publicUrl;

  router.use('/static', express.static(PUBLIC_DIR, { index: false, maxAge: '1h', fallthrough: true }));

  async function renderLogin(req: Request, res: Response, status: number, extra: { error?: string; errorParams?: Record<string, number>; username?: string; next?: string | undefined; reauth?: boolean }) {
    const auth = locals(res).auth;
    const t = translator(localeOf(req));
    if (auth !== undefined && extra.reauth === true) {
      // Signed in, but a sensitive page wants a fresh sign-in: the same form, for this user.
      views.render(req, res, status, 'login', {
        titleKey: 'login.title',
        signedIn: undefined,
        reauth: true,
        // The session's own CSRF token too: every POST that carries a session needs it.
        csrf: auth.csrfToken,
        loginCsrf: issueLoginCsrf(gw, req, res),
        next: extra.next,
        username: auth.username,
        error: extra.error === undefined ? undefined : t(extra.error, extra.errorParams),
      });
      return;
    }
    if (auth !== undefined) {
      const user = await getUser(gw, auth.userId);
      views.render(req, res, status, 'login', {
        titleKey: 'login.title',
        signedIn: { username: auth.username, displayName: user?.displayName ?? auth.username },
        csrf: auth.csrfToken,
        next: extra.next,
      });
      return;
    }
    views.render(req, res, status, 'login', {
      titleKey: 'login.title',
      signedIn: undefined,
      loginCsrf: issueLoginCsrf(gw, req, res),
      next: extra.next,
      username: extra.username ?? '',
      error: extra.error === undefined ? undefined : t(extra.error, extra.errorParams),
      passkey: passkeyLoginOffered(gw),
    });
  }

  router.get('/login', async (req, res) => {
    await renderLogin(req, res, 200, { next: safeNext(req.query.next, publicUrl), reauth: req.query.reauth === '1' });
  });

  router.post('/login', async (req, res) => {
    const body: unknown = req.body;
    const next = safeNext(field(body, 'next'), publicUrl);
    const username = field(body, 'username') ?? '';
    const password = field(body, 'password') ?? '';
    const reauth = field(body, 'reauth') === '1';
    if (!checkLoginCsrf(gw, req)) {
      await renderLogin(req, res, 403, { error: 'login.error.expired', username: username.slice(0, 256), next, reauth });
      return;
    }
    if (username === '' || password === '' || username.length > 256 || password.length > 1024) {
      await renderLogin(req, res, 400, { error: 'login.error.missing', username: username.slice(0, 256), next, reauth });
      return;
    }
    try {
      const result = await login(gw, { username, password }, {
        ip: req.ip ?? null,
        userAgent: req.get('user-agent') ?? null,
        requestId: locals(res).requestId,
        previousSessionId: sessionCookieOf(req, gw.config),
        deviceToken: deviceCookieOf(req, gw.config),
        shed: locals(res).shedSignIn === true,
      });
      setSessionCookie(res, gw.config, result.sessionId);
      setDeviceCookie(res, gw.config, result.deviceToken);
      res.redirect(303, next ?? '/login');
    } catch (err) {
      if (isAppError(err) && err.code === 'invalid_credentials') {
        await renderLogin(req, res, 401, { error: 'login.error.invalid', username, next, reauth });
        return;
      }
      if (isAppError(err) && err.code === 'overloaded') {
        // Every argon2 slot is busy: nothing was charged; the page asks to try again shortly.
        res.setHeader('Retry-After', String(Math.ceil(err.retryAfterSeconds ?? 1)));
        await renderLogin(req, res, 503, { error: 'login.error.busy', username, next, reauth });
        return;
      }
      if (isAppError(err) && err.code === 'too_many_requests') {
        const seconds = err.retryAfterSeconds ?? gw.config.login.lockSeconds;
        res.setHeader('Retry-After', String(Math.ceil(seconds)));
        await renderLogin(req, res, 429, { error: 'login.error.locked', errorParams: { minutes: Math.max(1, Math.ceil(seconds / 60)) }, username, next, reauth });
        return;
      }
      throw err;
    }
  });

  // The language switch in every page's header. A preference, not a secret, but still only
  // from our own pages: the session's CSRF token (checked globally) or the login form's token.
  router.post('/lang', (req, res) => {
    const body: unknown = req.body;
    const lang = field(body, 'lang');
    const next = safeNext(field(body, 'next'), publicUrl) ?? '/';
    if (locals(res).auth === undefined && !checkLoginCsrf(gw, req)) throw new AppError('csrf_failed', { detail: 'Reload the page and use the language switch again.' });
    if (!isLocale(lang)) throw new AppError('validation_failed', { detail: 'Unsupported language.', invalidParams: [{ pointer: '/lang', reason: `one of ${LOCALES.join(', ')}` }] });
    res.cookie(LANG_COOKIE, lang, { httpOnly: true, sameSite: 'lax', path: '/', secure: gw.config.mode === 'production', maxAge: 365 * 24 * 3600 * 1000 });
    res.redirect(303, next);
  });

  // The front door: staff to the console, everyone else to their security page or sign-in.
  router.get('/', (_req, res) => {
    const auth = locals(res).auth;
    res.redirect(303, auth === undefined ? '/login' : isStaff(auth.roles) ? '/console' : '/security');
  });

  router.post('/logout', async (req, res) => {
    const auth = locals(res).auth;
    if (auth !== undefined) await endSession(gw, auth.sessionIdHash, auth.userId, { actor: auth.userId, ip: req.ip ?? null, requestId: locals(res).requestId });
    clearSessionCookie(res, gw.config);
    res.redirect(303, '/login');
  });

  return router;
}
