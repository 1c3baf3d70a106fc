/**
 * Text a person approves — the payee and every other string bound into a step-up, and the
 * binding message — must read as what it is, and one look must mean one binding. One module,
 * imported by the gateway (step-up creation, the step-up page, the SMS text) and by this
 * verifier, so both apply the same rule to the same bytes.
 *
 * 1. **Nothing invisible, nothing that reorders.** Refused: every control (Cc: C0, DEL, C1 — a
 *    line break or a terminal escape in a payee) and format character (Cf: the zero-width
 *    U+200B–U+200D, the marks U+200E/U+200F and U+061C, the embeddings, overrides and
 *    isolates U+202A–U+202E and U+2066–U+2069 — U+202E turns "shop\u202Egnp.exe" into
 *    "shopexe.png" —, U+2060–U+2064, U+FEFF, the soft hyphen U+00AD, tag characters…), the
 *    line and paragraph separators U+2028/U+2029 (a fake second line), private-use characters
 *    (Co: any font may draw them as anything) and lone surrogates (each JSON library decodes
 *    them its own way).
 * 2. **NFC, required, never applied.** "café" can be sent as U+00E9 or as "e" + U+0301: they
 *    look the same and are different bytes. A string that is not in Unicode Normalization
 *    Form C is refused rather than normalised, so the token carries exactly what was sent and
 *    two payees that look identical cannot be two bindings (the comparison stays byte for
 *    byte; normalising on one side only would make it lie).
 */

const UNDISPLAYABLE = /[\p{Cc}\p{Cf}\p{Co}\u2028\u2029]/u;

function codePoint(ch: string): string {
  return `U+${(ch.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}`;
}

/** Why `text` cannot be approved as it is, or undefined when it can. */
// Printable ASCII has nothing to refuse and is NFC: the common case, decided without Unicode tables.
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

export function displayTextProblem(text: string): string | undefined {
  if (PRINTABLE_ASCII.test(text)) return undefined;
  if (!text.isWellFormed()) return 'must be well-formed Unicode (no lone surrogates)';
  const bad = UNDISPLAYABLE.exec(text)?.[0];
  if (bad !== undefined) return `must not contain invisible, control or bidirectional formatting characters (found ${codePoint(bad)})`;
  if (text.normalize('NFC') !== text) return 'must be in Unicode Normalization Form C (NFC): send text.normalize("NFC")';
  return undefined;
}

/**
 * Scripts whose letters pass for one another: "а" (Cyrillic) and "a" (Latin), "ο" (Greek) and
 * "o". A payee whose letters come from two of them is the classic look-alike ("Аpple",
 * "pаypal"): flagged, also when the scripts sit in different words (a legitimate
 * "Sberbank Сбербанк" is rare, and a second look costs the user nothing). Latin next to Han,
 * Kana or Hangul ("星巴克 Starbucks") is how Chinese, Japanese and Korean names are written, and
 * digits and punctuation belong to no script: never flagged.
 */
const CONFUSABLE_SCRIPTS = [
  { script: 'Latin', letter: /\p{Script=Latin}/u },
  { script: 'Cyrillic', letter: /\p{Script=Cyrillic}/u },
  { script: 'Greek', letter: /\p{Script=Greek}/u },
] as const;
export type ConfusableScript = (typeof CONFUSABLE_SCRIPTS)[number]['script'];

function scriptOf(ch: string): ConfusableScript | undefined {
  return CONFUSABLE_SCRIPTS.find((s) => s.letter.test(ch))?.script;
}

/** A piece of displayed text; `script` is set on a letter that is not in the text's main script. */
export interface DisplaySegment {
  text: string;
  script?: ConfusableScript;
}

export interface MixedScriptReport {
  /** The scripts mixed, in the order Latin, Cyrillic, Greek. */
  scripts: ConfusableScript[];
  /** The text cut so that every odd-one-out letter is its own segment (to mark it on screen). */
  segments: DisplaySegment[];
}

/**
 * Undefined when the letters of `text` come from at most one of Latin, Cyrillic and Greek;
 * else which are mixed and where. The letters of the most frequent of them (Latin on a tie)
 * are plain and the others are marked, so "pаypal" shows its one Cyrillic "а".
 *
 * `by: 'word'` judges each word on its own — for a sentence such as a binding message, where
 * "Оплата 88.00 CNY" mixes scripts across words quite legitimately; a name (the payee) is
 * judged whole.
 */
export function mixedScripts(text: string, options: { by?: 'text' | 'word' } = {}): MixedScriptReport | undefined {
  if (PRINTABLE_ASCII.test(text)) return undefined;
  const parts = options.by === 'word' ? text.split(/([\p{L}\p{M}\p{N}]+)/u) : [text];
  const mixed = new Set<ConfusableScript>();
  const segments: DisplaySegment[] = [];
  const add = (piece: string, script?: ConfusableScript) => {
    const last = segments.at(-1);
    if (last !== undefined && last.script === script) last.text += piece;
    else segments.push(script === undefined ? { text: piece } : { text: piece, script });
  };
  for (const part of parts) {
    const chars = [...part];
    const counts = new Map<ConfusableScript, number>();
    for (const ch of chars) {
      const s = scriptOf(ch);
      if (s !== undefined) counts.set(s, (counts.get(s) ?? 0) + 1);
    }
    if (counts.size < 2) {
      if (part !== '') add(part);
      continue;
    }
    for (const s of counts.keys()) mixed.add(s);
    let main: ConfusableScript = 'Latin';
    for (const { script } of CONFUSABLE_SCRIPTS) if ((counts.get(script) ?? 0) > (counts.get(main) ?? 0)) main = script;
    for (const ch of chars) {
      const s = scriptOf(ch);
      add(ch, s === undefined || s === main ? undefined : s);
    }
  }
  if (mixed.size === 0) return undefined;
  return { scripts: CONFUSABLE_SCRIPTS.map((s) => s.script).filter((s) => mixed.has(s)), segments };
}
