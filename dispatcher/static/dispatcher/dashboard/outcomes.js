/* The dashboard's second chart: receipts, skips, digests and fallbacks per
 * minute, from <script type="application/json" id="outcomes-data">. */
(function () {
  "use strict";

  var COLOURS = {
    "delivered": "#5b9b48", "bounced": "#b04a6f", "complained": "#c9a227",
    "skipped": "#7c63a8", "digested": "#417690", "fell back": "#e07b39"
  };

  function draw() {
    var source = document.getElementById("outcomes-data");
    var canvas = document.getElementById("outcomes-chart");
    if (!source || !canvas || typeof window.Chart === "undefined") {
      return;
    }
    var data = JSON.parse(source.textContent);
    var datasets = Object.keys(data.series).map(function (name) {
      var colour = COLOURS[name] || "#888";
      return { label: name, data: data.series[name], backgroundColor: colour, borderColor: colour };
    });
    var style = getComputedStyle(document.documentElement);
    var fg = style.getPropertyValue("--body-quiet-color").trim() || "#666";
    var grid = style.getPropertyValue("--hairline-color").trim() || "#e0e0e0";
    var chart = new window.Chart(canvas, {
      type: "bar",
      data: { labels: data.labels, datasets: datasets },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        scales: {
          x: { stacked: true, ticks: { color: fg, maxTicksLimit: 12 }, grid: { display: false } },
          y: { stacked: true, beginAtZero: true, ticks: { color: fg, precision: 0 }, grid: { color: grid } }
        },
        plugins: { legend: { position: "bottom", labels: { color: fg } } }
      }
    });
    window.dispatcherDashboard = window.dispatcherDashboard || {};
    window.dispatcherDashboard.outcomes = chart;
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
