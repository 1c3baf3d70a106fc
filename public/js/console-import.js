// Console token import: the upload with a progress bar (a vendor file can be large). Without
// script the form posts as usual; with it, the same multipart request goes through
// XMLHttpRequest so the upload can be shown, then the browser opens the import report (or
// shows the page the server answered with: the per-token problems next to the form).
function bind() {
  const form = document.getElementById('token-import-form');
  const bar = document.getElementById('token-import-progress');
  const status = document.getElementById('token-import-status');
  if (!form || !bar || !status || typeof FormData !== 'function') return;
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const xhr = new XMLHttpRequest();
    xhr.open('POST', form.action);
    xhr.upload.addEventListener('progress', (e) => {
      if (!e.lengthComputable) return;
      bar.max = e.total;
      bar.value = e.loaded;
      status.textContent = form.dataset.msgUploading.replace('{percent}', String(Math.floor((e.loaded / e.total) * 100)));
    });
    xhr.upload.addEventListener('load', () => {
      status.textContent = form.dataset.msgChecking;
    });
    xhr.addEventListener('load', () => {
      // A completed import answers with a redirect to its report, which XHR has followed.
      if (xhr.status === 200 && /\/console\/tokens\/imports\/[^/?#]+$/.test(new URL(xhr.responseURL).pathname)) {
        window.location.assign(xhr.responseURL);
        return;
      }
      const page = new DOMParser().parseFromString(xhr.responseText, 'text/html');
      document.title = page.title;
      document.body.replaceWith(document.adoptNode(page.body));
      // The answer's own script tag does not run when adopted: bind its form again.
      bind();
      document.getElementById('error-import')?.scrollIntoView();
    });
    xhr.addEventListener('error', () => {
      status.textContent = form.dataset.msgFailed;
    });
    bar.hidden = false;
    xhr.send(new FormData(form));
  });
}

bind();
