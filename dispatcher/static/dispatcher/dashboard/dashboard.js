/* Draw the dashboard's throughput chart from the JSON the view embeds.
 * No inline script: the data comes from <script type="application/json"
 * id="throughput-data"> (Django's json_script), so a strict CSP works.
 * The chart object is kept on window.dispatcherDashboard for inspection. */
(function () {
  "use strict";

  var PALETTE = ["#417690", "#e07b39", "#5b9b48", "#b04a6f", "#7c63a8", "#c9a227", "#3a8f8f", "#8a6d4f"];

  function draw() {
    var source = document.getElementById("throughput-data");
    var canvas = document.getElementById("throughput-chart");
    if (!source || !canvas || typeof window.Chart === "undefined") {
      return;
    }
    var data = JSON.parse(source.textContent);
    var names = Object.keys(data.series);
    var datasets = names.map(function (name, i) {
      var colour = PALETTE[i % PALETTE.length];
      return { label: name, data: data.series[name], backgroundColor: colour, borderColor: colour };
    });
    if (!datasets.length) {
      datasets = [{ label: "sent", data: data.labels.map(function () { return 0; }) }];
    }
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
    window.dispatcherDashboard = { throughput: chart };
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
