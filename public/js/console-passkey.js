// /console/verify: complete a password session with a passkey instead of a code. The passkey
// sign-in replaces the session by one that records WebAuthn with user verification (the
// console's second factor); the current session's CSRF token goes with both requests.
import { browserFailure, browserSupportsWebAuthn, messenger, postJson, startAuthentication } from './webauthn-common.js';

const root = document.getElementById('console-passkey');
if (root && browserSupportsWebAuthn()) {
  const button = document.getElementById('console-passkey-button');
  const show = messenger(root, document.getElementById('console-passkey-status'));
  const csrf = root.dataset.csrf;
  const next = root.dataset.next || '/console';

  async function verify() {
    const begun = await postJson('/v1/login/webauthn/options', {}, csrf);
    if (!begun.ok) return show('failed', true);
    const options = begun.data.options;
    const t0 = Date.now();
    let credential;
    try {
      credential = await startAuthentication({ optionsJSON: options });
    } catch (err) {
      return show(browserFailure(err, t0, options.timeout || 60000), true);
    }
    const done = await postJson('/v1/login/webauthn', { login_token: begun.data.login_token, credential }, csrf);
    if (!done.ok) return show('failed', true);
    window.location.assign(next);
  }

  button.hidden = false;
  button.addEventListener('click', () => {
    show('waiting', false);
    verify().catch(() => show('failed', true));
  });
}
