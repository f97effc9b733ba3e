// The notification feed page: new items appear without a reload (when the
// header's poll sees the bell's count change, the list is fetched again as
// server-rendered HTML, so escaping stays the server's), and "Mark read"
// works without a reload too, clearing the badge at once.
(function () {
  "use strict";
  const container = document.getElementById("feed-items");
  if (!container) return;

  async function refresh() {
    try {
      const response = await fetch(window.location.href, {credentials: "same-origin", cache: "no-store"});
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("feed-items");
      if (fresh) container.replaceChildren(...fresh.childNodes);
    } catch (err) {
      // The next change tries again.
    }
  }

  document.addEventListener("dispatcher:count", function (event) {
    if (event.detail.id === "feed-unread" && event.detail.count > (event.detail.previous || 0)) refresh();
  });

  container.addEventListener("submit", async function (event) {
    const form = event.target;
    if (!form.classList.contains("feed-mark-read")) return;
    event.preventDefault();
    try {
      const response = await fetch(form.action, {
        method: "POST", body: new FormData(form), credentials: "same-origin",
        headers: {"Accept": "application/json"},
      });
      if (!response.ok) { form.submit(); return; }
      const data = await response.json();
      const item = form.closest("li");
      if (item) item.classList.remove("unread");
      form.remove();
      const badge = document.getElementById("feed-unread");
      if (badge && window.dispatcherLive) window.dispatcherLive.show(badge, data.unread_count);
    } catch (err) {
      form.submit();
    }
  });
})();
