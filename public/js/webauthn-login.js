// /login: passkey sign-in. The browser offers passkeys in the username field's autofill
// (conditional UI) where it can; the button starts the same ceremony explicitly.
import { browserFailure, browserSupportsWebAuthn, browserSupportsWebAuthnAutofill, messenger, postJson, startAuthentication } from './webauthn-common.js';

const root = document.getElementById('webauthn-login');
if (root && browserSupportsWebAuthn()) {
  const button = document.getElementById('webauthn-login-button');
  const show = messenger(root, document.getElementById('webauthn-status'));
  const next = root.dataset.next || '/login';

  async function signIn(autofill) {
    const begun = await postJson('/v1/login/webauthn/options', {});
    if (!begun.ok) {
      if (!autofill) show('failed', true);
      return;
    }
    const options = begun.data.options;
    const t0 = Date.now();
    let credential;
    try {
      credential = await startAuthentication({ optionsJSON: options, useBrowserAutofill: autofill });
    } catch (err) {
      // A conditional request is aborted whenever the button starts a modal one: not an error.
      if (!autofill) show(browserFailure(err, t0, options.timeout || 60000), true);
      return;
    }
    const done = await postJson('/v1/login/webauthn', { login_token: begun.data.login_token, credential });
    if (!done.ok) {
      show('failed', true);
      return;
    }
    window.location.assign(next);
  }

  button.hidden = false;
  button.addEventListener('click', () => {
    show('waiting', false);
    signIn(false).catch(() => show('failed', true));
  });
  browserSupportsWebAuthnAutofill()
    .then((yes) => (yes ? signIn(true) : undefined))
    .catch(() => undefined);
}
