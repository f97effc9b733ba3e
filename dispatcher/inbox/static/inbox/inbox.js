// The private-message pages: select all, mark read on opening, recipients' autocompletion.
(function () {
  "use strict";

  // "Select all" in a folder.
  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll('#messages input[name="pks"]').forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }

  // Opening a message does not mark it read on the server (a GET changes
  // nothing): this POSTs the page's own "Mark as read" form, with its CSRF token.
  const markRead = document.getElementById("mark-read-form");
  if (markRead) {
    fetch(markRead.action, {
      method: "POST", body: new FormData(markRead), credentials: "same-origin",
      headers: {"Accept": "application/json"},
    }).then(function (response) {
      if (!response.ok) return;
      markRead.hidden = true;
      return response.json().then(function (data) {
        const badge = document.getElementById("inbox-unread");
        if (badge && window.dispatcherLive) window.dispatcherLive.show(badge, data.unread_count);
      });
    }).catch(function () { /* the button is still there */ });
  }

  // Reply: the caret on the blank line above the quote, as mail programs put
  // it, so the answer is written before the original and not under it.
  const replyBody = document.querySelector("#reply-form textarea[name=body]");
  if (replyBody) {
    replyBody.focus();
    replyBody.setSelectionRange(0, 0);
    replyBody.scrollTop = 0;
  }

  // Recipients: suggest the people the user already writes with (the JSON
  // API's conversations), completing the last name of a comma-separated list.
  const form = document.getElementById("write-form");
  const input = document.getElementById("id_recipients");
  const list = document.getElementById("inbox-recipients-list");
  if (form && input && list && form.dataset.partnersUrl) {
    let partners = null;
    const load = function () {
      if (partners !== null) return Promise.resolve(partners);
      return fetch(form.dataset.partnersUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : {conversations: []}; })
        .then(function (data) { partners = data.conversations.map(function (c) { return c.username; }); return partners; })
        .catch(function () { partners = []; return partners; });
    };
    const suggest = function () {
      load().then(function (names) {
        const parts = input.value.split(",");
        const last = parts.pop().trim().toLowerCase();
        const typed = parts.map(function (p) { return p.trim(); }).filter(Boolean);
        const prefix = typed.length ? typed.join(", ") + ", " : "";
        list.replaceChildren();
        names.filter(function (n) { return n.toLowerCase().startsWith(last) && typed.indexOf(n) < 0; })
          .slice(0, 10)
          .forEach(function (n) {
            const option = document.createElement("option");
            option.value = prefix + n;
            list.appendChild(option);
          });
      });
    };
    input.addEventListener("focus", suggest);
    input.addEventListener("input", suggest);
  }
})();
