// "My security": register a fingerprint / face / PIN unlock or a security key.
import { browserFailure, browserSupportsWebAuthn, messenger, postJson, startRegistration } from './webauthn-common.js';

const root = document.getElementById('webauthn-enrol');
const button = document.getElementById('webauthn-add');
if (root && button) {
  const show = messenger(root, document.getElementById('webauthn-status'));
  const label = document.getElementById('webauthn-label');
  const csrf = root.dataset.csrf;

  if (!browserSupportsWebAuthn()) {
    show('unsupported', true);
  } else {
    button.hidden = false;
    button.addEventListener('click', async () => {
      const name = label.value.trim();
      if (name === '') {
        show('name-missing', true);
        label.focus();
        return;
      }
      button.disabled = true;
      try {
        show('waiting', false);
        const begun = await postJson('/v1/me/factors/webauthn/registration', { label: name }, csrf);
        if (begun.status === 401) {
          window.location.assign(root.dataset.reauthUrl);
          return;
        }
        if (!begun.ok) {
          show('failed', true);
          return;
        }
        const options = begun.data.options;
        const t0 = Date.now();
        let credential;
        try {
          credential = await startRegistration({ optionsJSON: options });
        } catch (err) {
          show(browserFailure(err, t0, options.timeout || 60000), true);
          return;
        }
        show('checking', false);
        const done = await postJson('/v1/me/factors/webauthn', { factor_id: begun.data.factor_id, credential }, csrf);
        if (!done.ok) {
          show(done.status === 409 ? 'exists' : done.data.code === 'registration_refused' ? 'refused' : 'failed', true);
          return;
        }
        window.location.assign('/security?notice=enrolled');
      } catch {
        show('failed', true);
      } finally {
        button.disabled = false;
      }
    });
  }
}
