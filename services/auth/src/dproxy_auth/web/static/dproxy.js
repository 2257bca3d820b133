// dproxy's pages work without this file; it adds copy buttons and confirmation dialogs.
"use strict";

(function () {
  function announce(text) {
    var region = document.getElementById("live-region");
    if (region) {
      region.textContent = "";
      window.setTimeout(function () { region.textContent = text; }, 50);
    }
  }

  function fallbackCopy(field) {
    // Clipboard API needs a secure context; plain-HTTP installs fall back to selection.
    field.focus();
    field.select();
    try {
      return document.execCommand("copy");
    } catch (err) {
      return false;
    }
  }

  function copy(button) {
    var field = document.getElementById(button.getAttribute("data-copy-target"));
    if (!field) {
      return;
    }
    var label = button.querySelector(".label");
    var original = label ? label.textContent : "";
    function done(ok) {
      if (label) {
        label.textContent = ok ? "Copied" : "Press Ctrl+C";
        window.setTimeout(function () { label.textContent = original; }, 2000);
      }
      announce(ok ? "Copied to clipboard" : "Selected: press Control C to copy");
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(
        function () { done(true); },
        function () { done(fallbackCopy(field)); }
      );
    } else {
      done(fallbackCopy(field));
    }
  }

  // Forms with data-confirm ask first; the server asks on a page of its own when this
  // script does not run, so a form is never sent unconfirmed by accident.
  function confirmSubmit(form, event) {
    var dialog = document.getElementById("confirm-dialog");
    if (!dialog || typeof dialog.showModal !== "function") {
      return;
    }
    event.preventDefault();
    dialog.querySelector("[data-dialog-title]").textContent = form.getAttribute("data-confirm-title") || "Are you sure?";
    dialog.querySelector("[data-dialog-message]").textContent = form.getAttribute("data-confirm");
    var ok = dialog.querySelector("[data-dialog-ok]");
    ok.textContent = form.getAttribute("data-confirm-button") || "Confirm";
    ok.onclick = function () {
      var field = form.querySelector("input[name=confirmed]");
      if (!field) {
        field = document.createElement("input");
        field.type = "hidden";
        field.name = "confirmed";
        form.appendChild(field);
      }
      field.value = "yes";
      dialog.close();
      form.submit();
    };
    dialog.showModal();
  }

  // A page that answers a form (a new token's only showing) takes its plain URL: reloading
  // it is then a GET, and does not send the form again.
  var replace = document.querySelector("[data-replace-url]");
  if (replace && window.history && window.history.replaceState) {
    window.history.replaceState(null, "", replace.getAttribute("data-replace-url"));
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (button) {
      event.preventDefault();
      copy(button);
      return;
    }
    if (event.target.closest("[data-dialog-cancel]")) {
      event.target.closest("dialog").close();
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.hasAttribute("data-confirm")) {
      confirmSubmit(form, event);
    }
  });
})();
