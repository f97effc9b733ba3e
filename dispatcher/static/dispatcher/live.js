// Live counters in the page header: the unread private messages and the
// in-app notifications (the bell).
//
// A cheap poll, not Server-Sent Events: each badge names a JSON endpoint
// answering {"unread_count": N} with one indexed COUNT, asked every
// data-poll-seconds (body attribute) while the page is visible, and at once
// when it becomes visible again. A poll holds no server connection between
// requests, so it works the same behind any WSGI server, proxy or worker
// count; an open SSE stream would hold a worker (or a thread) per open tab.
// When a count changes, a "dispatcher:count" event is dispatched on the
// document, so a page (the notification feed) can refresh what it shows.
(function () {
  "use strict";
  const badges = Array.from(document.querySelectorAll("[data-count-url]"));
  if (!badges.length) return;
  const seconds = Math.max(1, parseInt(document.body.dataset.pollSeconds || "15", 10) || 15);
  let timer = null;
  let busy = false;

  function show(badge, count) {
    const previous = badge.dataset.count === undefined ? parseInt(badge.textContent, 10) : +badge.dataset.count;
    badge.dataset.count = String(count);
    badge.textContent = String(count);
    badge.hidden = count === 0;
    if (previous !== count) {
      document.dispatchEvent(new CustomEvent("dispatcher:count", {
        detail: {id: badge.id, count: count, previous: previous},
      }));
    }
  }

  async function poll() {
    if (busy || document.visibilityState === "hidden") return;
    busy = true;
    try {
      await Promise.all(badges.map(async (badge) => {
        const response = await fetch(badge.dataset.countUrl, {
          headers: {"Accept": "application/json"}, credentials: "same-origin", cache: "no-store",
        });
        if (!response.ok) return;
        const data = await response.json();
        const count = data[badge.dataset.countKey || "unread_count"];
        if (typeof count === "number") show(badge, count);
      }));
    } catch (err) {
      // Offline or the server restarting: the next poll tries again.
    } finally {
      busy = false;
    }
  }

  function start() {
    if (timer === null) timer = setInterval(poll, seconds * 1000);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") poll();
  });
  // Pages that changed a count themselves (mark read) ask for a refresh at once.
  document.addEventListener("dispatcher:refresh-counts", poll);
  window.dispatcherLive = {poll: poll, show: show};
  start();
})();
