/**
 * A User-Agent described for people ("Chrome 131 on Windows", "WeChat on iPhone"), for the
 * list of signed-in devices. Descriptive only — a User-Agent is whatever the client sends, so
 * nothing is decided on it. Order matters: most browsers also name the ones they derive from
 * (Edge says Chrome and Safari; Chrome says Safari), so the specific names come first.
 */

const BROWSERS: readonly [RegExp, string][] = [
  [/MicroMessenger\/(\d+)/, 'WeChat'],
  [/AlipayClient\/(\d+)/, 'Alipay'],
  [/DingTalk\/(\d+)/, 'DingTalk'],
  [/\bEdg(?:e|A|iOS)?\/(\d+)/, 'Edge'],
  [/\bOPR\/(\d+)/, 'Opera'],
  [/SamsungBrowser\/(\d+)/, 'Samsung Internet'],
  [/UCBrowser\/(\d+)/, 'UC Browser'],
  [/(?:Firefox|FxiOS)\/(\d+)/, 'Firefox'],
  [/HeadlessChrome\/(\d+)/, 'Chrome (headless)'],
  [/(?:Chrome|CriOS)\/(\d+)/, 'Chrome'],
  [/Version\/(\d+)[\d.]* (?:Mobile\/\S+ )?Safari\//, 'Safari'],
  [/\bcurl\/(\d+)/, 'curl'],
  [/\bokhttp\/(\d+)/, 'OkHttp'],
];

const SYSTEMS: readonly [RegExp, string][] = [
  [/OpenHarmony|HarmonyOS/, 'HarmonyOS'],
  [/iPhone/, 'iPhone'],
  [/iPad/, 'iPad'],
  [/Android/, 'Android'],
  [/Windows NT/, 'Windows'],
  [/CrOS/, 'ChromeOS'],
  [/Mac OS X|Macintosh/, 'macOS'],
  [/Linux/, 'Linux'],
];

export interface DescribedAgent {
  /** e.g. "Chrome 131", "WeChat"; undefined when not recognised. */
  browser?: string;
  /** e.g. "Windows", "iPhone"; undefined when not recognised. */
  system?: string;
}

export function parseUserAgent(ua: string | null | undefined): DescribedAgent {
  if (ua === null || ua === undefined || ua === '') return {};
  const out: DescribedAgent = {};
  for (const [pattern, name] of BROWSERS) {
    const m = pattern.exec(ua);
    if (m !== null) {
      // The in-app browsers' versions mean little to their users.
      out.browser = name === 'WeChat' || name === 'Alipay' || name === 'DingTalk' ? name : `${name} ${m[1]}`;
      break;
    }
  }
  for (const [pattern, name] of SYSTEMS) {
    if (pattern.test(ua)) {
      out.system = name;
      break;
    }
  }
  return out;
}

/** "Chrome 131 on Windows", "Chrome 131", "Windows", or undefined (English; pages translate the "on"). */
export function describeUserAgent(ua: string | null | undefined): string | undefined {
  const { browser, system } = parseUserAgent(ua);
  if (browser !== undefined && system !== undefined) return `${browser} on ${system}`;
  return browser ?? system;
}
