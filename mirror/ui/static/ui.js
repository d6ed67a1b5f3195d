// The dashboard's only script, loaded from the mirror (the CSP allows no inline script).
// Everything works without it; with it, removing a rule asks first.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm) {
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  }
});
