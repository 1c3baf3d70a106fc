import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DEMO_CATALOGUES, translator } from '../../src/payment-code/http/demo-i18n.ts';

const ROOT = new URL('../../src/payment-code/', import.meta.url).pathname;

/** Every t('key') used by the demo wallet's templates and router. */
function usedKeys(): Set<string> {
  const sources = [
    ...readdirSync(join(ROOT, 'views')).filter((f) => f.endsWith('.eta')).map((f) => join(ROOT, 'views', f)),
    join(ROOT, 'http', 'demo-router.ts'),
  ];
  const keys = new Set<string>();
  for (const file of sources) {
    for (const m of readFileSync(file, 'utf8').matchAll(/(?:\bt|\))\(\s*'([a-z_]+\.[a-z_.]+)'/g)) keys.add(m[1] as string);
    // tr(req, res)(cond ? 'a.b' : 'c.d')
    for (const m of readFileSync(file, 'utf8').matchAll(/\? '([a-z_]+\.[a-z_.]+)' : '([a-z_]+\.[a-z_.]+)'/g)) {
      keys.add(m[1] as string);
      keys.add(m[2] as string);
    }
  }
  return keys;
}

describe('demo wallet message catalogues', () => {
  it('zh-CN and en have the same keys, no empty text, and the same {placeholders}', () => {
    const en = DEMO_CATALOGUES.en;
    const zh = DEMO_CATALOGUES['zh-CN'];
    assert.deepEqual(Object.keys(zh).sort(), Object.keys(en).sort());
    for (const [key, text] of Object.entries(en)) {
      assert.ok(text.trim().length > 0 && (zh[key] ?? '').trim().length > 0, key);
      const holes = (t: string) => [...t.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
      assert.deepEqual(holes(zh[key] as string), holes(text), `placeholders of ${key}`);
    }
  });

  it('every key the pages use exists, and the catalogue has no unused key', () => {
    const used = usedKeys();
    assert.ok(used.size > 30, `found ${used.size} keys: the scan is looking at the right files`);
    const missing = [...used].filter((k) => !(k in DEMO_CATALOGUES.en));
    assert.deepEqual(missing, []);
    const unused = Object.keys(DEMO_CATALOGUES.en).filter((k) => !used.has(k) && !k.startsWith('lang.') && !['seed.next_in', 'seed.cannot', 'code.valid_for', 'code.expired'].includes(k));
    assert.deepEqual(unused, [], 'keys no page uses');
  });

  it('fills placeholders; unknown keys show as themselves (a bug the test above catches)', () => {
    assert.equal(translator('zh-CN')('code.lead', { amount: '1.00', currency: 'CNY' }), '最高 1.00 CNY。请在收银台出示，仅可使用一次。');
    assert.equal(translator('en')('code.valid_for', { s: 5 }), 'Valid for 5 s');
    assert.equal(translator('en')('no.such_key'), 'no.such_key');
  });
});
