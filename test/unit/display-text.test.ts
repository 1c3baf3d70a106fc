import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { displayTextProblem, mixedScripts } from '../../src/verifier/index.ts';
import { contextRuleProblem } from '../../src/verifier/context-rules.ts';
import { approvalSummary } from '../../src/sms/sms-text.ts';

const hex = (cp: number) => `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;

describe('display text bound into a step-up', () => {
  it('refuses every invisible, control and bidirectional formatting character, naming it', () => {
    const refused = [
      0x0000, 0x0009, 0x000a, 0x001b, 0x007f, 0x0085, 0x009b, // Cc: C0, DEL, C1
      0x00ad, 0x061c, 0x180e, // soft hyphen, Arabic letter mark, Mongolian vowel separator
      0x200b, 0x200c, 0x200d, 0x200e, 0x200f, // zero-width space / non-joiner / joiner, LRM, RLM
      0x202a, 0x202b, 0x202c, 0x202d, 0x202e, // embeddings and overrides
      0x2060, 0x2061, 0x2064, // word joiner, invisible operators
      0x2066, 0x2067, 0x2068, 0x2069, // isolates
      0xfeff, 0xfff9, 0xe0001, 0xe0041, // BOM / zero-width no-break space, interlinear annotation, tags
      0x2028, 0x2029, // line and paragraph separators
      0xe000, 0xf8ff, 0xf0000, // private use
    ];
    for (const cp of refused) {
      const problem = displayTextProblem(`shop${String.fromCodePoint(cp)}42`);
      assert.ok(problem?.includes(hex(cp)), `${hex(cp)}: ${problem}`);
    }
    assert.match(displayTextProblem('shop\ud800') ?? '', /well-formed/);
  });

  it('requires NFC, and accepts what people write: accents, CJK, Cyrillic, emoji, ideographic space', () => {
    for (const nfd of ['cafe\u0301', '\u1100\u1161', '\u212b ngstr\u00f6m', 'A\u030a']) assert.match(displayTextProblem(nfd) ?? '', /NFC/, JSON.stringify(nfd));
    for (const ok of ['caf\u00e9', '가', '星巴克 Starbucks 42号店', 'Сбербанк', 'Κ. Παπαδόπουλος', 'Café Ünïcödé', 'shop-42 ☕', '👍🏽 Shop', '東京\u3000駅', 'O\u2019Brien & Sons']) {
      assert.equal(displayTextProblem(ok), undefined, ok);
    }
  });

  it('the verifier applies the same rule to every string of the approved context (context_invalid + field)', () => {
    assert.equal(contextRuleProblem({ type: 'x', payee: 'caf\u00e9', deviceId: 'd-1' }), undefined);
    assert.equal(contextRuleProblem({ payee: 'cafe\u0301' })?.field, 'payee');
    assert.equal(contextRuleProblem({ payee: 'shop\u200b42' })?.field, 'payee');
    assert.equal(contextRuleProblem({ note: 'x\u202e' })?.field, 'note');
  });
});

describe('mixed-script look-alikes', () => {
  it('flags Latin mixed with Cyrillic or Greek and marks the odd letters', () => {
    assert.deepEqual(mixedScripts('p\u0430ypal'), { scripts: ['Latin', 'Cyrillic'], segments: [{ text: 'p' }, { text: '\u0430', script: 'Cyrillic' }, { text: 'ypal' }] });
    assert.deepEqual(mixedScripts('\u0391pple Store')?.scripts, ['Latin', 'Greek']);
    assert.deepEqual(mixedScripts('\u0391pple Store')?.segments[0], { text: '\u0391', script: 'Greek' });
    // A mostly Cyrillic name with one Latin letter: the Latin one is the odd one out.
    assert.deepEqual(mixedScripts('\u0421\u0431\u0435p\u0431\u0430\u043d\u043a')?.segments.filter((s) => s.script !== undefined), [{ text: 'p', script: 'Latin' }]);
    assert.ok(mixedScripts('Sberbank \u0421\u0431\u0435\u0440\u0431\u0430\u043d\u043a') !== undefined);
  });

  it('judges a sentence word by word: a Russian sentence naming CNY is no look-alike, "pаypal" in it is', () => {
    assert.equal(mixedScripts('\u041e\u043f\u043b\u0430\u0442\u0430 88.00 CNY', { by: 'word' }), undefined);
    assert.notEqual(mixedScripts('\u041e\u043f\u043b\u0430\u0442\u0430 88.00 CNY'), undefined);
    assert.deepEqual(mixedScripts('Pay 88.00 CNY to p\u0430ypal', { by: 'word' }), {
      scripts: ['Latin', 'Cyrillic'],
      segments: [{ text: 'Pay 88.00 CNY to p' }, { text: '\u0430', script: 'Cyrillic' }, { text: 'ypal' }],
    });
  });

  it('does not flag one script, digits and punctuation, or Latin with Chinese, Japanese or Korean', () => {
    for (const text of ['shop-42', 'Caf\u00e9 M\u00fcller', '\u0421\u0431\u0435\u0440\u0431\u0430\u043d\u043a 24', '\u039a. \u03a0\u03b1\u03c0\u03b1\u03b4\u03cc\u03c0\u03bf\u03c5\u03bb\u03bf\u03c2', '星巴克 Starbucks 42号店', 'ユニクロ UNIQLO', '스타벅스 Starbucks', '42 / 7 - 1']) {
      assert.equal(mixedScripts(text), undefined, text);
    }
  });

  it('the SMS says so in words after the payee, in both languages', () => {
    const approval = { action: 'payment_code.issue', context: { amount: '88.00', currency: 'CNY', payee: 'p\u0430ypal' }, bindingMessage: null };
    assert.equal(approvalSummary('en', approval), 'a payment of 88.00 CNY to p\u0430ypal (careful: the name mixes Latin and Cyrillic letters)');
    assert.equal(approvalSummary('zh-CN', approval), '向 p\u0430ypal（注意：名称混用拉丁和西里尔字母） 支付 88.00 CNY');
    const chinese = { ...approval, context: { ...approval.context, payee: '星巴克 Starbucks' } };
    assert.equal(approvalSummary('en', chinese), 'a payment of 88.00 CNY to 星巴克 Starbucks');
  });
});
