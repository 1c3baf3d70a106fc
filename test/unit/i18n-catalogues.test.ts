import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

/**
 * The two message catalogues (views/i18n/en.json, zh-CN.json) are the only place a page's
 * words live. This test keeps them honest:
 *  - both hold exactly the same keys, none empty, and the same {placeholders} per key;
 *  - every key the code asks for exists: `t('key')`, `titleKey: 'key'`, `key: 'key'`,
 *    `error: 'key'`, `reason: 'key'` (the console's field messages) in src/ and views/; `t('prefix.' + x)` needs at least one key under the prefix;
 *  - no template carries words outside the catalogue: text between tags and the text
 *    attributes (title, alt, placeholder, aria-label, value of buttons) contain no letters
 *    once the Eta tags are removed.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const VIEWS = join(ROOT, 'views');

function catalogue(locale: string): Record<string, string> {
  return JSON.parse(readFileSync(join(VIEWS, 'i18n', `${locale}.json`), 'utf8')) as Record<string, string>;
}

function walk(dir: string, ext: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...walk(path, ext));
    else if (name.endsWith(ext)) out.push(path);
  }
  return out;
}

function placeholders(text: string): string[] {
  return [...text.matchAll(/\{(\w+)\}/g)].map((m) => m[1] ?? '').sort();
}

// The payment-code service is a separate product with its own views (src/payment-code/views).
const SOURCES = [...walk(join(ROOT, 'src'), '.ts').filter((p) => !p.includes('/payment-code/')), ...walk(VIEWS, '.eta')];
const KEY_USE = /(?:\bt\(\s*|\b[a-z]*[kK]ey:\s*|\berror:\s*|\breason:\s*)'([a-z][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]*)+)'/g;

export function keysUsed(text: string): string[] {
  return [...text.matchAll(KEY_USE)].map((m) => m[1] ?? '');
}

/** The words a template shows that do not come from `it.t(...)` or data: letters left after removing Eta tags. */
export function literalText(template: string): string[] {
  const stripped = template
    .replace(/<%[\s\S]*?%>/g, ' ')
    .replace(/<script[\s\S]*?<\/script>/g, ' ')
    .replace(/<style[\s\S]*?<\/style>/g, ' ')
    .replace(/<!doctype[^>]*>/gi, ' ');
  const found: string[] = [];
  for (const m of stripped.matchAll(/>([^<>]*)</g)) {
    const text = (m[1] ?? '').trim();
    if (/\p{L}/u.test(text)) found.push(text);
  }
  for (const m of stripped.matchAll(/\b(title|alt|placeholder|aria-label|aria-description)="([^"]*)"/g)) {
    if (/\p{L}/u.test(m[2] ?? '')) found.push(`${m[1]}="${m[2]}"`);
  }
  for (const m of stripped.matchAll(/<(?:button|input)[^>]*\btype="(?:submit|button)"[^>]*\bvalue="([^"]*)"/g)) {
    if (/\p{L}/u.test(m[1] ?? '')) found.push(`value="${m[1]}"`);
  }
  return found;
}

describe('message catalogues', () => {
  const en = catalogue('en');
  const zh = catalogue('zh-CN');

  it('en and zh-CN have identical key sets, no empty message and the same placeholders', () => {
    const enKeys = Object.keys(en).sort();
    const zhKeys = Object.keys(zh).sort();
    assert.deepEqual(enKeys.filter((k) => !(k in zh)), [], 'keys missing from zh-CN.json');
    assert.deepEqual(zhKeys.filter((k) => !(k in en)), [], 'keys missing from en.json');
    for (const k of enKeys) {
      assert.ok(typeof en[k] === 'string' && en[k].trim() !== '', `en ${k} is empty`);
      assert.ok(typeof zh[k] === 'string' && zh[k].trim() !== '', `zh-CN ${k} is empty`);
      assert.deepEqual(placeholders(zh[k] ?? ''), placeholders(en[k] ?? ''), `placeholders of ${k}`);
    }
  });

  it('zh-CN is a translation, not a copy: most messages differ from English and contain Chinese', () => {
    const keys = Object.keys(en);
    const chinese = keys.filter((k) => /\p{Script=Han}/u.test(zh[k] ?? ''));
    // Brand names and format examples may stay the same; everything else is translated.
    const untranslated = keys.filter((k) => !/\p{Script=Han}/u.test(zh[k] ?? '') && zh[k] === en[k] && /[a-z]{3,}\s+[a-z]{3,}/i.test(en[k] ?? ''));
    assert.deepEqual(untranslated, [], 'English sentences copied into zh-CN.json');
    assert.ok(chinese.length / keys.length > 0.9, `only ${chinese.length} of ${keys.length} zh-CN messages contain Chinese`);
  });

  it('every key used in src/ and views/ exists (prefix keys: at least one key under the prefix)', () => {
    const missing: string[] = [];
    let seen = 0;
    for (const file of SOURCES) {
      for (const key of keysUsed(readFileSync(file, 'utf8'))) {
        seen += 1;
        const ok = key.endsWith('.') ? Object.keys(en).some((k) => k.startsWith(key)) : key in en;
        if (!ok) missing.push(`${relative(ROOT, file)}: ${key}`);
      }
    }
    assert.ok(seen > 200, `the scan found only ${seen} key uses; has the t('…') pattern changed?`);
    assert.deepEqual(missing, []);
  });

  it('no template contains user-visible words outside the catalogue', () => {
    const offenders: string[] = [];
    for (const file of walk(VIEWS, '.eta')) {
      for (const text of literalText(readFileSync(file, 'utf8'))) offenders.push(`${relative(ROOT, file)}: ${text}`);
    }
    assert.deepEqual(offenders, []);
  });

  it('the heuristics catch what they are meant to catch', () => {
    assert.deepEqual(literalText('<p><%= it.t("a.b") %></p>'), []);
    assert.deepEqual(literalText('<p>Sign in</p>'), ['Sign in']);
    assert.deepEqual(literalText('<p><%= it.x %> UTC</p>'), ['UTC']);
    assert.deepEqual(literalText('<input placeholder="Search">'), ['placeholder="Search"']);
    assert.deepEqual(literalText('<p>登录</p>'), ['登录']);
    assert.deepEqual(literalText('<p> · — 12:00</p>'), []);
    assert.deepEqual(keysUsed("it.t('login.heading') + t('factor.' + x) titleKey: 'a.b'"), ['login.heading', 'factor.', 'a.b']);
  });
});
