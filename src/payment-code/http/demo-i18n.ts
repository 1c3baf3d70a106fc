import { readFileSync } from 'node:fs';
import type { Request, Response } from 'express';

/**
 * The demo wallet's two languages (zh-CN and en), from its own catalogues in
 * src/payment-code/views/i18n/ — the service shares nothing with the gateway's pages. The
 * language comes from `?lang=` (which also sets a cookie), then the cookie, then
 * Accept-Language; English otherwise.
 */
export const DEMO_LANGUAGES = ['en', 'zh-CN'] as const;
export type DemoLanguage = (typeof DEMO_LANGUAGES)[number];
export type Translate = (key: string, params?: Record<string, string | number>) => string;

const LANG_COOKIE = 'pc_demo_lang';

function load(lang: DemoLanguage): Record<string, string> {
  return JSON.parse(readFileSync(new URL(`../views/i18n/${lang}.json`, import.meta.url), 'utf8')) as Record<string, string>;
}

export const DEMO_CATALOGUES: Record<DemoLanguage, Record<string, string>> = { en: load('en'), 'zh-CN': load('zh-CN') };

function asLanguage(value: unknown): DemoLanguage | undefined {
  if (typeof value !== 'string') return undefined;
  const lower = value.trim().toLowerCase();
  if (lower === 'en' || lower.startsWith('en-')) return 'en';
  if (lower === 'zh' || lower.startsWith('zh-')) return 'zh-CN';
  return undefined;
}

/** Chooses the page language and remembers an explicit choice (a preference, not a secret). */
export function demoLanguage(req: Request, res: Response, cookiePath: string): DemoLanguage {
  const chosen = asLanguage(req.query.lang);
  if (chosen !== undefined) {
    res.cookie(LANG_COOKIE, chosen, { path: cookiePath, sameSite: 'lax', httpOnly: true, maxAge: 365 * 86_400_000 });
    return chosen;
  }
  const remembered = asLanguage((req.cookies as Record<string, unknown> | undefined)?.[LANG_COOKIE]);
  if (remembered !== undefined) return remembered;
  // Accept-Language in the order given (q-values are almost always descending in practice).
  for (const part of (req.get('accept-language') ?? '').split(',')) {
    const lang = asLanguage(part.split(';')[0]);
    if (lang !== undefined) return lang;
  }
  return 'en';
}

/** A translator; a missing key is a bug the catalogue test catches, shown as the key itself. */
export function translator(lang: DemoLanguage): Translate {
  const catalogue = DEMO_CATALOGUES[lang];
  return (key, params = {}) => (catalogue[key] ?? key).replace(/\{(\w+)\}/g, (whole, name: string) => (name in params ? String(params[name]) : whole));
}
